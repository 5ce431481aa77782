"""Planted bugs for the verdict benchmark (``adamspec bench verdicts``): one Adam kernel in the
functional form of ``impl/adapters/kernel_protocol.py``, and a table of configurations of it,
each with one bug planted (or two, or none: the correct controls), the variant it claims and
the category the diagnosis must name.

The kernel is written from ``spec/ADAM.md`` alone, independently of ``adamspec.impl`` and the
oracles: float64 arithmetic on the stored values, each stored value rounded once to the
param dtype, so a correct configuration is within rounding of the variant it claims. Where
the claimed variant holds its hyperparameters in another precision (``hyper_precision``), the
kernel holds them so too (:func:`_held`).

Sparse gradients and index-dependent bugs take kernels of their own, reused from
``sparse_kernels.py`` (the sparse-rows form) and ``scale_kernels.py`` (tensors at size):
their entries name the kernel (``source``) instead of knobs. Not covered: clipping and EMA
(no problem of the suites sets them).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from adamspec.impl.adapters.kernel_protocol import KernelState

_FORMATS = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16, "float32": np.float32,
            "float64": np.float64}  # fmt: skip


def _round(x: float, fmt: str) -> float:
    return float(np.asarray(x, np.float64).astype(_FORMATS[fmt]))


@dataclass(frozen=True)
class Knobs:
    """What the kernel computes. Defaults: the paper's Algorithm 1, hyperparameters as given.

    ``hold``: how every hyperparameter is held ("": as given; "param": rounded to the param
    dtype with ``1 - beta`` exact; "param_via_float64": rounded to the param dtype with
    ``1 - beta`` formed in binary64 first; "float32"); ``held``: hyperparameter -> a format of
    its own; ``values``: hyperparameter -> a hard-coded value used whatever is given."""

    eps: str = "algorithm_1"  # algorithm_1 | eps_hat | eps_root | no_sqrt
    bias_m: bool = True
    bias_v: bool = True
    amsgrad: str = ""  # "" | raw | corrected | raw_uncorrected
    decay: str = ""  # "" | l2 | decoupled_lr_before | decoupled_lr_after | decoupled_before
    maximize: str = ""  # "" | grad (negate g: m holds -g)
    nesterov: str = ""  # "" | tf_raw
    radam: bool = False
    step_offset: int = 0
    hold: str = ""
    held: tuple[tuple[str, str], ...] = ()
    values: tuple[tuple[str, float], ...] = ()
    stored_m: str = ""  # "" | corrected | negated
    stored_v: str = ""  # "" | sqrt | corrected
    v_unsquared: bool = False
    square_in_dtype: bool = False  # g * g formed in the param dtype (overflows there)
    flush_subnormals: bool = False  # denormals-are-zero inputs, flush-to-zero results
    no_weight_decay: bool = False  # declines weight decay (its cases are skipped)


def _held(h: Any, k: Knobs, dtype: str) -> dict[str, float]:
    """The hyperparameters the kernel computes with: lr, beta1, beta2, eps, eps_root,
    weight_decay, and the complements k1, k2 and decays d1, d2 of the moment updates."""
    out = {n: float(getattr(h, n)) for n in ("lr", "beta1", "beta2", "eps", "eps_root",
                                            "weight_decay")}  # fmt: skip
    out.update(dict(k.values))
    fmt = {"param": dtype, "param_via_float64": dtype, "float32": "float32"}.get(k.hold)
    own = dict(k.held)
    comp = {}
    for name in out:
        if name in own:
            out[name] = _round(out[name], own[name])
        elif fmt is not None:
            if k.hold == "param_via_float64" and name in ("beta1", "beta2"):
                comp[name] = _round(1.0 - out[name], fmt)  # 1 - beta in binary64, then held
            out[name] = _round(out[name], fmt)
    for i in (1, 2):
        beta = out[f"beta{i}"]
        out[f"k{i}"] = comp.get(f"beta{i}", 1.0 - beta)
        out[f"d{i}"] = beta
    return out


def _flush(x: np.ndarray, dtype: Any) -> np.ndarray:
    tiny = float(np.finfo(dtype).tiny) if dtype != ml_dtypes.bfloat16 else 2.0**-126
    return np.where(np.abs(x) < tiny, np.copysign(np.zeros_like(x), x), x)


def _correction(beta: float, t: int, on: bool) -> float:
    return 1.0 - beta**t if on else 1.0


def _radam_scale(b2: float, t: int) -> float | None:
    """RAdam's r_t * sqrt(c2) when rho_t > 5 (the adaptive step), None otherwise."""
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    c2 = 1.0 - b2**t
    rho_t = rho_inf - 2.0 * t * b2**t / c2
    if rho_t <= 5.0:
        return None
    r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    return r * math.sqrt(c2)


