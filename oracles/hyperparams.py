"""Hyperparameters as the oracle uses them: ideal decimals or as an implementation holds them.

Both modes exist so reports can separate *representation* error (0.999 is
1.0 in bfloat16) from *arithmetic* error (the rounding of each operation):

* ``"ideal"`` -- the exact decimals given (0.9 is 9/10);
* ``"held"`` -- each value rounded once to the format the variant's
  :class:`~spec.axes.HyperPrecision` names (binary64 for torch's Python
  floats, the parameter dtype for Keras/TensorFlow/optax, float32 for TF.js).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gmpy2 import mpq

from oracles.rounding import exact_of_float, round_exact
from spec.axes import HyperPrecision
from spec.formats import FLOAT32, FLOAT64, FloatFormat
from spec.hyper import Hyper
from spec.variant import Variant

HyperMode = Literal["held", "ideal"]
HYPER_MODES: tuple[str, ...] = ("held", "ideal")


@dataclass(frozen=True)
class ExactHyper:
    """Hyperparameters as exact rationals, ready for the oracle's arithmetic."""

    lr_at: Callable[[int], mpq]
    beta1: mpq
    beta2: mpq
    eps: mpq
    eps_root: mpq
    weight_decay: mpq
    clipnorm: mpq | None
    clipvalue: mpq | None
    global_clipnorm: mpq | None
    use_ema: bool
    ema_momentum: mpq
    ema_overwrite_frequency: int | None
    held_in: FloatFormat | None


def holding_format(variant: Variant, param_format: FloatFormat) -> FloatFormat | None:
    """The format the variant's implementation stores hyperparameters in (None: ideal)."""
    return {
        HyperPrecision.IDEAL: None,
        HyperPrecision.FLOAT64: FLOAT64,
        HyperPrecision.FLOAT32: FLOAT32,
        HyperPrecision.PARAM_DTYPE: param_format,
    }[variant.hyper_precision]


def resolve(
    hyper: Hyper, variant: Variant, param_format: FloatFormat, mode: HyperMode = "held"
) -> ExactHyper:
    """Exact hyperparameters for one run in ``mode`` ("held" or "ideal")."""
    if mode not in HYPER_MODES:
        raise ValueError(f"hyper_mode={mode!r} is not supported; allowed: held, ideal")
    fmt = holding_format(variant, param_format) if mode == "held" else None

    def held(x):
        if x is None:
            return None
        if fmt is None:
            return mpq(x.numerator, x.denominator)
        return mpq(exact_of_float(round_exact(x, fmt)))

    return ExactHyper(
        lr_at=lambda t: held(hyper.lr_at(t)),
        beta1=held(hyper.beta1),
        beta2=held(hyper.beta2),
        eps=held(hyper.eps),
        eps_root=held(hyper.eps_root),
        weight_decay=held(hyper.weight_decay),
        clipnorm=held(hyper.clipnorm),
        clipvalue=held(hyper.clipvalue),
        global_clipnorm=held(hyper.global_clipnorm),
        use_ema=hyper.use_ema,
        ema_momentum=held(hyper.ema_momentum),
        ema_overwrite_frequency=hyper.ema_overwrite_frequency,
        held_in=fmt,
    )
