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

from adamspec.reports.markdown import (
    NONFINITE_ULP,
    VERDICT_SEVERITY,
    format_ulp,
    overview,
    verdict_counts,
)
from adamspec.reports.tables import SCHEMAS, atomic_write, conform, frame

__all__ = ["PLOTS", "render_html", "write_html"]

# More panels than this and one axes with a legend becomes unreadable: use small multiples.
_MAX_LINES_ONE_AXES = 8
_DPI = 80
_NODATA = '<p class="nodata">no data</p>'


# --------------------------------------------------------------------------- helpers


def _esc(text: Any) -> str:
    s = "" if text is None or text is pd.NA else str(text)
    return html.escape(s, quote=True)


def _label(text: Any) -> str:
    """Text for a matplotlib label: ``$`` would otherwise switch on mathtext."""
    return str(text).replace("$", r"\$")


def _png(fig: Figure, tight: bool = True) -> str:
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


def _grid(
    n: int,
    max_cols: int = 6,
    panel: tuple[float, float] = (3.2, 2.4),
    legend_width: float = 0.0,
) -> tuple[Figure, list[Any]]:
    """A figure with ``n`` small-multiple panels sharing both axes; spare panels hidden.

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
        wspace=0.12,
        hspace=0.35,
    )
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel().tolist()
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
        return _NODATA
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
            ax.plot(part["step"], part["finite"] + 1, marker=".", color=color, label=_label(impl))
            _mark_nonfinite(ax, part.loc[part["nonfinite"], "step"], color)
        _default_limits_if_empty([ax], x_log=False)
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
        return _png(fig)
    fig, axes = _grid(len(impls))
    for impl, ax in zip(impls, axes, strict=True):
        part = groups[impl]
        ax.plot(part["step"], part["finite"] + 1, marker=".", color="C0")
        _mark_nonfinite(ax, part.loc[part["nonfinite"], "step"], "C3")
        ax.set_title(_label(impl), fontsize=8)
    _loglog_panels(axes, x_log=False)
    fig.supxlabel("step")
    fig.supylabel(ylabel)
    return _png(fig, tight=False)


def plot_histograms(results: pd.DataFrame) -> str:
    """Distribution of lock-step ``ulp_error`` per component, logarithmic bins."""
    df = results[results["mode"] == "lockstep"]
    if df.empty:
        return _NODATA
    components = sorted(df["component"].unique())
    fig, axes = _grid(len(components), max_cols=4, panel=(3.6, 2.6))
    for comp, ax in zip(components, axes, strict=True):
        ulps = df.loc[df["component"] == comp, "ulp_error"].to_numpy()
        nonfinite = int((ulps == NONFINITE_ULP).sum())
        values = ulps[ulps >= 0].astype("float64") + 1.0
        title = _label(comp) + (f" ({nonfinite} NaN/inf not shown)" if nonfinite else "")
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
    return _png(fig, tight=False)


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
        return _NODATA
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
    ax.set_xticks(range(len(variants)), [_label(v) for v in variants], rotation=90, fontsize=7)
    ax.set_yticks(range(len(impls)), [_label(v) for v in impls], fontsize=7)
    ax.set_xlabel(
        "catalog variant\norange box: documented; 1: best match; red: NaN/inf", fontsize=8
    )
    fig.colorbar(image, ax=ax, label="log2(1 + max ULP)", shrink=0.8)
    return _png(fig)


_RELATION_MARK = {
    "identical formula": "≡",
    "equal for this configuration": "=",
    "within rounding": "≈",
    "weak": "w",
}


def plot_separation(separation: pd.DataFrame) -> str:
    """Variants x variants of log2(1 + max ULP) between their exact steps (symmetric)."""
    if separation.empty:
        return _NODATA
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
    labels = [_label(v) for v in variants]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel(
        "≡ identical formula, = equal for this configuration,\nw weak; red: NaN/inf", fontsize=8
    )
    fig.colorbar(image, ax=ax, label="log2(1 + max ULP)", shrink=0.8)
    return _png(fig)


def plot_free(results: pd.DataFrame) -> str:
    """Free-running parameter divergence vs step, log-log: a panel per implementation,
    a line per case."""
    df = results[(results["mode"] == "free") & (results["component"] == "param")]
    # A log axis cannot show step 0 (the shared initial state, which is exact anyway).
    df = df[df["step"] > 0]
    if df.empty:
        return _NODATA
    agg = _max_finite_and_nonfinite(df, ["implementation", "case", "step"])
    impls = sorted(agg["implementation"].unique())
    cases = sorted(agg["case"].unique())
    color_of = {c: f"C{i % 10}" for i, c in enumerate(cases)}
    # A legend only while it can be read: past 10 cases the colours repeat anyway.
    legend = len(cases) <= 10
    fig, axes = _grid(len(impls), max_cols=4, panel=(3.6, 2.8), legend_width=2.2 if legend else 0)
    for (impl, part), ax in zip(agg.groupby("implementation", sort=True), axes, strict=True):
        for case, lines in part.groupby("case", sort=True):
            ax.plot(lines["step"], lines["finite"] + 1, color=color_of[case])
            _mark_nonfinite(ax, lines.loc[lines["nonfinite"], "step"], color_of[case])
        ax.set_title(_label(impl), fontsize=8)
    _loglog_panels(axes, x_log=True)
    if legend:
        handles = [Line2D([], [], color=color_of[c], label=_label(c)) for c in cases]
        fig.legend(handles=handles, loc="upper right", fontsize=7, frameon=False)
    fig.supxlabel("step")
    fig.supylabel("ULP error + 1 vs the oracle's trajectory (param)")
    return _png(fig, tight=False)


#: (section id, heading, table it reads, plot function), in report order.
PLOTS: tuple[tuple[str, str, str, Callable[[pd.DataFrame], str]], ...] = (
    ("lockstep", "Lock-step error vs step per implementation", "results", plot_lockstep),
    ("histograms", "ULP histograms (lock-step)", "results", plot_histograms),
    ("fingerprints", "Fingerprint matrix", "fingerprints", plot_fingerprints),
    ("separation", "Separation matrix", "separation", plot_separation),
    ("free", "Divergence growth on long runs", "results", plot_free),
)


# --------------------------------------------------------------------------- page

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.v-pass td.verdict { color: #1a7f37; }
tr.v-discrepancy td.verdict { color: #b35900; font-weight: bold; }
tr.v-error td.verdict { color: #c00; font-weight: bold; }
tr.v-skipped td.verdict { color: #777; }
img { max-width: 100%; }
p.nodata { color: #777; font-style: italic; }
"""


