"""Fingerprinting: which formula an implementation actually computes.

The search runs over the axis space, not only over the catalog names: every catalog
variant is scored in lock-step on the same recorded traces
(:func:`adamspec.harness.engine.lockstep`), then coordinate descent from the best few
changes one axis of :class:`~adamspec.spec.variant.Variant` at a time, or adds one
hyperparameter fact (:mod:`adamspec.harness.hyperfacts`: a hyperparameter held in a format
of its own, or another value), while that improves the ranking. Oracle time only: the
traces are recorded once.

The ranking does not let one case decide: a :class:`Match` is first the number of cases
(problems) within budget, then how far the failing ones are off (the sum of their log
budget multiples), then the finer measures of rounding-sized errors (the parameters' ULPs,
then every component's). Axes these traces cannot show (weight decay when none is
given, sparse semantics without sparse gradients, eps_root when it is 0, accumulated bias
corrections when no beta power is carried) are set to the paper's value first, so the
formula is stated by what was measured, and every catalog name equal to it on these traces
is named with it. Candidates within budget on exactly the same cases cannot be told apart
here: :func:`separating_problem` names a problem that would tell them apart.

The ranking is only as good as the problems' power to tell variants apart, so
:func:`separation` measures that power directly: for every pair of catalog variants, how
far apart their exact steps are from a common state, on the same problems.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adamspec.harness.budgets import DEFAULT, SEPARATION_THRESHOLD_ULP, Budget
from adamspec.harness.engine import (
    ULP_CAP,
    Exclusion,
    State,
    StepErrors,
    Trace,
    budget_multiple,
    lockstep,
    oracle_state,
    oracle_step,
    worst,
)
from adamspec.harness.hyperfacts import HyperFact, apply_all, candidates, with_facts
from adamspec.harness.problems import Problem
from adamspec.oracles.metrics import ulp_distance
from adamspec.spec.axes import (
    AmsGrad,
    BiasCorrection,
    DuplicateIndices,
    EpsPlacement,
    SparseSemantics,
    WeightDecay,
)
from adamspec.spec.catalog import entries, entry, formula_name
from adamspec.spec.formats import format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper, make_hyper
from adamspec.spec.variant import Variant, VariantError

#: Distinct starting formulas the coordinate descent improves (the best catalog ones).
BEAM = 2
#: Most improving moves from one start.
ROUNDS = 3


@dataclass(frozen=True)
class Formula:
    """What an implementation computes: a variant, and facts about its hyperparameters."""

    variant: Variant
    facts: tuple[HyperFact, ...] = ()

    @property
    def name(self) -> str:
        """The axes that differ from the paper's Algorithm 1, then the facts:
        ``"eps_placement=eps_hat; beta1 held in bfloat16"``."""
        return "; ".join([formula_name(self.variant), *(f.describe() for f in self.facts)])

    def with_fact(self, fact: HyperFact) -> Formula:
        kept = tuple(f for f in self.facts if f.name != fact.name)
        return Formula(self.variant, tuple(sorted((*kept, fact), key=lambda f: f.name)))

    @property
    def changes(self) -> int:
        """How many axes and facts it changes from the paper's Algorithm 1."""
        base, axes = Variant().axes(), self.variant.axes()
        return sum(base[k] != axes[k] for k in axes) + len(self.facts)


@dataclass(frozen=True)
class CaseScore:
    """One case (a problem's trace) measured against a formula: worst error per component."""

    case: str
    errors: StepErrors
    multiple: float  # budget multiple of the worst component (<= 1: within budget)

    @property
    def within(self) -> bool:
        return self.multiple <= 1

    @property
    def param_ulp(self) -> int:
        e = self.errors.get("param")
        return -1 if e is None else e.ulp

    @property
    def max_ulp(self) -> int:
        values = [e.ulp for e in self.errors.values()]
        return -1 if -1 in values else max(values, default=0)


def _capped(ulp: int) -> int:
    return ULP_CAP if ulp < 0 else ulp


