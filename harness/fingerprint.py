"""Fingerprinting: which catalog variant an implementation actually computes.

Every catalog variant is evaluated in lock-step against the same recorded
traces (:func:`adamspec.harness.engine.lockstep`), and ranked by how many ULP budgets
its worst component spends. The ranking is only as good as the problems'
power to tell variants apart, so :func:`separation` measures that power
directly: for every pair of catalog variants, how far apart their exact steps
are from a common state, on the same problems.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from adamspec.harness.budgets import DEFAULT, SEPARATION_THRESHOLD_ULP, Budget
from adamspec.harness.engine import (
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
from adamspec.harness.problems import Problem
from adamspec.oracles.metrics import ulp_distance
from adamspec.spec.axes import AmsGrad
from adamspec.spec.catalog import entries, entry
from adamspec.spec.formats import format_named
from adamspec.spec.hyper import make_hyper
from adamspec.spec.variant import Variant


@dataclass(frozen=True)
class Match:
    """How well one catalog variant explains an implementation's traces."""

    variant: str
    errors: StepErrors
    score: float  # budget multiple of the worst component (<= 1: within budget)
    cases: int

    @property
    def max_ulp(self) -> int:
        values = [e.ulp for e in self.errors.values()]
        return -1 if -1 in values else max(values, default=0)

    @property
    def param_ulp(self) -> int:
        return self.errors["param"].ulp if "param" in self.errors else -1


def _measured(traces: Iterable[Trace]) -> list[Trace]:
    return [t for t in traces if t.steps]


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
    per_trace = [
        worst(lockstep(t, variant, step_offset=step_offset, exclude=exclude))
        for t in _measured(traces)
    ]
    merged = worst(per_trace)
    score = max((budget_multiple(e, budget) for e in per_trace), default=float("inf"))
    return score, merged


def rank_variants(
    traces: Sequence[Trace],
    candidates: Sequence[str] | None = None,
    budget: Budget = DEFAULT,
    documented: str = "",
) -> list[Match]:
    """Catalog variants ordered from best to worst match (identical formulas scored once).

    Variants the traces cannot tell apart tie; the documented one is then listed first
    (a tie is not evidence against the documentation)."""
    names = list(candidates) if candidates is not None else [e.name for e in entries()]
    measured = _measured(traces)
    by_formula: dict[Variant, tuple[float, StepErrors]] = {}
    matches = []
    for name in names:
        variant = entry(name).variant
        if variant not in by_formula:
            by_formula[variant] = score_variant(measured, variant, budget)
        score, errors = by_formula[variant]
        matches.append(Match(name, errors, score, len(measured)))
    return sorted(matches, key=lambda m: match_order(m, documented))


def match_order(m: Match, documented: str = "") -> tuple:
    """Within budget first; then the smallest worst-component ULP error (the finer measure:
    two variants can both be rounding-sized yet one is exact), then budget multiple."""
    within = m.score <= 1
    return (
        not within,
        m.max_ulp < 0,
        m.max_ulp if within else 0,
        m.score,
        m.variant != documented,
        m.variant,
    )


def describe(matches: Sequence[Match], documented: str) -> str:
    """One sentence: "matches X within 0.5 budgets (same formula: Y); documents Z"."""
    if not matches or matches[0].score == float("inf"):
        return f"no catalog variant matches; documents {documented}"
    best = matches[0]
    formula = entry(best.variant).variant
    same = [m.variant for m in matches[1:] if entry(m.variant).variant == formula]
    tied = [
        m.variant
        for m in matches[1:]
        if m.variant not in same and (m.score, m.max_ulp) == (best.score, best.max_ulp)
    ]
    head = f"matches {best.variant} within {best.max_ulp} ULP"
    if best.score > 1:
        head = f"closest to {best.variant} ({best.max_ulp} ULP, over budget)"
    if same:
        head += f" (same formula: {', '.join(same)})"
    if tied:
        head += f" (indistinguishable on these problems: {', '.join(tied)})"
    return f"{head}; documents {documented}"


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
    hyperparameters) differ.
    """
    names = list(candidates) if candidates is not None else [e.name for e in entries()]
    variants = {n: entry(n).variant for n in names}
    distinct = list(dict.fromkeys(variants.values()))
    worst_pair: dict[tuple[Variant, Variant], tuple[int, str, str]] = {}
    for problem, dtype in itertools.product(problems, dtypes):
        hyper = make_hyper(
            **{
                "lr": "0.001",
                "beta1": "0.9",
                "beta2": "0.999",
                "eps": "1e-8",
                **dict(problem.hyper),
            }
        )
        fmt = format_named(dtype)
        for state, grads in _common_states(problem, dtype, seed, hyper):
            results = {}
            for variant in distinct:
                st = oracle_state(state, variant)
                results[variant] = oracle_step(variant, hyper, list(state.params), grads, st)
            for a, b in itertools.combinations(distinct, 2):
                comps = ["param", "m", "v"]
                if AmsGrad.OFF not in (a.amsgrad, b.amsgrad):
                    comps.append("v_max")
                for comp in comps:
                    for k in range(len(state.params)):
                        d = np.asarray(
                            ulp_distance(results[a].value(comp, k), results[b].value(comp, k), fmt)
                        )
                        value = int(np.iinfo(np.int64).max) if np.any(d < 0) else int(d.max())
                        if value > worst_pair.get((a, b), (-1, "", ""))[0]:
                            worst_pair[(a, b)] = (value, comp, f"{problem.name}/{dtype}")
    pairs = []
    for name_a, name_b in itertools.combinations(names, 2):
        a, b = variants[name_a], variants[name_b]
        if a == b:
            pairs.append(Pair(name_a, name_b, 0, "", "", "identical formula", ""))
            continue
        value, comp, case = worst_pair.get((a, b)) or worst_pair.get((b, a)) or (0, "", "")
        relation = (
            "equal for this configuration"
            if value == 0
            else "weak"
            if value < SEPARATION_THRESHOLD_ULP
            else "separated"
        )
        pairs.append(Pair(name_a, name_b, value, comp, case, relation, _differing_axes(a, b)))
    return pairs
