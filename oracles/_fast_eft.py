"""Vectorized building blocks of the fast oracle: error-free transformations, double-double
arithmetic with rigorous error bounds, exact signs of sums, and correct rounding.

Everything here works on NumPy float64 arrays (scalars broadcast) and assumes
round-to-nearest binary64 arithmetic without FMA contraction (NumPy ufuncs).

* :func:`two_sum`, :func:`two_prod` -- Knuth's and Dekker's error-free transformations:
  ``s + e == a + b`` and ``p + e == a * b`` exactly (two_prod needs
  ``|a|, |b| < 2**996`` and no underflow of the error term).
* :class:`DDV` -- a double-double value ``hi + lo`` with an absolute error bound
  ``err`` on the distance to the exact real it stands for; :func:`dd_add`,
  :func:`dd_mul`, :func:`dd_div`, :func:`dd_sqrt`, :func:`dd_max` propagate the
  bound (first-order terms exact, second-order ones kept, a relative rounding
  term per operation taken generously from the published analyses of these
  algorithms, plus an absolute underflow term for tiny results).
* :func:`expansion_sign` -- the exact sign of a sum of doubles (Shewchuk's
  Grow-Expansion): used to decide on which side of a rounding boundary an exact
  moment lies, and to recognise exact ties.
* :func:`round_to` -- correct rounding (nearest, ties to even) of float64 values to a
  narrower format, with subnormals and overflow; :func:`certify` -- the rounding of
  every real in ``[x - e, x + e]`` when they all round alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from adamspec.oracles.rounding import numpy_dtype
from adamspec.spec.formats import FLOAT16, FLOAT32, FLOAT64, FloatFormat

Array = Any

#: Unit roundoff of binary64.
U = 2.0**-53
#: Relative rounding bounds of the double-double operations below, in units of U**2
#: (published bounds: accurate addition 3u^2, products ~5-7u^2, division ~10-15u^2,
#: square root ~4u^2; each taken with a margin of at least 2).
U_ADD = 8 * U * U
U_MUL = 16 * U * U
U_DIV = 48 * U * U
U_SQRT = 32 * U * U
#: Below this magnitude a double-double operation may have lost low-order bits to
#: underflow; its error then gets the absolute term ETA.
TINY = 2.0**-900
ETA = 2.0**-1060
#: Veltkamp's splitting constant 2**27 + 1.
_SPLITTER = 134217729.0


# ---------------------------------------------------------------- error-free transforms


def two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``s + e == a + b`` exactly with ``s = fl(a + b)`` (Knuth; no conditions but finiteness)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def fast_two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``s + e == a + b`` exactly when ``|a| >= |b|`` or ``a == 0`` (Dekker)."""
    s = a + b
    e = b - (s - a)
    return s, e


def split(a: Array) -> tuple[Array, Array]:
    """``a == hi + lo`` with both halves of at most 26 significant bits (Veltkamp)."""
    t = _SPLITTER * a
    hi = t - (t - a)
    return hi, a - hi


def two_prod(a: Array, b: Array) -> tuple[Array, Array]:
    """``p + e == a * b`` exactly (Dekker), for ``|a|, |b| < 2**996`` and ``|ab|`` far from
    underflow (the error term must be representable)."""
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


# ---------------------------------------------------------------- exact signs of sums


def expansion_sign(terms: list[Array]) -> Array:
    """The exact sign (-1, 0, 1 as float64) of ``sum(terms)`` elementwise.

    Grow-Expansion (Shewchuk 1997): adding each term to a nonoverlapping expansion
    with a cascade of :func:`two_sum` keeps it exact and nonoverlapping, so the
    sign of the sum is the sign of its largest nonzero component. Exact as long
    as no operation overflows (callers keep magnitudes far below 2**1023).
    """
    expansion = [np.asarray(terms[0], dtype=np.float64)]
    for b in terms[1:]:
        q = np.asarray(b, dtype=np.float64)
        grown = []
        for x in expansion:
            q, h = two_sum(q, x)
            grown.append(h)
        grown.append(q)
        expansion = grown
    sign = np.zeros(np.shape(expansion[-1]))
    for component in expansion:  # increasing magnitude: the last nonzero one wins
        s = np.sign(component)
        sign = np.where(s != 0, s, sign)
    return sign


