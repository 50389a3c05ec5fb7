"""Fetching the Lambda's dependencies as wheels built for its runtime.

The deploying machine rarely matches the Lambda runtime (another CPython,
another glibc, perhaps another architecture), so its installed wheels cannot
simply be zipped.  pip installs for a foreign platform when every dependency
is a wheel.  The versions are pinned to the ones installed here, so the
Lambda runs the code the tests ran.  Fetches land in a per-target cache
directory, which is published only after pip succeeded: an interrupted fetch
is never packaged, and a repeated deploy downloads nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from .packaging import (
    LAMBDA_REQUIREMENTS,
    LambdaTarget,
    PackagingError,
    incompatible,
    pip_arguments,
    resolve,
    this_interpreter,
)

_PIP_TIMEOUT_S = 600


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tidelog" / "lambda-deps"


def pinned_requirements(target: LambdaTarget, requirements: Iterable[str] = LAMBDA_REQUIREMENTS) -> list[str]:
    """The requirements that apply on ``target``, pinned to the versions installed here when there are any.

    Markers are evaluated here, for the target, rather than left to pip, which
    would evaluate them for the interpreter it runs in.
    """
    env = target.marker_environment()
    pinned = []
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        name = req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "")
        try:
            pinned.append(f"{name}=={metadata.version(req.name)}")
        except metadata.PackageNotFoundError:
            pinned.append(name + str(req.specifier))
    return pinned


def environment_fits(target: LambdaTarget) -> bool:
    """Whether this environment's installed dependencies load on ``target`` as they are."""
    try:
        return this_interpreter() == target and not incompatible(resolve(LAMBDA_REQUIREMENTS, target), target)
    except PackagingError:  # no Lambda runtime for this interpreter, or a dependency is missing here
        return False


def fetch_wheels(target: LambdaTarget, cache_dir: Path | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> Path:
    """A ``pip install --target`` directory of the dependencies for ``target``, fetched once per version set."""
    requirements = pinned_requirements(target)
    digest = hashlib.sha256("\n".join([target.runtime, target.architecture, *requirements]).encode()).hexdigest()
    cache_dir = cache_dir or default_cache_dir()
    final = cache_dir / f"{target.runtime}-{target.architecture}-{digest[:16]}"
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    progress(f"fetching the Lambda's dependencies for {target.runtime} {target.architecture} into {final}")
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
    try:
        done = subprocess.run([sys.executable, "-m", "pip", *pip_arguments(target, str(staging), requirements)],
                              capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
        if done.returncode != 0:
            reason = next((line for line in reversed(done.stderr.splitlines()) if line.startswith("ERROR")),
                          done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
            raise PackagingError(f"could not fetch wheels for {target.runtime} {target.architecture}: {reason}; "
                                 "fetch them yourself and pass --lambda-deps DIR")
        try:
            staging.rename(final)
        except OSError:
            if not final.is_dir():  # a concurrent deploy may have published the same set first
                raise
        return final
    except subprocess.TimeoutExpired:
        raise PackagingError(f"fetching wheels for {target.runtime} took over {_PIP_TIMEOUT_S} s: "
                             "fetch them yourself and pass --lambda-deps DIR") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def lambda_dependencies(target: LambdaTarget, deps_dir: Path | None, check_wheels: bool,
                        progress: Callable[[str], None] = lambda _: None) -> Path | None:
    """Where to package the dependencies from: ``deps_dir``, this environment (None), or fetched wheels."""
    if deps_dir is not None or not check_wheels or environment_fits(target):
        return deps_dir
    return fetch_wheels(target, progress=progress)
