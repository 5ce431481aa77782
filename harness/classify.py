"""Discrepancy classification: which spec axis explains an implementation's error.

A discrepancy (some component over its ULP budget against the documented
variant) is explained by a *single* change: one axis of the documented
:class:`~adamspec.spec.variant.Variant` set to another value, the step counter shifted
by one, or clipping/EMA switched off. Each candidate is scored in lock-step on
the same traces; the best one within budget names the category. None within
budget: "unexplained" (the explanation then names the closest candidate).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from adamspec.harness.budgets import DEFAULT, Budget
from adamspec.harness.engine import Exclusion, State, StepRecord, Trace, gradient_magnitude
from adamspec.harness.fingerprint import score_variant
from adamspec.harness.problems import largest_finite
from adamspec.spec.axes import AmsGrad, BiasCorrection
from adamspec.spec.formats import FloatFormat, format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.variant import Variant, VariantError

ROUNDING_ONLY = "rounding only"
UNEXPLAINED = "unexplained"

#: The category each Variant axis stands for in reports.
CATEGORY_OF_AXIS: dict[str, str] = {
    "family": "RAdam rectification",
    "eps_placement": "epsilon placement",
    "bias_correction_m": "bias correction",
    "bias_correction_v": "bias correction",
    "amsgrad": "AMSGrad max placement",
    "weight_decay": "weight-decay coupling or scaling",
    "nesterov": "nesterov",
    "maximize": "maximize sign",
    "sparse": "sparse momentum",
    "duplicates": "sparse momentum",
    "hyper_precision": "hyperparameter representation",
}
STEP_COUNTING = "step counting"
CLIPPING = "clipping"
EMA = "EMA"
#: Not a formula change: the dtype's range. The exact formula keeps intermediates the dtype
#: cannot hold (g^2 beyond its largest finite value, e.g. g = 1e20 in float32), and kernels
#: that flush subnormals to zero (XLA and TensorFlow on CPU) lose values the exact formula
#: keeps. Explained when the error is confined to such coordinates.
FORMAT_RANGE = "format range"

#: Not a formula change either: the error is confined to an index range or pattern of the
#: tensor (full blocks but not the tail, indices past 2^16, every k-th coordinate) and the
#: documented formula holds on the rest. Named by :mod:`adamspec.harness.localize` where no
#: single change explains the error; the explanation names the range or pattern.
INDEX_DEPENDENT = "index-dependent"

CATEGORIES: tuple[str, ...] = (
    ROUNDING_ONLY,
    *dict.fromkeys(CATEGORY_OF_AXIS.values()),
    STEP_COUNTING,
    CLIPPING,
    EMA,
    FORMAT_RANGE,
    INDEX_DEPENDENT,
    UNEXPLAINED,
)


@dataclass(frozen=True)
class Hypothesis:
    """One single change to try: a variant, and/or a step offset, and/or hyper changes."""

    category: str
    description: str
    variant: Variant
    step_offset: int = 0
    hyper_changes: tuple[tuple[str, object], ...] = ()
    exclude: Exclusion | None = None  # coordinates the hypothesis says the formula cannot hold
    flush_inputs: bool = False  # subnormal inputs read as zero

    @property
    def format_range(self) -> bool:
        """Not a formula change: tried only when no formula change explains the error."""
        return self.exclude is not None or self.flush_inputs


@dataclass(frozen=True)
class Classification:
    category: str
    explanation: str
    score: float  # budget multiple of the explaining hypothesis (documented's when rounding only)
    hypothesis: Hypothesis | None = None


def _uses_sparse(traces: Sequence[Trace]) -> bool:
    return any(isinstance(g, SparseRows) for t in traces for s in t.steps for g in s.grads)


def _range_reasons(
    before: State, grads: Sequence[Any], k: int, reference: Any, fmt: FloatFormat
) -> dict[str, np.ndarray]:
    """Per reason a dtype cannot hold what the exact formula keeps, the coordinates of tensor
    ``k`` where it applies (the words are those of the range note, see :func:`range_note`)."""
    g = gradient_magnitude(grads[k], before.params[k].shape)
    with np.errstate(over="ignore"):
        g2 = g * g
    reasons = {"g*g overflows": g2 > largest_finite(fmt)}
    for name in ("param", "m", "v"):
        reasons[f"the exact {name} overflows"] = np.isinf(reference.value(name, k))
    held = np.zeros(g.shape, bool)
    for state in (before.params, before.m, before.v, before.v_max):
        if state is not None:
            held |= ~np.isfinite(np.asarray(state[k], np.float64))
    reasons["the state holds an earlier overflow"] = held
    flushed = _subnormal(g2, fmt)
    for name in ("param", "m", "v"):
        flushed |= _subnormal(reference.value(name, k), fmt)
    reasons["g*g or an exact result is subnormal (flushed)"] = flushed
    return reasons


_OVERFLOW_REASONS = 5  # the first five reasons are overflows, the last a flush


def _overflowing(
    before: State, grads: Sequence[Any], k: int, reference: Any, fmt: FloatFormat
) -> np.ndarray:
    """Coordinates where g^2 or an exact stored value lies beyond the format's finite range,
    or whose state already holds an overflowed value (e.g. v = inf from an earlier g^2:
    the lerp form's ``v + (g^2 - v)(1 - beta2)`` then makes it NaN)."""
    reasons = list(_range_reasons(before, grads, k, reference, fmt).values())
    return np.logical_or.reduce(reasons[:_OVERFLOW_REASONS])


def _subnormal(a: Any, fmt: FloatFormat) -> np.ndarray:
    x = np.abs(np.asarray(a, np.float64))
    return (x > 0) & (x < math.ldexp(1.0, fmt.emin))


def _flushed_result(
    before: State, grads: Sequence[Any], k: int, reference: Any, fmt: FloatFormat
) -> np.ndarray:
    """Coordinates whose exact result (param, m, v) or g^2 is subnormal: a flushing kernel
    writes 0 there, which no exact formula reproduces."""
    return list(_range_reasons(before, grads, k, reference, fmt).values())[_OVERFLOW_REASONS]


def range_note(traces: Sequence[Trace], documented: Variant, hypothesis: Hypothesis) -> str:
    """What a format-range case's dtype could not hold, counted in coordinate-steps over the
    traces: e.g. "g*g overflows at 40 of 60 coordinate-steps; the exact v overflows at 12"
    (only the reasons the explaining ``hypothesis`` leaves out, and only those that occur)."""
    from adamspec.harness.engine import oracle_state, oracle_step

    overflow = hypothesis.exclude is not _flushed_result
    flush = hypothesis.flush_inputs
    counts: dict[str, int] = {}
    total = 0
    for trace in traces:
        fmt = format_named(trace.dtype)
        for rec in trace.steps:
            ref = oracle_step(documented, trace.hyper, list(rec.before.params), list(rec.grads),
                              oracle_state(rec.before, documented))  # fmt: skip
            for k in range(len(rec.before.params)):
                reasons = _range_reasons(rec.before, rec.grads, k, ref, fmt)
                total += reasons["g*g overflows"].size
                for i, (what, mask) in enumerate(reasons.items()):
                    if (i < _OVERFLOW_REASONS and overflow) or (i >= _OVERFLOW_REASONS and flush):
                        counts[what] = counts.get(what, 0) + int(np.count_nonzero(mask))
    said = [f"{what} at {n} of {total} coordinate-steps" for what, n in counts.items() if n]
    if flush:
        said.append("subnormal inputs read as 0")
    return "; ".join(said) or hypothesis.description


def _flush_inputs(trace: Trace) -> Trace:
    """The trace as a denormals-are-zero kernel reads it: subnormal inputs become signed 0."""
    fmt = format_named(trace.dtype)

    def flush(a: Any) -> Any:
        if isinstance(a, SparseRows):
            return SparseRows(a.indices, flush(a.values), a.num_rows)
        a = np.asarray(a)
        return np.where(_subnormal(a, fmt), np.copysign(np.zeros_like(a), a), a)

    def state(st: State) -> State:
        each = lambda xs: None if xs is None else [flush(x) for x in xs]  # noqa: E731
        return replace(st, params=each(st.params), m=each(st.m), v=each(st.v),
                       v_max=each(st.v_max))  # fmt: skip

    steps = [StepRecord(state(r.before), [flush(g) for g in r.grads], r.after) for r in trace.steps]
    return replace(trace, steps=steps)


def hypotheses(documented: Variant, traces: Sequence[Trace]) -> Iterator[Hypothesis]:
    """Every single change worth trying on these traces (irrelevant axes are skipped)."""
    hyper = next((t.hyper for t in traces if t.hyper is not None), None)
    sparse = _uses_sparse(traces)
    for f in fields(Variant):
        if f.name in ("sparse", "duplicates") and not sparse:
            continue
        if f.name == "weight_decay" and hyper is not None and not hyper.weight_decay:
            continue
        current = getattr(documented, f.name)
        values = (
            (not current,) if f.name == "maximize" else [v for v in type(current) if v != current]
        )
        for value in values:
            try:
                variant = documented.replace(**{f.name: value})
            except VariantError:
                # AMSGrad on the raw, uncorrected v implies no v bias correction: one idea
                if f.name != "amsgrad" or value is not AmsGrad.MAX_RAW_V_UNCORRECTED:
                    continue
                try:
                    variant = documented.replace(
                        amsgrad=value, bias_correction_v=BiasCorrection.NONE
                    )
                except VariantError:  # e.g. RAdam has no AMSGrad form at all
                    continue
            shown = value if isinstance(value, bool) else value.value
            yield Hypothesis(CATEGORY_OF_AXIS[f.name], f"{f.name}={shown}", variant)
    if documented.bias_correction_m == documented.bias_correction_v:
        # one idea, two fields: a kernel that drops (or accumulates) both corrections at once
        for value in BiasCorrection:
            if value is documented.bias_correction_m:
                continue
            try:
                variant = documented.replace(bias_correction_m=value, bias_correction_v=value)
            except VariantError:
                continue
            yield Hypothesis(
                CATEGORY_OF_AXIS["bias_correction_m"],
                f"bias_correction_m=bias_correction_v={value.value}",
                variant,
            )
    for offset in (-1, 1):
        yield Hypothesis(STEP_COUNTING, f"step counter {offset:+d}", documented, step_offset=offset)
    if hyper is not None:
        for name in ("clipnorm", "clipvalue", "global_clipnorm"):
            if getattr(hyper, name) is not None:
                yield Hypothesis(CLIPPING, f"no {name}", documented, hyper_changes=((name, None),))
        if hyper.use_ema:
            yield Hypothesis(EMA, "no EMA", documented, hyper_changes=(("use_ema", False),))
    # last resorts (see classify): the dtype's range, not the formula
    overflow = "coordinates where g^2 or a stored value is beyond the dtype's range left out"
    daz = "subnormal inputs read as 0 (denormals-are-zero)"
    ftz = "coordinates with a subnormal result or g^2 left out"
    yield Hypothesis(FORMAT_RANGE, overflow, documented, exclude=_overflowing)
    yield Hypothesis(
        FORMAT_RANGE, f"{daz}; {ftz}", documented, exclude=_flushed_result, flush_inputs=True
    )
    yield Hypothesis(
        FORMAT_RANGE,
        f"{daz}; {ftz}; {overflow}",
        documented,
        exclude=lambda *a: _flushed_result(*a) | _overflowing(*a),
        flush_inputs=True,
    )


def _score(traces: Sequence[Trace], h: Hypothesis, budget: Budget) -> float:
    if h.hyper_changes:
        traces = [_with_hyper(t, dict(h.hyper_changes)) for t in traces]
    if h.flush_inputs:
        traces = [_flush_inputs(t) for t in traces]
    score, errors = score_variant(
        traces, h.variant, budget, step_offset=h.step_offset, exclude=h.exclude
    )
    if h.exclude is not None and not any(e.coordinates for e in errors.values()):
        return math.inf  # everything excluded: nothing left to explain anything
    return score


def _with_hyper(trace: Trace, changes: dict) -> Trace:
    return replace(trace, hyper=trace.hyper.with_(**changes) if trace.hyper else None)


def classify(
    traces: Sequence[Trace], documented: Variant, budget: Budget = DEFAULT
) -> Classification:
    """The category of an implementation's error against ``documented`` on ``traces``."""
    base, _ = score_variant(traces, documented, budget)
    if base <= 1:
        return Classification(ROUNDING_ONLY, f"within budget ({base:.2g}x)", base)
    scored = sorted(
        ((_score(traces, h, budget), i, h) for i, h in enumerate(hypotheses(documented, traces))),
        # a formula change within budget beats a format-range one: the latter only says
        # where the error is, not what formula produced it
        key=lambda x: (x[0] > 1, x[2].format_range, x[0], x[1]),
    )
    if not scored:
        return Classification(UNEXPLAINED, "no single change to try", base)
    best_score, _, best = scored[0]
    if best_score <= 1 and best.format_range:
        # say what the dtype could not hold, not which hypothesis left it out
        note = range_note(traces, documented, best)
        return Classification(
            best.category, f"{note} (elsewhere {best_score:.2g}x the budget)", best_score, best
        )
    if best_score <= 1:
        others = [h.description for s, _, h in scored[1:] if s <= 1 and not h.format_range]
        also = f"; also within budget: {', '.join(others)}" if others else ""
        return Classification(
            best.category, f"{best.description} ({best_score:.2g}x){also}", best_score, best
        )
    closest = "" if math.isinf(best_score) else f"; closest: {best.description} ({best_score:.3g}x)"
    return Classification(
        UNEXPLAINED, f"{base:.3g}x budget, no single change explains it{closest}", base
    )
