"""The scalars of one step for the fast oracle, exact first and then as rigorous doubles.

Every constant a step multiplies by is derived from the held hyperparameters
(:func:`adamspec.oracles.hyperparams.resolve`, exact rationals) exactly where it is
rational (``beta``, ``1 - beta``, ``1 - beta^t``, ``lr``, decay factors...) and
in mpmath interval arithmetic at :data:`IV_PREC` bits where it is not (square
roots, RAdam's rectification, clipping scales). Each becomes a :class:`Const`:
a double-double ``hi + lo`` with a bound ``err`` on its distance to the exact
value, so the tiers can charge the constant's own representation error.

The definitions are the mpmath oracle's own (:func:`adamspec.oracles.adam.bias_correction`
and its neighbours, generic over the number type), evaluated here on Fractions and
intervals: the fast oracle is the same judge. Its values are not taken from
``adamspec.oracles.adam._scalars``: those keep ``beta^t`` exact at every ``t`` (measured:
torch.RAdam at t = 10^4 takes 180 ms a step there, 0.7 ms here, where powers beyond
:data:`EXACT_POWER_BITS` become 320-bit intervals), and the tiers need each scalar as a
rigorous double-double, not a lazily evaluated real. This arithmetic is the oracle's own,
apart from ``impl/_constants.py`` on purpose: the judge shares no code with what it judges.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from mpmath import iv
from mpmath.libmp import (
    from_float,
    mpf_abs,
    mpf_add,
    mpf_lt,
    mpf_shift,
    mpf_sub,
    round_ceiling,
    round_nearest,
    to_float,
)

from adamspec.oracles.adam import (
    RADAM_RHO_THRESHOLD,
    bias_correction,
    decoupled_decay,
    ema_momentum,
    radam_rectification_squared,
    radam_rho_inf,
    radam_rho_t,
)
from adamspec.oracles.hyperparams import ExactHyper
from adamspec.spec.axes import BiasCorrection, EpsPlacement, Family, Nesterov
from adamspec.spec.variant import Variant

#: Working precision (bits) of the interval arithmetic for irrational constants.
IV_PREC = 320
#: Magnitudes of nonzero constants the tiers accept; outside it a step goes to mpmath.
CONST_MIN = 2.0**-200
CONST_MAX = 2.0**200
#: Beyond this many bits an exact power ``beta^t`` is replaced by an interval (exact
#: rationals of growing size would dominate long trajectories).
EXACT_POWER_BITS = 4096


@contextmanager
def iv_precision(bits: int = IV_PREC) -> Iterator[None]:
    """mpmath's interval context at ``bits`` (restored afterwards)."""
    saved = iv.prec
    iv.prec = bits
    try:
        yield
    finally:
        iv.prec = saved


def mpf_to_q(t: tuple) -> Fraction:
    """The exact value of a raw mpf tuple (an interval endpoint) as a Fraction."""
    sign, man, exp, _ = t
    if not man:
        return Fraction(0)
    value = Fraction(int(man)) * (Fraction(2) ** int(exp))
    return -value if sign else value


def _float_up(x: Fraction) -> float:
    """A float >= x (x >= 0), at most one ulp above."""
    if x == 0:
        return 0.0
    try:
        f = x.numerator / x.denominator
    except OverflowError:
        return math.inf
    if Fraction(f) < x:
        f = math.nextafter(f, math.inf)
    return f


def _nearest(x: Fraction) -> float:
    try:
        return x.numerator / x.denominator  # int / int is correctly rounded
    except OverflowError:
        return math.copysign(math.inf, x)


@dataclass(frozen=True)
class Const:
    """A real constant as a double-double ``hi + lo`` with ``|exact - (hi + lo)| <= err``.

    ``exact`` holds the rational value when the constant is rational (else None).
    """

    hi: float
    lo: float
    err: float
    exact: Fraction | None = None

    @property
    def is_double(self) -> bool:
        """The constant is exactly the double ``hi``."""
        return self.lo == 0.0 and self.err == 0.0

    @property
    def is_one(self) -> bool:
        """The constant is exactly 1."""
        return self.is_double and self.hi == 1.0

    @property
    def rel(self) -> float:
        """A bound on ``|exact - hi| / |hi|`` (0 when exactly a double; inf for hi == 0 inexact)."""
        if self.is_double:
            return 0.0
        if self.hi == 0.0:
            return math.inf
        return (abs(self.lo) + self.err) / abs(self.hi) * (1.0 + 2.0**-40)

    @property
    def in_range(self) -> bool:
        """Exactly zero, or a finite magnitude in ``[CONST_MIN, CONST_MAX]``."""
        return self.within(CONST_MIN, CONST_MAX)

    def within(self, low: float, high: float) -> bool:
        """Exactly zero, or a finite magnitude in ``[low, high]``."""
        if self.hi == 0.0 and self.is_double:
            return True
        return low <= abs(self.hi) <= high and math.isfinite(self.err)


