"""The wheel a user installs: one ``adamspec`` namespace, and every file the code reads.

The fast tests build the wheel from this checkout (``pip wheel --no-build-isolation``, about a
second) and read its file list. The slow test installs it into a fresh virtual environment
outside the checkout and runs the quick suite there, as a user of ``pip install adamspec``
would.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spec", "oracles", "impl", "harness", "reports")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the checkout's files (what git tracks or would track), so no
    earlier build/ folder can lend it files the sources no longer ship."""
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\n")  # fmt: skip
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (found,) = out.glob("adamspec-*.whl")
    return found


@pytest.fixture(scope="module")
def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def _tracked(package: str) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", package],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return [ROOT / p for p in listed]


def _in_wheel(path: Path) -> str:
    return "adamspec/" + path.relative_to(ROOT).as_posix()


def test_nothing_but_adamspec_at_the_top_of_site_packages(names):
    tops = {n.split("/")[0] for n in names}
    assert tops == {"adamspec", next(t for t in tops if t.endswith(".dist-info"))}, tops


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_in_the_wheel(names, package):
    modules = [p for p in _tracked(package) if p.suffix == ".py"]
    assert modules
    assert not [_in_wheel(p) for p in modules if _in_wheel(p) not in names]


def _named_data_files() -> dict[Path, list[str]]:
    """Files of the packages that are not Python, each with the modules whose string
    constants name it (``"tfjs_worker.js"``, ``"package-lock.json"``...): what the code opens."""
    data = [p for pkg in PACKAGES for p in _tracked(pkg) if p.suffix != ".py"]
    named: dict[Path, list[str]] = {p: [] for p in data}
    for pkg in PACKAGES:
        for module in (p for p in _tracked(pkg) if p.suffix == ".py"):
            tree = ast.parse(module.read_text(encoding="utf-8"))
            strings = {
                n.value
                for n in ast.walk(tree)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            }
            for path in data:
                if any(path.name in s for s in strings):
                    named[path].append(module.relative_to(ROOT).as_posix())
    return named


def test_every_file_the_code_names_is_in_the_wheel(names):
    named = _named_data_files()
    opened = {p: who for p, who in named.items() if who}
    # the worker script, the TF.js lock file and package.json, the spec document at least
    assert {p.name for p in opened} >= {"tfjs_worker.js", "package-lock.json", "package.json"}
    missing = {_in_wheel(p): who for p, who in opened.items() if _in_wheel(p) not in names}
    assert not missing, f"read at run time but not in the wheel: {missing}"


def test_every_data_file_of_the_packages_is_in_the_wheel(names):
    data = [p for pkg in PACKAGES for p in _tracked(pkg) if p.suffix != ".py"]
    assert not [_in_wheel(p) for p in data if _in_wheel(p) not in names]


def test_entry_points_name_the_namespace(wheel):
    with zipfile.ZipFile(wheel) as z:
        info = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
        text = z.read(info).decode()
    assert "adamspec = adamspec.harness.cli:main" in text
    assert "adamspec = adamspec.harness.pytest_plugin" in text


@pytest.mark.slow
def test_the_wheel_installed_outside_the_checkout_runs_the_quick_suite(wheel, tmp_path):
    """A fresh venv, the wheel and its core dependencies (pinned), run from another folder."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, text=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(env_dir / "bin" / "adamspec"), "run", "--quick", "--impl", "adamspec[*]",
         "--out", str(work / "out")],
        cwd=work, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (work / "out" / "summary.csv").read_text()
    rows = summary.strip().splitlines()[1:]
    assert len(rows) >= 26 * 7, len(rows)
    assert all(",pass," in r for r in rows), [r for r in rows if ",pass," not in r][:3]
    doctor = subprocess.run(
        [str(env_dir / "bin" / "adamspec"), "doctor", "--json"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert '"name": "torch"' in doctor.stdout
