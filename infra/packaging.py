"""The Lambda code zip: tidelog's storage and Lambda packages plus their runtime dependencies.

Dependencies come from an installed environment (this interpreter's, or a
directory made with ``pip install --target``), following each distribution's
declared requirements, extras included.  Nothing is assumed to be in the
Lambda runtime: its bundled boto3/botocore are older than what aiobotocore
pins, so the zip carries its own.

Compiled wheels must load in the Lambda runtime, which this machine rarely
matches: the wheel tags recorded at install time are checked against the
target (CPython version, architecture, and the runtime's glibc: Amazon
Linux 2 with glibc 2.26 for python3.9-3.11, Amazon Linux 2023 with 2.34
after).  A mismatch is an error naming the distribution and the
``pip install --target`` command that fetches compatible wheels, which
`tidelog.infra.wheels` runs when the deploying environment does not fit.

The zip is deterministic (sorted entries, fixed timestamps and modes, no
bytecode), so its SHA-256 names its content: an unchanged build uploads
nothing and changes no stack.
"""

from __future__ import annotations

import hashlib
import io
import platform
import shlex
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name

#: What `tidelog.storage` and `tidelog.lambdas` import, as distributions.
LAMBDA_REQUIREMENTS = ("aioboto3", "fastavro", "crc32c", "cramjam", "aiokafka",
                       "backports.zstd; python_version < '3.14'")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Fast deflate: the zip is rebuilt on every deploy and level 6 saves only a few percent.
_COMPRESS_LEVEL = 1
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_GLIBC_AL2 = (2, 26)
_GLIBC_AL2023 = (2, 34)
_LAMBDA_PYTHONS = {(3, 9), (3, 10), (3, 11), (3, 12), (3, 13), (3, 14)}
#: The newest runtime every dependency publishes wheels for; python3.11 can no longer be created.
DEFAULT_RUNTIME = "python3.13"
#: Runtimes a new function can still be created with (AWS blocks creation after deprecation).
DEPLOYABLE_RUNTIMES = ("python3.12", "python3.13", "python3.14")
ARCHITECTURES = ("x86_64", "arm64")


class PackagingError(ValueError):
    """The zip cannot be built as asked; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class LambdaTarget:
    python: tuple[int, int]
    architecture: str  # the Lambda name: x86_64 or arm64

    @classmethod
    def parse(cls, runtime: str, architecture: str = "x86_64") -> "LambdaTarget":
        """``python3.13`` and ``arm64`` as a target, refusing what Lambda does not run."""
        name, dot, minor = runtime.removeprefix("python3").partition(".")
        python = (3, int(minor)) if not name and dot and minor.isdigit() else None
        if python not in _LAMBDA_PYTHONS:
            supported = ", ".join(f"python3.{m}" for _, m in sorted(_LAMBDA_PYTHONS))
            raise PackagingError(f"unsupported Lambda runtime {runtime!r}: use one of {supported}")
        if architecture not in ARCHITECTURES:
            raise PackagingError(f"unsupported Lambda architecture {architecture!r}: use x86_64 or arm64")
        return cls(python, architecture)

    @property
    def runtime(self) -> str:
        return f"python{self.python[0]}.{self.python[1]}"

    @property
    def glibc(self) -> tuple[int, int]:
        return _GLIBC_AL2 if self.python <= (3, 11) else _GLIBC_AL2023

    @property
    def machine(self) -> str:
        return "aarch64" if self.architecture == "arm64" else "x86_64"

    @property
    def pip_platforms(self) -> list[str]:
        """Platform tags for ``pip --platform``, newest first, that this runtime's glibc loads."""
        newer = [f"manylinux_{a}_{b}_{self.machine}" for a, b in ((2, 34), (2, 28)) if (a, b) <= self.glibc]
        return [*newer, f"manylinux2014_{self.machine}"]

    def marker_environment(self) -> dict[str, str]:
        env = default_environment()
        env.update(python_version=f"{self.python[0]}.{self.python[1]}", sys_platform="linux",
                   platform_system="Linux", platform_machine=self.machine, os_name="posix",
                   implementation_name="cpython", platform_python_implementation="CPython")
        return env

    def accepts(self, tag: str) -> bool:
        """Whether one wheel tag (``cp311-cp311-manylinux_2_17_x86_64``) loads in this runtime."""
        for t in parse_tag(tag):
            if not self._python_ok(t.interpreter, t.abi):
                continue
            if t.platform == "any":
                return True
            if t.platform.endswith("_" + self.machine) and self._glibc_ok(t.platform[: -len(self.machine) - 1]):
                return True
        return False

    def _python_ok(self, interpreter: str, abi: str) -> bool:
        major, minor = self.python
        if interpreter in ("py3", f"py{major}{minor}"):
            return abi == "none"
        if interpreter == f"cp{major}{minor}":
            return abi in ("none", "abi3", f"cp{major}{minor}")
        if interpreter.startswith("cp3") and abi == "abi3":
            return int(interpreter[3:] or 0) <= minor
        return False

    def _glibc_ok(self, family: str) -> bool:
        if family in _LEGACY_MANYLINUX:
            return _LEGACY_MANYLINUX[family] <= self.glibc
        if family.startswith("manylinux_"):
            major, _, minor = family[len("manylinux_"):].partition("_")
            return (int(major), int(minor)) <= self.glibc
        return False


