"""``adamspec bench verdicts``: how often the diagnosis is right, on kernels with planted bugs.

A table of kernels (by default ``tests/kernels/planted.py`` of an adamspec checkout: one
bug planted in each, two in some, none in the correct controls) is run through the main
job's own evaluation (:func:`adamspec.harness.run.evaluate`, as ``adamspec check`` does),
each kernel against the variant it claims, and scored:

* **detected**: a planted bug makes at least one case a discrepancy, an error or a
  ``range`` case (off only where the dtype cannot hold the exact values: a finding the
  check prints, which is how a kernel squaring in float32 or flushing subnormals shows);
* **right category**: the kernel's diagnosis is the planted category. The diagnosis is
  "two changes" when any case needs two, else the category most of its discrepant cases
  get ("format range" only when nothing else is named);
* **false alarm**: a correct control with any discrepancy or error (a ``range`` case of a
  control is the dtype's own limit, counted apart as ``controls_range``).

A kernel whose bug needs a problem the suite lacks (``needs``: an overflowing gradient, a
subnormal one) is reported as not applicable, not as missed.

The table module must define ``PLANTED``: objects with ``name``, ``claim``, ``category``,
``attribute`` (the module attribute holding the kernel), ``control``, ``description`` and
``needs``.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from adamspec.harness.classify import FORMAT_RANGE, ROUNDING_ONLY, TWO_CHANGES
from adamspec.harness.problems import suite as problems_of
from adamspec.harness.run import RunConfig, RunUsageError, evaluate
from adamspec.impl.adapters import load_registry
from adamspec.impl.adapters.kernel_protocol import register_target
from adamspec.reports.tiers import RANGE
from adamspec.spec.axes import AmsGrad
from adamspec.spec.catalog import entry

#: The verdicts of a case with a finding.
FOUND = ("discrepancy", "error", RANGE)

#: Where the planted kernels live in a checkout (relative to its root).
DEFAULT_KERNELS = Path("tests") / "kernels" / "planted.py"


def load_table(path: str | Path) -> tuple[Path, ModuleType]:
    """The kernels module at ``path`` (its ``PLANTED`` table); a missing file or table is a
    :class:`RunUsageError` naming it."""
    path = Path(path).resolve()
    if not path.is_file():
        raise RunUsageError(
            f"--kernels {str(path)!r} is not a file; the planted kernels are "
            f"{DEFAULT_KERNELS} of an adamspec checkout (run from its root, or pass --kernels)"
        )
    spec = importlib.util.spec_from_file_location(f"adamspec_planted_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "PLANTED"):
        raise RunUsageError(f"--kernels {str(path)!r} defines no PLANTED table")
    return path, module


def diagnosis(rows: Sequence[dict[str, Any]]) -> str:
    """A kernel's category from its cases' rows (see the module docstring)."""
    found = [r["category"] for r in rows if r["verdict"] in FOUND]
    if not found:
        return ROUNDING_ONLY if any(r["verdict"] == "pass" for r in rows) else "not run"
    if TWO_CHANGES in found:
        return TWO_CHANGES
    named = [c for c in found if c and c != FORMAT_RANGE] or found
    return Counter(named).most_common(1)[0][0] or "error"


def score(planted: Any, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One kernel's result from its cases' summary rows (see the module docstring)."""
    found = diagnosis(rows)
    discrepant = [r for r in rows if r["verdict"] in FOUND]
    alarm = any(r["verdict"] in ("discrepancy", "error") for r in discrepant)
    return {
        "name": planted.name,
        "claim": planted.claim,
        "planted": planted.category,
        "description": planted.description,
        "control": planted.control,
        "diagnosis": found,
        "detected": bool(discrepant),
        "alarm": alarm,
        # a control is right when nothing but the dtype's range shows
        "right": found == planted.category or (planted.control and not alarm),
        "cases": {r["case"]: r["category"] or r["verdict"] for r in discrepant},
        "explanations": sorted({r["detail"] for r in discrepant if r["detail"]})[:3],
    }


def _one(path: Path, planted: Any, suite: str, seed: int) -> dict[str, Any]:
    amsgrad = entry(planted.claim).variant.amsgrad is not AmsGrad.OFF
    name = register_target(f"{path}:{planted.attribute}", planted.claim, amsgrad=amsgrad,
                           in_process=True)  # fmt: skip
    config = RunConfig(implementations=(name,), suite=suite, seed=seed, separation=False,
                       counterexample_examples=0)  # fmt: skip
    started = time.perf_counter()
    rows = evaluate(name, config).summary
    return {**score(planted, rows), "seconds": round(time.perf_counter() - started, 2)}


