"""A short Markdown verdict for a pull-request comment, read from the summary records.

One row per implementation (its worst case), then the case counts and one line of run
metadata. Nothing is recomputed: every cell is a value, or a max/worst of values, from the
summary and fingerprint tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from adamspec.reports.findings import (
    MAX_FINDINGS,
    formula_groups,
    key_findings,
    pair_findings,
    tier_counts,
    tiers_of,
)
from adamspec.reports.schema import FINGERPRINT_COLUMNS, SUMMARY_COLUMNS, VERDICTS
from adamspec.reports.tables import conform
from adamspec.reports.tiers import TIER_MARK, tier_text
from adamspec.spec.precision import ROLES, PrecisionError, precision_named

__all__ = [
    "NONFINITE_ULP",
    "VERDICT_SEVERITY",
    "first_section",
    "format_ulp",
    "md_escape",
    "mixed_ulps_note",
    "overview",
    "precision_text",
    "shown_verdict",
    "summary_markdown",
    "verdict_counts",
]

#: Worse verdicts rank higher. A crash hides every number, so it outranks a measured
#: discrepancy; a skipped case (no sparse path, no weight decay) says nothing about the
#: cases that did run, so an implementation is "skipped" only when every case was.
VERDICT_SEVERITY: dict[str, int] = {"skipped": 0, "pass": 1, "range": 2, "discrepancy": 3,
                                    "error": 4}  # fmt: skip

#: ``ulp_error``/``max_ulp`` value for a NaN/inf mismatch (see reports.schema).
NONFINITE_ULP = -1


def md_escape(text: Any) -> str:
    """``text`` safe inside a Markdown table cell: ``|`` escaped, newlines flattened, and
    ``<``/``>`` as entities so an exception message cannot inject HTML into the comment."""
    s = "" if text is None or text is pd.NA else str(text)
    s = s.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return s.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def format_ulp(value: Any) -> str:
    """A ULP count for display: ``-1`` is a NaN/inf mismatch, a missing value is ``—``."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "—"
    v = int(value)
    return "NaN/inf" if v == NONFINITE_ULP else str(v)


def precision_text(names: Iterable[Any]) -> str:
    """The precisions rows were measured in, for a reader: ``float32``, or a mix with its
    roles spelt out, ``bf16-fp32master (param bfloat16, grad bfloat16, state float32, master
    float32)``; several joined by "; " in the order given ("" for none)."""
    shown = []
    for name in dict.fromkeys(str(n) for n in names if n is not None and n is not pd.NA):
        if not name:
            continue
        try:
            precision = precision_named(name)
        except PrecisionError:  # a record from elsewhere: shown as written
            shown.append(name)
            continue
        if precision.uniform or precision.name == precision.roles_text():
            shown.append(name)
        else:
            roles = ", ".join(f"{r} {getattr(precision, r) or 'none'}" for r in ROLES)
            shown.append(f"{name} ({roles})")
    return "; ".join(shown)


#: Said beside a mixed precision: a component's ULPs are those of the dtype it is stored in.
MIXED_ULPS = "ULPs of each component in its own dtype"


def mixed_ulps_note(names: Iterable[Any]) -> str:
    """``"; " + MIXED_ULPS`` when a precision among ``names`` is mixed, else ""."""
    for name in {str(n) for n in names if n is not None and n is not pd.NA and str(n)}:
        try:
            if not precision_named(name).uniform:
                return f"; {MIXED_ULPS}"
        except PrecisionError:
            continue
    return ""


