"""Exact real numbers for the oracle: rationals, square roots, and rigorous intervals.

Adam's step is built from ``+ - * /``, ``sqrt`` and ``max`` on the exact
binary values of its inputs. This module evaluates such expressions without
ever guessing:

* :class:`Rat` -- an exact rational (``gmpy2.mpq``). Every float input and every
  hyperparameter is one, and ``+ - * /`` keep them exact.
* :class:`Surd` -- ``q * sqrt(r)`` with rational ``q`` and a square-free-ish
  integer radicand ``r``. Closed under ``* /`` and under ``+`` when the two
  radicands differ by a rational square, so results such as
  ``sqrt(1 - b2) / sqrt((1 - b2) g^2) = 1/|g|`` stay exact instead of turning
  into intervals that could never decide a rounding tie.
* :class:`Ival` -- a closed interval with ``mpmath`` binary endpoints rounded
  outward at the working precision ``mp.prec``; used for values that mix
  radicands (``m / (sqrt(v) + eps)``). An interval result is irrational except
  for algebraic coincidences, so it never sits exactly on a rounding boundary
  and Ziv's strategy (raise the precision, recompute) terminates.
* :class:`Special` -- NaN and the infinities, with IEEE 754 rules
  (``inf - inf = nan``, ``x / 0 = +-inf``, ``0 / 0 = nan``) so degenerate
  hyperparameters (bfloat16 ``beta2 = 1.0``) behave like real hardware.

When an interval is too wide to decide a sign or a rounding, :class:`NeedPrecision`
is raised; callers rerun the computation inside ``mp.workprec(2 * p)``.
The working precision is always scoped by the caller with ``mp.workprec``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Union

import gmpy2
from gmpy2 import mpq, mpz
from mpmath import mp
from mpmath.libmp import (
    from_man_exp,
    from_rational,
    mpf_add,
    mpf_div,
    mpf_lt,
    mpf_mul,
    mpf_neg,
    mpf_sqrt,
    round_ceiling,
    round_floor,
)

__all__ = [
    "Ival",
    "NeedPrecision",
    "Rat",
    "Real",
    "Special",
    "Surd",
    "lift",
    "maximum",
    "sqrt",
]


class NeedPrecision(ArithmeticError):
    """An interval is too wide at the current ``mp.prec`` to decide a result."""


def _is_square(x: mpq) -> bool:
    return x >= 0 and gmpy2.is_square(x.numerator) and gmpy2.is_square(x.denominator)


def _exact_sqrt(x: mpq) -> mpq:
    return mpq(gmpy2.isqrt(x.numerator), gmpy2.isqrt(x.denominator))


def _mpf_to_mpq(t: tuple) -> mpq:
    sign, man, exp, _ = t
    if not man:
        return mpq(0)
    value = mpq(man) * (mpq(2) ** exp) if exp < 0 else mpq(man << exp)
    return -value if sign else value


class Real:
    """Base of the exact number kinds; supports ``+ - * /`` with ints and rationals."""

    __slots__ = ()

    def __add__(self, other: Operand) -> Real:
        return _add(self, lift(other))

    def __radd__(self, other: Operand) -> Real:
        return _add(lift(other), self)

    def __sub__(self, other: Operand) -> Real:
        return _add(self, -lift(other))

    def __rsub__(self, other: Operand) -> Real:
        return _add(lift(other), -self)

    def __mul__(self, other: Operand) -> Real:
        return _mul(self, lift(other))

    def __rmul__(self, other: Operand) -> Real:
        return _mul(lift(other), self)

    def __truediv__(self, other: Operand) -> Real:
        return _div(self, lift(other))

    def __rtruediv__(self, other: Operand) -> Real:
        return _div(lift(other), self)

    def __neg__(self) -> Real:
        raise NotImplementedError

    @property
    def is_exact(self) -> bool:
        """True for values known exactly (rationals, surds, specials)."""
        return not isinstance(self, Ival)

    def enclosure(self) -> tuple[tuple, tuple]:
        """Raw mpf endpoints ``(lo, hi)`` at the current ``mp.prec`` (finite values only)."""
        raise NotImplementedError

    def sign(self) -> int:
        """-1, 0 or 1; raises :class:`NeedPrecision` for an interval around 0."""
        raise NotImplementedError


Operand = Union[Real, int, Fraction, "mpq"]


class Rat(Real):
    """An exact rational number."""

    __slots__ = ("q",)

    def __init__(self, q: mpq) -> None:
        self.q = q

    def __neg__(self) -> Real:
        return Rat(-self.q)

    def sign(self) -> int:
        return (self.q > 0) - (self.q < 0)

    def enclosure(self) -> tuple[tuple, tuple]:
        prec = mp.prec
        n, d = int(self.q.numerator), int(self.q.denominator)
        return from_rational(n, d, prec, round_floor), from_rational(n, d, prec, round_ceiling)

    def __repr__(self) -> str:
        return f"Rat({self.q})"


ZERO = Rat(mpq(0))
ONE = Rat(mpq(1))


def _surd(q: mpq, r: mpq) -> Real:
    """``q * sqrt(r)`` normalized: rational when ``r`` is a square, integer radicand otherwise."""
    if q == 0 or r == 0:
        return ZERO
    if r < 0:
        return NAN
    if _is_square(r):
        return Rat(q * _exact_sqrt(r))
    # sqrt(n/d) = sqrt(n*d)/d keeps radicands integral so equal classes compare cheaply.
    n, d = r.numerator, r.denominator
    return Surd(q / d, mpq(n * d))


class Surd(Real):
    """``q * sqrt(r)``: exact irrational, rational ``q != 0``, integer non-square ``r``."""

    __slots__ = ("q", "r")

    def __init__(self, q: mpq, r: mpq) -> None:
        self.q = q
        self.r = r

    def __neg__(self) -> Real:
        return Surd(-self.q, self.r)

    def sign(self) -> int:
        return 1 if self.q > 0 else -1

    def enclosure(self) -> tuple[tuple, tuple]:
        prec = mp.prec
        r = int(self.r)
        root = (
            mpf_sqrt(from_man_exp(r, 0, prec, round_floor), prec, round_floor),
            mpf_sqrt(from_man_exp(r, 0, prec, round_ceiling), prec, round_ceiling),
        )
        return _imul(Rat(self.q).enclosure(), root, prec)

    def __repr__(self) -> str:
        return f"Surd({self.q}*sqrt({self.r}))"


class Ival(Real):
    """A rigorous enclosure ``[lo, hi]`` of an unknown real (raw mpf endpoints)."""

    __slots__ = ("hi", "lo")

    def __init__(self, lo: tuple, hi: tuple) -> None:
        self.lo = lo
        self.hi = hi

    def __neg__(self) -> Real:
        return Ival(mpf_neg(self.hi), mpf_neg(self.lo))

    def sign(self) -> int:
        if self.lo[1] and not self.lo[0]:  # lo > 0
            return 1
        if self.hi[0] and self.hi[1]:  # hi < 0
            return -1
        raise NeedPrecision("sign of an interval containing 0")

    def enclosure(self) -> tuple[tuple, tuple]:
        return self.lo, self.hi

    def bounds(self) -> tuple[mpq, mpq]:
        """Exact rational endpoints."""
        return _mpf_to_mpq(self.lo), _mpf_to_mpq(self.hi)

    def __repr__(self) -> str:
        return f"Ival([{mp.mpf(self.lo)}, {mp.mpf(self.hi)}])"


class Special(Real):
    """NaN, +inf or -inf with IEEE 754 semantics."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __neg__(self) -> Real:
        return {"nan": NAN, "+inf": NEG_INF, "-inf": POS_INF}[self.kind]

    def sign(self) -> int:
        if self.kind == "nan":
            raise ValueError("sign of NaN")
        return 1 if self.kind == "+inf" else -1

    def __repr__(self) -> str:
        return f"Special({self.kind})"


