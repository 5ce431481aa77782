"""Conformance tiers: one verdict per implementation, derived from its summary rows.

* ``conforms``: every case that ran is within budget of the documented variant;
* ``conforms except the dtype's range``: every case that ran and is not within budget is a
  *range* case (verdict ``range``: the exact formula keeps values the dtype cannot hold,
  ``g*g`` beyond float32's largest finite value, flushed subnormals);
* ``does not conform``: some case is a discrepancy (of any other category);
* ``error``: some case crashed and none is a discrepancy;
* ``skipped``: no case ran.

Reports group and colour implementations by tier; the harness uses :func:`tier` for exit
codes (a tier is computed from records alone, never from a rerun).

Records written before the ``range`` verdict hold a ``discrepancy`` whose category is
"format range"; :func:`is_range` reads both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "CONFORMS",
    "CONFORMS_EXCEPT_RANGE",
    "DOES_NOT_CONFORM",
    "ERROR",
    "FORMAT_RANGE",
    "RANGE",
    "SKIPPED",
    "TIERS",
    "TIER_MARK",
    "is_range",
    "tier",
    "tier_text",
]

CONFORMS = "conforms"
CONFORMS_EXCEPT_RANGE = "conforms except the dtype's range"
DOES_NOT_CONFORM = "does not conform"
ERROR = "error"
SKIPPED = "skipped"

#: Worst first.
TIERS: tuple[str, ...] = (DOES_NOT_CONFORM, ERROR, CONFORMS_EXCEPT_RANGE, CONFORMS, SKIPPED)

#: A mark per tier for text reports (colour alone is not a label).
TIER_MARK: dict[str, str] = {
    DOES_NOT_CONFORM: "✗",
    ERROR: "!",
    CONFORMS_EXCEPT_RANGE: "≈",
    CONFORMS: "✓",
    SKIPPED: "–",
}

#: The summary verdict of a case off only where the dtype cannot hold the exact values.
RANGE = "range"

#: The summary category of such a case (the same text as
#: ``adamspec.harness.classify.FORMAT_RANGE``, which tests/test_reports.py checks).
FORMAT_RANGE = "format range"


def is_range(row: Mapping[str, Any]) -> bool:
    """A range case: verdict ``range`` (or, in older records, a format-range discrepancy)."""
    return row["verdict"] == RANGE or (
        row["verdict"] == "discrepancy" and row["category"] == FORMAT_RANGE
    )


def tier(rows: Iterable[Mapping[str, Any]]) -> str:
    """The tier of one implementation from its summary rows (``verdict``, ``category``)."""
    ran = [r for r in rows if r["verdict"] != "skipped"]
    if not ran:
        return SKIPPED
    if any(r["verdict"] == "discrepancy" and not is_range(r) for r in ran):
        return DOES_NOT_CONFORM
    if any(r["verdict"] == "error" for r in ran):
        return ERROR
    return CONFORMS_EXCEPT_RANGE if any(is_range(r) for r in ran) else CONFORMS


def tier_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """The tier as the main job's table shows it: ``pass``, ``pass (range: 2 cases)``,
    ``discrepancy``, ``error`` or ``skipped``."""
    rows = list(rows)
    found = tier(rows)
    if found == CONFORMS:
        return "pass"
    if found == CONFORMS_EXCEPT_RANGE:
        n = sum(is_range(r) for r in rows)
        return f"pass (range: {n} case{'s' if n != 1 else ''})"
    return {DOES_NOT_CONFORM: "discrepancy"}.get(found, found)
