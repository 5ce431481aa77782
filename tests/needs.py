"""Which frameworks a test needs, and what a missing one means.

A user's own ``pytest`` without the extras skips the tests of a framework it lacks, with
the reason. ``make test`` and CI (``CI=true``) install every pinned framework, so there a
missing one is a broken install and **fails** the tests that need it: a run whose install
silently lost TensorFlow must not be green.

Use ``@pytest.mark.needs("torch", ...)`` (``pytestmark`` for a whole module) or, inside a
test, :func:`need`. Names are those of :func:`adamspec.impl.frameworks.availability`
(``torch``, ``tensorflow``, ``tf_keras``, ``keras``, ``jax``, ``optax``, ``onnx``,
``mlx``, ``paddle``, ``numba``, ``tfjs``).
"""

from __future__ import annotations

import os

import pytest

from adamspec.impl.frameworks import availability

#: What `make test` installs (the `all` extra and the TF.js packages): required in CI.
PINNED = (
    "torch", "tensorflow", "tf_keras", "keras", "jax", "optax", "onnx", "mlx", "paddle", "numba",
    "dask", "tfjs",
)  # fmt: skip


def frameworks_required() -> bool:
    """True under CI (``CI=true``) and ``make test`` (``ADAMSPEC_REQUIRE_FRAMEWORKS=1``)."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return ci or os.environ.get("ADAMSPEC_REQUIRE_FRAMEWORKS", "") == "1"


def missing(*names: str) -> list[str]:
    """The reasons of the frameworks among ``names`` that are not available."""
    return [str(status.reason) for status in map(availability, names) if not status.available]


def need(*names: str) -> None:
    """Skip the running test when a framework is missing, or fail it where all are required."""
    reasons = missing(*names)
    if not reasons:
        return
    if frameworks_required():
        pytest.fail(
            f"{'; '.join(reasons)}: CI and `make test` require every pinned framework "
            "(a missing one is a broken install, not a skip)",
            pytrace=False,
        )
    pytest.skip("; ".join(reasons))
