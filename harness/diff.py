"""``adamspec diff A B``: two real optimizers side by side, and why they differ.

Both implementations run free on the same problems (a closed loop feeds each its own
gradients, so a divergence feeds back as in training), and their states are compared at
every step: max and median ULP distance per state component, the relative parameter
distance, and the loss where the problem has one.

The divergence is then attributed. Each implementation's formula is its fingerprint (the
catalog variant ranked first on the discriminating suite, :func:`fingerprint_rows`). The
oracle runs correctly rounded trajectories (:func:`adamspec.harness.engine.rounded_run`:
each step exact, rounded to the dtype, closed-loop gradients from its own params) of A's
formula, of B's formula, and of A's formula with one thing switched to B's: each axis
where the two formulas differ, and each hyperparameter whose value differs (torch's eps
1e-8 against Keras' 1e-7). With the one distance of this module (:func:`distance`,
``d(X, Y) = |θX - θY| / max(|θX|, |θY|)``, Euclidean norms over every parameter tensor),
at each step:

* ``gap = d(R_A, R_B)``, the formula gap (``R_V``: the correctly rounded run of formula V);
* a switch closes ``1 - d(R_switched, R_B) / gap`` of the gap;
* ``D = d(A, B)``, the real divergence: the formulas account for ``phi = min(1, gap / D)``
  of it, rounding for ``1 - phi``, and a switch explains (its closed share) x ``phi``.

Two implementations of one formula have ``gap = 0``: their divergence is rounding only.
"""

from __future__ import annotations

import difflib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from adamspec.harness.classify import CATEGORY_OF_AXIS
from adamspec.harness.console import Progress, as_progress
from adamspec.harness.engine import (
    State,
    Trace,
    initial_state,
    record_trace,
    rounded_run,
    use_oracle,
)
from adamspec.harness.problems import Problem, problem
from adamspec.harness.run import RunConfig, RunUsageError, fingerprint_rows
from adamspec.impl.adapters import REGISTRY, load_registry
from adamspec.impl.adapters.kernel_protocol import TargetError, register_target
from adamspec.oracles.metrics import ulp_distance
from adamspec.spec.axes import AmsGrad
from adamspec.spec.catalog import CATALOG, entry
from adamspec.spec.formats import format_named
from adamspec.spec.hyper import HYPER_NAMES, Hyper
from adamspec.spec.variant import Variant, VariantError

#: Problems compared when none is named: open loops in the typical and the tiny-gradient
#: regime (where eps placement decides), and two closed loops (a quadratic and an MLP).
DEFAULT_PROBLEMS = ("typical", "tiny-near-eps", "quadratic", "mlp")
DEFAULT_STEPS = 100

#: A kernel TARGET is fingerprinted before its formula is known; it runs meanwhile with
#: this variant's hyperparameter defaults (as ``adamspec check`` does).
_PROVISIONAL = "paper.algorithm1"

DISTANCE = (
    "d(X, Y) = ||θX − θY||₂ / max(||θX||₂, ||θY||₂), Euclidean norms over every parameter "
    "tensor, in float64"
)


class DiffUsageError(ValueError):
    """A bad ``adamspec diff`` argument (one line naming it and what is allowed)."""


@dataclass(frozen=True)
class Formula:
    """What one implementation computes, according to its fingerprint."""

    implementation: str
    variant: str  # the rank-1 catalog variant ("" when no step of the suite ran)
    within_budget: bool
    sentence: str

    @property
    def known(self) -> bool:
        return bool(self.variant) and self.within_budget


@dataclass(frozen=True)
class Switch:
    """A's formula with one thing switched to B's: axes of the formula (``axes``) and/or
    hyperparameter values (``hyper_changes``). ``variant``/``hyper`` are what the oracle
    runs (None: the switch is not a valid formula alone, ``reason`` says why). A ``pair``
    switches two things at once (measured when single switches leave much unexplained)."""

    key: str
    label: str
    a_value: str
    b_value: str
    variant: Variant | None
    hyper: Hyper | None
    reason: str = ""
    axes: tuple[tuple[str, Any], ...] = ()
    hyper_changes: tuple[tuple[str, Any], ...] = ()
    pair: bool = False


