"""Discrepancy classification: which change to the spec explains an implementation's error.

A discrepancy (some component over its ULP budget against the documented variant) is
explained by the first stage whose best change brings it within budget:

1. a *single formula change*: one axis of the documented
   :class:`~adamspec.spec.variant.Variant` set to another value, the step counter shifted by
   one, or clipping/EMA switched off;
2. a *single other change*: a hyperparameter held in a format of its own or used with
   another value (another catalog default, or fitted from the traces:
   :mod:`adamspec.harness.hyperfacts`), or a stored component that is not the moment itself
   (:mod:`adamspec.harness.stored_state`: "m is stored bias-corrected");
3. *two changes* at once, among the most promising single ones (bounded: "two changes:
   eps_placement=eps_hat and weight_decay=decoupled_before");

and, tried right after the formula changes, the dtype's range ("format range": not a
formula, only where the error is: overflowing or subnormal coordinates left out).

Each candidate is scored in lock-step on the same traces (oracle time only). None within
budget: "unexplained" (the explanation then names the closest candidate, and says which
hyperparameters could not be fitted).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from adamspec.harness import hyperfacts
from adamspec.harness.budgets import DEFAULT, Budget
from adamspec.harness.engine import Exclusion, State, StepRecord, Trace, gradient_magnitude
from adamspec.harness.fingerprint import score_variant
from adamspec.harness.hyperfacts import HyperFact
from adamspec.harness.problems import largest_finite
from adamspec.harness.stored_state import TRANSFORMS, Transform, read_back
from adamspec.oracles.rounding import numpy_dtype
from adamspec.spec.axes import AmsGrad, BiasCorrection
from adamspec.spec.formats import FloatFormat, format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.precision import precision_named
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
HYPER_VALUE = hyperfacts.VALUE  # another number than the one given (representation: an axis)
STORED_STATE = "stored state"  # params right, a stored component transformed
TWO_CHANGES = "two changes"
#: Not a formula change: the dtype's range. The exact formula keeps intermediates the dtype
#: cannot hold (g^2 beyond its largest finite value, e.g. g = 1e20 in float32), and kernels
#: that flush subnormals to zero (XLA and TensorFlow on CPU) lose values the exact formula
#: keeps. Explained when the error is confined to such coordinates.
FORMAT_RANGE = "format range"

#: Not the formula but the precision: a kernel declaring master weights that does not keep
#: them as the spec says (``spec/ADAM.md``, "Mixed precision"): it rounds the master to the
#: param dtype before the update (the master then holds no more than the param), or it has
#: no master at all (the update is computed and rounded in the param dtype, and the master
#: it hands back is the param widened).
MASTER_WEIGHTS = "master weights"
MASTER_ROUNDED = "master weights rounded to the param dtype before the update"
MASTER_ABSENT = "no master copy: the update is computed in the param dtype"

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
    HYPER_VALUE,
    STORED_STATE,
    MASTER_WEIGHTS,
    TWO_CHANGES,
    FORMAT_RANGE,
    INDEX_DEPENDENT,
    UNEXPLAINED,
)

#: How many of the closest single changes are combined pairwise (stage 3), ranked once by
#: their worst component and once by the parameters alone (a change that puts the
#: parameters right is the one a stored-state transform completes).
PAIRED = 4


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
    facts: tuple[HyperFact, ...] = ()  # hyperparameters held or valued otherwise
    stored: tuple[Transform, ...] = ()  # stored components read back as the moments
    master: str = ""  # MASTER_ROUNDED or MASTER_ABSENT: how the master copy is really kept

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
        fmt = format_named(precision_named(trace.dtype).param)
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
    fmt = format_named(precision_named(trace.dtype).param)

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


def formula_changes(documented: Variant, traces: Sequence[Trace]) -> Iterator[Hypothesis]:
    """Stage 1: every single formula change worth trying on these traces (irrelevant axes
    are skipped)."""
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
    if any(r.before.master is not None for t in traces for r in t.steps[:1]):
        for how in (MASTER_ROUNDED, MASTER_ABSENT):
            yield Hypothesis(MASTER_WEIGHTS, how, documented, master=how)
    if hyper is not None:
        for name in ("clipnorm", "clipvalue", "global_clipnorm"):
            if getattr(hyper, name) is not None:
                yield Hypothesis(CLIPPING, f"no {name}", documented, hyper_changes=((name, None),))
        if hyper.use_ema:
            yield Hypothesis(EMA, "no EMA", documented, hyper_changes=(("use_ema", False),))


def other_changes(documented: Variant, traces: Sequence[Trace]) -> Iterator[Hypothesis]:
    """Stage 2: each hyperparameter held in a format of its own or used with another value
    (catalog defaults, then fitted ones), and each stored-state transform."""
    for fact in hyperfacts.candidates(traces, documented):
        yield Hypothesis(fact.category, fact.describe(_given(traces)), documented, facts=(fact,))
    for transform in TRANSFORMS:
        yield Hypothesis(STORED_STATE, transform.description, documented, stored=(transform,))


def _given(traces: Sequence[Trace]):
    return next((t.hyper for t in traces if t.hyper is not None), None)


def format_range_changes(documented: Variant) -> Iterator[Hypothesis]:
    """Stage 4, last resorts: the dtype's range, not the formula."""
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


