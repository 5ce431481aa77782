"""JUnit XML, the one writer: every command's verdicts as test cases CI can show.

A document is one ``<testsuites>`` holding one ``<testsuite>``; both carry ``tests``,
``failures``, ``errors`` and ``skipped`` counts. Each :class:`JUnitCase` is a
``<testcase classname=... name=...>``, passed or with one ``<failure>``, ``<error>`` or
``<skipped>`` child. The builders below make the cases every caller needs:

Every case a summary row makes is named by :func:`case_name`: the case and the precision
it ran in, ``typical[float32]`` or ``typical[bf16-fp32master]``.

* :func:`row_case`: a summary row as ``adamspec run`` and ``check`` report it: "pass"
  passes, "range" passes (the tier "conforms except the dtype's range") with a
  ``<system-out>`` saying what overflowed or flushed, "skipped" is skipped with its
  detail, "discrepancy" and "error" fail (:func:`failed_row_case`), and any other
  verdict is an ``<error>`` (an unknown verdict is a harness bug, and CI must not show it
  green);
* :func:`failed_row_case`: a row that fails the build: an error is an ``<error>``, any
  other verdict a ``<failure>`` of that type naming category, ULPs and matched variant;
  the text lists every summary field, for the CI log;
* :func:`xfail_case` and :func:`stale_baseline_case`: the gate's known discrepancies
  (``<skipped type="xfail">`` with the reason and link) and its stale baseline entries
  (test cases of class ``adamspec.baseline``, failing under strict).

ElementTree does the escaping; the output has no timestamps, so the same cases always give
the same bytes.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from adamspec.reports.markdown import format_ulp
from adamspec.reports.schema import SUMMARY_COLUMNS
from adamspec.reports.tables import atomic_write, conform

__all__ = [
    "BASELINE_CLASSNAME",
    "JUnitCase",
    "case_name",
    "failed_row_case",
    "junit_document",
    "junit_xml",
    "row_case",
    "stale_baseline_case",
    "write_junit",
    "xfail_case",
]

#: The class of the gate's stale-baseline test cases.
BASELINE_CLASSNAME = "adamspec.baseline"

# XML 1.0 cannot carry these code points at all, even escaped; an exception message with a
# terminal escape sequence would otherwise make the whole file unparseable.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

# the child element of a non-passing case -> the count it adds to
_COUNTED = {"failure": "failures", "error": "errors", "skipped": "skipped"}


def _text(value: Any) -> str:
    s = "" if value is None or value is pd.NA else str(value)
    return _ILLEGAL_XML.sub("\ufffd", s)


@dataclass(frozen=True)
class JUnitCase:
    """One ``<testcase>``: passed, or with a ``failure`` / ``error`` / ``skipped`` child."""

    classname: str
    name: str
    outcome: str = "passed"  # "passed" or the child's tag: "failure", "error", "skipped"
    message: str = ""
    type: str | None = None  # the child's type attribute; None: not written
    text: str | None = None  # the child's text (what CI shows of a non-passing case)
    out: str | None = None  # <system-out>: a passing case's note (a range case's overflow)

    def __post_init__(self) -> None:
        if self.outcome != "passed" and self.outcome not in _COUNTED:
            allowed = ", ".join(["passed", *_COUNTED])
            raise ValueError(f"JUnit outcome {self.outcome!r} is unknown; allowed: {allowed}")


def junit_document(cases: Iterable[JUnitCase], suite_name: str, *, type_first: bool = False) -> str:
    """The JUnit XML document of ``cases``, in the order given.

    ``type_first`` writes a child's ``type`` attribute before its ``message``: the gate's
    files always have, run's never have. Readers ignore the order; byte-identical reports
    from one version to the next do not."""
    counts = dict.fromkeys(_COUNTED.values(), 0)
    elements = []
    for case in cases:
        element = ET.Element(
            "testcase", {"classname": _text(case.classname), "name": _text(case.name)}
        )
        if case.outcome != "passed":
            attrs = {"message": _text(case.message)}
            if case.type is not None:
                typed = {"type": _text(case.type)}
                attrs = {**typed, **attrs} if type_first else {**attrs, **typed}
            child = ET.SubElement(element, case.outcome, attrs)
            if case.text is not None:
                child.text = _text(case.text)
            counts[_COUNTED[case.outcome]] += 1
        if case.out is not None:
            ET.SubElement(element, "system-out").text = _text(case.out)
        elements.append(element)
    attrs = {"name": _text(suite_name), "tests": str(len(elements))}
    attrs.update({k: str(v) for k, v in counts.items()})
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(root, "testsuite", dict(attrs))
    suite.extend(elements)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# ------------------------------------------------------------------------- summary rows


def _failure_message(row: Mapping[str, Any]) -> str:
    parts = [
        f"category: {_text(row['category']) or '—'}",
        f"max_ulp: {format_ulp(row['max_ulp'])}",
        f"matched variant: {_text(row['matched_variant']) or '—'}",
    ]
    if row["detail"]:
        parts.append(f"detail: {_text(row['detail'])}")
    return "; ".join(parts)


def _field(row: Mapping[str, Any], column: str) -> str:
    value = row[column]
    if column in ("max_ulp", "max_free_ulp"):
        return format_ulp(value)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return _text(value)


def _body(row: Mapping[str, Any]) -> str:
    """Every summary field, one per line, for the CI log of a non-passing case."""
    return "\n".join(f"{c}: {_field(row, c)}" for c in SUMMARY_COLUMNS)


def case_name(row: Mapping[str, Any], case: str | None = None) -> str:
    """A row's test-case name: its case (``case``: as the caller names it, e.g. ``suite/case``)
    and the precision it ran in, ``typical[float32]``, ``typical[bf16-fp32master]``."""
    return f"{row['case'] if case is None else case}[{row['precision']}]"


def failed_row_case(row: Mapping[str, Any], name: str | None = None) -> JUnitCase:
    """A summary row that fails the build (``name`` defaults to :func:`case_name`)."""
    classname, name = _text(row["implementation"]), _text(case_name(row) if name is None else name)
    if row["verdict"] == "error":
        return JUnitCase(
            classname, name, "error", _text(row["detail"]) or "error", "error", _body(row)
        )
    return JUnitCase(
        classname, name, "failure", _failure_message(row), _text(row["verdict"]), _body(row)
    )


def row_case(
    row: Mapping[str, Any], name: str | None = None, *, range_fails: bool = False
) -> JUnitCase:
    """A summary row as run and check report it (``name`` defaults to :func:`case_name`); a
    range case fails with ``range_fails`` (``adamspec check --strict-range``)."""
    classname, name = _text(row["implementation"]), _text(case_name(row) if name is None else name)
    verdict = row["verdict"]
    if verdict == "pass":
        return JUnitCase(classname, name)
    if verdict == "range" and not range_fails:  # the second tier passes, saying what overflowed
        return JUnitCase(classname, name, out=f"range: {_text(row['detail'])}")
    if verdict == "skipped":
        return JUnitCase(classname, name, "skipped", _text(row["detail"]))
    if verdict in ("discrepancy", "error", "range"):
        return failed_row_case(row, name)
    kind = f"unknown verdict {verdict!r}"
    return JUnitCase(classname, name, "error", _text(row["detail"]) or kind, kind, _body(row))


def junit_xml(
    summary: pd.DataFrame, suite_name: str = "adamspec", *, range_fails: bool = False
) -> str:
    """The JUnit XML of ``summary`` (a DataFrame with the summary columns): one
    ``<testcase classname=implementation name="case[precision]">`` per row
    (:func:`row_case`), sorted by (implementation, case, precision)."""
    table = conform(summary, SUMMARY_COLUMNS, "summary")
    table = table.sort_values(["implementation", "case", "precision"], kind="mergesort")
    cases = (row_case(row, range_fails=range_fails) for row in table.to_dict("records"))
    return junit_document(cases, suite_name)


def write_junit(
    path: str | os.PathLike[str], summary: pd.DataFrame, suite_name: str = "adamspec"
) -> Path:
    """Write :func:`junit_xml` to ``path`` atomically (UTF-8); returns the path."""
    return atomic_write(path, junit_xml(summary, suite_name))


# ------------------------------------------------------------------------- the gate


def xfail_case(row: Mapping[str, Any], name: str, message: str) -> JUnitCase:
    """A failing row that a known-discrepancy list names: ``<skipped type="xfail">``, the
    ``message`` saying which entry, why and where it is tracked."""
    return JUnitCase(_text(row["implementation"]), name, "skipped", message, "xfail")


def stale_baseline_case(name: str, message: str, link: str, strict: bool) -> JUnitCase:
    """A known-discrepancy entry that no longer reproduces: a ``<failure>`` under strict
    (its text adds the ``link``, if any), otherwise skipped."""
    if strict:
        text = f"{message} ({link})" if link else message
        return JUnitCase(BASELINE_CLASSNAME, name, "failure", message, "stale baseline", text)
    return JUnitCase(BASELINE_CLASSNAME, name, "skipped", message + " (strict = false)")
