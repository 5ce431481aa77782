"""The reports of ``adamspec diff``: diff.parquet, diff.md and diff.html.

They read the diff's records (one row per problem x step x measure x subject, see
:data:`DIFF_COLUMNS`) and its metadata (the two fingerprinted formulas, each problem's
switches and status); nothing is recomputed. Each report opens with the answer, one
sentence per problem at its last step ("epsilon placement explains 99.99% of the
divergence at step 100"), then the plots and tables, and what was run last.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from adamspec.reports.html import CSS, NODATA, esc, grid, label, png, table
from adamspec.reports.markdown import md_escape
from adamspec.reports.tables import atomic_write

__all__ = [
    "DIFF_COLUMNS",
    "DIFF_FILES",
    "Finding",
    "diff_frame",
    "diff_html",
    "diff_markdown",
    "findings",
    "percent",
    "write_diff",
]

#: One row per problem x step x measure x subject. ``measure`` is one of
#: ``max_ulp``/``median_ulp`` (subject: the state component; max -1 is a NaN/inf mismatch),
#: ``relative_distance`` (A vs B), ``loss`` (subject A or B; closed loops only),
#: ``formula_gap`` (the distance between the correctly rounded runs of A's and B's formulas),
#: ``rounding`` (the share of the divergence the formula gap does not account for), and per
#: switch (subject: its label) ``gap_closed`` (share of the formula gap it closes),
#: ``explained`` (share of the real divergence) and ``alone`` (how far it moves A's formula,
#: in units of the gap). ``step`` is the optimizer's step counter after the step.
DIFF_COLUMNS: tuple[str, ...] = ("problem", "regime", "dtype", "step", "measure", "subject",
                                 "value")  # fmt: skip

DIFF_FILES = {"parquet": "diff.parquet", "markdown": "diff.md", "html": "diff.html"}

#: Shares below this are "no effect" in sentences (they stay in the tables).
_NEGLIGIBLE = 0.0005


def diff_frame(rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """The records as a typed frame (step int64, value float64, the rest text)."""
    df = (
        pd.DataFrame(rows, columns=list(DIFF_COLUMNS))
        if not isinstance(rows, pd.DataFrame)
        else rows
    )
    missing = [c for c in DIFF_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"diff table: missing columns {missing}")
    out = df.loc[:, list(DIFF_COLUMNS)].reset_index(drop=True)
    text = [c for c in DIFF_COLUMNS if c not in ("step", "value")]
    return out.astype({**dict.fromkeys(text, "str"), "step": "int64", "value": "float64"})


def percent(share: float) -> str:
    """A share as a percentage a reader can trust: never "100.0%" for 99.96%, never "0.0%"
    for a nonzero share."""
    if share is None or math.isnan(share):
        return "—"
    p = 100.0 * share
    if p != 100.0 and round(p, 1) == 100.0:
        return "> 99.99%" if round(p, 2) == 100.0 else f"{p:.2f}%"
    if p != 0.0 and round(p, 1) == 0.0:
        return "< 0.1%" if p > 0 else "> −0.1%"
    return f"{p:.1f}%".replace("-", "−")


def _sci(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.3g}"


def _ulp(x: float) -> str:
    if x is None or math.isnan(x):
        return "—"
    if x < 0:
        return "NaN/inf"
    return f"{x:.0f}" if x == int(x) else f"{x:g}"


# --------------------------------------------------------------------------- findings


@dataclass
class Finding:
    """One problem's answer at a step, read from the records."""

    problem: str
    regime: str
    status: str
    detail: str
    step: int = 0
    divergence: float = math.nan
    ulp: dict[str, tuple[float, float]] = field(default_factory=dict)  # comp -> (max, median)
    gap: float | None = None  # None: no attribution (a formula is not known)
    rounding: float = math.nan
    explained: dict[str, float] = field(default_factory=dict)
    pairs: dict[str, float] = field(default_factory=dict)  # two switches at once: explained
    closed: dict[str, float] = field(default_factory=dict)
    alone: dict[str, float] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # label -> why it cannot switch alone

    @property
    def overlap(self) -> float:
        """The share of the divergence the formulas account for that no single switch
        closes (their effects overlap; negative: they overlap the other way)."""
        if self.gap is None or not self.gap or math.isnan(self.rounding):
            return math.nan
        return (1.0 - self.rounding) - sum(v for v in self.explained.values() if not math.isnan(v))

    def sentence(self, meta: Mapping[str, Any]) -> str:
        """The answer and its details in one line."""
        details = self.details()
        return self.headline(meta) + (f". {details}" if details else "")

    def headline(self, meta: Mapping[str, Any]) -> str:
        """The answer: what the divergence at the last step comes from."""
        if self.status != "ok":
            return f"not compared: {self.detail or self.status}"
        if self.divergence == 0 and self.ulp.get("param", (math.nan,))[0] == 0:
            return f"params bit-identical at step {self.step}"
        if self.gap is None:
            return f"not attributed: {_unknown(meta)}"
        if self.gap == 0:
            return f"rounding only at step {self.step}: {_same(self, meta)}"
        parts = [
            f"{label} explains {percent(v)}"
            for label, v in sorted(self.explained.items(), key=lambda kv: -abs(kv[1]))
            if not math.isnan(v) and abs(v) >= _NEGLIGIBLE
        ]
        text = ", ".join(parts) + f" of the divergence at step {self.step}" if parts else ""
        best_pair = max(self.pairs.items(), key=lambda kv: kv[1], default=None)
        best_single = max((v for v in self.explained.values() if not math.isnan(v)), default=0.0)
        if best_pair is not None and best_pair[1] >= best_single + 0.05:
            text += f"; together, {best_pair[0]} explain {percent(best_pair[1])}"
        return f"{text}; rounding {percent(self.rounding)}".lstrip("; ")

    def details(self) -> str:
        """How far apart A and B are, and what the attribution leaves aside."""
        if self.status != "ok":
            return ""
        param_max, param_median = self.ulp.get("param", (math.nan, math.nan))
        others = ", ".join(f"{c} {_ulp(u[0])}" for c, u in self.ulp.items() if c != "param")
        parts = [
            f"A vs B: relative parameter distance {_sci(self.divergence)}, param max "
            f"{_ulp(param_max)} ULP (median {_ulp(param_median)})"
            + (f", max ULP of {others}" if others else "")
        ]
        if not math.isnan(self.overlap) and abs(self.overlap) >= 0.005:
            parts.append(
                f"{percent(self.overlap)} is closed by no single switch (the effects overlap)"
            )
        quiet = [k for k, v in self.explained.items() if not math.isnan(v) and abs(v) < _NEGLIGIBLE]
        if quiet:
            parts.append(f"no effect here: {', '.join(quiet)}")
        if self.invalid:
            parts.append(f"not switchable alone: {', '.join(self.invalid)}")
        return "; ".join(parts)


