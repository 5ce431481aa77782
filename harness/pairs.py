"""A compiled implementation beside its eager counterpart: same formula, or not?

Compiled code (``torch.compile``, XLA, ``jax.jit``) may contract ``a*b + c`` into fused
multiply-adds, reorder element-wise work or change where constants are rounded. Whether
that is rounding only or another formula is measured here, in two parts the run already
has or cheaply gets:

* the ULP distance between the two implementations' results, lock-step: every step starts
  both from the same state (the eager one's) with the same gradients, so one step's
  difference never feeds the next (:func:`pair_errors`; free-running trajectories too,
  when asked);
* each one's fingerprint formula, from the fingerprint rows the run already computed
  (:func:`fingerprint_formula`); catalog names that are one formula count as the same
  (:func:`adamspec.spec.catalog.formula_key`).

:func:`pair_rows` makes the rows of the record table ``pairs``
(:data:`adamspec.reports.schema.PAIR_COLUMNS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adamspec.harness.engine import gradient_dtype, hyper_for, initial_state
from adamspec.harness.problems import Problem, resized
from adamspec.impl.adapters import State, Unsupported, make_adapter
from adamspec.oracles.metrics import ulp_distance
from adamspec.oracles.rounding import format_of_dtype
from adamspec.spec.axes import AmsGrad
from adamspec.spec.catalog import entry, formula_key
from adamspec.spec.hyper import Hyper

#: Steps each pair takes on each of its problems (the first is reported on its own too).
PAIR_STEPS = 20
#: How many of the suite's dense open-loop problems each pair is measured on: their
#: gradients do not depend on the parameters, so both implementations see the same ones.
PAIR_PROBLEMS = 3

SAME = "same formula"
DIFFERENT = "not the same formula"
UNKNOWN = "formula unknown"
#: The pair verdicts of the ``pairs`` table.
PAIR_VERDICTS: tuple[str, ...] = (SAME, DIFFERENT, UNKNOWN)


@dataclass
class PairErrors:
    """ULP distances between two implementations of one optimizer, per component (-1: a
    NaN/inf in one where the other has a number): ``lockstep`` the worst over steps each
    taken by both from the same state (the first implementation's), ``first`` that of
    the first such step, ``free`` the worst over the trajectories each runs from one start
    (empty when not measured)."""

    lockstep: dict[str, int]
    first: dict[str, int]
    free: dict[str, int] = field(default_factory=dict)


def _components(state: State) -> dict[str, list[np.ndarray]]:
    out = {"param": state.params, "m": state.m, "v": state.v}
    if state.v_max is not None:
        out["v_max"] = state.v_max
    if state.master is not None:
        out["master"] = state.master
    return out


def _worst_ulp(a: State, b: State, record: dict[str, int]) -> None:
    """Fold the per-component worst ULP distance between ``a`` and ``b`` into ``record``
    (each in ULPs of its own dtype: a mixed precision keeps m and v wider than the params)."""
    theirs = _components(b)
    for name, ours in _components(a).items():
        for x, y in zip(ours, theirs[name], strict=True):
            d = np.asarray(ulp_distance(x, y, format_of_dtype(np.asarray(x).dtype)))
            # two implementations agree where both give NaN (the oracle has no NaN to match)
            both_nan = np.isnan(np.asarray(x, np.float64)) & np.isnan(np.asarray(y, np.float64))
            d = np.where(both_nan, 0, d)
            value = -1 if np.any(d < 0) else int(d.max())
            before = record.get(name, 0)
            record[name] = -1 if -1 in (value, before) else max(before, value)


def pair_errors(
    first: str,
    second: str,
    hyper: Hyper,
    dtype: str,
    shapes: Sequence[tuple[int, ...]],
    start: State,
    grads: Sequence[list[Any]],
    free: bool = True,
) -> PairErrors:
    """Step ``first`` and ``second`` (registered names) side by side from ``start``, one
    step per entry of ``grads`` (see :class:`PairErrors`). Each adapter is built once (a
    compiled step compiles once); an adapter that cannot run the configuration raises
    :class:`~adamspec.impl.adapters.Unsupported`."""
    a = make_adapter(first, hyper, dtype, shapes)
    try:
        b = make_adapter(second, hyper, dtype, shapes)
    except BaseException:
        a.close()
        raise
    try:
        lockstep: dict[str, int] = {}
        first_step: dict[str, int] = {}
        a.set_state(start.copy())
        for t, g in enumerate(grads):
            b.set_state(a.get_state())
            a.step(g)
            b.step(g)
            _worst_ulp(a.get_state(), b.get_state(), lockstep)
            if t == 0:
                _worst_ulp(a.get_state(), b.get_state(), first_step)
        diverged: dict[str, int] = {}
        if free:
            a.set_state(start.copy())
            b.set_state(start.copy())
            for g in grads:
                a.step(g)
                b.step(g)
                _worst_ulp(a.get_state(), b.get_state(), diverged)
        return PairErrors(lockstep, first_step, diverged)
    finally:
        a.close()
        b.close()


def pair_problems(problems: Sequence[Problem]) -> tuple[Problem, ...]:
    """The problems a pair is measured on: the first :data:`PAIR_PROBLEMS` dense open-loop
    problems of the suite, each :data:`PAIR_STEPS` steps long."""
    chosen = [p for p in problems if p.regime == "open" and not p.sparse][:PAIR_PROBLEMS]
    return tuple(resized(p, steps=PAIR_STEPS) for p in chosen)


def fingerprint_formula(fingerprints: Sequence[Mapping[str, Any]]) -> str:
    """The catalog formula an implementation's fingerprint rows rank first within budget
    ("" when none is within budget or there are no rows)."""
    best = [r for r in fingerprints if r["rank"] == 1 and r["within_budget"]]
    return str(best[0]["variant"]) if best else ""


def diverging_cases(ours: Sequence[Mapping[str, Any]], theirs: Sequence[Mapping[str, Any]]) -> str:
    """The run's cases (summary rows, in one order) where the compiled implementation is a
    discrepancy from its documented formula and its eager counterpart passes: "case
    (category, N ULP)", joined; "" when none."""
    found = []
    for mine, eager in zip(ours, theirs, strict=True):
        if mine["verdict"] == "discrepancy" and eager["verdict"] in ("pass", "range"):
            category = mine["category"] or "unexplained"
            found.append(f"{mine['case']} ({category}, {mine['max_ulp']} ULP)")
    return "; ".join(found)


def pair_verdict(formula: str, counterpart_formula: str, diverging: str = "") -> str:
    """:data:`DIFFERENT` when the run found the compiled one off its documented formula
    where the eager one is not (``diverging``) or the fingerprints name two formulas;
    :data:`SAME` when both name one; :data:`UNKNOWN` when either matched none."""
    if diverging:
        return DIFFERENT
    if not formula or not counterpart_formula:
        return UNKNOWN
    return SAME if formula_key(formula) == formula_key(counterpart_formula) else DIFFERENT


def _unmeasured(case: dict[str, Any], detail: str) -> dict[str, Any]:
    return {**case, "component": "", "first_step_ulp": None, "max_ulp": None, "detail": detail}


def pair_rows(
    implementation: str,
    counterpart: str,
    documented: str,
    problems: Sequence[Problem],
    dtype: str,
    seed: int,
    formulas: tuple[str, str],
    diverging: str = "",
) -> list[dict[str, Any]]:
    """The ``pairs`` rows of one compiled implementation and its eager counterpart: per
    problem of :func:`pair_problems` and component, the first step's and the worst
    lock-step ULP distance; a problem either cannot run is one row saying why."""
    formula, counterpart_formula = formulas
    common = {
        "implementation": implementation,
        "counterpart": counterpart,
        "implementation_formula": formula,
        "counterpart_formula": counterpart_formula,
        "verdict": pair_verdict(formula, counterpart_formula, diverging),
        "diverging_cases": diverging,
    }
    amsgrad = entry(documented).variant.amsgrad is not AmsGrad.OFF
    rows = []
    for problem in pair_problems(problems):
        start = initial_state(problem, dtype, seed, amsgrad)
        grads = [problem.gradients(t, start.params, gradient_dtype(dtype), seed)
                 for t in range(problem.steps)]  # fmt: skip
        case = {**common, "case": problem.name, "steps": problem.steps}
        try:
            errors = pair_errors(counterpart, implementation, hyper_for(implementation, problem),
                                 dtype, problem.shapes, start, grads, free=False)  # fmt: skip
        except Unsupported as exc:
            rows.append(_unmeasured(case, f"skipped: {exc}"))
            continue
        except Exception as exc:  # one crashing problem must not lose the others
            rows.append(_unmeasured(case, f"error: {type(exc).__name__}: {exc}"))
            continue
        for component, worst in errors.lockstep.items():
            rows.append({**case, "component": component, "detail": "",
                         "first_step_ulp": errors.first[component], "max_ulp": worst})  # fmt: skip
    return rows
