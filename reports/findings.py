"""The first screen of a run's report: implementations grouped by the formula they compute,
their conformance tiers, and the few findings that matter.

Read from the summary and fingerprint records (the catalog tells which variant names are
one formula); shared by report.md and report.html so both open with the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
from adamspec.spec.catalog import formula_key

__all__ = [
    "FindingLine",
    "Group",
    "case_anchor",
    "formula_groups",
    "key_findings",
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
        fingerprints[fingerprints["rank"] == 1].set_index("implementation")
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


def key_findings(summary: pd.DataFrame, fingerprints: pd.DataFrame) -> list[FindingLine]:
    """The findings that matter, worst first: implementations that do not conform or crash
    (one line each), implementations whose fingerprint is not the documented formula, and
    the dtype's range (one line per set of cases, naming the implementations)."""
    tiers = tiers_of(summary)
    lines: list[FindingLine] = []
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
