"""``adamspec gate CONFIG.toml``: a CI conformance gate with a baseline of known discrepancies.

The TOML config (reference: ``docs/ci.md``) lists implementations (glob patterns of
registered implementations, or user kernels with the variant they claim), problem suites,
dtypes, ULP budgets per state component, and a baseline of known discrepancies, each with
a reason (like array-api-tests' xfails file). The gate runs the engine
(:func:`adamspec.harness.run.run`) once per suite x dtype and judges every summary row:

* ``pass`` / ``skipped``: within budget, or the case could not run (a missing framework);
* ``baselined``: a discrepancy or error that a baseline entry names (not a failure);
* ``new``: a discrepancy or error that no entry names: the gate fails (exit 1).

A baseline entry that matches no failing row although some row it names was measured is
*stale* (the bug was fixed, or the entry has a typo); with ``strict = true`` a stale entry
fails the gate too. An entry all of whose rows were skipped is *unverified*, never stale.

Output folder (``--out``)::

    report.md      the gate's Markdown summary (paste it into a PR comment)
    junit.xml      the gate's JUnit XML: one test case per implementation x case x dtype
    gate.json      the gate's verdict as JSON (new, baselined, stale, counts)
    <suite>-<dtype>/   the engine's full reports for that run (summary.csv, results.parquet,
                       report.md, report.html, counterexamples/, ...; its junit.xml ignores
                       the baseline)

Every file is written atomically; the same seed and config give byte-identical files
(no timestamps or durations anywhere). Interrupted gates resume with ``--resume``:
finished implementations are kept in ``<out>/.adamspec-checkpoint/`` until every report
is written.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adamspec.harness.budgets import DEFAULT, Budget
from adamspec.harness.problems import DTYPES, SUITES
from adamspec.harness.run import CHECKPOINT_FOLDER, Checkpoint, RunConfig, RunUsageError, Tables

if TYPE_CHECKING:
    from adamspec.reports.junit import JUnitCase

#: Hypothesis examples per stage of each minimal-counterexample search (the engine's
#: default is 100; a gate only needs a small script, and fast).
GATE_COUNTEREXAMPLE_EXAMPLES = 30

#: Summary verdicts that fail the gate unless baselined.
FAILING = ("discrepancy", "error")
_VERDICTS = ("discrepancy", "error", "skipped")

GATE_KEYS = (
    "name",
    "suite",
    "dtypes",
    "seed",
    "strict",
    "fingerprint_suite",
    "counterexample_examples",
    "fail_on_skipped",
    "register",
)
TOP_KEYS = ("gate", "budget", "implementation", "baseline")
IMPLEMENTATION_KEYS = ("name", "target", "variant", "timeout_s")
BASELINE_KEYS = (
    "implementation",
    "case",
    "suite",
    "dtype",
    "verdict",
    "category",
    "reason",
    "link",
)


class GateConfigError(ValueError):
    """A bad gate config; the one-line message names the file, the key and what is allowed."""


# ------------------------------------------------------------------------------- the config


def _glob(pattern: str) -> re.Pattern[str]:
    """A glob where only ``*`` and ``?`` are special (names contain brackets)."""
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + r"\Z")


@dataclass(frozen=True)
class BaselineEntry:
    """One known discrepancy: which rows it covers, why, and where it is tracked."""

    index: int
    implementation: str
    case: str = "*"
    suite: str | None = None
    dtype: str | None = None
    verdict: str | None = None
    category: str | None = None
    reason: str = ""
    link: str = ""

    @property
    def key(self) -> str:
        return f"baseline[{self.index}]"

    @property
    def note(self) -> str:
        """What a row this entry baselines says: ``baselined (baseline[i]): reason (link)``."""
        link = f" ({self.link})" if self.link else ""
        return f"baselined ({self.key}): {self.reason}{link}"

    def describe(self) -> str:
        parts = [self.implementation, self.case]
        parts += [x for x in (self.suite, self.dtype, self.verdict, self.category) if x]
        return " / ".join(parts)

    def covers(self, implementation: str, aliases: Iterable[str] = ()) -> bool:
        regex = _glob(self.implementation)
        return any(regex.match(n) for n in (implementation, *aliases))

    def applies(self, suite: str, row: Mapping[str, Any], aliases: Iterable[str] = ()) -> bool:
        """Whether ``row`` (a summary row of ``suite``) is where this entry applies: its
        implementation, case, suite and dtype (not its verdict or category)."""
        if not self.covers(str(row["implementation"]), aliases):
            return False
        if not _glob(self.case).match(str(row["case"])):
            return False
        if self.suite is not None and self.suite != suite:
            return False
        return self.dtype is None or self.dtype == row["dtype"]

    def matches(self, suite: str, row: Mapping[str, Any], aliases: Iterable[str] = ()) -> bool:
        """Whether this entry names ``row``: it applies there, with the verdict and category
        the entry restricts to (if any)."""
        if not self.applies(suite, row, aliases):
            return False
        if self.verdict is not None and self.verdict != row["verdict"]:
            return False
        return self.category is None or bool(_glob(self.category).match(str(row["category"])))


@dataclass(frozen=True)
class GateConfig:
    """A validated gate config. ``implementations`` are registered names (user kernels
    registered already), in registry order; ``aliases`` maps a kernel's name to the target
    as the config wrote it (baseline entries may name either)."""

    path: Path
    name: str
    suites: tuple[str, ...]
    dtypes: tuple[str, ...]
    seed: int
    strict: bool
    budget: Budget
    implementations: tuple[str, ...]
    baseline: tuple[BaselineEntry, ...]
    fingerprint_suite: str = "discriminating"
    counterexample_examples: int = GATE_COUNTEREXAMPLE_EXAMPLES
    fail_on_skipped: bool = False
    in_process_only: bool = False  # user kernels or register hooks: workers would not see them
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def run_config(
        self, suite: str, dtype: str, implementations: Sequence[str] | None = None, jobs: int = 1
    ) -> RunConfig:
        return RunConfig(
            implementations=tuple(
                self.implementations if implementations is None else implementations
            ),
            suite=suite,
            fingerprint_suite=self.fingerprint_suite,
            dtype=dtype,
            seed=self.seed,
            jobs=1 if self.in_process_only else jobs,
            budget=self.budget,
            counterexample_examples=self.counterexample_examples,
            separation=False,
        )

    @property
    def runs(self) -> list[tuple[str, str]]:
        """(suite, dtype) of every engine run, in config order."""
        return [(s, d) for s in self.suites for d in self.dtypes]

    def folder(self, suite: str, dtype: str) -> str:
        return f"{suite}-{dtype}"

    def case_id(self, suite: str, case: str) -> str:
        """The case as reports name it: ``suite/case`` when the gate has several suites."""
        return f"{suite}/{case}" if len(self.suites) > 1 else case

    def failing(self, verdict: str) -> bool:
        return verdict in FAILING or (self.fail_on_skipped and verdict == "skipped")

    def judge_row(self, suite: str, row: Mapping[str, Any]) -> tuple[str, BaselineEntry | None]:
        """``("pass" | "skipped" | "baselined" | "new", the first baseline entry naming it)``."""
        verdict = row["verdict"]
        if not self.failing(verdict):
            return ("pass" if verdict == "pass" else "skipped"), None
        aliases = self.aliases.get(str(row["implementation"]), ())
        for entry in self.baseline:
            if entry.matches(suite, row, aliases):
                return "baselined", entry
        return "new", None


class _Reader:
    """Validation with messages naming ``file: key``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, message: str) -> GateConfigError:
        return GateConfigError(f"{self.path}: {key}: {message}")

    def keys(self, table: Any, key: str, allowed: Sequence[str]) -> Mapping[str, Any]:
        if not isinstance(table, dict):
            raise self.error(key, f"must be a table, not {_toml_type(table)}")
        for k in table:
            if k not in allowed:
                where = f"{key}.{k}" if key else k
                raise self.error(where, f"unknown key; allowed: {', '.join(allowed)}")
        return table

    def string(self, value: Any, key: str, allowed: Sequence[str] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            shown = f"; allowed: {', '.join(allowed)}" if allowed else ""
            raise self.error(key, f"{value!r} must be a non-empty string{shown}")
        if allowed is not None and value not in allowed:
            raise self.error(key, f"{value!r} is unknown; allowed: {', '.join(allowed)}")
        return value

    def strings(
        self, value: Any, key: str, allowed: Sequence[str] | None = None
    ) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            shown = f" of: {', '.join(allowed)}" if allowed else ""
            raise self.error(key, f"{value!r} must be a string or a non-empty list{shown}")
        out = tuple(
            self.string(v, f"{key}[{i}]" if not isinstance(value, str) else key, allowed)
            for i, v in enumerate(items)
        )
        if len(set(out)) != len(out):
            raise self.error(key, f"{value!r} lists a value twice")
        return out

    def integer(self, value: Any, key: str, low: int = 0, high: int = 2**63 - 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"{value!r} must be an integer in [{low}, {high}]")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"{value!r} must be true or false")
        return value

    def number(self, value: Any, key: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (0 < value < math.inf)
        ):
            raise self.error(key, f"{value!r} must be a positive number of seconds")
        return float(value)


