"""Shared test helpers for the binary formats: bit patterns and NumPy/ml_dtypes limits."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from adamspec.oracles.rounding import numpy_dtype
from adamspec.spec.formats import FORMATS, FloatFormat

ALL = list(FORMATS.values())
IDS = [f.name for f in ALL]
UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}
FINFO = {
    "float64": np.finfo(np.float64),
    "float32": np.finfo(np.float32),
    "float16": np.finfo(np.float16),
    "bfloat16": ml_dtypes.finfo(ml_dtypes.bfloat16),
}


def from_bits(bits: int, fmt: FloatFormat) -> np.generic:
    """The value of ``fmt`` whose bit pattern is ``bits``."""
    return np.array(bits, dtype=UINT[fmt.bits]).view(numpy_dtype(fmt))[()]


def to_bits(value: object, fmt: FloatFormat) -> int:
    """The bit pattern of ``value`` (a value of ``fmt``)."""
    return int(np.asarray(value, dtype=numpy_dtype(fmt)).view(UINT[fmt.bits]))
