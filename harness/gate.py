"""``adamspec gate CONFIG.toml``: a CI conformance gate with a baseline of known discrepancies.

The TOML config (reference: ``docs/ci.md``) lists implementations (glob patterns of
registered implementations, or user kernels with the variant they claim), problem suites,
dtypes and mixed precisions, ULP budgets per state component, and a baseline of known
discrepancies, each with a reason (like array-api-tests' xfails file). The gate runs the
engine (:func:`adamspec.harness.run.run`) once per suite x precision (each dtype, then each
of ``precisions``) and judges every summary row:

* ``pass`` / ``skipped``: within budget (or a range case, off only where the dtype cannot
  hold the exact values, unless ``[gate] range = "fail"``), or the case could not run (a
  missing framework);
* ``baselined``: a discrepancy or error that a baseline entry names (not a failure);
* ``new``: a discrepancy or error that no entry names: the gate fails (exit 1).

A baseline entry that matches no failing row although some row it names was measured is
*stale* (the bug was fixed, or the entry has a typo); with ``strict = true`` a stale entry
fails the gate too. An entry all of whose rows were skipped is *unverified*, never stale.

The config is read by :mod:`adamspec.harness.gate_config` (against the schema of
:mod:`adamspec.harness.gate_schema`); this module judges and reports.

Output folder (``--out``)::

    report.md      the gate's Markdown summary (paste it into a PR comment)
    junit.xml      the gate's JUnit XML: one test case per implementation x case x precision,
                   named ``case[precision]``
    gate.json      the gate's verdict as JSON (new, baselined, stale, counts)
    <suite>-<precision>/   the engine's full reports for that run (summary.csv, results.parquet,
                       report.md, report.html, counterexamples/, ...; its junit.xml ignores
                       the baseline)

Every file is written atomically; the same seed and config give byte-identical files
(no timestamps or durations anywhere). Interrupted gates resume with ``--resume``:
finished implementations are kept in ``<out>/.adamspec-checkpoint/`` until every report
is written.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adamspec.harness.cluster import Executor, executor
from adamspec.harness.gate_config import (
    BaselineEntry,
    GateConfig,
    GateConfigError,
    load_config,
)
from adamspec.harness.problems import SUITES
from adamspec.harness.run import (
    CHECKPOINT_FOLDER,
    Checkpoint,
    RunConfig,
    RunUsageError,
    Tables,
    precision_columns,
)

if TYPE_CHECKING:
    from adamspec.reports.junit import JUnitCase

# ------------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class Outcome:
    """One summary row as the gate sees it."""

    suite: str
    row: Mapping[str, Any]
    status: str  # "pass" | "skipped" | "baselined" | "new"
    entry: BaselineEntry | None
    folder: str  # the engine report folder of this row, relative to the gate's output folder


@dataclass
class GateResult:
    config: GateConfig
    outcomes: list[Outcome]
    stale: list[BaselineEntry]
    unverified: list[BaselineEntry]

    @property
    def new(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "new"]

    @property
    def baselined(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "baselined"]

    @property
    def passed(self) -> bool:
        return not self.new and not (self.config.strict and self.stale)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("pass", "skipped", "baselined", "new"), 0)
        for o in self.outcomes:
            counts[o.status] += 1
        counts["stale"] = len(self.stale)
        counts["unverified"] = len(self.unverified)
        return counts


def entry_status(
    config: GateConfig, entry: BaselineEntry, rows: Iterable[tuple[str, Mapping[str, Any]]]
) -> str:
    """``"live"`` (it names a failing row), ``"stale"`` (the rows where it applies were
    measured and none fails as it says) or ``"unverified"`` (they were all skipped, or none
    ran). Where it applies ignores its verdict and category: a fixed bug's row passes."""
    measured = False
    for suite, row in rows:
        aliases = config.aliases.get(str(row["implementation"]), ())
        if not entry.applies(suite, row, aliases):
            continue
        if config.failing(row["verdict"]) and entry.matches(suite, row, aliases):
            return "live"
        measured = measured or row["verdict"] != "skipped"
    return "stale" if measured else "unverified"