NAN = Special("nan")
POS_INF = Special("+inf")
NEG_INF = Special("-inf")


def lift(x: Operand) -> Real:
    """Coerce an int, Fraction or mpq to :class:`Rat`; Reals pass through."""
    if isinstance(x, Real):
        return x
    if isinstance(x, (int, mpz)):
        return Rat(mpq(x))
    if isinstance(x, Fraction):
        return Rat(mpq(x.numerator, x.denominator))
    if isinstance(x, type(mpq())):
        return Rat(x)
    raise TypeError(f"cannot use {type(x).__name__} {x!r} as an exact number")


def _inf(sign: int) -> Special:
    return POS_INF if sign > 0 else NEG_INF


# ---------------------------------------------------------------- intervals


def _imul(a: tuple, b: tuple, prec: int) -> tuple[tuple, tuple]:
    (alo, ahi), (blo, bhi) = a, b
    lows = [mpf_mul(x, y, prec, round_floor) for x in (alo, ahi) for y in (blo, bhi)]
    highs = [mpf_mul(x, y, prec, round_ceiling) for x in (alo, ahi) for y in (blo, bhi)]
    return _min(lows), _max(highs)


def _min(values: list) -> tuple:
    best = values[0]
    for v in values[1:]:
        if mpf_lt(v, best):
            best = v
    return best


def _max(values: list) -> tuple:
    best = values[0]
    for v in values[1:]:
        if mpf_lt(best, v):
            best = v
    return best


def _interval(x: Real) -> tuple[tuple, tuple]:
    return x.enclosure()


# ---------------------------------------------------------------- operations


def _add(a: Real, b: Real) -> Real:
    if isinstance(a, Special) or isinstance(b, Special):
        return _add_special(a, b)
    if isinstance(a, Rat):
        if a.q == 0:
            return b
        if isinstance(b, Rat):
            return Rat(a.q + b.q)
    if isinstance(b, Rat) and b.q == 0:
        return a
    if isinstance(a, Surd) and isinstance(b, Surd):
        if a.r == b.r:
            return _surd(a.q + b.q, a.r)
        product = a.r * b.r
        if _is_square(product):
            k = _exact_sqrt(product)  # sqrt(b.r) = k / sqrt(a.r) = k sqrt(a.r) / a.r
            return _surd(a.q + b.q * k / a.r, a.r)
    prec = mp.prec
    (alo, ahi), (blo, bhi) = _interval(a), _interval(b)
    return Ival(mpf_add(alo, blo, prec, round_floor), mpf_add(ahi, bhi, prec, round_ceiling))


