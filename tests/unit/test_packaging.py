"""The package layout: every source folder is installed, importable and inside its layer."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"storage": "tidelog.storage", "broker": "tidelog.broker", "lambda": "tidelog.lambdas",
           "cli": "tidelog.cli", "infra": "tidelog.infra"}


def _declared() -> tuple[set[str], dict[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(config["packages"]), config["package-dir"]


def _source_packages() -> set[str]:
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    return found


def test_every_source_package_is_listed_for_installation() -> None:
    declared, _ = _declared()
    missing = _source_packages() - declared
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_required_folders_map_to_the_tidelog_namespace() -> None:
    _, mapping = _declared()
    assert {v: k for k, v in mapping.items()} == FOLDERS


def test_every_listed_package_imports() -> None:
    declared, _ = _declared()
    for name in sorted(declared):
        importlib.import_module(name)


def test_console_script_reports_its_version() -> None:
    out = subprocess.run([sys.executable, "-m", "tidelog.cli", "--version"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.startswith("tidelog, version ")


@pytest.mark.skipif(shutil.which("lint-imports") is None and not Path(sys.executable).with_name("lint-imports").exists(),
                    reason="import-linter is a test dependency")
def test_layer_contracts_hold() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.slow
def test_wheel_contains_and_imports_every_module(tmp_path: Path) -> None:
    """A wheel install must carry every module, not only an editable checkout."""
    import zipfile

    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(wheel_dir.glob("tidelog-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in FOLDERS.items():
        for source in (ROOT / folder).rglob("*.py"):
            rel = source.relative_to(ROOT / folder)
            assert "/".join([*package.split("."), *rel.parts]) in names, f"{source} is missing from the wheel"
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    declared, _ = _declared()
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; " \
           "import tidelog.storage; print(tidelog.storage.__file__)"
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); "
                          "import site; site.main(); " + code, *sorted(declared)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(target)), out.stdout
