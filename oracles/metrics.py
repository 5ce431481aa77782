"""Error metrics: how far an implementation's stored value ``y`` is from the oracle.

The oracle supplies the exact value ``x*`` (a rational) and/or its correctly rounded
image ``r = round_exact(x*)`` in the same format as ``y``.  This module compares them.

Special values are categorical outcomes, never numbers
------------------------------------------------------
A NaN, an infinity or a zero of the wrong sign is not "some number of ULPs away";
reporting e.g. the ordinal distance between NaN and 1.0 (a huge, meaningless integer)
would poison every maximum and median.  So:

* :func:`classify` / :func:`classify_array` give each element an :class:`Outcome`:
  ``exact`` (bitwise equal; two NaNs count as equal whatever their payloads),
  ``ulp`` (both finite and different, or ``y`` finite where ``r`` overflowed to
  ``±inf``), ``nan``, ``posinf``, ``neginf`` (``y`` is that special value and ``r`` is
  not) and ``signed_zero`` (``y`` and ``r`` are zeros of opposite sign).
* :func:`ulp_distance` returns ``-1`` (the "not measurable" marker) wherever ``y`` or
  ``r`` is NaN or infinite, unless both are the same infinity (distance 0).
* the engine (:mod:`adamspec.harness.engine`) reports a component's worst outcome and,
  when every coordinate is measurable, its largest ULP distance.

The oracle's reference is NaN where the exact result is undefined (``0/0``,
``inf - inf``, NaN inputs); a ``y`` that is a number there is ``missed_nan``.

The ordinal map
---------------
IEEE binary formats are sign-magnitude: as unsigned integers, the bit patterns of
non-negative floats increase with their value, and those of negative floats increase
with their magnitude.  ``ordinal(y) = +bits`` for a clear sign bit and ``-(bits with the
sign cleared)`` for a set one is therefore strictly increasing in value over the
non-NaN floats, with ``+0`` and ``-0`` both at 0 and ``±inf`` one step past the largest
finite magnitude.  The ULP distance of two floats is the number of representable
steps between them: ``|ordinal(y) - ordinal(r)|``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

import numpy as np

from adamspec.oracles.rounding import exact_of_float, format_of_dtype, numpy_dtype, round_exact
from adamspec.spec.formats import FloatFormat

__all__ = [
    "Outcome",
    "bits_error",
    "categorical_kind",
    "classify",
    "classify_array",
    "ordinal",
    "ulp_distance",
]

#: ``ulp_distance`` marker for "not measurable in ULPs" (a NaN or an infinity involved).
UNMEASURABLE = -1

_UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}


class Outcome(StrEnum):
    """How a stored value ``y`` relates to the correctly rounded reference ``r``."""

    EXACT = "exact"
    ULP = "ulp"
    NAN = "nan"
    POSINF = "posinf"
    NEGINF = "neginf"
    SIGNED_ZERO = "signed_zero"
    MISSED_NAN = "missed_nan"


# --------------------------------------------------------------------------- helpers


def _as_array(y: Any, fmt: FloatFormat, what: str = "y") -> np.ndarray:
    """``y`` as an ndarray of ``fmt``'s dtype; refuses other dtypes (no silent rounding)."""
    arr = np.asarray(y)
    want = numpy_dtype(fmt)
    if arr.dtype != want:
        raise TypeError(
            f"{what} has dtype {arr.dtype} but the format is {fmt.name} ({want}); "
            "convert explicitly if that is intended"
        )
    return arr


def _infer_format(y: Any, fmt: FloatFormat | None) -> FloatFormat:
    """``fmt`` if given, else the format of ``y``'s dtype (Python floats are float64)."""
    return fmt if fmt is not None else format_of_dtype(np.asarray(y).dtype)