def step(param, grad, state, h, k: Knobs):
    """One step of the kernel configured by ``k`` (see :class:`Knobs`)."""
    if k.no_weight_decay and h.weight_decay:
        raise NotImplementedError("this kernel has no weight decay")
    dtype = param.dtype
    hp = _held(h, k, str(np.dtype(dtype)) if dtype != ml_dtypes.bfloat16 else "bfloat16")
    t_stored = state.step
    t = t_stored + 1 + k.step_offset
    b1, b2, lr, eps = hp["beta1"], hp["beta2"], hp["lr"], hp["eps"]
    p, g = param.astype(np.float64), np.asarray(grad).astype(np.float64)
    m, v = state.m.astype(np.float64), state.v.astype(np.float64)
    # the stored slots read back as the moments (the planted stored-state bugs)
    if k.stored_m == "corrected":
        m = m * _correction(b1, t_stored, True)
    elif k.stored_m == "negated":
        m = -m
    if k.stored_v == "sqrt":
        v = v * v
    elif k.stored_v == "corrected":
        v = v * _correction(b2, t_stored, True)
    if k.flush_subnormals:
        p, g, m, v = (_flush(x, dtype) for x in (p, g, m, v))
    if k.maximize == "grad":
        g = -g
    if k.decay == "l2":
        g = g + hp["weight_decay"] * p
    m = hp["d1"] * m + hp["k1"] * g
    if k.v_unsquared:
        square = np.abs(g)
    elif k.square_in_dtype:
        with np.errstate(over="ignore"):
            square = np.square(g.astype(dtype)).astype(np.float64)
    else:
        square = g * g
    v = hp["d2"] * v + hp["k2"] * square
    c1, c2 = _correction(b1, t, k.bias_m), _correction(b2, t, k.bias_v)
    numerator = m
    if k.nesterov == "tf_raw":
        numerator = b1 * m + (1.0 - b1) * g
    v_max = None
    s_hat = v / c2
    if k.amsgrad:
        prev = state.v_max.astype(np.float64)
        if k.amsgrad == "raw":
            v_max = np.maximum(prev, v)
            s_hat = v_max / c2
        elif k.amsgrad == "corrected":
            v_max = np.maximum(prev, v / c2)
            s_hat = v_max
        else:  # raw_uncorrected
            v_max = np.maximum(prev, v)
            s_hat = v_max
    if k.radam:
        scale = _radam_scale(b2, t)
        update = lr * (m / c1) if scale is None else lr * (m / c1) * scale / (np.sqrt(v) + eps)
    elif k.eps == "eps_hat":  # sqrt of the maximum (or of v) before its correction
        update = lr * math.sqrt(c2) / c1 * numerator / (np.sqrt(s_hat * c2) + eps)
    elif k.eps == "eps_root":
        update = lr * (numerator / c1) / (np.sqrt(s_hat + hp["eps_root"]) + eps)
    elif k.eps == "no_sqrt":
        update = lr * (numerator / c1) / (s_hat + eps)
    else:
        update = lr * (numerator / c1) / (np.sqrt(s_hat) + eps)
    wd = hp["weight_decay"]
    if k.decay == "decoupled_lr_before":
        p = p * (1.0 - lr * wd) - update
    elif k.decay == "decoupled_before":
        p = p * (1.0 - wd) - update
    elif k.decay == "decoupled_lr_after":
        p = (p - update) * (1.0 - lr * wd)
    else:
        p = p - update
    # what the kernel stores in the m and v slots
    m_out = m / c1 if k.stored_m == "corrected" else (-m if k.stored_m == "negated" else m)
    v_out = np.sqrt(v) if k.stored_v == "sqrt" else (v / c2 if k.stored_v == "corrected" else v)
    out = [p.astype(dtype), m_out.astype(dtype), v_out.astype(dtype)]
    if k.flush_subnormals:
        out = [_flush(x, dtype) for x in out]
    v_max_out = None if v_max is None else v_max.astype(dtype)
    return out[0], KernelState(out[1], out[2], v_max_out, t_stored + 1)


@dataclass(frozen=True)
class Planted:
    """One configuration: the variant it claims, the category its diagnosis must name
    ("rounding only" for a correct control) and what it gets wrong."""

    name: str
    claim: str
    category: str
    knobs: Knobs = field(default_factory=Knobs)
    description: str = ""
    needs: str = ""  # a problem without which the bug cannot show (else: any suite)
    source: str = ""  # "file.py:function" beside this one, instead of knobs

    @property
    def attribute(self) -> str:
        """The module attribute holding its kernel (``path/planted.py:<attribute>``)."""
        return "k_" + self.name

    @property
    def control(self) -> bool:
        return self.category == "rounding only"


