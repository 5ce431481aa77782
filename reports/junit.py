"""JUnit XML from the summary, so CI shows each implementation x case as a test.

One ``<testcase classname=implementation name=case>`` per summary row, sorted by
(implementation, case): "discrepancy" is a ``<failure>``, "error" an ``<error>``,
"skipped" a ``<skipped>``; "pass" has no child. Any other verdict is reported as an
``<error>`` (an unknown verdict is a harness bug, and CI must not show it green).
ElementTree does the escaping; the output has no timestamps, so the same summary always
gives the same bytes.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd

from adamspec.reports.markdown import format_ulp
from adamspec.reports.schema import SUMMARY_COLUMNS
from adamspec.reports.tables import atomic_write, conform

__all__ = ["junit_xml", "write_junit"]

# XML 1.0 cannot carry these code points at all, even escaped; an exception message with a
# terminal escape sequence would otherwise make the whole file unparseable.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _text(value: Any) -> str:
    s = "" if value is None or value is pd.NA else str(value)
    return _ILLEGAL_XML.sub("\ufffd", s)


def _failure_message(row: dict[str, Any]) -> str:
    parts = [
        f"category: {_text(row['category']) or '—'}",
        f"max_ulp: {format_ulp(row['max_ulp'])}",
        f"matched variant: {_text(row['matched_variant']) or '—'}",
    ]
    if row["detail"]:
        parts.append(f"detail: {_text(row['detail'])}")
    return "; ".join(parts)


def _field(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if column in ("max_ulp", "max_free_ulp"):
        return format_ulp(value)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return _text(value)


def _body(row: dict[str, Any]) -> str:
    """Every summary field, one per line, for the CI log of a non-passing case."""
    return "\n".join(f"{c}: {_field(row, c)}" for c in SUMMARY_COLUMNS)


def junit_xml(summary: pd.DataFrame, suite_name: str = "adamspec") -> str:
    """The JUnit XML document for ``summary`` (a DataFrame with the summary columns).

    Root ``<testsuites>`` holds one ``<testsuite>``; both carry ``tests``, ``failures``,
    ``errors`` and ``skipped`` counts.
    """
    table = conform(summary, SUMMARY_COLUMNS, "summary")
    table = table.sort_values(["implementation", "case"], kind="mergesort")
    cases = []
    counts = {"failures": 0, "errors": 0, "skipped": 0}
    for row in table.to_dict("records"):
        case = ET.Element(
            "testcase", {"classname": _text(row["implementation"]), "name": _text(row["case"])}
        )
        verdict = row["verdict"]
        if verdict == "discrepancy":
            child = ET.SubElement(
                case, "failure", {"message": _failure_message(row), "type": "discrepancy"}
            )
            child.text = _body(row)
            counts["failures"] += 1
        elif verdict == "skipped":
            ET.SubElement(case, "skipped", {"message": _text(row["detail"])})
            counts["skipped"] += 1
        elif verdict != "pass":
            kind = "error" if verdict == "error" else f"unknown verdict {verdict!r}"
            child = ET.SubElement(
                case, "error", {"message": _text(row["detail"]) or kind, "type": _text(kind)}
            )
            child.text = _body(row)
            counts["errors"] += 1
        cases.append(case)
    attrs = {"name": _text(suite_name), "tests": str(len(cases))}
    attrs.update({k: str(v) for k, v in counts.items()})
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(root, "testsuite", dict(attrs))
    suite.extend(cases)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(
    path: str | os.PathLike[str], summary: pd.DataFrame, suite_name: str = "adamspec"
) -> Path:
    """Write :func:`junit_xml` to ``path`` atomically (UTF-8); returns the path."""
    return atomic_write(path, junit_xml(summary, suite_name))
