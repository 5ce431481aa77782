"""The record tables the harness produces and the reports read.

Reports never recompute anything: every figure in ``report.md`` and
``report.html`` comes from these columns. One place names them so the
harness (writer) and the report builders (readers) cannot drift apart.
"""

from __future__ import annotations

#: One row per implementation x case x mode x step x component: the worst coordinate.
#: ``mode`` is "lockstep" (local error of one step started from the implementation's own
#: state) or "free" (global divergence from the oracle's own trajectory).
#: ``dtype`` is the param dtype and ``precision`` the precision configuration the run used
#: (:attr:`adamspec.spec.precision.Precision.name`: the dtype itself when every role is in
#: it, a preset name such as ``bf16-fp32master``, else ``param=...,grad=...,state=...,
#: master=...``); every table that names a dtype names the precision beside it.
#: ``ulp_error`` is the ordinal ULP distance in the component's own dtype (-1: a NaN/inf
#: mismatch, not measurable in ULPs); ``bits_error`` is log2(1 + ulp_error) (NaN if -1);
#: ``scaled_ulp`` is the error in ULPs of the operands' magnitude (so a cancellation that
#: leaves a tiny result does not look like a wrong formula); ``outcome`` is the worst
#: :class:`adamspec.oracles.metrics.Outcome` over the coordinates.
RESULTS_COLUMNS: tuple[str, ...] = (
    "implementation",
    "framework",
    "framework_version",
    "documented_variant",
    "reference_variant",
    "case",
    "regime",
    "dtype",
    "precision",
    "mode",
    "step",
    "component",
    "ulp_error",
    "bits_error",
    "scaled_ulp",
    "outcome",
    "coordinates",
)

#: One row per implementation x case: the lock-step verdict against the documented variant,
#: at ``dtype`` (the param dtype) under ``precision`` (as in the results table).
#: ``verdict`` is "pass" (every component within its budget), "range" (over budget only
#: where the dtype cannot hold the exact values: category "format range", ``detail`` says
#: what overflowed or flushed), "discrepancy", "skipped" (the adapter cannot run this case:
#: ``detail`` says why) or "error" (it raised/crashed).
#: ``category`` is the spec axis that explains a discrepancy (see harness.classify), or
#: "rounding only", or "unexplained"; ``documented_variant`` the variant the case was
#: measured against: the claim, or without one the fingerprint's best formula;
#: ``claimed`` the variant the implementation claims ("" when nothing is claimed: a
#: check without --variant); ``matched_variant`` the variant (catalog name or axis-space
#: formula) measured within budget on this case: the claimed one when it is, else the best
#: of the fingerprint's candidates (under the same exclusion for "format range" cases), else
#: the formula the classification found ("" when nothing explains the case);
#: ``tied_with`` the other candidates within budget on this case too (the case cannot tell
#: them apart; "; "-separated); ``counterexample`` the path, relative to the report
#: folder, of a minimal runnable script showing a discrepancy ("" if none was searched or found);
#: ``oracle_fallback_rate`` the fraction of the case's oracle element-steps the fast oracle
#: left to mpmath (NaN when measured with ``--oracle mpmath`` or nothing ran);
#: ``failing_coordinates`` how many coordinates were over budget at some step (distinct, over
#: every tensor), ``first_failing_index`` the first one's flat index in the first tensor
#: with any (-1: none), ``localization`` the sentence saying where they are (an index
#: range or pattern when one is clear; see harness.localize);
#: ``kernel_output`` the first lines the implementation printed to its stdout or stderr
#: during the case, joined with " | " ("" when it printed nothing or runs in the harness's
#: own process, where its output is not captured).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "implementation",
    "framework",
    "framework_version",
    "case",
    "dtype",
    "precision",
    "steps",
    "max_ulp",
    "median_ulp",
    "max_free_ulp",
    "worst_component",
    "documented_variant",
    "matched_variant",
    "category",
    "verdict",
    "detail",
    "counterexample",
    "oracle_fallback_rate",
    "claimed",
    "tied_with",
    "first_failing_index",
    "failing_coordinates",
    "localization",
    "kernel_output",
)

#: One row per failing case x tensor x index bin (the error-vs-index plot of report.html):
#: the worst budget multiple (``inf``: a NaN/inf mismatch) over the coordinates
#: ``first_index .. last_index`` of tensor ``tensor`` and every step.
PROFILE_COLUMNS: tuple[str, ...] = (
    "implementation",
    "case",
    "tensor",
    "first_index",
    "last_index",
    "max_multiple",
)

#: One row per implementation x catalog variant (plus the fingerprint's best formula when it
#: has no catalog name): lock-step error of the implementation measured against that
#: variant over the fingerprint problem set, run in ``dtype`` (the param dtype) under
#: ``precision`` (as in the results table); ``rank`` 1 is the best match (variants with the
#: same formula on these problems share a rank); ``documented`` whether it is the variant the
#: implementation claims (never, without a claim); ``within_budget`` whether every component
#: stays within its ULP budget on every case; ``formula`` the formula as axes that differ
#: from the paper's Algorithm 1 (axes these problems cannot show left at the paper's value),
#: with its hyperparameter facts; ``within_cases`` how many of the ``cases`` are within
#: budget and ``failing_cases`` the others ("; "-separated).
FINGERPRINT_COLUMNS: tuple[str, ...] = (
    "implementation",
    "dtype",
    "precision",
    "variant",
    "rank",
    "max_ulp",
    "param_max_ulp",
    "cases",
    "documented",
    "within_budget",
    "formula",
    "within_cases",
    "failing_cases",
)

#: One row per unordered pair of catalog variants: how far apart their exact steps are,
#: rounded to the problem's dtype, from the same state. ``relation`` is "separated",
#: "weak" (differs, but by less than the separation threshold), "within rounding" (never
#: more than the smallest ULP budget apart: no kernel measurement can tell them apart),
#: "equal for this configuration" (0 ULP everywhere although the formulas differ) or
#: "identical formula".
SEPARATION_COLUMNS: tuple[str, ...] = (
    "variant_a",
    "variant_b",
    "max_ulp",
    "component",
    "case",
    "relation",
)

#: One row per compiled implementation x eager counterpart (``AdapterInfo.eager_counterpart``)
#: x case x component, measured by :mod:`adamspec.harness.pairs`: ``max_ulp`` the worst ULP
#: distance between the two over ``steps`` steps each taken by both from the same state
#: and gradients (lock-step), ``first_step_ulp`` that of the first step (-1: a NaN/inf in
#: one where the other has a number; missing when the case could not run, ``component``
#: "" and ``detail`` saying why). ``implementation_formula`` and ``counterpart_formula``
#: are the catalog variants each one's fingerprint ranks first within budget ("" for
#: none); ``verdict`` is "same formula" (one formula, the catalog's variants that are one
#: formula included), "not the same formula" or "formula unknown" (a fingerprint matched
#: none).
PAIR_COLUMNS: tuple[str, ...] = (
    "implementation",
    "counterpart",
    "case",
    "component",
    "steps",
    "first_step_ulp",
    "max_ulp",
    "implementation_formula",
    "counterpart_formula",
    "verdict",
    "diverging_cases",
    "detail",
)

VERDICTS: tuple[str, ...] = ("pass", "range", "discrepancy", "skipped", "error")
RELATIONS: tuple[str, ...] = ("separated", "weak", "within rounding",
                              "equal for this configuration", "identical formula")  # fmt: skip
