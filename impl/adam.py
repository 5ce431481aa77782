r"""Production Adam/AMSGrad: every :class:`adamspec.spec.Variant`, correctly rounded, fast.

Functional like optax: state is a small immutable record and

    state = init(params, variant)
    params, state = step(params, grads, state, hyper, variant)     # new arrays
    state = step_(params, grads, state, hyper, variant)            # in place

Each stored value (param, m, v, v_max, EMA, master copy) is the correctly rounded
result of the variant's exact formula (``spec/ADAM.md``) applied to the stored inputs
(with a float32 master copy, the 16-bit param is the stored master rounded again, as
"Mixed precision" there says), with the hyperparameters held as the variant says
(``ideal``: the exact decimals, 9/10 and not binary64's 0.9). The step's scalars are
computed exactly once per step (:mod:`adamspec.impl._constants`); every coordinate is
evaluated in float64 with a rigorous error bound and stored where the bound proves its
rounding; what it cannot prove goes to double-double with bounds, and what is left to
exact arithmetic (:mod:`adamspec.impl._tiers`). Float64 parameters start at the
double-double pass.

Dense float32 steps run in a numba-compiled parallel kernel when numba is
installed; otherwise (and for other dtypes, master weights and sparse
gradients) in cache-sized NumPy chunks. Dense float32 CuPy arrays run one fused
CuPy kernel generated from the same kernel source (its few uncertain coordinates
after it, like the compiled CPU driver's); other CuPy steps take the NumPy code
path with ``cupy`` as the namespace (:mod:`adamspec.impl._xp`).

Gradients are prepared in :mod:`adamspec.impl._gradients`; this module holds the state,
the public step and the choice and driving of each backend.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from adamspec.impl import _memory
from adamspec.impl._constants import StepConstants, holder, round_fraction, step_constants
from adamspec.impl._formats import UnsupportedError, format_of
from adamspec.impl._gradients import Gradient, clip_scales, prepare_gradient
from adamspec.impl._kernels import BLOCK, cupy_float32_driver, numba_float32_driver
from adamspec.impl._tiers import apply_numpy
from adamspec.impl._xp import array_namespace
from adamspec.spec.axes import AmsGrad, BiasCorrection
from adamspec.spec.formats import FLOAT64
from adamspec.spec.hyper import Hyper
from adamspec.spec.variant import Variant


class AdamState(NamedTuple):
    """Optimizer state: one array per parameter tensor, plus the step count.

    ``beta1_power``/``beta2_power`` are the stored accumulated powers
    (``beta^step`` rounded to the state dtype each step) for variants with
    accumulated bias correction; 1.0 otherwise. ``master`` holds float32
    master weights for 16-bit parameters when requested.
    """

    step: int
    m: tuple[Any, ...]
    v: tuple[Any, ...]
    v_max: tuple[Any, ...] | None
    ema: tuple[Any, ...] | None
    master: tuple[Any, ...] | None
    beta1_power: float = 1.0
    beta2_power: float = 1.0


def _tensors(params: Any) -> tuple[list[Any], bool]:
    if isinstance(params, (list, tuple)):
        return list(params), False
    return [params], True


def init(
    params: Any,
    variant: Variant | None = None,
    *,
    master_weights: bool = False,
    state_dtype: Any = None,
    ema: bool = False,
) -> AdamState:
    """Zero state for ``params`` (one array or a list of arrays).

    ``state_dtype`` defaults to the parameter dtype, or float32 with
    ``master_weights`` (which requires 16-bit parameters).
    """
    variant = variant or Variant()
    tensors, _ = _tensors(params)
    for p in tensors:
        format_of(p)
    if master_weights and any(format_of(p).bits != 16 for p in tensors):
        raise UnsupportedError("master_weights is for 16-bit parameters (float16, bfloat16)")
    xp = array_namespace(*tensors)

    def zeros(p: Any, dtype: Any = None) -> Any:
        dtype = dtype or state_dtype or (np.float32 if master_weights else p.dtype)
        if xp is np:  # large state on huge pages: see impl/_memory.py
            return _memory.zeros(p.shape, dtype)
        return xp.zeros(p.shape, dtype=dtype)

    return AdamState(
        step=0,
        m=tuple(zeros(p) for p in tensors),
        v=tuple(zeros(p) for p in tensors),
        v_max=tuple(zeros(p) for p in tensors) if variant.amsgrad is not AmsGrad.OFF else None,
        ema=tuple(zeros(p, p.dtype) for p in tensors) if ema else None,
        master=tuple(p.astype(np.float32) for p in tensors) if master_weights else None,
    )


BACKENDS = ("auto", "numba", "numpy")

#: The smallest tensor "auto" runs with numba. Measured (torch.Adam variant, float32, one
#: step, median of 5): NumPy 2.6 ms vs numba 8.0 ms at 4096 params, both 8.0 ms at 65536;
#: and a numba compile costs ~8 s per process and variant configuration.
JIT_MIN_SIZE = 1 << 16


def step(
    params: Any,
    grads: Any,
    state: AdamState,
    hyper: Hyper,
    variant: Variant | None = None,
    *,
    backend: str = "auto",
) -> tuple[Any, AdamState]:
    """One step returning new params and state; the inputs are not modified.

    ``backend``: "auto" (numba for dense float32 when installed, the fused kernel for
    dense float32 CuPy arrays, else NumPy), "numpy" (always the chunked NumPy path,
    on CuPy arrays too) or "numba" (error if unavailable).
    """
    tensors, single = _tensors(params)
    new_params = [p.copy() for p in tensors]

    def copies(arrays: tuple | None) -> tuple | None:
        return None if arrays is None else tuple(a.copy() for a in arrays)

    fresh = state._replace(
        m=copies(state.m),
        v=copies(state.v),
        v_max=copies(state.v_max),
        ema=copies(state.ema),
        master=copies(state.master),
    )
    new_state = step_(
        new_params[0] if single else new_params, grads, fresh, hyper, variant, backend=backend
    )
    return (new_params[0] if single else new_params), new_state


def step_(
    params: Any,
    grads: Any,
    state: AdamState,
    hyper: Hyper,
    variant: Variant | None = None,
    *,
    backend: str = "auto",
) -> AdamState:
    """One step updating ``params`` and the state's arrays in place; returns the new state."""
    if backend not in BACKENDS:
        raise UnsupportedError(
            f"backend={backend!r} is not allowed; allowed: {', '.join(BACKENDS)}"
        )
    variant = variant or Variant()
    tensors, single = _tensors(params)
    grad_list = [grads] if single else list(grads)
    if len(grad_list) != len(tensors):
        raise UnsupportedError(f"{len(grad_list)} gradients for {len(tensors)} parameter tensors")
    if variant.amsgrad is not AmsGrad.OFF and state.v_max is None:
        raise UnsupportedError(
            "variant uses AMSGrad but the state has no v_max: init(params, variant)"
        )
    if hyper.use_ema and state.ema is None:
        xp = array_namespace(*tensors)
        state = state._replace(ema=tuple(xp.zeros(p.shape, dtype=p.dtype) for p in tensors))
    t = state.step + 1
    # hyperparameters "in the param dtype" are held in the dtype the update is computed in:
    # the master's where one is kept
    compute_fmt = format_of(state.master[0] if state.master is not None else tensors[0])
    if state.master is not None and compute_fmt.name != "float32":
        raise UnsupportedError(f"master weights are float32; got {compute_fmt.name}")
    hold = holder(variant, compute_fmt)
    prepared = [
        prepare_gradient(g, p, variant, hyper, hold)
        for g, p in zip(grad_list, tensors, strict=True)
    ]
    with np.errstate(all="ignore"):  # an infinite gradient's norm is inf, on purpose
        scales = clip_scales(prepared, hyper, hold)
    p1 = Fraction(state.beta1_power)
    p2 = Fraction(state.beta2_power)
    constants = None
    for k, (p, grad) in enumerate(zip(tensors, prepared, strict=True)):
        constants = step_constants(
            variant, hyper, t, compute_fmt, p1, p2, scales[k], has_gsq=grad.gsq is not None
        )
        narrow = format_of(p) != FLOAT64  # float64 params go to double-double anyway
        if narrow and grad.dense and grad.g.dtype == np.float64 and not constants.config.scaled:
            constants = _general_gradient(constants)
        arrays = {
            "param": p,
            "m": state.m[k],
            "v": state.v[k],
            "vmax": state.v_max[k] if state.v_max is not None else None,
            "ema": state.ema[k] if state.ema is not None else None,
            "master": state.master[k] if state.master is not None else None,
        }
        with np.errstate(all="ignore"):  # NaN and inf follow IEEE 754 on purpose
            _apply(constants, grad, arrays, backend)
    state_fmt = format_of(state.m[0])
    accumulated = (
        variant.bias_correction_m is BiasCorrection.ACCUMULATED,
        variant.bias_correction_v is BiasCorrection.ACCUMULATED,
    )
    return state._replace(
        step=t,
        beta1_power=float(round_fraction(constants.beta1_power, state_fmt))
        if accumulated[0]
        else 1.0,
        beta2_power=float(round_fraction(constants.beta2_power, state_fmt))
        if accumulated[1]
        else 1.0,
    )


