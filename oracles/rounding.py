"""Correct rounding of exact rational values into the binary formats of ``adamspec.spec.formats``.

Everything here works on integers: an exact value ``x = a / b`` is scaled by a power
of two and split with ``divmod``, so no intermediate floating-point operation can
round.  The only floats produced are the final results, built with ``math.ldexp`` from
an integer significand that fits in 53 bits, which is exact.

Notation used in the docstrings, for a format with precision ``p`` (significand bits
including the implicit one), exponent range ``[emin, emax]``:

* ``e(x) = floor(log2 |x|)`` -- the binade of ``x``;
* ``q(x) = max(e(x), emin) - p + 1`` -- exponent of the quantum (spacing) at ``x``;
  below ``2**emin`` the quantum is fixed at ``2**(emin - p + 1)`` (subnormals);
* ``max_finite = (2 - 2**(1 - p)) * 2**emax``;
* ``overflow_threshold = (2 - 2**-p) * 2**emax`` -- the midpoint between ``max_finite``
  and the would-be next value ``2**(emax + 1)``; IEEE 754 round-to-nearest-even sends
  ``|x| >= overflow_threshold`` to infinity (a tie there goes to the "even" neighbour
  ``2**(emax + 1)``, i.e. infinity, because ``max_finite`` has an odd significand).
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction
from typing import Any

import gmpy2
import ml_dtypes
import numpy as np

from adamspec.spec.formats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FloatFormat

__all__ = [
    "Exact",
    "exact_of_float",
    "format_of_dtype",
    "hex_float",
    "narrow_floats",
    "numpy_dtype",
    "round_exact",
    "round_to_numpy",
    "rounding_is_certain",
    "ulp_of_exact",
]

#: An exact rational value: ``int``, ``fractions.Fraction`` or ``gmpy2.mpq`` / ``mpz``
#: (anything registered as ``numbers.Rational``).  Floats are deliberately not included.
Exact = int | Fraction | gmpy2.mpq | gmpy2.mpz

_DTYPES: dict[str, np.dtype] = {
    FLOAT64.name: np.dtype(np.float64),
    FLOAT32.name: np.dtype(np.float32),
    FLOAT16.name: np.dtype(np.float16),
    BFLOAT16.name: np.dtype(ml_dtypes.bfloat16),
}


def numpy_dtype(fmt: FloatFormat) -> np.dtype:
    """The NumPy dtype storing ``fmt`` (``ml_dtypes.bfloat16`` for bfloat16)."""
    try:
        return _DTYPES[fmt.name]
    except KeyError:
        raise ValueError(f"no NumPy dtype for format {fmt.name!r}") from None


def format_of_dtype(dtype: Any) -> FloatFormat:
    """The ``FloatFormat`` stored by ``dtype`` (one of the four supported dtypes)."""
    dt = np.dtype(dtype)
    for fmt in (FLOAT64, FLOAT32, FLOAT16, BFLOAT16):
        if _DTYPES[fmt.name] == dt:
            return fmt
    raise ValueError(
        f"dtype {dt} is not a supported float format; allowed: "
        f"{', '.join(str(d) for d in _DTYPES.values())}"
    )


def _as_ratio(x: Exact) -> tuple[int, int]:
    """``(numerator, denominator)`` of an exact value, denominator > 0.

    Floats are refused on purpose: an exact oracle must never have passed through
    floating point.  Use :func:`exact_of_float` to turn a stored float into a Fraction.
    """
    if isinstance(x, numbers.Rational):  # int, Fraction, gmpy2.mpq/mpz, NumPy integers
        num, den = int(x.numerator), int(x.denominator)
        if den <= 0:  # pragma: no cover - Rational types normalise the sign
            num, den = -num, -den
        return num, den
    raise TypeError(
        f"expected an exact rational (int, Fraction, gmpy2.mpq), got {type(x).__name__} "
        f"{x!r}; convert stored floats with exact_of_float()"
    )


def _floor_log2(a: int, b: int) -> int:
    """``floor(log2(a / b))`` for positive integers ``a``, ``b`` (exact)."""
    e = a.bit_length() - b.bit_length()
    # Now 2**(e-1) < a/b < 2**(e+1); decide which side of 2**e we are on.
    if e >= 0:
        if a < (b << e):
            e -= 1
    elif (a << -e) < b:
        e -= 1
    return e


def _round_magnitude(a: int, b: int, fmt: FloatFormat) -> tuple[int, int] | None:
    """Round ``a / b > 0`` to ``fmt``: ``(m, q)`` with value ``m * 2**q``, or None on overflow.

    ``q = max(e, emin) - p + 1`` makes ``m = (a/b) / 2**q`` lie in ``[2**(p-1), 2**p)``
    for normal values and in ``[0, 2**(p-1))`` for subnormals; the remainder of the
    integer division decides round-half-to-even.  A carry to ``m = 2**p`` is an exact
    power of two (still representable) unless it happens in the top binade, where it
    means overflow.
    """
    p = fmt.precision
    e = _floor_log2(a, b)
    if e > fmt.emax:
        return None
    q = max(e, fmt.emin) - p + 1
    num = a << max(-q, 0)
    den = b << max(q, 0)
    m, rem = divmod(num, den)
    twice = 2 * rem
    if twice > den or (twice == den and m & 1):
        m += 1
    if m == 1 << p and max(e, fmt.emin) == fmt.emax:
        return None
    return m, q


def round_exact(x: Exact, fmt: FloatFormat) -> float:
    """Round the exact rational ``x`` to the nearest ``fmt`` value, ties to even.

    * ``x == 0`` gives ``+0.0``; a nonzero negative ``x`` that rounds to zero gives
      ``-0.0`` (IEEE 754: the sign of a rounded result is the sign of the exact one).
    * ``|x| >= (2 - 2**-p) * 2**emax`` gives ``±inf`` (the overflow threshold; a tie
      at the threshold rounds to infinity).
    * Below ``2**emin`` the spacing is the fixed subnormal quantum
      ``2**(emin - p + 1)``; ``x`` exactly half of it rounds to zero (even), anything
      larger to the smallest subnormal.

    The result is a Python float holding exactly the ``fmt`` value (all four formats
    embed exactly in binary64).
    """
    a, b = _as_ratio(x)
    if a == 0:
        return 0.0
    sign = -1.0 if a < 0 else 1.0
    rounded = _round_magnitude(abs(a), b, fmt)
    if rounded is None:
        return math.copysign(math.inf, sign)
    m, q = rounded
    # m < 2**53 (or m == 2**p for a carry into the next binade, still < 2**54 and a
    # power of two), so float(m) is exact, and m * 2**q is representable in binary64,
    # so ldexp does not round.
    return math.copysign(math.ldexp(float(m), q), sign)


def round_to_numpy(x: Exact, fmt: FloatFormat) -> np.generic:
    """``round_exact(x, fmt)`` as a NumPy scalar of ``fmt``'s dtype (exact conversion)."""
    value = round_exact(x, fmt)
    out = numpy_dtype(fmt).type(value)
    # The float already is a fmt value, so this conversion cannot round; keep it honest.
    assert float(out) == value or (math.isnan(value) and math.isnan(float(out)))
    return out


