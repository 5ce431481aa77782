"""Exact numbers for the last tier of our step, and exact rounding to binary formats.

The coordinates that neither the float64 pass nor the bounded double-double pass can
certify (exact ties, values within ~2**-100 of a rounding boundary, inputs beyond the
double-double range) are evaluated here with no rounding error at all:

* a rational value is a :class:`~fractions.Fraction` (the moments, v_max, the parameter
  when every square root in its formula is rational);
* ``q * sqrt(r)`` with ``r`` a positive integer that is not a square is a :class:`Surd`
  (``sqrt(c2)``, RAdam's rectification, a clipping scale, ``sqrt(v_hat)``): products and
  quotients of surds stay exact, so ``sqrt(c2) / sqrt(c2 g^2)`` is recognised as ``1/|g|``;
* everything else (a rational plus an irrational surd, two surds whose ratio is
  irrational) is an :class:`Interval` with rational ends around a value that is
  irrational, and so never a rounding tie: enclosed at ``bits`` bits, it is rounded once
  both ends round alike, and otherwise recomputed at twice the bits (Ziv's strategy).

The one case this cannot decide is a value that the algebra above leaves as an interval
and that is nevertheless rational and exactly on a tie (e.g. ``(a + b sqrt(s)) / (c +
sqrt(t))`` with ``s/t`` square and ``a c = b``): :class:`RoundingUndecided` is raised
past :data:`MAX_BITS` instead of guessing. No hyperparameters of the catalog reach it.

A special value (a division by an exact zero) is the float NaN :data:`SPECIAL`: the
caller takes the IEEE evaluation of the same formula there, as the double-double tier
does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from math import isqrt
from typing import Any

from adamspec.spec.formats import FloatFormat

#: Where Ziv's strategy starts and where it gives up (bits of every enclosure).
START_BITS, MAX_BITS = 128, 1 << 14
#: Marks a special result (NaN or an infinity) of the exact evaluation.
SPECIAL = math.nan

Exact = Any  # Fraction | Surd | Interval | float (SPECIAL)


class RoundingUndecided(ArithmeticError):
    """An enclosure still straddles a rounding boundary at :data:`MAX_BITS` bits."""


def round_fraction(x: Fraction, fmt: FloatFormat) -> Fraction | float:
    """``x`` correctly rounded to ``fmt`` (nearest, ties to even; subnormals; ``+-inf`` on
    overflow), exactly: integer arithmetic on the numerator and denominator."""
    if x == 0:
        return Fraction(0)
    n, d = abs(x.numerator), x.denominator
    e = n.bit_length() - d.bit_length()  # 2**(e-1) < n/d < 2**(e+1)
    if (n << max(0, -e)) < (d << max(0, e)):
        e -= 1  # now 2**e <= n/d < 2**(e+1)
    q = max(e, fmt.emin) - (fmt.precision - 1)  # exponent of the quantum at x
    num, den = (n, d << q) if q >= 0 else (n << -q, d)
    k, rest = divmod(num, den)
    if 2 * rest > den or (2 * rest == den and k & 1):
        k += 1
    value = Fraction(k) * Fraction(2) ** q
    if value >= Fraction(2) ** (fmt.emax + 1):
        return math.copysign(math.inf, x)
    return value if x > 0 else -value


def square_root(x: Fraction) -> Fraction | None:
    """``sqrt(x)`` when ``x >= 0`` is the square of a rational, else None."""
    n, d = x.numerator, x.denominator
    if n < 0:
        return None
    a, b = isqrt(n), isqrt(d)
    return Fraction(a, b) if a * a == n and b * b == d else None


@dataclass(frozen=True)
class Surd:
    """``q * sqrt(r)``: ``q`` a nonzero rational, ``r`` a positive integer, not a square."""

    q: Fraction
    r: int

    def enclose(self, bits: int) -> Interval:
        low, high = root_bounds(Fraction(self.r), bits)
        return Interval(*sorted((self.q * low, self.q * high)))


def surd(q: Fraction, r: Fraction) -> Fraction | Surd:
    """``q * sqrt(r)`` (``r >= 0``) as a rational where it is one, else a :class:`Surd`
    with an integer radicand (``sqrt(n/d) = sqrt(n d) / d``)."""
    if q == 0:
        return Fraction(0)
    root = square_root(r)
    if root is not None:
        return q * root
    return Surd(q / r.denominator, r.numerator * r.denominator)


@dataclass(frozen=True)
class Interval:
    """``[low, high]`` with rational ends around an irrational value; None ends: unknown
    (a division by an interval that still holds 0)."""

    low: Fraction | None
    high: Fraction | None


_UNKNOWN = Interval(None, None)


def _outward(low: Fraction, high: Fraction, bits: int) -> Interval:
    """``[low, high]`` widened to ends of ``bits + 32`` significant bits, so that the
    fractions of a long computation stay short."""

    def grid(x: Fraction) -> int:
        return max(abs(x.numerator).bit_length() - x.denominator.bit_length(), -(1 << 20))

    if low == 0 and high == 0:
        return Interval(low, high)
    scale = bits + 32 - max(grid(low) if low else grid(high), grid(high) if high else grid(low))
    unit = Fraction(2) ** -scale
    return Interval(math.floor(low / unit) * unit, math.ceil(high / unit) * unit)


def enclose(x: Exact, bits: int) -> Interval:
    if isinstance(x, Fraction):
        return Interval(x, x)
    if isinstance(x, Surd):
        return x.enclose(bits)
    return x


class ExactArithmetic:
    """The arithmetic of :func:`adamspec.impl._kernels.exact_kernel` on exact numbers (one
    coordinate at a time), with enclosures at ``bits`` bits."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def constant(self, K: Any, name: str) -> Exact:
        return K.exact_value(name)

    def input(self, x: dict[str, Any], name: str) -> Exact:
        return x[name]

    def add(self, a: Exact, b: Exact) -> Exact:
        if isinstance(a, float) or isinstance(b, float):
            return SPECIAL
        if isinstance(a, Fraction) and isinstance(b, Fraction):
            return a + b
        if isinstance(a, Surd) and isinstance(b, Surd):
            ratio = square_root(Fraction(a.r, b.r))  # a = a.q ratio sqrt(b.r)
            if ratio is not None:
                return surd(a.q * ratio + b.q, Fraction(b.r))
        if isinstance(a, Fraction) and a == 0:
            return b
        if isinstance(b, Fraction) and b == 0:
            return a
        x, y = enclose(a, self.bits), enclose(b, self.bits)
        if x.low is None or y.low is None:
            return _UNKNOWN
        return _outward(x.low + y.low, x.high + y.high, self.bits)

    def sub(self, a: Exact, b: Exact) -> Exact:
        return self.add(a, self.mul(Fraction(-1), b))

    def mul(self, a: Exact, b: Exact) -> Exact:
        if isinstance(a, float) or isinstance(b, float):
            return SPECIAL
        if (isinstance(a, Fraction) and a == 0) or (isinstance(b, Fraction) and b == 0):
            return Fraction(0)
        if isinstance(a, Fraction) and isinstance(b, Fraction):
            return a * b
        if isinstance(a, Surd) and isinstance(b, Fraction):
            a, b = b, a
        if isinstance(a, Fraction) and isinstance(b, Surd):
            return Surd(a * b.q, b.r)
        if isinstance(a, Surd) and isinstance(b, Surd):
            return surd(a.q * b.q, Fraction(a.r * b.r))
        x, y = enclose(a, self.bits), enclose(b, self.bits)
        if x.low is None or y.low is None:
            return _UNKNOWN
        ends = (x.low * y.low, x.low * y.high, x.high * y.low, x.high * y.high)
        return _outward(min(ends), max(ends), self.bits)

    def div(self, a: Exact, b: Exact) -> Exact:
        if isinstance(a, float) or isinstance(b, float):
            return SPECIAL
        if isinstance(b, Fraction):
            if b == 0:
                return SPECIAL  # x/0: an infinity or NaN, as IEEE says
            return self.mul(Fraction(1) / b, a)
        if isinstance(a, Fraction) and a == 0:
            return Fraction(0)
        if isinstance(b, Surd):  # 1 / (q sqrt r) = (1 / (q r)) sqrt r
            return self.mul(a, Surd(1 / (b.q * b.r), b.r))
        y = enclose(b, self.bits)
        if y.low is None or y.low <= 0 <= y.high:
            return _UNKNOWN
        return self.mul(a, _outward(1 / y.high, 1 / y.low, self.bits))

    def sqrt(self, a: Exact) -> Exact:
        if isinstance(a, float):
            return SPECIAL
        if isinstance(a, Fraction):
            return SPECIAL if a < 0 else surd(Fraction(1), a)
        x = enclose(a, self.bits)
        if x.low is None or x.high < 0:
            return _UNKNOWN if x.low is None else SPECIAL
        # v >= 0 in Adam's domain: an end below 0 is the enclosure's width, not the value
        return _outward(
            root_bounds(max(x.low, Fraction(0)), self.bits)[0],
            root_bounds(x.high, self.bits)[1],
            self.bits,
        )

    def maximum(self, a: Exact, b: Exact) -> Exact:
        if isinstance(a, float) or isinstance(b, float):
            return SPECIAL
        if isinstance(a, Interval) or isinstance(b, Interval):
            x, y = enclose(a, self.bits), enclose(b, self.bits)
            if x.low is None or y.low is None:
                return _UNKNOWN
            if x.low >= y.high:
                return a
            if y.low >= x.high:
                return b
            return Interval(max(x.low, y.low), max(x.high, y.high))
        return a if compare(a, b) >= 0 else b