@dataclass
class ProblemDiff:
    """One problem of a diff: its rows, and what could not be measured."""

    problem: Problem
    status: str = "ok"  # "ok", "skipped" or "error"
    detail: str = ""
    steps: int = 0
    switches: list[Switch] = field(default_factory=list)
    hyper_a: dict[str, Any] = field(default_factory=dict)
    hyper_b: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DiffResult:
    a: Formula
    b: Formula
    dtype: str
    seed: int
    problems: list[ProblemDiff]
    seconds: float = 0.0

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [row for p in self.problems for row in p.rows]

    def formula_axes(self) -> list[dict[str, str]]:
        """The axes where A's and B's formulas differ (none when one is not known)."""
        if not (self.a.known and self.b.known):
            return []
        va, vb = entry(self.a.variant).variant, entry(self.b.variant).variant
        differ = [f.name for f in fields(Variant) if getattr(va, f.name) != getattr(vb, f.name)]
        return [
            {"label": axis_label(n), "a": _shown(getattr(va, n)), "b": _shown(getattr(vb, n))}
            for n in differ
        ]

    def meta(self) -> dict[str, Any]:
        """Everything the reports say besides the rows (JSON-ready)."""
        return {
            "command": "adamspec diff",
            "a": _formula_meta(self.a),
            "b": _formula_meta(self.b),
            "formula_axes": self.formula_axes(),
            "dtype": self.dtype,
            "seed": self.seed,
            "distance": DISTANCE,
            "duration_s": round(self.seconds, 1),
            "problems": [
                {
                    "name": p.problem.name,
                    "regime": p.problem.regime,
                    "description": p.problem.description,
                    "status": p.status,
                    "detail": p.detail,
                    "steps": p.steps,
                    "hyper_a": p.hyper_a,
                    "hyper_b": p.hyper_b,
                    "switches": [
                        {
                            "label": s.label,
                            "a": s.a_value,
                            "b": s.b_value,
                            "reason": s.reason,
                            "pair": s.pair,
                        }
                        for s in p.switches
                    ],
                }
                for p in self.problems
            ],
        }


def _formula_meta(f: Formula) -> dict[str, Any]:
    return {
        "implementation": f.implementation,
        "formula": f.variant,
        "within_budget": f.within_budget,
        "fingerprint": f.sentence,
    }


# ----------------------------------------------------------------------- arguments


def resolve(name: str, which: str) -> str:
    """The registered implementation ``name`` names: itself, or a kernel TARGET
    (``module:object``, ``path/file.py:object``) registered now."""
    load_registry()
    if name in REGISTRY:
        return name
    if ":" in name:
        try:
            return register_target(name, _PROVISIONAL)
        except TargetError as exc:
            raise DiffUsageError(f"{which}={name!r}: {exc}") from None
    prefixed = [n for n in REGISTRY if n.lower().startswith(name.lower())]
    close = list(dict.fromkeys(prefixed + difflib.get_close_matches(name, list(REGISTRY), 3, 0.4)))
    close = close[:4]
    hint = f"closest: {', '.join(close)}; " if close else ""
    raise DiffUsageError(
        f"{which}={name!r} is not a registered implementation or a kernel TARGET "
        f"(module:object or path/file.py:object); {hint}all: `adamspec run --list`"
    )


def problems_named(names: Sequence[str], steps: int) -> list[Problem]:
    """The named problems, each run for ``steps`` steps."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise DiffUsageError(f"--steps={steps!r} must be a positive integer")
    out = []
    for name in dict.fromkeys(names):
        try:
            out.append(problem(name).with_(steps=steps))
        except ValueError as exc:
            raise DiffUsageError(str(exc).replace("problem=", "--problem=", 1)) from None
    return out


# ----------------------------------------------------------------------- formulas


def fingerprint(name: str, dtype: str, seed: int, oracle: str) -> Formula:
    """``name``'s rank-1 formula on the discriminating suite (a catalog name, else its axes:
    the hyperparameter facts the fingerprint found are not carried, the attribution
    compares hyperparameters itself). A kernel TARGET claims nothing (its provisional
    variant breaks no tie) and then takes that formula's hyperparameter defaults, as a
    registered implementation takes its documented one's."""
    kernel = name.startswith("kernel:")
    config = RunConfig(implementations=(name,), dtype=dtype, seed=seed, oracle=oracle,
                       unclaimed=(name,) if kernel else ())  # fmt: skip
    try:
        rows, sentence = fingerprint_rows(name, config)
    except RunUsageError as exc:
        return Formula(name, "", False, str(exc))
    best = rows[0]
    # a formula's row is named "axes; facts" (fingerprint.Formula.name): entry() reads the axes
    variant = best["variant"] if best["variant"] in CATALOG else best["formula"].split("; ")[0]
    if kernel:
        REGISTRY[name] = replace(REGISTRY[name], documented=variant)
    return Formula(name, variant, bool(best["within_budget"]), sentence)