def judge(config: GateConfig, tables: Mapping[tuple[str, str], Tables]) -> GateResult:
    """The gate's verdict on the engine tables of each (suite, precision) run."""
    order = {n: i for i, n in enumerate(config.implementations)}
    outcomes: list[Outcome] = []
    rows: list[tuple[str, Mapping[str, Any]]] = []
    for suite, precision in config.runs:
        for row in tables[(suite, precision)].summary:
            status, entry = config.judge_row(suite, row)
            outcomes.append(Outcome(suite, row, status, entry, config.folder(suite, precision)))
            rows.append((suite, row))
    suite_order = {s: i for i, s in enumerate(config.suites)}
    precision_order = {p: i for i, p in enumerate(config.run_precisions)}
    case_orders = {s: {p.name: i for i, p in enumerate(SUITES[s])} for s in config.suites}
    outcomes.sort(
        key=lambda o: (
            order.get(str(o.row["implementation"]), len(order)),
            suite_order[o.suite],
            case_orders[o.suite].get(str(o.row["case"]), len(case_orders[o.suite])),
            precision_order.get(str(o.row["precision"]), len(precision_order)),
        )
    )
    stale, unverified = [], []
    for entry in config.baseline:
        status = entry_status(config, entry, rows)
        if status == "stale":
            stale.append(entry)
        elif status == "unverified":
            unverified.append(entry)
    return GateResult(config, outcomes, stale, unverified)


# ------------------------------------------------------------------------------- reports


def _short(text: Any, limit: int = 200) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def shown_category(row: Mapping[str, Any]) -> str:
    """A crashed case's category describes the steps before the crash: not shown."""
    return (str(row["category"]) if row["verdict"] in ("discrepancy", "range") else "") or "—"


def gate_junit(result: GateResult) -> str:
    """JUnit XML: one ``<testcase classname=implementation name="case[precision]">`` per summary
    row; new discrepancies are failures, new errors errors, baselined rows
    ``<skipped type="xfail">`` with the reason and link, skipped cases skipped; each stale
    baseline entry is a test case of class ``adamspec.baseline``, failed under strict."""
    from adamspec.reports.junit import junit_document, stale_baseline_case

    config = result.config
    cases = [_junit_case(o, config) for o in result.outcomes]
    for entry in result.stale:
        message = (
            f"stale baseline entry: no {entry.describe()} discrepancy reproduces; "
            f"remove it from {config.path.name} (reason was: {entry.reason})"
        )
        name = f"{entry.key} {entry.describe()}"
        cases.append(stale_baseline_case(name, message, entry.link, config.strict))
    return junit_document(cases, config.name, type_first=True)


def _junit_case(o: Outcome, config: GateConfig) -> JUnitCase:
    from adamspec.reports.junit import JUnitCase, case_name, failed_row_case, row_case, xfail_case

    name = case_name(o.row, config.case_id(o.suite, str(o.row["case"])))
    if o.status == "baselined":
        assert o.entry is not None
        return xfail_case(o.row, name, o.entry.note)
    if o.status == "new":
        return failed_row_case(_linked(o), name)
    if o.status == "skipped":  # the writer escapes the detail (and makes None "")
        return JUnitCase(o.row["implementation"], name, "skipped", o.row["detail"])
    return row_case(o.row, name)  # a pass, or a range case passing (range = "pass")


def _linked(o: Outcome) -> dict[str, Any]:
    """The row with its counterexample's path relative to the gate's output folder."""
    row = dict(o.row)
    if row.get("counterexample"):
        row["counterexample"] = f"{o.folder}/{row['counterexample']}"
    return row


def gate_markdown(result: GateResult) -> str:
    """The Markdown summary for a PR comment: verdict, counts, new discrepancies (with the
    counterexample paths), stale baseline entries, baselined ones (reason, link) and
    unverified entries; each section only when it has something to say."""
    lines = _md_heading(result)
    for section in (_md_new, _md_stale, _md_baselined, _md_unverified):
        lines += section(result)
    runs = ", ".join(f"`{result.config.folder(s, d)}/report.md`" for s, d in result.config.runs)
    lines.append(f"Full engine reports per suite and precision: {runs}.")
    return "\n".join(lines) + "\n"


def _md_heading(result: GateResult) -> list[str]:
    from adamspec.reports.markdown import md_escape

    config, c = result.config, result.counts()
    verdict = "✅ passed" if result.passed else "❌ failed"
    return [
        f"## {md_escape(config.name)}: {verdict}",
        "",
        f"Suites {', '.join(config.suites)} · {_md_precisions(config)} · seed "
        f"{config.seed} · strict {'true' if config.strict else 'false'} · "
        f"{len(config.implementations)} implementations · config `{config.path.name}`",
        "",
        f"**{c['new']} new** · {c['baselined']} baselined · {c['stale']} stale baseline "
        f"entries · {c['pass']} passed · {c['skipped']} skipped",
        "",
    ]