def _row_class(verdict: Any) -> str:
    # Only known verdicts become CSS classes: record text never reaches an attribute raw.
    return f"v-{verdict}" if verdict in VERDICT_SEVERITY else "v-other"


def _table(headers: list[str], rows: list[list[tuple[str, str]]], classes: list[str]) -> str:
    """An HTML table; each cell is (css class, already-escaped html)."""
    out = ["<table>", "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in headers) + "</tr>"]
    for cells, cls in zip(rows, classes, strict=True):
        tds = "".join(
            f'<td class="{c}">{body}</td>' if c else f"<td>{body}</td>" for c, body in cells
        )
        out.append(f'<tr class="{cls}">{tds}</tr>')
    out.append("</table>")
    return "\n".join(out)


def _overview_html(summary: pd.DataFrame, fingerprints: pd.DataFrame) -> str:
    table = overview(summary, fingerprints)
    if table.empty:
        return _NODATA
    rows, classes = [], []
    for r in table.itertuples(index=False):
        verdict = r.verdict if r.n_worst == r.n_cases else f"{r.verdict} ({r.n_worst}/{r.n_cases})"
        rows.append(
            [
                ("", _esc(r.implementation)),
                ("", _esc(r.documented_variant)),
                ("", _esc(r.matched_variant)),
                ("num", _esc(format_ulp(r.max_ulp))),
                ("", _esc(r.category)),
                ("verdict", _esc(verdict)),
                ("", _esc(r.detail)),
            ]
        )
        classes.append(_row_class(r.verdict))
    headers = [
        "implementation",
        "documented variant",
        "matched variant",
        "max ULP",
        "category",
        "verdict",
        "detail",
    ]
    return _table(headers, rows, classes)


def _summary_rows_html(summary: pd.DataFrame) -> str:
    if summary.empty:
        return _NODATA
    numeric = {"steps", "max_ulp", "median_ulp", "max_free_ulp"}
    headers = list(summary.columns)
    rows, classes = [], []
    for rec in summary.to_dict("records"):
        cells = []
        for c in headers:
            value = rec[c]
            text = format_ulp(value) if c in ("max_ulp", "max_free_ulp") else value
            if c == "median_ulp" and not pd.isna(value):
                text = f"{value:g}"
            cells.append(
                (
                    "num" if c in numeric else ("verdict" if c == "verdict" else ""),
                    _esc("" if pd.isna(text) else text),
                )
            )
        rows.append(cells)
        classes.append(_row_class(rec["verdict"]))
    return _table(headers, rows, classes)


def _meta_html(meta: Mapping[str, Any]) -> str:
    if not meta:
        return ""
    items = "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(meta[k])}</td></tr>" for k in sorted(meta, key=str)
    )
    return f"<table>{items}</table>"


def render_html(frames: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]) -> str:
    """The report page as a string. ``frames`` maps "results", "summary", "fingerprints"
    and "separation" to their tables; a missing table is treated as empty."""
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
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<h1>adamspec report</h1>",
        _meta_html(meta),
        '<h2 id="summary">Summary</h2>',
        f"<p>{_esc(sum(counts.values()))} cases: {_esc(count_text)}.</p>",
        _overview_html(summary, fingerprints),
        "<details><summary>Every implementation &times; case</summary>",
        _summary_rows_html(sorted_summary),
        "</details>",
    ]
    for section, heading, table, plot in PLOTS:
        parts.append(f'<h2 id="{section}">{_esc(heading)}</h2>')
        parts.append(plot(tables[table]))
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_html(
    path: str | os.PathLike[str], frames: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]
) -> Path:
    """Write the self-contained report page to ``path`` atomically; returns the path."""
    return atomic_write(path, render_html(frames, meta))
