"""``adamspec doctor``: what this machine can test, and what to install for the rest.

One row per thing adamspec can drive or needs: every optional framework (from
:data:`adamspec.impl.frameworks.FRAMEWORKS`), each Keras 3 backend, Node.js, npm and the
TF.js packages, a C compiler (numba, ctypes kernels and ``torch.compile`` build code with
it) and a GPU. Each row says whether it is usable, its version, how many registered
implementations need it, and the pip extra or command that enables it. Nothing is imported
to find out (package metadata, ``--version`` calls), so the table costs about a second.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass

from adamspec.impl import node_packages
from adamspec.impl.adapters import REGISTRY, load_registry
from adamspec.impl.frameworks import FRAMEWORKS, availability


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    name: str  # what ``--require`` names
    kind: str  # "framework", "backend", "runtime", "compiler", "device"
    available: bool
    version: str  # "" when not available
    implementations: int  # registered implementations that need it
    enable: str  # the pip extra or command that makes it available
    detail: str  # where it was found, or why it is not usable


class UnknownRequirement(ValueError):
    """``--require`` named something the doctor does not check; the message lists them."""


def _first_line(command: list[str]) -> str | None:
    """The first line ``command`` prints, or None when it is missing or fails."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def _implementations() -> Counter[str]:
    load_registry()
    return Counter(info.framework for info in REGISTRY.values() if info.framework)


def _keras_backends() -> list[Check]:
    """Keras 3 runs on a backend chosen per process: one row per backend it is driven on."""
    load_registry()
    by_backend = Counter(
        info.options.get("env", {}).get("KERAS_BACKEND", "")
        for info in REGISTRY.values()
        if info.framework == "keras"
    )
    keras = availability("keras")
    rows = []
    for backend in sorted(by_backend):
        framework = "tensorflow" if backend == "tensorflow" else backend
        under = availability(framework)
        ok = keras.available and under.available
        reason = "keras not installed" if not keras.available else f"{framework} not installed"
        rows.append(
            Check(
                f"keras[{backend}]",
                "backend",
                ok,
                f"keras {keras.version} on {framework} {under.version}" if ok else "",
                by_backend[backend],
                f"pip install 'adamspec[tf,{FRAMEWORKS[framework].extra}]'",
                "" if ok else str(reason),
            )
        )
    return rows


def _gpu() -> Check:
    name = _first_line(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    cupy = availability("cupy")
    detail = "no NVIDIA GPU (nvidia-smi not found or lists none)"
    if name:
        detail = f"CuPy {cupy.version}" if cupy.available else "CuPy not installed"
    return Check(
        "gpu",
        "device",
        bool(name),
        name or "",
        0,
        "an NVIDIA GPU with its driver, then pip install 'adamspec[gpu]'",
        detail,
    )


def checks() -> list[Check]:
    """Every row, frameworks first, in a fixed order."""
    needed = _implementations()
    rows = []
    for name, framework in FRAMEWORKS.items():
        status = availability(name)
        rows.append(
            Check(
                name,
                "framework",
                status.available,
                status.version or "" if status.available else "",
                needed.get(name, 0),
                f"pip install 'adamspec[{framework.extra}]'",
                "" if status.available else "not installed",
            )
        )
    rows += _keras_backends()
    node, npm = node_packages.node_version(), node_packages.npm_version()
    rows.append(
        Check("node", "runtime", node is not None, node or "", 0,
              "Node.js >= 18 (https://nodejs.org or the system's packages)",
              "" if node else "node not found on PATH")
    )  # fmt: skip
    rows.append(
        Check("npm", "runtime", npm is not None, npm or "", 0,
              "npm (ships with Node.js)", "" if npm else "npm not found on PATH")
    )  # fmt: skip
    tfjs = node_packages.status()
    rows.append(
        Check(
            "tfjs",
            "framework",
            tfjs.ready,
            " ".join(f"{k.split('/')[-1]} {v}" for k, v in tfjs.installed.items()),
            needed.get("tfjs", 0),
            node_packages.SETUP_COMMAND,
            str(tfjs.home / "node_modules") if tfjs.ready else str(tfjs.problem),
        )
    )
    compiler = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    version = _first_line([compiler, "--version"]) if compiler else None
    rows.append(
        Check("cc", "compiler", version is not None, version or "", 0,
              "a C compiler (e.g. gcc) on PATH, for numba, ctypes kernels and torch.compile",
              shutil.which(compiler) if compiler else "no cc, gcc or clang on PATH")
    )  # fmt: skip
    rows.append(_gpu())
    return rows


def known_names() -> list[str]:
    return [c.name for c in checks()]


def missing(rows: list[Check], required: list[str]) -> list[Check]:
    """The rows among ``required`` that are not available; unknown names raise
    :class:`UnknownRequirement`."""
    by_name = {c.name: c for c in rows}
    unknown = [n for n in required if n not in by_name]
    if unknown:
        raise UnknownRequirement(
            f"--require {unknown[0]!r} is unknown; allowed: {', '.join(by_name)}"
        )
    return [by_name[n] for n in required if not by_name[n].available]


def table(rows: list[Check]) -> str:
    """The table ``adamspec doctor`` prints."""
    header = ("name", "status", "version", "impls", "to enable / detail")
    lines = []
    for c in rows:
        tail = c.detail if c.available else f"{c.enable}  ({c.detail})"
        lines.append(
            (c.name, "ok" if c.available else "missing", c.version[:40],
             str(c.implementations) if c.implementations else "", tail)
        )  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(4)]
    out = []
    for r in [header, *lines]:
        out.append("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    usable = sum(c.implementations for c in rows if c.available and c.kind == "framework")
    total = sum(c.implementations for c in rows if c.kind == "framework")
    ours = sum(1 for info in REGISTRY.values() if not info.framework)
    out.append(
        f"{usable + ours} of {total + ours} registered implementations can run here "
        f"({ours} of them adamspec's own, which need no framework)"
    )
    return "\n".join(out)


def as_json(rows: list[Check]) -> str:
    return json.dumps([asdict(c) for c in rows], indent=2) + "\n"


__all__ = ["Check", "UnknownRequirement", "as_json", "checks", "known_names", "missing", "table"]
