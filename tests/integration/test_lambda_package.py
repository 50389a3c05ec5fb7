"""The Lambda zip holds everything the handlers import, and nothing machine-specific changes it."""

from __future__ import annotations

import glob
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import tidelog.lambdas
import tidelog.storage
from tidelog.infra.packaging import (
    DEFAULT_RUNTIME,
    LambdaTarget,
    PackagingError,
    build_lambda_zip,
    incompatible,
    resolve,
)
from tidelog.infra.wheels import fetch_wheels

PACKAGES = {"tidelog/storage": Path(tidelog.storage.__path__[0]),
            "tidelog/lambdas": Path(tidelog.lambdas.__path__[0])}


@pytest.fixture(scope="module")
def code():
    return build_lambda_zip(PACKAGES, check_wheels=False)


def import_handlers(python: str, data: bytes, where: Path) -> None:
    """Extract the zip and import the handlers with ``python`` and nothing but its stdlib and the zip."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(where)
    # -I -S: no site-packages, no environment, no current directory: only the stdlib and the zip.
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); "
             "import tidelog.lambdas.handlers, tidelog.storage.adapters.s3, tidelog.storage.adapters.dynamodb, "
             "tidelog.storage.records, tidelog.storage.segments, tidelog.storage.tier_codec, "
             "tidelog.storage.recovery; "
             "import fastavro._read, crc32c, cramjam; "
             "assert tidelog.storage.__file__.startswith(sys.argv[1]), tidelog.storage.__file__")
    done = subprocess.run([python, "-I", "-S", "-c", probe, str(where)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def interpreter(version: tuple[int, int]) -> str | None:
    """A runnable CPython of ``version`` on this machine (pyenv's, if any), or None."""
    name = f"python{version[0]}.{version[1]}"
    for candidate in sorted(glob.glob(str(Path.home() / f".pyenv/versions/{version[0]}.{version[1]}*/bin/{name}"))):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_the_zip_alone_imports_the_handlers(code, tmp_path: Path) -> None:
    import_handlers(sys.executable, code.data, tmp_path)


@pytest.fixture(scope="module")
def default_runtime_code(tmp_path_factory):
    target = LambdaTarget.parse(DEFAULT_RUNTIME)
    deps = fetch_wheels(target, tmp_path_factory.mktemp("wheel-cache"))
    return build_lambda_zip(PACKAGES, target=target, deps_dir=deps)  # checks every wheel against the target


def test_wheels_fetched_for_the_default_runtime_pass_the_check_and_match_the_tested_versions(
        default_runtime_code) -> None:
    from importlib.metadata import version
    assert default_runtime_code.target.runtime == DEFAULT_RUNTIME
    for name in ("fastavro", "crc32c", "cramjam", "aiokafka", "aioboto3"):
        assert default_runtime_code.distributions[name] == version(name)


def test_the_default_runtime_zip_imports_the_handlers_on_that_python(default_runtime_code, tmp_path: Path) -> None:
    python = interpreter(default_runtime_code.target.python)
    if python is None:
        pytest.skip(f"no {DEFAULT_RUNTIME} interpreter on this machine to import the zip with")
    import_handlers(python, default_runtime_code.data, tmp_path)


def test_the_zip_is_reproducible_and_carries_no_bytecode(code) -> None:
    again = build_lambda_zip(PACKAGES, check_wheels=False)
    assert again.sha256 == code.sha256 and again.key == code.key
    with zipfile.ZipFile(io.BytesIO(code.data)) as zf:
        names = zf.namelist()
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert "tidelog/lambdas/handlers.py" in names and "tidelog/storage/recovery.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.startswith(("tidelog/broker/", "tidelog/cli/")) for n in names)
    assert {"aioboto3", "botocore", "fastavro", "crc32c", "cramjam", "aiokafka"} <= set(code.distributions)


def test_wheels_that_would_not_load_are_refused_with_the_fix() -> None:
    # An old runtime no wheel here targets: every compiled distribution is refused.
    ancient = LambdaTarget((3, 9), "x86_64")
    assert incompatible(resolve(["crc32c"], LambdaTarget((3, 11), "x86_64")), ancient)
    with pytest.raises(PackagingError, match="pip install --target"):
        build_lambda_zip(PACKAGES, target=ancient, requirements=["crc32c"])


def test_a_missing_dependency_is_named(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match=r"the Lambda needs \S+ but it is not installed in "):
        build_lambda_zip(PACKAGES, deps_dir=tmp_path, check_wheels=False)