# ---------------------------------------------------------------- double-double values


@dataclass
class DDV:
    """A double-double array ``hi + lo`` (normalized: ``hi == fl(hi + lo)``) standing for an
    unknown real within ``err`` of it (``err`` an array or a scalar)."""

    hi: Array
    lo: Array
    err: Array

    def mag(self) -> Array:
        """An upper bound of ``|hi + lo|``."""
        return np.abs(self.hi) * (1.0 + 2.0**-52)


def ddv_exact(x: Array) -> DDV:
    """Exact doubles as a :class:`DDV` with zero error."""
    x = np.asarray(x, dtype=np.float64)
    return DDV(x, np.zeros_like(x), 0.0)


def _underflow(h: Array, *operands: Array) -> Array:
    """ETA where a product/quotient may have underflowed (tiny result, nonzero operands)."""
    risky = np.abs(h) < TINY
    for x in operands:
        risky = risky & (x != 0)
    return risky * ETA


def _dd_add_raw(ah: Array, al: Array, bh: Array, bl: Array) -> tuple[Array, Array]:
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    e = e + t
    s, e = fast_two_sum(s, e)
    e = e + f
    return fast_two_sum(s, e)


def dd_add(a: DDV, b: DDV) -> DDV:
    """``a + b`` (the accurate double-double sum: relative error <= 3u^2 + 13u^3)."""
    h, lo = _dd_add_raw(a.hi, a.lo, b.hi, b.lo)
    tiny = (np.abs(h) < TINY) & (h != 0)
    return DDV(h, lo, a.err + b.err + U_ADD * np.abs(h) + tiny * ETA)


def dd_neg(a: DDV) -> DDV:
    return DDV(-a.hi, -a.lo, a.err)


def dd_sub(a: DDV, b: DDV) -> DDV:
    return dd_add(a, dd_neg(b))


def _dd_mul_raw(ah: Array, al: Array, bh: Array, bl: Array) -> tuple[Array, Array]:
    p, e = two_prod(ah, bh)
    e = e + (ah * bl + al * bh)
    return fast_two_sum(p, e)


def dd_mul(a: DDV, b: DDV) -> DDV:
    """``a * b``: exact product of the high parts, rounded cross terms (error <~ 6u^2)."""
    h, lo = _dd_mul_raw(a.hi, a.lo, b.hi, b.lo)
    err = a.mag() * b.err + b.mag() * a.err + a.err * b.err
    return DDV(h, lo, err + U_MUL * np.abs(h) + _underflow(h, a.hi, b.hi))


