"""Discrepancy classification: which spec axis explains an implementation's error.

A discrepancy (some component over its ULP budget against the documented
variant) is explained by a *single* change: one axis of the documented
:class:`~spec.variant.Variant` set to another value, the step counter shifted
by one, or clipping/EMA switched off. Each candidate is scored in lock-step on
the same traces; the best one within budget names the category. None within
budget: "unexplained" (the explanation then names the closest candidate).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

from harness.budgets import DEFAULT, Budget
from harness.engine import Trace
from harness.fingerprint import score_variant
from spec.axes import AmsGrad, BiasCorrection
from spec.gradients import SparseRows
from spec.variant import Variant, VariantError

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

CATEGORIES: tuple[str, ...] = (
    ROUNDING_ONLY,
    *dict.fromkeys(CATEGORY_OF_AXIS.values()),
    STEP_COUNTING,
    CLIPPING,
    EMA,
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


@dataclass(frozen=True)
class Classification:
    category: str
    explanation: str
    score: float  # budget multiple of the explaining hypothesis (documented's when rounding only)
    hypothesis: Hypothesis | None = None


def _uses_sparse(traces: Sequence[Trace]) -> bool:
    return any(isinstance(g, SparseRows) for t in traces for s in t.steps for g in s.grads)


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
                variant = documented.replace(amsgrad=value, bias_correction_v=BiasCorrection.NONE)
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


def _score(traces: Sequence[Trace], h: Hypothesis, budget: Budget) -> float:
    if h.hyper_changes:
        changed = [_with_hyper(t, dict(h.hyper_changes)) for t in traces]
        return score_variant(changed, h.variant, budget, step_offset=h.step_offset)[0]
    return score_variant(traces, h.variant, budget, step_offset=h.step_offset)[0]


def _with_hyper(trace: Trace, changes: dict) -> Trace:
    from dataclasses import replace

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
        key=lambda x: (x[0], x[1]),
    )
    if not scored:
        return Classification(UNEXPLAINED, "no single change to try", base)
    best_score, _, best = scored[0]
    if best_score <= 1:
        others = [h.description for s, _, h in scored[1:] if s <= 1]
        also = f"; also within budget: {', '.join(others)}" if others else ""
        return Classification(
            best.category, f"{best.description} ({best_score:.2g}x){also}", best_score, best
        )
    closest = "" if math.isinf(best_score) else f"; closest: {best.description} ({best_score:.3g}x)"
    return Classification(
        UNEXPLAINED, f"{base:.3g}x budget, no single change explains it{closest}", base
    )
