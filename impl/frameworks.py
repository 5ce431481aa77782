"""Which optional frameworks are installed, without importing them.

Adapters call :func:`require` before touching a framework, so a missing
framework becomes a recorded skip ("skipped: torch not installed") and the
rest of a run goes on; nothing in adamspec raises ImportError for an
optional dependency. Detection uses package metadata only, because importing
TensorFlow or JAX costs seconds.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass

from adamspec.impl import node_packages


@dataclass(frozen=True)
class Framework:
    """An optional framework: the module to import, the distribution that provides it,
    and the pyproject extra that installs it."""

    name: str
    module: str
    distribution: str
    extra: str


FRAMEWORKS: dict[str, Framework] = {
    f.name: f
    for f in (
        Framework("torch", "torch", "torch", "torch"),
        Framework("tensorflow", "tensorflow", "tensorflow-cpu", "tf"),
        Framework("tf_keras", "tf_keras", "tf-keras", "tf"),
        Framework("keras", "keras", "keras", "tf"),
        Framework("jax", "jax", "jax", "jax"),
        Framework("optax", "optax", "optax", "jax"),
        Framework("onnx", "onnx", "onnx", "onnx"),
        Framework("mlx", "mlx", "mlx", "mlx"),
        Framework("paddle", "paddle", "paddlepaddle", "paddle"),
        Framework("numba", "numba", "numba", "jit"),
        Framework("dask", "distributed", "distributed", "cluster"),
        Framework("cupy", "cupy", "cupy-cuda12x", "gpu"),
    )
}


class FrameworkMissing(RuntimeError):
    """An optional framework is not installed; the message is the skip reason."""


@dataclass(frozen=True)
class Availability:
    """Whether a framework can be used, and its version or the reason it cannot."""

    name: str
    available: bool
    version: str | None
    reason: str | None


def availability(name: str) -> Availability:
    """Check one framework (a key of FRAMEWORKS, or "tfjs") without importing it."""
    if name == "tfjs":
        return _tfjs_availability()
    try:
        fw = FRAMEWORKS[name]
    except KeyError:
        allowed = ", ".join([*FRAMEWORKS, "tfjs"])
        raise ValueError(f"framework={name!r} is unknown; allowed: {allowed}") from None
    if importlib.util.find_spec(fw.module) is None:
        return Availability(
            name, False, None, f"{name} not installed (pip install 'adamspec[{fw.extra}]')"
        )
    try:
        version = importlib.metadata.version(fw.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return Availability(name, True, version, None)


def _tfjs_availability() -> Availability:
    """Node.js on PATH and the pinned TF.js packages in their user-level home
    (:mod:`adamspec.impl.node_packages`); the reason names the command that fixes it."""
    state = node_packages.status()
    if not state.ready:
        return Availability("tfjs", False, None, f"tfjs not installed: {state.reason}")
    return Availability("tfjs", True, state.installed[node_packages.PACKAGES[0]], None)


def require(name: str) -> str:
    """The framework's version; raises FrameworkMissing with the skip reason if absent."""
    status = availability(name)
    if not status.available:
        raise FrameworkMissing(f"skipped: {status.reason}")
    return status.version or "unknown"


def installed() -> dict[str, Availability]:
    """Availability of every known framework, for reports and `adamspec run`."""
    return {name: availability(name) for name in [*FRAMEWORKS, "tfjs"]}
