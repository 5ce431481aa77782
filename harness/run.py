"""The main job: every selected implementation on a problem suite, fingerprinted and classified.

Per implementation, a fingerprint task, one task per problem (its trace, lock-step and
free-running errors, classification) and a counterexample search, and for a compiled
implementation whose eager counterpart runs too, one pair task
(:mod:`adamspec.harness.pairs`); plus one task for the separation matrix; tasks run in
this process, local worker processes (``jobs``) or a Dask cluster (``scheduler``,
:mod:`adamspec.harness.cluster`), and their rows are merged in a fixed order, so the tables
depend only on the seed and the configuration.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from adamspec.harness.budgets import DEFAULT, Budget, budget_for
from adamspec.harness.chunks import PROFILE_BINS
from adamspec.harness.classify import (
    FORMAT_RANGE,
    INDEX_DEPENDENT,
    ROUNDING_ONLY,
    UNEXPLAINED,
    Classification,
    classify,
    seen_by,
)
from adamspec.harness.cluster import Executor, Failed, Task
from adamspec.harness.cluster import executor as cluster_executor
from adamspec.harness.console import Progress, as_progress
from adamspec.harness.engine import (
    StepErrors,
    Trace,
    budget_multiple,
    oracle_clock,
    record_trace,
    use_oracle,
    worst,
)
from adamspec.harness.fingerprint import (
    Fingerprint,
    Formula,
    Match,
    describe,
    fingerprint,
    score_cases,
    separating_problem,
    separation,
)
from adamspec.harness.localize import localize
from adamspec.harness.pairs import diverging_cases, fingerprint_formula, pair_rows
from adamspec.harness.power import Candidates, merge_candidates
from adamspec.harness.problems import DISCRIMINATING, PROBLEMS, Problem, resized, suite
from adamspec.harness.stream import CaseRecord, verify_case
from adamspec.impl.adapters import REGISTRY, AdapterInfo, load_registry, static_names
from adamspec.impl.adapters.worker import quiet_framework_logs
from adamspec.impl.frameworks import availability
from adamspec.oracles.fast import counting
from adamspec.oracles.metrics import bits_error
from adamspec.reports.tiers import RANGE, tier_text
from adamspec.spec.catalog import entry, formula_name, same_formula
from adamspec.spec.hyper import Hyper
from adamspec.spec.precision import precision_named
from adamspec.spec.variant import Variant

#: How many of an implementation's best fingerprint matches are tried as each case's match.
MATCH_CANDIDATES = 5
#: How many of the formulas tied with the fingerprint's best get a separating problem named.
SEPARATED_TIES = 3


class RunUsageError(ValueError):
    """A bad run configuration (unknown implementation pattern, suite, dtype)."""


@dataclass(frozen=True)
class RunConfig:
    implementations: tuple[str, ...] = ()  # fnmatch patterns; empty: every registered one
    suite: str = "default"
    fingerprint_suite: str = "discriminating"
    dtype: str = "float32"
    seed: int = 0
    jobs: int = 1
    #: None (this process, or ``jobs`` local Dask workers), "local" or "tcp://HOST:PORT"
    scheduler: str | None = None
    budget: Budget = DEFAULT
    separation_dtypes: tuple[str, ...] = ("float32", "bfloat16")
    #: hypothesis examples per stage of each minimal-counterexample search (0: no search)
    counterexample_examples: int = 100
    separation: bool = True  # compute the separation matrix (the engine's self-check)
    oracle: str = "fast"  # "fast" (certified, identical answers) or "mpmath"
    #: implementations that claim nothing (``adamspec check`` without --variant): their
    #: registered variant only supplies default hyperparameters, the fingerprint's best
    #: formula is the reference, and no table records a claim
    unclaimed: tuple[str, ...] = ()
    size: int | None = None  # --size: coordinates per tensor of the suite's open-loop problems
    steps: int | None = None  # --steps: steps of every problem of the suite

    def problems(self) -> tuple[Problem, ...]:
        """The suite's problems at ``size`` and ``steps`` (:func:`resized`; the fingerprint
        suite and the discriminating problems of any suite keep their own, which are chosen
        to separate the catalog's variants)."""
        if self.size is None and self.steps is None:
            return suite(self.suite)
        return tuple(p if p.name in DISCRIMINATING else resized(p, self.size, self.steps)
                     for p in suite(self.suite))  # fmt: skip

    def key(self) -> str:
        """What the tables depend on (not where tasks run): checkpoints of another key are
        stale."""
        import hashlib

        text = repr(replace(self, jobs=1, scheduler=None))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Tables:
    """Rows of the record tables of :mod:`adamspec.reports.schema`, and the counterexample
    scripts (path relative to the output folder -> text) the summary rows link to."""

    results: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    fingerprints: list[dict[str, Any]] = field(default_factory=list)
    separation: list[dict[str, Any]] = field(default_factory=list)
    counterexamples: dict[str, str] = field(default_factory=dict)
    #: implementation -> its fingerprint in one sentence (fingerprint.describe)
    fingerprint_text: dict[str, str] = field(default_factory=dict)
    #: error-vs-index profile rows of the failing cases (:data:`PROFILE_COLUMNS`)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    #: the passing cases' most sensitive coordinates (:mod:`adamspec.harness.power`)
    power: Candidates = field(default_factory=dict)
    #: seconds spent in the implementations ("kernel") and in the oracle ("oracle")
    seconds: dict[str, float] = field(default_factory=dict)
    #: compiled implementations beside their eager counterparts (:mod:`adamspec.harness.pairs`)
    pairs: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Tables) -> None:
        for name in ("results", "summary", "fingerprints", "separation", "profiles", "pairs"):
            getattr(self, name).extend(getattr(other, name))
        self.counterexamples.update(other.counterexamples)
        self.fingerprint_text.update(other.fingerprint_text)
        self.power = merge_candidates(self.power, other.power)
        for what, value in other.seconds.items():
            self.seconds[what] = self.seconds.get(what, 0.0) + value

    def write(self, out: str | os.PathLike[str], meta: dict[str, Any]) -> dict[str, Path]:
        """Every report of :func:`adamspec.reports.write_reports` and the counterexample scripts."""
        from adamspec.reports import write_reports

        return write_reports(
            out,
            self.results,
            self.summary,
            self.fingerprints,
            self.separation,
            meta,
            self.counterexamples,
            profiles=self.profiles,
            pairs=self.pairs,
        )