def _ulp_rank(value: Any) -> float:
    """Order for "worst": missing < 0 < 1 < ... < NaN/inf mismatch."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return -1.0
    v = int(value)
    return float("inf") if v == NONFINITE_ULP else float(v)


def _best_variants(fingerprints: pd.DataFrame) -> dict[str, str]:
    """implementation -> its rank-1 variant(s) from the fingerprint table (ties joined)."""
    best: dict[str, str] = {}
    if fingerprints.empty:
        return best
    top = fingerprints[
        fingerprints["rank"] == fingerprints.groupby("implementation")["rank"].transform("min")
    ]
    for impl, group in top.groupby("implementation", sort=True):
        best[str(impl)] = ", ".join(sorted(group["variant"].astype(str).unique()))
    return best


def overview(summary: pd.DataFrame, fingerprints: pd.DataFrame) -> pd.DataFrame:
    """One row per implementation: its worst case over the summary, worst first.

    Columns: ``implementation``, ``documented_variant``, ``matched_variant`` (the rank-1
    fingerprint variant(s) if the implementation has fingerprints, else the worst case's
    ``matched_variant``), ``max_ulp`` (max over the measured cases, i.e. not skipped or
    error; a NaN/inf mismatch, ``-1``, dominates; NA if none), ``category`` and ``detail``
    of the worst case, ``counterexample`` (the first case's script path, "" if none),
    ``verdict`` (the worst),
    ``n_worst`` (cases with that verdict), ``n_cases`` and ``tier`` (its tier as the
    main job's table shows it, :func:`adamspec.reports.tiers.tier_text`). Order: most
    severe verdict, then largest ``max_ulp``, then name.
    """
    summary = conform(summary, SUMMARY_COLUMNS, "summary")
    fingerprints = conform(fingerprints, FINGERPRINT_COLUMNS, "fingerprints")
    best = _best_variants(fingerprints)
    rows = []
    for impl, group in summary.groupby("implementation", sort=True):
        records = group.to_dict("records")
        worst = max(
            records,
            key=lambda r: (
                VERDICT_SEVERITY.get(r["verdict"], len(VERDICT_SEVERITY)),
                _ulp_rank(r["max_ulp"]),
                # Deterministic among equals: the last case name wins, whatever the input order.
                r["case"],
            ),
        )
        # A skipped or crashed case measured nothing, whatever placeholder its max_ulp holds
        # (the harness writes 0): it must not show as "0 ULP".
        measured = [
            r["max_ulp"]
            for r in records
            if r["verdict"] not in ("skipped", "error") and _ulp_rank(r["max_ulp"]) >= 0
        ]
        max_ulp = max(measured, key=_ulp_rank) if measured else pd.NA
        documented = sorted({r["documented_variant"] for r in records if r["documented_variant"]})
        rows.append(
            {
                "implementation": str(impl),
                "documented_variant": ", ".join(documented),
                "matched_variant": best.get(str(impl), worst["matched_variant"]),
                "max_ulp": max_ulp,
                "category": worst["category"],
                "verdict": worst["verdict"],
                "detail": worst["detail"],
                "counterexample": next(
                    (r["counterexample"] for r in records if r["counterexample"]), ""
                ),
                "n_worst": sum(r["verdict"] == worst["verdict"] for r in records),
                "n_cases": len(records),
                "tier": tier_text(records),
            }
        )
    columns = [
        "implementation",
        "documented_variant",
        "matched_variant",
        "max_ulp",
        "category",
        "verdict",
        "detail",
        "counterexample",
        "n_worst",
        "n_cases",
        "tier",
    ]
    out = pd.DataFrame(rows, columns=columns)
    if out.empty:
        return out
    order = sorted(
        range(len(out)),
        key=lambda i: (
            -VERDICT_SEVERITY.get(out.at[i, "verdict"], len(VERDICT_SEVERITY)),
            -_ulp_rank(out.at[i, "max_ulp"]),
            out.at[i, "implementation"],
        ),
    )
    return out.iloc[order].reset_index(drop=True)


def shown_verdict(row: Any) -> str:
    """An overview row's verdict cell: the tier when it passes (``pass``, ``pass (range: 2
    cases)``), else the worst verdict and how many cases have it (``discrepancy (2/18)``)."""
    if row.tier.startswith("pass"):
        return row.tier
    return (
        row.verdict
        if row.n_worst == row.n_cases
        else f"{row.verdict} ({row.n_worst}/{row.n_cases})"
    )


def verdict_counts(summary: pd.DataFrame) -> dict[str, int]:
    """Cases per verdict: every verdict of reports.schema.VERDICTS (0 if none), then any
    unexpected verdict the records hold, so nothing is silently dropped from a count."""
    counts = {v: 0 for v in VERDICTS}
    for verdict, n in summary["verdict"].value_counts(sort=False).items():
        counts[str(verdict)] = counts.get(str(verdict), 0) + int(n)
    return counts


def _meta_line(meta: Mapping[str, Any]) -> str:
    seed = meta.get("seed", "—")
    duration = meta.get("duration_s", meta.get("duration"))
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        duration_text = f"{duration:.1f} s"
    else:
        duration_text = "—" if duration is None else str(duration)
    version = meta.get("adamspec_version", meta.get("version", "—"))
    return (
        f"seed {md_escape(seed)} · duration {md_escape(duration_text)} · "
        f"adamspec {md_escape(version)}"
    )


def first_section(
    summary: pd.DataFrame, fingerprints: pd.DataFrame, pairs: pd.DataFrame | None = None
) -> list[str]:
    """The answer before any table: tiers, implementations by formula, the findings, and
    each compiled implementation beside its eager counterpart (one line each)."""
    tiers = tiers_of(summary)
    if not tiers:
        return []
    counts = " · ".join(f"{n} {t} {TIER_MARK[t]}" for t, n in tier_counts(tiers).items())
    lines = [f"**{len(tiers)} implementations:** {counts}", "", "**By formula** (fingerprint):"]
    for group in formula_groups(summary, fingerprints):
        members = ", ".join(
            f"{name} {TIER_MARK[t]}" + (f" ({note})" if note else "")
            for name, t, note in group.members
        )
        lines.append(f"- **{md_escape(group.formula)}**: {md_escape(members)}")
    found = key_findings(summary, fingerprints)
    lines += ["", "**Findings:**" if found else "**Findings:** none."]
    for f in found[:MAX_FINDINGS]:
        links = [f"[counterexample]({f.counterexample})"] if f.counterexample else []
        links += [f"case {md_escape(case)}" for _, case in f.cases[:1]]
        lines.append(
            f"- {md_escape(f.title or f.text)}" + (f" ({', '.join(links)})" if links else "")
        )
    if len(found) > MAX_FINDINGS:
        lines.append(f"- … and {len(found) - MAX_FINDINGS} more in the table below.")
    paired = pair_findings(pairs) if pairs is not None else []
    if paired:
        lines += ["", "**Compiled vs eager** (lock-step from the same states; fingerprints):"]
        lines += [f"- {md_escape(f.text)}" for f in paired]
    return [*lines, ""]


def summary_markdown(
    summary: pd.DataFrame,
    fingerprints: pd.DataFrame,
    meta: Mapping[str, Any],
    max_rows: int = 64,
    pairs: pd.DataFrame | None = None,
) -> str:
    """The PR-comment Markdown: one table row per implementation, counts, a metadata line
    (``pairs``, the compiled implementations beside their eager counterparts, adds one line
    each to the first section).

    Reads ``meta["seed"]``, ``meta["duration_s"]`` (or ``"duration"``) and
    ``meta["adamspec_version"]`` (or ``"version"``); missing keys show as ``—``. At most
    ``max_rows`` implementations are listed (worst first); the rest are counted in one line,
    so the comment stays short however many implementations ran.
    """
    summary = conform(summary, SUMMARY_COLUMNS, "summary")
    fingerprints = conform(fingerprints, FINGERPRINT_COLUMNS, "fingerprints")
    table = overview(summary, fingerprints)
    counts = verdict_counts(summary)
    lines = ["## adamspec", ""]
    precisions = precision_text(summary["precision"])
    if precisions:
        note = mixed_ulps_note(summary["precision"])
        lines += [f"**Precision:** {md_escape(precisions + note)}", ""]
    lines += first_section(summary, fingerprints, pairs)
    if table.empty:
        lines.append("No implementation produced a result.")
    else:
        lines += [
            "| implementation | documented variant | matched variant | max ULP | category "
            "| verdict |",
            "| --- | --- | --- | ---: | --- | --- |",
        ]
        for row in table.head(max_rows).itertuples(index=False):
            verdict = shown_verdict(row)
            cells = [
                md_escape(row.implementation),
                md_escape(row.documented_variant),
                md_escape(row.matched_variant),
                format_ulp(row.max_ulp),
                md_escape(row.category)
                + (f" ([counterexample]({row.counterexample}))" if row.counterexample else ""),
                md_escape(verdict) if row.tier.startswith("pass") else f"**{md_escape(verdict)}**",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if len(table) > max_rows:
            rest = table.iloc[max_rows:]
            lines.append("")
            lines.append(
                f"… and {len(rest)} more implementations "
                f"(worst verdict among them: {md_escape(rest['verdict'].iloc[0])})."
            )
    total = sum(counts.values())
    count_text = " · ".join(f"{n} {md_escape(v)}" for v, n in counts.items())
    lines += [
        "",
        f"**{total} cases:** {count_text} ({len(table)} implementations)",
        "",
        _meta_line(meta),
    ]
    return "\n".join(lines) + "\n"
