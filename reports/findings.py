"""The first screen of a run's report: implementations grouped by the formula they compute,
their conformance tiers, and the few findings that matter.

Read from the summary and fingerprint records (the catalog tells which variant names are
one formula); shared by report.md and report.html so both open with the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd

from adamspec.reports.tiers import (
    CONFORMS_EXCEPT_RANGE,
    DOES_NOT_CONFORM,
    ERROR,
    SKIPPED,
    TIERS,
    is_range,
    tier,
)
from adamspec.spec.axes import BiasCorrection
from adamspec.spec.catalog import CATALOG, formula_key

__all__ = [
    "FindingLine",
    "Group",
    "case_anchor",
    "formula_groups",
    "key_findings",
    "pair_findings",
    "tier_counts",
    "tiers_of",
]

#: At most this many findings on the first screen; the rest are counted.
MAX_FINDINGS = 8


def tiers_of(summary: pd.DataFrame) -> dict[str, str]:
    """Implementation -> tier (:mod:`adamspec.reports.tiers`), in name order."""
    return {
        str(impl): tier(group.to_dict("records"))
        for impl, group in summary.groupby("implementation", sort=True)
    }


def tier_counts(tiers: Mapping[str, str]) -> dict[str, int]:
    """Implementations per tier, worst first, tiers with none left out."""
    counts = {t: sum(v == t for v in tiers.values()) for t in TIERS}
    return {t: n for t, n in counts.items() if n}


@dataclass
class Group:
    """Implementations that compute one formula (catalog names that are one formula are
    listed together), or that match none / were not run."""

    formula: str
    members: list[tuple[str, str, str]] = field(default_factory=list)  # (impl, tier, note)


def formula_groups(summary: pd.DataFrame, fingerprints: pd.DataFrame) -> list[Group]:
    """Implementations by the formula their fingerprint ranks first (within budget), largest
    group first; then those no catalog formula matches, then those not run."""
    tiers = tiers_of(summary)
    best = (
        # catalog names of one formula share rank 1: the first is the one reported
        fingerprints[fingerprints["rank"] == 1]
        .drop_duplicates("implementation")
        .set_index("implementation")
        if not fingerprints.empty
        else pd.DataFrame()
    )
    documented = {
        str(impl): ", ".join(sorted(set(g["documented_variant"]) - {""}))
        for impl, g in summary.groupby("implementation", sort=True)
    }
    by_formula: dict[Any, tuple[list[str], list[tuple[str, str, str]]]] = {}
    unmatched = Group("no catalog formula within budget")
    unknown, not_run = Group("not fingerprinted"), Group("not run")
    for impl, impl_tier in tiers.items():
        if impl not in best.index:
            (not_run if impl_tier == SKIPPED else unknown).members.append((impl, impl_tier, ""))
            continue
        row = best.loc[impl]
        variant = str(row["variant"])
        if not bool(row["within_budget"]):
            unmatched.members.append((impl, impl_tier, f"closest: {variant}"))
            continue
        doc = documented.get(impl, "")
        note = "" if not doc or formula_key(doc) == formula_key(variant) else f"documents {doc}"
        names, members = by_formula.setdefault(formula_key(variant), ([], []))
        if variant not in names:
            names.append(variant)
        members.append((impl, impl_tier, note))
    groups = [Group(" ≡ ".join(sorted(names)), members) for names, members in by_formula.values()]
    groups.sort(key=lambda g: (-len(g.members), g.formula))
    return groups + [g for g in (unmatched, unknown, not_run) if g.members]


# --------------------------------------------------------------------------- findings


def case_anchor(implementation: str, case: str) -> str:
    """The id of a case's row in report.html's table of cases off budget."""
    text = f"case-{implementation}-{case}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


@dataclass(frozen=True)
class FindingLine:
    """One finding: its text, the cases it rests on (implementation, case) and a
    counterexample script (path relative to the report), if any. ``title`` is the full
    text when ``text`` is shortened."""

    text: str
    cases: tuple[tuple[str, str], ...] = ()
    counterexample: str = ""
    title: str = ""


def _ulp_text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "—"
    return "NaN/inf" if int(value) == -1 else f"{int(value)} ULP"


def _short(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (
        f" and {len(names) - limit} more" if len(names) > limit else ""
    )


def _off_budget_finding(impl: str, impl_tier: str, rows: pd.DataFrame) -> FindingLine:
    bad = rows[rows["verdict"].isin(("discrepancy", "error"))]
    worst = bad.iloc[0]
    cases = ", ".join(bad["case"].astype(str))
    if impl_tier == ERROR:
        text = f"{impl}: crashed on {cases}: {worst['detail']}"
    else:
        real = bad[(bad["verdict"] == "discrepancy") & (bad["category"] != "format range")]
        worst = real.iloc[0]
        what = worst["category"] or "unexplained"
        text = (
            f"{impl}: does not conform on {', '.join(real['case'].astype(str))} "
            f"({what}; {worst['worst_component']} {_ulp_text(worst['max_ulp'])})"
        )
    counterexample = next((c for c in bad["counterexample"] if c), "")
    pairs = tuple((impl, str(c)) for c in bad["case"])
    return FindingLine(text, pairs, counterexample)


def _uncorrected_moments(name: str) -> tuple[str, ...]:
    """The moments a catalog formula does not bias-correct (none for a name outside it)."""
    found = CATALOG.get(name)
    if found is None:
        return ()
    v = found.variant
    axes = (("m", v.bias_correction_m), ("v", v.bias_correction_v))
    return tuple(moment for moment, axis in axes if axis is BiasCorrection.NONE)


def no_bias_correction_findings(
    summary: pd.DataFrame, fingerprints: pd.DataFrame
) -> list[FindingLine]:
    """Implementations whose documented formula and fingerprint (first, within budget)
    both lack a bias correction (MLX's default Adam): one line per set of moments left
    uncorrected, naming the implementations. Conforming, they would otherwise not be
    mentioned, yet their early steps are not those of Adam as everyone else computes it."""
    if fingerprints.empty:
        return []
    best = fingerprints[(fingerprints["rank"] == 1) & fingerprints["within_budget"]]
    fingerprinted = dict(zip(best["implementation"], best["variant"], strict=True))
    by_moments: dict[tuple[str, ...], list[str]] = {}
    for impl, group in summary.groupby("implementation", sort=True):
        documented = {str(d) for d in group["documented_variant"]} - {""}
        found = fingerprinted.get(str(impl), "")
        moments = _uncorrected_moments(found)
        if moments and all(_uncorrected_moments(d) == moments for d in documented):
            by_moments.setdefault(moments, []).append(str(impl))
    lines = []
    for moments, impls in sorted(by_moments.items()):
        which = " and ".join(moments)
        verb = "computes" if len(impls) == 1 else "compute"
        text = (
            f"{_short(impls)} {verb} Adam without bias correction of {which} "
            f"(c = 1: {which} enter{'s' if len(moments) == 1 else ''} the step undivided by "
            f"1 - beta^t), as documented: early steps differ from bias-corrected Adam's"
        )
        full = text.replace(_short(impls), ", ".join(impls))
        lines.append(FindingLine(text, title=full if full != text else ""))
    return lines


def key_findings(summary: pd.DataFrame, fingerprints: pd.DataFrame) -> list[FindingLine]:
    """The findings that matter: implementations that compute Adam without bias correction
    (first: a divergence from every other framework that conformance alone does not show),
    then worst first: implementations that do not conform or crash (one line each),
    implementations whose fingerprint is not the documented formula, and the dtype's range
    (one line per set of cases, naming the implementations)."""
    tiers = tiers_of(summary)
    lines = no_bias_correction_findings(summary, fingerprints)
    for wanted in (DOES_NOT_CONFORM, ERROR):
        for impl, impl_tier in tiers.items():
            if impl_tier == wanted:
                rows = summary[summary["implementation"] == impl]
                lines.append(_off_budget_finding(impl, impl_tier, rows))
    for group in formula_groups(summary, fingerprints):
        for impl, _, note in group.members:
            if note.startswith("documents "):
                lines.append(FindingLine(f"{impl} computes {group.formula} but {note}"))
    by_cases: dict[tuple[str, ...], list[str]] = {}
    examples: dict[tuple[str, ...], tuple[str, str]] = {}
    for impl, impl_tier in tiers.items():
        if impl_tier != CONFORMS_EXCEPT_RANGE:
            continue
        mine = summary[summary["implementation"] == impl]
        rows = mine[[is_range(r) for r in mine.to_dict("records")]]
        key = tuple(sorted(rows["case"].astype(str)))
        by_cases.setdefault(key, []).append(impl)
        examples.setdefault(key, (impl, next((c for c in rows["counterexample"] if c), "")))
    for key, impls in sorted(by_cases.items(), key=lambda kv: -len(kv[1])):
        where = f"except the dtype's range on {', '.join(key)}"
        if len(impls) == 1:
            text, full = f"{impls[0]} conforms {where}", ""
        else:
            text = f"{len(impls)} implementations conform {where}: {_short(impls)}"
            full = f"{len(impls)} implementations conform {where}: {', '.join(impls)}"
        impl, script = examples[key]
        cases = tuple((impl, c) for c in key)
        lines.append(FindingLine(text, cases, script, full if full != text else ""))
    return lines


# --------------------------------------------------------------------------- pairs


def _axis_differences(a: str, b: str) -> str:
    """The axes on which two catalog formulas differ ("hyper_precision param_dtype_via_float64
    vs float64"), "" when either is not in the catalog."""
    if a not in CATALOG or b not in CATALOG:
        return ""
    va, vb = CATALOG[a].variant, CATALOG[b].variant
    return "; ".join(
        f"{f.name} {getattr(va, f.name)} vs {getattr(vb, f.name)}"
        for f in fields(va)
        if getattr(va, f.name) != getattr(vb, f.name)
    )


def _worst_distance(rows: pd.DataFrame) -> tuple[int, str]:
    """The worst ULP distance of a pair's measured rows (-1, a NaN/inf on one side only,
    is the worst) and its component."""
    key = rows["max_ulp"].astype("int64").map(lambda u: 2**63 - 1 if u == -1 else u)
    worst = rows.assign(_key=key).sort_values(["_key", "component"], ascending=[False, True],
                                              kind="mergesort").iloc[0]  # fmt: skip
    return int(worst["max_ulp"]), str(worst["component"])


def _pair_text(impl: str, counterpart: str, rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    measured = rows[rows["component"] != ""]
    head = f"{impl} vs {counterpart}"
    if measured.empty:
        return f"{head}: not measured ({'; '.join(sorted(set(rows['detail'])))})"
    ulp, component = _worst_distance(measured)
    steps = int(measured["steps"].max())
    over = f"lock-step over {measured['case'].nunique()} cases × {steps} steps"
    distance = f"{_ulp_text(ulp)} ({component})" if ulp else "0 ULP"
    compiled, eager = str(first["implementation_formula"]), str(first["counterpart_formula"])
    if first["verdict"] == "same formula":
        if ulp == 0:
            return f"{head}: same formula ({compiled}), bit for bit (0 ULP), {over}"
        if ulp == -1:
            return (
                f"{head}: same formula ({compiled}) but NaN/inf on one side ({component}), {over}"
            )
        return f"{head}: same formula ({compiled}), rounding only, ≤ {distance}, {over}"
    diverging = str(first.get("diverging_cases", "") or "")
    if first["verdict"] == "not the same formula" and diverging:
        return (
            f"{head}: not the same formula: the compiled one is off {compiled or 'its formula'}"
            f" on {diverging} where the eager one conforms; lock-step max {distance}, {over}"
        )
    if first["verdict"] == "not the same formula":
        axes = _axis_differences(compiled, eager)
        return (
            f"{head}: not the same formula: compiled computes {compiled}, eager {eager}"
            + (f" ({axes})" if axes else "")
            + f"; max {distance}, {over}"
        )
    named = ", ".join(
        f"{who} matches {formula or 'no catalog formula within budget'}"
        for who, formula in (("compiled", compiled), ("eager", eager))
    )
    return f"{head}: formula unknown ({named}); max {distance}, {over}"


def pair_findings(pairs: pd.DataFrame) -> list[FindingLine]:
    """One line per compiled implementation beside its eager counterpart (the ``pairs``
    table): whether their fingerprints name the same formula, and the worst lock-step ULP
    distance between them with its component."""
    lines = []
    for (impl, counterpart), rows in pairs.groupby(["implementation", "counterpart"], sort=True):
        lines.append(FindingLine(_pair_text(str(impl), str(counterpart), rows)))
    return lines
