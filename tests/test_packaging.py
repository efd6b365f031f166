"""Packaging: the package list, the editable install, the wheel, and the systemd unit.

The code folders actors/, supervision/ and api/ are installed as hostvisor.actors,
hostvisor.supervision and hostvisor.api through pyproject's package-dir mapping. These tests
prove that both installs (editable and wheel) import every module under those names, that no
top-level `api`, `actors` or `supervision` lands in site-packages, and that a new sub-package
cannot be left out of pyproject's `packages` list.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from harness.components import need

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
UNIT = REPO / "contrib" / "hostvisor.service"
DEBIAN_PYTHON = "/usr/bin/python3"
STRAY_TOP_LEVEL = ("actors", "supervision", "api")

# Run in a child interpreter, from a directory outside the work tree, so that neither the
# current directory nor pytest's sys.path entries can make an import succeed. Prints, as
# JSON, every hostvisor module with its file, and whether a top-level stray is importable.
IMPORT_EVERYTHING = """
import importlib, importlib.util, json, pkgutil, sys
tops = sys.argv[1:]
modules = {}
for top in tops:
    package = importlib.import_module(top)
    modules[top] = package.__file__
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        modules[info.name] = importlib.import_module(info.name).__file__
strays = [n for n in ("actors", "supervision", "api") if importlib.util.find_spec(n) is not None]
print(json.dumps({"modules": modules, "strays": strays}))
"""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{argv} exited {result.returncode}\n{output}"
    return result


def import_everything(python: Path | str, cwd: Path) -> dict[str, object]:
    result = run([str(python), "-c", IMPORT_EVERYTHING, *PACKAGE_DIR], cwd=cwd)
    report: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return report


def module_name(top: str, root: Path, path: Path) -> str:
    """The import name of a module file under a code folder."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([top, *parts])


def source_modules() -> dict[str, Path]:
    """Every module in the code folders, by the name it is imported as."""
    found = {}
    for top, folder in PACKAGE_DIR.items():
        root = REPO / folder
        for path in root.rglob("*.py"):
            if "__pycache__" not in path.parts:
                found[module_name(top, root, path)] = path
    return found


def tree_packages() -> tuple[set[str], list[str]]:
    """The packages in the code folders, and the folders holding Python code but no __init__."""
    packages, missing_init = set(), []
    for top, folder in PACKAGE_DIR.items():
        root = REPO / folder
        for directory in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
            relative = directory.relative_to(root)
            if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
                continue
            has_code = any(p.suffix == ".py" for p in directory.rglob("*.py"))
            if (directory / "__init__.py").is_file():
                packages.add(".".join([top, *relative.parts]))
            elif has_code:
                missing_init.append(str(directory.relative_to(REPO)))
    return packages, missing_init


# -- the package list -------------------------------------------------------------------


def test_package_dir_maps_the_three_code_folders():
    assert PACKAGE_DIR == {
        "hostvisor.actors": "actors",
        "hostvisor.supervision": "supervision",
        "hostvisor.api": "api",
    }
    assert not (REPO / "hostvisor").exists(), "hostvisor is a namespace: no folder of that name"


def test_package_list_matches_the_tree():
    packages, missing_init = tree_packages()
    assert not missing_init, f"folders with Python code but no __init__.py: {missing_init}"
    assert sorted(PACKAGES) == PACKAGES, "keep pyproject's packages list sorted"
    missing = sorted(packages - set(PACKAGES))
    extra = sorted(set(PACKAGES) - packages)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    assert not extra, f"listed in pyproject.toml but not in the tree: {extra}"


def test_each_code_folder_is_typed():
    for folder in PACKAGE_DIR.values():
        assert (REPO / folder / "py.typed").is_file(), f"{folder}/py.typed is missing"


# -- the editable install (the venv running these tests) --------------------------------


