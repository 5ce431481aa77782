"""The differential engine: run an implementation on a problem, then measure it against variants.

Running and measuring are separate on purpose. :func:`record_trace` drives one
adapter through a problem once, keeping every step's state before and after
and the gradients it was given. Everything else is a pure function of traces:

* :func:`lockstep` -- for each recorded step, the oracle's exact step of a
  variant *from the implementation's own state*, and the local error of each
  component (param, m, v, v_max) in ULPs of the implementation's dtype;
* :func:`free_running` -- the oracle's own trajectory (exact state for
  open-loop gradients; for closed loops the correctly rounded trajectory, whose
  gradients come from its own params) and the global divergence per step.

So fingerprinting (every catalog variant against the same trace) and
classification (every single-axis change of the documented variant) cost oracle
time only, never another framework run.
"""

from __future__ import annotations

import itertools
import math
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adamspec.harness.budgets import DEFAULT, Budget
from adamspec.harness.problems import Problem
from adamspec.impl.adapters import (
    REGISTRY,
    KernelLoadError,
    State,
    Unsupported,
    load_registry,
    make_adapter,
)
from adamspec.impl.frameworks import FrameworkMissing
from adamspec.oracles import OracleState
from adamspec.oracles import adam as mpmath_oracle
from adamspec.oracles import fast as fast_oracle
from adamspec.oracles.metrics import Outcome, classify_array, ulp_distance
from adamspec.oracles.rounding import numpy_dtype
from adamspec.spec.axes import AmsGrad, BiasCorrection, WeightDecay
from adamspec.spec.catalog import entry
from adamspec.spec.formats import FloatFormat, format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper
from adamspec.spec.precision import Precision, precision_named
from adamspec.spec.variant import Variant

STATE_COMPONENTS = ("param", "m", "v", "v_max")

#: Largest ULP distance reported; beyond it the value is "astronomically wrong" anyway.
ULP_CAP = 2**62

#: Least severe first: the outcome reported for a component is the most severe over its
#: coordinates.
_SEVERITY = [
    o.value
    for o in (
        Outcome.EXACT,
        Outcome.ULP,
        Outcome.SIGNED_ZERO,
        Outcome.POSINF,
        Outcome.NEGINF,
        Outcome.NAN,
        Outcome.MISSED_NAN,
    )
]
_EXACT, _ULP = _SEVERITY.index(Outcome.EXACT.value), _SEVERITY.index(Outcome.ULP.value)


@dataclass
class StepRecord:
    """One step of an implementation: the state it started from, its gradients, its result."""

    before: State
    grads: list[Any]
    after: State


@dataclass
class Trace:
    """An implementation's run on one problem.

    ``status`` is "ok", "skipped" (the adapter cannot run this configuration or its
    framework is missing; ``detail`` says why) or "error" (it raised or crashed after
    ``len(steps)`` good steps, or could not be loaded at all; ``detail`` has the message).
    Steps recorded before an error are kept and measured. ``kernel_output`` holds the first
    lines the implementation printed (:meth:`~adamspec.impl.adapters.Adapter.output_tail`;
    "" when nothing was printed or its output is not captured).
    """

    implementation: str
    framework: str
    framework_version: str
    documented: str
    problem: Problem
    dtype: str
    seed: int
    hyper: Hyper | None
    steps: list[StepRecord] = field(default_factory=list)
    status: str = "ok"
    detail: str = ""
    seconds: float = 0.0
    kernel_output: str = ""
    #: steps the implementation took (``len(steps)`` unless a sink kept fewer records)
    steps_run: int = 0
    #: seconds inside the adapter (its state in and out, its steps, a worker's transfers)
    kernel_seconds: float = 0.0


@dataclass(frozen=True)
class ComponentError:
    """The worst coordinate of one component in one step."""

    ulp: int  # -1: a NaN/inf mismatch (not measurable in ULPs)
    scaled: float
    outcome: str
    coordinates: int


StepErrors = dict[str, ComponentError]


def hyper_for(implementation: str, problem: Problem) -> Hyper:
    """The hyperparameters an implementation runs a problem with.

    Its documented variant's defaults (so each framework keeps e.g. its own eps),
    then the problem's overrides, then values a registered configuration is built
    with (``optax.adam(eps_root=1e-8)`` needs ``eps_root = 1e-8``).
    """
    info = REGISTRY[implementation]
    pinned = {k: info.options[k] for k in ("eps_root",) if k in info.options}
    return entry(info.documented).hyper(**{**dict(problem.hyper), **pinned})