def const_q(q: Any) -> Const:
    """The constant of an exact rational."""
    x = fraction_of(q)
    hi = _nearest(x)
    if not math.isfinite(hi):
        return Const(hi, 0.0, math.inf, x)
    rest = x - Fraction(hi)
    lo = _nearest(rest)
    return Const(hi, lo, _float_up(abs(rest - Fraction(lo))), x)


def const_iv(x: Any) -> Const:
    """The constant enclosed by an mpmath interval (rigorous: both ends are charged).

    Exact mpf arithmetic (``prec=0``) on the endpoints: the double-double is the
    nearest to their midpoint, the bound the larger distance to an end, rounded up.
    """
    a, b = x._mpi_
    mid = mpf_shift(mpf_add(a, b, 0), -1)
    hi = to_float(mid, rnd=round_nearest)
    if not math.isfinite(hi):
        return Const(hi, 0.0, math.inf)
    lo = to_float(mpf_sub(mid, from_float(hi), 0), rnd=round_nearest)
    center = mpf_add(from_float(hi), from_float(lo), 0)
    gap_a = mpf_abs(mpf_sub(a, center, 0))
    gap_b = mpf_abs(mpf_sub(b, center, 0))
    gap = gap_b if mpf_lt(gap_a, gap_b) else gap_a
    err = 0.0
    if gap[1]:  # nonzero; to_float flushes tiny values to 0 and may round subnormals down
        err = to_float(gap, rnd=round_ceiling) * (1.0 + 2.0**-50) + 2.0**-1074
    exact = mpf_to_q(a) if a == b else None
    return Const(hi, lo, err, exact)


def ivq(q: Any) -> Any:
    """An mpmath interval enclosing the rational ``q`` (exact when it fits the precision)."""
    return iv.mpf(int(q.numerator)) / iv.mpf(int(q.denominator))


def iv_decided_gt(x: Any, threshold: int) -> bool | None:
    """Whether the real enclosed by ``x`` exceeds ``threshold`` (None: undecided)."""
    a, b = (mpf_to_q(t) for t in x._mpi_)
    if a > threshold:
        return True
    if b <= threshold:
        return False
    return None


# ---------------------------------------------------------------- powers beta^t


@dataclass
class Power:
    """``beta^t`` (or an accumulated power): exact when affordable, always as an interval."""

    exact: Fraction | None
    interval: Any

    def times(self, beta: Fraction) -> Power:
        """This power times ``beta`` (the next step's power)."""
        with iv_precision():
            if self.exact is not None:
                bits = self.exact.numerator.bit_length() + self.exact.denominator.bit_length()
                if bits < EXACT_POWER_BITS:
                    exact = self.exact * beta
                    return Power(exact, ivq(exact))
            return Power(None, self.interval * ivq(beta))


def power_of(beta: Fraction, t: int) -> Power:
    """``beta^t`` exactly when its size allows, else by interval squaring."""
    bits = (beta.numerator.bit_length() + beta.denominator.bit_length()) * t
    with iv_precision():
        if bits < EXACT_POWER_BITS:
            exact = beta**t
            return Power(exact, ivq(exact))
        return Power(None, ivq(beta) ** t)  # interval power: outward-rounded multiplications


def power_from(start: Fraction, beta: Fraction) -> Power:
    """``start * beta`` for an accumulated power given as state."""
    with iv_precision():
        exact = start * beta
        return Power(exact, ivq(exact))


# ---------------------------------------------------------------- one step's constants