def test_editable_install_imports_every_module_from_the_work_tree(tmp_path):
    need(sys.prefix != sys.base_prefix, "the tests are not running in a venv (make venv)")
    report = import_everything(sys.executable, cwd=tmp_path)
    imported = {name: Path(str(file)).resolve() for name, file in report["modules"].items()}
    expected = {name: path.resolve() for name, path in source_modules().items()}
    assert imported == expected
    assert report["strays"] == [], "a top-level code folder is importable on its own"
    script = Path(sys.executable).parent / "hostvisor"
    assert script.is_file(), f"the editable install made no {script}"


# -- the wheel ---------------------------------------------------------------------------


def copy_sources(destination: Path) -> Path:
    """Copy what a build reads, so that a stale build/ in the work tree cannot leak in."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md", "COPYING"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, destination / name)
    for folder in PACKAGE_DIR.values():
        shutil.copytree(
            REPO / folder,
            destination / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The project's wheel, built from a copy of the work tree (with build isolation)."""
    work = tmp_path_factory.mktemp("wheel")
    source = copy_sources(work / "src")
    dist = work / "dist"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)],
        cwd=work,
    )
    (built,) = dist.glob("hostvisor-*.whl")
    return built


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_holds_only_the_hostvisor_namespace(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    tops = {name.split("/", 1)[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"hostvisor"}
    assert "hostvisor/__init__.py" not in names, "hostvisor must stay a namespace package"
    for package in PACKAGES:
        folder = package.replace(".", "/")
        assert f"{folder}/__init__.py" in names, f"{package} is missing from the wheel"
    for top in PACKAGE_DIR:
        assert f"{top.replace('.', '/')}/py.typed" in names
    modules = {
        n.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for n in names
        if n.endswith(".py")
    }
    assert modules == set(source_modules())
    assert re.search(r"^hostvisor\s*=\s*hostvisor\.api\.cli:main$", entry_points, re.MULTILINE)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_installs_and_imports_in_a_fresh_venv(wheel, tmp_path):
    need(Path(DEBIAN_PYTHON).is_file(), f"{DEBIAN_PYTHON} is missing (make deps)")
    venv = tmp_path / "venv"
    run([DEBIAN_PYTHON, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    # With its dependencies, from the package index: the wheel must bring what it imports.
    run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], cwd=tmp_path)

    report = import_everything(python, cwd=tmp_path)
    purelib = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            cwd=tmp_path,
        ).stdout.strip()
    )
    assert set(report["modules"]) == set(source_modules())
    for name, file in report["modules"].items():
        assert Path(str(file)).is_relative_to(purelib / "hostvisor"), f"{name} from {file}"
    assert report["strays"] == []
    for stray in STRAY_TOP_LEVEL:
        assert not (purelib / stray).exists(), f"{stray}/ was installed into site-packages"
    run([str(venv / "bin" / "hostvisor"), "--help"], cwd=tmp_path)


# -- the systemd unit --------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_runs_a_notify_service_that_never_kills_guests():
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["ExecStart"] == ["/usr/bin/hostvisor serve --config /etc/vdsm/vdsm.conf"]
    assert settings["KillMode"] == ["process"], "guests' qemu must outlive an agent stop"
    assert settings["WatchdogSec"] == ["60"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["TimeoutStopSec"] == ["30"]
    assert settings["Documentation"]
    assert settings["Description"]


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    need(analyze is not None, "systemd-analyze is missing (Debian package systemd)")
    assert analyze is not None
    # ExecStart must name an executable that exists here: the venv's hostvisor, as installed.
    executable = Path(sys.executable).parent / "hostvisor"
    need(executable.is_file(), f"{executable} is missing (make venv)")
    text = UNIT.read_text()
    copy = tmp_path / UNIT.name
    copy.write_text(
        text.replace("ExecStart=/usr/bin/hostvisor ", f"ExecStart={executable} "),
    )
    assert copy.read_text() != text
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert UNIT.name not in output, output


def test_ci_entry_point_is_executable():
    assert os.access(REPO / ".ci" / "run", os.X_OK)