def _dtype(name: str) -> np.dtype:
    return np.dtype(numpy_dtype(format_named(name)))


def initial_state(problem: Problem, dtype: str, seed: int, amsgrad: bool) -> State:
    """The problem's starting state in precision ``dtype`` (a dtype or a mix of them,
    :mod:`adamspec.spec.precision`): params in the param dtype, moments in the state dtype,
    and a master copy holding the params' exact values where the precision keeps one."""
    precision = precision_named(dtype)
    params = problem.initial_params(precision.param, seed)
    m, v, v_max = problem.initial_state(precision.state, seed, amsgrad)
    master = None
    if precision.master is not None:
        master = [p.astype(_dtype(precision.master)) for p in params]
    return State(
        params=list(params),
        m=list(m),
        v=list(v),
        v_max=list(v_max) if v_max is not None else None,
        step=problem.start_step,
        master=master,
    )


def gradient_dtype(dtype: str) -> str:
    """The dtype gradients arrive in under precision ``dtype``."""
    return precision_named(dtype).grad


#: ``sink(trace, t, record)`` sees each step as it is taken and returns what the trace keeps
#: of it (the record, a smaller one, or None): see :mod:`adamspec.harness.stream`.
StepSink = Callable[[Trace, int, StepRecord], StepRecord | None]


class _SinkFailed(Exception):
    """A sink's own exception: a harness failure, not the implementation's."""


def record_trace(
    implementation: str, problem: Problem, dtype: str, seed: int, sink: StepSink | None = None
) -> Trace:
    """Run ``implementation`` through ``problem`` once, keeping every step (see :class:`Trace`),
    or what ``sink`` returns of each (an exception of the sink propagates)."""
    load_registry()
    info = REGISTRY[implementation]
    trace = Trace(
        implementation,
        info.framework or "adamspec",
        "n/a",
        info.documented,
        problem,
        dtype,
        seed,
        None,
    )
    started = time.perf_counter()
    adapter = None

    def kernel(call: Callable[..., Any], *args: Any) -> Any:
        at = time.perf_counter()
        try:
            return call(*args)
        finally:
            trace.kernel_seconds += time.perf_counter() - at

    try:
        trace.hyper = hyper_for(implementation, problem)
        adapter = kernel(make_adapter, implementation, trace.hyper, dtype, problem.shapes)
        trace.framework_version = adapter.version
        amsgrad = entry(info.documented).variant.amsgrad is not AmsGrad.OFF
        kernel(adapter.set_state, initial_state(problem, dtype, seed, amsgrad))
        after = None
        for t in range(problem.steps):
            # the state a step ends in is the state the next one starts from
            before = after if after is not None else kernel(adapter.get_state)
            grads = problem.gradients(t, before.params, gradient_dtype(dtype), seed)
            kernel(adapter.step, grads)
            after = kernel(adapter.get_state)
            record = StepRecord(before, list(grads), after)
            trace.steps_run += 1
            if sink is not None:
                try:
                    record = sink(trace, t, record)
                except Exception as exc:
                    raise _SinkFailed() from exc
            if record is not None:
                trace.steps.append(record)
    except _SinkFailed as failed:
        raise failed.__cause__ from None
    except Exception as exc:  # a decline is a skip; anything else is a finding
        trace.status, trace.detail = _failure(exc, trace.steps_run)
        trace.kernel_output = getattr(exc, "kernel_output", "")  # printed while building
    finally:
        if adapter is not None:
            try:
                trace.kernel_output = adapter.output_tail()
                adapter.close()
            except Exception:  # closing must not hide the run's result
                pass
        trace.seconds = time.perf_counter() - started
    return trace