@dataclass(frozen=True)
class Match:
    """How well one formula explains an implementation's traces, case by case.

    ``names`` are the catalog variants equal to the formula on these traces; ``complete`` is
    False when the search stopped scoring it once it could no longer win."""

    formula: Formula
    scores: tuple[CaseScore, ...]
    cases: int  # measured cases (M in "within budget on N/M cases")
    names: tuple[str, ...] = ()

    @property
    def variant(self) -> str:
        """The name it is reported by: its first catalog name, else its formula."""
        return self.names[0] if self.names else self.formula.name

    @property
    def complete(self) -> bool:
        return len(self.scores) == self.cases

    @property
    def within(self) -> int:
        return sum(s.within for s in self.scores)

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(s.case for s in self.scores if not s.within)

    @property
    def errors(self) -> StepErrors:
        return worst([s.errors for s in self.scores])

    @property
    def score(self) -> float:
        """The largest budget multiple over the cases (<= 1: within budget on every case)."""
        return max((s.multiple for s in self.scores), default=math.inf)

    @property
    def max_ulp(self) -> int:
        values = [s.max_ulp for s in self.scores]
        return -1 if -1 in values else max(values, default=0)

    @property
    def param_ulp(self) -> int:
        values = [s.param_ulp for s in self.scores]
        return -1 if -1 in values else max(values, default=-1)

    @property
    def excess(self) -> float:
        """How far the failing cases are off: the sum of their log2 budget multiples."""
        return sum(min(math.log2(s.multiple), 1e6) for s in self.scores if not s.within)

    def key(self, documented: str = "") -> tuple:
        """Best first: complete; most cases within budget; the failing ones least off (the
        evidence, :meth:`evidence`); then, among formulas the evidence cannot tell apart,
        the documented variant (a tie is not evidence against the documentation), catalog
        formulas before the search's own, the smallest parameter errors, then all errors
        (two formulas can both be rounding-sized yet one exact), fewer changes."""
        return (
            *self.evidence(),
            documented not in self.names if documented else True,
            not self.names,
            sum(_capped(s.param_ulp) for s in self.scores),
            sum(_capped(e.ulp) for s in self.scores for e in s.errors.values()),
            self.formula.changes,
            self.variant,
        )

    def evidence(self) -> tuple[bool, int, float]:
        """What ranks formulas apart: complete, cases within budget, how far the rest are."""
        return (not self.complete, -self.within, round(self.excess, 9))

    def summary(self) -> str:
        """ "within budget on 3/4 cases; fails disc-weight-decay (6323 ULP param)"."""
        text = f"within budget on {self.within}/{self.cases} cases"
        failing = [s for s in self.scores if not s.within]
        if failing:
            shown = ", ".join(
                f"{s.case} ({'NaN/inf' if s.max_ulp < 0 else f'{s.max_ulp} ULP'})"
                for s in failing[:4]
            )
            more = f" and {len(failing) - 4} more" if len(failing) > 4 else ""
            text += f"; fails {shown}{more}"
        return text


def _measured(traces: Iterable[Trace]) -> list[Trace]:
    return [t for t in traces if t.steps]


def score_cases(
    traces: Sequence[Trace],
    formula: Formula,
    budget: Budget = DEFAULT,
    *,
    step_offset: int = 0,
    exclude: Exclusion | None = None,
    give_up: Callable[[Sequence[CaseScore]], bool] | None = None,
) -> tuple[CaseScore, ...]:
    """Each measured trace against ``formula`` (over the coordinates ``exclude`` does not
    mask); stops early once ``give_up`` says the cases scored so far settle it."""
    out: list[CaseScore] = []
    for trace in _measured(traces):
        try:
            errors = worst(
                lockstep(
                    with_facts(trace, formula.facts),
                    formula.variant,
                    step_offset=step_offset,
                    exclude=exclude,
                )
            )
        except (ValueError, ArithmeticError):
            # a candidate the oracle cannot evaluate here (RAdam with a beta2 held as 1:
            # rho_inf is not a number) explains nothing
            out.append(CaseScore(trace.problem.name, {}, math.inf))
        else:
            out.append(CaseScore(trace.problem.name, errors, budget_multiple(errors, budget)))
        if give_up is not None and give_up(out):
            break
    return tuple(out)


