"""The one place that chooses the array namespace: NumPy, or CuPy for CuPy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np


def array_namespace(*arrays: Any) -> Any:
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def to_numpy(a: Any) -> np.ndarray:
    """A host copy (CuPy) or the array itself (NumPy)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)