def _failure(exc: Exception, steps: int) -> tuple[str, str]:
    """A failed run's status and detail: "skipped" with the reason when the adapter declined
    the configuration (or its framework is missing), else "error" (a kernel that could not be
    loaded, with the full reason; a raise or crash at step ``steps + 1``, with where)."""
    if isinstance(exc, Unsupported | FrameworkMissing):
        return "skipped", _one_line(exc)
    if isinstance(exc, KernelLoadError):
        return "error", str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return "error", (
        f"step {steps + 1}: {type(exc).__name__}: {_one_line(exc)} "
        f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ----------------------------------------------------------------------- the oracle

#: The oracles the engine can measure against: the fast certified one (answers identical
#: to mpmath's, see :mod:`adamspec.oracles.fast`) and the mpmath one itself.
ORACLES = {"fast": fast_oracle, "mpmath": mpmath_oracle}
_oracle = {"name": "fast"}


def use_oracle(name: str) -> None:
    """Measure against oracle ``name`` ("fast" or "mpmath") in this process from now on."""
    if name not in ORACLES:
        raise ValueError(f"oracle={name!r} is unknown; allowed: {', '.join(ORACLES)}")
    _oracle["name"] = name


def oracle_name() -> str:
    return _oracle["name"]


_clocks: list[list[float]] = []


@contextmanager
def oracle_clock() -> Iterator[list[float]]:
    """``with oracle_clock() as seconds:`` -- ``seconds[0]`` is the time the oracle took in
    the block (meta.json's split of a run's wall time)."""
    box = [0.0]
    _clocks.append(box)
    try:
        yield box
    finally:
        # by identity: nested blocks' boxes may hold equal times, and list.remove would
        # take the outer one
        _clocks[:] = [b for b in _clocks if b is not box]


def _timed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    at = time.perf_counter()
    try:
        return call(*args, **kwargs)
    finally:
        oracle_seconds_elsewhere(time.perf_counter() - at)


def oracle_seconds_elsewhere(seconds: float) -> None:
    """Count ``seconds`` of oracle time in every open :func:`oracle_clock` block (time the
    oracle took in another process on this one's behalf: a Dask worker's chunk)."""
    for box in _clocks:
        box[0] += seconds


def oracle_step(*args: Any, **kwargs: Any) -> Any:
    """One exact step from the selected oracle (arguments of :func:`adamspec.oracles.step`;
    the roles' dtypes as :func:`stored_dtypes` reads them)."""
    return _timed(ORACLES[_oracle["name"]].step, *args, **stored_dtypes(args, kwargs))


def oracle_trajectory(*args: Any, **kwargs: Any) -> Any:
    """An exact trajectory from the selected oracle (arguments of
    :func:`adamspec.oracles.trajectory`; the roles' dtypes as :func:`stored_dtypes` reads
    them)."""
    return _timed(ORACLES[_oracle["name"]].trajectory, *args, **stored_dtypes(args, kwargs))


def stored_dtypes(args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The oracle's keyword arguments with every role's dtype filled in.

    A state is stepped in the dtypes it is stored in: where the caller does not say, the
    state is rounded to its ``m``'s dtype and a master copy to its own (an implementation's
    arrays are checked against its precision when it returns them). A ``dtype`` given by
    name (a dtype, or a mix: ``bf16-fp32master``) gives each role its dtype instead, and a
    ``hyper_dtype`` the dtype that precision computes its update in.
    """
    out = dict(kwargs)
    dtype = out.get("dtype")
    if isinstance(dtype, str | Precision):  # said: the state follows it, not its arrays
        precision = precision_named(dtype)
        out["dtype"] = precision.param
        out.setdefault("state_dtype", precision.state)
        out.setdefault("master_dtype", precision.master)
    if isinstance(out.get("hyper_dtype"), str | Precision):
        out["hyper_dtype"] = precision_named(out["hyper_dtype"]).compute
    state = args[4] if len(args) > 4 else out.get("state")
    if isinstance(state, OracleState):
        if "state_dtype" not in out and state.m is not None:
            out["state_dtype"] = _first(state.m).dtype
        if "master_dtype" not in out and state.master is not None:
            out["master_dtype"] = _first(state.master).dtype
    return out


def _first(arrays: Any) -> np.ndarray:
    """The first tensor of a state component (a list of tensors or one array)."""
    return np.asarray(arrays[0] if isinstance(arrays, list | tuple) else arrays)


# ----------------------------------------------------------------------- measuring


def oracle_state(state: State, variant: Variant, step_offset: int = 0) -> OracleState:
    """The oracle's view of an implementation's state, to step ``variant`` from it: a missing
    v_max starts at v; ``step_offset`` shifts the step counter the oracle is told."""
    amsgrad = variant.amsgrad is not AmsGrad.OFF
    v_max = state.v_max if state.v_max is not None else (state.v if amsgrad else None)
    extras = state.extras
    return OracleState(
        m=list(state.m),
        v=list(state.v),
        v_max=list(v_max) if v_max is not None else None,
        step=state.step + step_offset,
        beta1_power=extras.get("beta1_power"),
        beta2_power=extras.get("beta2_power"),
        ema=list(extras["ema"]) if "ema" in extras else None,
        master=list(state.master) if state.master is not None else None,
    )


def _components(state: State, variant: Variant) -> tuple[str, ...]:
    both_amsgrad = state.v_max is not None and variant.amsgrad is not AmsGrad.OFF
    names = STATE_COMPONENTS if both_amsgrad else STATE_COMPONENTS[:3]
    return (*names, "master") if state.master is not None else names


def _state_arrays(state: State, component: str) -> list[np.ndarray]:
    return {
        "param": state.params,
        "m": state.m,
        "v": state.v,
        "v_max": state.v_max,
        "master": state.master,
    }[component]


def ulp_at(scale: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """The spacing of ``fmt`` at magnitude ``scale`` (the subnormal quantum below 2**emin;
    the spacing at the largest finite binade for infinite or NaN scales)."""
    scale = np.asarray(scale, np.float64)
    if fmt.emin - (fmt.precision - 1) > -1022:
        # the spacing is a normal binary64 number: build it from the exponent bits (the
        # fast path: a scale's binade is its biased exponent field, inf and NaN share the top)
        top = np.int64(2047)
        field = (np.abs(scale).view(np.int64) >> np.int64(52)) - np.int64(1023)
        exponent = np.where(field == top - 1023, fmt.emax, field)
        exponent = np.maximum(exponent, fmt.emin) - (fmt.precision - 1)
        return ((exponent + 1023) << 52).view(np.float64)
    finite = np.isfinite(scale) & (scale > 0)
    _, e = np.frexp(np.where(finite, scale, 1.0))  # scale = f 2^e, f in [0.5, 1)
    exponent = np.where(finite, e - 1, np.where(scale > 0, fmt.emax, fmt.emin))
    exponent = np.maximum(exponent, fmt.emin)
    return np.ldexp(1.0, (exponent - (fmt.precision - 1)).astype(np.int32))


def gradient_magnitude(grad: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A gradient's magnitude per coordinate as a dense float64 array of ``shape`` (a
    row-sparse gradient's duplicate rows have their absolute values summed)."""
    if isinstance(grad, SparseRows):
        out = np.zeros(shape, np.float64)
        values = np.abs(np.asarray(grad.values, np.float64)).reshape(len(grad.indices), *shape[1:])
        np.add.at(out, np.asarray(grad.indices, np.int64), values)
        return out
    return np.abs(np.asarray(grad, np.float64))


def bias_correction_condition(variant: Variant, hyper: Hyper, t: int) -> float:
    """How much computing the bias corrections in working precision magnifies its rounding.

    ``1 - beta^t`` cancels: a relative error ``u`` in ``beta^t`` becomes
    ``u beta^t / (1 - beta^t)`` in ``c``; ``sqrt(c2)`` halves it. Frameworks that
    form ``lr sqrt(c2) / c1`` in float32 (every eps-hat implementation) carry this
    into the step, e.g. ~250 u at t = 2 with beta2 = 0.999.
    """
    kappa = 0.0
    for beta, axis, power in ((hyper.beta1, variant.bias_correction_m, 1.0),
                              (hyper.beta2, variant.bias_correction_v, 0.5)):  # fmt: skip
        if axis is BiasCorrection.NONE:
            continue
        bt = float(beta) ** t
        kappa += power * bt / (1.0 - bt) if bt < 1.0 else 0.0
    return kappa


#: The step ``lr m_hat / (sqrt(v_hat) + eps)`` is formed in working precision with about
#: eight roundings (the square root, a division or two, eps's addition, the step size, the
#: product, m's and v's own errors): up to ~8 half-ULPs of the step, where a parameter's own
#: subtraction adds one. Where the step is as large as the parameter (a small theta, a
#: zero crossing) that is the parameter's error: torch.Adam's float32 arithmetic measured
#: 3 ULPs (3.0 scaled against the step alone) at 1 of 5,133 coordinates over 1,000 steps
#: of the scale suite. So the step's term of the parameter's scale counts 4 steps.
UPDATE_ROUNDINGS = 4.0


def component_scales(
    before: State, grads: Sequence[Any], k: int, hyper: Hyper, reference: Any, variant: Variant
) -> dict[str, np.ndarray]:
    """Magnitude of each component's largest term, for the scaled measure of
    :mod:`adamspec.harness.budgets`: ``beta1 m`` or ``(1 - beta1) g`` for m, ``beta2 v`` or
    ``(1 - beta2) g^2`` for v, and for the parameter ``theta`` or the step taken,
    times :data:`UPDATE_ROUNDINGS`, magnified by the bias corrections' conditioning
    (:func:`bias_correction_condition`) and by m's cancellation (``2 (|terms of m| / |m'| -
    1)`` where that exceeds 0: m's budget, in ULPs of its terms, as a relative error of
    the step).

    ``g`` counts ``weight_decay |theta|`` only where the decay enters the moments (L2
    coupling, where the decayed gradient's own rounding counts its term twice): decoupled
    decay never reaches m or v, and counting it there would widen their scale by orders of
    magnitude on tiny gradients (a 215-ULP error in v passed under torch.AdamW while it
    failed under torch.Adam)."""
    b1, b2 = float(hyper.beta1), float(hyper.beta2)
    theta = before.params[k].astype(np.float64)
    g = gradient_magnitude(grads[k], before.params[k].shape)
    g_m = g
    if variant.weight_decay is WeightDecay.L2 and float(hyper.weight_decay):
        g = g + float(hyper.weight_decay) * np.abs(theta)
        # the decayed gradient is one more rounded term of m's: counted twice (torch.Adam's
        # float32 arithmetic measured 2.5 ULPs of m's terms at 25 of 70,000 coordinates with
        # weight_decay 0.01: the lerp form's roundings and two more)
        g_m = 2.0 * g
    kappa = bias_correction_condition(variant, hyper, before.step + 1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        m_scale = np.maximum(b1 * np.abs(before.m[k].astype(np.float64)), (1 - b1) * g_m)
        # m's cancellation: where m' is much smaller than its terms, its rounding (within
        # m's budget, in ULPs of the terms) is a large relative error of m', which the step
        # lr m_hat / (sqrt(v_hat) + eps) carries whole (seen at 2^24 coordinates: 5e-5 of
        # the step from 0.9 m + 0.1 g = -1.5e-4 with terms of 0.109)
        m_new = np.abs(reference.value("m", k).astype(np.float64))
        cancelled = np.where(m_new > 0, m_scale / m_new, 0.0)
        m_condition = 2.0 * np.maximum(np.where(np.isfinite(cancelled), cancelled, 0.0) - 1, 0)
        # the weights the update is computed on: the master where one is kept
        if before.master is not None:
            theta = before.master[k].astype(np.float64)
        updated = "param" if before.master is None else "master"
        step = np.abs(reference.value(updated, k).astype(np.float64) - theta)
        step = step * (UPDATE_ROUNDINGS + kappa + m_condition)
        scales = {
            "param": np.maximum(np.abs(theta), np.where(np.isfinite(step), step, 0.0)),
            "m": m_scale,
            "v": np.maximum(b2 * before.v[k].astype(np.float64), (1 - b2) * g * g),
        }
    scales["master"] = scales["param"]
    if before.v_max is not None:
        scales["v_max"] = np.maximum(before.v_max[k].astype(np.float64), scales["v"])
        if variant.amsgrad is AmsGrad.MAX_CORRECTED_V and variant.bias_correction_v in (
            BiasCorrection.POWER,
            BiasCorrection.ACCUMULATED,
        ):
            # the maximum is over v / c2: c2 = 1 - beta2^t formed in working precision
            b2t = b2 ** (before.step + 1)
            kappa_v = b2t / (1.0 - b2t) if b2t < 1.0 else 0.0
            v_max_ref = np.abs(reference.value("v_max", k).astype(np.float64))
            scales["v_max"] = np.maximum(scales["v_max"], v_max_ref * (1.0 + kappa_v))
    return scales


@dataclass(frozen=True)
class CoordinateErrors:
    """Each coordinate's error in one component (flat arrays): its outcome (an index into
    :data:`_SEVERITY`), its ULP distance (-1: not measurable, a NaN or infinity involved)
    and its error in ULPs of the scale (infinite where not measurable)."""

    outcomes: np.ndarray
    ulp: np.ndarray
    scaled: np.ndarray

    def restricted(self, keep: np.ndarray) -> CoordinateErrors:
        """The coordinates ``keep`` (a flat boolean mask) selects."""
        return CoordinateErrors(self.outcomes[keep], self.ulp[keep], self.scaled[keep])

    def multiples(self, component: str, budget: Budget) -> np.ndarray:
        """Each coordinate's budget multiple (:meth:`Budget.multiple`, vectorized)."""
        by_ulp = self.ulp / max(budget.ulp.get(component, 0), 0.5)
        if budget.correctly_rounded(component):
            return np.where(self.ulp < 0, math.inf, by_ulp)
        by_scale = self.scaled / max(budget.scaled.get(component, 0.0), 0.5)
        return np.where(self.ulp < 0, math.inf, np.minimum(by_ulp, by_scale))


def coordinate_errors(
    got: np.ndarray, ref: np.ndarray, scale: np.ndarray, fmt: FloatFormat
) -> CoordinateErrors:
    """``got`` against the oracle's correctly rounded ``ref`` (same dtype), coordinate by
    coordinate, with ``scale`` the magnitude of each coordinate's largest term for the scaled
    measure (see :func:`component_scales`). NaN where the exact result is NaN counts as exact.

    The outcomes and ULP distances are those of :func:`~adamspec.oracles.metrics.classify_array`
    and :func:`~adamspec.oracles.metrics.ulp_distance`; both are asked only about the few
    coordinates where a special value or a signed zero is involved, the others (two finite
    values) are read from their bit patterns here, the fast path for big tensors."""
    g, r = np.asarray(got).ravel(), np.asarray(ref).ravel()
    uint = _UINT[g.dtype.itemsize]
    gb, rb = g.view(uint), r.view(uint)
    g64, r64 = g.astype(np.float64), r.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        odd = ~(np.isfinite(g64) & np.isfinite(r64)) | ((g64 == 0) & (r64 == 0))
        codes = np.where(gb == rb, _EXACT, _ULP).astype(np.int8)
        dist = np.abs(_ordinal(gb, g.dtype.itemsize) - _ordinal(rb, g.dtype.itemsize))
        if odd.any():
            where = np.flatnonzero(odd)
            outcomes = classify_array(g[where], r[where], fmt)
            codes[where] = [_SEVERITY.index(o) for o in outcomes]
            dist[where] = ulp_distance(g[where], r[where], fmt)
        # NaN where the exact result is NaN (0/0 with eps = 0) is right, not unmeasurable
        dist = np.where(codes == _EXACT, 0, dist)
        diff = np.abs(g64 - r64)
        spacing = ulp_at(np.maximum(np.asarray(scale, np.float64).ravel(), np.abs(r64)), fmt)
        scaled = np.where(diff == 0, 0.0, diff / spacing)
    return CoordinateErrors(codes, dist, np.where(dist < 0, math.inf, scaled))


_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


_INT = {2: np.int16, 4: np.int32, 8: np.int64}


def _ordinal(bits: np.ndarray, width: int) -> np.ndarray:
    """The ordinal map of :mod:`adamspec.oracles.metrics` (monotone in value, +-0 at 0) of
    bit patterns, as int64."""
    signed = bits.view(_INT[width])
    magnitude = (signed & np.iinfo(_INT[width]).max).astype(np.int64)
    return np.where(signed < 0, -magnitude, magnitude)


def measure(
    got: np.ndarray, ref: np.ndarray, scale: np.ndarray, fmt: FloatFormat
) -> ComponentError:
    """The worst coordinate of one component (see :func:`coordinate_errors`).

    The ULP distance is -1 when any coordinate is not measurable in ULPs; the outcome is the
    most severe over the coordinates (:data:`_SEVERITY`)."""
    return worst_of(coordinate_errors(got, ref, scale, fmt))


def worst_of(errors: CoordinateErrors) -> ComponentError:
    """The worst coordinate of one component's :class:`CoordinateErrors`."""
    outcomes, dist = errors.outcomes, errors.ulp
    if dist.size == 0:
        return ComponentError(0, 0.0, "exact", 0)
    worst_outcome = _SEVERITY[int(outcomes.max())]
    # capped: a float64 distance across the whole line can exceed what a report column holds
    ulp = -1 if np.any(dist < 0) else min(int(dist.max()), ULP_CAP)
    scaled = math.inf if ulp < 0 else float(np.max(errors.scaled))
    return ComponentError(ulp, scaled, str(worst_outcome), int(dist.size))


def _merge(a: ComponentError | None, b: ComponentError) -> ComponentError:
    if a is None:
        return b
    ulp = -1 if -1 in (a.ulp, b.ulp) else max(a.ulp, b.ulp)
    outcome = max(a.outcome, b.outcome, key=_SEVERITY.index)
    return ComponentError(ulp, max(a.scaled, b.scaled), outcome, a.coordinates + b.coordinates)


#: ``exclude(before, grads, k, reference, fmt)``: a boolean mask of tensor ``k``'s coordinates
#: to leave out of the measure (the format-range hypotheses of :mod:`adamspec.harness.classify`).
Exclusion = Callable[[State, Sequence[Any], int, Any, FloatFormat], np.ndarray]


def compare(
    before: State,
    grads: Sequence[Any],
    after: State,
    reference: Any,
    variant: Variant,
    hyper: Hyper,
    exclude: Exclusion | None = None,
) -> StepErrors:
    """Errors of ``after`` against an oracle :class:`~adamspec.oracles.StepResult` (all
    tensors merged), over the coordinates ``exclude`` does not mask (all when None)."""
    fmt = format_named(str(after.params[0].dtype))
    errors: StepErrors = {}
    for k in range(len(after.params)):
        keep = None if exclude is None else ~exclude(before, grads, k, reference, fmt)
        for name, e in tensor_errors(before, grads, after, reference, variant, hyper, k).items():
            found = worst_of(e if keep is None else e.restricted(np.ravel(keep)))
            errors[name] = _merge(errors.get(name), found)
    return errors


def tensor_errors(
    before: State,
    grads: Sequence[Any],
    after: State,
    reference: Any,
    variant: Variant,
    hyper: Hyper,
    k: int,
    scales: dict[str, np.ndarray] | None = None,
) -> dict[str, CoordinateErrors]:
    """Tensor ``k``'s errors coordinate by coordinate, per component (what :func:`compare`
    reduces to its worst coordinate); ``scales`` of :func:`component_scales` if computed."""
    if scales is None:
        scales = component_scales(before, grads, k, hyper, reference, variant)
    out = {}
    for name in _components(after, variant):
        ref = reference.value(name, k)  # in the dtype the precision stores it in
        fmt = format_named(str(ref.dtype))
        out[name] = coordinate_errors(_state_arrays(after, name)[k], ref, scales[name], fmt)
    return out


def lockstep(
    trace: Trace,
    variant: Variant,
    hyper: Hyper | None = None,
    *,
    step_offset: int = 0,
    exclude: Exclusion | None = None,
) -> list[StepErrors]:
    """Local error of every recorded step against ``variant``'s exact step from the same state.

    ``step_offset`` shifts the step counter the oracle is told (the "step counting"
    hypothesis of :mod:`adamspec.harness.classify`); ``exclude`` masks coordinates out of the
    measure (see :func:`compare`).
    """
    hyper = hyper or trace.hyper
    out = []
    for rec in trace.steps:
        if rec.before.step + step_offset < 0:
            return []
        ref = oracle_step(
            variant,
            hyper,
            list(rec.before.params),
            list(rec.grads),
            oracle_state(rec.before, variant, step_offset),
        )
        out.append(compare(rec.before, rec.grads, rec.after, ref, variant, hyper, exclude))
    return out


def free_running(trace: Trace, variant: Variant, hyper: Hyper | None = None) -> list[StepErrors]:
    """Global divergence per step from the oracle's own trajectory started at the same state.

    Open-loop gradients do not depend on params, so the oracle keeps its exact
    state across steps. For a closed loop each gradient comes from the reference's
    own params, so the reference is the correctly rounded implementation: exact
    step, rounded to the dtype, next gradient from the rounded params.
    """
    hyper = hyper or trace.hyper
    if not trace.steps:
        return []
    first = trace.steps[0].before
    if trace.problem.regime == "open":
        results = _anchored_trajectory(trace, variant, hyper)
    else:
        run = rounded_run(trace.problem, first, variant, hyper, trace.dtype, trace.seed)
        results = [ref for ref, _ in itertools.islice(run, len(trace.steps))]
    return [
        compare(rec.before, rec.grads, rec.after, ref, variant, hyper)
        for rec, ref in zip(trace.steps, results, strict=True)
    ]


def rounded_run(
    problem: Problem, start: State, variant: Variant, hyper: Hyper, dtype: str, seed: int
) -> Iterator[tuple[Any, State]]:
    """The correctly rounded implementation of ``variant`` on ``problem`` from ``start``:
    each step exact from the rounded state, then rounded to ``dtype``; a closed loop's
    gradient comes from its own params. Yields each step's oracle result and the state
    after it, without end."""
    amsgrad = variant.amsgrad is not AmsGrad.OFF
    state, t = start, 0
    while True:
        grads = problem.gradients(t, state.params, gradient_dtype(dtype), seed)
        ref = oracle_step(
            variant, hyper, list(state.params), list(grads), oracle_state(state, variant)
        )
        state = State(
            params=ref.rounded["param"],
            m=ref.rounded["m"],
            v=ref.rounded["v"],
            v_max=ref.rounded["v_max"] if amsgrad else None,
            step=state.step + 1,
            master=ref.rounded.get("master"),
        )
        t += 1
        yield ref, state


#: Free-running references of more steps than this are computed in segments (see below).
ANCHOR_EVERY = 500


def _anchored_trajectory(trace: Trace, variant: Variant, hyper: Hyper) -> list[Any]:
    """The oracle's own trajectory over the trace's gradients.

    The fast oracle carries its state in double-double (faithful over 10^5 steps,
    :mod:`adamspec.oracles.fast`) and runs the whole trajectory. In the mpmath oracle the exact
    state's rationals grow with every step (the cost of a step grows linearly,
    of a trajectory quadratically: 2,000 steps take ~30 s, 10,000 would take ~15 min). For
    targets narrower than float64, the trajectory is therefore run in segments of
    :data:`ANCHOR_EVERY` steps, each started from the binary64 rounding of the exact
    state the previous one ended in (a second run of the segment rounds to binary64).
    Each anchor moves the reference by at most 2^-53 relatively, 2^-29 of a float32
    ULP; 20 anchors over 10,000 steps stay far below the 1-ULP resolution of the
    measure. float64 targets keep one exact trajectory.
    """
    grads = [list(r.grads) for r in trace.steps]
    start = oracle_state(trace.steps[0].before, variant)
    params = list(trace.steps[0].before.params)
    # the fast oracle carries its state in double-double, faithful over 10^5 steps
    exact_state_grows = oracle_name() == "mpmath"
    if (
        precision_named(trace.dtype).compute == "float64"
        or len(grads) <= ANCHOR_EVERY
        or not exact_state_grows
    ):
        return oracle_trajectory(variant, hyper, params, grads, start)
    results: list[Any] = []
    for at in range(0, len(grads), ANCHOR_EVERY):
        segment = grads[at : at + ANCHOR_EVERY]
        results += oracle_trajectory(variant, hyper, params, segment, start, dtype=trace.dtype)
        if at + ANCHOR_EVERY >= len(grads):
            break
        anchor = oracle_trajectory(
            variant,
            hyper,
            params,
            segment,
            start,
            dtype="float64",
            state_dtype="float64",
            master_dtype="float64" if start.master is not None else None,
            hyper_dtype=trace.dtype,
        )[-1]
        amsgrad = variant.amsgrad is not AmsGrad.OFF
        params = list(anchor.rounded["param"])
        start = OracleState(
            master=list(anchor.rounded["master"]) if start.master is not None else None,
            m=list(anchor.rounded["m"]),
            v=list(anchor.rounded["v"]),
            v_max=list(anchor.rounded["v_max"]) if amsgrad else None,
            ema=list(anchor.rounded["ema"]) if "ema" in anchor.rounded else None,
            step=start.step + len(segment),
            beta1_power=anchor.rounded["beta1_power"][0]
            if "beta1_power" in anchor.rounded
            else None,
            beta2_power=anchor.rounded["beta2_power"][0]
            if "beta2_power" in anchor.rounded
            else None,
        )
    return results


def worst(per_step: Sequence[StepErrors]) -> StepErrors:
    """Per component, the worst error over steps."""
    out: StepErrors = {}
    for errors in per_step:
        for name, err in errors.items():
            out[name] = _merge(out.get(name), err)
    return out


def budget_multiple(errors: StepErrors, budget: Budget = DEFAULT) -> float:
    """The largest budget multiple over components (<= 1: every component is rounding-sized)."""
    if not errors:
        return math.inf
    return max(budget.multiple(name, e.ulp, e.scaled) for name, e in errors.items())