def _unknown(meta: Mapping[str, Any]) -> str:
    missing = [
        f"{side['implementation']} matches no catalog formula ({side['fingerprint']})"
        for side in (meta.get("a", {}), meta.get("b", {}))
        if not side.get("within_budget")
    ]
    return "; ".join(missing) or "no formula"


def _same(f: Finding, meta: Mapping[str, Any]) -> str:
    a, b = meta.get("a", {}).get("formula", ""), meta.get("b", {}).get("formula", "")
    if not f.explained:
        return f"both compute {a}" if a == b else f"{a} and {b} are one formula"
    return f"their formulas differ only in {', '.join(f.explained)}, which change nothing here"


def findings(df: pd.DataFrame, meta: Mapping[str, Any]) -> list[Finding]:
    """Each problem of ``meta`` at its last measured step."""
    out = []
    for p in meta.get("problems", []):
        f = Finding(p["name"], p.get("regime", ""), p.get("status", ""), p.get("detail", ""))
        f.invalid = {s["label"]: s["reason"] for s in p.get("switches", []) if s.get("reason")}
        rows = df[df["problem"] == p["name"]]
        if f.status == "ok" and not rows.empty:
            f.step = int(rows["step"].max())
            _fill(f, rows[rows["step"] == f.step])
        out.append(f)
    return out