def this_interpreter() -> LambdaTarget:
    """The runtime whose wheels this interpreter's environment holds."""
    python = sys.version_info[:2]
    if python not in _LAMBDA_PYTHONS:
        raise PackagingError(f"Lambda has no runtime for Python {python[0]}.{python[1]}: "
                             "build with a supported Python (3.9-3.13)")
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return LambdaTarget(python, "x86_64")
    if machine in ("aarch64", "arm64"):
        return LambdaTarget(python, "arm64")
    raise PackagingError(f"Lambda runs x86_64 or arm64 code, not {machine}: build on one of those")


@dataclass(slots=True)
class LambdaZip:
    data: bytes
    sha256: str
    target: LambdaTarget
    distributions: dict[str, str] = field(default_factory=dict)  # name -> version
    files: int = 0

    @property
    def key(self) -> str:
        return f"lambda/tidelog-{self.target.runtime}-{self.target.architecture}-{self.sha256[:24]}.zip"


def resolve(requirements: Iterable[str], target: LambdaTarget,
            path: list[str] | None = None) -> dict[str, metadata.Distribution]:
    """Every distribution the requirements need on ``target``, from ``path`` (default: sys.path)."""
    env = target.marker_environment()
    found: dict[str, metadata.Distribution] = {}
    todo = [(Requirement(r), "") for r in requirements]
    seen: set[tuple[str, str]] = set()
    while todo:
        req, parent_extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**env, "extra": parent_extra}):
            continue
        name = canonicalize_name(req.name)
        extras = sorted(req.extras) or [""]
        if all((name, e) in seen for e in extras):
            continue
        dist = _distribution(name, path)
        found[name] = dist
        for extra in extras:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            todo.extend((Requirement(r), extra) for r in dist.requires or [])
    return found


def _distribution(name: str, path: list[str] | None) -> metadata.Distribution:
    try:
        if path is None:
            return metadata.distribution(name)
        for dist in metadata.distributions(name=name, path=path):
            return dist
    except metadata.PackageNotFoundError:
        pass
    where = f" in {path[0]}" if path else ""
    raise PackagingError(f"the Lambda needs {name} but it is not installed{where}: pip install {name}")


def incompatible(dists: Mapping[str, metadata.Distribution], target: LambdaTarget) -> list[str]:
    """Distributions whose wheel tags do not load on ``target`` (pure ones always do)."""
    bad = []
    for name, dist in sorted(dists.items()):
        wheel = dist.read_text("WHEEL")
        tags = [line.split(":", 1)[1].strip() for line in (wheel or "").splitlines() if line.startswith("Tag:")]
        compiled = any(str(f).endswith((".so", ".pyd")) for f in dist.files or [])
        if tags and not any(target.accepts(t) for t in tags):
            bad.append(f"{name} {dist.version} ({', '.join(tags)})")
        elif not tags and compiled:
            bad.append(f"{name} {dist.version} (compiled, installed without wheel tags)")
    return bad


def pip_arguments(target: LambdaTarget, directory: str, requirements: Iterable[str]) -> list[str]:
    """``pip install`` arguments that put wheels loadable on ``target`` into ``directory``."""
    platforms = [arg for tag in target.pip_platforms for arg in ("--platform", tag)]
    return ["install", "--target", directory, *platforms, "--implementation", "cp",
            "--python-version", f"{target.python[0]}.{target.python[1]}", "--only-binary=:all:",
            "--no-compile", "--disable-pip-version-check", "--quiet", *requirements]


def pip_command(target: LambdaTarget, directory: str = "lambda-deps") -> str:
    return shlex.join(["pip", *pip_arguments(target, directory, LAMBDA_REQUIREMENTS)])


def build_lambda_zip(packages: Mapping[str, Path], *, target: LambdaTarget | None = None,
                     deps_dir: Path | None = None, check_wheels: bool = True,
                     requirements: Iterable[str] = LAMBDA_REQUIREMENTS) -> LambdaZip:
    """Zip ``packages`` (archive path such as ``tidelog/storage`` -> source directory) and the
    distributions ``requirements`` resolve to, from ``deps_dir`` or this environment."""
    target = target or this_interpreter()
    path = [str(deps_dir)] if deps_dir is not None else None
    dists = resolve(requirements, target, path)
    if check_wheels:
        bad = incompatible(dists, target)
        if bad:
            raise PackagingError(
                f"these wheels would not load in the {target.runtime} {target.architecture} Lambda runtime "
                f"(glibc {target.glibc[0]}.{target.glibc[1]}): {'; '.join(bad)}. Fetch compatible ones with "
                f"`{pip_command(target)}` and pass --lambda-deps lambda-deps")
    entries: dict[str, Path] = {}
    for archive_root, source in sorted(packages.items()):
        for file in sorted(Path(source).rglob("*")):
            if file.is_file() and _wanted(file.relative_to(source).parts):
                entries[f"{archive_root}/{file.relative_to(source).as_posix()}"] = file
    for dist in dists.values():
        for rel in dist.files or []:
            parts = Path(str(rel)).parts
            if not parts or parts[0] == ".." or not _wanted(parts):
                continue
            entries.setdefault(Path(str(rel)).as_posix(), Path(str(dist.locate_file(rel))))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(entries):
            file = entries[name]
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            zf.writestr(info, file.read_bytes(), compresslevel=_COMPRESS_LEVEL)
    data = buf.getvalue()
    return LambdaZip(data, hashlib.sha256(data).hexdigest(), target,
                     {name: d.version for name, d in sorted(dists.items())}, len(entries))


def _wanted(parts: tuple[str, ...]) -> bool:
    """No bytecode (the runtime compiles; timestamps would break determinism), no build junk."""
    return "__pycache__" not in parts and not parts[-1].endswith((".pyc", ".pyo"))
