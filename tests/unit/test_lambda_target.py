"""Which wheels load in which Lambda runtime, and how wheels for it are fetched (pure logic)."""

from __future__ import annotations

import shlex

import pytest

from tidelog.infra.packaging import DEFAULT_RUNTIME, DEPLOYABLE_RUNTIMES, LambdaTarget, PackagingError, pip_command
from tidelog.infra.template import StackOptions
from tidelog.infra.wheels import pinned_requirements

PY311_X86 = LambdaTarget((3, 11), "x86_64")   # Amazon Linux 2, glibc 2.26
PY312_ARM = LambdaTarget((3, 12), "arm64")    # Amazon Linux 2023, glibc 2.34


@pytest.mark.parametrize("tag, target, ok", [
    ("py3-none-any", PY311_X86, True),
    ("cp311-cp311-manylinux_2_17_x86_64", PY311_X86, True),
    ("cp311-cp311-manylinux2014_x86_64", PY311_X86, True),
    ("cp311-cp311-manylinux1_x86_64", PY311_X86, True),
    ("cp311-cp311-manylinux_2_28_x86_64", PY311_X86, False),   # needs glibc 2.28 > 2.26
    ("cp311-cp311-manylinux_2_28_aarch64", PY312_ARM, False),  # wrong Python
    ("cp312-cp312-manylinux_2_28_aarch64", PY312_ARM, True),
    ("cp312-cp312-manylinux_2_17_x86_64", PY312_ARM, False),   # wrong architecture
    ("cp38-abi3-manylinux_2_17_x86_64", PY311_X86, True),
    ("cp311-cp311-macosx_11_0_arm64", PY312_ARM, False),
    ("cp311-cp311-musllinux_1_1_x86_64", PY311_X86, False),
    ("cp310-cp310-manylinux_2_17_x86_64", PY311_X86, False),
    ("cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64", PY311_X86, True),
])
def test_wheel_tags(tag: str, target: LambdaTarget, ok: bool) -> None:
    assert target.accepts(tag) is ok


def test_runtime_names_and_glibc() -> None:
    assert (PY311_X86.runtime, PY311_X86.glibc) == ("python3.11", (2, 26))
    assert (PY312_ARM.runtime, PY312_ARM.glibc, PY312_ARM.machine) == ("python3.12", (2, 34), "aarch64")


def test_runtimes_parse_and_unsupported_ones_are_refused() -> None:
    assert LambdaTarget.parse("python3.13", "arm64") == LambdaTarget((3, 13), "arm64")
    assert {LambdaTarget.parse(r).runtime for r in DEPLOYABLE_RUNTIMES} == set(DEPLOYABLE_RUNTIMES)
    for bad in ("python3.8", "python2.7", "py3.13", "python3.x", "nodejs20.x"):
        with pytest.raises(PackagingError, match="unsupported Lambda runtime"):
            LambdaTarget.parse(bad)
    with pytest.raises(PackagingError, match="architecture"):
        LambdaTarget.parse("python3.13", "riscv64")


def test_new_stacks_use_a_runtime_that_can_still_be_created() -> None:
    assert DEFAULT_RUNTIME in DEPLOYABLE_RUNTIMES
    assert StackOptions("demo", "us-east-1").runtime == DEFAULT_RUNTIME


def test_pip_is_asked_only_for_wheels_the_runtime_glibc_loads() -> None:
    assert PY311_X86.pip_platforms == ["manylinux2014_x86_64"]
    assert PY312_ARM.pip_platforms == ["manylinux_2_34_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64"]
    args = shlex.split(pip_command(PY312_ARM))
    assert args[:4] == ["pip", "install", "--target", "lambda-deps"]
    assert "--python-version" in args and args[args.index("--python-version") + 1] == "3.12"
    assert "--only-binary=:all:" in args and "cramjam" in args


def test_fetched_requirements_are_pinned_to_the_tested_versions_with_markers_evaluated_for_the_target() -> None:
    from importlib.metadata import version
    on_313 = pinned_requirements(LambdaTarget((3, 13), "x86_64"))
    assert f"fastavro=={version('fastavro')}" in on_313
    assert any(r.startswith("backports.zstd==") for r in on_313)
    on_314 = pinned_requirements(LambdaTarget((3, 14), "x86_64"))  # zstd is in the 3.14 stdlib
    assert not any(r.startswith("backports.zstd") for r in on_314)
    assert all(";" not in r for r in on_313 + on_314)