# ---------------------------------------------------------------- application


def _general_gradient(K: StepConstants) -> StepConstants:
    """``K`` for a dense float64 gradient (float64 values, or a clipvalue that is not a
    float32): the kernels' exact-gradient branch multiplies gradients by 26-bit
    halves of the betas exactly only when they have at most 27 significant bits
    (measured: with float64 gradients it misrounded m at 184 of 400 near-ties).
    Their general branch is the one that scales gradients (clipping): scaling by
    exactly 1 selects it without changing a value, and its bounds hold for any g."""
    return dataclasses.replace(K, config=dataclasses.replace(K.config, scaled=True))


def _apply(K: StepConstants, grad: Gradient, arrays: dict[str, Any], backend: str) -> None:
    """Update one tensor's arrays in place."""
    param, master = arrays["param"], arrays["master"]
    theta_store = master if master is not None else param
    xp = array_namespace(param)
    simple = (
        grad.dense
        and grad.rows is None
        and grad.g_lo is None  # a decimal clipvalue: the double-double pass reads the low parts
        and master is None
        and grad.g.dtype in (np.float32, np.float64)
        and all(
            a is None or (a.dtype == np.float32 and a.flags.c_contiguous)
            for a in (param, arrays["m"], arrays["v"], arrays["vmax"], arrays["ema"])
        )
    )
    if simple and xp is not np and backend == "auto" and grad.g.dtype == np.float32:
        gpu = cupy_float32_driver(K.config)
        if gpu is not None:  # one fused kernel; the rare uncertain coordinates after it
            flagged, bits = gpu(
                xp.asarray(K.values[:, 0]),
                param.reshape(-1),
                grad.g,
                arrays["m"].reshape(-1),
                arrays["v"].reshape(-1),
                arrays["vmax"].reshape(-1) if arrays["vmax"] is not None else None,
                arrays["ema"].reshape(-1) if arrays["ema"] is not None else None,
            )
            if flagged:
                apply_numpy(K, grad, arrays, theta_store, _set_bits(bits, xp))
            return
    # "auto" compiles only for tensors large enough to repay seconds of JIT compilation
    # (per process and variant configuration); small tensors take the NumPy path
    worth_jit = backend == "numba" or (backend == "auto" and param.size >= JIT_MIN_SIZE)
    on_cpu = xp is np
    driver = numba_float32_driver(K.config) if simple and on_cpu and worth_jit else None
    if backend == "numba" and driver is None:
        raise UnsupportedError(
            "backend='numba' needs numba installed and dense, C-contiguous float32 NumPy "
            "arrays without master weights"
        )
    if driver is not None:
        # One bit per coordinate: the driver writes every word, set where it left a
        # coordinate uncertain (1/32 of the parameter array, not a byte per coordinate).
        bits = np.empty(-(-param.size // BLOCK), dtype=np.uint64)
        one = np.zeros(1, dtype=np.float32)
        flagged = driver(
            tuple(K.values[:, 0].tolist()),  # a tuple: constants in registers, not memory
            param.reshape(-1),
            grad.g,
            arrays["m"].reshape(-1),
            arrays["v"].reshape(-1),
            arrays["vmax"].reshape(-1) if arrays["vmax"] is not None else one,
            arrays["ema"].reshape(-1) if arrays["ema"] is not None else one,
            bits,
        )
        if flagged:
            apply_numpy(K, grad, arrays, theta_store, _set_bits(bits))
        return
    index = grad.rows
    if index is not None:  # lazy: only the touched rows, as flat coordinates
        row = int(np.prod(param.shape[1:]))
        index = (np.asarray(index)[:, None] * row + np.arange(row)[None, :]).reshape(-1)
    apply_numpy(K, grad, arrays, theta_store, index)


def _set_bits(bits: Any, xp: Any = np) -> Any:
    """Flat indices, in order, of the set bits of a bitmask of unsigned words (bit ``j``
    of word ``w`` is coordinate ``w * width + j``)."""
    width = bits.dtype.itemsize * 8
    words = xp.flatnonzero(bits)
    lanes = (bits[words][:, None] >> xp.arange(width, dtype=bits.dtype)[None, :]) & 1
    rows, cols = xp.nonzero(lanes)
    return words[rows] * width + cols


__all__ = [
    "BACKENDS",
    "AdamState",
    "UnsupportedError",
    "format_of",
    "init",
    "step",
    "step_",
]