@dataclass
class StepConsts:
    """Every scalar of step ``t`` (``None`` where the variant has no such term).

    ``fallback`` names why this step cannot run in the tiers (degenerate bias
    corrections, out-of-range or non-finite constants); the step then goes to
    the mpmath oracle whole.
    """

    t: int
    p1: Power
    p2: Power
    consts: dict[str, Const]
    rectified: bool
    fallback: str | None

    def __getitem__(self, name: str) -> Const:
        return self.consts[name]

    def get(self, name: str) -> Const | None:
        return self.consts.get(name)


def fraction_of(x: Any) -> Fraction:
    """An exact rational (an mpq of :class:`~adamspec.oracles.hyperparams.ExactHyper`) as
    a Fraction."""
    return Fraction(int(x.numerator), int(x.denominator))


#: Rational constants already converted (they repeat across calls: betas, lr, eps...).
_RATIONALS: dict[Fraction, tuple[Const, Any]] = {}


def step_consts(
    variant: Variant,
    hp: ExactHyper,
    t: int,
    p1: Power,
    p2: Power,
    cache: dict[Any, tuple[Const, Any]] | None = None,
) -> StepConsts:
    """The constants of step ``t`` given the beta powers of this step (``beta^t`` or the
    accumulated ``P_t``), by the mpmath oracle's definitions (:mod:`adamspec.oracles.adam`).
    ``cache`` (a dict kept by the caller across the steps of one call) memoizes the rational
    constants."""
    with iv_precision():
        table = _Table({} if cache is None else cache)
        table.rational("D1", fraction_of(hp.moment_beta1))
        table.rational("K1", fraction_of(hp.one_minus_beta1))
        table.rational("D2", fraction_of(hp.moment_beta2))
        table.rational("K2", fraction_of(hp.one_minus_beta2))
        fallback = _corrections(table, variant, fraction_of(hp.beta1), p1, p2)
        _rationals(table, variant, hp, t)
        rectified = False
        if fallback is None:
            rectified, fallback = _combined(table, variant, fraction_of(hp.beta2), t, p2)
        if fallback is None:
            for name, k in table.c.items():
                if not k.in_range:
                    fallback = f"constant {name} = {k.hi!r} outside [2^-200, 2^200]"
                    break
        return StepConsts(t, p1, p2, table.c, rectified, fallback)


class _Table:
    """The constants of one step as they are made: each a :class:`Const` and the interval
    the derived constants are computed from."""

    def __init__(self, cache: dict[Any, tuple[Const, Any]]) -> None:
        self.c: dict[str, Const] = {}
        self.ivs: dict[str, Any] = {}
        self.cache = cache

    def rational(self, name: str, value: Fraction) -> None:
        if value not in self.cache:
            found = _RATIONALS.get(value)
            if found is None:
                if len(_RATIONALS) > 4096:
                    _RATIONALS.clear()
                found = _RATIONALS[value] = (const_q(value), ivq(value))
            self.cache[value] = found
        self.c[name], self.ivs[name] = self.cache[value]

    def irrational(self, name: str, value: Any) -> None:
        self.c[name] = const_iv(value)
        self.ivs[name] = value


def _corrections(table: _Table, variant: Variant, b1: Fraction, p1: Power, p2: Power) -> str | None:
    """``C1``, ``C2``, NAdam's ``C1N`` (``1 - P_1 beta1``), their inverses and ``SC2``
    (``sqrt(c2)``); or why the step cannot run in the tiers (a correction at 0)."""
    one = iv.mpf(1)
    for name, axis, power, beta in (
        ("C1", variant.bias_correction_m, p1, None),
        ("C2", variant.bias_correction_v, p2, None),
        ("C1N", variant.bias_correction_m, p1, b1),
    ):
        if axis is BiasCorrection.NONE or power.exact is not None:
            exact = power.exact if beta is None or power.exact is None else power.exact * beta
            table.rational(name, bias_correction(axis, exact, Fraction(1)))
        else:
            interval = power.interval if beta is None else power.interval * ivq(beta)
            table.irrational(name, bias_correction(axis, interval, one))
    fallback = None
    for name in ("C1", "C2", "C1N"):
        k = table.c[name]
        if k.hi == 0.0 and k.is_double:
            fallback = f"{name.lower()} = 0 (a beta held as 1)"
        elif k.exact is None and _iv_contains_zero(table.ivs[name]):
            fallback = f"{name.lower()} undecided near 0"
    if fallback is None:
        for name in ("C1", "C2", "C1N"):
            exact = table.c[name].exact
            if exact is None:
                table.irrational("I" + name, one / table.ivs[name])
            else:
                table.rational("I" + name, 1 / exact)
        table.irrational("SC2", iv.sqrt(table.ivs["C2"]))
    return fallback