def _add_special(a: Real, b: Real) -> Real:
    if a is NAN or b is NAN:
        return NAN
    if isinstance(a, Special) and isinstance(b, Special):
        return a if a.kind == b.kind else NAN
    return a if isinstance(a, Special) else b


def _mul(a: Real, b: Real) -> Real:
    if isinstance(a, Special) or isinstance(b, Special):
        if a is NAN or b is NAN:
            return NAN
        other = b if isinstance(a, Special) else a
        if isinstance(other, Rat) and other.q == 0:
            return NAN
        return _inf(a.sign() * b.sign())
    if isinstance(a, Rat):
        if a.q == 0:
            return ZERO
        if a.q == 1:
            return b
        if isinstance(b, Rat):
            return Rat(a.q * b.q)
        if isinstance(b, Surd):
            return Surd(a.q * b.q, b.r)
    if isinstance(b, Rat):
        if b.q == 0:
            return ZERO
        if b.q == 1:
            return a
        if isinstance(a, Surd):
            return Surd(a.q * b.q, a.r)
    if isinstance(a, Surd) and isinstance(b, Surd):
        return _surd(a.q * b.q, a.r * b.r)
    return Ival(*_imul(_interval(a), _interval(b), mp.prec))


def _div(a: Real, b: Real) -> Real:
    if a is NAN or b is NAN:
        return NAN
    if isinstance(b, Special):
        if isinstance(a, Special):
            return NAN
        return ZERO
    if isinstance(a, Special):
        return _inf(a.sign() * b.sign()) if not (isinstance(b, Rat) and b.q == 0) else a
    if isinstance(b, Rat) and b.q == 0:
        # IEEE: x / +0 is +-inf and 0 / 0 is NaN; an exact zero divisor is +0.
        s = a.sign()
        return NAN if s == 0 else _inf(s)
    if isinstance(a, Rat) and a.q == 0:
        return ZERO
    if isinstance(b, Rat):
        return _mul(a, Rat(1 / b.q))
    if isinstance(b, Surd):
        # a / (q sqrt(r)) = a * sqrt(r) / (q r)
        return _mul(a, Surd(1 / (b.q * b.r), b.r))
    prec = mp.prec
    blo, bhi = _interval(b)
    if not (mpf_lt((0, 0, 0, 0), blo) or mpf_lt(bhi, (0, 0, 0, 0))):
        raise NeedPrecision("division by an interval containing 0")
    inv = (
        mpf_div((0, 1, 0, 1), bhi, prec, round_floor),
        mpf_div((0, 1, 0, 1), blo, prec, round_ceiling),
    )
    return Ival(*_imul(_interval(a), inv, prec))


def sqrt(a: Operand) -> Real:
    """Exact square root: rational for squares, a :class:`Surd` for other rationals."""
    a = lift(a)
    if isinstance(a, Special):
        return NAN if a.kind != "+inf" else POS_INF
    if isinstance(a, Rat):
        return _surd(mpq(1), a.q)
    if a.sign() < 0:
        return NAN
    prec = mp.prec
    lo, hi = _interval(a)
    if lo[0] and lo[1]:  # lo < 0 while the value is positive: clip to 0
        lo = (0, 0, 0, 0)
    return Ival(mpf_sqrt(lo, prec, round_floor), mpf_sqrt(hi, prec, round_ceiling))


def compare(a: Operand, b: Operand) -> int:
    """Sign of ``a - b`` for finite values, exactly when both are exact."""
    a, b = lift(a), lift(b)
    if isinstance(a, (Rat, Surd)) and isinstance(b, (Rat, Surd)):
        sa, sb = a.sign(), b.sign()
        if sa != sb:
            return (sa > sb) - (sa < sb)
        if sa == 0:
            return 0
        # Same sign: compare squares exactly, reversed for negatives.
        qa = a.q * a.q * (a.r if isinstance(a, Surd) else 1)
        qb = b.q * b.q * (b.r if isinstance(b, Surd) else 1)
        c = (qa > qb) - (qa < qb)
        return c if sa > 0 else -c
    return _add(a, -b).sign()


def maximum(a: Operand, b: Operand) -> Real:
    """``max(a, b)`` propagating NaN (as torch.maximum and jnp.maximum do)."""
    a, b = lift(a), lift(b)
    if a is NAN or b is NAN:
        return NAN
    if isinstance(a, Special) or isinstance(b, Special):
        if POS_INF in (a, b):
            return POS_INF
        return b if a is NEG_INF else a
    try:
        return a if compare(a, b) >= 0 else b
    except NeedPrecision:
        # Overlapping enclosures: the max of the enclosures encloses max(a, b).
        (alo, ahi), (blo, bhi) = _interval(a), _interval(b)
        return Ival(_max([alo, blo]), _max([ahi, bhi]))