def hypotheses(documented: Variant, traces: Sequence[Trace]) -> Iterator[Hypothesis]:
    """Every single change worth trying on these traces, stage by stage (pairs excluded)."""
    yield from formula_changes(documented, traces)
    yield from other_changes(documented, traces)
    yield from format_range_changes(documented)


def combine(a: Hypothesis, b: Hypothesis, documented: Variant) -> Hypothesis | None:
    """Both changes at once, or None when they collide (the same axis, hyperparameter,
    stored component or step counter) or make an incoherent variant."""
    axes: dict[str, Any] = {}
    base = documented.axes()
    for h in (a, b):
        for key, value in h.variant.axes().items():
            if value != base[key]:
                if key in axes and axes[key] != value:
                    return None
                axes[key] = value
    if (a.step_offset and b.step_offset) or (a.master and b.master):
        return None
    names = [n for h in (a, b) for n, _ in h.hyper_changes] + [f.name for h in (a, b)
                                                              for f in h.facts]  # fmt: skip
    parts = [t.component for h in (a, b) for t in h.stored]
    if len(set(names)) < len(names) or len(set(parts)) < len(parts):
        return None
    try:
        variant = documented.replace(**axes)
    except VariantError:
        return None
    return Hypothesis(
        TWO_CHANGES,
        f"two changes: {a.description} and {b.description}",
        variant,
        step_offset=a.step_offset + b.step_offset,
        hyper_changes=a.hyper_changes + b.hyper_changes,
        facts=a.facts + b.facts,
        stored=a.stored + b.stored,
        master=a.master or b.master,
    )


def seen_by(trace: Trace, h: Hypothesis) -> Trace:
    """The trace as hypothesis ``h`` reads it: its hyperparameter changes and facts applied,
    subnormal inputs flushed, stored components read back (nothing re-run)."""
    if h.hyper_changes:
        trace = _with_hyper(trace, dict(h.hyper_changes))
    trace = hyperfacts.with_facts(trace, h.facts)
    if h.flush_inputs:
        trace = _flush_inputs(trace)
    if h.master:
        trace = _master_as(trace, h.master)
    return read_back(trace, h.stored)


def _master_is_its_param(trace: Trace) -> bool:
    """Whether every master the implementation handed back is its param widened, as a
    kernel without a master copy returns one (:data:`MASTER_ABSENT` measures no master, so
    it holds only where the master says nothing of its own)."""
    for rec in trace.steps:
        if rec.after.master is None:
            continue
        for master, param in zip(rec.after.master, rec.after.params, strict=True):
            widened = np.asarray(param).astype(master.dtype)
            if not np.array_equal(master, widened, equal_nan=True):
                return False
    return True


def _master_as(trace: Trace, how: str) -> Trace:
    """The trace as a kernel that keeps its master copy ``how`` computes it.

    :data:`MASTER_ROUNDED`: each step starts from the master rounded to the param dtype
    (and widened back): the exact step from there is that kernel's. :data:`MASTER_ABSENT`:
    no master at all; the step starts from the params and is rounded to the param dtype,
    so the trace is read as the same precision without a master (the master the kernel
    hands back is not measured: it holds nothing of its own).
    """
    precision = precision_named(trace.dtype)
    if precision.master is None:
        return trace
    param_dtype = numpy_dtype(format_named(precision.param))

    def rounded(st: State) -> State:
        if st.master is None:
            return st
        return replace(st, master=[m.astype(param_dtype).astype(m.dtype) for m in st.master])

    def absent(st: State) -> State:
        return replace(st, master=None)

    change = rounded if how == MASTER_ROUNDED else absent
    steps = [StepRecord(change(r.before), r.grads, absent(r.after) if how == MASTER_ABSENT
                        else r.after) for r in trace.steps]  # fmt: skip
    dtype = replace(precision, master=None).name if how == MASTER_ABSENT else trace.dtype
    return replace(trace, steps=steps, dtype=dtype)


