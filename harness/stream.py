"""Streaming verification: an implementation on one problem, verified step by step as it runs.

:func:`verify_case` drives the implementation through the problem
(:func:`~adamspec.harness.engine.record_trace`) and verifies each step as soon as it is taken,
chunk by chunk (:mod:`adamspec.harness.chunks`), against the documented variant. What it keeps
depends on the problem's size:

* a **small** problem (at most :data:`FULL_TRACE_COORDINATES` coordinates and
  :data:`FULL_TRACE_ELEMENT_STEPS` element-steps: every suite but ``scale``) keeps its whole
  trace, and its free-running divergence is :func:`~adamspec.harness.engine.free_running`'s;
* a **big** one keeps no full state past its step. The step's lock-step errors, where its
  failing coordinates are and the coordinates that measure the suite's power are merged
  into the case; a **sampled trace** keeps a few hundred coordinates of a few steps (fixed
  ones at the tensor's ends and around powers of two, plus the step's first failing ones),
  which classification and the fingerprint's closest variant read (Adam is elementwise:
  a coordinate's step does not depend on the others); and the free-running divergence is
  measured on at most :data:`FREE_SAMPLE` coordinates per tensor, against the oracle's own
  trajectory computed in segments of :data:`FREE_SEGMENT` steps, each started from the
  binary64 rounding of the last (2^-53 relative per anchor, far below the measure's 1-ULP
  resolution; a closed loop's reference is the correctly rounded run, one step at a time).

So the harness holds one step's before- and after-state (what the adapter hands over: twice
the implementation's own state) plus a few chunk buffers, whatever the number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adamspec.harness.budgets import Budget
from adamspec.harness.chunks import ChunkResult, TensorFindings, verify_step
from adamspec.harness.engine import (
    State,
    StepErrors,
    StepRecord,
    Trace,
    compare,
    free_running,
    gradient_dtype,
    oracle_state,
    oracle_step,
    oracle_trajectory,
    record_trace,
)
from adamspec.harness.power import Candidates, merge_candidates
from adamspec.harness.problems import Problem
from adamspec.oracles import OracleState
from adamspec.spec.axes import AmsGrad
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper
from adamspec.spec.variant import Variant

#: Problems at most this big keep their whole trace (every suite but ``scale``).
FULL_TRACE_COORDINATES = 4096
FULL_TRACE_ELEMENT_STEPS = 1 << 20

#: Coordinates per tensor of a big problem's free-running divergence (rows of a sparse
#: table: :data:`FREE_SAMPLE_ROWS`, whose trajectory the fast oracle leaves to mpmath).
FREE_SAMPLE = 8192
FREE_SAMPLE_ROWS = 16

#: Steps of each segment of a big problem's free-running reference.
FREE_SEGMENT = 250

#: Steps whose coordinates measure the suite's power: the first ones, then every 10th.
POWER_FIRST_STEPS = 10
POWER_EVERY = 10

#: Steps the sampled trace keeps: the first ones, the last one, and failing ones.
SAMPLE_FIRST_STEPS = 2
SAMPLE_FAILING_STEPS = 6


@dataclass
class CaseRecord:
    """One implementation on one problem, verified.

    ``trace`` is the whole trace or, when ``sampled``, the sampled one; ``lockstep`` holds
    every step's errors (every coordinate), ``steps`` their step counters, ``free`` the
    free-running divergence per step; ``findings`` where the failing coordinates are, per
    tensor, over every step; ``power`` the coordinates that measure the suite's power."""

    trace: Trace
    sampled: bool
    lockstep: list[StepErrors] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    free: list[StepErrors] = field(default_factory=list)
    findings: dict[int, TensorFindings] = field(default_factory=dict)
    power: Candidates = field(default_factory=dict)


def is_big(problem: Problem) -> bool:
    """Whether ``problem`` is verified without keeping its whole trace."""
    n = problem.coordinates
    return n > FULL_TRACE_COORDINATES or n * problem.steps > FULL_TRACE_ELEMENT_STEPS


def _clips_by_norm(hyper: Hyper | None) -> bool:
    return hyper is not None and (hyper.clipnorm is not None or hyper.global_clipnorm is not None)


def verify_case(
    implementation: str,
    problem: Problem,
    dtype: str,
    seed: int,
    variant: Variant,
    budget: Budget,
) -> CaseRecord:
    """Run ``implementation`` on ``problem`` and verify it against ``variant`` as it runs."""
    sink = _Verifier(problem, variant, budget, is_big(problem))
    trace = record_trace(implementation, problem, dtype, seed, sink)
    return sink.finish(trace)


