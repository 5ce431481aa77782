"""pytest plugin: ``pytest --adamspec CONFIG.toml`` gates a project inside its own test run.

Registered as the ``adamspec`` entry point of ``pytest11``, so installing adamspec is
enough. Without ``--adamspec`` it does nothing. With it, the gate config
(:mod:`adamspec.harness.gate`, reference in ``docs/ci.md``) becomes one pytest item per
implementation x case x precision (each of the config's dtypes, then its precisions), with
ids like ``adamspec::torch.Adam(foreach=False)::typical::float32`` or
``adamspec::adamspec[torch.Adam]::typical::bf16-fp32master`` (``suite/case`` when the
config has several suites):

* within budget: passed; a case the implementation cannot run: skipped, with the reason;
* a discrepancy or error the baseline names: xfailed, with the entry's reason and link
  (``--runxfail`` turns them into failures);
* any other discrepancy or error: failed, with the category, the ULPs, the detail and the
  path of the minimal counterexample script (written under ``--adamspec-out``).

With ``strict = true`` each baseline entry is also an item, ``adamspec::baseline::<i>``,
failing when the entry is stale (it no longer reproduces). Each implementation is run
once per suite and precision, when its first item runs (``-k`` selects without computing).

At the end of the session the gate's reports go to ``--adamspec-out`` (default
``out-gate/``) as ``adamspec gate --out`` writes them (report.md, junit.xml, gate.json and
each run's engine reports, through the same writers), for the implementations whose every
suite and precision was computed: with ``-k``, what was selected.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from adamspec.harness.gate import BaselineEntry, GateConfig
    from adamspec.harness.run import Tables


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("adamspec", "adamspec Adam/AMSGrad conformance gate")
    group.addoption(
        "--adamspec",
        metavar="CONFIG.toml",
        default=None,
        help="add one test per implementation x case x precision of this adamspec gate config",
    )
    group.addoption(
        "--adamspec-out",
        metavar="DIR",
        default="out-gate",
        help="where the gate's reports (report.md, junit.xml, gate.json, the engine's reports) "
        "and counterexample scripts are written, as by `adamspec gate --out` "
        "(default: out-gate/)",
    )


class GateFailure(AssertionError):
    """A case over budget (or crashed) that the baseline does not name."""


class _Gate:
    """The loaded config and the engine tables computed so far (one run per implementation,
    suite and precision, on first use)."""

    def __init__(self, config: GateConfig, out: Path) -> None:
        self.config = config
        self.out = out
        self._tables: dict[tuple[str, str, str], Tables | BaseException] = {}

    def tables(self, implementation: str, suite: str, precision: str) -> Tables:
        from adamspec.harness import gate
        from adamspec.reports.tables import atomic_write

        key = (implementation, suite, precision)
        if key not in self._tables:
            run_config = self.config.run_config(suite, precision, (implementation,))
            try:
                tables = gate.compute(run_config, progress=lambda line: None)
            except Exception as exc:  # every item of this implementation reports it, once run
                self._tables[key] = exc
            else:
                folder = self.out / self.config.folder(suite, precision)
                for relative, text in sorted(tables.counterexamples.items()):
                    target = folder / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(target, text)
                self._tables[key] = tables
        found = self._tables[key]
        if isinstance(found, BaseException):
            raise found
        return found

    def write_reports(self) -> Path | None:
        """What ``adamspec gate`` writes, for the implementations whose every (suite, precision)
        run was computed in this session (with ``-k``: those selected); the path of
        report.md, or None when no implementation ran whole."""
        from adamspec.harness.gate import judge, write_reports
        from adamspec.harness.run import Tables

        c = self.config
        ran = tuple(
            name
            for name in c.implementations
            if all(isinstance(self._tables.get((name, *run)), Tables) for run in c.runs)
        )
        if not ran:
            return None
        tables = {run: Tables() for run in c.runs}
        for name in ran:
            for run in c.runs:
                tables[run].extend(self._tables[(name, *run)])
        config = replace(c, implementations=ran)
        write_reports(judge(config, tables), tables, self.out, command="pytest --adamspec")
        return self.out / "report.md"

    def row(self, implementation: str, suite: str, case: str, precision: str) -> dict[str, Any]:
        for row in self.tables(implementation, suite, precision).summary:
            if row["case"] == case and row["precision"] == precision:
                return row
        raise GateFailure(f"adamspec produced no result for {implementation} {case} {precision}")


_GATE = pytest.StashKey[_Gate]()
_REPORT = pytest.StashKey["Path | None"]()


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("adamspec", None)
    if not path:
        return
    from adamspec.harness.gate import GateConfigError, load_config

    try:
        gate_config = load_config(path)
    except GateConfigError as exc:
        raise pytest.UsageError(f"--adamspec: {exc}") from None
    config.stash[_GATE] = _Gate(gate_config, Path(config.getoption("adamspec_out")))


def pytest_sessionfinish(session: pytest.Session) -> None:
    gate = session.config.stash.get(_GATE, None)
    if gate is not None:
        session.config.stash[_REPORT] = gate.write_reports()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    report = config.stash.get(_REPORT, None)
    if report is not None:
        terminalreporter.write_line(
            f"adamspec gate reports: {report}, junit.xml and gate.json in {report.parent}/"
        )


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    gate = config.stash.get(_GATE, None)
    if gate is None:
        return
    root = GateCollector.from_parent(
        session, name="adamspec", nodeid="adamspec", path=gate.config.path.resolve()
    )
    items.extend(session.genitems(root))


class GateCollector(pytest.Collector):
    """The config's items: implementation x case x precision, then the strict baseline checks."""

    def collect(self) -> Iterator[pytest.Item]:
        from adamspec.harness.problems import SUITES

        gate = self.config.stash[_GATE]
        c = gate.config
        for implementation in c.implementations:
            for suite in c.suites:
                for problem in SUITES[suite]:
                    for precision in c.run_precisions:
                        case = c.case_id(suite, problem.name)
                        yield CaseItem.from_parent(
                            self,
                            name=f"{implementation}::{case}::{precision}",
                            implementation=implementation,
                            suite=suite,
                            case=problem.name,
                            precision=precision,
                        )
        if c.strict:
            for entry in c.baseline:
                yield BaselineItem.from_parent(self, name=f"baseline::{entry.index}", entry=entry)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, "adamspec"