def _fields(arr: np.ndarray, fmt: FloatFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sign, biased exponent, trailing significand)`` bit fields, as int64 arrays.

    The sign is returned as 0/1; the magnitude bits (exponent and significand together)
    are available as ``(bits & ~sign_mask)``; see :func:`_magnitude`.
    """
    bits = arr.view(_UINT[fmt.bits]).astype(np.uint64)
    frac_bits = fmt.precision - 1
    exp_bits = fmt.bits - fmt.precision
    sign = (bits >> np.uint64(fmt.bits - 1)).astype(np.int64)
    exponent = ((bits >> np.uint64(frac_bits)) & np.uint64((1 << exp_bits) - 1)).astype(np.int64)
    fraction = (bits & np.uint64((1 << frac_bits) - 1)).astype(np.int64)
    return sign, exponent, fraction


def _magnitude(arr: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """The bit pattern with the sign bit cleared, as int64 (fits: at most 63 bits)."""
    bits = arr.view(_UINT[fmt.bits]).astype(np.uint64)
    return (bits & np.uint64((1 << (fmt.bits - 1)) - 1)).astype(np.int64)


def _specials(arr: np.ndarray, fmt: FloatFormat) -> dict[str, np.ndarray]:
    """Boolean masks ``nan``, ``inf``, ``zero``, ``subnormal``, ``neg`` from the bit fields."""
    sign, exponent, fraction = _fields(arr, fmt)
    top = (1 << (fmt.bits - fmt.precision)) - 1
    return {
        "nan": (exponent == top) & (fraction != 0),
        "inf": (exponent == top) & (fraction == 0),
        "zero": (exponent == 0) & (fraction == 0),
        "subnormal": (exponent == 0) & (fraction != 0),
        "neg": sign == 1,
    }


def _scalar_or_array(result: np.ndarray, like: np.ndarray) -> Any:
    """A NumPy scalar for 0-d input, else the array."""
    return result[()] if like.ndim == 0 else result


# --------------------------------------------------------------------------- ordinals


def ordinal(y: Any, fmt: FloatFormat) -> Any:
    """Integer image of ``y``'s bit pattern, monotone in value, ``±0 -> 0`` (vectorized).

    ``ordinal(y) = bits(y)`` if the sign bit is clear, ``-(bits(y) & ~sign_mask)`` if it
    is set; ``ordinal(nextafter(y, +inf)) == ordinal(y) + 1`` for every non-NaN ``y``
    below ``+inf`` (across zero too: ``-0`` and ``+0`` share 0, so the smallest
    negative and positive subnormals are 2 apart).  NaN ordinals are meaningless
    (they lie beyond the infinities).  Returns int64: an ``np.int64`` for scalar input,
    an array otherwise.
    """
    arr = _as_array(y, fmt)
    mag = _magnitude(arr, fmt)
    neg = _fields(arr, fmt)[0] == 1
    return _scalar_or_array(np.where(neg, -mag, mag), arr)


def ulp_distance(y: Any, r: Any, fmt: FloatFormat) -> Any:
    """``|ordinal(y) - ordinal(r)|`` as int64; ``-1`` where it is not measurable.

    ``r`` is the correctly rounded reference in the same dtype.  The distance counts
    representable values stepped over (so ``+0`` vs ``-0`` is 0; that difference is
    the ``signed_zero`` outcome of :func:`classify`).  Where ``y`` or ``r`` is NaN or
    infinite the result is ``-1`` -- special values are categorical outcomes, not
    distances -- except that equal infinities are at distance 0.
    """
    ya = _as_array(y, fmt)
    ra = _as_array(r, fmt, "r")
    ya, ra = np.broadcast_arrays(ya, ra)
    dist = np.abs(np.asarray(ordinal(ya, fmt)) - np.asarray(ordinal(ra, fmt)))
    ys, rs = _specials(ya, fmt), _specials(ra, fmt)
    same_inf = ys["inf"] & rs["inf"] & (ys["neg"] == rs["neg"])
    unmeasurable = (ys["nan"] | ys["inf"] | rs["nan"] | rs["inf"]) & ~same_inf
    dist = np.where(unmeasurable, UNMEASURABLE, dist).astype(np.int64)
    return _scalar_or_array(dist, ya)


def bits_error(ulps: Any) -> Any:
    """Herbie's bits of error, ``log2(1 + ulps)``; scalar or array.

    ``0`` ULPs is 0 bits, 1 ULP is 1 bit, ``2**k - 1`` ULPs is ``k`` bits.  The
    "not measurable" marker (a negative distance, i.e. ``-1``) maps to NaN in arrays and
    to None for scalars, as does a ``None`` input.
    """
    if ulps is None:
        return None
    arr = np.asarray(ulps)
    if arr.ndim == 0:
        value = int(arr)
        return None if value < 0 else math.log2(1 + value)
    as_float = arr.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(as_float < 0, np.nan, np.log2(1.0 + np.maximum(as_float, 0.0)))


# --------------------------------------------------------------------------- outcomes


def classify_array(y: Any, r: Any, fmt: FloatFormat | None = None) -> np.ndarray:
    """Vectorized :func:`classify`: an array of :class:`Outcome` values as strings.

    ``y`` and ``r`` must share one of the four dtypes (``fmt`` is inferred from it when
    not given).
    """
    fmt = _infer_format(y, fmt)
    ya = _as_array(y, fmt)
    ra = _as_array(r, fmt, "r")
    ya, ra = np.broadcast_arrays(ya, ra)
    ys, rs = _specials(ya, fmt), _specials(ra, fmt)
    uint = _UINT[fmt.bits]
    bitwise_equal = (ya.view(uint) == ra.view(uint)) | (ys["nan"] & rs["nan"])
    width = max(len(o.value) for o in Outcome)
    out = np.full(ya.shape, Outcome.ULP.value, dtype=f"<U{width}")
    out[ys["zero"] & rs["zero"] & (ys["neg"] != rs["neg"])] = Outcome.SIGNED_ZERO.value
    out[ys["inf"] & ~ys["neg"]] = Outcome.POSINF.value
    out[ys["inf"] & ys["neg"]] = Outcome.NEGINF.value
    out[ys["nan"]] = Outcome.NAN.value
    out[rs["nan"] & ~ys["nan"]] = Outcome.MISSED_NAN.value
    out[bitwise_equal] = Outcome.EXACT.value
    return out


def classify(y: Any, r: Any, fmt: FloatFormat | None = None) -> Outcome:
    """The :class:`Outcome` of one stored value ``y`` against the reference ``r``.

    In order of precedence: ``exact`` if ``y`` and ``r`` are the same bit pattern (or
    both NaN); ``nan`` if ``y`` is NaN; ``missed_nan`` if the exact result is undefined
    (``r`` is NaN: ``0/0``, ``inf - inf``) but ``y`` is a number, infinities included;
    ``posinf`` / ``neginf`` if ``y`` is that infinity; ``signed_zero`` if both are zeros
    of opposite sign; otherwise ``ulp`` (including a finite ``y`` where ``r`` overflowed
    to infinity).
    """
    out = classify_array(y, r, fmt)
    if out.ndim != 0:
        raise TypeError(f"classify takes scalars, got shape {out.shape}; use classify_array")
    return Outcome(str(out[()]))


def categorical_kind(value: Any, fmt: FloatFormat | None = None) -> str:
    """One of ``nan``, ``posinf``, ``neginf``, ``zero``, ``subnormal``, ``normal``.

    ``value`` is a single value of ``fmt``: a NumPy scalar of its dtype (``fmt`` may then
    be omitted), or a Python float that ``fmt`` represents exactly (``fmt`` defaults to
    float64 for Python floats).  Subnormal means ``0 < |value| < 2**emin``.
    """
    if isinstance(value, float) and not isinstance(value, np.generic) and fmt is not None:
        if math.isfinite(value) and round_exact(exact_of_float(value), fmt) != value:
            raise ValueError(f"{value!r} is not a {fmt.name} value")
        value = numpy_dtype(fmt).type(value)
    fmt = _infer_format(value, fmt)
    arr = _as_array(value, fmt, "value")
    if arr.ndim != 0:
        raise TypeError(f"categorical_kind takes a scalar, got shape {arr.shape}")
    s = {k: bool(v) for k, v in _specials(arr, fmt).items()}
    if s["nan"]:
        return "nan"
    if s["inf"]:
        return "neginf" if s["neg"] else "posinf"
    if s["zero"]:
        return "zero"
    return "subnormal" if s["subnormal"] else "normal"
