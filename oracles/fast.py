r"""The fast certified oracle: the mpmath oracle's answers, bit for bit, thousands of times faster.

:func:`step` and :func:`trajectory` take exactly the arguments of
:func:`adamspec.oracles.adam.step` / :func:`adamspec.oracles.adam.trajectory` and return the same
:class:`~adamspec.oracles.adam.StepResult`, whose ``rounded`` values are identical to
the mpmath oracle's. Adam is elementwise, so two tiers suffice:

**Tier 1** evaluates the variant's formula vectorized in NumPy with a rigorous
bound on its own error and answers where the bound proves the rounding:

* lock-steps (one step from given floats) whose inputs and targets are float32,
  float16 or bfloat16 run in binary64 (:mod:`adamspec.oracles._fast_tier1`; every
  nonzero constant of the step in ``[2**-100, 2**100]``); moments near a
  rounding boundary are then decided exactly by the sign of an exact sum of
  products (ties included, e.g. ``0.9 m + 0.1 g`` on a float32 midpoint);
* float64 targets or inputs, other constants, and the state of free-running
  trajectories run in double-double (:mod:`adamspec.oracles._fast_dd`); a trajectory
  carries ``theta, m, v, v_max, ema`` as double-doubles with their running
  bounds (about ``2**-100`` relative per step), faithful over 10^5 steps
  (``tests/test_fast_oracle.py`` checks 100,000 steps against an independent
  mpmath trajectory). Exact signs decide moments only in lock-steps.

Speed (``harness/bench_oracle.py``, this 2-core machine, one thread): about 30
million verified element-steps/s for float32 torch.Adam and paper.algorithm1
lock-steps (the mpmath oracle: about 10,000/s), about 1.5 million/s for
float64 (double-double), about 1,000 steps/s of a free-running trajectory of a
small tensor (per-step scalars in interval arithmetic dominate). Tier 1 can
spread chunks over threads (``ADAMSPEC_FAST_THREADS``), measured no faster
here. NumPy only: CuPy arrays are not supported (unmeasured on a GPU).

Every step's scalars come from the exact held hyperparameters
(:func:`adamspec.oracles.hyperparams.resolve`, so every ``HyperPrecision`` member is
honoured) through :mod:`adamspec.oracles._fast_consts`; clipping norms are summed exactly
(:func:`exact_sum_of_squares`) before the elementwise part.

**Tier 2** is the mpmath oracle itself (:mod:`adamspec.oracles.adam`), called on just the
coordinates tier 1 could not certify (near a rounding boundary beyond the
bound, non-finite inputs, negative second moments, magnitudes outside the
tiers' ranges...), with the whole tensor's clipping norm handed over
(``grad_sq_norms``). In a free-running trajectory a coordinate that falls back
at step ``k`` is recomputed exactly over steps ``1..k`` and its double-double
state reseeded from the exact state (a coordinate whose exact state is NaN or
infinite is recomputed exactly to the end).

**Row-sparse gradients** (:class:`adamspec.spec.SparseRows`: ``torch.SparseAdam`` and the
``sparse``/``duplicates`` axes) of a lock-step run in the tiers as the dense gradient of
each coordinate's contributions (:mod:`adamspec.oracles._fast_sparse`: lazy rows left
as they are, duplicates summed first when that sum is exact in binary64); duplicates
squared first, clipped one by one or not summing exactly go to mpmath row by row.

Routed to mpmath whole (and counted as fallback): row-sparse gradients of a free-running
trajectory, or clipped by a norm, ``digits=`` (exact decimals are asked for), ``grad_sq_norms=``,
degenerate steps (a beta held as 1 so that ``1 - beta^t = 0``, as Keras's
0.999 in bfloat16; RAdam's ``rho_t`` undecided; any nonzero constant or clipping
scale outside ``[2**-200, 2**200]``), clipping by norm with a non-finite
gradient, and inputs the mpmath oracle rejects (it raises the same errors).
Every other axis member (RAdam, EMA, Nesterov, AMSGrad, clipping, decay...) runs
in the tiers.

**What the result carries.** ``rounded`` is the mpmath oracle's, exactly.
``exact`` is a lazy mapping: reading it runs the mpmath oracle on the same call
(cached), so it holds the mpmath oracle's exact values (for a free-running
trajectory, its whole exact trajectory). ``decimals`` is empty unless
``digits`` was given (then the call went to mpmath). ``precision`` is the
largest mpmath working precision used by a fallback, 0 when none was needed.

**Fallback rate.** Module-level :data:`STATS` (a :class:`FastStats`) counts every
call's element-steps and how each was decided; ``with counting() as s:``
collects the same counts for a block. ``s.fallback_rate`` is the fraction of
element-steps the mpmath oracle computed.

**Test hook.** ``_inject_error`` (module level, default None) is called as
``hook(component, value, bound) -> (value, bound)`` on every tier-1 output
before certification; tests use it to add a deliberate error beyond the bound
and check that it is caught.

This module is long because it is the one place that decides how every element-step is
answered: parsing a call, exact clipping norms, the lock-step and free-running drivers and
their fallbacks to mpmath. The arithmetic lives in ``_fast_tier1``, ``_fast_dd``,
``_fast_eft`` and ``_fast_consts``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np
from mpmath import iv, mp

from adamspec.oracles import adam as mpmath_oracle
from adamspec.oracles._fast_consts import (
    Const,
    Power,
    StepConsts,
    clip_scale,
    const_iv,
    const_q,
    fraction_of,
    iv_precision,
    mpf_to_q,
    power_from,
    power_of,
    step_consts,
)
from adamspec.oracles._fast_dd import DDPlan, DDState
from adamspec.oracles._fast_eft import DDV, round_to, two_prod
from adamspec.oracles._fast_sparse import SparseStep, densify, restrict, rows_of
from adamspec.oracles._fast_tier1 import Inputs, Outcome, Plan, applies
from adamspec.oracles.adam import OracleState, StepResult
from adamspec.oracles.exact import Ival, Rat, Special, Surd
from adamspec.oracles.hyperparams import HyperMode, resolve
from adamspec.oracles.rounding import (
    format_of_dtype,
    numpy_dtype,
    round_exact,
    rounding_is_certain,
)
from adamspec.oracles.ziv import DEFAULT_PRECISION
from adamspec.spec.axes import BiasCorrection
from adamspec.spec.formats import BFLOAT16, FLOAT16, FLOAT32, FloatFormat
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper
from adamspec.spec.variant import Variant

#: Formats tier 1 evaluates in binary64 (at most 24 significant bits).
NARROW = (FLOAT32, FLOAT16, BFLOAT16)
_NARROW_DTYPES = {np.dtype(numpy_dtype(f)) for f in NARROW}

#: Test hook, see the module docstring.
_inject_error: Callable[[str, Any, Any], tuple[Any, Any]] | None = None


# ---------------------------------------------------------------- statistics


@dataclass
class FastStats:
    """How element-steps were decided (one element-step: one coordinate of one step).

    ``tier1``: certified by the bound; ``exact_sign``: a moment decided by an exact
    sign; ``fallback``: coordinates the mpmath oracle computed; ``whole``:
    element-steps of calls routed to mpmath whole (``reasons`` says why).
    """

    element_steps: int = 0
    tier1: int = 0
    exact_sign: int = 0
    fallback: int = 0
    whole: int = 0
    calls: int = 0
    reasons: Counter = field(default_factory=Counter)

    @property
    def fallback_rate(self) -> float:
        """Fraction of element-steps computed by the mpmath oracle."""
        if not self.element_steps:
            return 0.0
        return (self.fallback + self.whole) / self.element_steps

    def add(self, other: FastStats) -> None:
        self.element_steps += other.element_steps
        self.tier1 += other.tier1
        self.exact_sign += other.exact_sign
        self.fallback += other.fallback
        self.whole += other.whole
        self.calls += other.calls
        self.reasons.update(other.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "element_steps": self.element_steps,
            "tier1": self.tier1,
            "exact_sign": self.exact_sign,
            "fallback": self.fallback,
            "whole": self.whole,
            "calls": self.calls,
            "fallback_rate": self.fallback_rate,
            "reasons": dict(self.reasons),
        }


#: Counts of every call since import (or :func:`reset_stats`).
STATS = FastStats()
_collectors: list[FastStats] = []


def reset_stats() -> None:
    """Zero :data:`STATS`."""
    global STATS
    STATS = FastStats()


@contextmanager
def counting() -> Iterator[FastStats]:
    """``with counting() as s:`` -- the counts of the calls made inside the block."""
    s = FastStats()
    _collectors.append(s)
    try:
        yield s
    finally:
        # by identity: two collectors that counted the same are equal dataclasses, and
        # list.remove would take the outer one of two nested blocks
        _collectors[:] = [c for c in _collectors if c is not s]


def _record(s: FastStats) -> None:
    STATS.add(s)
    for c in _collectors:
        c.add(s)


def count_elsewhere(s: FastStats) -> None:
    """Count ``s`` as if its calls were made here (calls another process made on this one's
    behalf: a Dask worker verifying a chunk), in :data:`STATS` and every open
    :func:`counting` block."""
    _record(s)


# ---------------------------------------------------------------- lazy exact values


class _Exact:
    """The mpmath oracle's results for one call, computed on first use."""

    def __init__(self, compute: Callable[[], list[StepResult]]) -> None:
        self._compute = compute
        self._results: list[StepResult] | None = None

    def results(self) -> list[StepResult]:
        if self._results is None:
            self._results = self._compute()
        return self._results