def axis_label(axis: str) -> str:
    """A formula axis as reports name it (the classification's categories, made distinct)."""
    if axis in ("bias_correction_m", "bias_correction_v"):
        return f"bias correction of {axis[-1]}"
    if axis == "duplicates":
        return "duplicate sparse indices"
    return CATEGORY_OF_AXIS[axis]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if hasattr(value, "value"):
        return str(value.value)
    if hasattr(value, "numerator") and hasattr(value, "denominator"):
        return f"{float(value):g}"
    return str(value)


def _switched(
    a: Variant, hyper_a: Hyper, axes: dict[str, Any], hyper_changes: dict[str, Any]
) -> tuple[Variant | None, Hyper | None, str]:
    """A's formula and hyperparameters with ``axes`` and ``hyper_changes`` applied."""
    try:
        variant = a.replace(**axes)
    except VariantError as exc:
        return None, None, f"not a formula alone: {exc}"
    return variant, replace(hyper_a, **hyper_changes), ""


def switches(a: Variant, b: Variant, hyper_a: Hyper, hyper_b: Hyper) -> list[Switch]:
    """A's formula with one thing switched to B's, for every axis and every hyperparameter
    where they differ."""
    out = []
    for f in fields(Variant):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if va != vb:
            changes = {f.name: vb}
            run = _switched(a, hyper_a, changes, {})
            shown = (axis_label(f.name), _shown(va), _shown(vb))
            out.append(Switch(f.name, *shown, *run, axes=(*changes.items(),)))
    for name in HYPER_NAMES:
        ha, hb = getattr(hyper_a, name), getattr(hyper_b, name)
        if ha != hb:
            changes = {name: hb}
            run = _switched(a, hyper_a, {}, changes)
            key, label = f"hyper.{name}", f"{name} value"
            out.append(
                Switch(key, label, _shown(ha), _shown(hb), *run, hyper_changes=(*changes.items(),))
            )
    return out


def pair(first: Switch, second: Switch, a: Variant, hyper_a: Hyper) -> Switch:
    """Two switches at once."""
    axes, hyper_changes = first.axes + second.axes, first.hyper_changes + second.hyper_changes
    run = _switched(a, hyper_a, dict(axes), dict(hyper_changes))
    return Switch(
        f"{first.key}+{second.key}",
        f"{first.label} + {second.label}",
        f"{first.a_value}, {second.a_value}",
        f"{first.b_value}, {second.b_value}",
        *run,
        axes=axes,
        hyper_changes=hyper_changes,
        pair=True,
    )


# ----------------------------------------------------------------------- measures


def distance(x: Sequence[np.ndarray], y: Sequence[np.ndarray]) -> float:
    """The distance of this module (see its docstring): relative, symmetric, NaN when a
    parameter is not finite."""
    xs = np.concatenate([np.asarray(t, np.float64).ravel() for t in x])
    ys = np.concatenate([np.asarray(t, np.float64).ravel() for t in y])
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        return math.nan
    scale = max(float(np.linalg.norm(xs)), float(np.linalg.norm(ys)))
    diff = float(np.linalg.norm(xs - ys))
    return diff / scale if scale > 0 else 0.0


def ulp_stats(x: Sequence[np.ndarray], y: Sequence[np.ndarray], dtype: str) -> tuple[int, float]:
    """Max and median ULP distance over every coordinate of two states' component (max -1:
    a NaN/inf mismatch somewhere; the median is over the measurable coordinates)."""
    fmt = format_named(dtype)
    dist = np.concatenate(
        [np.asarray(ulp_distance(a, b, fmt), np.int64).ravel() for a, b in zip(x, y, strict=True)]
    )
    measurable = dist[dist >= 0]
    median = float(np.median(measurable)) if measurable.size else math.nan
    return (-1 if measurable.size < dist.size else int(dist.max(initial=0))), median


def _components(a: State, b: State) -> dict[str, tuple[list, list]]:
    out = {"param": (a.params, b.params), "m": (a.m, b.m), "v": (a.v, b.v)}
    if a.v_max is not None and b.v_max is not None:
        out["v_max"] = (a.v_max, b.v_max)
    return out


