"""Reports read from the harness's records: tables, Markdown, HTML, JUnit.

Reports never recompute Adam: every number comes from the four record tables of
:mod:`adamspec.reports.schema`. :func:`write_reports` writes the whole set into one directory::

    results.parquet  summary.csv  fingerprints.csv  separation.csv  index_profile.csv
    pairs.csv (when a compiled implementation ran beside its eager counterpart)
    report.md        report.html  junit.xml         meta.json

Every file is written atomically (temporary file in the same directory, then
:func:`os.replace`), and the same records give the same bytes.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adamspec.reports.html import render_html, write_html
    from adamspec.reports.junit import junit_xml, write_junit
    from adamspec.reports.markdown import overview, summary_markdown
    from adamspec.reports.tables import (
        SCHEMAS,
        SORT_KEYS,
        TableLike,
        atomic_write,
        conform,
        frame,
        read_tables,
        write_tables,
    )

# Imported on first use: the harness imports reports.schema (hence this package) on every
# CLI start, and the column names must not cost a pandas + matplotlib import.
_LAZY = {
    "SCHEMAS": "adamspec.reports.tables",
    "SORT_KEYS": "adamspec.reports.tables",
    "atomic_write": "adamspec.reports.tables",
    "conform": "adamspec.reports.tables",
    "frame": "adamspec.reports.tables",
    "read_tables": "adamspec.reports.tables",
    "write_tables": "adamspec.reports.tables",
    "render_html": "adamspec.reports.html",
    "write_html": "adamspec.reports.html",
    "junit_xml": "adamspec.reports.junit",
    "write_junit": "adamspec.reports.junit",
    "overview": "adamspec.reports.markdown",
    "summary_markdown": "adamspec.reports.markdown",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SCHEMAS",
    "SORT_KEYS",
    "atomic_write",
    "conform",
    "frame",
    "junit_xml",
    "meta_json",
    "overview",
    "read_tables",
    "render_html",
    "summary_markdown",
    "write_html",
    "write_junit",
    "write_reports",
    "write_tables",
]


def meta_json(meta: Mapping[str, Any]) -> str:
    """``meta`` as JSON with sorted keys; values JSON cannot hold (paths, dates) as text."""
    return json.dumps(dict(meta), sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n"


def write_reports(
    out_dir: str | os.PathLike[str],
    results: TableLike,
    summary: TableLike,
    fingerprints: TableLike,
    separation: TableLike,
    meta: Mapping[str, Any],
    counterexamples: Mapping[str, str] | None = None,
    profiles: TableLike = (),
    pairs: TableLike = (),
) -> dict[str, Path]:
    """Write every report into ``out_dir`` (created if needed); returns name -> path.

    Names: "results", "summary", "fingerprints", "separation", "profiles", "pairs" (the
    tables; ``profiles``, the failing cases' error-vs-index profile, and ``pairs``, each
    compiled implementation beside its eager counterpart, may be omitted; pairs.csv is
    written only when there are any), "markdown"
    (report.md), "html" (report.html), "junit" (junit.xml), "meta" (meta.json) and each
    of ``counterexamples`` (a path relative to ``out_dir`` -> script text, the scripts the
    summary's ``counterexample`` column links to; the key is the path). The
    tables are validated before anything is written, so a malformed table raises
    ValueError and leaves ``out_dir`` as it was.
    """
    from adamspec.reports.html import render_html
    from adamspec.reports.junit import junit_xml
    from adamspec.reports.markdown import summary_markdown
    from adamspec.reports.tables import SCHEMAS, atomic_write, conform, frame, write_tables

    out = Path(out_dir)
    given = {
        "results": results,
        "summary": summary,
        "fingerprints": fingerprints,
        "separation": separation,
        "profiles": profiles,
        "pairs": pairs,
    }
    tables = {
        name: conform(data, SCHEMAS[name], name)
        if hasattr(data, "columns")
        else frame(data, SCHEMAS[name])
        for name, data in given.items()
    }
    # Render everything before the first write, for the same reason.
    markdown = summary_markdown(
        tables["summary"], tables["fingerprints"], meta, pairs=tables["pairs"]
    )
    page = render_html(tables, meta)
    junit = junit_xml(tables["summary"], range_fails=bool(meta.get("strict_range", False)))
    meta_text = meta_json(meta)
    paths = write_tables(out, **tables)
    paths["markdown"] = atomic_write(out / "report.md", markdown)
    paths["html"] = atomic_write(out / "report.html", page)
    paths["junit"] = atomic_write(out / "junit.xml", junit)
    paths["meta"] = atomic_write(out / "meta.json", meta_text)
    for relative, text in sorted((counterexamples or {}).items()):
        target = (out / relative).resolve()
        if out.resolve() not in target.parents:
            raise ValueError(f"counterexample path {relative!r} leaves the report folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        paths[relative] = atomic_write(target, text)
    return paths
