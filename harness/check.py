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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from adamspec.harness.budgets import DEFAULT, Budget
from adamspec.harness.run import (
    CHECKPOINT_FOLDER,
    Checkpoint,
    RunConfig,
    RunUsageError,
    Tables,
    run,
)
from adamspec.impl.adapters import REGISTRY, load_registry
from adamspec.impl.adapters.kernel_protocol import STEP_TIMEOUT_S, TargetError, register_target
from adamspec.spec.axes import AmsGrad
from adamspec.spec.catalog import FORMULA_BASE, entry


@dataclass
class CheckResult:
    implementation: str
    variant: str
    claimed: bool
    tables: Tables
    paths: dict[str, Path]
    fingerprint: str = ""

    @property
    def measured(self) -> list[dict[str, Any]]:
        return [r for r in self.tables.summary if r["verdict"] not in ("skipped",)]

    @property
    def conforms(self) -> bool:
        """Every case that ran is within budget, and at least one ran."""
        rows = self.measured
        return bool(rows) and all(r["verdict"] == "pass" for r in rows)


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
    dtype: str = "float32",
    out: str | os.PathLike[str] = "out-check",
    budget: Budget = DEFAULT,
    suite: str = "default",
    seed: int = 0,
    timeout_s: float = STEP_TIMEOUT_S,
    resume: bool = False,
    oracle: str = "fast",
    progress: Callable[[str], None] | None = None,
) -> CheckResult:
    """Check ``target`` (``module:object`` or ``file.py:object``) and write the reports to
    ``out``. Raises :class:`RunUsageError` for an unknown variant and
    :class:`~adamspec.impl.adapters.kernel_protocol.TargetError` for a TARGET that cannot be
    loaded."""
    load_registry()
    if variant is not None:
        variant = entry(variant).name  # a catalog name or an axis formula (its canonical name)
    registered = variant if variant is not None else FORMULA_BASE  # defaults only, no claim
    amsgrad = entry(registered).variant.amsgrad is not AmsGrad.OFF
    name = register_target(target, registered, amsgrad=amsgrad, timeout_s=timeout_s)
    REGISTRY[name] = replace(REGISTRY[name], documented=registered)
    config = RunConfig(
        implementations=(name,),
        suite=suite,
        dtype=dtype,
        seed=seed,
        jobs=1,  # the kernel runs in its own worker process already
        budget=budget,
        separation=False,
        oracle=oracle,
        unclaimed=() if variant is not None else (name,),
    )
    checkpoint = Checkpoint(Path(out) / CHECKPOINT_FOLDER, config)
    if not resume:
        checkpoint.clear()
    tables = run(config, progress=progress, checkpoint=checkpoint)
    references = [r["documented_variant"] for r in tables.summary if r["steps"]]
    reference = variant or (references[0] if references else "")
    paths = _write(out, tables, config, target, reference, variant or "")
    checkpoint.clear()
    sentence = tables.fingerprint_text.get(name, "")
    return CheckResult(name, reference, variant is not None, tables, paths, sentence)


def _write(
    out: str | os.PathLike[str],
    tables: Tables,
    config: RunConfig,
    target: str,
    reference: str,
    claimed: str,
) -> dict[str, Path]:
    meta = {
        "command": "adamspec check",
        "target": target,
        "variant": claimed,  # "" when nothing is claimed
        "reference": reference,  # what the cases were measured against
        "variant_claimed": bool(claimed),
        "suite": config.suite,
        "dtype": config.dtype,
        "seed": config.seed,
        "budget_ulp": dict(config.budget.ulp),
    }
    return tables.write(out, meta)


def verdict_text(result: CheckResult, out: str | os.PathLike[str]) -> str:
    """What ``adamspec check`` prints: the verdict, the failing cases, the counterexample."""
    rows = result.tables.summary
    lines = []
    reference = result.variant if result.claimed else f"{result.variant} (fingerprint; no claim)"
    if result.fingerprint:
        lines.append(f"fingerprint: {result.fingerprint}")
    passed = sum(r["verdict"] == "pass" for r in rows)
    if result.conforms:
        lines.append(f"CONFORMS to {reference}: {passed}/{len(rows)} cases within budget")
    elif not result.measured:
        lines.append(f"NOT CHECKED against {reference}: every case was skipped")
    else:
        lines.append(f"DOES NOT CONFORM to {reference}: {passed}/{len(rows)} cases within budget")
    for r in rows:
        if r["verdict"] in ("pass",):
            continue
        ulp = "NaN/inf" if r["max_ulp"] == -1 else f"{r['max_ulp']} ULP"
        what = r["category"] or ""
        detail = r["detail"][:160]
        lines.append(
            f"  {r['case']:<24} {r['verdict']:<11} {ulp:>12} {r['worst_component']:<6} "
            f"{what}{' — ' if what and detail else ''}{detail}"
        )
    for path, text in sorted(result.tables.counterexamples.items()):
        lines.append(f"minimal counterexample ({Path(out) / path}):")
        lines += ["  " + line for line in _comment_head(text)]
    lines.append(f"reports: {Path(out)}/ (report.md, report.html, junit.xml, summary.csv, ...)")
    return "\n".join(lines)


def _comment_head(script: str) -> list[str]:
    """The leading comment block of a counterexample script (what it shows)."""
    head = []
    for line in script.splitlines():
        if not line.startswith(("#", "//")):
            break
        head.append(line)
    return head


__all__ = ["CheckResult", "TargetError", "check", "uniform_budget", "verdict_text"]
