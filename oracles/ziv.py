"""Ziv's strategy: raise the working precision until every rounding is certain.

A computation is a function of no arguments evaluated inside
``mp.workprec(p)``; it raises :class:`~adamspec.oracles.exact.NeedPrecision` when an
interval is too wide to decide a sign or a rounding, and is then run again at
``2 p``. Exact values (rationals, surds) are rounded directly and never need a
retry; only intervals do. Past :data:`MAX_PRECISION` bits the oracle refuses
to answer rather than guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from mpmath import mp
from mpmath.libmp import to_str

from adamspec.oracles.exact import (
    NAN,
    NEG_INF,
    POS_INF,
    Ival,
    NeedPrecision,
    Rat,
    Real,
    Special,
    Surd,
)
from adamspec.oracles.rounding import round_exact, rounding_is_certain
from adamspec.spec.formats import FloatFormat

T = TypeVar("T")

#: Starting working precision in bits: far above binary64's 53 so that one
#: pass decides nearly every rounding.
DEFAULT_PRECISION = 128
#: Give up (loudly) beyond this many bits; reaching it means an algebraic
#: coincidence the exact layer did not recognise, never a silent guess.
MAX_PRECISION = 1 << 15


class RoundingUndecided(ArithmeticError):
    """The correctly rounded result could not be certified within MAX_PRECISION bits."""


def evaluate(compute: Callable[[], T], precision: int = DEFAULT_PRECISION) -> tuple[T, int]:
    """Run ``compute`` at ``precision`` bits, doubling until it stops raising NeedPrecision.

    Returns the result and the precision that decided it.
    """
    prec = precision
    while prec <= MAX_PRECISION:
        with mp.workprec(prec):
            try:
                return compute(), prec
            except NeedPrecision:
                prec *= 2
    raise RoundingUndecided(
        f"rounding still undecided at {MAX_PRECISION} bits (started at {precision})"
    )


def round_real(x: Real, fmt: FloatFormat) -> float:
    """The correctly rounded (nearest-even) value of ``x`` in ``fmt``.

    Must be called inside the working-precision scope of the computation that
    produced ``x``; raises NeedPrecision when an interval straddles a rounding
    boundary. Surds refine themselves (they are exact) without a retry.
    """
    if isinstance(x, Rat):
        return round_exact(x.q, fmt)
    if isinstance(x, Special):
        return {NAN.kind: math.nan, POS_INF.kind: math.inf, NEG_INF.kind: -math.inf}[x.kind]
    if isinstance(x, Surd):
        prec = max(mp.prec, 2 * fmt.precision + 16)
        while prec <= MAX_PRECISION:
            with mp.workprec(prec):
                lo, hi = Ival(*x.enclosure()).bounds()
            decided = rounding_is_certain(lo, hi, fmt)
            if decided is not None:
                return decided
            prec *= 2
        raise RoundingUndecided(f"surd {x!r} undecided at {MAX_PRECISION} bits")
    assert isinstance(x, Ival)
    lo, hi = x.bounds()
    decided = rounding_is_certain(lo, hi, fmt)
    if decided is None:
        raise NeedPrecision("interval straddles a rounding boundary")
    return decided


def decimal_string(x: Real, digits: int) -> str:
    """``x`` to ``digits`` significant decimal digits ("nan", "inf", "-inf" for specials).

    Rationals and surds are exact; for an interval the caller's precision
    must make it narrower than the last digit (checked, NeedPrecision if not).
    """
    if isinstance(x, Special):
        return {"nan": "nan", "+inf": "inf", "-inf": "-inf"}[x.kind]
    if isinstance(x, Rat) and x.q == 0:
        return "0"
    prec = int(digits * 3.33) + 16
    with mp.workprec(max(prec, mp.prec) if isinstance(x, Ival) else prec):
        lo, hi = x.enclosure()
        lo_s, hi_s = to_str(lo, digits), to_str(hi, digits)
    if lo_s != hi_s:
        if isinstance(x, Ival):
            raise NeedPrecision("interval wider than the requested decimal digits")
        return decimal_string_refined(x, digits)
    return lo_s


def decimal_string_refined(x: Real, digits: int) -> str:
    """Decimal digits of an exact value sitting near a decimal rounding boundary."""
    prec = int(digits * 3.33) + 64
    while prec <= MAX_PRECISION:
        with mp.workprec(prec):
            lo, hi = x.enclosure()
            lo_s, hi_s = to_str(lo, digits), to_str(hi, digits)
        if lo_s == hi_s:
            return lo_s
        prec *= 2
    # An exact decimal tie: print more digits than asked rather than guess.
    with mp.workprec(MAX_PRECISION):
        return to_str(x.enclosure()[0], digits + 10)