def narrow_floats(values: Any, fmt: FloatFormat) -> np.ndarray:
    """Each float of ``values`` correctly rounded to ``fmt`` (nearest, ties to even), as an
    array of ``fmt``'s dtype: the param a master copy rounds to. Zeros keep their sign and
    NaN and infinities stay themselves, as an IEEE 754 conversion does."""
    values = np.asarray(values)
    out = np.empty(values.shape, dtype=numpy_dtype(fmt))
    flat = out.reshape(-1)
    for i, x in enumerate(values.reshape(-1)):
        f = float(x)
        flat[i] = f if (f == 0.0 or not math.isfinite(f)) else round_exact(exact_of_float(x), fmt)
    return out


def _same_float(u: float, v: float) -> bool:
    """Bitwise equality for non-NaN floats: ``+0.0`` and ``-0.0`` differ."""
    return u == v and math.copysign(1.0, u) == math.copysign(1.0, v)


def rounding_is_certain(lo: Exact, hi: Exact, fmt: FloatFormat) -> float | None:
    """The rounded value of an unknown real ``t`` with ``lo <= t <= hi``, if it is decided.

    Rounding is monotone, so every ``t`` in ``[lo, hi]`` rounds to the same value
    exactly when ``round_exact(lo)`` and ``round_exact(hi)`` coincide.  Coincide means
    the same float bit pattern: ``-0.0`` (from a tiny negative ``lo``) and ``+0.0`` do
    not, because the sign of the result would depend on the sign of ``t``.  Returns
    None when the interval straddles a rounding boundary (or the sign of zero).
    """
    lo_n, lo_d = _as_ratio(lo)
    hi_n, hi_d = _as_ratio(hi)
    if lo_n * hi_d > hi_n * lo_d:
        raise ValueError(f"rounding_is_certain needs lo <= hi, got lo={lo!r} > hi={hi!r}")
    r_lo = round_exact(lo, fmt)
    r_hi = round_exact(hi, fmt)
    return r_lo if _same_float(r_lo, r_hi) else None