def _toml_type(value: Any) -> str:
    return {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
    }.get(type(value), type(value).__name__)


def _catalog_names() -> list[str]:
    from adamspec.spec.catalog import entries

    return [e.name for e in entries()]


def _shown(names: Sequence[str], limit: int = 40) -> str:
    head = ", ".join(names[:limit])
    return head + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _relative_target(target: str, base: Path) -> str:
    """A ``file.py:obj`` target relative to the config's folder, made relative to the current
    directory (so report names do not depend on where the checkout is)."""
    where, sep, attr = target.rpartition(":")
    if sep and (where.endswith(".py") or "/" in where or os.sep in where):
        if not os.path.isabs(where):
            where = os.path.relpath(base / where)
        return f"{where}:{attr}"
    return target


def load_config(path: str | os.PathLike[str]) -> GateConfig:
    """Read and validate a gate config; registers its user kernels and register hooks.

    Raises :class:`GateConfigError` (one line: file, key, allowed values)."""
    from adamspec.impl.adapters import REGISTRY, load_registry
    from adamspec.impl.adapters.kernel_protocol import TargetError, load_target, register_target
    from adamspec.spec.axes import AmsGrad
    from adamspec.spec.catalog import entry

    where = Path(path)
    r = _Reader(where)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GateConfigError(f"{where}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GateConfigError(f"{where}: cannot read the config: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GateConfigError(f"{where}: invalid TOML: {exc}") from None
    r.keys(data, "", TOP_KEYS)
    gate = r.keys(data.get("gate", {}), "gate", GATE_KEYS)
    base = where.resolve().parent

    suites = r.strings(gate.get("suite", "default"), "gate.suite", tuple(SUITES))
    dtypes = r.strings(gate.get("dtypes", "float32"), "gate.dtypes", DTYPES)
    fingerprint_suite = r.string(
        gate.get("fingerprint_suite", "discriminating"), "gate.fingerprint_suite", tuple(SUITES)
    )
    seed = r.integer(gate.get("seed", 0), "gate.seed")
    strict = r.boolean(gate.get("strict", False), "gate.strict")
    fail_on_skipped = r.boolean(gate.get("fail_on_skipped", False), "gate.fail_on_skipped")
    examples = r.integer(
        gate.get("counterexample_examples", GATE_COUNTEREXAMPLE_EXAMPLES),
        "gate.counterexample_examples",
        0,
        10_000,
    )
    name = r.string(gate.get("name", "adamspec gate"), "gate.name")

    # [budget]: one ULP count per component, used for both of the engine's measures (ULPs of
    # the result and ULPs of the operands' scale), so 0 means correctly rounded.
    budget_table = r.keys(data.get("budget", {}), "budget", tuple(DEFAULT.ulp))
    ulp = {k: r.integer(v, f"budget.{k}", 0, 2**62) for k, v in budget_table.items()}
    budget = DEFAULT.with_ulps(ulp, f"gate config {where.name} [budget]") if ulp else DEFAULT

    # gate.register: callables that register extra adapters (a project's own Adapter classes)
    hooks = gate.get("register", [])
    if not isinstance(hooks, list):
        raise r.error("gate.register", f"{hooks!r} must be a list of 'module:callable' strings")
    load_registry()
    for i, hook in enumerate(hooks):
        key = f"gate.register[{i}]"
        target = _relative_target(r.string(hook, key), base)
        try:
            load_target(target)()
        except TargetError as exc:
            raise r.error(key, str(exc)) from None
        except Exception as exc:
            raise r.error(key, f"{hook!r} raised {type(exc).__name__}: {exc}") from None

    impls = data.get("implementation")
    if not isinstance(impls, list) or not impls:
        raise r.error(
            "implementation",
            "at least one [[implementation]] table is required, "
            "with name = 'glob of `adamspec run --list`' or target = "
            "'module:object' and variant = 'catalog name'",
        )
    registered = [n for n in load_registry() if not n.startswith("kernel:")]
    names: list[str] = []
    kernels: list[tuple[str, str]] = []
    aliases: dict[str, tuple[str, ...]] = {}
    for i, item in enumerate(impls):
        key = f"implementation[{i}]"
        r.keys(item, key, IMPLEMENTATION_KEYS)
        if ("name" in item) == ("target" in item):
            raise r.error(
                key,
                "give exactly one of name (a registered implementation glob) "
                "or target (a user kernel, 'module:object' or 'file.py:object')",
            )
        if "name" in item:
            for k in ("variant", "timeout_s"):
                if k in item:
                    raise r.error(
                        f"{key}.{k}",
                        "only a user kernel (target = ...) takes it; "
                        "a registered implementation has its documented variant",
                    )
            pattern = r.string(item["name"], f"{key}.name")
            regex = _glob(pattern)
            hits = [n for n in registered if regex.match(n)]
            if not hits:
                raise r.error(
                    f"{key}.name",
                    f"{pattern!r} matches no implementation; allowed: "
                    f"{_shown(registered)} (globs with * and ?)",
                )
            names += [h for h in hits if h not in names]
            continue
        written = r.string(item["target"], f"{key}.target")
        catalog = _catalog_names()
        if "variant" not in item:
            raise r.error(
                f"{key}.variant", f"a user kernel must claim a variant; allowed: {_shown(catalog)}"
            )
        variant = r.string(item["variant"], f"{key}.variant", catalog)
        timeout = r.number(item.get("timeout_s", 60.0), f"{key}.timeout_s")
        target = _relative_target(written, base)
        amsgrad = entry(variant).variant.amsgrad is not AmsGrad.OFF
        try:
            kname = register_target(target, variant, amsgrad=amsgrad, timeout_s=timeout)
        except TargetError as exc:
            raise r.error(f"{key}.target", str(exc)) from None
        if any(k == kname for k, _ in kernels):
            raise r.error(f"{key}.target", f"{written!r} is listed twice")
        info = REGISTRY[kname]
        inner = dict(info.options.get("inner", {}))
        if inner:
            inner["amsgrad"] = amsgrad
        options = {**info.options, "timeout_s": timeout, **({"inner": inner} if inner else {})}
        REGISTRY[kname] = replace(info, documented=variant, options=options)
        kernels.append((kname, variant))
        aliases[kname] = tuple(dict.fromkeys([written, target]))
        names.append(kname)
    order = list(REGISTRY)
    names.sort(key=order.index)

    baseline: list[BaselineEntry] = []
    entries_ = data.get("baseline", [])
    if not isinstance(entries_, list):
        raise r.error("baseline", "must be an array of [[baseline]] tables")
    all_cases = {s: [p.name for p in SUITES[s]] for s in suites}
    for i, item in enumerate(entries_):
        key = f"baseline[{i}]"
        r.keys(item, key, BASELINE_KEYS)
        if "reason" not in item:
            raise r.error(f"{key}.reason", "every baseline entry needs a reason (and a link)")
        if "implementation" not in item:
            raise r.error(
                f"{key}.implementation",
                f"required: a glob of this gate's implementations: {_shown(names)}",
            )
        e = BaselineEntry(
            index=i,
            implementation=r.string(item["implementation"], f"{key}.implementation"),
            case=r.string(item.get("case", "*"), f"{key}.case"),
            suite=(r.string(item["suite"], f"{key}.suite", suites) if "suite" in item else None),
            dtype=(r.string(item["dtype"], f"{key}.dtype", dtypes) if "dtype" in item else None),
            verdict=(
                r.string(item["verdict"], f"{key}.verdict", _VERDICTS)
                if "verdict" in item
                else None
            ),
            category=(
                r.string(item["category"], f"{key}.category") if "category" in item else None
            ),
            reason=r.string(item["reason"], f"{key}.reason"),
            link=(r.string(item["link"], f"{key}.link") if "link" in item else ""),
        )
        if e.verdict == "skipped" and not fail_on_skipped:
            raise r.error(
                f"{key}.verdict",
                "'skipped' only fails the gate (and so only needs a "
                "baseline) with gate.fail_on_skipped = true; allowed: discrepancy, "
                "error",
            )
        if not any(e.covers(n, aliases.get(n, ())) for n in names):
            raise r.error(
                f"{key}.implementation",
                f"{e.implementation!r} matches none of this "
                f"gate's implementations: {_shown(names)}",
            )
        in_scope = [e.suite] if e.suite else list(suites)
        cases = list(dict.fromkeys(c for s in in_scope for c in all_cases[s]))
        if not any(_glob(e.case).match(c) for c in cases):
            raise r.error(
                f"{key}.case",
                f"{e.case!r} matches no case of suite "
                f"{', '.join(in_scope)}; allowed: {_shown(cases)}",
            )
        baseline.append(e)

    return GateConfig(
        path=where,
        name=name,
        suites=suites,
        dtypes=dtypes,
        seed=seed,
        strict=strict,
        budget=budget,
        implementations=tuple(names),
        baseline=tuple(baseline),
        fingerprint_suite=fingerprint_suite,
        counterexample_examples=examples,
        fail_on_skipped=fail_on_skipped,
        in_process_only=bool(kernels or hooks),
        aliases=aliases,
    )


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
    """The gate's verdict on the engine tables of each (suite, dtype) run."""
    order = {n: i for i, n in enumerate(config.implementations)}
    outcomes: list[Outcome] = []
    rows: list[tuple[str, Mapping[str, Any]]] = []
    for suite, dtype in config.runs:
        for row in tables[(suite, dtype)].summary:
            status, entry = config.judge_row(suite, row)
            outcomes.append(Outcome(suite, row, status, entry, config.folder(suite, dtype)))
            rows.append((suite, row))
    suite_order = {s: i for i, s in enumerate(config.suites)}
    dtype_order = {d: i for i, d in enumerate(config.dtypes)}
    case_orders = {s: {p.name: i for i, p in enumerate(SUITES[s])} for s in config.suites}
    outcomes.sort(
        key=lambda o: (
            order.get(str(o.row["implementation"]), len(order)),
            suite_order[o.suite],
            case_orders[o.suite].get(str(o.row["case"]), len(case_orders[o.suite])),
            dtype_order.get(str(o.row["dtype"]), len(dtype_order)),
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


def _category(row: Mapping[str, Any]) -> str:
    """A crashed case's category describes the steps before the crash: not shown."""
    return (str(row["category"]) if row["verdict"] == "discrepancy" else "") or "—"


def gate_junit(result: GateResult) -> str:
    """JUnit XML: one ``<testcase classname=implementation name="case[dtype]">`` per summary
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
    from adamspec.reports.junit import JUnitCase, failed_row_case, xfail_case

    name = f"{config.case_id(o.suite, str(o.row['case']))}[{o.row['dtype']}]"
    if o.status == "baselined":
        assert o.entry is not None
        return xfail_case(o.row, name, o.entry.note)
    if o.status == "new":
        return failed_row_case(_linked(o), name)
    if o.status == "skipped":  # the writer escapes the detail (and makes None "")
        return JUnitCase(o.row["implementation"], name, "skipped", o.row["detail"])
    return JUnitCase(o.row["implementation"], name)


def _linked(o: Outcome) -> dict[str, Any]:
    """The row with its counterexample's path relative to the gate's output folder."""
    row = dict(o.row)
    if row.get("counterexample"):
        row["counterexample"] = f"{o.folder}/{row['counterexample']}"
    return row


def gate_markdown(result: GateResult) -> str:
    """The Markdown summary for a PR comment: verdict, counts, new discrepancies (with the
    counterexample paths), baselined ones (reason, link) and stale baseline entries."""
    from adamspec.reports.markdown import format_ulp, md_escape

    config = result.config
    c = result.counts()
    verdict = "✅ passed" if result.passed else "❌ failed"
    lines = [
        f"## {md_escape(config.name)}: {verdict}",
        "",
        f"Suites {', '.join(config.suites)} · dtypes {', '.join(config.dtypes)} · seed "
        f"{config.seed} · strict {'true' if config.strict else 'false'} · "
        f"{len(config.implementations)} implementations · config `{config.path.name}`",
        "",
        f"**{c['new']} new** · {c['baselined']} baselined · {c['stale']} stale baseline "
        f"entries · {c['pass']} passed · {c['skipped']} skipped",
        "",
    ]
    if result.new:
        lines += [
            "### New discrepancies (fail the gate)",
            "",
            "| implementation | case | dtype | verdict | category | max ULP | worst component "
            "| detail | counterexample |",
            "| --- | --- | --- | --- | --- | ---: | --- | --- | --- |",
        ]
        for o in result.new:
            row = o.row
            ce = f"`{o.folder}/{row['counterexample']}`" if row.get("counterexample") else ""
            lines.append(
                f"| {md_escape(row['implementation'])} "
                f"| {md_escape(config.case_id(o.suite, str(row['case'])))} "
                f"| {row['dtype']} | {row['verdict']} | {md_escape(_category(row))} "
                f"| {format_ulp(row['max_ulp'])} | {md_escape(row['worst_component']) or '—'} "
                f"| {md_escape(_short(row['detail']))} | {ce} |"
            )
        lines.append("")
    if result.stale:
        lines += [
            "### Stale baseline entries"
            + (" (fail the gate: strict = true)" if config.strict else " (strict = false)"),
            "",
            "These no longer reproduce: the bug was fixed (or the entry has a typo). "
            f"Remove them from `{config.path.name}`.",
            "",
            "| entry | matches | reason | link |",
            "| --- | --- | --- | --- |",
        ]
        for e in result.stale:
            lines.append(
                f"| {e.key} | {md_escape(e.describe())} | {md_escape(e.reason)} "
                f"| {md_escape(e.link)} |"
            )
        lines.append("")
    if result.baselined:
        lines += [
            "### Baselined (known discrepancies)",
            "",
            "| implementation | case | dtype | verdict | category | max ULP | reason | link |",
            "| --- | --- | --- | --- | --- | ---: | --- | --- |",
        ]
        for o in result.baselined:
            row, e = o.row, o.entry
            assert e is not None
            lines.append(
                f"| {md_escape(row['implementation'])} "
                f"| {md_escape(config.case_id(o.suite, str(row['case'])))} "
                f"| {row['dtype']} | {row['verdict']} | {md_escape(_category(row))} "
                f"| {format_ulp(row['max_ulp'])} | {md_escape(e.reason)} | {md_escape(e.link)} |"
            )
        lines.append("")
    if result.unverified:
        lines += ["### Unverified baseline entries (every case they name was skipped)", ""]
        lines += [
            f"* {e.key}: {md_escape(e.describe())}: {md_escape(e.reason)}"
            for e in result.unverified
        ]
        lines.append("")
    lines.append(
        "Full engine reports per suite and dtype: "
        + ", ".join(f"`{config.folder(s, d)}/report.md`" for s, d in config.runs)
        + "."
    )
    return "\n".join(lines) + "\n"


def gate_json(result: GateResult) -> str:
    def row(o: Outcome) -> dict[str, Any]:
        r = o.row
        return {
            "implementation": r["implementation"],
            "suite": o.suite,
            "case": r["case"],
            "dtype": r["dtype"],
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
        what = (r["category"] if r["verdict"] == "discrepancy" else "") or _short(r["detail"], 100)
        lines.append(
            f"  new {r['verdict']}: {r['implementation']} "
            f"{result.config.case_id(o.suite, str(r['case']))} [{r['dtype']}]: {what}"
        )
    for e in result.stale:
        lines.append(f"  stale baseline {e.key}: {e.describe()}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- running


def compute(
    config: RunConfig,
    progress: Callable[[str], None] | None = None,
    checkpoint: Checkpoint | None = None,
) -> Tables:
    """One engine run (a seam: tests may memoize it)."""
    from adamspec.harness.run import run

    return run(config, progress=progress, checkpoint=checkpoint)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_gate(
    config_path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] = "out-gate",
    junit: str | os.PathLike[str] | None = None,
    resume: bool = False,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Run the gate; write its reports; return 0 (passed) or 1 (failed).

    Raises :class:`GateConfigError` for a bad config."""
    from adamspec.reports.tables import atomic_write

    config = load_config(config_path)
    progress = progress or _stderr
    out_dir = Path(out)
    if jobs > 1 and config.in_process_only:
        progress("adamspec gate: user kernels / register hooks run in this process: --jobs 1")
    checkpoints = {
        run_key: Checkpoint(out_dir / CHECKPOINT_FOLDER, config.run_config(*run_key, jobs=jobs))
        for run_key in config.runs
    }
    if not resume:
        for cp in checkpoints.values():
            cp.clear()
    tables: dict[tuple[str, str], Tables] = {}
    for suite, dtype in config.runs:
        progress(f"adamspec gate: suite {suite}, {dtype}")
        run_config = config.run_config(suite, dtype, jobs=jobs)
        try:
            tables[(suite, dtype)] = compute(
                run_config, progress=progress, checkpoint=checkpoints[(suite, dtype)]
            )
        except RunUsageError as exc:  # the config was checked: this is a changed registry
            raise GateConfigError(f"{config.path}: {exc}") from None
    result = judge(config, tables)
    for (suite, dtype), t in tables.items():
        meta = {
            "command": "adamspec gate",
            "config": config.path.name,
            "gate": config.name,
            "suite": suite,
            "fingerprint_suite": config.fingerprint_suite,
            "dtype": dtype,
            "seed": config.seed,
            "budget_ulp": dict(config.budget.ulp),
            "implementations": list(config.implementations),
        }
        t.write(out_dir / config.folder(suite, dtype), meta)
    xml = gate_junit(result)
    atomic_write(out_dir / "junit.xml", xml)
    atomic_write(out_dir / "report.md", gate_markdown(result))
    atomic_write(out_dir / "gate.json", gate_json(result))
    if junit is not None:
        Path(junit).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(junit, xml)
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
]