def _score(traces: Sequence[Trace], h: Hypothesis, budget: Budget) -> tuple[float, float]:
    """The budget multiple of ``h`` (its worst component), and of the parameters alone."""
    if h.master == MASTER_ABSENT and not all(_master_is_its_param(t) for t in traces):
        return math.inf, math.inf  # a master holding values of its own is a master
    score, errors = score_variant(
        [seen_by(t, h) for t in traces],
        h.variant,
        budget,
        step_offset=h.step_offset,
        exclude=h.exclude,
    )
    if h.exclude is not None and not any(e.coordinates for e in errors.values()):
        return math.inf, math.inf  # everything excluded: nothing left to explain anything
    param = errors.get("param")
    return score, math.inf if param is None else budget.multiple("param", param.ulp, param.scaled)


def _with_hyper(trace: Trace, changes: dict) -> Trace:
    return replace(trace, hyper=trace.hyper.with_(**changes) if trace.hyper else None)


Scored = tuple[float, float, int, Hypothesis]  # score, parameters' score, order, hypothesis


def _stage(traces: Sequence[Trace], hs: Iterable[Hypothesis], budget: Budget) -> list[Scored]:
    scored = [(*_score(traces, h, budget), i, h) for i, h in enumerate(hs)]
    return sorted(scored, key=lambda x: (x[0], x[2]))


def _pairs(singles: Sequence[Scored], documented: Variant) -> Iterator[Hypothesis]:
    """Pairs among the :data:`PAIRED` closest single changes by worst component and the
    :data:`PAIRED` closest by the parameters; and each of the latter (a change that puts
    the parameters right) completed by each stored-state transform."""
    finite = [x for x in singles if not math.isinf(x[0]) or not math.isinf(x[1])]
    by_worst = sorted(finite, key=lambda x: (x[0], x[1]))[:PAIRED]
    by_param = sorted(finite, key=lambda x: (x[1], x[0]))[:PAIRED]
    chosen = list({id(x[3]): x[3] for x in (*by_worst, *by_param)}.values())
    transforms = [Hypothesis(STORED_STATE, t.description, documented, stored=(t,))
                  for t in TRANSFORMS]  # fmt: skip
    seen: set[tuple[str, str]] = set()
    candidates = [*itertools.combinations(chosen, 2),
                  *itertools.product([x[3] for x in by_param], transforms)]  # fmt: skip
    for a, b in candidates:
        key = tuple(sorted((a.description, b.description)))
        pair = combine(a, b, documented) if key not in seen else None
        seen.add(key)
        if pair is not None:
            yield pair


def _explained(
    stage: list[Scored], traces: Sequence[Trace], documented: Variant
) -> Classification | None:
    if not stage or stage[0][0] > 1:
        return None
    best_score, _, _, best = stage[0]
    if best.format_range:
        # say what the dtype could not hold, not which hypothesis left it out
        note = range_note(traces, documented, best)
        return Classification(
            best.category, f"{note} (elsewhere {best_score:.2g}x the budget)", best_score, best
        )
    others = [h.description for s, _, _, h in stage[1:] if s <= 1]
    also = f"; also within budget: {', '.join(others)}" if others else ""
    return Classification(
        best.category, f"{best.description} ({best_score:.2g}x){also}", best_score, best
    )


def classify(
    traces: Sequence[Trace], documented: Variant, budget: Budget = DEFAULT
) -> Classification:
    """The category of an implementation's error against ``documented`` on ``traces``: the
    first stage (see the module docstring) with a change within budget names it."""
    base, _ = score_variant(traces, documented, budget)
    if base <= 1:
        return Classification(ROUNDING_ONLY, f"within budget ({base:.2g}x)", base)
    tried: list[Scored] = []
    singles: list[Scored] = []
    # the dtype's range before the other changes: cheaper to rule out (three hypotheses),
    # and where it explains a case no hyperparameter or stored-state change would
    for stage in ("formula", "range", "other", "pairs"):
        if stage == "formula":
            hs: Iterable[Hypothesis] = formula_changes(documented, traces)
        elif stage == "other":
            hs = other_changes(documented, traces)
        elif stage == "pairs":
            hs = _pairs(singles, documented)
        else:
            hs = format_range_changes(documented)
        scored = _stage(traces, hs, budget)
        found = _explained(scored, traces, documented)
        if found is not None:
            return found
        tried += scored
        if stage in ("formula", "other"):
            singles += scored
    if not tried:
        return Classification(UNEXPLAINED, "no change to try", base)
    best_score, _, _, best = min(tried, key=lambda x: (x[0], x[2]))
    closest = "" if math.isinf(best_score) else f"; closest: {best.description} ({best_score:.3g}x)"
    unfitted = [
        note
        for note in hyperfacts.fit(traces, documented).values()
        if isinstance(note, str) and "cannot be estimated" in note
    ]
    notes = "".join(f"; {n}" for n in unfitted)
    return Classification(
        UNEXPLAINED,
        f"{base:.3g}x budget, no single change or pair explains it{closest}{notes}",
        base,
    )