def _rationals(table: _Table, variant: Variant, hp: ExactHyper, t: int) -> None:
    """The step's rational constants: ``LR``, ``EPS``, ``EPS_ROOT``, ``WD``, the decoupled
    decay ``DEC``, the EMA's ``MU``/``OMU`` and ``CLIPV``."""
    lr = fraction_of(hp.lr_at(t))
    table.rational("LR", lr)
    table.rational("EPS", fraction_of(hp.eps))
    table.rational("EPS_ROOT", fraction_of(hp.eps_root))
    wd = fraction_of(hp.weight_decay)
    table.rational("WD", wd)
    table.rational("DEC", decoupled_decay(variant.weight_decay, lr, wd, Fraction(1)))
    mu = ema_momentum(t, fraction_of(hp.ema_momentum), Fraction(0))
    table.rational("MU", mu)
    table.rational("OMU", 1 - mu)
    if hp.clipvalue is not None:
        table.rational("CLIPV", fraction_of(hp.clipvalue))


def _combined(
    table: _Table, variant: Variant, b2: Fraction, t: int, p2: Power
) -> tuple[bool, str | None]:
    """``EPS_SC2``, RAdam's ``RS`` and the combined step constants (``step = C * numerator /
    denominator``; NAdam's ``P`` and ``Q``); returns whether RAdam rectifies, and why the
    step cannot run in the tiers (its rho_t undecided)."""
    ivs = table.ivs
    table.irrational("EPS_SC2", ivs["EPS"] * ivs["SC2"])
    rectified = False
    factor = iv.mpf(1)
    if variant.family is Family.RADAM:
        rs = _radam(t, b2, p2)
        if rs is None:
            return False, "RAdam rho_t undecided"
        if rs is not False:
            rectified = True
            table.irrational("RS", rs)
            factor = ivs["RS"] * ivs["SC2"]
    elif variant.eps_placement in (EpsPlacement.EPS_HAT, EpsPlacement.EPS_HAT_ADAPTIVE):
        factor = ivs["SC2"]
    if variant.nesterov is Nesterov.NADAM:
        table.irrational("P", ivs["D1"] * ivs["IC1N"])
        table.irrational("Q", ivs["K1"] * ivs["IC1"])
        table.irrational("C", ivs["LR"] * factor)
    else:
        table.irrational("C", ivs["LR"] * ivs["IC1"] * factor)
    return rectified, None


def _iv_contains_zero(x: Any) -> bool:
    a, b = (mpf_to_q(t) for t in x._mpi_)
    return a <= 0 <= b


def _radam(t: int, beta2: Fraction, p2: Power) -> Any:
    """RAdam's rectification factor as an interval; False before rho_t exceeds 5, None when
    the comparison cannot be decided."""
    if beta2 == 1:
        return None
    rho_inf = radam_rho_inf(beta2)
    if p2.exact is not None:
        rho_t = radam_rho_t(t, rho_inf, p2.exact)
        if rho_t <= RADAM_RHO_THRESHOLD:
            return False
        return iv.sqrt(ivq(radam_rectification_squared(rho_inf, rho_t)))
    ri = ivq(rho_inf)
    rho_t_iv = radam_rho_t(t, ri, p2.interval)
    decided = iv_decided_gt(rho_t_iv, RADAM_RHO_THRESHOLD)
    if decided is None:
        return None
    if not decided:
        return False
    return iv.sqrt(radam_rectification_squared(ri, rho_t_iv))


def clip_scale(norm_sq: Fraction, threshold: Fraction) -> Const:
    """``c / max(sqrt(S), c)`` for the exact squared norm ``S``: exactly 1 when ``S <= c^2``."""
    if norm_sq <= threshold * threshold:
        return const_q(Fraction(1))
    with iv_precision():
        return const_iv(ivq(threshold) / iv.sqrt(ivq(norm_sq)))


__all__ = [
    "CONST_MAX",
    "CONST_MIN",
    "IV_PREC",
    "Const",
    "Power",
    "StepConsts",
    "clip_scale",
    "const_iv",
    "const_q",
    "fraction_of",
    "iv_precision",
    "mpf_to_q",
    "power_from",
    "power_of",
    "step_consts",
]
