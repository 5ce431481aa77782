"""How an implementation holds its hyperparameters: the facts of each
:class:`~adamspec.spec.axes.HyperPrecision` member, as data.

Three facts, each documented (with sources) on the members in :mod:`adamspec.spec.axes`:

* the format every hyperparameter (lr, betas, eps, eps_root, weight_decay, clipping
  thresholds, ema_momentum) is rounded to once, or none at all (``ideal``: the exact
  decimals given);
* the members whose hyperparameters arrive as binary64 numbers (Python/JS floats): each
  is rounded to binary64 first, and the complements ``1 - beta`` are formed in binary64
  from the binary64 beta before they meet a tensor;
* the members that update the moments in interpolation form ``m + k (g - m)``, so that
  the decay factor of ``m`` (``v``) is ``1 - k_i``, not the held ``beta_i``.

A fourth fact is per hyperparameter and independent of the variant and the param dtype:
:attr:`adamspec.spec.hyper.Hyper.held_formats` says that a kernel holds, say, beta1 in
bfloat16 while its params are float32 (``HELD_FORMATS_DOC`` below). It overrides the
member's format for that one hyperparameter.

Data only: the oracle (``oracles/hyperparams.py``) and our implementation
(``impl/_constants.py``) each round with their own arithmetic, reading these facts.
"""

from __future__ import annotations

from adamspec.spec.axes import HyperPrecision
from adamspec.spec.formats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FloatFormat
from adamspec.spec.variant import Variant

#: Stands for the parameter dtype in :data:`HOLDING_FORMAT`.
PARAM_DTYPE = "param_dtype"

#: The format each member rounds hyperparameters to: a format, :data:`PARAM_DTYPE`, or
#: None for the exact decimals given (no rounding at all).
HOLDING_FORMAT: dict[HyperPrecision, FloatFormat | str | None] = {
    HyperPrecision.IDEAL: None,
    HyperPrecision.FLOAT64: FLOAT64,
    HyperPrecision.FLOAT32: FLOAT32,
    HyperPrecision.PARAM_DTYPE: PARAM_DTYPE,
    HyperPrecision.PARAM_DTYPE_VIA_FLOAT64: PARAM_DTYPE,
    HyperPrecision.PARAM_DTYPE_VIA_FLOAT64_LERP: PARAM_DTYPE,
}

#: Members whose hyperparameters are binary64 floats before they are held, with the
#: complements ``1 - beta`` formed in binary64: ``k_i = fl_p(fl64(1 - fl64(beta_i)))``.
VIA_FLOAT64: frozenset[HyperPrecision] = frozenset(
    {HyperPrecision.PARAM_DTYPE_VIA_FLOAT64, HyperPrecision.PARAM_DTYPE_VIA_FLOAT64_LERP}
)

#: Members whose moments decay by ``d_i = 1 - k_i`` (interpolation form).
DECAY_BY_COMPLEMENT: frozenset[HyperPrecision] = frozenset(
    {HyperPrecision.PARAM_DTYPE_VIA_FLOAT64_LERP}
)


#: The hyperparameters a kernel may hold in a format of its own (``Hyper.held_formats``).
HOLDABLE: tuple[str, ...] = ("lr", "beta1", "beta2", "eps", "eps_root", "weight_decay")

#: The formats ``Hyper.held_formats`` may name, narrowest first.
HOLDING_FORMATS: tuple[FloatFormat, ...] = (BFLOAT16, FLOAT16, FLOAT32, FLOAT64)

HELD_FORMATS_DOC = (
    "A hyperparameter h named in held_formats is held as fl_F(fl64(h)): the binary64 float "
    "the kernel receives, rounded once more to the named format F, whatever the param dtype "
    "and the variant's hyper_precision (a kernel that writes beta1 = bfloat16(0.9) and runs "
    "float32 arithmetic). A held beta is then a tensor of its own: 1 - beta is formed "
    "exactly from it (Sterbenz: exact in F for beta in [1/2, 1]) and the moment decays by "
    "the held beta itself, not by 1 - k (the interpolation form of the *_lerp member)."
)


def holding_format(variant: Variant, param_format: FloatFormat) -> FloatFormat | None:
    """The format the variant's implementation holds hyperparameters in, for parameters of
    ``param_format``; None for ``ideal`` (the exact decimals, never rounded)."""
    fmt = HOLDING_FORMAT[variant.hyper_precision]
    return param_format if fmt == PARAM_DTYPE else fmt


def complements_via_float64(variant: Variant) -> bool:
    """Each hyperparameter is rounded to binary64 before it is held, and ``1 - beta`` is
    formed in binary64 (see :data:`VIA_FLOAT64`)."""
    return variant.hyper_precision in VIA_FLOAT64


def decays_by_complement(variant: Variant) -> bool:
    """The moments decay by ``1 - k_i`` rather than by the held ``beta_i``
    (see :data:`DECAY_BY_COMPLEMENT`)."""
    return variant.hyper_precision in DECAY_BY_COMPLEMENT


__all__ = [
    "DECAY_BY_COMPLEMENT",
    "HELD_FORMATS_DOC",
    "HOLDABLE",
    "HOLDING_FORMAT",
    "HOLDING_FORMATS",
    "PARAM_DTYPE",
    "VIA_FLOAT64",
    "complements_via_float64",
    "decays_by_complement",
    "holding_format",
]