def root_bounds(x: Fraction, bits: int) -> tuple[Fraction, Fraction]:
    """Rationals below and above ``sqrt(x)`` (``x >= 0``), ``2**-bits`` apart relatively:
    ``sqrt(n/d) = sqrt(n d) / d``, with ``n d`` scaled by a power of 4 until its integer
    root has ``bits`` bits."""
    if x == 0:
        return Fraction(0), Fraction(0)
    nd, d = x.numerator * x.denominator, x.denominator
    shift = max(0, bits + 1 - nd.bit_length() // 2)
    root = isqrt(nd << (2 * shift))
    return Fraction(root, d << shift), Fraction(root + 1, d << shift)


def compare(a: Fraction | Surd, b: Fraction | Surd) -> int:
    """The sign of ``a - b``, exactly, for rationals and surds."""

    def sign_and_square(x: Fraction | Surd) -> tuple[int, Fraction]:
        if isinstance(x, Fraction):
            return (x > 0) - (x < 0), x * x
        return (x.q > 0) - (x.q < 0), x.q * x.q * x.r

    (sa, qa), (sb, qb) = sign_and_square(a), sign_and_square(b)
    if sa != sb:
        return (sa > sb) - (sa < sb)
    by_square = (qa > qb) - (qa < qb)
    return by_square if sa >= 0 else -by_square


def decide(value: Exact, fmt: FloatFormat, bits: int) -> float | None:
    """The correctly rounded float of ``value`` in ``fmt``; None while its enclosure at
    ``bits`` bits straddles a rounding boundary; :data:`SPECIAL` for a special."""
    if isinstance(value, float):
        return SPECIAL
    if isinstance(value, Fraction):
        return _as_float(round_fraction(value, fmt), value)
    box = enclose(value, bits)
    if box.low is None:
        return None
    low, high = round_fraction(box.low, fmt), round_fraction(box.high, fmt)
    if low != high:
        return None
    return _as_float(low, box.low if box.low != 0 else box.high)


def _as_float(rounded: Fraction | float, exact: Fraction) -> float:
    """The rounded value as a float, a zero carrying the sign of the exact value."""
    return math.copysign(float(rounded), exact) if rounded == 0 else float(rounded)


__all__ = [
    "MAX_BITS",
    "SPECIAL",
    "START_BITS",
    "ExactArithmetic",
    "Interval",
    "RoundingUndecided",
    "Surd",
    "compare",
    "decide",
    "enclose",
    "root_bounds",
    "round_fraction",
    "square_root",
    "surd",
]