def score_variant(
    traces: Sequence[Trace],
    variant: Variant,
    budget: Budget = DEFAULT,
    *,
    step_offset: int = 0,
    exclude: Exclusion | None = None,
) -> tuple[float, StepErrors]:
    """Worst budget multiple over traces, and the worst error per component (over the
    coordinates ``exclude`` does not mask)."""
    scores = score_cases(traces, Formula(variant), budget, step_offset=step_offset, exclude=exclude)
    return max((s.multiple for s in scores), default=math.inf), worst([s.errors for s in scores])


# ------------------------------------------------------------------ the axis-space search


def _sparse(traces: Sequence[Trace]) -> bool:
    return any(isinstance(g, SparseRows) for t in traces for r in t.steps for g in r.grads)


def _carries_powers(traces: Sequence[Trace]) -> bool:
    return any("beta1_power" in r.before.extras for t in traces for r in t.steps)


def canonical(variant: Variant, traces: Sequence[Trace]) -> Variant:
    """``variant`` with the axes these traces cannot show set to the paper's values: weight
    decay when no trace has any, sparse semantics without sparse gradients, eps_root (and
    eps_hat_adaptive, which is Algorithm 1 in exact arithmetic) placements when eps_root is
    0, accumulated bias corrections when no beta power is carried."""
    hypers = [t.hyper for t in traces if t.hyper is not None]
    changes: dict = {}
    if not any(h.weight_decay for h in hypers):
        changes["weight_decay"] = WeightDecay.NONE
    if not _sparse(traces):
        changes["sparse"] = SparseSemantics.DENSE_EQUIVALENT
        changes["duplicates"] = DuplicateIndices.SUM_THEN_SQUARE
    if variant.eps_placement is EpsPlacement.EPS_HAT_ADAPTIVE or (
        variant.eps_placement is EpsPlacement.EPS_ROOT and not any(h.eps_root for h in hypers)
    ):
        changes["eps_placement"] = EpsPlacement.ALGORITHM_1
    if not _carries_powers(traces):
        for axis in ("bias_correction_m", "bias_correction_v"):
            if getattr(variant, axis) is BiasCorrection.ACCUMULATED:
                changes[axis] = BiasCorrection.POWER
    try:
        return variant.replace(**changes)
    except VariantError:  # e.g. RAdam keeps its eps-hat form
        changes.pop("eps_placement", None)
        return variant.replace(**changes)


def _axis_values(current: Variant, traces: Sequence[Trace]) -> Iterator[Variant]:
    """Every variant one axis away from ``current`` that these traces can tell apart from it
    (both bias corrections at once count as one change)."""
    seen = {current}
    for name, value in current.axes().items():
        members = (not value,) if name == "maximize" else type(getattr(current, name))
        for member in members:
            if member == getattr(current, name):
                continue
            changes = {name: member}
            if member == AmsGrad.MAX_RAW_V_UNCORRECTED:
                changes["bias_correction_v"] = BiasCorrection.NONE
            yield from _coherent(current, changes, traces, seen)
    for member in BiasCorrection:
        changes = {"bias_correction_m": member, "bias_correction_v": member}
        yield from _coherent(current, changes, traces, seen)


def _coherent(current: Variant, changes: dict, traces, seen: set) -> Iterator[Variant]:
    try:
        variant = canonical(current.replace(**changes), traces)
    except VariantError:
        return
    if variant not in seen:
        seen.add(variant)
        yield variant


def neighbours(formula: Formula, traces: Sequence[Trace]) -> Iterator[Formula]:
    """Every formula one change away: one axis, or one hyperparameter fact added."""
    for variant in _axis_values(formula.variant, traces):
        yield Formula(variant, formula.facts)
    present = {f.name for f in formula.facts}
    for fact in candidates(traces, formula.variant):
        if fact.name not in present:
            yield formula.with_fact(fact)