def bench_verdicts(
    suite: str = "default",
    kernels: str | Path = DEFAULT_KERNELS,
    *,
    only: Sequence[str] = (),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every planted kernel (or those named in ``only``) on ``suite``; the report."""
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    problems = {p.name for p in problems_of(suite)}
    path, module = load_table(kernels)
    table = [p for p in module.PLANTED if not only or p.name in only]
    unknown = sorted(set(only) - {p.name for p in module.PLANTED})
    if unknown:
        raise RunUsageError(f"planted kernel {unknown[0]!r} is not in {path}")
    load_registry()
    started = time.perf_counter()
    kernels_out, skipped = [], []
    for i, planted in enumerate(table, start=1):
        if planted.needs and planted.needs not in problems:
            reason = f"needs the {planted.needs} problem, not in {suite}"
            skipped.append({"name": planted.name, "planted": planted.category, "reason": reason})
            continue
        result = _one(path, planted, suite, seed)
        kernels_out.append(result)
        mark = "ok" if result["right"] else "WRONG"
        progress(f"[{i:>2}/{len(table)}] {planted.name}: {result['diagnosis']} ({mark}, "
                 f"{result['seconds']} s)")  # fmt: skip
    return {
        "suite": suite,
        "kernels_file": str(path),
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        **summarize(kernels_out),
        "kernels": kernels_out,
        "not_applicable": skipped,
    }


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Detection rate, right-category rate and false alarms, overall and per category."""
    bugs = [r for r in results if not r["control"]]
    controls = [r for r in results if r["control"]]
    per: dict[str, dict[str, int]] = {}
    for r in bugs:
        row = per.setdefault(r["planted"], {"kernels": 0, "detected": 0, "right": 0})
        row["kernels"] += 1
        row["detected"] += r["detected"]
        row["right"] += r["right"]
    return {
        "bugs": len(bugs),
        "detected": sum(r["detected"] for r in bugs),
        "right_category": sum(r["right"] for r in bugs),
        "controls": len(controls),
        "false_alarms": sum(r["alarm"] for r in controls),
        "controls_range": sum(r["detected"] and not r["alarm"] for r in controls),
        "detection_rate": _rate(sum(r["detected"] for r in bugs), len(bugs)),
        "right_category_rate": _rate(sum(r["right"] for r in bugs), len(bugs)),
        "per_category": dict(sorted(per.items())),
    }


def _rate(n: int, total: int) -> float:
    return n / total if total else float("nan")


def format_table(report: dict[str, Any]) -> str:
    """The report as text: the three figures, per category, and every miss."""
    lines = [
        f"verdict benchmark on the {report['suite']} suite "
        f"({report['bugs']} planted-bug kernels, {report['controls']} correct controls, "
        f"{report['seconds']} s)",
        f"detected:        {report['detected']}/{report['bugs']} "
        f"({report['detection_rate']:.1%})   goal 100%",
        f"right category:  {report['right_category']}/{report['bugs']} "
        f"({report['right_category_rate']:.1%})   goal >= 95%",
        f"false alarms:    {report['false_alarms']}/{report['controls']} controls   goal 0"
        + (
            f" ({report['controls_range']} with range cases only)"
            if report["controls_range"]
            else ""
        ),
        "",
        f"{'planted category':<34} {'kernels':>7} {'detected':>9} {'right':>6}",
    ]
    for category, row in report["per_category"].items():
        lines.append(f"{category:<34} {row['kernels']:>7} {row['detected']:>9} {row['right']:>6}")
    misses = [r for r in report["kernels"] if not r["right"]]
    if misses:
        lines += ["", "wrong or missed:"]
        for r in misses:
            cases = ", ".join(f"{c}: {k}" for c, k in list(r["cases"].items())[:4])
            lines.append(f"  {r['name']} (planted {r['planted']}, claims {r['claim']}): "
                         f"{r['diagnosis']}; {cases}")  # fmt: skip
    for r in report["not_applicable"]:
        lines.append(f"  not applicable: {r['name']} ({r['reason']})")
    return "\n".join(lines)


__all__ = ["DEFAULT_KERNELS", "bench_verdicts", "diagnosis", "format_table", "score", "summarize"]