def _values(rows: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(measure, subject) -> value of the rows of one step."""
    return dict(zip(zip(rows["measure"], rows["subject"], strict=True), rows["value"], strict=True))


def _fill(f: Finding, last: pd.DataFrame) -> None:
    values = _values(last)
    f.divergence = values.get(("relative_distance", "A vs B"), math.nan)
    for comp in ("param", "m", "v", "v_max"):
        if ("max_ulp", comp) in values:
            f.ulp[comp] = (values[("max_ulp", comp)], values[("median_ulp", comp)])
    if ("formula_gap", "A vs B formulas") in values:
        f.gap = values[("formula_gap", "A vs B formulas")]
        f.rounding = values.get(("rounding", "rounding"), math.nan)
    for (measure, subject), v in values.items():
        target = {
            "explained": f.explained,
            "pair_explained": f.pairs,
            "gap_closed": f.closed,
            "alone": f.alone,
        }.get(measure)
        if target is not None:
            target[subject] = v


def formulas_sentence(meta: Mapping[str, Any]) -> str:
    """What each side computes and where the two formulas differ."""
    a, b = meta.get("a", {}), meta.get("b", {})

    def side(s: Mapping[str, Any]) -> str:
        if not s.get("formula"):
            return f"{s.get('implementation')} (no formula: {s.get('fingerprint')})"
        close = "" if s.get("within_budget") else " (closest, over budget)"
        return f"{s.get('implementation')} computes {s['formula']}{close}"

    text = f"{side(a)}; {side(b)}."
    axes = meta.get("formula_axes")
    if axes:
        shown = ", ".join(f"{x['label']} ({x['a']} → {x['b']})" for x in axes)
        text += f" The formulas differ in {shown}."
    elif a.get("formula") and a.get("formula") == b.get("formula"):
        text += " One formula: every difference between them is rounding."
    return text


# --------------------------------------------------------------------------- markdown

_CHECKPOINTS = (1, 10, 100, 1000, 10_000, 100_000)


def _checkpoint_rows(df: pd.DataFrame, problem: str) -> list[tuple[int, dict]]:
    """(step, {(measure, subject): value}) at steps 1, 10, 100, ... and the last one."""
    rows = df[df["problem"] == problem]
    if rows.empty:
        return []
    first = int(rows["step"].min())
    steps = sorted(rows["step"].unique())
    wanted = {s for s in steps if s - first + 1 in _CHECKPOINTS} | {int(steps[-1])}
    out = []
    for step in sorted(wanted):
        part = rows[rows["step"] == step]
        values = {
            (m, s): v
            for m, s, v in zip(part["measure"], part["subject"], part["value"], strict=True)
        }
        out.append((int(step), values))
    return out


def _glance_cells(values: Mapping[tuple[str, str], float], labels: Sequence[str]) -> list[str]:
    cells = [
        _sci(values.get(("relative_distance", "A vs B"), math.nan)),
        _ulp(values.get(("max_ulp", "param"), math.nan)),
        _ulp(values.get(("median_ulp", "param"), math.nan)),
        _ulp(values.get(("max_ulp", "m"), math.nan)),
        _ulp(values.get(("max_ulp", "v"), math.nan)),
        _sci(values.get(("formula_gap", "A vs B formulas"), math.nan)),
    ]
    cells += [
        percent(values.get(("explained", x), values.get(("pair_explained", x), math.nan)))
        for x in labels
    ]
    cells.append(percent(values.get(("rounding", "rounding"), math.nan)))
    return cells


def _labels(meta_problem: Mapping[str, Any], checkpoints: list[tuple[int, dict]]) -> list[str]:
    """The switches a table shows: every one that explains anything at a checkpoint."""
    return [
        s["label"]
        for s in meta_problem.get("switches", [])
        if not s.get("reason")
        and any(
            abs(values.get(("pair_explained" if s.get("pair") else "explained", s["label"]), 0)) > 0
            for _, values in checkpoints
        )
    ]


def _glance(
    df: pd.DataFrame, meta: Mapping[str, Any]
) -> Iterator[tuple[Mapping[str, Any], list[str], list[list[str]]]]:
    """Per problem: its metadata, the headings and the text cells of its table at steps
    1, 10, 100, ... (the switches that explain something at one of them get a column)."""
    for p in meta.get("problems", []):
        checkpoints = _checkpoint_rows(df, p["name"])
        if not checkpoints:
            continue
        labels = _labels(p, checkpoints)
        head = [*_GLANCE_HEAD, *(f"{x} explains" for x in labels), "rounding"]
        yield p, head, [[str(step), *_glance_cells(values, labels)] for step, values in checkpoints]


_GLANCE_HEAD = ["step", "A vs B distance", "param max ULP", "param median ULP", "m max ULP",
                "v max ULP", "formula gap"]  # fmt: skip


def _names(meta: Mapping[str, Any]) -> tuple[str, str]:
    return meta.get("a", {}).get("implementation", "A"), meta.get("b", {}).get(
        "implementation", "B"
    )


def diff_markdown(df: pd.DataFrame, meta: Mapping[str, Any]) -> str:
    """diff.md: the answer first, then each problem's divergence at steps 1, 10, 100, ...,
    the formulas, how it is measured, and the run."""
    df = diff_frame(df)
    a, b = (
        meta.get("a", {}).get("implementation", "A"),
        meta.get("b", {}).get("implementation", "B"),
    )
    lines = [f"## adamspec diff: {md_escape(a)} vs {md_escape(b)}", ""]
    lines += [md_escape(formulas_sentence(meta)), ""]
    for f in findings(df, meta):
        head, details = md_escape(f.headline(meta)), md_escape(f.details())
        lines.append(f"- **{md_escape(f.problem)}** ({f.regime} loop): **{head}**. {details}")
    lines.append("")
    for p, head, rows in _glance(df, meta):
        lines += [f"### {md_escape(p['name'])}", "", md_escape(p.get("description", "")), ""]
        lines.append("| " + " | ".join(md_escape(h) for h in head) + " |")
        lines.append("| " + " | ".join("---:" for _ in head) + " |")
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        lines.append("")
    lines += _markdown_formulas(meta)
    lines += ["### How it is measured", "", md_escape(_method(meta)), "", _run_line(meta), ""]
    return "\n".join(lines)


def _markdown_formulas(meta: Mapping[str, Any]) -> list[str]:
    lines = ["### Formulas", ""]
    for key in ("a", "b"):
        side = meta.get(key, {})
        lines.append(
            f"- {key.upper()} `{md_escape(side.get('implementation', ''))}`: "
            f"{md_escape(side.get('fingerprint', ''))}"
        )
    for p in meta.get("problems", []):
        if p.get("switches"):
            shown = "; ".join(
                f"{s['label']}: {s['a']} → {s['b']}" + (f" ({s['reason']})" if s["reason"] else "")
                for s in p["switches"]
            )
            lines.append(f"- switched on {md_escape(p['name'])}: {md_escape(shown)}")
    return [*lines, ""]


def _method(meta: Mapping[str, Any]) -> str:
    return (
        "Both implementations run free from the same initial state (closed loops: each gets "
        "the gradient of its own params). Distance: "
        f"{meta.get('distance', '')}. The oracle runs the correctly rounded trajectories "
        "(each step exact, rounded to the dtype) of A's formula R_A, B's formula R_B, and A's "
        "formula with one axis or hyperparameter switched to B's; formula gap = d(R_A, R_B); "
        "a switch closes 1 − d(R_switched, R_B)/gap of it; the formulas account for "
        "φ = min(1, gap/d(A, B)) of the real divergence, rounding for 1 − φ, and a switch "
        "explains (its closed share) × φ. Shares of one switch at a time need not add up: "
        "what no single switch closes is reported as overlap."
    )


def _run_line(meta: Mapping[str, Any]) -> str:
    steps = sorted({p.get("steps", 0) for p in meta.get("problems", [])})
    parts = [
        f"dtype {meta.get('dtype', '—')}",
        f"seed {meta.get('seed', '—')}",
        f"steps {', '.join(map(str, steps)) or '—'}",
        f"oracle {meta.get('oracle', '—')}",
        f"{meta.get('duration_s', '—')} s",
        f"adamspec {meta.get('adamspec_version', '—')}",
    ]
    if meta.get("framework_log"):
        parts.append(
            f"framework log {meta['framework_log']} ({meta.get('framework_warnings', 0)} warnings)"
        )
    return md_escape(" · ".join(parts))


# --------------------------------------------------------------------------- plots


def _log_panel(ax: Any) -> None:
    """Log x; log y over a wide range (minor ticks at 2 and 5 labelled while it spans under
    three decades), linear y within one decade; a panel with nothing above 0 says so."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    values = [v for line in ax.get_lines() for v in line.get_ydata()]
    ax.grid(True, which="both", alpha=0.25)
    if not values:
        ax.text(0.5, 0.5, "0 at every step", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return
    span = max(values) / min(values)
    if span < 10:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        return
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:.0e}") if span < 1000 else NullFormatter()
    )


