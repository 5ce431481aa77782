"""Hyperparameters as the oracle uses them: ideal decimals or as an implementation holds them.

The oracle rounds with its own arithmetic (exact rationals here), apart from
``impl/_constants.py`` on purpose: the judge shares no code with what it judges, only the
spec's facts (:mod:`adamspec.spec.holding`).

Both modes exist so reports can separate *representation* error (0.999 is
1.0 in bfloat16) from *arithmetic* error (the rounding of each operation):

* ``"ideal"`` -- the exact decimals given (0.9 is 9/10);
* ``"held"`` -- each value rounded once to the format the variant's
  :class:`~adamspec.spec.axes.HyperPrecision` names (binary64 for torch's Python
  floats, the parameter dtype for TensorFlow kernels, float32 for ONNX), or,
  for the ``*_via_float64`` members (Keras, tf_keras, optax, TF.js), rounded
  to binary64 first and then to the parameter dtype, with the complements
  ``1 - beta`` formed in binary64 before that rounding.

A hyperparameter named in ``Hyper.held_formats`` is held in that format whatever the
variant and the param dtype (``spec/holding.py``'s ``HELD_FORMATS_DOC``): its binary64
value rounded to the named format; a beta held so decays its moment by itself and its
complement ``1 - beta`` is exact. "ideal" mode ignores ``held_formats`` (the decimals).

Besides the betas, :class:`ExactHyper` carries the two derived constants of
each moment update ``m' = moment_beta1 m + one_minus_beta1 g`` explicitly:
``one_minus_beta_i`` is exactly ``1 - beta_i`` and ``moment_beta_i`` is
``beta_i`` except under those two members (see ``spec/ADAM.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gmpy2 import mpq

from adamspec.oracles.rounding import exact_of_float, round_exact
from adamspec.spec.formats import FLOAT64, FloatFormat, format_named
from adamspec.spec.holding import complements_via_float64, decays_by_complement, holding_format
from adamspec.spec.hyper import Hyper
from adamspec.spec.variant import Variant

HyperMode = Literal["held", "ideal"]
HYPER_MODES: tuple[str, ...] = ("held", "ideal")


@dataclass(frozen=True)
class ExactHyper:
    """Hyperparameters as exact rationals, ready for the oracle's arithmetic.

    ``beta1``/``beta2`` are the held betas (bias corrections ``beta^t``, RAdam's
    rho); the moment updates use ``moment_beta_i * m + one_minus_beta_i * g``.
    Left out, ``one_minus_beta_i`` is exactly ``1 - beta_i`` and
    ``moment_beta_i`` is ``beta_i``.
    """

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
    one_minus_beta1: mpq | None = None
    one_minus_beta2: mpq | None = None
    moment_beta1: mpq | None = None
    moment_beta2: mpq | None = None

    def __post_init__(self) -> None:
        for i, beta in ((1, self.beta1), (2, self.beta2)):
            if getattr(self, f"one_minus_beta{i}") is None:
                object.__setattr__(self, f"one_minus_beta{i}", 1 - beta)
            if getattr(self, f"moment_beta{i}") is None:
                object.__setattr__(self, f"moment_beta{i}", beta)


def resolve(
    hyper: Hyper, variant: Variant, param_format: FloatFormat, mode: HyperMode = "held"
) -> ExactHyper:
    """Exact hyperparameters for one run in ``mode`` ("held" or "ideal")."""
    if mode not in HYPER_MODES:
        raise ValueError(f"hyper_mode={mode!r} is not supported; allowed: held, ideal")
    fmt = holding_format(variant, param_format) if mode == "held" else None
    via_float64 = fmt is not None and complements_via_float64(variant)

    def rounded(x, to: FloatFormat) -> mpq:
        return mpq(exact_of_float(round_exact(x, to)))

    own = {} if mode == "ideal" else {k: format_named(f) for k, f in hyper.held_formats}

    def held(x, name: str = ""):
        if x is None:
            return None
        if name in own:  # a format of its own: the binary64 float rounded to it
            return rounded(rounded(x, FLOAT64), own[name])
        if fmt is None:
            return mpq(x.numerator, x.denominator)
        if via_float64:
            x = rounded(x, FLOAT64)  # the Python/JS float the framework receives
        return rounded(x, fmt)

    betas = [("beta1", hyper.beta1), ("beta2", hyper.beta2)]
    held_betas = [held(b, name) for name, b in betas]
    one_minus = [1 - b for b in held_betas]
    moment = list(held_betas)
    for i, (name, b) in enumerate(betas):
        if name in own:
            continue  # a tensor of its own: exact complement, decays by itself
        if via_float64:
            # 1 - beta in binary64 (from the binary64 beta), then rounded to the param dtype
            one_minus[i] = rounded(rounded(1 - rounded(b, FLOAT64), FLOAT64), fmt)
        if fmt is not None and decays_by_complement(variant):
            moment[i] = 1 - one_minus[i]  # m + c (g - m) = (1 - c) m + c g

    return ExactHyper(
        lr_at=lambda t: held(hyper.lr_at(t), "lr"),
        beta1=held_betas[0],
        beta2=held_betas[1],
        eps=held(hyper.eps, "eps"),
        eps_root=held(hyper.eps_root, "eps_root"),
        weight_decay=held(hyper.weight_decay, "weight_decay"),
        clipnorm=held(hyper.clipnorm),
        clipvalue=held(hyper.clipvalue),
        global_clipnorm=held(hyper.global_clipnorm),
        use_ema=hyper.use_ema,
        ema_momentum=held(hyper.ema_momentum),
        ema_overwrite_frequency=hyper.ema_overwrite_frequency,
        held_in=fmt,
        one_minus_beta1=one_minus[0],
        one_minus_beta2=one_minus[1],
        moment_beta1=moment[0],
        moment_beta2=moment[1],
    )
