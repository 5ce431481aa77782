"""Dependencies point one way (DEVELOPERS.md): checked on the source, not by convention."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("spec", "oracles", "impl", "harness", "reports")

# package -> project packages it must never import
FORBIDDEN = {
    "spec": {"oracles", "impl", "harness", "reports"},
    "oracles": {"impl", "harness", "reports"},
    "impl": {"oracles", "harness", "reports"},
    "reports": {"oracles", "impl", "harness"},
    "harness": set(),
}
# spec is data and docs: no numerical libraries at all
SPEC_FORBIDDEN_LIBS = {"numpy", "mpmath", "gmpy2", "ml_dtypes", "torch", "tensorflow", "jax"}


def _package(module: str) -> str:
    """The name a dependency rule speaks of: ``adamspec.impl.adam`` -> ``impl``,
    ``numpy.linalg`` -> ``numpy``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "adamspec" and len(parts) > 1 else parts[0]


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(_package(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "adamspec":  # from adamspec import impl
                names.update(alias.name for alias in node.names)
            else:
                names.add(_package(node.module))
    return names


SOURCES = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_sources_were_found():
    assert len(SOURCES) >= 10


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path):
    package = path.relative_to(ROOT).parts[0]
    imported = imported_top_levels(path)
    bad = imported & FORBIDDEN[package]
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; {package} must not"
    if package == "spec":
        libs = imported & SPEC_FORBIDDEN_LIBS
        assert not libs, f"{path.relative_to(ROOT)} imports {sorted(libs)}: spec has no numerics"
