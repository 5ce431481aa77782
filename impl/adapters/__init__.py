"""Adapters: every implementation under test behind one protocol
(:mod:`adamspec.impl.adapters.base`).

Each module below declares ``INFOS`` (its registered configurations) and
imports its framework only when an adapter is built, so listing the registry
costs nothing and a missing framework is a skip, not an ImportError.
"""

from __future__ import annotations

import importlib

from adamspec.impl.adapters.base import (
    REGISTRY,
    Adapter,
    AdapterInfo,
    KernelLoadError,
    State,
    Unsupported,
    make_adapter,
    register,
)

#: The adapter modules, one per framework family.
MODULES = (
    "adamspec.impl.adapters.ours",
    "adamspec.impl.adapters.torch_optim",
    "adamspec.impl.adapters.seed_tutorial",
    "adamspec.impl.adapters.optax_optim",
    "adamspec.impl.adapters.tfjs",
    "adamspec.impl.adapters.onnx_ref",
    "adamspec.impl.adapters.tensorflow",
    "adamspec.impl.adapters.keras3",
)

_loaded: set[str] = set()


def load_registry() -> dict[str, AdapterInfo]:
    """Import every adapter module once and register its configurations."""
    for name in MODULES:
        if name in _loaded:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that family is not written yet
                continue
            raise
        register(*module.INFOS)
        _loaded.add(name)
    return REGISTRY


__all__ = [
    "MODULES",
    "REGISTRY",
    "Adapter",
    "AdapterInfo",
    "KernelLoadError",
    "State",
    "Unsupported",
    "load_registry",
    "make_adapter",
    "register",
]