def _reference(problem: Problem, variant: Variant, hyper: Hyper, dtype: str, seed: int, steps: int):
    """The params of the correctly rounded run of ``variant`` after each of ``steps`` steps."""
    amsgrad = variant.amsgrad is not AmsGrad.OFF
    start = initial_state(problem, dtype, seed, amsgrad)
    run = rounded_run(problem, start, variant, hyper, dtype, seed)
    return [state.params for _, state in itertools.islice(run, steps)]


def _references(
    problem: Problem, runs: dict[str, tuple[Variant, Hyper]], dtype: str, seed: int, steps: int
) -> dict[str, list]:
    """Each key's correctly rounded run (see :func:`_reference`); a formula and
    hyperparameters that two keys share are run once."""
    computed: dict[tuple[Variant, Hyper], list] = {}
    out = {}
    for key, run in runs.items():
        if run not in computed:
            computed[run] = _reference(problem, *run, dtype, seed, steps)
        out[key] = computed[run]
    return out


def formula_share(gap: float, divergence: float) -> float:
    """The share of the real divergence the formula gap accounts for, the rest being
    rounding (NaN when there is no divergence to attribute)."""
    if math.isnan(gap) or math.isnan(divergence) or divergence == 0:
        return math.nan
    return min(1.0, gap / divergence)


def gap_closed(switched: float, gap: float) -> float:
    """The share of the formula gap a switch closes (NaN when there is no gap to close)."""
    if math.isnan(gap) or math.isnan(switched) or gap == 0:
        return math.nan
    return 1.0 - switched / gap


# ----------------------------------------------------------------------- one problem

#: When single switches leave more than this share of the formula gap open at the last step
#: (their effects overlap: eps placement and the eps value multiply each other), every pair
#: of switches that change the run is measured too.
PAIRS_WHEN_OPEN = 0.05


def _pairs_worth_running(
    singles: list[Switch], references: dict[str, list], a: Variant, hyper_a: Hyper
) -> list[Switch]:
    """Pairs of the switches that move A's run, when single switches leave the gap open."""
    ref_a, ref_b = references["A"], references["B"]
    if not ref_a:
        return []
    gap = distance(ref_a[-1], ref_b[-1])
    moving = [
        s
        for s in singles
        if s.variant is not None
        and any(distance(x, y) > 0 for x, y in zip(references[s.key], ref_a, strict=True))
    ]
    if len(moving) < 2 or not gap > 0:
        return []
    closed = sum(gap_closed(distance(references[s.key][-1], ref_b[-1]), gap) for s in moving)
    if 1.0 - closed <= PAIRS_WHEN_OPEN:
        return []
    return [pair(x, y, a, hyper_a) for x, y in itertools.combinations(moving, 2)]


def _rows_of(
    p: ProblemDiff,
    trace_a: Trace,
    trace_b: Trace,
    references: dict[str, list] | None,
) -> None:
    """Every measure of every common step into ``p.rows``."""
    problem = p.problem
    base = {"problem": problem.name, "regime": problem.regime, "dtype": trace_a.dtype}
    closed = problem.regime == "closed"
    for t in range(p.steps):
        after_a, after_b = trace_a.steps[t].after, trace_b.steps[t].after
        row = {**base, "step": after_a.step}

        def add(measure: str, subject: str, value: float, row: dict = row) -> None:
            p.rows.append({**row, "measure": measure, "subject": subject, "value": float(value)})

        for comp, (xa, xb) in _components(after_a, after_b).items():
            worst, median = ulp_stats(xa, xb, trace_a.dtype)
            add("max_ulp", comp, worst)
            add("median_ulp", comp, median)
        divergence = distance(after_a.params, after_b.params)
        add("relative_distance", "A vs B", divergence)
        if closed:
            add("loss", "A", problem.loss(after_a.params, t, trace_a.seed))
            add("loss", "B", problem.loss(after_b.params, t, trace_b.seed))
        if references is None:
            continue
        gap = distance(references["A"][t], references["B"][t])
        phi = formula_share(gap, divergence)
        add("formula_gap", "A vs B formulas", gap)
        add("rounding", "rounding", 1.0 - phi)
        for s in p.switches:
            if s.variant is None:
                continue
            switched = references[s.key][t]
            closed_share = gap_closed(distance(switched, references["B"][t]), gap)
            prefix = "pair_" if s.pair else ""
            add(f"{prefix}gap_closed", s.label, closed_share)
            add(f"{prefix}explained", s.label, closed_share * phi if gap > 0 else 0.0)
            if not s.pair:
                moved = distance(switched, references["A"][t])
                add("alone", s.label, moved / gap if gap else 0.0)