@dataclass
class Fingerprint:
    """The ranked formulas (complete matches only, best first) and the claim, if any."""

    matches: list[Match]
    documented: str = ""
    catalog: dict[str, Match] = field(default_factory=dict)  # every catalog name's match

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    @property
    def ties(self) -> list[Match]:
        """The catalog formulas within budget on exactly the best one's cases: these problems
        cannot tell them apart from it (the search's own by-products are not listed)."""
        best = self.best
        if best is None or best.within == 0:
            return []
        return [m for m in self.matches[1:] if m.names and m.failing == best.failing]


def fingerprint(
    traces: Sequence[Trace],
    budget: Budget = DEFAULT,
    documented: str = "",
    *,
    candidates_: Sequence[str] | None = None,
    search: bool = True,
) -> Fingerprint:
    """Rank the catalog formulas (``candidates_``: a subset of names) on ``traces`` and,
    with ``search``, improve the best :data:`BEAM` of them one change at a time
    (:func:`neighbours`) while the ranking improves. A fact must add cases within budget or
    bring failing ones closer: it never wins on rounding-sized ULPs alone."""
    measured = _measured(traces)
    names = list(candidates_) if candidates_ is not None else [e.name for e in entries()]
    if not measured:
        return Fingerprint([], documented)
    by_formula: dict[Formula, list[str]] = {}
    for name in names:
        by_formula.setdefault(Formula(canonical(entry(name).variant, measured)), []).append(name)
    scored: dict[Formula, Match] = {}
    total = len(measured)
    for formula, group in by_formula.items():
        scored[formula] = Match(formula, score_cases(measured, formula, budget), total,
                                tuple(group))  # fmt: skip
    if search:
        starts = sorted(scored.values(), key=lambda m: m.key(documented))[:BEAM]
        for start in starts:
            found = min(scored.values(), key=lambda m: m.key(documented))
            if not found.failing and found.complete:
                break  # within budget everywhere: nothing left to explain
            _descend(start, measured, budget, documented, scored, by_formula)
    complete = sorted((m for m in scored.values() if m.complete),
                      key=lambda m: m.key(documented))  # fmt: skip
    catalog = {n: m for m in scored.values() for n in m.names}
    return Fingerprint(complete, documented, catalog)


def _descend(
    current: Match,
    traces: Sequence[Trace],
    budget: Budget,
    documented: str,
    scored: dict[Formula, Match],
    by_formula: dict[Formula, list[str]],
) -> None:
    """Move from ``current`` to its best neighbour while that adds cases within budget or
    brings failing ones closer (rounding-sized ULPs alone never move the search: they
    cannot tell formulas apart). Neighbours stop being scored once they fail more cases
    than ``current`` (they cannot win)."""
    for _ in range(ROUNDS):
        if not current.failing:
            return
        best = current
        for formula in neighbours(current.formula, traces):
            match = scored.get(formula)
            if match is None:
                # the cases the best so far fails first: a neighbour that does no better
                # there cannot win, and is scored no further
                failing = set(best.failing)
                ordered = sorted(traces, key=lambda t: t.problem.name not in failing)
                scores = score_cases(ordered, formula, budget, give_up=_cannot_beat(best))
                match = Match(formula, scores, len(traces), tuple(by_formula.get(formula, ())))
                scored[formula] = match
            if match.key(documented) < best.key(documented):
                best = match
        if best.evidence() >= current.evidence():
            return
        current = best


def _cannot_beat(current: Match) -> Callable[[Sequence[CaseScore]], bool]:
    """Whether cases scored so far (``current``'s failing ones first) show that a formula
    cannot beat ``current``: more failures, or as many as far off."""
    n, excess = len(current.failing), current.excess

    def settled(scores: Sequence[CaseScore]) -> bool:
        lost = [s for s in scores if not s.within]
        off = sum(min(math.log2(s.multiple), 1e6) for s in lost)
        return len(lost) > n or (len(scores) >= n and len(lost) == n and off >= excess)

    return settled


