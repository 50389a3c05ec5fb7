"""Which wheels load in which Lambda runtime (pure tag logic)."""

from __future__ import annotations

import pytest

from tidelog.infra.packaging import LambdaTarget, pip_command

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


def test_the_fix_it_suggests_fetches_wheels_for_the_target() -> None:
    command = pip_command(PY312_ARM)
    assert "--platform manylinux2014_aarch64" in command and "--python-version 3.12" in command
    assert "--only-binary=:all:" in command and '"cramjam"' in command