_TORCH = Knobs(decay="l2")
_TORCH_W = Knobs(decay="decoupled_lr_before")
_TF_RAW = Knobs(eps="eps_hat", hold="param")
_OPTAX = Knobs(eps="eps_root", hold="param_via_float64")

PLANTED: tuple[Planted, ...] = (
    # correct controls, one per claimed variant family
    Planted("control_paper", "paper.algorithm1", "rounding only"),
    Planted("control_eps_hat", "paper.eps_hat", "rounding only", Knobs(eps="eps_hat")),
    Planted("control_torch", "torch.Adam", "rounding only", _TORCH),
    Planted("control_torch_adamw", "torch.AdamW", "rounding only", _TORCH_W),
    Planted("control_torch_amsgrad", "torch.Adam[amsgrad]", "rounding only",
            Knobs(decay="l2", amsgrad="raw")),
    Planted("control_torch_maximize", "torch.Adam[maximize]", "rounding only",
            Knobs(decay="l2", maximize="grad")),
    Planted("control_tf_raw", "tf.raw.ApplyAdam", "rounding only", _TF_RAW),
    Planted("control_optax", "optax.adam", "rounding only", _OPTAX),
    Planted("control_reddi", "reddi.amsgrad", "rounding only",
            Knobs(bias_m=False, bias_v=False, amsgrad="raw_uncorrected")),
    Planted("control_radam", "torch.RAdam", "rounding only", Knobs(radam=True, decay="l2")),
    # one bug each
    Planted("no_bias_correction", "paper.algorithm1", "bias correction",
            Knobs(bias_m=False, bias_v=False), "neither moment bias-corrected"),
    Planted("no_bias_correction_m", "paper.algorithm1", "bias correction",
            Knobs(bias_m=False), "m not bias-corrected"),
    Planted("no_bias_correction_v", "paper.algorithm1", "bias correction",
            Knobs(bias_v=False), "v not bias-corrected"),
    Planted("eps_hat_claims_algorithm1", "paper.algorithm1", "epsilon placement",
            Knobs(eps="eps_hat"), "eps added before the bias correction"),
    Planted("algorithm1_claims_eps_hat", "paper.eps_hat", "epsilon placement",
            Knobs(), "eps added after the bias correction"),
    Planted("amsgrad_over_v_hat", "torch.Adam[amsgrad]", "AMSGrad max placement",
            Knobs(decay="l2", amsgrad="corrected"), "the maximum taken over v_hat"),
    Planted("amsgrad_max_raw_not_corrected_v", "optax.amsgrad", "AMSGrad max placement",
            Knobs(eps="eps_root", hold="param_via_float64", amsgrad="raw"),
            "the maximum over raw v (then corrected) where optax takes it over v_hat"),
    Planted("l2_claims_adamw", "torch.AdamW", "weight-decay coupling or scaling",
            Knobs(decay="l2"), "weight decay added to the gradient"),
    Planted("decay_not_scaled_by_lr", "torch.AdamW", "weight-decay coupling or scaling",
            Knobs(decay="decoupled_before"), "decoupled decay not scaled by lr"),
    Planted("decay_after_the_step", "torch.AdamW", "weight-decay coupling or scaling",
            Knobs(decay="decoupled_lr_after"), "decoupled decay on the post-step weights"),
    Planted("decoupled_claims_l2", "torch.Adam", "weight-decay coupling or scaling",
            _TORCH_W, "decoupled decay where L2 is documented"),
    Planted("maximize_ignored", "torch.Adam[maximize]", "maximize sign", _TORCH,
            "maximize=True ignored"),
    Planted("nesterov_ignored", "tf.raw.ApplyAdam[use_nesterov]", "nesterov", _TF_RAW,
            "use_nesterov ignored"),
    Planted("radam_not_rectified", "torch.RAdam", "RAdam rectification",
            Knobs(eps="eps_hat", decay="l2"), "plain Adam where RAdam is documented"),
    Planted("step_counter_ahead", "paper.algorithm1", "step counting",
            Knobs(step_offset=1), "t counted from 2"),
    Planted("beta1_in_bfloat16", "paper.algorithm1", "hyperparameter representation",
            Knobs(held=(("beta1", "bfloat16"),)), "beta1 held in bfloat16, params float32"),
    Planted("beta2_in_float16", "paper.algorithm1", "hyperparameter representation",
            Knobs(held=(("beta2", "float16"),)), "beta2 held in float16"),
    Planted("lr_in_float16", "paper.algorithm1", "hyperparameter representation",
            Knobs(held=(("lr", "float16"),)), "the learning rate held in float16"),
    Planted("betas_in_param_dtype", "torch.Adam", "hyperparameter representation",
            Knobs(decay="l2", hold="param"), "every hyperparameter in float32"),
    Planted("eps_hard_coded_1e-7", "paper.algorithm1", "hyperparameter value",
            Knobs(values=(("eps", 1e-7),)), "eps = 1e-7 whatever is given"),
    Planted("eps_hard_coded_1e-6", "torch.Adam", "hyperparameter value",
            Knobs(decay="l2", values=(("eps", 1e-6),)), "eps = 1e-6 whatever is given"),
    Planted("beta1_hard_coded_0.95", "paper.algorithm1", "hyperparameter value",
            Knobs(values=(("beta1", 0.95),)), "beta1 = 0.95 whatever is given"),
    Planted("beta2_hard_coded_0.99", "paper.algorithm1", "hyperparameter value",
            Knobs(values=(("beta2", 0.99),)), "beta2 = 0.99 whatever is given"),
    Planted("m_stored_bias_corrected", "paper.algorithm1", "stored state",
            Knobs(stored_m="corrected"), "m_hat kept in the slot of m"),
    Planted("v_stored_as_sqrt", "paper.algorithm1", "stored state",
            Knobs(stored_v="sqrt"), "sqrt(v) kept in the slot of v"),
    Planted("v_hat_stored_as_v", "paper.algorithm1", "stored state",
            Knobs(stored_v="corrected"), "v_hat kept in the slot of v"),
    Planted("maximize_m_stored_unnegated", "torch.Adam[maximize]", "stored state",
            Knobs(maximize="grad", stored_m="negated", no_weight_decay=True),
            "maximizes, but stores m un-negated (as if it negated the step instead)"),
    # two bugs at once
    Planted("eps_hat_and_unscaled_decay", "torch.AdamW", "two changes",
            Knobs(eps="eps_hat", decay="decoupled_before"),
            "eps-hat form and decoupled decay not scaled by lr"),
    Planted("eps_hat_and_beta1_in_float16", "paper.algorithm1", "two changes",
            Knobs(eps="eps_hat", held=(("beta1", "float16"),)),
            "eps-hat form and beta1 held in float16"),
    Planted("maximize_with_m_unnegated", "torch.Adam", "two changes",
            Knobs(maximize="grad", stored_m="negated", no_weight_decay=True),
            "maximizes (not claimed), m stored un-negated"),
    # no single change or pair of the spec explains it
    Planted("v_unsquared", "paper.algorithm1", "unexplained", Knobs(v_unsquared=True),
            "v accumulates |g| instead of g^2"),
    Planted("square_root_missing", "paper.algorithm1", "unexplained", Knobs(eps="no_sqrt"),
            "m_hat / (v_hat + eps): the square root left out"),
    # right in exact arithmetic, not in the dtype's range
    Planted("square_in_float32", "paper.algorithm1", "format range",
            Knobs(square_in_dtype=True), "g * g formed in float32 (overflows beyond 1.8e19)",
            needs="huge"),
    Planted("flushes_subnormals", "paper.algorithm1", "format range",
            Knobs(flush_subnormals=True), "denormals-are-zero inputs, flush-to-zero results",
            needs="subnormals"),
    # sparse rows (the kernel protocol's sparse form) and tensors at size
    Planted("control_dense_sparse_rows", "tf_keras.Adam", "rounding only",
            description="every row decays, as tf_keras documents", needs="sparse-rows",
            source="sparse_kernels.py:dense_sparse_adam"),
    Planted("lazy_where_dense_documented", "paper.eps_hat", "sparse momentum",
            description="rows without a gradient left as they are (lazy, torch.SparseAdam's)",
            needs="sparse-rows", source="sparse_kernels.py:lazy_sparse_adam"),
    Planted("full_blocks_skip_v_correction", "torch.Adam", "index-dependent",
            description="v's bias correction left out in full 1024-element blocks, not the tail",
            needs="scale-blocks", source="scale_kernels.py:blocks_skip_v_correction"),
)  # fmt: skip


def _kernel(knobs: Knobs):
    def kernel(param, grad, state, h):
        return step(param, grad, state, h, knobs)

    return kernel


def _sourced(source: str):
    """The function ``file.py:name`` of a file beside this one (loaded by path, as this one is)."""
    file, name = source.split(":")
    path = Path(__file__).with_name(file)
    spec = importlib.util.spec_from_file_location(f"planted_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


for _p in PLANTED:
    globals()[_p.attribute] = _sourced(_p.source) if _p.source else _kernel(_p.knobs)