def select(patterns: Sequence[str]) -> list[str]:
    """Registered implementations matching any pattern (all when none), in registry order.

    Patterns are globs where only ``*`` and ``?`` are special."""
    load_registry()
    names = list(REGISTRY)
    if not patterns:
        return names
    chosen = []
    for pattern in patterns:
        # only * and ? are wildcards: names contain brackets ("keras.Adam[jax]")
        regex = re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$")
        hits = [n for n in names if regex.match(n)]
        if not hits:
            raise RunUsageError(
                f"--impl {pattern!r} matches no implementation; see `adamspec run --list`"
            )
        chosen.extend(h for h in hits if h not in chosen)
    return [n for n in names if n in chosen]


# ------------------------------------------------------------------------ one implementation


def _row(trace: Trace, reference: str, mode: str, errors: StepErrors, step: int) -> list[dict]:
    rows = []
    for component, e in errors.items():
        bits = bits_error(e.ulp)
        rows.append(
            {
                "implementation": trace.implementation,
                "framework": trace.framework,
                "framework_version": trace.framework_version,
                "documented_variant": trace.documented,
                "reference_variant": reference,
                "case": trace.problem.name,
                "regime": trace.problem.regime,
                **precision_columns(trace.dtype),
                "mode": mode,
                "step": step,
                "component": component,
                "ulp_error": e.ulp,
                "bits_error": math.nan if bits is None else bits,
                "scaled_ulp": e.scaled,
                "outcome": e.outcome,
                "coordinates": e.coordinates,
            }
        )
    return rows


def precision_columns(precision: str) -> dict[str, str]:
    """The ``dtype`` (the param's) and ``precision`` (its name, :mod:`adamspec.spec.precision`)
    columns of a row measured under ``precision``."""
    named = precision_named(precision)
    return {"dtype": named.param, "precision": named.name}


def _worst_component(errors: StepErrors, budget: Budget) -> str:
    if not errors:
        return ""
    return max(errors, key=lambda c: (budget.multiple(c, errors[c].ulp, errors[c].scaled), c))


def _max_ulp(errors: StepErrors) -> int:
    values = [e.ulp for e in errors.values()]
    return -1 if -1 in values else max(values, default=0)


def _summary(
    trace: Trace,
    per_step: list[StepErrors],
    free: list[StepErrors],
    matched: tuple[str, list[str]],
    category: str,
    detail: str,
    budget: Budget,
    claimed: str,
) -> dict:
    total: StepErrors = worst(per_step)
    per_step_max = [_max_ulp(e) for e in per_step]
    measurable = [u for u in per_step_max if u >= 0]
    if trace.status == "skipped":
        verdict = "skipped"
    elif trace.status == "error":
        verdict = "error"
    elif budget_multiple(total, budget) <= 1:
        verdict = "pass"
    else:  # off only where the dtype cannot hold the exact values: not a discrepancy
        verdict = RANGE if category == FORMAT_RANGE else "discrepancy"
    return {
        "implementation": trace.implementation,
        "framework": trace.framework,
        "framework_version": trace.framework_version,
        "case": trace.problem.name,
        **precision_columns(trace.dtype),
        "steps": trace.steps_run,
        "max_ulp": _max_ulp(total) if per_step else 0,
        "median_ulp": float(statistics.median(measurable)) if measurable else math.nan,
        "max_free_ulp": _max_ulp(worst(free)) if free else 0,
        "worst_component": _worst_component(total, budget),
        "documented_variant": trace.documented,
        "matched_variant": matched[0],
        "category": category,
        "verdict": verdict,
        "detail": detail,
        "counterexample": "",
        "claimed": claimed,
        "tied_with": "; ".join(matched[1]),
        "kernel_output": " | ".join(trace.kernel_output.splitlines()),
    }


