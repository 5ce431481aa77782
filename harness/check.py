"""``adamspec check TARGET``: a user's kernel against the variant it claims, with a verdict.

The kernel follows :mod:`adamspec.impl.adapters.kernel_protocol` (functional or
stateful-object form) and runs in a worker process with a per-step timeout. It is run on a
problem suite in lock-step and free-running against the claimed variant (a catalog name or an
axis-space formula such as ``eps_placement=eps_hat, weight_decay=decoupled_before``) or, when
none is claimed, against the formula its fingerprint ranks first; the engine's reports plus
``junit.xml`` are written, and the verdict is: conforming when every measured case is
within the ULP budget. Each discrepant configuration gets a minimal counterexample.
Without a claim nothing records one: the kernel gets the paper's default hyperparameters
(those of :data:`adamspec.spec.catalog.FORMULA_BASE`), the ``claimed`` columns stay empty and
no tie is broken in anyone's favour.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adamspec.harness.budgets import DEFAULT, Budget
from adamspec.harness.classify import INDEX_DEPENDENT
from adamspec.harness.power import power_sentence, suite_power
from adamspec.harness.run import (
    CHECKPOINT_FOLDER,
    Checkpoint,
    RunConfig,
    RunUsageError,
    Tables,
    run,
)
from adamspec.impl.adapters import REGISTRY, load_registry
from adamspec.impl.adapters.kernel_protocol import (
    STEP_TIMEOUT_S,
    TargetError,
    kernel_declaration,
    kernel_precision,
    register_target,
)
from adamspec.reports.tiers import CONFORMS, CONFORMS_EXCEPT_RANGE, RANGE, tier
from adamspec.spec.axes import AmsGrad
from adamspec.spec.catalog import FORMULA_BASE, entry
from adamspec.spec.precision import precision_named


@dataclass
class CheckResult:
    implementation: str
    variant: str
    claimed: bool
    tables: Tables
    paths: dict[str, Path]
    fingerprint: str = ""

    strict_range: bool = False  # --strict-range: range cases fail like discrepancies
    #: the smallest relative error of the update and of each stored component the suite
    #: would have caught (:mod:`adamspec.harness.power`)
    power: dict[str, float] = field(default_factory=dict)
    #: wall time in seconds: total, kernel, oracle, harness (meta.json's "wall_s")
    wall: dict[str, float] = field(default_factory=dict)
    suite: str = "default"  # the suite, with --size and --steps when given

    @property
    def measured(self) -> list[dict[str, Any]]:
        return [r for r in self.tables.summary if r["verdict"] not in ("skipped",)]

    @property
    def tier(self) -> str:
        """conforms / conforms except the dtype's range / does not conform / error / skipped
        (:func:`adamspec.reports.tiers.tier`)."""
        return tier(self.tables.summary)

    @property
    def conforms(self) -> bool:
        """Every case that ran is within budget (range cases too, unless strict_range), and
        at least one ran."""
        allowed = (CONFORMS,) if self.strict_range else (CONFORMS, CONFORMS_EXCEPT_RANGE)
        return self.tier in allowed


def uniform_budget(ulp: int) -> Budget:
    """The same ULP budget for every state component (``--budget-ulp``)."""
    try:
        return DEFAULT.with_ulps(dict.fromkeys(DEFAULT.ulp, ulp), f"--budget-ulp {ulp}")
    except ValueError:
        raise RunUsageError(f"--budget-ulp {ulp!r} must be a non-negative integer") from None


def check(
    target: str,
    variant: str | None = None,
    *,
    dtype: str | None = None,
    precision: str | None = None,
    grad_dtype: str | None = None,
    state_dtype: str | None = None,
    master_dtype: str | None = None,
    out: str | os.PathLike[str] = "out-check",
    budget: Budget = DEFAULT,
    suite: str = "default",
    seed: int = 0,
    timeout_s: float = STEP_TIMEOUT_S,
    resume: bool = False,
    oracle: str = "fast",
    strict_range: bool = False,
    size: int | None = None,
    steps: int | None = None,
    counterexample_examples: int = 100,
    scheduler: str | None = None,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> CheckResult:
    """Check ``target`` (``module:object`` or ``file.py:object``) and write the reports to
    ``out``. Raises :class:`RunUsageError` for an unknown variant,
    :class:`~adamspec.impl.adapters.kernel_protocol.TargetError` for a TARGET that cannot be
    loaded and :class:`~adamspec.spec.precision.PrecisionError` for a precision that cannot
    be (before anything runs).

    The precision is the kernel's own declaration (its ``precision`` attribute) together
    with ``dtype`` (the param's), ``precision`` (a preset or ``role=dtype,...``) and the
    roles' ``*_dtype``: a role said twice must be said alike
    (:func:`~adamspec.impl.adapters.kernel_protocol.kernel_precision`); float32 when no one
    says anything."""
    started = time.perf_counter()
    load_registry()
    if variant is not None:
        variant = entry(variant).name  # a catalog name or an axis formula (its canonical name)
    registered = variant if variant is not None else FORMULA_BASE  # defaults only, no claim
    amsgrad = entry(registered).variant.amsgrad is not AmsGrad.OFF
    name = register_target(target, registered, amsgrad=amsgrad, timeout_s=timeout_s)
    REGISTRY[name] = replace(REGISTRY[name], documented=registered)
    mix = kernel_precision(kernel_declaration(name), dtype=dtype, precision=precision,
                           grad_dtype=grad_dtype, state_dtype=state_dtype,
                           master_dtype=master_dtype)  # fmt: skip
    config = RunConfig(
        implementations=(name,),
        suite=suite,
        dtype=mix.name,
        seed=seed,
        jobs=jobs,  # the kernel steps here (its worker process); its chunks verify there
        scheduler=scheduler,
        budget=budget,
        separation=False,
        oracle=oracle,
        unclaimed=() if variant is not None else (name,),
        size=size,
        steps=steps,
        counterexample_examples=counterexample_examples,
    )
    checkpoint = Checkpoint(Path(out) / CHECKPOINT_FOLDER, config)
    if not resume:
        checkpoint.clear()
    tables = run(config, progress=progress, checkpoint=checkpoint)
    references = [r["documented_variant"] for r in tables.summary if r["steps"]]
    reference = variant or (references[0] if references else "")
    power = suite_power(tables.power, budget)
    wall = time_split(time.perf_counter() - started, tables.seconds)
    meta = {"strict_range": strict_range, "power": power, "wall_s": wall}
    paths = _write(out, tables, config, target, reference, variant or "", meta)
    checkpoint.clear()
    sentence = tables.fingerprint_text.get(name, "")
    ran = " ".join([suite, *(f"--{k} {v}" for k, v in (("size", size), ("steps", steps)) if v)])
    return CheckResult(name, reference, variant is not None, tables, paths, sentence,
                       strict_range, power, wall, ran)  # fmt: skip


def _write(
    out: str | os.PathLike[str],
    tables: Tables,
    config: RunConfig,
    target: str,
    reference: str,
    claimed: str,
    measured: dict[str, Any],
) -> dict[str, Path]:
    meta = {
        **measured,
        "command": "adamspec check",
        "target": target,
        "variant": claimed,  # "" when nothing is claimed
        "reference": reference,  # what the cases were measured against
        "variant_claimed": bool(claimed),
        "suite": config.suite,
        "size": config.size,
        "steps": config.steps,
        "dtype": precision_named(config.dtype).param,
        "precision": precision_named(config.dtype).roles_text(),
        "seed": config.seed,
        "budget_ulp": dict(config.budget.ulp),
    }
    return tables.write(out, meta)


def time_split(total: float, seconds: Mapping[str, float]) -> dict[str, float]:
    """meta.json's ``wall_s``: the total wall time, the time in the kernel (its steps and
    state transfers) and in the oracle, and the rest (the harness: problems, measuring,
    classification, counterexamples)."""
    kernel, oracle = seconds.get("kernel", 0.0), seconds.get("oracle", 0.0)
    split = {"total": total, "kernel": kernel, "oracle": oracle,
             "harness": max(0.0, total - kernel - oracle)}  # fmt: skip
    return {k: round(v, 2) for k, v in split.items()}


def verdict_text(result: CheckResult, out: str | os.PathLike[str]) -> str:
    """What ``adamspec check`` prints: the verdict, the failing cases, the counterexample."""
    rows = result.tables.summary
    lines = []
    reference = result.variant if result.claimed else f"{result.variant} (fingerprint; no claim)"
    if result.fingerprint:
        lines.append(f"fingerprint: {result.fingerprint}")
    elif not result.claimed:  # no step ran: no fingerprint, the variant is a placeholder
        reference = "any variant (none claimed, and no step ran to fingerprint it)"
    passed = sum(r["verdict"] == "pass" for r in rows)
    ranged = [r for r in rows if r["verdict"] == RANGE]
    within = f"{passed}/{len(rows)} cases within budget"
    if result.conforms and ranged:
        lines.append(
            f"CONFORMS to {reference} except the dtype's range: {within}, {len(ranged)} off "
            "only where the dtype cannot hold the exact values (--strict-range fails them)"
        )
    elif result.conforms:
        lines.append(f"CONFORMS to {reference}: {within}")
    elif not result.measured:
        lines.append(f"NOT CHECKED against {reference}: every case was skipped")
    else:
        strict = " (--strict-range)" if result.tier == CONFORMS_EXCEPT_RANGE else ""
        lines.append(f"DOES NOT CONFORM to {reference}{strict}: {within}")
    for r in ranged:  # what overflowed or flushed, in full: it is the whole finding
        lines.append(f"  range: {r['case']}: {r['detail']}")
    shortened = False
    for r in rows:
        if r["verdict"] in ("pass", RANGE):
            continue
        ulp = "NaN/inf" if r["max_ulp"] == -1 else f"{r['max_ulp']} ULP"
        what = r["category"] or ""
        detail = r["detail"] if len(r["detail"]) <= _SHOWN else r["detail"][: _SHOWN - 1] + "…"
        shortened |= detail != r["detail"]
        lines.append(
            f"  {r['case']:<24} {r['verdict']:<11} {ulp:>12} {r['worst_component']:<6} "
            f"{what}{' — ' if what and detail else ''}{detail}"
        )
        if r.get("localization") and r["category"] != INDEX_DEPENDENT:  # the detail says it
            lines.append(f"  {'':<24} where: {r['localization'][:200]}")
        if r.get("kernel_output"):  # what the kernel printed (issue 15 item 6)
            lines.append(f"  {'':<24} the kernel printed: {r['kernel_output'][:200]}")
    if shortened:
        lines.append(
            f"  (… shortened: the full text is the detail column of {Path(out)}/summary.csv)"
        )
    for path, text in sorted(result.tables.counterexamples.items()):
        lines.append(f"minimal counterexample ({Path(out) / path}):")
        lines += ["  " + line for line in _comment_head(text)]
    if result.power:
        lines.append(f"power of this pass: {power_sentence(result.power)} (suite {result.suite})")
    if result.wall:
        w = result.wall
        lines.append(
            f"wall time {w['total']:.1f} s: kernel {w['kernel']:.1f} s, oracle "
            f"{w['oracle']:.1f} s, harness {w['harness']:.1f} s"
        )
    lines.append(f"reports: {Path(out)}/ (report.md, report.html, junit.xml, summary.csv, ...)")
    return "\n".join(lines)


#: Characters of a case's detail the console shows (summary.csv has all of it).
_SHOWN = 160


def _comment_head(script: str) -> list[str]:
    """The leading comment block of a counterexample script (what it shows)."""
    head = []
    for line in script.splitlines():
        if not line.startswith(("#", "//")):
            break
        head.append(line)
    return head


__all__ = ["CheckResult", "TargetError", "check", "uniform_budget", "verdict_text"]