def exact_of_float(value: Any) -> Fraction:
    """The exact rational value of a finite float of one of the four formats.

    Accepts a Python float, a NumPy scalar (or 0-d array) of dtype float64, float32,
    float16 or ``ml_dtypes.bfloat16``.  Widening any of these to binary64 is exact, so
    ``Fraction(float(value))`` is the exact value.  NaN and infinities have no exact
    value: ``ValueError`` naming the value.  Both zeros map to ``Fraction(0)`` (the sign
    of zero is not part of the exact value).  Other dtypes (e.g. ``longdouble``, which
    would be truncated) are refused with ``TypeError``.
    """
    if isinstance(value, np.generic | np.ndarray):
        arr = np.asarray(value)
        if arr.shape != ():
            raise TypeError(f"exact_of_float takes a scalar, got an array of shape {arr.shape}")
        format_of_dtype(arr.dtype)  # raises for unsupported dtypes
        as_float = float(arr[()])
    elif isinstance(value, float):
        as_float = value
    else:
        raise TypeError(
            f"exact_of_float takes a float or a NumPy float scalar, got "
            f"{type(value).__name__} {value!r}"
        )
    if not math.isfinite(as_float):
        raise ValueError(f"{value!r} is not finite and has no exact rational value")
    return Fraction(as_float)


def hex_float(value: Any) -> str:
    """``float.hex`` of ``value`` widened to binary64 (exact for the four formats).

    E.g. float32 ``0.1`` is ``'0x1.99999a0000000p-4'``.  Non-finite values are
    spelled ``'inf'``, ``'-inf'`` and ``'nan'``.
    """
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v.hex()


def ulp_of_exact(x: Exact, fmt: FloatFormat) -> Fraction:
    """The ULP of ``fmt`` at the exact value ``x``: ``2**(clamp(e(x)) - p + 1)``.

    ``e(x) = floor(log2 |x|)`` clamped to ``[emin, emax]``: below ``2**emin`` (and for
    ``x == 0``) the result is the smallest subnormal ``2**(emin - p + 1)``; beyond the
    largest binade it stays the spacing of the top binade ``2**(emax - p + 1)``.  At a
    power of two ``2**k`` the ULP is the spacing *above* it (the binade ``[2**k,
    2**(k+1))`` contains ``2**k``).
    """
    a, b = _as_ratio(x)
    if a == 0:
        e = fmt.emin
    else:
        e = min(max(_floor_log2(abs(a), b), fmt.emin), fmt.emax)
    return Fraction(2) ** (e - fmt.precision + 1)