def compare_problem(
    problem: Problem,
    a: Formula,
    b: Formula,
    dtype: str,
    seed: int,
    progress: Progress,
) -> ProblemDiff:
    """Run A and B on ``problem`` and measure (and attribute) their divergence."""
    out = ProblemDiff(problem)
    traces = []
    for f in (a, b):
        started = time.perf_counter()
        trace = record_trace(f.implementation, problem, dtype, seed)
        traces.append(trace)
        ran = f"{len(trace.steps)} steps" + (f", {trace.status}" if trace.status != "ok" else "")
        progress.done(
            f"{problem.name}: {f.implementation} ({ran}, {time.perf_counter() - started:.1f} s)"
        )
    trace_a, trace_b = traces
    out.steps = min(len(trace_a.steps), len(trace_b.steps))
    problems_found = [
        f"{t.implementation}: {t.status}: {t.detail}" for t in traces if t.status != "ok"
    ]
    out.detail = "; ".join(problems_found)
    if out.steps == 0:
        out.status = "skipped" if all(t.status != "error" for t in traces) else "error"
        progress.done(f"{problem.name}: nothing to compare")
        return out
    out.status = "ok"
    out.hyper_a, out.hyper_b = trace_a.hyper.as_dict(), trace_b.hyper.as_dict()
    started = time.perf_counter()
    references = _attribution_runs(out, a, b, trace_a.hyper, trace_b.hyper, dtype, seed)
    _rows_of(out, trace_a, trace_b, references)
    what = f"{len(out.switches)} switches" if references is not None else "no attribution"
    progress.done(f"{problem.name}: {what} ({time.perf_counter() - started:.1f} s)")
    return out


def _attribution_runs(
    p: ProblemDiff, a: Formula, b: Formula, hyper_a: Hyper, hyper_b: Hyper, dtype: str, seed: int
) -> dict[str, list] | None:
    """The correctly rounded runs the attribution compares, by key ("A", "B", each switch's;
    None when a formula is not known), and the switches into ``p.switches``."""
    if not (a.known and b.known):
        return None
    va, vb = entry(a.variant).variant, entry(b.variant).variant
    p.switches = switches(va, vb, hyper_a, hyper_b)
    runs = {"A": (va, hyper_a), "B": (vb, hyper_b)}
    runs.update({s.key: (s.variant, s.hyper) for s in p.switches if s.variant is not None})
    references = _references(p.problem, runs, dtype, seed, p.steps)
    pairs = _pairs_worth_running(p.switches, references, va, hyper_a)
    p.switches += pairs
    runs = {s.key: (s.variant, s.hyper) for s in pairs if s.variant is not None}
    references.update(_references(p.problem, runs, dtype, seed, p.steps))
    return references


# ----------------------------------------------------------------------- the diff


def diff(
    a: str,
    b: str,
    problems: Sequence[str] = DEFAULT_PROBLEMS,
    steps: int = DEFAULT_STEPS,
    dtype: str = "float32",
    seed: int = 0,
    oracle: str = "fast",
    progress: Callable[[str], None] | Progress | None = None,
) -> DiffResult:
    """Compare implementations ``a`` and ``b`` (registered names or kernel TARGETs) on
    ``problems`` for ``steps`` steps each. Raises :class:`DiffUsageError` for a bad
    argument before any work."""
    started = time.perf_counter()
    chosen = problems_named(problems, steps)
    name_a, name_b = resolve(a, "A"), resolve(b, "B")
    use_oracle(oracle)
    sink = as_progress(progress)
    sink.start(2 + 3 * len(chosen), "adamspec diff")
    try:
        formulas = []
        for name in (name_a, name_b):
            t0 = time.perf_counter()
            formulas.append(fingerprint(name, dtype, seed, oracle))
            sink.done(
                f"fingerprint of {name}: {formulas[-1].sentence} ({time.perf_counter() - t0:.1f} s)"
            )
        results = [compare_problem(p, *formulas, dtype, seed, sink) for p in chosen]
    finally:
        sink.stop()
    return DiffResult(*formulas, dtype, seed, results, time.perf_counter() - started)


__all__ = [
    "DEFAULT_PROBLEMS",
    "DEFAULT_STEPS",
    "DISTANCE",
    "DiffResult",
    "DiffUsageError",
    "Formula",
    "ProblemDiff",
    "Switch",
    "diff",
    "distance",
    "fingerprint",
    "formula_share",
    "gap_closed",
    "resolve",
    "switches",
]