def dd_div(a: DDV, b: DDV) -> DDV:
    """``a / b`` for ``b`` bounded away from 0 (otherwise the bound is infinite or NaN).

    Quotient with two Newton corrections (the QD library's accurate division).
    Propagation: ``|A/B - a/b| <= (e_a + |a/b| e_b) / (|b| - e_b)``.
    """
    q1 = a.hi / b.hi
    p, e = _dd_mul_raw(b.hi, b.lo, q1, 0.0)
    rh, rl = _dd_add_raw(a.hi, a.lo, -p, -e)
    q2 = rh / b.hi
    p, e = _dd_mul_raw(b.hi, b.lo, q2, 0.0)
    rh, rl = _dd_add_raw(rh, rl, -p, -e)
    q3 = rh / b.hi
    q1, q2 = fast_two_sum(q1, q2)
    h, lo = _dd_add_raw(q1, q2, q3, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.abs(b.hi) * (1.0 - 2.0**-50) - b.err
        prop = (a.err + np.abs(h) * (1.0 + 2.0**-50) * b.err) / margin
        prop = np.where(margin > 0, prop, np.inf)
    return DDV(h, lo, prop + U_DIV * np.abs(h) + _underflow(h, a.hi))


def dd_sqrt(a: DDV) -> DDV:
    """``sqrt(a)`` of a real known to be >= 0: one Newton correction of the double sqrt.

    Propagation: ``|sqrt(A) - sqrt(a)| <= min(e_a / sqrt(a), sqrt(e_a))``.
    """
    pos = a.hi > 0
    x = np.where(pos, a.hi, 1.0)
    xl = np.where(pos, a.lo, 0.0)
    s0 = np.sqrt(x)
    p, e = two_prod(s0, s0)
    r = ((x - p) - e) + xl  # x - p is exact (Sterbenz); r ~ 2u x
    c = r / (2.0 * s0)
    h, lo = fast_two_sum(s0, c)
    h = np.where(pos, h, 0.0)
    lo = np.where(pos, lo, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        prop = np.minimum(np.where(pos, a.err / h, np.inf), np.sqrt(a.err))
    return DDV(h, lo, prop + U_SQRT * np.abs(h))


def dd_max(a: DDV, b: DDV) -> DDV:
    """``max(a, b)``: ``|max(A, B) - max(a, b)| <= max(e_a, e_b)``."""
    a_wins = (a.hi > b.hi) | ((a.hi == b.hi) & (a.lo >= b.lo))
    return DDV(np.where(a_wins, a.hi, b.hi), np.where(a_wins, a.lo, b.lo), np.maximum(a.err, b.err))


# ---------------------------------------------------------------- correct rounding


def _generic_round(x: Array, fmt: FloatFormat) -> Array:
    """Round float64 values to ``fmt`` (nearest, ties to even) by exact scaling; float64 out."""
    mag = np.abs(x)
    _, ex = np.frexp(mag)
    q = np.maximum(ex - 1, fmt.emin) - (fmt.precision - 1)
    r = np.ldexp(np.rint(np.ldexp(mag, -q)), q)
    r = np.where(r >= 2.0 ** (fmt.emax + 1), np.inf, r)
    return np.where(np.isfinite(x), np.copysign(r, x), x)


def round_to(x: Array, fmt: FloatFormat) -> Array:
    """Correctly rounded ``fmt`` values of float64 ``x`` (as float64; NaN and inf kept).

    float32 and float16 use NumPy's conversions (correctly rounded, checked in the
    tests); bfloat16 does not (ml_dtypes converts float64 through float32, which
    double-rounds), so it is rounded by exact scaling.
    """
    x = np.asarray(x, dtype=np.float64)
    if fmt == FLOAT64:
        return x
    with np.errstate(over="ignore", invalid="ignore"):
        if fmt == FLOAT32:
            return x.astype(np.float32).astype(np.float64)
        if fmt == FLOAT16:
            return x.astype(np.float16).astype(np.float64)
        return _generic_round(x, fmt)


def certify(x: Array, e: Array, fmt: FloatFormat) -> tuple[Array, Array]:
    """``(value, certain)``: where ``certain``, every real within ``e`` of ``x`` rounds to
    ``value`` (float64 holding a ``fmt`` value) in ``fmt``, which has at most 53 bits.

    The ends of ``[x - e, x + e]`` are widened by a float64 ulp so that their own
    rounding cannot shrink the interval; both must round alike and lie strictly on
    one side of zero (the sign of a rounded zero follows the exact value), or the
    interval must be the exact zero (+0.0). NaN or infinite ``x``/``e`` is never certain.
    """
    rounded, certain = certify_native(x, e, fmt)
    # hi + 0 rounds like x; for the exact zero (width 0) it is +0.0 even when x is -0.0.
    return rounded.astype(np.float64), certain


def certify_into(x: Array, width: Array, fmt: FloatFormat, out: Array) -> Array:
    """Like :func:`certify`, for a ``width`` that already includes the margins for this
    function's own rounding (``width >= e (1 + 2**-40) + 2**-51 |x|`` for a bound ``e``);
    writes the values into ``out`` (``fmt``'s NumPy dtype) and returns the mask of certain
    ones. A nonzero rounded value certifies the sign; a rounded zero only when exact."""
    lo = x - width
    hi = x + width
    if fmt == FLOAT32 or fmt == FLOAT16:
        np.copyto(out, hi, casting="unsafe")
        certain = lo.astype(out.dtype) == out
    else:
        rhi = round_to(hi, fmt)
        certain = round_to(lo, fmt) == rhi
        out[...] = rhi
    certain &= (out != 0) | (width == 0)
    return certain


def certify_native(x: Array, e: Array, fmt: FloatFormat) -> tuple[Array, Array]:
    """:func:`certify` with the values returned in ``fmt``'s NumPy dtype (no float64 copy)."""
    with np.errstate(invalid="ignore", over="ignore"):
        width = e * (1.0 + 2.0**-40) + np.abs(x) * 2.0**-51
        lo = x - width
        hi = x + width
        if fmt == FLOAT32:
            rlo = lo.astype(np.float32)
            rhi = hi.astype(np.float32)
        elif fmt == FLOAT16:
            rlo = lo.astype(np.float16)
            rhi = hi.astype(np.float16)
        else:
            rlo = round_to(lo, fmt)
            rhi = round_to(hi, fmt)
        certain = (rlo == rhi) & ((lo * hi > 0) | (width == 0))
        if fmt not in (FLOAT32, FLOAT16):
            rhi = rhi.astype(numpy_dtype(fmt))
    return rhi, certain


def certify_dd(v: DDV, fmt: FloatFormat) -> tuple[Array, Array]:
    """:func:`certify` for a double-double value. For float64 targets ``hi`` is the answer
    when both ends of the interval, as offsets from ``hi``, leave it unchanged when added
    to it: ``fl(hi + (lo +- w)) == hi`` (the offsets rounded outward by the widening of
    ``w``), so every real in the interval rounds to ``hi`` (a tie at an end goes to the
    even ``hi`` too). The exact zero gives +0.0."""
    if fmt != FLOAT64:
        return certify(v.hi, v.err + np.abs(v.lo), fmt)
    h = v.hi
    with np.errstate(invalid="ignore", over="ignore"):
        width = v.err * (1.0 + 2.0**-40) + np.abs(v.lo) * 2.0**-50
        certain = (h + (v.lo + width) == h) & (h + (v.lo - width) == h)
        certain &= np.abs(h) < 2.0**1000
        zero = h == 0
        certain &= ~zero | (width == 0)
    return h + 0.0, certain


def ulp_parts(x: Array, fmt: FloatFormat) -> tuple[Array, Array, Array]:
    """For ``|x|``: ``(low, high, q)``, the two ``fmt`` magnitudes around ``|x|`` (``low <= |x|
    < high``, high possibly ``2**(emax+1)``) and the exponent ``q`` of their spacing."""
    mag = np.abs(x)
    _, ex = np.frexp(mag)
    q = np.maximum(ex - 1, fmt.emin) - (fmt.precision - 1)
    s = np.floor(np.ldexp(mag, -q))
    return np.ldexp(s, q), np.ldexp(s + 1.0, q), q


def is_even_multiple(value: Array, q: Array) -> Array:
    """True where ``value / 2**q`` is an even integer (``value`` a multiple of ``2**q``)."""
    half = np.ldexp(value, -q) * 0.5
    return half == np.floor(half)


__all__ = [
    "DDV",
    "ETA",
    "TINY",
    "U",
    "certify",
    "certify_dd",
    "dd_add",
    "dd_div",
    "dd_max",
    "dd_mul",
    "dd_neg",
    "dd_sqrt",
    "dd_sub",
    "ddv_exact",
    "expansion_sign",
    "fast_two_sum",
    "is_even_multiple",
    "round_to",
    "split",
    "two_prod",
    "two_sum",
]
