"""Conformance tiers: one verdict per implementation, derived from its summary rows.

* ``conforms``: every case that ran is within budget of the documented variant;
* ``conforms except the dtype's range``: every case that ran and is not within budget is
  a discrepancy of category "format range" (the exact formula keeps values the dtype cannot
  hold: ``g*g`` beyond float32's largest finite value, flushed subnormals);
* ``does not conform``: some case is a discrepancy of another category;
* ``error``: some case crashed and none is a discrepancy of another category;
* ``skipped``: no case ran.

Reports group and colour implementations by tier; the harness may use :func:`tier` for exit
codes (a tier is computed from records alone, never from a rerun).
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
    "SKIPPED",
    "TIERS",
    "TIER_MARK",
    "tier",
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

#: The summary category of a discrepancy confined to the dtype's range (the same text as
#: ``adamspec.harness.classify.FORMAT_RANGE``, which tests/test_reports.py checks).
FORMAT_RANGE = "format range"


def tier(rows: Iterable[Mapping[str, Any]]) -> str:
    """The tier of one implementation from its summary rows (``verdict``, ``category``)."""
    ran = [r for r in rows if r["verdict"] != "skipped"]
    if not ran:
        return SKIPPED
    off = [r for r in ran if r["verdict"] == "discrepancy"]
    if any(r["category"] != FORMAT_RANGE for r in off):
        return DOES_NOT_CONFORM
    if any(r["verdict"] == "error" for r in ran):
        return ERROR
    return CONFORMS_EXCEPT_RANGE if off else CONFORMS