def _series(rows: pd.DataFrame, measure: str, subject: str) -> tuple[list, list]:
    part = rows[(rows["measure"] == measure) & (rows["subject"] == subject)]
    part = part[part["value"] > 0]  # a log axis has no place for 0
    return part["step"].tolist(), part["value"].tolist()


def plot_divergence(df: pd.DataFrame, problems: Sequence[str]) -> str:
    """Per problem, vs step (log-log): A vs B relative distance, the formula gap, and the
    max ULP of each state component."""
    shown = [p for p in problems if not df[df["problem"] == p].empty]
    if not shown:
        return NODATA
    fig, axes = grid(2 * len(shown), max_cols=2, panel=(6.2, 2.6), sharey=False)
    for i, name in enumerate(shown):
        rows = df[df["problem"] == name]
        top, bottom = axes[2 * i], axes[2 * i + 1]
        top.plot(*_series(rows, "relative_distance", "A vs B"), color="C0", label="A vs B")
        gap = _series(rows, "formula_gap", "A vs B formulas")
        formulas = "their formulas, correctly rounded"
        if not gap[0] and not rows[rows["measure"] == "formula_gap"].empty:
            formulas = "their formulas: one formula, no gap"
        top.plot(*gap, "--", color="C1", label=formulas)
        top.set_title(f"{label(name)}: relative parameter distance", fontsize=9)
        top.legend(fontsize=7, frameon=True, framealpha=0.8, loc="best")
        for j, comp in enumerate(("param", "m", "v", "v_max")):
            steps, values = _series(rows, "max_ulp", comp)
            if steps:
                bottom.plot(steps, values, color=f"C{j + 2}", label=f"{comp} max")
        bottom.set_title(f"{label(name)}: max ULP between A and B", fontsize=9)
        bottom.legend(fontsize=7, frameon=True, framealpha=0.8, loc="upper left")
        _log_panel(top)
        _log_panel(bottom)
    fig.supxlabel("step")
    return png(fig, tight=False)