class LazyExact(Mapping):
    """``StepResult.exact`` of the fast oracle: the mpmath oracle's exact values, computed
    (for the whole call, once) when first read."""

    def __init__(self, source: _Exact, index: int, names: tuple[str, ...]) -> None:
        self._source = source
        self._index = index
        self._names = names

    def __getitem__(self, name: str) -> list[Any]:
        return self._source.results()[self._index].exact[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        state = "computed" if self._source._results is not None else "not computed"
        return f"LazyExact({', '.join(self._names)}; {state})"


# ---------------------------------------------------------------- public API


def step(
    variant: Variant,
    hyper: Hyper,
    params: Any,
    grads: Any,
    state: OracleState | None = None,
    **options: Any,
) -> StepResult:
    """One exact step, as :func:`adamspec.oracles.adam.step` (same arguments, same result)."""
    return trajectory(variant, hyper, params, [grads], state, **options)[0]


def trajectory(
    variant: Variant,
    hyper: Hyper,
    params: Any,
    grads: Sequence[Any],
    state: OracleState | None = None,
    *,
    dtype: Any = None,
    state_dtype: Any = None,
    hyper_mode: HyperMode = "held",
    precision: int = DEFAULT_PRECISION,
    digits: int | None = None,
    grad_sq_norms: Sequence[Sequence[Any]] | None = None,
    hyper_dtype: Any = None,
    master_dtype: Any = None,
) -> list[StepResult]:
    """Free-running exact steps, as :func:`adamspec.oracles.adam.trajectory` (same arguments and
    results; see the module docstring for how each element-step is decided)."""
    if master_dtype is not None:
        roles = mpmath_oracle.Roles.read(
            _tensors(params), dtype, state_dtype, master_dtype, hyper_dtype
        )
        return mpmath_oracle.master_trajectory(
            trajectory, _master_to_param, variant, hyper, params, grads, state, roles,
            hyper_mode=hyper_mode, precision=precision, digits=digits,
            grad_sq_norms=grad_sq_norms,
        )  # fmt: skip
    options = {
        "dtype": dtype,
        "state_dtype": state_dtype,
        "hyper_mode": hyper_mode,
        "precision": precision,
        "hyper_dtype": hyper_dtype,
    }

    def exact_call() -> list[StepResult]:
        return mpmath_oracle.trajectory(
            variant, hyper, params, grads, state, digits=digits, grad_sq_norms=grad_sq_norms,
            **options,
        )  # fmt: skip

    call = _Call.parse(variant, hyper, params, grads, state, options)
    exact_only = digits is not None or grad_sq_norms is not None
    if isinstance(call, str) or exact_only:
        reason = call if isinstance(call, str) else "digits/grad_sq_norms requested"
        results = exact_call()  # raises the mpmath oracle's own errors for bad input
        size = sum(int(np.size(a)) for a in _tensors(params))
        _record(FastStats(size * len(results), whole=size * len(results), calls=1,
                          reasons=Counter({reason: 1})))  # fmt: skip
        return results
    source = _Exact(
        lambda: mpmath_oracle.trajectory(variant, hyper, params, grads, state, **options)
    )
    stats = FastStats(calls=1)
    try:
        out = (_lockstep if call.steps == 1 else _free_running)(call, source, stats)
    except _Undecided as exc:
        stats.reasons[str(exc)] += 1
        out = None
    if out is None:  # a degenerate step: the mpmath oracle answers the whole call
        results = exact_call()
        stats.whole += call.size * call.steps
        stats.element_steps += call.size * call.steps
        _record(stats)
        return results
    stats.element_steps += call.size * call.steps
    _record(stats)
    return out


def _master_to_param(values: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Master values correctly rounded to the param's format (vectorized)."""
    return round_to(np.asarray(values, np.float64), fmt).astype(numpy_dtype(fmt))


# ---------------------------------------------------------------- parsing a call


def _tensors(params: Any) -> list[np.ndarray]:
    arrays, _ = mpmath_oracle.as_tensors(params)
    return arrays


@dataclass
class _Call:
    variant: Variant
    hyper: Hyper
    hp: Any
    arrays: list[np.ndarray]
    single: bool
    grads: list[list[np.ndarray]]
    state: OracleState
    fmt: FloatFormat
    state_fmt: FloatFormat
    options: dict[str, Any]
    components: tuple[str, ...]
    m: list[np.ndarray | None]
    v: list[np.ndarray | None]
    v_max: list[np.ndarray | None]
    ema: list[np.ndarray | None]
    beta1_power: Fraction | None
    beta2_power: Fraction | None
    #: per tensor, its row-sparse gradient as the tiers take it (None: dense); only in a
    #: lock-step (:mod:`adamspec.oracles._fast_sparse`)
    sparse: list[SparseStep | None] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.grads)

    @property
    def size(self) -> int:
        return sum(a.size for a in self.arrays)

    @staticmethod
    def parse(
        variant: Variant,
        hyper: Hyper,
        params: Any,
        grads: Sequence[Any],
        state: OracleState | None,
        options: dict[str, Any],
    ) -> _Call | str:
        """The call, or why the mpmath oracle must take it whole (it also validates)."""
        try:
            arrays, single = mpmath_oracle.as_tensors(params)
            dtype, state_dtype = options["dtype"], options["state_dtype"]
            fmt = mpmath_oracle.target_format(dtype if dtype is not None else arrays[0].dtype)
            state_fmt = mpmath_oracle.target_format(state_dtype) if state_dtype is not None else fmt
            hyper_dtype = options["hyper_dtype"]
            hyper_fmt = mpmath_oracle.target_format(hyper_dtype) if hyper_dtype is not None else fmt
            hp = resolve(hyper, variant, hyper_fmt, options["hyper_mode"])
        except Exception:
            return "input the mpmath oracle validates"
        if not grads:
            return "no steps"
        state = state or OracleState()
        if not isinstance(state.step, int) or isinstance(state.step, bool) or state.step < 0:
            return "invalid state step"
        per_step = []
        sparse: list[SparseStep | None] = [None] * len(arrays)
        for gs in grads:
            gs = [gs] if single else list(gs)
            if len(gs) != len(arrays):
                return "gradient count mismatch"
            if any(isinstance(g, SparseRows) for g in gs):
                if len(grads) > 1:
                    return "row-sparse gradients in a trajectory"
                for k, g in enumerate(gs):
                    if isinstance(g, SparseRows):
                        found = densify(g, arrays[k].shape, variant, hp)
                        if isinstance(found, str):
                            return found
                        sparse[k] = found
                        gs[k] = found.dense.reshape(arrays[k].shape)
            gs = [np.asarray(g) for g in gs]
            if any(g.shape != a.shape for g, a in zip(gs, arrays, strict=True)):
                return "gradient shape mismatch"
            if any(not _float_dtype(g) for g in gs):
                return "non-float gradient dtype"
            per_step.append(gs)
        if any(not _float_dtype(a) for a in arrays):
            return "non-float parameter dtype"

        def component(name: str) -> list[np.ndarray | None] | str:
            given = getattr(state, name)
            if given is None:
                return [None] * len(arrays)
            tensors = [given] if single else list(given)
            if len(tensors) != len(arrays):
                return f"state {name} tensor count mismatch"
            out = []
            for t, a in zip(tensors, arrays, strict=True):
                t = np.asarray(t)
                if t.shape != a.shape or not _float_dtype(t):
                    return f"state {name} shape or dtype"
                out.append(t)
            return out

        comps = {n: component(n) for n in ("m", "v", "v_max", "ema")}
        for value in comps.values():
            if isinstance(value, str):
                return value
        powers = []
        for given in (state.beta1_power, state.beta2_power):
            if given is None:
                powers.append(None)
                continue
            try:
                f = float(np.asarray(given)[()])
            except (TypeError, ValueError):
                return "beta power not a float"
            if not math.isfinite(f):
                return "non-finite beta power"
            powers.append(Fraction(f))
        names = mpmath_oracle.component_names(variant, hp)
        return _Call(
            variant, hyper, hp, arrays, single, per_step, state, fmt, state_fmt, options,
            names, comps["m"], comps["v"], comps["v_max"], comps["ema"], powers[0], powers[1],
            sparse,
        )  # fmt: skip


def _float_dtype(a: np.ndarray) -> bool:
    try:
        format_of_dtype(a.dtype)
    except (ValueError, TypeError):
        return False
    return True


def _powers(call: _Call, t: int) -> tuple[Power, Power]:
    """This step's beta powers: ``beta^t``, or the accumulated ``P_{t-1} beta``."""
    hp, v = call.hp, call.variant
    out = []
    for beta_q, given, axis in (
        (hp.beta1, call.beta1_power, v.bias_correction_m),
        (hp.beta2, call.beta2_power, v.bias_correction_v),
    ):
        beta = fraction_of(beta_q)
        if axis is BiasCorrection.ACCUMULATED and given is not None:
            out.append(power_from(given, beta))
        else:
            out.append(power_of(beta, t))
    return out[0], out[1]


# ---------------------------------------------------------------- clipping norms


def exact_sum_of_squares(values: np.ndarray) -> Fraction:
    """The exact sum of the squares of finite floats (float64 or narrower).

    Each square is split into doubles without error (exact as one double for formats of
    at most 26 bits, :func:`two_prod` otherwise), every double into an integer
    significand and an exponent, and the significands are summed per exponent in integer
    arithmetic: no rounding anywhere. Magnitudes beyond ``2**+-450`` are squared in
    Python integers instead.
    """
    x = np.asarray(values)
    narrow = (x.dtype.itemsize <= 4 and x.dtype.kind == "f") or x.dtype == np.dtype(
        ml_dtypes.bfloat16
    )
    x = np.asarray(x, dtype=np.float64).ravel()
    acc = _ExactAccumulator()
    total = Fraction(0)
    block = 1 << 16
    for start in range(0, x.size, block):
        c = x[start : start + block]
        if narrow:
            acc.add(c * c)
            continue
        a = np.abs(c)
        odd = (a > 2.0**450) | ((a < 2.0**-450) & (a != 0))
        for f in c[odd]:
            total += Fraction(float(f)) ** 2
        c = c[~odd]
        p, e = two_prod(c, c)
        acc.add(p)
        acc.add(e)
    return total + acc.value()


class _ExactAccumulator:
    """An exact sum of finite doubles: integer significands bucketed by exponent."""

    #: float64 bucket sums of < 2**27 parts stay exact below 2**26 additions.
    FLUSH = 1 << 25

    def __init__(self) -> None:
        self.total = 0  # an integer, scaled by 2**BASE
        self.high = np.zeros(2200)
        self.low = np.zeros(2200)
        self.pending = 0

    BASE = -1200

    def add(self, d: np.ndarray) -> None:
        d = d[d != 0]
        if d.size == 0:
            return
        if self.pending + d.size > self.FLUSH:
            self._flush()
        mant, ex = np.frexp(d)
        ints = np.ldexp(mant, 53).astype(np.int64)  # d = ints * 2**(ex - 53), |ints| < 2**53
        bucket = ex.astype(np.int64) - 53 - self.BASE
        high = ints >> 26  # floor division: ints = high * 2**26 + low exactly
        low = ints - (high << 26)
        self.high += np.bincount(bucket, weights=high, minlength=self.high.size)
        self.low += np.bincount(bucket, weights=low, minlength=self.low.size)
        self.pending += d.size

    def _flush(self) -> None:
        for k in np.flatnonzero((self.high != 0) | (self.low != 0)):
            self.total += ((int(self.high[k]) << 26) + int(self.low[k])) << int(k)
        self.high[:] = 0
        self.low[:] = 0
        self.pending = 0

    def value(self) -> Fraction:
        self._flush()
        return Fraction(self.total) * Fraction(2) ** self.BASE


def _clip_info(call: _Call, gs: list[np.ndarray]) -> tuple[list[Const | None], list[Any]] | str:
    """Per tensor: the clipping scale (None without clipnorm) and the squared norm to hand
    to the mpmath oracle; or why the step must go to mpmath whole."""
    hp = call.hp
    n = len(gs)
    if hp.clipnorm is None and hp.global_clipnorm is None:
        return [None] * n, [None] * n
    if any(not np.all(np.isfinite(np.asarray(g, dtype=np.float64))) for g in gs):
        return "clipping by norm with a non-finite gradient"
    sums = [exact_sum_of_squares(g) for g in gs]
    if hp.clipnorm is not None:
        c = fraction_of(hp.clipnorm)
        scales, norms = [clip_scale(s, c) for s in sums], sums
    else:
        c = fraction_of(hp.global_clipnorm)
        total = sum(sums, Fraction(0))
        scales, norms = [clip_scale(total, c)] * n, [total] * n
    if not all(s.in_range for s in scales):
        return "clipping scale outside [2^-200, 2^200]"
    return scales, norms


# ---------------------------------------------------------------- lock-step


def _narrow(call: _Call) -> bool:
    if call.fmt not in NARROW or call.state_fmt not in NARROW:
        return False
    if any(s is not None and not s.narrow for s in call.sparse):
        return False
    dense = [g for g, s in zip(call.grads[0], call.sparse or [None] * len(call.arrays),
                               strict=True) if s is None]  # fmt: skip
    arrays = [*call.arrays, *dense]
    for comp in (call.m, call.v, call.v_max, call.ema):
        arrays += [a for a in comp if a is not None]
    return all(np.dtype(a.dtype) in _NARROW_DTYPES for a in arrays)


def _zeros_like(comp: np.ndarray | None, a: np.ndarray) -> np.ndarray:
    return np.zeros(a.size) if comp is None else comp.ravel()


#: Step constants of recent lock-steps (the harness steps many implementations from the
#: same step with the same hyperparameters), keyed by everything they depend on.
_CONSTS: dict[tuple, StepConsts] = {}


def _lockstep_consts(call: _Call, t: int) -> StepConsts:
    hp = call.hp
    key = (
        call.variant, t, hp.lr_at(t), hp.beta1, hp.beta2, hp.moment_beta1, hp.moment_beta2,
        hp.one_minus_beta1, hp.one_minus_beta2, hp.eps, hp.eps_root, hp.weight_decay,
        hp.clipvalue, hp.ema_momentum, call.beta1_power, call.beta2_power,
    )  # fmt: skip
    found = _CONSTS.get(key)
    if found is None:
        if len(_CONSTS) > 256:
            _CONSTS.clear()
        p1, p2 = _powers(call, t)
        found = _CONSTS[key] = step_consts(call.variant, hp, t, p1, p2)
    return found


def _lockstep(call: _Call, source: _Exact, stats: FastStats) -> list[StepResult] | None:
    t = call.state.step + 1
    consts = _lockstep_consts(call, t)
    if consts.fallback is not None:
        stats.reasons[consts.fallback] += 1
        return None
    gs = call.grads[0]
    clip = _clip_info(call, gs)
    if isinstance(clip, str):
        stats.reasons[clip] += 1
        return None
    scales, norms = clip
    narrow = _narrow(call) and applies(consts, scales)
    hp = call.hp
    overwrite = _overwrites(hp, t)
    outcomes = []
    sparse = call.sparse or [None] * len(call.arrays)
    for k, a in enumerate(call.arrays):
        cls = Plan if narrow else DDPlan
        plan = cls(call.variant, consts, call.fmt, call.state_fmt, hp.use_ema, overwrite, scales[k])
        if sparse[k] is not None and sparse[k].wide and isinstance(plan, Plan):
            plan.widen_gradient()  # a sum of contributions: up to 53 bits, g^2 rounded
        own = sparse[k] if sparse[k] is not None and isinstance(plan, Plan) else None
        x = Inputs(
            a.ravel(),
            gs[k].ravel(),
            _zeros_like(call.m[k], a),
            _zeros_like(call.v[k], a),
            _zeros_like(call.v_max[k], a),
            _zeros_like(call.ema[k], a) if hp.use_ema else None,
            None if own is None else own.gsq,
            None if own is None else own.gsq_err,
            None if own is None else own.own_square,
        )
        outcomes.append(plan.run(x, a.size, _inject_error))
    precision = 0
    for k, (a, outcome) in enumerate(zip(call.arrays, outcomes, strict=True)):
        if sparse[k] is not None:
            _sparse_outcome(call, k, sparse[k], outcome)
        idx = outcome.fallback
        if sparse[k] is not None and idx.size:  # mpmath takes whole rows
            width = sparse[k].width
            idx = (rows_of(idx, width)[:, None] * width + np.arange(width)).ravel()
        stats.exact_sign += outcome.resolved_exactly
        stats.fallback += int(idx.size)
        stats.tier1 += a.size - int(idx.size) - outcome.resolved_exactly
        if idx.size:
            fallback = _fallback_rows if sparse[k] is not None else _fallback_lockstep
            precision = max(precision, fallback(call, k, idx, norms[k], outcome))
    rounded = _assemble(call, [_outcome_values(o) for o in outcomes], consts)
    return [
        StepResult(
            call.state.step + 1,
            LazyExact(source, 0, call.components),
            rounded,
            {},
            precision,
            call.components,
        )
    ]


def _outcome_values(o: Outcome) -> dict[str, np.ndarray]:
    out = {"param": o.param, "m": o.m, "v": o.v, "v_max": o.vmax}
    if o.ema is not None:
        out["ema"] = o.ema
    return out


def _subset_state(call: _Call, k: int, idx: np.ndarray, step: int) -> OracleState:
    def pick(comp: list[np.ndarray | None]) -> np.ndarray | None:
        return None if comp[k] is None else comp[k].ravel()[idx]

    return OracleState(
        m=pick(call.m),
        v=pick(call.v),
        v_max=pick(call.v_max),
        ema=pick(call.ema),
        step=step,
        beta1_power=call.state.beta1_power,
        beta2_power=call.state.beta2_power,
    )


def _fallback_lockstep(call: _Call, k: int, idx: np.ndarray, norm: Any, o: Outcome) -> int:
    """The mpmath oracle on the coordinates ``idx`` of tensor ``k``; fills ``o`` in place."""
    res = mpmath_oracle.trajectory(
        call.variant,
        call.hyper,
        call.arrays[k].ravel()[idx],
        [call.grads[0][k].ravel()[idx]],
        _subset_state(call, k, idx, call.state.step),
        grad_sq_norms=None if norm is None else [[norm]],
        **call.options,
    )[0]
    for name, target in _outcome_values(o).items():
        target[idx] = res.rounded[name][0]
    return res.precision


def _sparse_outcome(call: _Call, k: int, step: SparseStep, o: Outcome) -> None:
    """A row-sparse tensor's tier answers completed: under lazy semantics an untouched
    coordinate keeps its values (rounded to the targets, as the mpmath oracle rounds them,
    and whatever the tiers computed for it), and the coordinates the tiers must leave to
    mpmath (:mod:`adamspec.oracles._fast_sparse`) join the fallback."""
    fallback = np.union1d(o.fallback, np.flatnonzero(step.leave))
    if step.lazy:
        kept = ~step.touched
        a = call.arrays[k]
        o.param[kept] = round_to(a.ravel()[kept].astype(np.float64), call.fmt)
        for name, target in (("m", o.m), ("v", o.v), ("v_max", o.vmax)):
            given = getattr(call, name)[k]
            held = np.zeros(a.size) if given is None else given.ravel().astype(np.float64)
            target[kept] = round_to(held[kept], call.state_fmt)
        fallback = fallback[step.touched[fallback]]
    o.fallback = fallback.astype(np.intp)


def _fallback_rows(call: _Call, k: int, idx: np.ndarray, norm: Any, o: Outcome) -> int:
    """The mpmath oracle on the rows of a row-sparse tensor holding ``idx`` (every
    coordinate of each, flat); fills ``o`` in place."""
    step = call.sparse[k]
    assert step is not None
    rows = rows_of(idx, step.width)

    def take(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a.reshape(a.shape[0], -1)[rows].reshape(-1, *a.shape[1:])

    state = OracleState(
        m=take(call.m[k]),
        v=take(call.v[k]),
        v_max=take(call.v_max[k]),
        ema=take(call.ema[k]),
        step=call.state.step,
        beta1_power=call.state.beta1_power,
        beta2_power=call.state.beta2_power,
    )
    res = mpmath_oracle.trajectory(
        call.variant, call.hyper, take(call.arrays[k]), [restrict(step, rows)], state,
        **call.options,
    )[0]  # fmt: skip
    for name, target in _outcome_values(o).items():
        target[idx] = np.asarray(res.rounded[name][0]).ravel()
    return res.precision


def _assemble(
    call: _Call, values: list[dict[str, np.ndarray]], consts: StepConsts
) -> dict[str, list[Any]]:
    rounded: dict[str, list[Any]] = {}
    for name in call.components:
        if name in ("beta1_power", "beta2_power"):
            power = consts.p1 if name == "beta1_power" else consts.p2
            rounded[name] = [
                np.array(_round_power(power, call.state_fmt), dtype=numpy_dtype(call.state_fmt))
            ]
            continue
        target = call.fmt if name in ("param", "ema") else call.state_fmt
        dt = numpy_dtype(target)
        rounded[name] = [
            np.asarray(values[k][name], dtype=dt).reshape(a.shape)
            for k, a in enumerate(call.arrays)
        ]
    return rounded


class _Undecided(ArithmeticError):
    """A scalar the fast path cannot round: the call goes to mpmath whole."""


def _round_power(p: Power, fmt: FloatFormat) -> float:
    if p.exact is not None:
        return round_exact(p.exact, fmt)
    a, b = (mpf_to_q(t) for t in p.interval._mpi_)
    decided = rounding_is_certain(a, b, fmt)
    if decided is None:  # pragma: no cover - needs beta^t within 2^-320 of a boundary
        raise _Undecided("accumulated beta power undecided at the interval precision")
    return decided


# ---------------------------------------------------------------- free-running


def _ddv_of_reals(values: Sequence[Any]) -> tuple[DDV, np.ndarray]:
    """Exact oracle values as double-doubles with bounds; the mask of non-finite ones."""
    n = len(values)
    hi, lo, err = np.zeros(n), np.zeros(n), np.zeros(n)
    special = np.zeros(n, dtype=bool)
    for i, x in enumerate(values):
        if isinstance(x, Special):
            special[i] = True
            continue
        if isinstance(x, Rat):
            c = const_q(x.q)
        else:
            assert isinstance(x, (Surd, Ival))
            with mp.workprec(400), iv_precision(400):
                a, b = x.enclosure()
                c = const_iv(iv.mpf([mp.mpf(a), mp.mpf(b)]))
        hi[i], lo[i], err[i] = c.hi, c.lo, c.err
    return DDV(hi, lo, err), special


def _free_running(call: _Call, source: _Exact, stats: FastStats) -> list[StepResult] | None:
    """A trajectory in double-double; None when a step's constants or clipping send the whole
    call to mpmath (element-steps already counted stay counted)."""
    hp, variant = call.hp, call.variant
    states = [_dd_state(call, k) for k in range(len(call.arrays))]
    p1, p2 = _powers(call, call.state.step + 1)
    b1, b2 = fraction_of(hp.beta1), fraction_of(hp.beta2)
    outputs: list[list[dict[str, np.ndarray]]] = []  # [step][tensor] -> component -> values
    norms_per_step: list[list[Any]] = []
    exact_only: list[set[int]] = [set() for _ in call.arrays]
    precision = 0
    consts_per_step = []
    cache: dict[Any, Any] = {}
    for j in range(call.steps):
        t = call.state.step + 1 + j
        if j > 0:  # beta^t = beta^(t-1) beta, and P_t = P_(t-1) beta
            p1, p2 = p1.times(b1), p2.times(b2)
        consts = step_consts(variant, hp, t, p1, p2, cache=cache)
        if consts.fallback is not None:
            stats.reasons[consts.fallback] += 1
            return None
        clip = _clip_info(call, call.grads[j])
        if isinstance(clip, str):
            stats.reasons[clip] += 1
            return None
        scales, norms = clip
        norms_per_step.append(norms)
        consts_per_step.append(consts)
        step_out = []
        for k in range(len(call.arrays)):
            plan = DDPlan(
                variant, consts, call.fmt, call.state_fmt, hp.use_ema, _overwrites(hp, t), scales[k]
            )
            rounded, used = _advance(call, k, j, plan, states, exact_only[k], norms_per_step, stats)
            precision = max(precision, used)
            step_out.append(rounded)
        outputs.append(step_out)
    precision = max(precision, _exact_to_the_end(call, exact_only, outputs, norms_per_step))
    return [
        StepResult(
            call.state.step + 1 + j,
            LazyExact(source, j, call.components),
            _assemble(call, outputs[j], consts_per_step[j]),
            {},
            precision,
            call.components,
        )
        for j in range(call.steps)
    ]


def _dd_state(call: _Call, k: int) -> DDState:
    """Tensor ``k``'s starting state as exact double-doubles (zeros where not given)."""
    a = call.arrays[k]

    def dd(given: np.ndarray | None) -> DDV:
        x = np.array(_zeros_like(given, a), dtype=np.float64)
        return DDV(x, np.zeros_like(x), np.zeros_like(x))

    ema = dd(call.ema[k]) if call.hp.use_ema else None
    return DDState(dd(a), dd(call.m[k]), dd(call.v[k]), dd(call.v_max[k]), ema)


def _overwrites(hp: Any, t: int) -> bool:
    """Whether step ``t`` overwrites the parameters with their EMA (Keras 3)."""
    return bool(hp.use_ema and hp.ema_overwrite_frequency) and (t % hp.ema_overwrite_frequency == 0)


def _advance(
    call: _Call,
    k: int,
    j: int,
    plan: DDPlan,
    states: list[DDState],
    exact_only: set[int],
    norms_per_step: list[list[Any]],
    stats: FastStats,
) -> tuple[dict[str, np.ndarray], int]:
    """Step ``j`` of tensor ``k`` in double-double (``states[k]`` advanced): its rounded
    outputs, the uncertain coordinates recomputed exactly, and the mpmath precision used."""
    a = call.arrays[k]
    new_state, rounded, uncertain = plan.advance(states[k], call.grads[j][k].ravel(), _inject_error)
    if not call.hp.use_ema:
        rounded.pop("ema", None)
    for i in exact_only:
        uncertain[i] = False  # recomputed exactly at the end
    idx = np.flatnonzero(uncertain)
    by_mpmath = int(idx.size) + len(exact_only)
    stats.fallback += by_mpmath
    stats.tier1 += a.size - by_mpmath
    precision = 0
    if idx.size:
        precision = _fallback_prefix(
            call, k, idx, j, norms_per_step, new_state, rounded, exact_only
        )
    states[k] = new_state
    return rounded, precision


def _exact_to_the_end(
    call: _Call,
    exact_only: list[set[int]],
    outputs: list[list[dict[str, np.ndarray]]],
    norms_per_step: list[list[Any]],
) -> int:
    """The coordinates whose exact state became non-finite, recomputed by mpmath over the
    whole call (into ``outputs``); returns the precision it used."""
    precision = 0
    for k in range(len(call.arrays)):
        if exact_only[k]:
            idx = np.array(sorted(exact_only[k]))
            res = _exact_subset(call, k, idx, call.steps, norms_per_step)
            precision = max(precision, res[0].precision if res else 0)
            for j, r in enumerate(res):
                for name, target in outputs[j][k].items():
                    target[idx] = r.rounded[name][0].astype(np.float64)
    return precision


def _exact_subset(
    call: _Call, k: int, idx: np.ndarray, steps: int, norms_per_step: list[list[Any]]
) -> list[StepResult]:
    norms = [ns[k] for ns in norms_per_step[:steps]]
    return mpmath_oracle.trajectory(
        call.variant,
        call.hyper,
        call.arrays[k].ravel()[idx],
        [call.grads[j][k].ravel()[idx] for j in range(steps)],
        _subset_state(call, k, idx, call.state.step),
        grad_sq_norms=None if norms[0] is None else [[s] for s in norms],
        **call.options,
    )


def _fallback_prefix(
    call: _Call,
    k: int,
    idx: np.ndarray,
    j: int,
    norms_per_step: list[list[Any]],
    state: DDState,
    rounded: dict[str, np.ndarray],
    exact_only: set[int],
) -> int:
    """Steps ``0..j`` of the coordinates ``idx`` exactly; their step-``j`` outputs and reseeded
    double-double state (or, for a non-finite exact state, membership of ``exact_only``)."""
    res = _exact_subset(call, k, idx, j + 1, norms_per_step)
    last = res[-1]
    for name, target in rounded.items():
        target[idx] = last.rounded[name][0].astype(np.float64)
    bad = np.zeros(idx.size, dtype=bool)
    for name, attr in (("param", "theta"), ("m", "m"), ("v", "v"), ("v_max", "vmax"),
                       ("ema", "ema")):  # fmt: skip
        d = getattr(state, attr)
        if d is None:
            continue
        values, special = _ddv_of_reals(list(last.exact[name][0].ravel()))
        bad |= special
        err = np.array(np.broadcast_to(d.err, d.hi.shape), dtype=np.float64)
        d.hi[idx], d.lo[idx] = values.hi, values.lo
        err[idx] = values.err
        d.err = err
    exact_only.update(int(i) for i in idx[bad])
    return last.precision


__all__ = [
    "STATS",
    "FastStats",
    "LazyExact",
    "counting",
    "exact_sum_of_squares",
    "reset_stats",
    "step",
    "trajectory",
]