class _GateItem(pytest.Item):
    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, GateFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # not the node id: the terminal shows the dots of a domain that ends the node id as
        # "::" (it reads them as Class.method)
        return self.path, 0, f"adamspec: {self.name}"


class CaseItem(_GateItem):
    def __init__(
        self, *, implementation: str, suite: str, case: str, precision: str, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.implementation, self.suite, self.case = implementation, suite, case
        self.precision = precision

    def runtest(self) -> None:
        gate = self.config.stash[_GATE]
        row = gate.row(self.implementation, self.suite, self.case, self.precision)
        status, entry = gate.config.judge_row(self.suite, row)
        if status == "pass":
            return
        if status == "skipped":
            # reported at the item (the config file), not at this line
            raise pytest.skip.Exception(str(row["detail"]) or "skipped", _use_item_location=True)
        if status == "baselined":
            assert entry is not None
            pytest.xfail(entry.note)
            # with --runxfail pytest.xfail returns: report the case as a failure
        raise GateFailure(self._message(gate, row))

    def _message(self, gate: _Gate, row: dict[str, Any]) -> str:
        from adamspec.harness.gate import shown_category
        from adamspec.reports.markdown import format_ulp

        lines = [
            f"{self.implementation} on {self.case} [{self.precision}]: {row['verdict']} "
            f"(documented variant {row['documented_variant']})",
            f"category: {shown_category(row)}",
            f"max ULP: {format_ulp(row['max_ulp'])} (worst component: "
            f"{row['worst_component'] or '—'}; budget {dict(gate.config.budget.ulp)})",
            f"matched variant: {row['matched_variant'] or '—'}",
        ]
        if row["detail"]:
            lines.append(f"detail: {row['detail']}")
        if row["counterexample"]:
            folder = gate.config.folder(self.suite, self.precision)
            script = gate.out / folder / row["counterexample"]
            lines.append(f"counterexample: {script} (run it with python)")
        return "\n".join(lines)


class BaselineItem(_GateItem):
    def __init__(self, *, entry: BaselineEntry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry

    def runtest(self) -> None:
        from adamspec.harness.gate import entry_status

        gate = self.config.stash[_GATE]
        c, e = gate.config, self.entry
        rows = []
        for implementation in c.implementations:
            if not e.covers(implementation, c.aliases.get(implementation, ())):
                continue
            for suite, precision in c.runs:
                run = e.dtype or e.precision or precision  # the entry's run, or every one
                if (e.suite or suite) == suite and run == precision:
                    found = gate.tables(implementation, suite, precision).summary
                    rows += [(suite, r) for r in found]
        status = entry_status(c, e, rows)
        if status == "stale":
            raise GateFailure(
                f"stale baseline entry {e.key} ({e.describe()}): no such discrepancy "
                f"reproduces; remove it from {c.path.name} (reason was: {e.reason})"
            )
        if status == "unverified":
            raise pytest.skip.Exception(
                f"{e.key}: every case it names was skipped", _use_item_location=True
            )
