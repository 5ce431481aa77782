r"""Production Adam/AMSGrad: every :class:`adamspec.spec.Variant`, correctly rounded, fast.

Functional like optax: state is a small immutable record and

    state = init(params, variant)
    params, state = step(params, grads, state, hyper, variant)     # new arrays
    state = step_(params, grads, state, hyper, variant)            # in place

Each stored value (param, m, v, v_max, EMA, master copy) is the correctly
rounded result of the variant's exact formula (``spec/ADAM.md``) applied to the
stored inputs: the step's scalars are computed exactly once per step
(:mod:`adamspec.impl._constants`), every coordinate is evaluated in float64 with a
rigorous error bound, and the few coordinates whose rounding the bound cannot
certify are recomputed in double-double (:mod:`adamspec.impl._kernels`). Float64
parameters go straight to double-double.

Dense float32 steps run in a numba-compiled parallel kernel when numba is
installed; otherwise (and for other dtypes, master weights and sparse
gradients) in cache-sized NumPy chunks. Dense float32 CuPy arrays run one fused
CuPy kernel generated from the same kernel source (its few uncertain coordinates
after it, like the compiled CPU driver's); other CuPy steps take the NumPy code
path with ``cupy`` as the namespace (:mod:`adamspec.impl._xp`).

This module is long because it is the whole public step around the kernels: state,
gradient preparation (dense, row-sparse, clipped), exact clipping scales, and the choice
and driving of each backend, down to the coordinates the fast pass leaves uncertain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np
from mpmath import mp

from adamspec.impl import _dd, _memory
from adamspec.impl._constants import StepConstants, holder, round_fraction, step_constants
from adamspec.impl._kernels import (
    BLOCK,
    cupy_float32_driver,
    exact_kernel,
    make_fast_kernel,
    numba_float32_driver,
)
from adamspec.impl._xp import array_namespace
from adamspec.spec.axes import (
    AmsGrad,
    BiasCorrection,
    DuplicateIndices,
    SparseSemantics,
    WeightDecay,
)
from adamspec.spec.formats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FloatFormat
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper
from adamspec.spec.variant import Variant

#: Argument order of the fast kernel after the constants.
KERNEL_INPUTS = ("theta", "g", "gsq", "m", "v", "vmax", "ema")
#: Elements per NumPy chunk: the working set of ~20 float64 temporaries stays in L2.
CHUNK = 1 << 14


class UnsupportedError(ValueError):
    """A combination this implementation does not define (the message says which)."""


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


_FORMAT_OF_DTYPE = {
    "float64": FLOAT64,
    "float32": FLOAT32,
    "float16": FLOAT16,
    "bfloat16": BFLOAT16,
}


def format_of(array: Any) -> FloatFormat:
    name = str(array.dtype)
    try:
        return _FORMAT_OF_DTYPE[name]
    except KeyError:
        raise UnsupportedError(
            f"dtype {name} is not supported; allowed: {', '.join(_FORMAT_OF_DTYPE)}"
        ) from None


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
    param_fmt = format_of(tensors[0])
    hold = holder(variant, param_fmt)
    prepared = [
        _prepare_gradient(g, p, variant, hyper, hold)
        for g, p in zip(grad_list, tensors, strict=True)
    ]
    with np.errstate(all="ignore"):  # an infinite gradient's norm is inf, on purpose
        scales = _clip_scales(prepared, hyper, hold)
    p1 = Fraction(state.beta1_power)
    p2 = Fraction(state.beta2_power)
    constants = None
    for k, (p, grad) in enumerate(zip(tensors, prepared, strict=True)):
        constants = step_constants(
            variant, hyper, t, format_of(p), p1, p2, scales[k], has_gsq=grad.gsq is not None
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


# ---------------------------------------------------------------- gradients


class _Gradient(NamedTuple):
    """A gradient ready for the kernels: float64 double-double values per coordinate.

    ``rows`` is None for dense gradients; for lazy sparse updates it lists the
    touched rows and the arrays cover only those rows. ``gsq`` is set when
    squares are summed over duplicate contributions.
    """

    g: Any
    g_lo: Any
    gsq: Any
    gsq_lo: Any
    rows: Any
    dense: bool


def _prepare_gradient(
    grad: Any, param: Any, variant: Variant, hyper: Hyper, hold: Callable[[Fraction], Fraction]
) -> _Gradient:
    xp = array_namespace(param)
    clipvalue = None if hyper.clipvalue is None else float(hold(hyper.clipvalue))
    sign = -1.0 if variant.maximize else 1.0

    def contribution(values: Any) -> Any:
        g = sign * values.astype(np.float64)
        return g if clipvalue is None else xp.clip(g, -clipvalue, clipvalue)

    if not isinstance(grad, SparseRows):
        if grad.shape != param.shape:
            raise UnsupportedError(
                f"gradient shape {grad.shape} does not match parameter {param.shape}"
            )
        format_of(grad)
        # Gradients are read in their own dtype (no float64 copy of a big tensor), which
        # also keeps them short: the kernels' exact products need at most 27 bits.
        if clipvalue is None:
            g = grad if sign > 0 else -grad  # negation is exact in any format
        else:
            g = contribution(grad)  # each value is the gradient's own or +-clipvalue
            if float(np.asarray(clipvalue, dtype=grad.dtype)) == clipvalue:
                g = g.astype(grad.dtype)
        return _Gradient(g.reshape(-1), None, None, None, None, True)
    if grad.num_rows != param.shape[0]:
        raise UnsupportedError(
            f"sparse gradient for {grad.num_rows} rows, parameter has {param.shape[0]}"
        )
    square_then_sum = variant.duplicates is DuplicateIndices.SQUARE_THEN_SUM
    if square_then_sum and variant.weight_decay is WeightDecay.L2 and hyper.weight_decay != 0:
        raise UnsupportedError(
            "L2 weight decay with square_then_sum duplicates on a sparse gradient is not "
            "implemented (no framework combines them)"
        )
    raw = sign * xp.asarray(grad.values).reshape(len(grad.indices), -1).astype(np.float64)
    # clipvalue acts on each contribution when squares are summed, else on the row sums.
    values = contribution(raw) if square_then_sum else raw
    rows, inverse = np.unique(np.asarray(grad.indices), return_inverse=True)
    g_hi, g_lo = _group_sum(values, None, inverse, len(rows), xp)
    if clipvalue is not None and not square_then_sum:
        above = (g_hi > clipvalue) | ((g_hi == clipvalue) & (g_lo > 0))
        below = (g_hi < -clipvalue) | ((g_hi == -clipvalue) & (g_lo < 0))
        g_hi = xp.where(above, clipvalue, xp.where(below, -clipvalue, g_hi))
        g_lo = xp.where(above | below, 0.0, g_lo)
    gsq = gsq_lo = None
    if square_then_sum:
        gsq, gsq_lo = _group_sum(*_dd.two_prod(values, values), inverse, len(rows), xp)
    row_size = values.shape[1]
    if variant.sparse is SparseSemantics.LAZY:
        return _Gradient(g_hi.reshape(-1), g_lo.reshape(-1), _flat(gsq), _flat(gsq_lo), rows, False)

    def scatter(part: Any) -> Any:
        if part is None:
            return None
        full = xp.zeros((param.shape[0], row_size))
        full[rows] = part
        return full.reshape(-1)

    return _Gradient(scatter(g_hi), scatter(g_lo), scatter(gsq), scatter(gsq_lo), None, False)


def _general_gradient(K: StepConstants) -> StepConstants:
    """``K`` for a dense float64 gradient (float64 values, or a clipvalue that is not a
    float32): the kernels' exact-gradient branch multiplies gradients by 26-bit
    halves of the betas exactly only when they have at most 27 significant bits
    (measured: with float64 gradients it misrounded m at 184 of 400 near-ties).
    Their general branch is the one that scales gradients (clipping): scaling by
    exactly 1 selects it without changing a value, and its bounds hold for any g."""
    return dataclasses.replace(K, config=dataclasses.replace(K.config, scaled=True))


def _flat(a: Any) -> Any:
    return None if a is None else a.reshape(-1)


def _group_sum(hi: Any, lo: Any, group: Any, n_groups: int, xp: Any) -> tuple[Any, Any]:
    """Double-double sums of rows ``hi (+ lo)`` by ``group``, one pass per duplicate rank."""
    lo = xp.zeros_like(hi) if lo is None else lo
    acc_hi = xp.zeros((n_groups, hi.shape[1]))
    acc_lo = xp.zeros((n_groups, hi.shape[1]))
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    starts = np.searchsorted(sorted_group, sorted_group, side="left")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order)) - starts
    for r in range(int(rank.max()) + 1 if len(rank) else 0):
        members = np.flatnonzero(rank == r)
        targets = group[members]
        acc_hi[targets], acc_lo[targets] = _dd.add(
            (acc_hi[targets], acc_lo[targets]), (hi[members], lo[members])
        )
    return acc_hi, acc_lo


def _clip_scales(
    prepared: list[_Gradient], hyper: Hyper, hold: Callable[[Fraction], Fraction]
) -> list[Any]:
    """Exact clip scales ``c / max(||g||, c)`` per tensor (clipnorm) or shared (global)."""
    if hyper.clipnorm is None and hyper.global_clipnorm is None:
        return [None] * len(prepared)
    norms = [_square_norm(g) for g in prepared]
    if hyper.clipnorm is not None:
        c = hold(hyper.clipnorm)
        return [_scale(n, c, nan_if_nonfinite=False) for n in norms]
    c = hold(hyper.global_clipnorm)
    total = (sum(n[0] for n in norms), sum(n[1] for n in norms))
    return [_scale(total, c, nan_if_nonfinite=True)] * len(prepared)


def _square_norm(g: _Gradient) -> tuple[Any, Any]:
    """Sum of the squares v receives, as an exact-enough (hi, lo) pair of Python objects."""
    if g.gsq is not None:
        hi, lo = g.gsq, g.gsq_lo
    else:
        value = (
            np.asarray(g.g, dtype=np.float64),  # dense gradients arrive in their own dtype
            np.zeros(g.g.shape) if g.g_lo is None else np.asarray(g.g_lo, dtype=np.float64),
        )
        hi, lo = _dd.mul(value, value)
    hi = np.asarray(hi, dtype=np.float64).ravel()
    lo = np.asarray(lo, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(hi)) and np.all(np.isfinite(lo))):
        return (float(np.sum(hi)), 0.0)
    # Pairwise double-double reduction: relative error ~ log2(n) 2**-104 on these
    # non-negative terms, far below what the rounding of the step can see.
    while hi.size > 1:
        if hi.size % 2:
            hi, lo = np.append(hi, 0.0), np.append(lo, 0.0)
        hi, lo = _dd.add((hi[0::2], lo[0::2]), (hi[1::2], lo[1::2]))
    total = Fraction(float(hi[0])) + Fraction(float(lo[0])) if hi.size else Fraction(0)
    return (total, 0)


def _scale(norm_sq: tuple[Any, Any], c: Fraction, *, nan_if_nonfinite: bool) -> Any:
    total = norm_sq[0] + norm_sq[1]
    if isinstance(total, float):  # non-finite
        if nan_if_nonfinite or total != total:
            return mp.mpf("nan")
        return Fraction(0)
    with mp.workprec(200):
        norm = mp.sqrt(mp.mpf(total.numerator) / total.denominator)
        return mp.mpf(c.numerator) / c.denominator / max(norm, mp.mpf(c.numerator) / c.denominator)


# ---------------------------------------------------------------- application


def _apply(K: StepConstants, grad: _Gradient, arrays: dict[str, Any], backend: str) -> None:
    """Update one tensor's arrays in place."""
    param, master = arrays["param"], arrays["master"]
    theta_store = master if master is not None else param
    xp = array_namespace(param)
    simple = (
        grad.dense
        and grad.rows is None
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
                _apply_numpy(K, grad, arrays, theta_store, _set_bits(bits, xp))
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
            _apply_numpy(K, grad, arrays, theta_store, _set_bits(bits))
        return
    index = grad.rows
    if index is not None:  # lazy: only the touched rows, as flat coordinates
        row = int(np.prod(param.shape[1:]))
        index = (np.asarray(index)[:, None] * row + np.arange(row)[None, :]).reshape(-1)
    _apply_numpy(K, grad, arrays, theta_store, index)


def _set_bits(bits: Any, xp: Any = np) -> Any:
    """Flat indices, in order, of the set bits of a bitmask of unsigned words (bit ``j``
    of word ``w`` is coordinate ``w * width + j``)."""
    width = bits.dtype.itemsize * 8
    words = xp.flatnonzero(bits)
    lanes = (bits[words][:, None] >> xp.arange(width, dtype=bits.dtype)[None, :]) & 1
    rows, cols = xp.nonzero(lanes)
    return words[rows] * width + cols


#: Where each output's ``(value, low part, bound)`` starts in the fast kernel's result.
_POSITION = {"theta": 0, "m": 3, "v": 6, "vmax": 9, "ema": 12}

#: ``(array stored to, kernel output, its format)`` of every array a step writes.
_Outputs = list[tuple[str, str, FloatFormat]]


def _apply_numpy(
    K: StepConstants, grad: _Gradient, arrays: dict[str, Any], theta_store: Any, index: Any
) -> None:
    """Chunked fast pass with certification, double-double for the rest.

    ``index`` selects flat coordinates of the tensor (None: all); gradient
    arrays are indexed by position in ``index`` for lazy updates (they cover
    only the touched rows) and by coordinate otherwise.
    """
    xp = array_namespace(arrays["param"])
    kernel = make_fast_kernel(K.config)
    k_hi = K.values[:, 0]
    flat = {name: (a.reshape(-1) if a is not None else None) for name, a in arrays.items()}
    theta_flat = theta_store.reshape(-1)
    n = theta_flat.size if index is None else len(index)
    lazy = grad.rows is not None
    outputs = _outputs(flat, K.config)
    for start in range(0, n, CHUNK):
        pos = slice(start, min(start + CHUNK, n))
        where = pos if index is None else index[pos]
        gpos = pos if (lazy or index is None) else where
        x = _chunk_inputs(flat, theta_flat, grad, where, gpos, xp)
        fast = kernel(k_hi, *(x.get(name, 0.0) for name in KERNEL_INPUTS))
        exact_needed = not grad.dense or "g_lo" in x
        results, certain = _certified(fast, outputs, x["theta"].shape[0], exact_needed, xp)
        redo = xp.flatnonzero(~certain)
        if redo.size:
            _redo_exactly(K, {name: a[redo] for name, a in x.items()}, redo, outputs, results, xp)
        for store, _key, _fmt in outputs:
            target = flat[store]
            target[where] = results[store].astype(target.dtype)


def _outputs(flat: dict[str, Any], cfg: Any) -> _Outputs:
    """What the step writes: param, m, v, and v_max, the EMA and master weights if kept."""
    stores = [("param", "theta"), ("m", "m"), ("v", "v")]
    if flat["vmax"] is not None:
        stores.append(("vmax", "vmax"))
    if flat["ema"] is not None and cfg.use_ema:
        stores.append(("ema", "ema"))
    if flat["master"] is not None:
        stores.append(("master", "theta"))
    return [(store, key, format_of(flat[store])) for store, key in stores]


def _chunk_inputs(
    flat: dict[str, Any], theta_flat: Any, grad: _Gradient, where: Any, gpos: Any, xp: Any
) -> dict[str, Any]:
    """One chunk's kernel inputs as float64 arrays (zeros for an absent v_max or EMA)."""
    x = {
        "theta": theta_flat[where].astype(np.float64),
        "g": grad.g[gpos].astype(np.float64),
        "m": flat["m"][where].astype(np.float64),
        "v": flat["v"][where].astype(np.float64),
    }
    size = x["theta"].shape[0]
    x["vmax"] = (
        flat["vmax"][where].astype(np.float64) if flat["vmax"] is not None else xp.zeros(size)
    )
    x["ema"] = flat["ema"][where].astype(np.float64) if flat["ema"] is not None else xp.zeros(size)
    for name in ("g_lo", "gsq", "gsq_lo"):
        part = getattr(grad, name)
        if part is not None:
            x[name] = part[gpos]
    return x


def _certified(
    fast: tuple, outputs: _Outputs, size: int, exact_needed: bool, xp: Any
) -> tuple[dict[str, Any], Any]:
    """The fast pass rounded to each output's format, and where every output's rounding is
    certain (nowhere for float64 outputs or inexact gradients: double-double decides)."""
    results = {}
    certain = xp.ones(size, dtype=bool)
    for store, key, fmt in outputs:
        h, lo, e = fast[_POSITION[key] : _POSITION[key] + 3]
        h, lo, e = (xp.broadcast_to(xp.asarray(a, dtype=np.float64), (size,)) for a in (h, lo, e))
        results[store] = _dd.round_dd(h, lo, fmt, xp)
        if fmt == FLOAT64 or exact_needed:
            certain &= False
        else:
            below = _dd.round_dd(*_dd.two_sum(h, lo - e), fmt, xp)
            above = _dd.round_dd(*_dd.two_sum(h, lo + e), fmt, xp)
            certain &= below == above
    return results, certain


def _redo_exactly(
    K: StepConstants, sub: dict[str, Any], redo: Any, outputs: _Outputs, results: dict, xp: Any
) -> None:
    """The uncertain coordinates ``redo`` (inputs ``sub``) in double-double, into ``results``."""
    cfg = K.config
    exact = exact_kernel(cfg, K, sub, xp)
    # Where double-double meets NaN or infinity (inf - inf in an error term), the
    # plain IEEE evaluation of the same formula gives the special the oracle does.
    plain = None
    for store, key, fmt in outputs:
        hi, lo = exact[key]
        rounded = _dd.round_dd(hi, lo, fmt, xp)
        special = ~(xp.isfinite(hi) & xp.isfinite(lo))
        if bool(special.any()):
            if plain is None:
                plain = make_fast_kernel(cfg, precise=False)(
                    K.values[:, 0], *(sub.get(name, 0.0) for name in KERNEL_INPUTS)
                )
            fallback = _dd.round_to_format(
                xp.broadcast_to(plain[_POSITION[key]], hi.shape) + 0.0, fmt, xp
            )
            rounded = xp.where(special, fallback, rounded)
        results[store][redo] = rounded
    _recompute_extremes(cfg, K, sub, redo, outputs, results)


#: Magnitudes beyond which float64 error-free transformations may underflow or overflow
#: (products of such inputs with the step's constants leave the normal range).
_EXTREME_LOW, _EXTREME_HIGH = 2.0**-440, 2.0**440


def _recompute_extremes(
    cfg: Any, K: StepConstants, sub: dict[str, Any], redo: Any, outputs: list, results: dict
) -> None:
    """float64 coordinates with extreme inputs: the same formula in mpmath (no exponent limits).

    Double-double arithmetic is exact only while products stay normal doubles; a
    float64 gradient of 5e-324 breaks it (measured: a subnormal parameter update came
    out as 0, 24,419 ULP off). Such coordinates are rare, so they pay for mpmath.
    """
    if not any(fmt == FLOAT64 for _store, _key, fmt in outputs):
        return
    magnitude = [np.abs(np.asarray(sub[name], dtype=np.float64)) for name in sub]
    extreme = np.zeros(len(redo), dtype=bool)
    for a in magnitude:
        extreme |= (a != 0) & np.isfinite(a) & ((a < _EXTREME_LOW) | (a > _EXTREME_HIGH))
    picked = np.flatnonzero(extreme)
    if not picked.size:
        return
    from adamspec.impl import _mp_pairs

    with mp.workprec(_mp_pairs.PRECISION):
        values = {name: _mp_pairs.lift(np.asarray(a)[picked]) for name, a in sub.items()}
        exact = exact_kernel(cfg, K, values, np, arithmetic=_mp_pairs)
        for store, key, fmt in outputs:
            if fmt == FLOAT64:
                results[store][redo[picked]] = _mp_pairs.to_float64(exact[key][0])


__all__ = [
    "BACKENDS",
    "CHUNK",
    "AdamState",
    "UnsupportedError",
    "format_of",
    "init",
    "step",
    "step_",
]