def rank_variants(
    traces: Sequence[Trace],
    candidates: Sequence[str] | None = None,
    budget: Budget = DEFAULT,
    documented: str = "",
) -> list[Match]:
    """Catalog formulas ordered from best to worst match (no search): one :class:`Match`
    per formula, naming every catalog name equal to it on these traces."""
    return fingerprint(traces, budget, documented, candidates_=candidates, search=False).matches


def describe(fp: Fingerprint, claimed: str = "") -> str:
    """One sentence: the formula as axes, its catalog names, per-case evidence, the formulas
    these problems cannot tell from it and the claim (none when nothing is claimed)."""
    best = fp.best
    claim = f"; claimed {claimed}" if claimed else "; nothing claimed"
    if best is None:
        return f"nothing measured{claim}"
    formula = best.formula.name
    others = [n for n in best.names if n != formula]
    names = f" (= {', '.join(others)})" if others else "" if best.names else " (no catalog name)"
    verb = "computes" if best.within == best.cases else "closest to"
    head = f"{verb} {formula}{names}: {best.summary()}"
    ties = fp.ties
    if ties:
        shown = [t.variant for t in ties[:6]]
        more = f" and {len(ties) - 6} more" if len(ties) > 6 else ""
        head += f"; not told apart on these problems from: {', '.join(shown)}{more}"
    return head + claim


# ----------------------------------------------------------------------- separation


@dataclass(frozen=True)
class Pair:
    variant_a: str
    variant_b: str
    max_ulp: int
    component: str
    case: str
    relation: str
    axes: str


def _common_states(problem: Problem, dtype: str, seed: int, hyper) -> list[tuple[State, list]]:
    """The states the pairs are compared from: the paper's rounded trajectory of ``problem``."""
    variant = entry("paper.algorithm1").variant.replace(amsgrad=AmsGrad.MAX_RAW_V_THEN_CORRECT)
    params = problem.initial_params(dtype, seed)
    m, v, v_max = problem.initial_state(dtype, seed, True)
    state = State(list(params), list(m), list(v), list(v_max), problem.start_step)
    out = []
    for t in range(problem.steps):
        grads = list(problem.gradients(t, state.params, dtype, seed))
        out.append((state, grads))
        ref = oracle_step(variant, hyper, list(state.params), grads, oracle_state(state, variant))
        state = State(
            ref.rounded["param"],
            ref.rounded["m"],
            ref.rounded["v"],
            ref.rounded["v_max"],
            state.step + 1,
        )
    return out


def _differing_axes(a: Variant, b: Variant) -> str:
    ax, bx = a.axes(), b.axes()
    return " ".join(f"{k}" for k in ax if ax[k] != bx[k])


def _hyper_of(problem: Problem) -> Hyper:
    """The paper's defaults with the problem's overrides: the same for both of a pair."""
    defaults = {"lr": "0.001", "beta1": "0.9", "beta2": "0.999", "eps": "1e-8"}
    return make_hyper(**{**defaults, **dict(problem.hyper)})


def _distance(a: Any, b: Any, comps: Sequence[str], tensors: int, fmt) -> tuple[int, str]:
    """The largest ULP distance between two oracle results over ``comps`` (capped at int64's
    largest for NaN/inf mismatches), and its component."""
    best = (-1, "")
    for comp in comps:
        for k in range(tensors):
            d = np.asarray(ulp_distance(a.value(comp, k), b.value(comp, k), fmt))
            value = int(np.iinfo(np.int64).max) if np.any(d < 0) else int(d.max())
            if value > best[0]:
                best = (value, comp)
    return best


def _compared(a: Variant, b: Variant) -> list[str]:
    comps = ["param", "m", "v"]
    if AmsGrad.OFF not in (a.amsgrad, b.amsgrad):
        comps.append("v_max")
    return comps