def plot_attribution(found: Sequence[Finding]) -> str:
    """Per problem at its last step: what each switch explains, rounding, and the overlap."""
    shown = [f for f in found if f.gap]
    if not shown:
        if any(f.gap == 0 for f in found):
            return "<p>Nothing to attribute: A and B compute one formula (rounding only).</p>"
        return "<p>Not attributed: a side's formula is not in the catalog (see above).</p>"
    fig, axes = grid(len(shown), max_cols=2, panel=(6.2, 2.8), sharey=False, sharex=False)
    for f, ax in zip(shown, axes, strict=True):
        items = [(k, v) for k, v in f.explained.items() if abs(v) >= _NEGLIGIBLE]
        items += [(k, v) for k, v in f.pairs.items() if abs(v) >= _NEGLIGIBLE]
        items.append(("rounding", f.rounding))
        if not math.isnan(f.overlap) and abs(f.overlap) >= _NEGLIGIBLE:
            items.append(("no single switch (overlap)", f.overlap))
        names = [label(k) for k, _ in items][::-1]
        values = [100.0 * (0.0 if math.isnan(v) else v) for _, v in items][::-1]
        colors = [
            "#999999" if k.startswith(("rounding", "no single")) else ("C1" if "+" in k else "C0")
            for k, _ in items
        ]
        ax.barh(names, values, color=colors[::-1])
        for y, v in enumerate(values):
            ax.text(max(v, 0) + 1, y, percent(v / 100.0), va="center", fontsize=7)
        ax.set_xlim(min(0.0, min(values)) - 2, 118)
        ax.axvline(0, color="#444", lw=0.8)
        ax.set_title(f"{label(f.problem)} at step {f.step}", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    fig.supxlabel("% of the divergence between A and B")
    return png(fig, tight=True)


def plot_loss(df: pd.DataFrame, problems: Sequence[str]) -> str:
    """Loss vs step for A and B on the closed-loop problems."""
    shown = [p for p in problems if not df[(df["problem"] == p) & (df["measure"] == "loss")].empty]
    if not shown:
        return NODATA
    fig, axes = grid(len(shown), max_cols=2, panel=(6.2, 2.6), sharey=False)
    for name, ax in zip(shown, axes, strict=True):
        rows = df[df["problem"] == name]
        for side, style in (("A", "-"), ("B", "--")):
            ax.plot(*_series(rows, "loss", side), style, label=side)
        ax.set_title(label(name), fontsize=9)
        ax.legend(fontsize=7, frameon=False)
        _log_panel(ax)
    fig.supxlabel("step")
    fig.supylabel("loss")
    return png(fig, tight=False)


# --------------------------------------------------------------------------- html

_DIFF_CSS = """
ul.answers li { margin: 0.45em 0; }
ul.answers span.detail { color: #555; font-size: 0.9em; }
p.formulas { font-size: 1.05em; }
"""


def _glance_html(df: pd.DataFrame, meta: Mapping[str, Any]) -> str:
    parts = []
    for p, head, rows in _glance(df, meta):
        cells = [[("num", esc(c)) for c in row] for row in rows]
        parts.append(f"<h3>{esc(p['name'])}</h3><p>{esc(p.get('description', ''))}</p>")
        parts.append(table(head, cells, [""] * len(cells)))
    return "\n".join(parts) or NODATA


def _formulas_html(meta: Mapping[str, Any]) -> str:
    rows = []
    for key in ("a", "b"):
        side = meta.get(key, {})
        rows.append(
            [
                ("", esc(key.upper())),
                ("", esc(side.get("implementation", ""))),
                ("", esc(side.get("formula", "") or "—")),
                ("wrap", esc(side.get("fingerprint", ""))),
            ]
        )
    out = [table(["", "implementation", "formula", "fingerprint"], rows, ["", ""],
                 widths=(4, 24, 18, 54))]  # fmt: skip
    switch_rows = [
        [
            ("", esc(p["name"])),
            ("", esc(s["label"])),
            ("", esc(s["a"])),
            ("", esc(s["b"])),
            ("wrap", esc(s["reason"] or ("both at once" if s.get("pair") else "alone"))),
        ]
        for p in meta.get("problems", [])
        for s in p.get("switches", [])
    ]
    if switch_rows:
        out.append(
            table(
                ["problem", "switch", "A", "B", "run"],
                switch_rows,
                [""] * len(switch_rows),
                widths=(16, 24, 18, 18, 24),
            )
        )
    return "\n".join(out)


def diff_html(df: pd.DataFrame, meta: Mapping[str, Any]) -> str:
    """diff.html: self-contained (inline PNG plots), the answer on the first screen."""
    df = diff_frame(df)
    a, b = (
        meta.get("a", {}).get("implementation", "A"),
        meta.get("b", {}).get("implementation", "B"),
    )
    found = findings(df, meta)
    names = [p["name"] for p in meta.get("problems", [])]
    answers = "".join(
        f"<li><b>{esc(f.problem)}</b> ({esc(f.regime)} loop): <b>{esc(f.headline(meta))}</b>"
        f'<br><span class="detail">{esc(f.details())}</span></li>'
        for f in found
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>adamspec diff: {esc(a)} vs {esc(b)}</title>",
        f"<style>{CSS}{_DIFF_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>adamspec diff: {esc(a)} vs {esc(b)}</h1>",
        f'<p class="formulas">{esc(formulas_sentence(meta))}</p>',
        f'<ul class="answers">{answers}</ul>',
        '<h2 id="attribution">What the divergence comes from (last step)</h2>',
        plot_attribution(found),
        '<h2 id="divergence">Divergence vs step</h2>',
        plot_divergence(df, names),
        '<h2 id="loss">Loss</h2>',
        plot_loss(df, names),
        '<h2 id="glance">At steps 1, 10, 100, …</h2>',
        _glance_html(df, meta),
        '<h2 id="formulas">Formulas</h2>',
        _formulas_html(meta),
        '<h2 id="method">How it is measured</h2>',
        f"<p>{esc(_method(meta))}</p>",
        '<h2 id="run">Run</h2>',
        f"<p>{esc(_run_line(meta))}</p>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------------- files


def _parquet_bytes(df: pd.DataFrame, meta: Mapping[str, Any]) -> bytes:
    """The records with ``meta`` as JSON in the file's key-value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(df, preserve_index=False)
    extra = {b"adamspec.diff": json.dumps(dict(meta), sort_keys=True, default=str).encode()}
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **extra})
    buf = io.BytesIO()
    pq.write_table(arrow, buf, compression="zstd")
    return buf.getvalue()


def read_diff_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata a diff.parquet carries."""
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[b"adamspec.diff"])


def write_diff(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    meta: Mapping[str, Any],
) -> dict[str, Path]:
    """Write diff.parquet, diff.md and diff.html into ``out_dir`` (everything rendered
    before the first write); returns name -> path."""
    df = diff_frame(rows)
    rendered = {
        "parquet": _parquet_bytes(df, meta),
        "markdown": diff_markdown(df, meta),
        "html": diff_html(df, meta),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {name: atomic_write(out / DIFF_FILES[name], data) for name, data in rendered.items()}
