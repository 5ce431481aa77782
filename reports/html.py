"""One self-contained HTML report: the summary table and five plots as inline PNGs.

The file has no external resource at all (no CSS, script, font or image URL), so it can be
attached to a CI run or mailed and still open offline. Plots are drawn with
:class:`matplotlib.figure.Figure` directly rather than through ``pyplot``: such a figure is
never registered with pyplot's global figure manager, so it needs no GUI backend (it renders
with Agg when saved to PNG), cannot leak when a report is built in a long-lived process,
and building a report never changes the backend of a caller who also uses pyplot.
Every plot copes with an empty table by printing "no data" in its place.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullLocator

from adamspec.reports.findings import (
    MAX_FINDINGS,
    case_anchor,
    formula_groups,
    key_findings,
    pair_findings,
    tier_counts,
    tiers_of,
)
from adamspec.reports.markdown import (
    NONFINITE_ULP,
    VERDICT_SEVERITY,
    format_ulp,
    mixed_ulps_note,
    overview,
    precision_text,
    shown_verdict,
    verdict_counts,
)
from adamspec.reports.tables import SCHEMAS, atomic_write, conform, frame
from adamspec.reports.tiers import (
    CONFORMS,
    CONFORMS_EXCEPT_RANGE,
    DOES_NOT_CONFORM,
    ERROR,
    RANGE,
    SKIPPED,
    TIER_MARK,
    is_range,
)

__all__ = ["CSS", "NODATA", "PLOTS", "cell", "esc", "grid", "label", "meta_html", "png",
           "render_html", "table", "write_html"]  # fmt: skip

# More panels than this and one axes with a legend becomes unreadable: use small multiples.
_MAX_LINES_ONE_AXES = 8
_DPI = 80
NODATA = '<p class="nodata">no data</p>'


# --------------------------------------------------------------------------- helpers


def esc(text: Any) -> str:
    s = "" if text is None or text is pd.NA else str(text)
    return html.escape(s, quote=True)


def label(text: Any) -> str:
    """Text for a matplotlib label: ``$`` would otherwise switch on mathtext."""
    return str(text).replace("$", r"\$")


def png(fig: Figure, tight: bool = True) -> str:
    """``fig`` as an ``<img>`` with an inline base64 PNG.

    ``tight=False`` for small-multiple grids, whose margins :func:`_grid` already sets:
    a tight bounding box costs one more full layout pass over every panel."""
    buf = io.BytesIO()
    # No "Software" chunk: the PNG bytes then depend on the data, not the version string.
    # No fig.clear() after: nothing but the caller holds a pyplot-free Figure, so it is
    # freed with its last reference, and clearing 60 panels cost seconds.
    fig.savefig(
        buf,
        format="png",
        dpi=_DPI,
        bbox_inches="tight" if tight else None,
        metadata={"Software": None},
    )
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def grid(
    n: int,
    max_cols: int = 6,
    panel: tuple[float, float] = (3.2, 2.4),
    legend_width: float = 0.0,
    sharex: bool = True,
    sharey: bool = True,
) -> tuple[Figure, list[Any]]:
    """A figure with ``n`` small-multiple panels (sharing both axes unless told otherwise);
    spare panels hidden.

    Margins are fixed in inches (``legend_width`` more on the right) rather than found by
    constrained layout, which measures every tick label of every panel: with 60
    implementations that alone took most of a minute."""
    ncols = max(1, min(max_cols, math.ceil(math.sqrt(n))))
    nrows = math.ceil(n / ncols)
    left, right, bottom, top = 0.9, 0.25 + legend_width, 0.7, 0.35
    width = panel[0] * ncols + left + right
    height = panel[1] * nrows + bottom + top
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=0.12 if sharey else 0.3,
        hspace=0.35 if sharex else 0.5,
    )
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False)
    axes = axes.ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _loglog_panels(axes: list[Any], x_log: bool) -> None:
    """Log scales on panels from :func:`_grid`, without minor ticks."""
    # The panels share their axes, scale and tickers: setting them on one sets them on all,
    # and setting them on each would rescale every sibling every time (quadratic).
    first = axes[0]
    _default_limits_if_empty(axes, x_log)
    if x_log:
        first.set_xscale("log")
    first.set_yscale("log")
    # Minor ticks on log axes were the slowest part of drawing many panels.
    first.xaxis.set_minor_locator(NullLocator())
    first.yaxis.set_minor_locator(NullLocator())
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)


def _default_limits_if_empty(axes: list[Any], x_log: bool) -> None:
    """Axes with no finite positive value (e.g. only NaN/inf mismatches) get limits a log
    scale can draw, instead of matplotlib's (0, 1)."""
    x0 = min((ax.dataLim.x0 for ax in axes), default=math.inf)
    y0 = min((ax.dataLim.y0 for ax in axes), default=math.inf)
    y1 = max((ax.dataLim.y1 for ax in axes), default=-math.inf)
    if not (math.isfinite(y0) and math.isfinite(y1) and y1 > 0):
        axes[0].set_ylim(1, 10)
    if x_log and not (math.isfinite(x0) and x0 > 0):
        axes[0].set_xlim(1, 10)