class _Verifier:
    """The step sink of :func:`verify_case` (see the module docstring)."""

    def __init__(self, problem: Problem, variant: Variant, budget: Budget, big: bool) -> None:
        self.problem, self.variant, self.budget, self.big = problem, variant, budget, big
        self.record: CaseRecord | None = None
        self.fixed: list[np.ndarray] = []
        self.free_picks: list[np.ndarray] = []
        self.segment: list[StepRecord] = []
        self.free_start: tuple[list[np.ndarray], OracleState] | None = None
        self.rounded_state: State | None = None  # a big closed loop's reference state
        self.failing_steps = 0

    def __call__(self, trace: Trace, t: int, rec: StepRecord) -> StepRecord | None:
        if self.record is None:
            self.record = CaseRecord(trace, self.big)
            self.fixed = [_fixed_sample(p, g) for p, g in zip(rec.before.params, rec.grads,
                                                               strict=True)]  # fmt: skip
            self.free_picks = [_free_sample(p, g) for p, g in zip(rec.before.params, rec.grads,
                                                                  strict=True)]  # fmt: skip
        out = self.record
        power = t < POWER_FIRST_STEPS or t % POWER_EVERY == 0
        clipped = _clips_by_norm(trace.hyper)
        found = verify_step(self.variant, trace.hyper, self.budget, rec, clipped, power)
        out.lockstep.append(found.errors)
        out.steps.append(rec.before.step + 1)
        for k, f in found.tensors.items():
            out.findings[k] = out.findings[k].union(f) if k in out.findings else f
        out.power = merge_candidates(out.power, found.power)
        if not self.big:
            return rec
        self._free_step(trace, t, rec)
        return self._sampled(t, rec, found)

    # ---------------------------------------------------------------- the sampled trace

    def _sampled(self, t: int, rec: StepRecord, found: ChunkResult) -> StepRecord | None:
        failing = bool(found.first_failing)
        keep = t < SAMPLE_FIRST_STEPS or t == self.problem.steps - 1
        if failing and self.failing_steps < SAMPLE_FAILING_STEPS:
            self.failing_steps += 1
            keep = True
        if not keep:
            return None
        picks = []
        for k, fixed in enumerate(self.fixed):
            extra = np.array([i for j, i in found.first_failing if j == k], np.int64)
            width = _row_width(rec.grads[k], rec.before.params[k].shape)
            picks.append(np.union1d(fixed, extra // width if width > 1 else extra))
        return pick(rec, picks)

    # ---------------------------------------------------------------- free-running

    def _free_step(self, trace: Trace, t: int, rec: StepRecord) -> None:
        if self.problem.regime == "closed":
            self._closed_free_step(trace, t, rec)
            return
        sample = pick(rec, self.free_picks)
        if self.free_start is None:
            self.free_start = (
                list(sample.before.params),
                oracle_state(sample.before, self.variant),
            )
        self.segment.append(sample)
        if len(self.segment) == FREE_SEGMENT:
            self._flush_segment(trace, anchor=True)

    def _flush_segment(self, trace: Trace, anchor: bool) -> None:
        """The oracle's own trajectory over the segment's gradients (from the last anchor),
        the divergence of each step, and the next anchor."""
        if not self.segment or self.free_start is None or self.record is None:
            return
        params, start = self.free_start
        grads = [list(r.grads) for r in self.segment]
        hyper, variant = trace.hyper, self.variant
        results = oracle_trajectory(variant, hyper, params, grads, start, dtype=trace.dtype)
        for rec, ref in zip(self.segment, results, strict=True):
            self.record.free.append(compare(rec.before, rec.grads, rec.after, ref, variant, hyper))
        if anchor:
            self.free_start = _anchor(variant, hyper, params, grads, start, trace.dtype)
        self.segment = []

    def _closed_free_step(self, trace: Trace, t: int, rec: StepRecord) -> None:
        """A big closed loop: the correctly rounded run, gradients from its own params."""
        state = self.rounded_state or rec.before
        grads = self.problem.gradients(t, state.params, gradient_dtype(trace.dtype), trace.seed)
        ref = oracle_step(self.variant, trace.hyper, list(state.params), list(grads),
                          oracle_state(state, self.variant))  # fmt: skip
        assert self.record is not None
        self.record.free.append(compare(rec.before, rec.grads, rec.after, ref, self.variant,
                                        trace.hyper))  # fmt: skip
        amsgrad = self.variant.amsgrad is not AmsGrad.OFF
        r = ref.rounded
        self.rounded_state = State(r["param"], r["m"], r["v"], r["v_max"] if amsgrad else None,
                                   state.step + 1, master=r.get("master"))  # fmt: skip

    def finish(self, trace: Trace) -> CaseRecord:
        """The case once the implementation stopped (after its last step, or a crash)."""
        record = self.record or CaseRecord(trace, self.big)
        record.trace = trace
        if self.big:
            self._flush_segment(trace, anchor=False)
        elif trace.steps:
            record.free = free_running(trace, self.variant)
        return record


def _anchor(
    variant: Variant,
    hyper: Hyper,
    params: list[np.ndarray],
    grads: list[list[Any]],
    start: OracleState,
    dtype: str,
) -> tuple[list[np.ndarray], OracleState]:
    """The state the oracle's trajectory ends in after ``grads``, rounded to binary64 (the
    hyperparameters still held as ``dtype`` holds them): the next segment's start."""
    master = "float64" if start.master is not None else None
    end = oracle_trajectory(variant, hyper, params, grads, start, dtype="float64",
                            state_dtype="float64", master_dtype=master,
                            hyper_dtype=dtype)[-1]  # fmt: skip
    r = end.rounded
    amsgrad = variant.amsgrad is not AmsGrad.OFF

    def scalar(name: str) -> Any:
        return r[name][0] if name in r else None

    state = OracleState(
        m=list(r["m"]),
        v=list(r["v"]),
        v_max=list(r["v_max"]) if amsgrad else None,
        ema=list(r["ema"]) if "ema" in r else None,
        step=start.step + len(grads),
        beta1_power=scalar("beta1_power"),
        beta2_power=scalar("beta2_power"),
        master=list(r["master"]) if "master" in r else None,
    )
    return list(r["param"]), state


# ------------------------------------------------------------------------ samples


def _row_width(grad: Any, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:])) if isinstance(grad, SparseRows) else 1


