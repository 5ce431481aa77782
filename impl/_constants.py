"""Per-step scalars of an Adam step, computed exactly once per step.

Everything a kernel multiplies by (``beta1``, ``1 - beta1`` as held, see
:func:`moment_constants`, ``1/c1``, ``sqrt(c2)``, ``lr``...) is derived here
from the *held* hyperparameters with exact rationals (and mpmath at 200 bits
for square roots), then split into a double-double ``(hi, lo)``. Kernels then
never round a hyperparameter silently: in particular nothing is ever rounded to
a 16-bit type unless the variant says its implementation does so
(``hyper_precision``).

This arithmetic is our implementation's own, apart from the oracle's
(``oracles/hyperparams.py``, ``oracles/_fast_consts.py``) on purpose: what is judged
shares no code with its judge, only the spec's facts (:mod:`adamspec.spec.holding`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from mpmath import mp

from adamspec.impl import _dd
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
)  # fmt: skip
INDEX = {name: i for i, name in enumerate(CONSTANT_NAMES)}


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


def holding_format(variant: Variant, param_format: FloatFormat) -> FloatFormat:
    """The format our implementation holds hyperparameters in: the spec's
    (:func:`adamspec.spec.holding.holding_format`), except for ``ideal``.

    Impl decision, not a spec fact: ``ideal`` means the exact decimals, which our kernels
    cannot hold; we approximate them by binary64 (a known limit of this implementation).
    """
    return holding.holding_format(variant, param_format) or FLOAT64


def holder(variant: Variant, param_format: FloatFormat) -> Callable[[Fraction], Fraction]:
    """The exact value our implementation holds for a hyperparameter given exactly.

    One rounding to :func:`holding_format`; for the ``*_via_float64`` members the
    value is the binary64 float first (as a Python float reaches the framework),
    then rounded to the parameter dtype.
    """
    fmt = holding_format(variant, param_format)
    if holding.complements_via_float64(variant):
        return lambda x: round_fraction(round_fraction(x, FLOAT64), fmt)
    return lambda x: round_fraction(x, fmt)


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
        fmt = holding_format(variant, param_format)

        def complement(beta: Fraction) -> Fraction:
            return round_fraction(round_fraction(1 - round_fraction(beta, FLOAT64), FLOAT64), fmt)

        k1, k2 = complement(hyper.beta1), complement(hyper.beta2)
    if holding.decays_by_complement(variant):
        d1, d2 = 1 - k1, 1 - k2
    return b1, b2, d1, d2, k1, k2


def round_fraction(x: Fraction, fmt: FloatFormat) -> Fraction:
    """The exact value of ``x`` correctly rounded to ``fmt`` (via a double-double)."""
    hi = float(x)
    if not math.isfinite(hi):
        return Fraction(0) if hi != hi else x
    lo = float(x - Fraction(hi))
    rounded = _dd.round_dd(np.float64(hi), np.float64(lo), fmt)
    return Fraction(float(rounded))


def _dd_of(x: Fraction | mp.mpf) -> tuple[float, float]:
    if isinstance(x, Fraction):
        hi = float(x)
        return hi, float(x - Fraction(hi)) if math.isfinite(hi) else 0.0
    hi = float(x)
    return hi, float(x - hi) if math.isfinite(hi) else 0.0


@dataclass(frozen=True)
class StepConstants:
    """The constants of one step as a (len(CONSTANT_NAMES), 2) float64 array of (hi, lo)."""

    values: np.ndarray
    config: KernelConfig
    beta1_power: Fraction
    beta2_power: Fraction

    def dd(self, name: str) -> tuple[float, float]:
        hi, lo = self.values[INDEX[name]]
        return float(hi), float(lo)


def step_constants(
    variant: Variant,
    hyper: Hyper,
    t: int,
    param_format: FloatFormat,
    beta1_power: Fraction,
    beta2_power: Fraction,
    clip_scale: Fraction | mp.mpf | None = None,
    has_gsq: bool = False,
) -> StepConstants:
    """Constants for step ``t`` given the previous (exact, as stored) beta powers."""
    held = holder(variant, param_format)
    b1, b2, d1, d2, ob1, ob2 = moment_constants(variant, hyper, param_format)
    lr, eps, eps_root = held(hyper.lr_at(t)), held(hyper.eps), held(hyper.eps_root)
    wd, mu = held(hyper.weight_decay), held(hyper.ema_momentum)
    p1 = beta1_power * b1 if variant.bias_correction_m is BiasCorrection.ACCUMULATED else b1**t
    p2 = beta2_power * b2 if variant.bias_correction_v is BiasCorrection.ACCUMULATED else b2**t
    c1 = Fraction(1) if variant.bias_correction_m is BiasCorrection.NONE else 1 - p1
    c2 = Fraction(1) if variant.bias_correction_v is BiasCorrection.NONE else 1 - p2
    c1n = Fraction(1) if variant.bias_correction_m is BiasCorrection.NONE else 1 - p1 * b1

    def inv(x: Fraction) -> Fraction | float:
        return 1 / x if x != 0 else math.inf

    with mp.workprec(200):
        sc2 = mp.sqrt(mp.mpf(c2.numerator) / c2.denominator)
        rectify = None
        if variant.family is Family.RADAM:
            rho_inf = 2 / (1 - b2) - 1
            rho_t = rho_inf - 2 * t * p2 / (1 - p2)
            if rho_t > 5:
                ratio = (
                    (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
                )
                rectify = mp.sqrt(mp.mpf(ratio.numerator) / ratio.denominator) * sc2
        decay_rate = lr * wd if variant.weight_decay.value.startswith("decoupled_lr") else wd
        values = {
            "B1": d1, "OB1": ob1, "B2": d2, "OB2": ob2,
            "IC1": inv(c1), "IC1N": inv(c1n), "C2": c2, "IC2": inv(c2), "SC2": sc2,
            "EPS": eps, "EPS_SC2": eps * sc2, "EPS_ROOT": eps_root, "LR": lr, "WD": wd,
            "DECAY": 1 - decay_rate, "RS": rectify if rectify is not None else Fraction(1),
            "SCALE": clip_scale if clip_scale is not None else Fraction(1),
            "MU": Fraction(0) if t == 1 else mu, "OMU": Fraction(1) if t == 1 else 1 - mu,
        }  # fmt: skip
        for name in ("B1", "OB1", "B2", "OB2"):
            high, low = _dd.split(np.float64(float(values[name])))
            values[name + "H"], values[name + "L"] = float(high), float(low)
        table = np.array(
            [
                _dd_of(values[n]) if not isinstance(values[n], float) else (values[n], 0.0)
                for n in CONSTANT_NAMES
            ],
            dtype=np.float64,
        )
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
    )
    return StepConstants(table, config, p1, p2)


__all__ = [
    "CONSTANT_NAMES",
    "KernelConfig",
    "StepConstants",
    "holder",
    "holding_format",
    "moment_constants",
    "round_fraction",
    "step_constants",
]