def _max_finite_and_nonfinite(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per ``keys``: max finite ``ulp_error`` (NaN if none) and whether any was NaN/inf."""
    work = df[[*keys, "ulp_error"]].copy()
    work["nonfinite"] = work["ulp_error"] == NONFINITE_ULP
    work["finite"] = work["ulp_error"].where(~work["nonfinite"]).astype("float64")
    return (
        work.groupby(keys, sort=True)
        .agg(finite=("finite", "max"), nonfinite=("nonfinite", "any"))
        .reset_index()
    )


def _mark_nonfinite(ax: Any, steps: Any, color: Any) -> None:
    # A NaN/inf mismatch has no ULP value: an x on the top edge, in the line's colour.
    steps = list(steps)
    if steps:
        ax.plot(
            steps,
            [0.97] * len(steps),
            "x",
            color=color,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
        )


# --------------------------------------------------------------------------- plots


def plot_lockstep(results: pd.DataFrame) -> str:
    """Lock-step parameter error vs step, max over cases, one line per implementation
    (small multiples when there are too many for one legend)."""
    df = results[(results["mode"] == "lockstep") & (results["component"] == "param")]
    if df.empty:
        return NODATA
    agg = _max_finite_and_nonfinite(df, ["implementation", "step"])
    impls = sorted(agg["implementation"].unique())
    groups = dict(list(agg.groupby("implementation", sort=True)))
    ylabel = "max ULP error + 1 (param)"
    if len(impls) <= _MAX_LINES_ONE_AXES:
        fig = Figure(figsize=(8, 4), layout="constrained")
        ax = fig.subplots()
        for i, impl in enumerate(impls):
            part = groups[impl]
            color = f"C{i}"
            ax.plot(part["step"], part["finite"] + 1, marker=".", color=color, label=label(impl))
            _mark_nonfinite(ax, part.loc[part["nonfinite"], "step"], color)
        _default_limits_if_empty([ax], x_log=False)
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
        return png(fig)
    fig, axes = grid(len(impls))
    for impl, ax in zip(impls, axes, strict=True):
        part = groups[impl]
        ax.plot(part["step"], part["finite"] + 1, marker=".", color="C0")
        _mark_nonfinite(ax, part.loc[part["nonfinite"], "step"], "C3")
        ax.set_title(label(impl), fontsize=8)
    _loglog_panels(axes, x_log=False)
    fig.supxlabel("step")
    fig.supylabel(ylabel)
    return png(fig, tight=False)


def plot_histograms(results: pd.DataFrame) -> str:
    """Distribution of lock-step ``ulp_error`` per component, logarithmic bins."""
    df = results[results["mode"] == "lockstep"]
    if df.empty:
        return NODATA
    components = sorted(df["component"].unique())
    fig, axes = grid(len(components), max_cols=4, panel=(3.6, 2.6))
    for comp, ax in zip(components, axes, strict=True):
        ulps = df.loc[df["component"] == comp, "ulp_error"].to_numpy()
        nonfinite = int((ulps == NONFINITE_ULP).sum())
        values = ulps[ulps >= 0].astype("float64") + 1.0
        title = label(comp) + (f" ({nonfinite} NaN/inf not shown)" if nonfinite else "")
        ax.set_title(title, fontsize=9)
        if values.size:
            top = max(2.0, float(values.max()) + 1.0)
            # Bin edges at half-integers: ULP counts are integers, so no bin is empty by
            # construction at the low end where log bins are narrower than one ULP.
            edges = np.unique(np.ceil(np.geomspace(1.0, top, 40))) - 0.5
            ax.hist(values, bins=edges, color="C0")
    _loglog_panels(axes, x_log=True)
    fig.supxlabel("ULP error + 1 (lock-step)")
    fig.supylabel("rows")
    return png(fig, tight=False)


def _log2_ulp(values: pd.Series) -> np.ndarray:
    """log2(1 + ulp) as floats, NaN for a NaN/inf mismatch (drawn in the 'bad' colour)."""
    arr = values.to_numpy(dtype="float64", na_value=np.nan)
    arr = np.where(arr == NONFINITE_ULP, np.nan, arr)
    return np.log2(1.0 + arr)


# Unmeasured cells stay blank; a measured NaN/inf mismatch is painted in this colour.
_BAD_COLOR = "#b2182b"


def _heatmap_size(rows: list[str], cols: list[str]) -> tuple[float, float]:
    """Figure inches for a heatmap of ``rows`` x ``cols`` labelled cells.

    The tick labels (7 pt, the columns' rotated) are counted in: variant names reach 40
    characters, and without room for them constrained layout collapses the axes."""
    per_char = 0.06  # inches per character at 7 pt, generous
    label_w = per_char * max((len(r) for r in rows), default=0)
    label_h = per_char * max((len(c) for c in cols), default=0)
    # 1.6 in: colour bar and its label; 4.5 in: the two-line axis label's width.
    width = max(4.5, 0.38 * len(cols)) + label_w + 1.6
    height = 0.32 * len(rows) + label_h + 1.0
    return width, height


def _heatmap_cmap() -> Any:
    return matplotlib.colormaps["viridis"].with_extremes(bad="white")


def _paint_bad(ax: Any, cells: set[tuple[int, int]]) -> None:
    for i, j in sorted(cells):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color=_BAD_COLOR, lw=0))


def _ink(image: Any, value: float) -> str:
    """Text colour readable on ``value``'s cell: viridis is bright at its top end."""
    if np.isnan(value):
        return "white"
    return "black" if float(image.norm(value)) > 0.6 else "white"


def _keep_worst(
    z: np.ndarray, worst: np.ndarray, bad: set[tuple[int, int]], cell: tuple[int, int], value: float
) -> bool:
    """Record ``value`` (NaN: a NaN/inf mismatch, the worst) at ``cell`` if it is the worst
    seen there; returns whether it was."""
    rank = np.inf if np.isnan(value) else value
    if rank < worst[cell]:
        return False
    worst[cell] = rank
    z[cell] = value
    if np.isnan(value):
        bad.add(cell)
    else:
        bad.discard(cell)
    return True


def plot_fingerprints(fingerprints: pd.DataFrame) -> str:
    """Implementations x variants of log2(1 + max ULP); rank-1 cells and documented marked."""
    if fingerprints.empty:
        return NODATA
    impls = sorted(fingerprints["implementation"].unique())
    variants = sorted(fingerprints["variant"].unique())
    row = {v: i for i, v in enumerate(impls)}
    col = {v: j for j, v in enumerate(variants)}
    z = np.full((len(impls), len(variants)), np.nan)
    worst = np.full(z.shape, -np.inf)
    bad: set[tuple[int, int]] = set()
    for rec, value in zip(
        fingerprints.itertuples(index=False), _log2_ulp(fingerprints["max_ulp"]), strict=True
    ):
        _keep_worst(z, worst, bad, (row[rec.implementation], col[rec.variant]), value)
    fig = Figure(figsize=_heatmap_size(impls, variants), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_invalid(z), aspect="auto", cmap=_heatmap_cmap(), interpolation="nearest"
    )
    _paint_bad(ax, bad)
    for rec in fingerprints.itertuples(index=False):
        i, j = row[rec.implementation], col[rec.variant]
        if rec.rank == 1:
            ax.text(
                j,
                i,
                "1",
                ha="center",
                va="center",
                fontsize=7,
                color=_ink(image, z[i, j]),
                fontweight="bold",
            )
        if rec.documented:
            ax.add_patch(
                Rectangle(
                    (j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#ff7f0e", lw=2, clip_on=False
                )
            )
    ax.set_xticks(range(len(variants)), [label(v) for v in variants], rotation=90, fontsize=7)
    ax.set_yticks(range(len(impls)), [label(v) for v in impls], fontsize=7)
    ax.set_xlabel(
        "catalog variant\norange box: documented; 1: best match; red: NaN/inf", fontsize=8
    )
    fig.colorbar(image, ax=ax, label="log2(1 + max ULP)", shrink=0.8)
    return png(fig)


_RELATION_MARK = {
    "identical formula": "≡",
    "equal for this configuration": "=",
    "within rounding": "≈",
    "weak": "w",
}


def plot_separation(separation: pd.DataFrame) -> str:
    """Variants x variants of log2(1 + max ULP) between their exact steps (symmetric)."""
    if separation.empty:
        return NODATA
    variants = sorted(set(separation["variant_a"]) | set(separation["variant_b"]))
    index = {v: i for i, v in enumerate(variants)}
    n = len(variants)
    z = np.full((n, n), np.nan)
    worst = np.full(z.shape, -np.inf)
    marks: dict[tuple[int, int], str] = {}
    bad: set[tuple[int, int]] = set()
    values = _log2_ulp(separation["max_ulp"])
    for rec, value in zip(separation.itertuples(index=False), values, strict=True):
        i, j = index[rec.variant_a], index[rec.variant_b]
        # An unordered pair: fill both triangles, keeping the worst case/component's cell.
        for cell in ((i, j), (j, i)):
            if _keep_worst(z, worst, bad, cell, value):
                marks[cell] = _RELATION_MARK.get(rec.relation, "")
    np.fill_diagonal(z, 0.0)
    fig = Figure(figsize=_heatmap_size(variants, variants), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_invalid(z), aspect="auto", cmap=_heatmap_cmap(), interpolation="nearest"
    )
    _paint_bad(ax, bad)
    for (a, b), mark in sorted(marks.items()):
        if mark:
            ax.text(b, a, mark, ha="center", va="center", fontsize=7, color=_ink(image, z[a, b]))
    labels = [label(v) for v in variants]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel(
        "≡ identical formula, = equal for this configuration,\nw weak; red: NaN/inf", fontsize=8
    )
    fig.colorbar(image, ax=ax, label="log2(1 + max ULP)", shrink=0.8)
    return png(fig)


def plot_free(results: pd.DataFrame) -> str:
    """Free-running parameter divergence vs step, log-log: a panel per implementation,
    a line per case."""
    df = results[(results["mode"] == "free") & (results["component"] == "param")]
    # A log axis cannot show step 0 (the shared initial state, which is exact anyway).
    df = df[df["step"] > 0]
    if df.empty:
        return NODATA
    agg = _max_finite_and_nonfinite(df, ["implementation", "case", "step"])
    impls = sorted(agg["implementation"].unique())
    cases = sorted(agg["case"].unique())
    color_of = {c: f"C{i % 10}" for i, c in enumerate(cases)}
    # A legend only while it can be read: past 10 cases the colours repeat anyway.
    legend = len(cases) <= 10
    fig, axes = grid(len(impls), max_cols=4, panel=(3.6, 2.8), legend_width=2.2 if legend else 0)
    for (impl, part), ax in zip(agg.groupby("implementation", sort=True), axes, strict=True):
        for case, lines in part.groupby("case", sort=True):
            ax.plot(lines["step"], lines["finite"] + 1, color=color_of[case])
            _mark_nonfinite(ax, lines.loc[lines["nonfinite"], "step"], color_of[case])
        ax.set_title(label(impl), fontsize=8)
    _loglog_panels(axes, x_log=True)
    if legend:
        handles = [Line2D([], [], color=color_of[c], label=label(c)) for c in cases]
        fig.legend(handles=handles, loc="upper right", fontsize=7, frameon=False)
    fig.supxlabel("step")
    fig.supylabel("ULP error + 1 vs the oracle's trajectory (param)")
    return png(fig, tight=False)


#: Failing cases shown in the error-vs-index plot (the worst first).
_MAX_INDEX_PANELS = 12


def plot_index(profiles: pd.DataFrame) -> str:
    """Error vs index for the failing cases: a panel per implementation and case, the worst
    budget multiple of each bin of a tensor's coordinates (over every step) against the
    bin's first index, a line per tensor; the budget (1) as a dashed line, NaN/inf
    mismatches as crosses at the top."""
    if profiles.empty:
        return NODATA
    keys = profiles.groupby(["implementation", "case"], sort=True)["max_multiple"].max()
    shown = keys.sort_values(ascending=False, kind="mergesort").index[:_MAX_INDEX_PANELS]
    fig, axes = grid(len(shown), max_cols=3, panel=(4.2, 2.6))
    for (impl, case), ax in zip(sorted(shown), axes, strict=True):
        part = profiles[(profiles["implementation"] == impl) & (profiles["case"] == case)]
        for k, lines in part.groupby("tensor", sort=True):
            values = lines["max_multiple"].to_numpy()
            finite = np.isfinite(values)
            color = f"C{int(k) % 10}"
            ax.step(lines["first_index"][finite], values[finite] + 1e-3, where="post", color=color)
            top = max(float(np.max(values[finite], initial=1.0)), 1.0) * 10
            ax.plot(lines["first_index"][~finite], np.full((~finite).sum(), top), "x", color=color)
        ax.axhline(1.0, color="#888", linestyle="--", linewidth=0.8)
        ax.set_title(label(f"{impl}: {case}"), fontsize=8)
    axes[0].set_yscale("log")
    fig.supxlabel("index (first coordinate of each bin)")
    fig.supylabel("worst budget multiple (log)")
    return png(fig, tight=False)


#: (section id, heading, table it reads, plot function), in report order.
PLOTS: tuple[tuple[str, str, str, Callable[[pd.DataFrame], str]], ...] = (
    ("lockstep", "Lock-step error vs step per implementation", "results", plot_lockstep),
    ("histograms", "ULP histograms (lock-step)", "results", plot_histograms),
    ("index", "Error vs index of the failing cases", "profiles", plot_index),
    ("fingerprints", "Fingerprint matrix", "fingerprints", plot_fingerprints),
    ("separation", "Separation matrix", "separation", plot_separation),
    ("free", "Divergence growth on long runs", "results", plot_free),
)


# --------------------------------------------------------------------------- page

#: The page fits 1400 px: tables take the page's width with fixed column widths; a cell
#: too long for its column is cut with an ellipsis and shows its full text on hover.
CSS = """
body { font-family: system-ui, sans-serif; margin: 1em auto; max-width: 1360px;
       padding: 0 1em; color: #222; }
h1 { margin: 0.2em 0 0.3em; }
h2 { margin: 1.3em 0 0.4em; }
p.lead { font-size: 1.1em; margin: 0.3em 0 0.8em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.4em 0 1em; width: 100%;
        table-layout: fixed; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top;
         overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
th { background: #f3f3f3; white-space: normal; overflow-wrap: anywhere; }
td.wrap { white-space: normal; overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.v-pass td.verdict { color: #1a7f37; }
tr.v-range td.verdict { color: #5a7f1a; }
tr.v-discrepancy td.verdict { color: #b35900; font-weight: bold; }
tr.v-error td.verdict { color: #c00; font-weight: bold; }
tr.v-skipped td.verdict { color: #777; }
img { max-width: 100%; }
p.nodata { color: #777; font-style: italic; }
.tier { display: inline-block; padding: 0 0.35em; margin: 0.1em 0.1em; border-radius: 3px;
        white-space: nowrap; }
.t-conforms { background: #dafbe1; }
.t-range { background: #fff1c2; }
.t-not { background: #ffc9c5; font-weight: bold; }
.t-error { background: #ffc9c5; }
.t-skipped { background: #eee; color: #666; }
ul.findings { margin: 0.3em 0; padding-left: 1.3em; }
div.columns { display: flex; gap: 1em; align-items: flex-start; }
div.columns > div { flex: 1 1 0; min-width: 0; }
div.columns table { font-size: 0.8em; margin-top: 0; }
ul.findings li { margin: 0.25em 0; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1em;
          font-size: 0.85em; }
dl.meta dt { font-weight: bold; }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
"""

#: Tier -> CSS class of its chip.
_TIER_CLASS = {
    DOES_NOT_CONFORM: "t-not",
    ERROR: "t-error",
    CONFORMS_EXCEPT_RANGE: "t-range",
    CONFORMS: "t-conforms",
    SKIPPED: "t-skipped",
}


def _row_class(verdict: Any) -> str:
    # Only known verdicts become CSS classes: record text never reaches an attribute raw.
    return f"v-{verdict}" if verdict in VERDICT_SEVERITY else "v-other"


Cell = tuple[str, str] | tuple[str, str, str]


def cell(text: Any, css: str = "") -> tuple[str, str, str]:
    """A cell of plain text: escaped, and its full text on hover when it may be cut."""
    s = (
        ""
        if text is None or text is pd.NA or (isinstance(text, float) and text != text)
        else str(text)
    )
    return css, esc(s), s if len(s) > 16 else ""


def table(
    headers: list[str],
    rows: list[list[Cell]],
    classes: list[str],
    widths: tuple[float, ...] | None = None,
    ids: list[str] | None = None,
) -> str:
    """An HTML table of ``rows`` of cells ``(css class, escaped html[, hover text])``;
    ``widths`` are the columns' percentages of the page, ``ids`` the rows' ids."""
    out = ["<table>"]
    if widths:
        out.append(
            "<colgroup>" + "".join(f'<col style="width:{w}%">' for w in widths) + "</colgroup>"
        )
    out.append("<tr>" + "".join(f'<th title="{esc(h)}">{esc(h)}</th>' for h in headers) + "</tr>")
    for i, (cells, cls) in enumerate(zip(rows, classes, strict=True)):
        tds = []
        for c in cells:
            css, body, title = (*c, "")[:3]
            attrs = (f' class="{css}"' if css else "") + (f' title="{esc(title)}"' if title else "")
            tds.append(f"<td{attrs}>{body}</td>")
        row_id = f' id="{esc(ids[i])}"' if ids else ""
        out.append(f'<tr class="{cls}"{row_id}>{"".join(tds)}</tr>')
    out.append("</table>")
    return "\n".join(out)


def _chip(name: str, impl_tier: str, note: str = "") -> str:
    hover = f"{name}: {impl_tier}" + (f" ({note})" if note else "")
    text = f"{name} {TIER_MARK[impl_tier]}" + (" *" if note else "")
    return f'<span class="tier {_TIER_CLASS[impl_tier]}" title="{esc(hover)}">{esc(text)}</span>'


def _lead(summary: pd.DataFrame, tiers: Mapping[str, str]) -> str:
    if summary.empty:
        return '<p class="lead">No implementation produced a result.</p>'
    precisions = precision_text(summary["precision"])
    note = mixed_ulps_note(summary["precision"])
    problems = summary["case"].nunique()
    chips = " ".join(
        f'<span class="tier {_TIER_CLASS[t]}">{n} {esc(t)} {TIER_MARK[t]}</span>'
        for t, n in tier_counts(tiers).items()
    )
    return (
        f'<p class="lead">{len(tiers)} implementations on {problems} problems '
        f"in precision <b>{esc(precisions)}</b>{esc(note)}: {chips}</p>"
    )


def _groups_html(summary: pd.DataFrame, fingerprints: pd.DataFrame) -> str:
    """The groups in two side-by-side tables (balanced by length), so that with 60
    implementations they still fit the first screen."""
    groups = formula_groups(summary, fingerprints)
    if not groups:
        return ""
    sizes = [len(g.formula) + sum(len(m[0]) + 4 for m in g.members) for g in groups]
    half, total, split = sum(sizes) / 2, 0, len(groups)
    for i, size in enumerate(sizes):
        if total >= half:
            split = i
            break
        total += size
    columns = [groups[:split], groups[split:]] if len(groups) > 6 else [groups]
    tables = []
    for part in filter(None, columns):
        rows = [[cell(g.formula), ("wrap", " ".join(_chip(*m) for m in g.members))] for g in part]
        head = ["formula (fingerprint)", "implementations"]
        tables.append(table(head, rows, [""] * len(rows), widths=(34, 66)))
    note = (
        "<p>Each implementation is listed under the catalog formula its fingerprint ranks "
        "first; ✓ conforms, ≈ conforms except the dtype's range, ✗ does not conform, "
        "! crashed, – skipped; * see the note on hover.</p>"
    )
    return note + '<div class="columns">' + "".join(f"<div>{t}</div>" for t in tables) + "</div>"


def _findings_html(summary: pd.DataFrame, fingerprints: pd.DataFrame) -> str:
    lines = key_findings(summary, fingerprints)
    if not lines:
        return (
            "<p>No finding: every implementation that ran conforms to its documented variant.</p>"
        )
    items = []
    for f in lines[:MAX_FINDINGS]:
        links = []
        if f.counterexample:
            links.append(f'<a href="{esc(f.counterexample)}">counterexample</a>')
        if f.cases:
            impl, case = f.cases[0]
            links.append(f'<a href="#{esc(case_anchor(impl, case))}">case</a>')
        title = f' title="{esc(f.title)}"' if f.title else ""
        items.append(f"<li{title}>{esc(f.text)} {' · '.join(links)}</li>")
    more = len(lines) - MAX_FINDINGS
    tail = f"<p>… and {more} more findings in the tables below.</p>" if more > 0 else ""
    return f'<ul class="findings">{"".join(items)}</ul>{tail}'


def _pairs_html(pairs: pd.DataFrame) -> str:
    """Each compiled implementation beside its eager counterpart, one line each ("" when
    none ran)."""
    lines = pair_findings(pairs)
    if not lines:
        return ""
    items = "".join(f"<li>{esc(f.text)}</li>" for f in lines)
    return (
        '<h3 id="compiled-vs-eager">Compiled vs eager</h3>'
        "<p>Each compiled step beside its eager counterpart: both stepped from the same "
        "states and gradients (lock-step), and the formula each one's fingerprint names.</p>"
        f'<ul class="findings">{items}</ul>'
    )


def _cases_table(cases: pd.DataFrame) -> str:
    """Cases with an anchor each (the findings link to them) and their counterexample."""
    rows, classes, ids = [], [], []
    for r in cases.sort_values(["implementation", "case"], kind="mergesort").to_dict("records"):
        script = r["counterexample"]
        link = f'<a href="{esc(script)}">{esc(script.rsplit("/", 1)[-1])}</a>' if script else ""
        printed = r.get("kernel_output", "")  # what the kernel printed, when it did
        detail = r["detail"] + (f" · the kernel printed: {printed}" if printed else "")
        rows.append(
            [
                cell(r["implementation"]),
                cell(r["case"]),
                cell(r["verdict"], "verdict"),
                cell(r["category"]),
                cell(format_ulp(r["max_ulp"]), "num"),
                cell(r["worst_component"]),
                cell(detail),
                cell(r["localization"]),
                ("", link, script),
            ]
        )
        classes.append(_row_class(r["verdict"]))
        ids.append(case_anchor(r["implementation"], r["case"]))
    headers = ["implementation", "case", "verdict", "category", "max ULP", "component",
               "detail", "where (failing coordinates)", "counterexample"]  # fmt: skip
    return table(headers, rows, classes, widths=(16, 9, 7, 10, 6, 7, 20, 14, 11), ids=ids)


def _off_budget_html(summary: pd.DataFrame) -> str:
    """The cases not within budget, or crashed; those confined to the dtype's range
    (often most of them) folded below the others."""
    off = summary[summary["verdict"].isin(("discrepancy", "error", RANGE))]
    in_range = pd.Series([is_range(r) for r in off.to_dict("records")], index=off.index, dtype=bool)
    parts = [_cases_table(off[~in_range]) if (~in_range).any() else "<p>None.</p>"]
    if in_range.any():
        parts += [
            f"<details><summary>{int(in_range.sum())} cases off budget only where the dtype "
            "cannot hold the exact values (format range)</summary>",
            _cases_table(off[in_range]),
            "</details>",
        ]
    return "\n".join(parts)


def _overview_html(summary: pd.DataFrame, fingerprints: pd.DataFrame) -> str:
    rows_of = overview(summary, fingerprints)
    if rows_of.empty:
        return NODATA
    tiers = tiers_of(summary)
    rows, classes = [], []
    for r in rows_of.itertuples(index=False):
        verdict = shown_verdict(r)
        rows.append(
            [
                cell(r.implementation),
                cell(tiers.get(r.implementation, "")),
                cell(r.documented_variant),
                cell(r.matched_variant),
                cell(format_ulp(r.max_ulp), "num"),
                cell(r.category),
                cell(verdict, "verdict"),
                cell(r.detail),
            ]
        )
        classes.append(_row_class(r.verdict))
    headers = ["implementation", "tier", "documented variant", "matched variant", "max ULP",
               "worst case's category", "worst verdict", "detail"]  # fmt: skip
    return table(headers, rows, classes, widths=(17, 15, 13, 13, 6, 10, 12, 14))


#: The columns of the every-case table, and their widths (% of the page).
_CASE_COLUMNS = {
    "implementation": 14,
    "case": 10,
    "precision": 8,
    "verdict": 7,
    "steps": 4,
    "max_ulp": 6,
    "median_ulp": 5,
    "max_free_ulp": 6,
    "worst_component": 6,
    "matched_variant": 11,
    "category": 9,
    "detail": 14,
}


def _summary_rows_html(summary: pd.DataFrame) -> str:
    if summary.empty:
        return NODATA
    numeric = {"steps", "max_ulp", "median_ulp", "max_free_ulp"}
    headers = list(_CASE_COLUMNS)
    rows, classes = [], []
    for rec in summary.to_dict("records"):
        cells = []
        for c in headers:
            value = rec[c]
            text = format_ulp(value) if c in ("max_ulp", "max_free_ulp") else value
            if c == "median_ulp" and not pd.isna(value):
                text = f"{value:g}"
            css = "num" if c in numeric else ("verdict" if c == "verdict" else "")
            cells.append(cell(text, css))
        rows.append(cells)
        classes.append(_row_class(rec["verdict"]))
    names = [h.replace("_", " ") for h in headers]
    return table(names, rows, classes, widths=tuple(_CASE_COLUMNS.values()))


def _meta_text(value: Any) -> str:
    """A metadata value as a person reads it: lists joined, mappings as key=value."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_meta_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        items = [_meta_text(v) for v in value]
        return f"{len(items)}: {', '.join(items)}" if len(items) > 8 else ", ".join(items)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def meta_html(meta: Mapping[str, Any]) -> str:
    """The run's metadata as a definition list of plain text (never Python reprs)."""
    if not meta:
        return "<p>—</p>"
    items = "".join(
        f"<dt>{esc(str(k).replace('_', ' '))}</dt><dd>{esc(_meta_text(meta[k]))}</dd>"
        for k in sorted(meta, key=str)
    )
    return f'<dl class="meta">{items}</dl>'


def render_html(frames: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]) -> str:
    """The report page as a string. ``frames`` maps "results", "summary", "fingerprints"
    and "separation" to their tables; a missing table is treated as empty.

    It opens with the answer: tiers, implementations grouped by formula, the findings that
    matter with links; then the cases off budget, every implementation, every case, the
    plots; the run's metadata last."""
    tables = {
        name: conform(frames[name], cols, name) if name in frames else frame([], cols)
        for name, cols in SCHEMAS.items()
    }
    summary, fingerprints = tables["summary"], tables["fingerprints"]
    sorted_summary = summary.sort_values(["implementation", "case"], kind="mergesort")
    counts = verdict_counts(summary)
    count_text = ", ".join(f"{n} {v}" for v, n in counts.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        "<title>adamspec report</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<h1>adamspec report</h1>",
        _lead(summary, tiers_of(summary)),
        '<h2 id="findings">Findings</h2>',
        # the pairs' block ("" when none ran: a run without pairs renders as before)
        _findings_html(summary, fingerprints) + _pairs_html(tables["pairs"]),
        '<h2 id="formulas">Implementations by the formula they compute</h2>',
        _groups_html(summary, fingerprints),
        '<h2 id="off-budget">Cases off budget, and crashes</h2>',
        _off_budget_html(summary),
        '<h2 id="summary">Every implementation (its worst case)</h2>',
        f"<p>{esc(sum(counts.values()))} cases: {esc(count_text)}.</p>",
        _overview_html(summary, fingerprints),
        "<details><summary>Every implementation &times; case</summary>",
        _summary_rows_html(sorted_summary),
        "</details>",
    ]
    for section, heading, name, plot in PLOTS:
        parts.append(f'<h2 id="{section}">{esc(heading)}</h2>')
        parts.append(plot(tables[name]))
    parts += ['<h2 id="run">Run</h2>', meta_html(meta), "</body>", "</html>", ""]
    return "\n".join(parts)


def write_html(
    path: str | os.PathLike[str], frames: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]
) -> Path:
    """Write the self-contained report page to ``path`` atomically; returns the path."""
    return atomic_write(path, render_html(frames, meta))
