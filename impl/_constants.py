"""Per-step scalars of an Adam step, computed exactly once per step.

Everything a kernel multiplies by (``beta1``, ``1 - beta1`` as held, see
:func:`moment_constants`, ``1/c1``, ``sqrt(c2)``, ``lr``...) is derived here
from the *held* hyperparameters with exact rationals, and kept three ways:

* the exact value (:meth:`StepConstants.exact_value`: a rational, or a surd ``q sqrt(r)``
  for square roots), for the exact tier (:mod:`adamspec.impl._exact`);
* a double-double ``(hi, lo)`` (:attr:`StepConstants.values`), for the float64 and the
  double-double passes;
* a bound on ``|exact - hi - lo|`` (:attr:`StepConstants.errors`), which enters the
  double-double pass's error bounds.

``ideal`` hyperparameters (the paper's decimals) are held as the exact decimals: 0.9 is
9/10, whose double-double is 2**-107 off; the kernels carry the low parts of the moment
constants and their representation error in their bounds, and decide exact ties of the
moments from the constants' integer forms (``d1 = P1/Q1``, ``k1 = R1/Q1``: m' is a tie
exactly when ``P1 m + R1 g = Q1 midpoint``). Nothing is ever rounded to a 16-bit type
unless the variant says its implementation does so (``hyper_precision``).

This arithmetic is our implementation's own, apart from the oracle's
(``oracles/hyperparams.py``, ``oracles/_fast_consts.py``) on purpose: what is judged
shares no code with its judge, only the spec's facts (:mod:`adamspec.spec.holding`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache, partial
from typing import Any

import numpy as np

from adamspec.impl import _dd
from adamspec.impl._exact import Surd, root_bounds, round_fraction, surd
from adamspec.spec import holding
from adamspec.spec.axes import BiasCorrection, Family, WeightDecay
from adamspec.spec.formats import FLOAT64, FloatFormat
from adamspec.spec.hyper import Hyper
from adamspec.spec.variant import Variant

#: Names of the kernel constants, in the order of the constants vector.
CONSTANT_NAMES = (
    "B1", "OB1", "B2", "OB2", "IC1", "IC1N", "C2", "IC2", "SC2", "EPS", "EPS_SC2",
    "EPS_ROOT", "LR", "WD", "DECAY", "RS", "SCALE", "MU", "OMU",
    # Veltkamp halves (26 bits each) of the moment constants' hi parts: their products
    # with inputs of at most 27 significant bits (float32 and narrower) are exact.
    "B1H", "B1L", "OB1H", "OB1L", "B2H", "B2L", "OB2H", "OB2L",
    # Decimal moment constants (``ideal``): their double-double low parts, and bounds, per
    # unit of the input they multiply, on what the kernels' products with hi + lo miss
    # (the representation error, and the rounding of the low part's product).
    "B1X", "OB1X", "B2X", "OB2X", "B1E", "OB1E", "B2E", "OB2E",
    # Integer forms of the moment constants, d1 = P1/Q1 and k1 = R1/Q1 (d2, k2 likewise),
    # for exact tie decisions; Q = 0 where the products would not be exact in float64.
    "P1", "R1", "Q1", "P2", "R2", "Q2",
)  # fmt: skip
INDEX = {name: i for i, name in enumerate(CONSTANT_NAMES)}

#: Bits of the enclosures the double-doubles of square-root constants are taken from.
_CONSTANT_BITS = 200


@dataclass(frozen=True)
class KernelConfig:
    """The compile-time shape of a step: which branches of the formula exist."""

    family: str
    placement: str
    amsgrad: str
    nesterov: str
    decay: str  # "none", "before", "after"
    l2: bool
    rectified: bool
    scaled: bool
    use_ema: bool
    overwrite: bool
    has_gsq: bool
    #: the moment constants d1, k1, d2, k2 are not all binary64 numbers (``ideal``)
    decimal_moments: bool = False


def holder(variant: Variant, param_format: FloatFormat) -> Callable[[Fraction], Fraction]:
    """The exact value our implementation holds for a hyperparameter given exactly.

    One rounding to the spec's holding format (:func:`adamspec.spec.holding.holding_format`);
    none at all for ``ideal`` (the exact decimal); for the ``*_via_float64`` members the
    value is the binary64 float first (as a Python float reaches the framework), then
    rounded to the parameter dtype.
    """
    fmt = holding.holding_format(variant, param_format)
    if fmt is None:
        return lambda x: x
    if holding.complements_via_float64(variant):
        return lambda x: _round(_round(x, FLOAT64), fmt)
    return lambda x: _round(x, fmt)


def _round(x: Fraction, fmt: FloatFormat) -> Fraction:
    """A held hyperparameter: ``x`` rounded to ``fmt`` (hyperparameters are validated
    finite and small, so never overflow)."""
    return Fraction(round_fraction(x, fmt))


def moment_constants(
    variant: Variant, hyper: Hyper, param_format: FloatFormat
) -> tuple[Fraction, Fraction, Fraction, Fraction, Fraction, Fraction]:
    """``(b1, b2, d1, d2, k1, k2)``: the held betas (for ``beta^t``), the decay factors of
    m and v and the complements multiplying g and g^2 (``m' = d1 m + k1 g``).

    ``k_i = 1 - b_i`` and ``d_i = b_i`` exactly, except: ``*_via_float64`` forms
    ``k_i = fl_p(fl64(1 - fl64(beta_i)))`` and ``*_via_float64_lerp`` decays by
    ``d_i = 1 - k_i`` (the exact value of ``m + k (g - m)``).
    """
    held = holder(variant, param_format)
    b1, b2 = held(hyper.beta1), held(hyper.beta2)
    k1, k2 = 1 - b1, 1 - b2
    d1, d2 = b1, b2
    if holding.complements_via_float64(variant):
        fmt = holding.holding_format(variant, param_format)

        def complement(beta: Fraction) -> Fraction:
            return _round(_round(1 - _round(beta, FLOAT64), FLOAT64), fmt)

        k1, k2 = complement(hyper.beta1), complement(hyper.beta2)
    if holding.decays_by_complement(variant):
        d1, d2 = 1 - k1, 1 - k2
    return b1, b2, d1, d2, k1, k2


def is_double(x: Fraction) -> bool:
    """``x`` is a binary64 number (its double-double has no low part)."""
    return math.isfinite(float(x)) and Fraction(float(x)) == x


def _upward(x: Fraction) -> float:
    """A float at least ``x >= 0``."""
    f = float(x)
    return f if Fraction(f) >= x else math.nextafter(f, math.inf)


@lru_cache(maxsize=256, typed=True)  # most constants repeat from step to step
def double_double(x: Fraction | Surd | float) -> tuple[float, float, float]:
    """``(hi, lo, err)``: the double-double nearest a constant and a bound on ``|x - hi -
    lo|`` (0 for a double or any short rational; a special (inf) is itself, error 0)."""
    if isinstance(x, float):
        return x, 0.0, 0.0
    if isinstance(x, Surd):
        low, high = root_bounds(Fraction(x.r), _CONSTANT_BITS)
        return _enclosed_double_double(*sorted((x.q * low, x.q * high)))
    return _enclosed_double_double(*_short_bounds(x))


def root_double_double(q: Fraction, r: Fraction) -> tuple[float, float, float]:
    """:func:`double_double` of ``q sqrt(r)`` (``r >= 0``) without forming the surd when
    ``q`` or ``r`` is long: from short bounds of both (``c2 = 1 - beta2**t`` has about
    ``53 t`` bits, and the exact surd's integer square root would cost more than the
    step late in training)."""
    if not (_is_long(q) or _is_long(r)):
        return double_double(surd(q, r))
    (q_low, q_high), (r_low, r_high) = _short_bounds(q), _short_bounds(r)
    roots = (root_bounds(r_low, _CONSTANT_BITS)[0], root_bounds(r_high, _CONSTANT_BITS)[1])
    ends = [a * b for a in (q_low, q_high) for b in roots]
    return _enclosed_double_double(min(ends), max(ends))


def _is_long(x: Fraction) -> bool:
    """More bits than the double-doubles need, by far (``beta**t`` as t grows)."""
    return x.numerator.bit_length() + x.denominator.bit_length() > 4 * _CONSTANT_BITS


def _short_bounds(x: Fraction) -> tuple[Fraction, Fraction]:
    """``(x, x)`` for a short ``x``; else dyadic rationals of ``_CONSTANT_BITS``
    significant bits around it: ``floor(x 2**s) / 2**s <= x < (that + 1) / 2**s``, one
    integer division instead of Fraction arithmetic (gcds) on thousands of digits."""
    if not _is_long(x):
        return x, x
    n, d = x.numerator, x.denominator
    s = _CONSTANT_BITS - (abs(n).bit_length() - d.bit_length())
    k = (n << s) // d if s >= 0 else n // (d << -s)
    unit = Fraction(2) ** -s
    return k * unit, (k + 1) * unit


def _enclosed_double_double(low: Fraction, high: Fraction) -> tuple[float, float, float]:
    """The double-double nearest the middle of ``[low, high]`` and a bound on its error
    for any value in it."""
    if low == high:  # a rational: exact, often a double (held in binary)
        hi = float(low)
        rest = low - Fraction(hi)
        lo = float(rest)
        return hi, lo, _upward(abs(rest - Fraction(lo))) if rest else 0.0
    mid, half = (low + high) / 2, (high - low) / 2
    hi = float(mid)
    lo = float(mid - Fraction(hi))
    return hi, lo, _upward(abs(mid - Fraction(hi) - Fraction(lo)) + half)


#: Bits of float32 inputs (and narrower): the integer forms' products with them, with g^2
#: (twice as many) and with a float32 midpoint (one more) must stay within 53 bits.
_INPUT_BITS = 24


def integer_forms(d: Fraction, k: Fraction) -> tuple[int, int, int]:
    """``(P, R, Q)`` with ``d = P/Q`` and ``k = R/Q``, ``Q`` their least common denominator:
    ``d x + k y`` is exactly a value ``M`` iff ``P x + R y = Q M``."""
    q = math.lcm(d.denominator, k.denominator)
    return int(d * q), int(k * q), q


def narrow_integer_forms(d: Fraction, k: Fraction, y_bits: int) -> tuple[int, int, int]:
    """:func:`integer_forms`, all zero unless ``P x``, ``R y`` (``y`` of ``y_bits`` bits)
    and ``Q midpoint`` are exact in float64 for float32 (and narrower) ``x`` and
    midpoints: what the float64 kernels' tie decisions need."""
    p, r, q = integer_forms(d, k)
    exact = (
        abs(p).bit_length() + _INPUT_BITS <= 53
        and abs(r).bit_length() + y_bits <= 53
        and q.bit_length() + _INPUT_BITS + 1 <= 53
    )
    return (p, r, q) if exact else (0, 0, 0)


@dataclass(frozen=True)
class ClipScale:
    """A clipping scale ``c / max(||g||, c)``: its double-double, a bound on that's error,
    and its exact value computed on demand (only the exact tier needs it)."""

    hi: float
    lo: float
    err: float
    exact: Callable[[], Fraction | Surd | float]


@dataclass(frozen=True)
class StepConstants:
    """The constants of one step: ``values``, a (len(CONSTANT_NAMES), 2) float64 array of
    (hi, lo); ``errors``, bounds on ``|exact - hi - lo|``; the exact values on demand."""

    values: np.ndarray
    config: KernelConfig
    beta1_power: Fraction
    beta2_power: Fraction
    errors: np.ndarray = field(default_factory=lambda: np.zeros(len(CONSTANT_NAMES)))
    exact: dict[str, Any] = field(default_factory=dict, compare=False)

    def dd(self, name: str) -> tuple[float, float]:
        hi, lo = self.values[INDEX[name]]
        return float(hi), float(lo)

    def error(self, name: str) -> float:
        return float(self.errors[INDEX[name]])

    def exact_value(self, name: str) -> Fraction | Surd | float:
        """The exact constant: a rational, a surd, or :data:`~adamspec.impl._exact.SPECIAL`."""
        value = self.exact[name]
        if callable(value):  # computed once, on first use
            value = self.exact[name] = value()
        return value


@lru_cache(maxsize=64)  # the same four constants every step of a run
def _moment_forms(
    d1: Fraction, k1: Fraction, d2: Fraction, k2: Fraction
) -> tuple[dict[str, tuple[float, float, float]], dict[str, Fraction], bool]:
    """The kernels' own forms of the moment constants (``m' = d1 m + k1 g``): the
    Veltkamp halves of their hi parts, their low parts with the bounds that go with
    them, and their integer forms, as ``name: (value, 0, 0)`` and as exact values; and
    whether any is not a binary64 number (``decimal_moments``)."""
    table: dict[str, tuple[float, float, float]] = {}
    for name, value in (("B1", d1), ("OB1", k1), ("B2", d2), ("OB2", k2)):
        hi, lo, err = double_double(value)
        high, low = _dd.split(np.float64(hi))
        table[name + "H"], table[name + "L"] = (float(high), 0.0, 0.0), (float(low), 0.0, 0.0)
        table[name + "X"] = (lo, 0.0, 0.0)
        # what hi + lo misses, and the rounding of lo x, per unit |x|: float64 rounding of
        # the bound itself is covered by the factor
        table[name + "E"] = ((err + abs(lo) * 2.0**-52) * (1 + 2.0**-50), 0.0, 0.0)
    for suffix, (d, k, y_bits) in {
        "1": (d1, k1, _INPUT_BITS),
        "2": (d2, k2, 2 * _INPUT_BITS),
    }.items():
        for letter, value in zip("PRQ", narrow_integer_forms(d, k, y_bits), strict=True):
            table[letter + suffix] = (float(value), 0.0, 0.0)
    exact = {name: Fraction(value[0]) for name, value in table.items()}
    return table, exact, not all(is_double(x) for x in (d1, k1, d2, k2))


def step_constants(
    variant: Variant,
    hyper: Hyper,
    t: int,
    param_format: FloatFormat,
    beta1_power: Fraction,
    beta2_power: Fraction,
    clip_scale: ClipScale | None = None,
    has_gsq: bool = False,
) -> StepConstants:
    """Constants for step ``t`` given the previous (exact, as stored) beta powers."""
    held = holder(variant, param_format)
    b1, b2, d1, d2, ob1, ob2 = moment_constants(variant, hyper, param_format)
    lr, eps, eps_root = held(hyper.lr_at(t)), held(hyper.eps), held(hyper.eps_root)
    wd, mu = held(hyper.weight_decay), held(hyper.ema_momentum)
    beta1_power, beta2_power = Fraction(beta1_power), Fraction(beta2_power)
    p1 = beta1_power * b1 if variant.bias_correction_m is BiasCorrection.ACCUMULATED else b1**t
    p2 = beta2_power * b2 if variant.bias_correction_v is BiasCorrection.ACCUMULATED else b2**t
    c1 = Fraction(1) if variant.bias_correction_m is BiasCorrection.NONE else 1 - p1
    c2 = Fraction(1) if variant.bias_correction_v is BiasCorrection.NONE else 1 - p2
    c1n = Fraction(1) if variant.bias_correction_m is BiasCorrection.NONE else 1 - p1 * b1

    def inv(x: Fraction) -> Fraction | float:
        return 1 / x if x != 0 else math.inf  # a float: special to the exact tier

    rectify = None  # RAdam's ratio under its square root, when it rectifies
    if variant.family is Family.RADAM:
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * p2 / (1 - p2)
        if rho_t > 5:
            rectify = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
    decay_rate = lr * wd if variant.weight_decay.value.startswith("decoupled_lr") else wd
    exact: dict[str, Any] = {
        "B1": d1, "OB1": ob1, "B2": d2, "OB2": ob2,
        "IC1": inv(c1), "IC1N": inv(c1n), "C2": c2, "IC2": inv(c2),
        "EPS": eps, "EPS_ROOT": eps_root, "LR": lr, "WD": wd,
        "DECAY": 1 - decay_rate, "RS": Fraction(1),
        "MU": Fraction(0) if t == 1 else mu, "OMU": Fraction(1) if t == 1 else 1 - mu,
    }  # fmt: skip
    roots = {"SC2": (Fraction(1), c2), "EPS_SC2": (eps, c2)}
    if rectify is not None:  # sqrt(ratio) sqrt(c2)
        roots["RS"] = (Fraction(1), rectify * c2)
    table = {name: double_double(value) for name, value in exact.items() if name not in roots}
    for name, (q, r) in roots.items():  # the exact surds only if the exact tier asks
        table[name] = root_double_double(q, r)
        exact[name] = partial(surd, q, r)
    table["SCALE"] = (1.0, 0.0, 0.0)
    exact["SCALE"] = Fraction(1)
    if clip_scale is not None:
        table["SCALE"] = (clip_scale.hi, clip_scale.lo, clip_scale.err)
        exact["SCALE"] = clip_scale.exact
    own_table, own_exact, decimal = _moment_forms(d1, ob1, d2, ob2)
    table.update(own_table)
    exact.update(own_exact)
    values = np.array([table[n][:2] for n in CONSTANT_NAMES], dtype=np.float64)
    errors = np.array([table[n][2] for n in CONSTANT_NAMES], dtype=np.float64)
    decay = "none"
    if variant.weight_decay in (WeightDecay.DECOUPLED_LR_BEFORE, WeightDecay.DECOUPLED_BEFORE):
        decay = "before"
    elif variant.weight_decay in (WeightDecay.DECOUPLED_LR_AFTER, WeightDecay.DECOUPLED_AFTER):
        decay = "after"
    config = KernelConfig(
        family=variant.family.value,
        placement=variant.eps_placement.value,
        amsgrad=variant.amsgrad.value,
        nesterov=variant.nesterov.value,
        decay=decay,
        l2=variant.weight_decay is WeightDecay.L2 and wd != 0,
        rectified=rectify is not None,
        scaled=clip_scale is not None,
        use_ema=hyper.use_ema,
        overwrite=bool(hyper.use_ema and hyper.ema_overwrite_frequency)
        and t % hyper.ema_overwrite_frequency == 0,
        has_gsq=has_gsq,
        decimal_moments=decimal,
    )
    return StepConstants(values, config, p1, p2, errors, exact)


__all__ = [
    "CONSTANT_NAMES",
    "ClipScale",
    "KernelConfig",
    "StepConstants",
    "double_double",
    "holder",
    "integer_forms",
    "is_double",
    "moment_constants",
    "narrow_integer_forms",
    "round_fraction",
    "step_constants",
]