def _md_precisions(config: GateConfig) -> str:
    """``dtypes float32 · precisions bf16-fp32master (param bfloat16, ...)``."""
    from adamspec.reports.markdown import md_escape, mixed_ulps_note, precision_text

    parts = [f"dtypes {', '.join(config.dtypes)}"] if config.dtypes else []
    if config.precisions:
        named = precision_text(config.precisions) + mixed_ulps_note(config.precisions)
        parts.append(f"precisions {md_escape(named)}")
    return " · ".join(parts)


def _md_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table (the ULP column right-aligned), and the blank line after it."""
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append("| " + " | ".join("---:" if c == "max ULP" else "---" for c in columns) + " |")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return [*lines, ""]


_ROW_COLUMNS = ("implementation", "case", "precision", "verdict", "category", "max ULP")


def _md_row(o: Outcome, config: GateConfig) -> list[str]:
    """The cells of :data:`_ROW_COLUMNS` for a judged row."""
    from adamspec.reports.markdown import format_ulp, md_escape

    row = o.row
    return [
        md_escape(row["implementation"]),
        md_escape(config.case_id(o.suite, str(row["case"]))),
        md_escape(row["precision"]),
        str(row["verdict"]),
        md_escape(shown_category(row)),
        format_ulp(row["max_ulp"]),
    ]


def _md_new(result: GateResult) -> list[str]:
    from adamspec.reports.markdown import md_escape

    if not result.new:
        return []
    rows = []
    for o in result.new:
        row = o.row
        ce = f"`{o.folder}/{row['counterexample']}`" if row.get("counterexample") else ""
        worst = md_escape(row["worst_component"]) or "—"
        rows.append([*_md_row(o, result.config), worst, md_escape(_short(row["detail"])), ce])
    columns = (*_ROW_COLUMNS, "worst component", "detail", "counterexample")
    return ["### New discrepancies (fail the gate)", "", *_md_table(columns, rows)]


def _md_stale(result: GateResult) -> list[str]:
    from adamspec.reports.markdown import md_escape

    if not result.stale:
        return []
    config = result.config
    strict = " (fail the gate: strict = true)" if config.strict else " (strict = false)"
    rows = [
        [e.key, md_escape(e.describe()), md_escape(e.reason), md_escape(e.link)]
        for e in result.stale
    ]
    return [
        "### Stale baseline entries" + strict,
        "",
        "These no longer reproduce: the bug was fixed (or the entry has a typo). "
        f"Remove them from `{config.path.name}`.",
        "",
        *_md_table(("entry", "matches", "reason", "link"), rows),
    ]


def _md_baselined(result: GateResult) -> list[str]:
    from adamspec.reports.markdown import md_escape

    if not result.baselined:
        return []
    rows = []
    for o in result.baselined:
        assert o.entry is not None
        rows.append(
            [*_md_row(o, result.config), md_escape(o.entry.reason), md_escape(o.entry.link)]
        )
    columns = (*_ROW_COLUMNS, "reason", "link")
    return ["### Baselined (known discrepancies)", "", *_md_table(columns, rows)]


def _md_unverified(result: GateResult) -> list[str]:
    from adamspec.reports.markdown import md_escape

    if not result.unverified:
        return []
    lines = ["### Unverified baseline entries (every case they name was skipped)", ""]
    lines += [
        f"* {e.key}: {md_escape(e.describe())}: {md_escape(e.reason)}" for e in result.unverified
    ]
    return [*lines, ""]


def gate_json(result: GateResult) -> str:
    def row(o: Outcome) -> dict[str, Any]:
        r = o.row
        return {
            "implementation": r["implementation"],
            "suite": o.suite,
            "case": r["case"],
            "dtype": r["dtype"],
            "precision": r["precision"],
            "verdict": r["verdict"],
            "category": r["category"],
            "max_ulp": int(r["max_ulp"]),
            "counterexample": f"{o.folder}/{r['counterexample']}"
            if r.get("counterexample")
            else "",
            "baseline": o.entry.key if o.entry else None,
        }

    def entry(e: BaselineEntry) -> dict[str, Any]:
        return {"entry": e.key, "matches": e.describe(), "reason": e.reason, "link": e.link}

    data = {
        "passed": result.passed,
        "strict": result.config.strict,
        "counts": result.counts(),
        "new": [row(o) for o in result.new],
        "baselined": [row(o) for o in result.baselined],
        "stale": [entry(e) for e in result.stale],
        "unverified": [entry(e) for e in result.unverified],
    }
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def verdict_text(result: GateResult) -> str:
    """What ``adamspec gate`` prints."""
    c = result.counts()
    head = "passed" if result.passed else "FAILED"
    lines = [
        f"adamspec gate: {head}: {c['new']} new, {c['baselined']} baselined, {c['stale']} stale"
        f"{' (strict)' if result.config.strict and c['stale'] else ''}, {c['pass']} passed, "
        f"{c['skipped']} skipped"
    ]
    for o in result.new:
        r = o.row
        what = (r["category"] if r["verdict"] in ("discrepancy", "range") else "") or _short(
            r["detail"], 100
        )
        lines.append(
            f"  new {r['verdict']}: {r['implementation']} "
            f"{result.config.case_id(o.suite, str(r['case']))} [{r['precision']}]: {what}"
        )
    for e in result.stale:
        lines.append(f"  stale baseline {e.key}: {e.describe()}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- running


def compute(
    config: RunConfig,
    progress: Callable[[str], None] | None = None,
    checkpoint: Checkpoint | None = None,
    executor: Executor | None = None,
) -> Tables:
    """One engine run (a seam: tests may memoize it)."""
    from adamspec.harness.run import run

    return run(config, progress=progress, checkpoint=checkpoint, executor=executor)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_reports(
    result: GateResult,
    tables: Mapping[tuple[str, str], Tables],
    out: str | os.PathLike[str],
    *,
    junit: str | os.PathLike[str] | None = None,
    command: str = "adamspec gate",
) -> None:
    """The gate's output folder (see the module docstring): its report.md, junit.xml and
    gate.json, and each (suite, precision) run's engine reports; ``junit`` is a second copy of
    the JUnit XML."""
    from adamspec.reports.tables import atomic_write

    config, out_dir = result.config, Path(out)
    for (suite, precision), t in tables.items():
        meta = {
            "command": command,
            "config": config.path.name,
            "gate": config.name,
            "suite": suite,
            "size": config.size,
            "steps": config.steps,
            "fingerprint_suite": config.fingerprint_suite,
            **precision_columns(precision),
            "seed": config.seed,
            "budget_ulp": dict(config.budget.ulp),
            "implementations": list(config.implementations),
        }
        t.write(out_dir / config.folder(suite, precision), meta)
    xml = gate_junit(result)
    atomic_write(out_dir / "junit.xml", xml)
    atomic_write(out_dir / "report.md", gate_markdown(result))
    atomic_write(out_dir / "gate.json", gate_json(result))
    if junit is not None:
        Path(junit).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(junit, xml)


def run_gate(
    config_path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] = "out-gate",
    junit: str | os.PathLike[str] | None = None,
    resume: bool = False,
    jobs: int = 1,
    scheduler: str | None = None,
    size: int | None = None,
    steps: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Run the gate; write its reports; return 0 (passed) or 1 (failed). Its runs' tasks
    share one executor (``jobs``, ``scheduler``: :func:`adamspec.harness.cluster.executor`).

    Raises :class:`GateConfigError` for a bad config and
    :class:`~adamspec.harness.cluster.SchedulerError` for a scheduler it cannot use."""
    config = load_config(config_path)
    if size is not None or steps is not None:  # --size, --steps on the command line
        config = replace(config, size=size, steps=steps)
    progress = progress or _stderr
    out_dir = Path(out)
    checkpoints = {
        run_key: Checkpoint(out_dir / CHECKPOINT_FOLDER, config.run_config(*run_key, jobs=jobs))
        for run_key in config.runs
    }
    if not resume:
        for cp in checkpoints.values():
            cp.clear()
    tables: dict[tuple[str, str], Tables] = {}
    with executor(scheduler, jobs, log=_stderr) as ex:
        for suite, precision in config.runs:
            progress(f"adamspec gate: suite {suite}, {precision}")
            run_config = config.run_config(suite, precision, jobs=jobs)
            try:
                tables[(suite, precision)] = compute(
                    run_config, progress=progress, checkpoint=checkpoints[(suite, precision)],
                    executor=ex,
                )  # fmt: skip
            except RunUsageError as exc:  # the config was checked: this is a changed registry
                raise GateConfigError(f"{config.path}: {exc}") from None
    result = judge(config, tables)
    write_reports(result, tables, out_dir, junit=junit)
    for cp in checkpoints.values():
        cp.clear()
    print(verdict_text(result))
    print(
        f"reports: {out_dir / 'report.md'}, {out_dir / 'junit.xml'}"
        + (f", {junit}" if junit is not None else "")
    )
    return 0 if result.passed else 1


__all__ = [
    "BaselineEntry",
    "GateConfig",
    "GateConfigError",
    "GateResult",
    "Outcome",
    "compute",
    "entry_status",
    "gate_junit",
    "gate_markdown",
    "judge",
    "load_config",
    "run_gate",
    "shown_category",
    "write_reports",
]
