"""The double-double interface of :mod:`adamspec.impl._dd`, evaluated in mpmath instead.

For coordinates whose inputs are so small or so large (float64 targets near
the subnormal or overflow range) that error-free transformations in float64
underflow or overflow, :func:`adamspec.impl._kernels.exact_kernel` runs on object
arrays of mpmath numbers at :data:`PRECISION` bits through these functions:
the same formula, no exponent limits. Pairs are ``(value, 0)``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
from mpmath import mp

#: Working precision: far beyond the ~106 bits of the double-double constants.
PRECISION = 320


def _value(a: Any) -> Any:
    hi, lo = a
    if isinstance(hi, float):  # a double-double constant: hi + lo in binary64 would drop lo
        return mp.mpf(hi) + lo
    return hi + lo


def add(a: Any, b: Any) -> tuple[Any, int]:
    return _value(a) + _value(b), 0


def sub(a: Any, b: Any) -> tuple[Any, int]:
    return _value(a) - _value(b), 0


def mul(a: Any, b: Any) -> tuple[Any, int]:
    return _value(a) * _value(b), 0


def div(a: Any, b: Any, xp: Any = np) -> tuple[Any, int]:
    numerator, denominator = np.broadcast_arrays(
        np.asarray(_value(a), dtype=object), np.asarray(_value(b), dtype=object)
    )
    out = np.empty(numerator.shape, dtype=object)
    for i, (n, d) in enumerate(zip(numerator.ravel(), denominator.ravel(), strict=True)):
        # IEEE, not Python: x/0 is +-inf and 0/0 is NaN
        out.flat[i] = (
            n / d if d != 0 else (mp.nan if n == 0 or mp.isnan(n) else mp.inf * mp.sign(n))
        )
    return out, 0


def sqrt(a: Any, xp: Any = np) -> tuple[Any, int]:
    values = np.asarray(_value(a), dtype=object)
    out = np.empty(values.shape, dtype=object)
    for i, x in enumerate(values.ravel()):
        out.flat[i] = mp.sqrt(x) if not x < 0 else mp.nan
    return out, 0


def maximum(a: Any, b: Any, xp: Any = np) -> tuple[Any, int]:
    left, right = np.broadcast_arrays(
        np.asarray(_value(a), dtype=object), np.asarray(_value(b), dtype=object)
    )
    out = np.empty(left.shape, dtype=object)
    for i, (x, y) in enumerate(zip(left.ravel(), right.ravel(), strict=True)):
        out.flat[i] = mp.nan if (mp.isnan(x) or mp.isnan(y)) else max(x, y)
    return out, 0


def lift(values: Any) -> np.ndarray:
    """Float arrays as object arrays of exact mpmath numbers."""
    return np.array([mp.mpf(float(v)) for v in np.ravel(values)], dtype=object)


def to_float64(values: Any) -> np.ndarray:
    """Correctly rounded binary64 values of mpmath numbers (subnormals and overflow included)."""
    out = np.empty(len(values), dtype=np.float64)
    for i, x in enumerate(values):
        if mp.isnan(x):
            out[i] = np.nan
        elif mp.isinf(x):
            out[i] = np.inf if x > 0 else -np.inf
        else:
            sign, man, exp, _ = mp.mpf(x)._mpf_  # man_exp drops the sign
            exact = (-1) ** sign * Fraction(int(man)) * (Fraction(2) ** int(exp))
            try:
                out[i] = float(exact)  # Fraction -> float rounds correctly
            except OverflowError:
                out[i] = np.inf if exact > 0 else -np.inf
    return out