def _spread(n: int, head: int, tail: int, between: int) -> np.ndarray:
    """The first ``head`` and last ``tail`` of ``range(n)`` and ``between`` evenly spaced."""
    if n <= head + tail + between:
        return np.arange(n, dtype=np.int64)
    middle = np.linspace(head, n - tail - 1, between).astype(np.int64)
    return np.unique(np.concatenate([np.arange(head), middle, np.arange(n - tail, n)]))


def _fixed_sample(param: np.ndarray, grad: Any) -> np.ndarray:
    """Coordinates (rows of a sparse table) every sampled step keeps: the ends, evenly
    spaced ones and the neighbourhoods of powers of two (index types and blocks end there)."""
    width = _row_width(grad, param.shape)
    n = param.size // width
    if width > 1:
        return _spread(n, 8, 8, 16)
    around = [np.arange(2**k - 8, 2**k + 8) for k in range(4, 40) if 2**k < n]
    picked = np.concatenate([_spread(n, 256, 256, 512), *around])
    return np.unique(picked[(picked >= 0) & (picked < n)])


def _free_sample(param: np.ndarray, grad: Any) -> np.ndarray:
    width = _row_width(grad, param.shape)
    n = param.size // width
    if width > 1:
        return _spread(n, FREE_SAMPLE_ROWS // 2, FREE_SAMPLE_ROWS // 2, 0)
    return _spread(n, FREE_SAMPLE // 4, FREE_SAMPLE // 4, FREE_SAMPLE // 2)


def pick(rec: StepRecord, picks: Sequence[np.ndarray]) -> StepRecord:
    """``rec`` restricted to the given coordinates of each tensor (rows of a sparse table,
    whose gradient keeps the entries of those rows, renumbered), each tensor flat."""

    def tensors(state: State) -> State:
        def cut(xs: Sequence[np.ndarray] | None) -> list[np.ndarray] | None:
            if xs is None:
                return None
            return [
                _take(np.asarray(x), i, g) for x, i, g in zip(xs, picks, rec.grads, strict=True)
            ]

        extras = {k: cut(v) if k == "ema" else v for k, v in state.extras.items()}
        return State(cut(state.params), cut(state.m), cut(state.v), cut(state.v_max),
                     state.step, extras, cut(state.master))  # fmt: skip

    grads = [_take_grad(g, i, np.asarray(p).shape)
             for g, i, p in zip(rec.grads, picks, rec.before.params, strict=True)]  # fmt: skip
    return StepRecord(tensors(rec.before), grads, tensors(rec.after))


def _take(a: np.ndarray, idx: np.ndarray, grad: Any) -> np.ndarray:
    if isinstance(grad, SparseRows):
        return a.reshape(a.shape[0], -1)[idx].reshape(len(idx), *a.shape[1:])
    return a.reshape(-1)[idx]


def _take_grad(grad: Any, idx: np.ndarray, shape: tuple[int, ...]) -> Any:
    if not isinstance(grad, SparseRows):
        return np.asarray(grad).reshape(-1)[idx]
    indices = np.asarray(grad.indices)
    inside = np.isin(indices, idx)
    values = np.asarray(grad.values).reshape(len(indices), *shape[1:])[inside]
    return SparseRows(np.searchsorted(idx, indices[inside]), values, len(idx))
