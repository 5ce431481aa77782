"""The gate's config (reference: ``docs/ci.md``): what it means, and how a file is read.

:func:`load_config` reads the TOML file against the schema of
:mod:`adamspec.harness.gate_schema`, then resolves what depends on the registry and on the
rest of the file: ``register`` hooks are run, implementation globs matched against the
registry, user kernels loaded and registered under the variant they claim, baseline
entries checked against the gate's suites, dtypes, precisions, implementations and cases.
Every error
is one line, ``file: key: message``, naming the key and what is allowed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adamspec.harness.budgets import DEFAULT, Budget
from adamspec.harness.gate_schema import (
    GATE_COUNTEREXAMPLE_EXAMPLES,
    NO_IMPLEMENTATION,
    BaselineTable,
    GateConfigError,
    GateDocument,
    GateTable,
    ImplementationTable,
    config_error,
    shown,
    unknown,
    validated,
)
from adamspec.harness.problems import SUITES
from adamspec.harness.run import RunConfig
from adamspec.reports.tiers import RANGE

#: Summary verdicts that fail the gate unless baselined.
FAILING = ("discrepancy", "error")


# ------------------------------------------------------------------------------- what it means


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
    dtype: str | None = None  # the run in this dtype (every role in it)
    precision: str | None = None  # the run in this precision (gate.precisions, by its name)
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
        where = (self.suite, self.dtype, self.precision, self.verdict, self.category)
        parts += [x for x in where if x]
        return " / ".join(parts)

    def covers(self, implementation: str, aliases: Iterable[str] = ()) -> bool:
        regex = _glob(self.implementation)
        return any(regex.match(n) for n in (implementation, *aliases))

    def applies(self, suite: str, row: Mapping[str, Any], aliases: Iterable[str] = ()) -> bool:
        """Whether ``row`` (a summary row of ``suite``) is where this entry applies: its
        implementation, case, suite and dtype or precision (not its verdict or category)."""
        if not self.covers(str(row["implementation"]), aliases):
            return False
        if not _glob(self.case).match(str(row["case"])):
            return False
        if self.suite is not None and self.suite != suite:
            return False
        # a run's precision is its dtype when every role is in it: dtype = "bfloat16" names
        # the bfloat16 run, not the bf16-fp32master one (whose params are bfloat16 too)
        run = row["precision"]
        return (self.dtype is None or self.dtype == run) and (
            self.precision is None or self.precision == run
        )

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
    range_fails: bool = False  # [gate] range = "fail": range cases fail like discrepancies
    size: int | None = None  # --size and --steps of `adamspec gate` (the run's problems)
    steps: int | None = None
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: gate.precisions by their names (Precision.name): runs beside the dtypes'
    precisions: tuple[str, ...] = ()

    def run_config(
        self,
        suite: str,
        precision: str,
        implementations: Sequence[str] | None = None,
        jobs: int = 1,
    ) -> RunConfig:
        """The engine run of ``suite`` in ``precision`` (a dtype or a precision's name)."""
        return RunConfig(
            implementations=tuple(
                self.implementations if implementations is None else implementations
            ),
            suite=suite,
            fingerprint_suite=self.fingerprint_suite,
            dtype=precision,
            seed=self.seed,
            jobs=jobs,  # a user kernel's or a hook's cases run here anyway (run.py)
            budget=self.budget,
            counterexample_examples=self.counterexample_examples,
            separation=False,
            size=self.size,
            steps=self.steps,
        )

    @property
    def run_precisions(self) -> tuple[str, ...]:
        """Each run's precision, in config order: the dtypes, then gate.precisions."""
        return (*self.dtypes, *self.precisions)

    @property
    def runs(self) -> list[tuple[str, str]]:
        """(suite, precision) of every engine run, in config order."""
        return [(s, p) for s in self.suites for p in self.run_precisions]

    def folder(self, suite: str, precision: str) -> str:
        """The run's report folder: ``default-float32``, ``default-bf16-fp32master`` (a
        precision written ``role=dtype,...`` with ``_`` for ``=`` and ``,``)."""
        return f"{suite}-{re.sub(r'[^A-Za-z0-9.-]+', '_', precision)}"

    def case_id(self, suite: str, case: str) -> str:
        """The case as reports name it: ``suite/case`` when the gate has several suites."""
        return f"{suite}/{case}" if len(self.suites) > 1 else case

    def failing(self, verdict: str) -> bool:
        return (
            verdict in FAILING
            or (self.fail_on_skipped and verdict == "skipped")
            or (self.range_fails and verdict == RANGE)
        )

    def judge_row(self, suite: str, row: Mapping[str, Any]) -> tuple[str, BaselineEntry | None]:
        """``("pass" | "skipped" | "baselined" | "new", the first baseline entry naming it)``."""
        verdict = row["verdict"]
        if not self.failing(verdict):
            return ("pass" if verdict in ("pass", RANGE) else "skipped"), None
        aliases = self.aliases.get(str(row["implementation"]), ())
        for entry in self.baseline:
            if entry.matches(suite, row, aliases):
                return "baselined", entry
        return "new", None


# ------------------------------------------------------------------------------- resolving


def _relative_target(target: str, base: Path) -> str:
    """A ``file.py:obj`` target relative to the config's folder, made relative to the current
    directory (so report names do not depend on where the checkout is)."""
    where, sep, attr = target.rpartition(":")
    if sep and (where.endswith(".py") or "/" in where or os.sep in where):
        if not os.path.isabs(where):
            where = os.path.relpath(base / where)
        return f"{where}:{attr}"
    return target


def _read(where: Path) -> dict[str, Any]:
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GateConfigError(f"{where}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GateConfigError(f"{where}: cannot read the config: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GateConfigError(f"{where}: invalid TOML: {exc}") from None


def _run_hooks(hooks: Sequence[str], base: Path, where: Path) -> None:
    """gate.register: callables that register extra adapters (a project's own Adapter
    classes)."""
    from adamspec.impl.adapters import load_registry
    from adamspec.impl.adapters.kernel_protocol import TargetError, load_target

    load_registry()
    for i, hook in enumerate(hooks):
        key = f"gate.register[{i}]"
        try:
            load_target(_relative_target(hook, base))()
        except TargetError as exc:
            raise config_error(where, key, str(exc)) from None
        except Exception as exc:
            raise config_error(where, key, f"{hook!r} raised {type(exc).__name__}: {exc}") from None


def _register_kernel(table: ImplementationTable, base: Path, where: Path, key: str) -> str:
    """Register a user kernel under the variant it claims; its registered name."""
    from adamspec.impl.adapters import REGISTRY
    from adamspec.impl.adapters.kernel_protocol import TargetError, register_target
    from adamspec.spec.axes import AmsGrad
    from adamspec.spec.catalog import entry

    assert table.target is not None and table.variant is not None
    amsgrad = entry(table.variant).variant.amsgrad is not AmsGrad.OFF
    target = _relative_target(table.target, base)
    try:
        name = register_target(target, table.variant, amsgrad=amsgrad, timeout_s=table.timeout_s)
    except TargetError as exc:
        raise config_error(where, f"{key}.target", str(exc)) from None
    info = REGISTRY[name]
    inner = dict(info.options.get("inner", {}))
    if inner:
        inner["amsgrad"] = amsgrad
    options = {**info.options, "timeout_s": table.timeout_s, **({"inner": inner} if inner else {})}
    REGISTRY[name] = replace(info, documented=table.variant, options=options)
    return name


def _implementations(
    items: Sequence[dict[str, Any]], base: Path, where: Path
) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """The registered names the [[implementation]] tables give, in registry order, and
    each user kernel's aliases (its target as written, and relative to here)."""
    from adamspec.impl.adapters import REGISTRY, load_registry

    if not items:
        raise config_error(where, "implementation", NO_IMPLEMENTATION)
    registered = [n for n in load_registry() if not n.startswith("kernel:")]
    names: list[str] = []
    aliases: dict[str, tuple[str, ...]] = {}
    for i, item in enumerate(items):
        key = f"implementation[{i}]"
        table = validated(ImplementationTable, item, where, ("implementation", i))
        if table.name is not None:
            hits = [n for n in registered if _glob(table.name).match(n)]
            if not hits:
                raise config_error(
                    where,
                    f"{key}.name",
                    f"{table.name!r} matches no implementation; allowed: "
                    f"{shown(registered)} (globs with * and ?)",
                )
            names += [h for h in hits if h not in names]
            continue
        name = _register_kernel(table, base, where, key)
        if name in aliases:
            raise config_error(where, f"{key}.target", f"{table.target!r} is listed twice")
        aliases[name] = tuple(dict.fromkeys([table.target, _relative_target(table.target, base)]))
        names.append(name)
    order = list(REGISTRY)
    names.sort(key=order.index)
    return names, aliases


def _baseline_entry(
    i: int,
    item: dict[str, Any],
    gate: GateTable,
    names: Sequence[str],
    aliases: Mapping[str, tuple[str, ...]],
    where: Path,
) -> BaselineEntry:
    """A [[baseline]] table, which must name this gate's suites, dtypes or precisions,
    implementations and cases."""
    dtypes, precisions = _run_precisions(gate)
    context = {
        "implementations": shown(names),
        "suites": ", ".join(gate.suite),
        "dtypes": ", ".join(dtypes) or "none",
        "precisions": ", ".join(precisions) or "none",
    }
    table = validated(BaselineTable, item, where, ("baseline", i), context)
    entry = BaselineEntry(index=i, **table.model_dump())

    def error(key: str, message: str) -> GateConfigError:
        return config_error(where, f"{entry.key}.{key}", message)

    if entry.suite is not None and entry.suite not in gate.suite:
        raise error("suite", unknown(entry.suite, gate.suite))
    if entry.dtype is not None and entry.dtype not in dtypes:
        raise error("dtype", unknown(entry.dtype, dtypes))
    if entry.precision is not None:
        if entry.dtype is not None:
            raise error("precision", "give dtype or precision, not both: each names one run")
        entry = replace(entry, precision=_precision_of_gate(entry.precision, precisions, error))
    if entry.verdict == "skipped" and not gate.fail_on_skipped:
        raise error(
            "verdict",
            "'skipped' only fails the gate (and so only needs a baseline) with "
            "gate.fail_on_skipped = true; allowed: discrepancy, error",
        )
    if entry.verdict == RANGE and gate.range != "fail":
        raise error(
            "verdict",
            "'range' only fails the gate (and so only needs a baseline) with "
            'gate.range = "fail"; allowed: discrepancy, error',
        )
    if not any(entry.covers(n, aliases.get(n, ())) for n in names):
        raise error(
            "implementation",
            f"{entry.implementation!r} matches none of this gate's implementations: {shown(names)}",
        )
    in_scope = [entry.suite] if entry.suite else list(gate.suite)
    cases = list(dict.fromkeys(p.name for s in in_scope for p in SUITES[s]))
    if not any(_glob(entry.case).match(c) for c in cases):
        raise error(
            "case",
            f"{entry.case!r} matches no case of suite {', '.join(in_scope)}; "
            f"allowed: {shown(cases)}",
        )
    return entry


def _run_precisions(gate: GateTable) -> tuple[list[str], list[str]]:
    """The gate's dtypes and its other precisions (by name), one engine run each. Without
    ``dtypes``, ``precisions`` replace the default float32 run."""
    given = "dtypes" in gate.model_fields_set or not gate.precisions
    return (list(gate.dtypes) if given else []), list(gate.precisions)


def _precision_of_gate(value: str, precisions: Sequence[str], error: Any) -> str:
    """A baseline entry's precision by its name, which must be one of the gate's."""
    from adamspec.spec.precision import PrecisionError, precision_named

    try:
        name = precision_named(value).name
    except PrecisionError as exc:
        raise error("precision", f"{exc}; this gate's: {', '.join(precisions) or 'none'}") from None
    if name not in precisions:
        raise error("precision", unknown(value, precisions or ["none (gate.precisions)"]))
    return name


def _check_runs(gate: GateTable, where: Path) -> None:
    """A precision listed as a dtype too would run twice."""
    dtypes, precisions = _run_precisions(gate)
    for name in precisions:
        if name in dtypes:
            raise config_error(
                where,
                "gate.precisions",
                f"{name!r} is in gate.dtypes too; list each run once (dtypes: {', '.join(dtypes)})",
            )


def load_config(path: str | os.PathLike[str]) -> GateConfig:
    """Read and validate a gate config; registers its user kernels and register hooks.

    Raises :class:`GateConfigError` (one line: file, key, allowed values)."""
    where = Path(path)
    document = validated(GateDocument, _read(where), where)
    gate, base = document.gate, where.resolve().parent
    _check_runs(gate, where)
    dtypes, precisions = _run_precisions(gate)
    _run_hooks(gate.hooks, base, where)
    names, aliases = _implementations(document.implementation, base, where)
    baseline = tuple(
        _baseline_entry(i, item, gate, names, aliases, where)
        for i, item in enumerate(document.baseline)
    )
    budget_table = document.budget
    ulps = {k: getattr(budget_table, k) for k in DEFAULT.ulp if k in budget_table.model_fields_set}
    return GateConfig(
        path=where,
        name=gate.name,
        suites=tuple(gate.suite),
        dtypes=tuple(dtypes),
        precisions=tuple(precisions),
        seed=gate.seed,
        strict=gate.strict,
        budget=DEFAULT.with_ulps(ulps, f"gate config {where.name} [budget]") if ulps else DEFAULT,
        implementations=tuple(names),
        baseline=baseline,
        fingerprint_suite=gate.fingerprint_suite,
        counterexample_examples=gate.counterexample_examples,
        fail_on_skipped=gate.fail_on_skipped,
        range_fails=gate.range == "fail",
        aliases=aliases,
    )