def _slug(name: str) -> str:
    """A file name from an implementation name ("keras.Adam[jax]" -> "keras.Adam_jax_")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def reference_name(variant: Variant) -> str:
    """How a formula is named in the tables: its first catalog name, else its axes."""
    names = same_formula(variant)
    return names[0] if names else formula_name(variant)


def _case_candidates(fp: Fingerprint, claimed: str) -> list[tuple[str, Formula]]:
    """The formulas each case is matched against: the claim, then the fingerprint's best
    :data:`MATCH_CANDIDATES` (each by its name in the tables)."""
    out: dict[str, Formula] = {}
    if claimed:
        out[claimed] = Formula(entry(claimed).variant)
    for m in fp.matches[:MATCH_CANDIDATES]:
        out.setdefault(m.variant, m.formula)
    return list(out.items())


def match_case(
    trace: Trace,
    candidates: Sequence[tuple[str, Formula]],
    budget: Budget,
    preferred: str,
    verdict: Classification | None = None,
) -> tuple[str, list[str]]:
    """The candidate measured within budget on this case, and the others also within budget
    (the case cannot tell them apart): ``preferred`` (the claim; without one, the
    fingerprint's best over every fingerprint case) when it is within budget, else the best.
    A "format range" case is measured under its own exclusion; a case no candidate explains
    is matched to the formula its classification found, if any."""
    exclude, seen = None, trace
    if verdict is not None and verdict.hypothesis is not None:
        if verdict.category == FORMAT_RANGE:
            exclude, seen = verdict.hypothesis.exclude, seen_by(trace, verdict.hypothesis)
    ranked = []
    for name, formula in candidates:
        scores = score_cases([seen], formula, budget, exclude=exclude)
        match = Match(formula, scores, 1, (name,))
        if match.complete and match.within:
            ranked.append(match)
    ranked.sort(key=lambda m: m.key(preferred))
    names = [m.variant for m in ranked]
    if names:
        return names[0], names[1:]
    h = verdict.hypothesis if verdict is not None else None
    if h is not None and verdict.category != FORMAT_RANGE and not h.hyper_changes:
        return reference_name(h.variant), []
    return "", []


def _fingerprint_rows(
    name: str, fp: Fingerprint, claimed: str, precision: str
) -> list[dict[str, Any]]:
    """One row per catalog name (names of one formula share a rank), and the best formula's
    own row when no catalog name has it (measured under ``precision``)."""
    rows = []
    for rank, m in enumerate(fp.matches, start=1):
        if not m.names and rank > 1:
            continue  # the search's by-products: only its best formula is a finding
        for variant in m.names or (m.formula.name,):
            rows.append(
                {
                    "implementation": name,
                    **precision_columns(precision),
                    "variant": variant,
                    "rank": rank,
                    "max_ulp": m.max_ulp,
                    "param_max_ulp": m.param_ulp,
                    "cases": m.cases,
                    "documented": bool(claimed) and variant == claimed,
                    "within_budget": m.within == m.cases,
                    "formula": m.formula.name,
                    "within_cases": m.within,
                    "failing_cases": "; ".join(m.failing),
                }
            )
    return rows


#: Where a tie is looked for a separating problem: the discriminating problems, then the
#: cheap default ones (3 steps each); in float32, bfloat16 and float16.
SEPARATING_PROBLEMS = ("disc-eps", "disc-amsgrad", "disc-weight-decay", "disc-sparse",
                       "typical", "tiny-near-eps", "sign-flips-decreasing", "exact-zeros",
                       "weight-decay", "late-steps")  # fmt: skip


def separated_ties(fp: Fingerprint, seed: int = 0) -> dict[str, str]:
    """For up to :data:`SEPARATED_TIES` catalog variants tied with the best: a problem that
    tells their documented formulas apart ("" when none of :data:`SEPARATING_PROBLEMS`
    does)."""
    best = fp.best
    problems = [PROBLEMS[n].with_(steps=min(PROBLEMS[n].steps, 3)) for n in SEPARATING_PROBLEMS
                if n in PROBLEMS]  # fmt: skip
    return {
        tie.variant: separating_problem(
            best.formula,
            Formula(entry(tie.variant).variant, tie.formula.facts),
            problems,
            seed=seed,
        )
        for tie in fp.ties[:SEPARATED_TIES]
    }


def _fingerprint_sentence(fp: Fingerprint, claimed: str, seed: int) -> str:
    text = describe(fp, claimed)
    try:
        separated = separated_ties(fp, seed) if fp.ties else {}
    except Exception as exc:  # the sentence's extra: its failure must not lose the fingerprint
        return f"{text}; no separating problem searched: {type(exc).__name__}: {exc}"
    if separated:
        parts = [f"{n}: {where or 'no problem here separates them'}"
                 for n, where in separated.items()]  # fmt: skip
        text += f"; separated by: {'; '.join(parts)}"
    return text


# ------------------------------------------------------------------------ the tasks
# A run is a graph of tasks (harness/cluster.py): per implementation one fingerprint task,
# one task per problem (waiting for the fingerprint: it names the reference of an
# implementation that claims nothing, and its best formulas are each case's candidates)
# and one counterexample search (waiting for the cases); a compiled one also one pair task
# (waiting for both its and its eager counterpart's fingerprints and cases); plus the
# separation matrix. Each is a pure function of its arguments, so it may run in any
# process of any host; what it returns is merged by :func:`run` in a fixed order.


@dataclass
class Fingerprinted:
    """An implementation's fingerprint task: its rows (and sentence), and what each case is
    measured against: the reference formula and its name in the tables, the candidates a
    case is matched to, the one preferred among equals, and the claim ("" for none)."""

    tables: Tables
    variant: Variant
    reference: str
    candidates: list[tuple[str, Formula]]
    preferred: str
    claimed: str


@dataclass
class CaseOutcome:
    """One case task: its rows (one summary row) and what a counterexample search needs
    (its hyperparameters, whether its gradients are sparse, the reference's name)."""

    tables: Tables
    hyper: Hyper | None
    sparse: bool
    reference: str


def _prepare(info: AdapterInfo, config: RunConfig) -> RunConfig:
    """A task's process as the run's: the oracle chosen, framework logs quiet, and the
    implementation registered as this run registered it (a fresh worker knows only the
    static registry); the configuration with the implementation's own budget (ours: 0 ULP
    on every component, "correctly rounded by construction")."""
    use_oracle(config.oracle)  # a spawned worker starts with the default
    quiet_framework_logs()  # before the first framework import of this worker
    load_registry()
    REGISTRY[info.name] = info
    return replace(config, budget=budget_for(info.name, config.budget))


def fingerprint_task(info: AdapterInfo, config: RunConfig) -> Fingerprinted:
    """The implementation on the fingerprint suite: its formula over the axis space."""
    config = _prepare(info, config)
    out, name = Tables(), info.name
    claimed = "" if name in config.unclaimed else info.documented
    with oracle_clock() as oracle_seconds:
        traces = [record_trace(name, p, config.dtype, config.seed)
                  for p in suite(config.fingerprint_suite)]  # fmt: skip
        fp = fingerprint(traces, config.budget, documented=claimed)
        out.fingerprints += _fingerprint_rows(name, fp, claimed, config.dtype)
        if fp.best is not None:
            out.fingerprint_text[name] = _fingerprint_sentence(fp, claimed, config.seed)
    out.seconds = {"kernel": sum(t.kernel_seconds for t in traces), "oracle": oracle_seconds[0]}
    if claimed or fp.best is None:
        variant, reference = entry(info.documented).variant, info.documented
    else:  # no claim: the reference is what the kernel looks like
        variant = fp.best.formula.variant
        reference = reference_name(variant)
    preferred = claimed or (fp.best.variant if fp.best is not None else "")
    return Fingerprinted(out, variant, reference, _case_candidates(fp, claimed), preferred,
                         claimed)  # fmt: skip


def case_task(
    info: AdapterInfo, index: int, config: RunConfig, fingerprinted: Fingerprinted
) -> CaseOutcome:
    """The implementation on the suite's ``index``-th problem, verified and classified."""
    config = _prepare(info, config)
    out, problem, fp = Tables(), config.problems()[index], fingerprinted
    with oracle_clock() as oracle_seconds:
        with counting() as oracle_work:  # the case's own verification, not classification's
            case = verify_case(info.name, problem, config.dtype, config.seed, fp.variant,
                               config.budget)  # fmt: skip
        trace = case.trace
        trace.documented = fp.reference
        row = _case_row(case, fp.variant, fp.candidates, fp.preferred, fp.claimed, config)
    out.seconds = {"kernel": trace.kernel_seconds, "oracle": oracle_seconds[0]}
    row["oracle_fallback_rate"] = (
        oracle_work.fallback_rate if config.oracle == "fast" and case.lockstep else math.nan
    )
    out.summary.append(row)
    for errors, step in zip(case.lockstep, case.steps, strict=True):
        out.results += _row(trace, fp.reference, "lockstep", errors, step)
    for errors, step in zip(case.free, case.steps, strict=False):
        out.results += _row(trace, fp.reference, "free", errors, step)
    if row["failing_coordinates"]:
        out.profiles += _profile_rows(case)
    if row["verdict"] in ("pass", RANGE):
        out.power = case.power
    return CaseOutcome(out, trace.hyper, trace.problem.sparse, fp.reference)


def counterexample_task(info: AdapterInfo, config: RunConfig, *cases: CaseOutcome) -> Tables:
    """One minimal counterexample per distinct configuration (hyperparameters, sparse or
    not) among the discrepant cases: the scripts, and the cases' summary rows linking them
    (a failed search is said in the row's detail)."""
    config = _prepare(info, config)
    out = Tables()
    searched: dict[tuple, str] = {}
    for case in cases:
        row = dict(case.tables.summary[0])
        out.summary.append(row)
        if row["verdict"] != "discrepancy" or case.hyper is None:
            continue
        if row["category"] == INDEX_DEPENDENT:  # a small random state never reaches the index
            continue
        key = (case.hyper, case.sparse)
        if key not in searched:
            searched[key] = ""
            try:
                path, script = _search(info, case, config, sum(1 for v in searched.values() if v))
            except Exception as exc:  # a failed search must not lose the measured tables
                reason = f"no counterexample: {type(exc).__name__}: {exc}"
                row["detail"] = "; ".join(filter(None, [row["detail"], reason]))
                continue
            if path:
                out.counterexamples[path] = script
                searched[key] = path
        row["counterexample"] = searched[key]
    return out


def _search(info: AdapterInfo, case: CaseOutcome, config: RunConfig, found: int) -> tuple[str, str]:
    """The minimal counterexample of one discrepant case: its path and script ("" if none)."""
    from adamspec.harness.counterexample import minimal_counterexample, snippet

    assert case.hyper is not None
    ce = minimal_counterexample(
        info.name,
        case.hyper,
        case.reference,
        config.dtype,
        config.budget,
        max_examples=config.counterexample_examples,
        seed=config.seed,
        sparse=case.sparse,
    )
    if ce is None:
        return "", ""
    if info.name in config.unclaimed:  # the registered variant only gave defaults
        ce = replace(ce, info=replace(ce.info, documented=""))
    n = found + 1
    return f"counterexamples/{_slug(info.name)}{'' if n == 1 else f'-{n}'}{ce.suffix}", snippet(ce)


def _case_row(
    case: CaseRecord,
    variant: Variant,
    candidates: Sequence[tuple[str, Formula]],
    preferred: str,
    claimed: str,
    config: RunConfig,
) -> dict[str, Any]:
    """A case's summary row: its verdict against ``variant`` (the reference), the candidate
    it matches (:func:`match_case`), and for a discrepancy the category that explains it and
    where in the tensor it is (:mod:`adamspec.harness.localize`)."""
    trace, per_step = case.trace, case.lockstep
    where = localize(case.findings, trace.problem.shapes)
    matched, category, detail = ("", []), "", trace.detail
    if per_step and trace.steps:
        verdict = None
        # the lock-step errors are in hand: classify (which would recompute them) only
        # what is over budget
        if budget_multiple(worst(per_step), config.budget) <= 1:
            category = ROUNDING_ONLY
        else:
            verdict = classify([trace], variant, config.budget)
            category, explanation = verdict.category, verdict.explanation
            if category == UNEXPLAINED and where.index_dependent:
                category = INDEX_DEPENDENT
                explanation = (
                    f"failing {where.pattern}; the documented formula holds on the rest of "
                    "the tensor and no single change of it explains the error"
                )
            detail = "; ".join(filter(None, [explanation, trace.detail]))
        if category == INDEX_DEPENDENT:
            # the reference, off only at some indices: a closest formula over those
            # coordinates would be noise
            matched = (trace.documented, [])
        else:
            matched = match_case(trace, candidates, config.budget, preferred, verdict)
    row = _summary(trace, per_step, case.free, matched, category, detail, config.budget, claimed)
    row["first_failing_index"] = where.first_index
    row["failing_coordinates"] = where.count
    row["localization"] = where.text
    return row


def _profile_rows(case: CaseRecord) -> list[dict[str, Any]]:
    """A failing case's error-vs-index profile: per tensor and bin, the worst budget
    multiple (a NaN/inf mismatch: inf) over its coordinates and steps."""
    trace, rows = case.trace, []
    for k, found in sorted(case.findings.items()):
        edges = (np.arange(PROFILE_BINS + 1, dtype=np.int64) * found.size) // PROFILE_BINS
        for b, value in enumerate(found.profile):
            if edges[b + 1] <= edges[b]:
                continue  # a bin of no coordinate (tensors smaller than the bins)
            rows.append(
                {
                    "implementation": trace.implementation,
                    "case": trace.problem.name,
                    "tensor": k,
                    "first_index": int(edges[b]),
                    "last_index": int(edges[b + 1] - 1),
                    "max_multiple": float(value),
                }
            )
    return rows


def pair_task(
    info: AdapterInfo,
    counterpart: AdapterInfo,
    config: RunConfig,
    fingerprinted: Fingerprinted,
    counterpart_fingerprinted: Fingerprinted,
    *cases: CaseOutcome,
) -> Tables:
    """A compiled implementation beside its eager counterpart (:mod:`adamspec.harness.pairs`):
    lock-step ULP distances on a few of the suite's problems, the formula each one's
    fingerprint (already computed by their fingerprint tasks) names, and the cases of the
    run (``cases``: the compiled one's, then the eager one's) where the compiled one is off
    its documented formula and the eager one is not (a difference the fingerprint suite
    may not separate: torch.compile's float32 bias corrections show on a long closed loop)."""
    _prepare(counterpart, config)
    config = _prepare(info, config)
    formulas = (fingerprint_formula(fingerprinted.tables.fingerprints),
                fingerprint_formula(counterpart_fingerprinted.tables.fingerprints))  # fmt: skip
    half = len(cases) // 2
    ours = [c.tables.summary[0] for c in cases[:half]]
    theirs = [c.tables.summary[0] for c in cases[half:]]
    out = Tables()
    if _all_skipped(ours) or _all_skipped(theirs):  # e.g. a precision one of them does not run
        return out
    out.pairs = pair_rows(info.name, counterpart.name, info.documented, config.problems(),
                          config.dtype, config.seed, formulas,
                          diverging_cases(ours, theirs))  # fmt: skip
    return out


def _all_skipped(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether no case of an implementation ran (there is nothing to pair it with)."""
    return all(row["verdict"] == "skipped" for row in rows)


def evaluate_separation(config: RunConfig) -> Tables:
    out = Tables()
    for pair in separation(suite(config.fingerprint_suite), config.separation_dtypes, config.seed):
        out.separation.append(
            {
                "variant_a": pair.variant_a,
                "variant_b": pair.variant_b,
                "max_ulp": pair.max_ulp,
                "component": pair.component,
                "case": pair.case,
                "relation": pair.relation,
            }
        )
    return out


def _failed_rows(name: str, problems: Sequence[Problem], reason: str, config: RunConfig) -> Tables:
    """Error rows for cases whose task failed (a harness bug or a worker that kept dying):
    one failed task never loses the others."""
    print(f"adamspec: {name}: {reason}", file=sys.stderr)
    tables = _skipped(name, f"harness error: {reason}", config, problems)
    for row in tables.summary:
        row["verdict"] = "error"
    return tables


def _skipped(
    name: str, reason: str, config: RunConfig, problems: Sequence[Problem] | None = None
) -> Tables:
    out = Tables()
    info = REGISTRY[name]
    for problem in config.problems() if problems is None else problems:
        out.summary.append(
            {
                "implementation": name,
                "framework": info.framework or "adamspec",
                "framework_version": "",
                "case": problem.name,
                **precision_columns(config.dtype),
                "steps": 0,
                "max_ulp": 0,
                "median_ulp": math.nan,
                "max_free_ulp": 0,
                "worst_component": "",
                "documented_variant": info.documented,
                "matched_variant": "",
                "category": "",
                "verdict": "skipped",
                "detail": reason,
                "counterexample": "",
                "oracle_fallback_rate": math.nan,
                "claimed": "" if name in config.unclaimed else info.documented,
                "tied_with": "",
                "first_failing_index": -1,
                "failing_coordinates": 0,
                "localization": "",
                "kernel_output": "",
            }
        )
    return out


#: Where a run's finished tasks wait, inside its report folder, until the reports are written.
CHECKPOINT_FOLDER = ".adamspec-checkpoint"


class Checkpoint:
    """Finished tasks of a run, one pickle each, written atomically as they finish, so an
    interrupted run resumes without recomputing them. Files of another configuration
    (another :meth:`RunConfig.key`) are never read."""

    def __init__(self, folder: str | os.PathLike[str], config: RunConfig) -> None:
        self.folder = Path(folder)
        self.prefix = config.key()

    def _path(self, key: Hashable) -> Path:
        import hashlib

        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        return self.folder / f"{self.prefix}-{digest}.pickle"

    def load(self, key: Hashable) -> Any:
        """The saved result of the task called ``key``, or None."""
        try:
            with open(self._path(key), "rb") as f:
                return pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None

    def save(self, key: Hashable, result: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self._path(key)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def clear(self) -> None:
        """Remove this configuration's files (after the reports are written)."""
        for path in self.folder.glob(f"{self.prefix}-*.pickle"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def run(
    config: RunConfig,
    progress: Callable[[str], None] | Progress | None = None,
    checkpoint: Checkpoint | None = None,
    executor: Executor | None = None,
) -> Tables:
    """Run every selected implementation (and the separation matrix); rows in a fixed order.

    ``progress`` gets one line per finished implementation with the run's task count and
    ETA (a line callable, or a :class:`~adamspec.harness.console.Progress` such as a bar;
    default: lines on stderr). With ``checkpoint``, tasks it holds are not recomputed and
    each finished task is saved to it (``adamspec run --resume``). Tasks run on
    ``executor``, else on the one ``config.scheduler`` and ``config.jobs`` name
    (:func:`adamspec.harness.cluster.executor`); the tables do not depend on where."""
    sink = as_progress(progress)
    use_oracle(config.oracle)
    names = select(config.implementations)
    problems = config.problems()
    suite(config.fingerprint_suite)  # unknown suite: fail before any work
    skipped: dict[str, Tables] = {}
    for name in names:
        framework = REGISTRY[name].framework
        status = availability(framework) if framework else None
        if status is not None and not status.available:
            skipped[name] = _skipped(name, f"skipped: {status.reason}", config)
    running = [name for name in names if name not in skipped]
    tasks: list[Task] = []
    for name in running:
        tasks += implementation_tasks(REGISTRY[name], config, len(problems), running)
    if config.separation:
        tasks.append(Task(("separation",), evaluate_separation, (config,)))
    done: dict[Hashable, Any] = {}
    if checkpoint is not None:
        for task in tasks:
            if (saved := checkpoint.load(task.key)) is not None:
                done[task.key] = saved
        if done:
            sink.note(f"resumed {len(done)} finished tasks from {checkpoint.folder}")
    todo = [t for t in tasks if t.key not in done]
    owners = _owners(todo)
    left = {owner: sum(1 for o in owners.values() if o == owner) for owner in owners.values()}
    clock = _Clock(len(todo))
    finished: dict[str, Tables] = dict(skipped)  # each owner's tables, merged once
    sink.start(len(todo), "adamspec run")
    try:
        with _executor_for(config, executor) as ex:
            for key, result in ex.run(todo, done=dict(done)):
                done[key] = result
                if checkpoint is not None and not isinstance(result, Failed):
                    checkpoint.save(key, result)
                owner = owners[key]
                left[owner] -= 1
                clock.tick()
                if left[owner]:
                    sink.tick()
                    continue
                tables = finished[owner] = _merged(owner, done, problems, config)
                sink.done(f"{clock.text()} {owner or 'separation matrix'}: {_verdicts(tables)}")
    finally:
        sink.stop()
    merged = Tables()
    order = ([""] if config.separation else []) + names  # "": the separation matrix
    for name in order:  # an owner resumed whole from the checkpoint is merged only here
        merged.extend(finished[name] if name in finished else _merged(name, done, problems,
                                                                          config))  # fmt: skip
    return merged


def evaluate(name: str, config: RunConfig) -> Tables:
    """Everything the report says about one implementation, its tasks run one after another
    in this process (a benchmark's or a test's single implementation)."""
    load_registry()
    problems = config.problems()
    with cluster_executor(None, 1) as ex:
        done = dict(ex.run(implementation_tasks(REGISTRY[name], config, len(problems))))
    return _merged(name, done, problems, config)


def implementation_tasks(
    info: AdapterInfo, config: RunConfig, problems: int, running: Collection[str] = ()
) -> list[Task]:
    """One implementation's tasks: its fingerprint, its cases, its counterexample search,
    and for a compiled implementation whose eager counterpart is among ``running`` the
    pair of the two (after both fingerprints). An implementation registered only in this
    process (a user's kernel, a gate's hook) runs here; its chunks still verify on the
    cluster."""
    here = info.name not in static_names()
    fingerprint = ("fingerprint", info.name)
    cases = [("case", info.name, i) for i in range(problems)]
    tasks = [Task(fingerprint, fingerprint_task, (info, config), here=here)]
    tasks += [Task(k, case_task, (info, k[2], config), (fingerprint,), here) for k in cases]
    if config.counterexample_examples > 0:
        tasks.append(Task(("counterexamples", info.name), counterexample_task, (info, config),
                          tuple(cases), here))  # fmt: skip
    if info.eager_counterpart in running:
        counterpart = REGISTRY[info.eager_counterpart]
        theirs = [("case", counterpart.name, i) for i in range(problems)]
        after = (fingerprint, ("fingerprint", counterpart.name), *cases, *theirs)
        here = here or counterpart.name not in static_names()
        tasks.append(Task(("pair", info.name), pair_task, (info, counterpart, config), after, here))
    return tasks


def _owners(tasks: Sequence[Task]) -> dict[Hashable, str]:
    """Each task's implementation ("" for the separation matrix)."""
    return {t.key: t.key[1] if len(t.key) > 1 else "" for t in tasks}


def _merged(name: str, done: Mapping[Hashable, Any], problems: Sequence[Problem],
            config: RunConfig) -> Tables:  # fmt: skip
    """One implementation's tables from its tasks' results, in a fixed order (the
    separation matrix's for ``name`` "")."""
    if not name:
        result = done.get(("separation",), Tables())
        if isinstance(result, Failed):
            print(f"adamspec: separation matrix: {result}", file=sys.stderr)
            return Tables()
        return result
    out = Tables()
    fingerprinted = done[("fingerprint", name)]
    if isinstance(fingerprinted, Failed):
        print(f"adamspec: {name}: fingerprint: {fingerprinted}", file=sys.stderr)
    else:
        out.extend(fingerprinted.tables)
    for i, problem in enumerate(problems):
        case = done[("case", name, i)]
        if isinstance(case, Failed):
            out.extend(_failed_rows(name, [problem], str(case), config))
        else:
            out.extend(case.tables)
    searched = done.get(("counterexamples", name))
    if isinstance(searched, Tables):
        out.summary = searched.summary
        out.counterexamples.update(searched.counterexamples)
    paired = done.get(("pair", name))
    if isinstance(paired, Failed):
        print(f"adamspec: {name}: beside its eager counterpart: {paired}", file=sys.stderr)
    elif paired is not None:
        out.pairs = paired.pairs
    return out


def _verdicts(tables: Tables) -> str:
    """ "18 pass", "2 discrepancy, 16 pass": a finished implementation's verdict counts."""
    counts: dict[str, int] = {}
    for row in tables.summary:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "done"


class _Clock:
    """Finished and total tasks, the elapsed time and an ETA from the rate so far."""

    def __init__(self, total: int) -> None:
        self.total, self.finished, self.started = total, 0, time.perf_counter()

    def tick(self) -> None:
        self.finished += 1

    def text(self) -> str:
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.finished * (self.total - self.finished) if self.finished else 0.0
        return (f"[tasks {self.finished:>{len(str(self.total))}}/{self.total}, "
                f"{elapsed:.0f} s elapsed, ETA {left:.0f} s]")  # fmt: skip


@contextlib.contextmanager
def _executor_for(config: RunConfig, executor: Executor | None) -> Iterator[Executor]:
    if executor is not None:
        yield executor
        return
    log = partial(print, "adamspec:", file=sys.stderr)  # the job's log (quiet console)
    with cluster_executor(config.scheduler, config.jobs, log=log) as found:
        yield found


def fingerprint_rows(name: str, config: RunConfig) -> tuple[list[dict[str, Any]], str]:
    """The ranked formulas for one implementation (a row per catalog name, and the best
    formula when it has none), and the one-line verdict."""
    use_oracle(config.oracle)
    traces = [
        record_trace(name, p, config.dtype, config.seed) for p in suite(config.fingerprint_suite)
    ]
    if not any(t.steps for t in traces):
        reasons = "; ".join(sorted({t.detail for t in traces if t.detail}))
        raise RunUsageError(f"{name} ran no step of the fingerprint problems: {reasons}")
    claimed = "" if name in config.unclaimed else REGISTRY[name].documented
    fp = fingerprint(traces, budget_for(name, config.budget), documented=claimed)
    rows = _fingerprint_rows(name, fp, claimed, config.dtype)
    for row in rows:
        del row["implementation"]
    return rows, _fingerprint_sentence(fp, claimed, config.seed)


def summary_table(tables: Tables) -> str:
    """The summary printed at the end of a run: one line per implementation (worst case)."""
    by_impl: dict[str, list[dict[str, Any]]] = {}
    for row in tables.summary:
        by_impl.setdefault(row["implementation"], []).append(row)
    order = {"error": 0, "discrepancy": 1, RANGE: 2, "pass": 3, "skipped": 4}
    lines = []
    skipped = _skipped_whole(by_impl)
    collapsed = {n for names in skipped.values() for n in names}
    width = max((len(n) for n in by_impl if n not in collapsed), default=14)
    lines.append(
        f"{'implementation':<{width}}  {'verdict':<22}  {'max ULP':>8}  "
        f"{'matched variant':<32}  category"
    )
    for name, rows in by_impl.items():
        if name in collapsed:
            continue
        worst_row = min(rows, key=lambda r: (order[r["verdict"]], -(r["max_ulp"] % 2**62)))
        counts = {v: sum(r["verdict"] == v for r in rows) for v in order}
        verdict = worst_row["verdict"]
        if verdict in ("pass", RANGE) or counts["pass"] == len(rows):
            shown = tier_text(rows)  # "pass" or "pass (range: 2 cases)"
            shown += f" {counts['pass']}/{len(rows)}" if shown == "pass" else ""
        else:
            shown = f"{verdict} {counts[verdict]}/{len(rows)}"
        category = worst_row["category"] or worst_row["detail"][:60]
        lines.append(
            f"{name:<{width}}  {shown:<22}  {worst_row['max_ulp']:>8}  "
            f"{worst_row['matched_variant']:<32}  {category}"
        )
    for reason, names in skipped.items():
        shown = ", ".join(names[:SKIPPED_NAMES_SHOWN])
        more = len(names) - SKIPPED_NAMES_SHOWN
        shown += f" and {more} more (summary.csv)" if more > 0 else ""
        lines.append(f"skipped, every case ({len(names)}): {reason}: {shown}")
    return "\n".join(lines)


#: How many names a line of implementations skipped for one reason shows.
SKIPPED_NAMES_SHOWN = 4


def _skipped_whole(by_impl: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """The implementations no case of which ran, by the one reason they give (the detail
    without their own name: "does not run precision bf16-fp32master; ..."), where at least
    two share it: a run in a precision most frameworks do not run says so in one line."""
    reasons: dict[str, list[str]] = {}
    for name, rows in by_impl.items():
        details = {str(r["detail"]).removeprefix("skipped: ").removeprefix(f"{name} ")
                   for r in rows}  # fmt: skip
        if len(details) == 1 and all(r["verdict"] == "skipped" for r in rows):
            reasons.setdefault(details.pop(), []).append(name)
    return {reason: names for reason, names in reasons.items() if len(names) > 1}