def separating_problem(
    a: Formula,
    b: Formula,
    problems: Sequence[Problem],
    dtypes: Sequence[str] = ("float32", "bfloat16", "float16"),
    seed: int = 0,
) -> str:
    """The first of ``problems`` x ``dtypes`` on which the exact steps of ``a`` and ``b`` from
    a common state are :data:`SEPARATION_THRESHOLD_ULP` apart or more ("disc-eps/bfloat16
    (5120 ULP param)"), or "" when none is."""
    for problem, dtype in itertools.product(problems, dtypes):
        hyper = _hyper_of(problem)
        ha, hb = apply_all(a.facts, hyper), apply_all(b.facts, hyper)
        fmt = format_named(dtype)
        for state, grads in _common_states(problem, dtype, seed, hyper):
            ra = oracle_step(a.variant, ha, list(state.params), grads,
                             oracle_state(state, a.variant))  # fmt: skip
            rb = oracle_step(b.variant, hb, list(state.params), grads,
                             oracle_state(state, b.variant))  # fmt: skip
            value, comp = _distance(ra, rb, _compared(a.variant, b.variant),
                                    len(state.params), fmt)  # fmt: skip
            if value >= SEPARATION_THRESHOLD_ULP:
                shown = "NaN/inf" if value == np.iinfo(np.int64).max else f"{value} ULP"
                return f"{problem.name}/{dtype} ({shown} {comp})"
    return ""


def separation(
    problems: Sequence[Problem],
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    seed: int = 0,
    candidates: Sequence[str] | None = None,
) -> list[Pair]:
    """For every pair of catalog variants, the largest ULP distance between their rounded
    exact steps from the same state, over ``problems`` x ``dtypes``.

    Hyperparameters are the paper's defaults with each problem's overrides, the same
    for both members of a pair, so only the formulas (and how each holds its
    hyperparameters) differ. A pair that never differs by more than the default budget
    (3 ULP) is "within rounding": no measurement of a kernel tells them apart.
    """
    names = list(candidates) if candidates is not None else [e.name for e in entries()]
    variants = {n: entry(n).variant for n in names}
    distinct = list(dict.fromkeys(variants.values()))
    worst_pair: dict[tuple[Variant, Variant], tuple[int, str, str]] = {}
    for problem, dtype in itertools.product(problems, dtypes):
        hyper = _hyper_of(problem)
        fmt = format_named(dtype)
        for state, grads in _common_states(problem, dtype, seed, hyper):
            results = {}
            for variant in distinct:
                st = oracle_state(state, variant)
                results[variant] = oracle_step(variant, hyper, list(state.params), grads, st)
            for a, b in itertools.combinations(distinct, 2):
                value, comp = _distance(results[a], results[b], _compared(a, b),
                                        len(state.params), fmt)  # fmt: skip
                if value > worst_pair.get((a, b), (-1, "", ""))[0]:
                    worst_pair[(a, b)] = (value, comp, f"{problem.name}/{dtype}")
    pairs = []
    for name_a, name_b in itertools.combinations(names, 2):
        a, b = variants[name_a], variants[name_b]
        if a == b:
            pairs.append(Pair(name_a, name_b, 0, "", "", IDENTICAL, ""))
            continue
        value, comp, case = worst_pair.get((a, b)) or worst_pair.get((b, a)) or (0, "", "")
        pairs.append(Pair(name_a, name_b, value, comp, case, relation(value),
                          _differing_axes(a, b)))  # fmt: skip
    return pairs


IDENTICAL = "identical formula"
EQUAL = "equal for this configuration"
WITHIN_ROUNDING = "within rounding"
WEAK = "weak"
SEPARATED = "separated"


def relation(max_ulp: int) -> str:
    """How far apart two formulas are on a problem set: separated (>= the threshold), weak,
    within rounding (never more than the smallest default budget apart: no kernel
    measurement tells them apart), or equal (0 ULP everywhere)."""
    if max_ulp == 0:
        return EQUAL
    if max_ulp <= min(DEFAULT.ulp.values()):
        return WITHIN_ROUNDING
    return WEAK if max_ulp < SEPARATION_THRESHOLD_ULP else SEPARATED
