"""Double-double arithmetic and correct rounding, vectorized over NumPy (or CuPy) arrays.

A double-double ``(hi, lo)`` represents ``hi + lo`` with ``|lo| <= ulp(hi)/2``:
about 106 significant bits, enough that the exact Adam update of float32,
float16 and bfloat16 inputs, and of float64 inputs in all but pathological
cancellations, rounds correctly from it. The algorithms are the classical
error-free transformations (Knuth's TwoSum, Dekker's TwoProduct with
Veltkamp splitting) and the QD library's division and square root.

Every function takes and returns arrays of one shape (scalars broadcast);
``xp`` is the array namespace (numpy or cupy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adamspec.spec.formats import FLOAT64, FloatFormat

Array = Any
DD = tuple[Array, Array]

#: Veltkamp's splitting constant 2**27 + 1 (splits a double into two 26-bit halves).
_SPLITTER = 134217729.0


def two_sum(a: Array, b: Array) -> DD:
    """``s + e == a + b`` exactly, ``s = fl(a + b)`` (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def fast_two_sum(a: Array, b: Array) -> DD:
    """``s + e == a + b`` exactly when ``|a| >= |b|`` (Dekker)."""
    s = a + b
    e = b - (s - a)
    return s, e


def exact_sum_sign(a: Array, b: Array, c: Array) -> Array:
    """A double with the sign of ``a + b + c``, exactly (zero iff the sum is zero), for
    doubles whose sums do not overflow.

    ``a + b + c == s2 + e2 + e1`` exactly. Either ``s1 + c`` was exact (Sterbenz: then
    ``e2 = 0`` and ``fl(s2 + e1)``, one rounding, keeps the sign of ``s2 + e1``), or
    ``|s2| >= |s1| / 2``, so ``|e1 + e2| <= 2**-51 |s2|`` cannot change the sign of ``s2``.
    """
    s1, e1 = two_sum(a, b)
    s2, e2 = two_sum(s1, c)
    return s2 + (e1 + e2)


def expansion_sign(terms: list[Array], xp: Any = np) -> Array:
    """The sign (-1, 0, 1) of the exact sum of the doubles ``terms``, elementwise.

    Shewchuk's Grow-Expansion adds one term at a time to a nonoverlapping expansion kept
    in increasing magnitude (zeros anywhere), error-free ("Adaptive precision
    floating-point arithmetic", 1997, Theorem 10); the largest nonzero component of the
    result then has the sign of the sum. Valid while no two_sum overflows.
    """
    expansion = [terms[0]]
    for term in terms[1:]:
        grown = []
        for part in expansion:
            term, error = two_sum(term, part)
            grown.append(error)
        expansion = [*grown, term]
    sign = xp.zeros_like(expansion[0])
    for part in expansion:  # increasing magnitude: the last nonzero decides
        sign = xp.where(part != 0, xp.sign(part), sign)
    return sign


def split(a: Array) -> DD:
    """``a == hi + lo`` with both halves of at most 26 significant bits (Veltkamp)."""
    t = _SPLITTER * a
    hi = t - (t - a)
    return hi, a - hi


def two_prod(a: Array, b: Array) -> DD:
    """``p + e == a * b`` exactly (Dekker's TwoProduct); valid for |a*b| < 2**996."""
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def add(a: DD, b: DD) -> DD:
    """Accurate double-double addition (relative error about 2**-104)."""
    s, e = two_sum(a[0], b[0])
    t, f = two_sum(a[1], b[1])
    e = e + t
    s, e = fast_two_sum(s, e)
    e = e + f
    return fast_two_sum(s, e)


def neg(a: DD) -> DD:
    return -a[0], -a[1]


def sub(a: DD, b: DD) -> DD:
    return add(a, neg(b))


def mul(a: DD, b: DD) -> DD:
    """Double-double product (relative error about 2**-104)."""
    p, e = two_prod(a[0], b[0])
    e = e + (a[0] * b[1] + a[1] * b[0])
    return fast_two_sum(p, e)


def div(a: DD, b: DD, xp: Any = np) -> DD:
    """Double-double quotient by two Newton corrections (QD's accurate division)."""
    q1 = a[0] / b[0]
    r = sub(a, mul(b, (q1, xp.zeros_like(q1))))
    q2 = r[0] / b[0]
    r = sub(r, mul(b, (q2, xp.zeros_like(q2))))
    q3 = r[0] / b[0]
    q1, q2 = fast_two_sum(q1, q2)
    return add((q1, q2), (q3, xp.zeros_like(q3)))


def sqrt(a: DD, xp: Any = np) -> DD:
    """Double-double square root (Karp's trick); zero, infinity and NaN as IEEE sqrt."""
    regular = (a[0] > 0) & xp.isfinite(a[0])
    hi_in = xp.where(regular, a[0], 1.0)
    lo_in = xp.where(regular, a[1], 0.0)
    x = 1.0 / xp.sqrt(hi_in)
    ax = hi_in * x
    diff = sub((hi_in, lo_in), two_prod(ax, ax))
    hi, lo = two_sum(ax, diff[0] * (x * 0.5))
    return xp.where(regular, hi, xp.sqrt(a[0])), xp.where(regular, lo, 0.0)


def maximum(a: DD, b: DD, xp: Any = np) -> DD:
    """``max(a, b)``; NaN propagates (as torch.maximum)."""
    a_wins = (a[0] > b[0]) | ((a[0] == b[0]) & (a[1] >= b[1]))
    nan = xp.isnan(a[0]) | xp.isnan(b[0])
    hi = xp.where(a_wins, a[0], b[0])
    lo = xp.where(a_wins, a[1], b[1])
    return xp.where(nan, np.nan, hi), xp.where(nan, np.nan, lo)


def const(hi: float, lo: float = 0.0) -> DD:
    return hi, lo


# ---------------------------------------------------------------- rounding


def round_to_format(x: Array, fmt: FloatFormat, xp: Any = np) -> Array:
    """Round float64 values to ``fmt`` (nearest, ties to even), returned as float64.

    Works for any binary format narrower than binary64: the value is scaled by
    a power of two so the format's quantum becomes 1, rounded with ``rint``
    (ties to even) and scaled back; both scalings are exact. Subnormals use the
    fixed quantum below ``2**emin``; overflow gives infinity.
    """
    if fmt == FLOAT64:
        return x
    return _round_dd(x, None, fmt, xp)


def round_dd(hi: Array, lo: Array, fmt: FloatFormat, xp: Any = np) -> Array:
    """Correctly round the double-double ``hi + lo`` to ``fmt``; float64 result.

    ``hi`` alone decides except when it is exactly a rounding tie of ``fmt``:
    then the sign of ``lo`` says on which side of the tie the value lies.
    (``hi`` is the float64 nearest to ``hi + lo``, so no other boundary can
    separate them.)
    """
    if fmt == FLOAT64:
        return hi + lo  # normalized: fl(hi + lo) == hi except at float64 ties
    return _round_dd(hi, lo, fmt, xp)


def _round_dd(hi: Array, lo: Array | None, fmt: FloatFormat, xp: Any) -> Array:
    magnitude = xp.abs(hi)
    _, e = xp.frexp(magnitude)  # magnitude = f * 2**e with f in [0.5, 1)
    q = xp.maximum(e - 1, fmt.emin) - (fmt.precision - 1)
    scaled = xp.ldexp(magnitude, -q)
    rounded = xp.rint(scaled)
    if lo is not None:
        floor = xp.floor(scaled)
        tie = (scaled - floor) == 0.5
        away = (lo != 0) & ((lo > 0) == (hi > 0))
        toward = (lo != 0) & ((lo > 0) != (hi > 0))
        rounded = xp.where(tie & away, floor + 1, xp.where(tie & toward, floor, rounded))
    result = xp.ldexp(rounded, q)
    overflow = result >= 2.0 ** (fmt.emax + 1)
    result = xp.where(overflow, np.inf, result)
    finite = xp.isfinite(hi)
    return xp.where(finite, xp.copysign(result, hi), hi)


# ---------------------------------------------------------------- with error bounds

#: Relative rounding error of one double-double operation, with margin: accurate addition
#: 3u^2, multiplication 7u^2 (u = 2**-53; Joldes, Muller and Popescu, "Tight and rigorous
#: error bounds for basic building blocks of double-word arithmetic", 2017); division and
#: square root are bounded a posteriori from their residuals instead.
_OP = 2.0**-100
#: Absolute error allowance for a result below 2**-900, where error-free transformations
#: may lose bits to underflow (each loses at most 2**-1075).
_TINY, _TINY_ERR = 2.0**-900, 2.0**-1060
#: Inflates a bound for its own float64 rounding (a few operations of u each).
_UP = 1 + 2.0**-48


class Bounded:
    """Double-double arithmetic on triples ``(hi, lo, err)``: ``|exact - hi - lo| <= err``.

    Each operation propagates its operands' bounds (first order and the cross terms) and
    adds its own rounding, so the step's results come with rigorous bounds and are stored
    only where every value within them rounds alike. This is the arithmetic of
    :func:`adamspec.impl._kernels.exact_kernel`'s double-double pass.
    """

    def __init__(self, xp: Any = np) -> None:
        self.xp = xp

    def constant(self, K: Any, name: str) -> tuple[float, float, float]:
        return (*K.dd(name), K.error(name))

    def input(self, x: dict[str, Any], name: str) -> tuple[Any, Any, Any]:
        return x[name], x.get(name + "_lo", 0.0), x.get(name + "_err", 0.0)

    def _rounding(self, hi: Array) -> Array:
        magnitude = self.xp.abs(hi)
        tiny = (magnitude < _TINY) & (magnitude != 0)
        return _OP * magnitude + self.xp.where(tiny, _TINY_ERR, 0.0)

    def add(self, a: tuple, b: tuple) -> tuple:
        hi, lo = add(a[:2], b[:2])
        return hi, lo, (a[2] + b[2] + self._rounding(hi)) * _UP

    def sub(self, a: tuple, b: tuple) -> tuple:
        return self.add(a, (-b[0], -b[1], b[2]))

    def mul(self, a: tuple, b: tuple) -> tuple:
        hi, lo = mul(a[:2], b[:2])
        size_a, size_b = self.xp.abs(a[0]) * _UP, self.xp.abs(b[0]) * _UP  # >= |hi + lo|
        spread = size_a * b[2] + size_b * a[2] + a[2] * b[2]
        return hi, lo, (spread + self._rounding(hi)) * _UP

    def div(self, a: tuple, b: tuple) -> tuple:
        xp = self.xp
        q = div(a[:2], b[:2], xp)
        # a posteriori: |a/b - q| = |a - b q| / |b|, with a - b q evaluated with bounds
        r = self.sub((*a[:2], 0.0), self.mul((*b[:2], 0.0), (*q, 0.0)))
        size_b = xp.abs(b[0]) * (1 - 2.0**-51)  # <= |b_hi + b_lo|
        own = (xp.abs(r[0]) * _UP + r[2]) / size_b
        # |a/b - a'/b'| <= (|a'/b'| e_b + e_a) / (|b'| - e_b), for e_b < |b'|
        room = size_b - b[2]
        spread = xp.where(room > 0, (xp.abs(q[0]) * _UP * b[2] + a[2]) / room, xp.inf)
        spread = xp.where((a[2] == 0) & (b[2] == 0), 0.0, spread)
        return q[0], q[1], (spread + own) * _UP

    def sqrt(self, a: tuple) -> tuple:
        xp = self.xp
        s = sqrt(a[:2], xp)
        # a posteriori: |sqrt(a) - s| = |a - s^2| / (sqrt(a) + s) <= |a - s^2| / s
        r = self.sub((*a[:2], 0.0), self.mul((*s, 0.0), (*s, 0.0)))
        positive = s[0] > 0
        root = xp.where(positive, s[0], 1.0) * (1 - 2.0**-51)
        own = xp.where(positive, (xp.abs(r[0]) * _UP + r[2]) / root, 0.0)
        # |sqrt(x) - sqrt(x')| <= min(e / sqrt(x'), sqrt(e)) for x, x' >= 0; an enclosure
        # reaching below 0 may hold a negative value, whose root is NaN: unbounded
        spread = xp.minimum(xp.where(positive, a[2] / root, xp.inf), xp.sqrt(a[2]) * _UP)
        negative = (a[2] > 0) & (a[0] - a[2] < 0)
        spread = xp.where(negative, xp.inf, spread)
        return s[0], s[1], (spread + own) * _UP

    def maximum(self, a: tuple, b: tuple) -> tuple:
        hi, lo = maximum(a[:2], b[:2], self.xp)
        return hi, lo, self.xp.maximum(a[2], b[2])
