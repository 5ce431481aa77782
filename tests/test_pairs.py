"""Compiled implementations beside their eager counterparts (harness/pairs.py): the pair
task of a run, its ``pairs`` table, and what the first screen says of it; and the first
screen's finding on implementations that compute Adam without bias correction (MLX's
default), read from the records.

The optax pair (``jax.jit`` vs the same transformation run eagerly) is the cheap real pair
of the fast suite; torch.compile's (inductor's first compile costs seconds) is slow.
"""

from __future__ import annotations

import pandas as pd
import pytest
from adapter_helpers import assert_within
from test_compiled import OPTAX_PAIR, TORCH_PAIR

import adamspec.harness.run as run_module
from adamspec.harness.pairs import (
    PAIR_PROBLEMS,
    PAIR_STEPS,
    diverging_cases,
    fingerprint_formula,
    pair_problems,
    pair_verdict,
)
from adamspec.harness.problems import suite
from adamspec.harness.run import Checkpoint, RunConfig, implementation_tasks, run
from adamspec.impl.adapters import REGISTRY, load_registry
from adamspec.reports import read_tables, summary_markdown, write_reports
from adamspec.reports.findings import key_findings, pair_findings
from adamspec.reports.html import render_html
from adamspec.reports.schema import FINGERPRINT_COLUMNS, PAIR_COLUMNS, SUMMARY_COLUMNS
from adamspec.reports.tables import frame, sort_table

OPTAX = ("optax.adam", "optax.adam(jit=False)")  # compiled, eager
TORCH = ("torch.compile(torch.Adam(foreach=False))", "torch.Adam(foreach=False)")
PAIR_CONFIG = {"suite": "quick", "counterexample_examples": 0, "separation": False}


@pytest.fixture(scope="module")
def optax_run(tmp_path_factory):
    config = RunConfig(implementations=OPTAX, **PAIR_CONFIG)
    checkpoint = Checkpoint(tmp_path_factory.mktemp("ckpt"), config)
    return config, checkpoint, run(config, progress=lambda line: None, checkpoint=checkpoint)


def _best(fingerprints: list[dict], name: str) -> list[dict]:
    return [r for r in fingerprints if r["implementation"] == name]


def _worst(rows: list[dict]) -> dict[str, int]:
    return {
        c: max(r["max_ulp"] for r in rows if r["component"] == c)
        for c in {r["component"] for r in rows}
    }


# ------------------------------------------------------------------ the task graph


def test_a_pair_task_exactly_when_the_counterpart_runs_too_after_both_fingerprints():
    load_registry()
    config = RunConfig(implementations=OPTAX)
    alone = implementation_tasks(REGISTRY[OPTAX[0]], config, 2, running=OPTAX[:1])
    assert not [t for t in alone if t.key[0] == "pair"]
    both = implementation_tasks(REGISTRY[OPTAX[0]], config, 2, running=OPTAX)
    (pair,) = [t for t in both if t.key[0] == "pair"]
    assert pair.key == ("pair", OPTAX[0])
    # both fingerprints, then both implementations' cases (where the run found them apart)
    assert pair.after == (("fingerprint", OPTAX[0]), ("fingerprint", OPTAX[1]),
                          ("case", OPTAX[0], 0), ("case", OPTAX[0], 1),
                          ("case", OPTAX[1], 0), ("case", OPTAX[1], 1))  # fmt: skip
    # an eager implementation has no pair of its own
    eager = implementation_tasks(REGISTRY[OPTAX[1]], config, 2, running=OPTAX)
    assert not [t for t in eager if t.key[0] == "pair"]


def test_pair_verdict_reads_formulas_the_catalog_says_are_one():
    assert pair_verdict("optax.adam", "optax.adam") == "same formula"
    assert pair_verdict("mlx.Adam", "mlx.Adam[bias_correction]") == "not the same formula"
    assert pair_verdict("", "optax.adam") == "formula unknown"
    # the run's own cases outrank the fingerprint suite, which may not separate them
    assert pair_verdict("torch.Adam", "torch.Adam", "mlp (hyperparameter representation, "
                        "1639 ULP)") == "not the same formula"  # fmt: skip


def test_diverging_cases_are_the_compiled_ones_discrepancies_where_eager_conforms():
    def row(case, verdict, category="", ulp=0):
        return {"case": case, "verdict": verdict, "category": category, "max_ulp": ulp}

    ours = [
        row("typical", "pass"),
        row("mlp", "discrepancy", "hyperparameter representation", 1639),
        row("huge", "discrepancy", "format range", 9),
    ]
    theirs = [row("typical", "pass"), row("mlp", "pass"), row("huge", "discrepancy")]
    assert diverging_cases(ours, theirs) == "mlp (hyperparameter representation, 1639 ULP)"
    assert diverging_cases(ours[:1], theirs[:1]) == ""
    rows = [
        {"rank": 1, "variant": "torch.Adam", "within_budget": False},
        {"rank": 2, "variant": "optax.adam", "within_budget": True},
    ]
    assert fingerprint_formula(rows) == ""  # the best match is over budget: no formula
    assert fingerprint_formula([{**rows[0], "within_budget": True}]) == "torch.Adam"


# ------------------------------------------------------------------ a real pair


@pytest.mark.needs("optax", "jax")
def test_run_measures_jitted_optax_beside_eager_optax(optax_run):
    _, _, tables = optax_run
    rows = tables.pairs
    assert {(r["implementation"], r["counterpart"]) for r in rows} == {OPTAX}
    problems = pair_problems(suite("quick"))
    assert len(problems) == PAIR_PROBLEMS
    assert {r["case"] for r in rows} == {p.name for p in problems}
    assert {r["steps"] for r in rows} == {PAIR_STEPS}
    # each formula is the one the run's own fingerprint ranks first, not a second fingerprint
    for name, column in zip(OPTAX, ("implementation_formula", "counterpart_formula"), strict=True):
        assert {r[column] for r in rows} == {fingerprint_formula(_best(tables.fingerprints, name))}
    assert {r["implementation_formula"] for r in rows} == {"optax.adam"}
    assert {r["verdict"] for r in rows} == {"same formula"}
    worst = _worst(rows)
    # measured: jax.jit fuses m's update into fused multiply-adds, m up to 7 ULP from the
    # eager step's per step, v 1, the parameter 0 (tests/test_compiled.py's budget for the
    # pair from its own start); not bit for bit, so the measurement sees the compiler
    assert_within(worst, OPTAX_PAIR["lock"], "optax pair, lock-step")
    assert worst["m"] > 0
    assert all(0 <= r["first_step_ulp"] <= r["max_ulp"] for r in rows)


@pytest.mark.needs("optax", "jax")
def test_a_resumed_run_reuses_the_pair_task(optax_run, monkeypatch):
    config, checkpoint, first = optax_run

    def must_not_run(*args):
        raise AssertionError(f"recomputed: {args[:2]}")

    for task in ("fingerprint_task", "case_task", "pair_task"):
        monkeypatch.setattr(run_module, task, must_not_run)
    again = run(config, progress=lambda line: None, checkpoint=checkpoint)
    assert again.pairs == first.pairs


@pytest.mark.needs("optax", "jax")
def test_the_pairs_table_is_written_read_back_and_on_the_first_screen(optax_run, tmp_path):
    _, _, tables = optax_run
    paths = tables.write(tmp_path, {"seed": 0})
    back = read_tables(tmp_path)["pairs"]
    pd.testing.assert_frame_equal(back, sort_table(frame(tables.pairs, PAIR_COLUMNS), "pairs"))
    assert paths["pairs"].name == "pairs.csv"
    markdown = paths["markdown"].read_text()
    line = "optax.adam vs optax.adam(jit=False): same formula (optax.adam), rounding only, ≤ "
    assert line in markdown and line in paths["html"].read_text()
    assert markdown.index("**Compiled vs eager**") > markdown.index("**Findings:")


def test_without_pairs_no_pairs_file_and_no_block(tmp_path):
    summary = frame([_summary_row("optax.adam", "optax.adam")], SUMMARY_COLUMNS)
    paths = write_reports(tmp_path, [], summary, [], [], {"seed": 0})
    assert "pairs" not in paths and not (tmp_path / "pairs.csv").exists()
    assert read_tables(tmp_path)["pairs"].empty
    assert "Compiled vs eager" not in paths["markdown"].read_text()
    assert "Compiled vs eager" not in paths["html"].read_text()


@pytest.mark.slow
@pytest.mark.needs("torch")
def test_run_measures_torch_compile_beside_eager_torch():
    """torch.compile keeps the step count a float32 tensor (tests/test_compiled.py); on the
    suite's open-loop problems that is within 1 ULP of the parameter per step."""
    tables = run(RunConfig(implementations=TORCH, **PAIR_CONFIG), progress=lambda line: None)
    rows = tables.pairs
    assert {(r["implementation"], r["counterpart"]) for r in rows} == {TORCH}
    formulas = [fingerprint_formula(_best(tables.fingerprints, name)) for name in TORCH]
    assert {r["verdict"] for r in rows} == {pair_verdict(*formulas)}
    assert_within(_worst(rows), TORCH_PAIR["lock"], "torch.compile pair, lock-step")


# ------------------------------------------------------------------ the first screen


def _pair_row(component: str, ulp: int | None, **kw) -> dict:
    row = {
        "implementation": "torch.compile(torch.Adam)",
        "counterpart": "torch.Adam",
        "case": "typical",
        "component": component,
        "steps": 20,
        "first_step_ulp": ulp,
        "max_ulp": ulp,
        "implementation_formula": "torch.Adam",
        "counterpart_formula": "torch.Adam",
        "verdict": "same formula",
        "diverging_cases": "",
        "detail": "",
    }
    return {**row, **kw}


@pytest.mark.parametrize(
    ("rows", "text"),
    [
        pytest.param(
            [_pair_row("m", 33), _pair_row("param", 1), _pair_row("v", 1, case="huge")],
            "torch.compile(torch.Adam) vs torch.Adam: same formula (torch.Adam), rounding "
            "only, ≤ 33 ULP (m), lock-step over 2 cases × 20 steps",
            id="same-formula",
        ),
        pytest.param(
            [_pair_row("m", 0), _pair_row("param", 0)],
            "torch.compile(torch.Adam) vs torch.Adam: same formula (torch.Adam), bit for bit "
            "(0 ULP), lock-step over 1 cases × 20 steps",
            id="bit-for-bit",
        ),
        pytest.param(
            [
                _pair_row(
                    c,
                    u,
                    implementation_formula="mlx.Adam[bias_correction]",
                    counterpart_formula="mlx.Adam",
                    verdict="not the same formula",
                )
                for c, u in (("m", 0), ("param", 1632))
            ],
            "torch.compile(torch.Adam) vs torch.Adam: not the same formula: compiled computes "
            "mlx.Adam[bias_correction], eager mlx.Adam (bias_correction_m power vs none; "
            "bias_correction_v power vs none); max 1632 ULP (param), lock-step over 1 cases "
            "× 20 steps",
            id="not-the-same-formula",
        ),
        pytest.param(
            [
                _pair_row("v", -1, implementation_formula="", verdict="formula unknown"),
                _pair_row("m", 5, implementation_formula="", verdict="formula unknown"),
            ],
            "torch.compile(torch.Adam) vs torch.Adam: formula unknown (compiled matches no "
            "catalog formula within budget, eager matches torch.Adam); max NaN/inf (v), "
            "lock-step over 1 cases × 20 steps",
            id="unknown-and-nan",
        ),
        pytest.param(
            [
                _pair_row(
                    c,
                    u,
                    verdict="not the same formula",
                    diverging_cases="mlp (hyperparameter representation, 1639 ULP)",
                )
                for c, u in (("m", 4), ("param", 1))
            ],
            "torch.compile(torch.Adam) vs torch.Adam: not the same formula: the compiled one "
            "is off torch.Adam on mlp (hyperparameter representation, 1639 ULP) where the "
            "eager one conforms; lock-step max 4 ULP (m), lock-step over 1 cases × 20 steps",
            id="apart-in-the-run",
        ),
        pytest.param(
            [_pair_row("", None, detail="skipped: no compiler")],
            "torch.compile(torch.Adam) vs torch.Adam: not measured (skipped: no compiler)",
            id="not-measured",
        ),
    ],
)
def test_one_line_per_pair(rows, text):
    (line,) = pair_findings(frame(rows, PAIR_COLUMNS))
    assert line.text == text


def _summary_row(impl: str, documented: str, verdict: str = "pass") -> dict:
    row = dict.fromkeys(SUMMARY_COLUMNS, "")
    numbers = {
        "steps": 10,
        "max_ulp": 1,
        "median_ulp": 0.0,
        "max_free_ulp": 1,
        "oracle_fallback_rate": 0.0,
        "first_failing_index": -1,
        "failing_coordinates": 0,
    }
    return {
        **row,
        **numbers,
        "implementation": impl,
        "case": "typical",
        "verdict": verdict,
        "documented_variant": documented,
        "matched_variant": documented,
        "category": "rounding only",
    }


def _fingerprint_row(impl: str, variant: str, within: bool = True) -> dict:
    return {
        "implementation": impl,
        "dtype": "float32",
        "precision": "float32",
        "variant": variant,
        "rank": 1,
        "max_ulp": 3,
        "param_max_ulp": 1,
        "cases": 4,
        "documented": True,
        "within_budget": within,
        "formula": variant,
        "within_cases": 4 if within else 3,
        "failing_cases": "" if within else "typical",
    }


MLX_RUN = {
    "mlx.Adam": "mlx.Adam",
    "mlx.AdamW": "mlx.AdamW",
    "mlx.Adam(bias_correction=True)": "mlx.Adam[bias_correction]",
    "torch.Adam": "torch.Adam",
}


def test_adam_without_bias_correction_is_the_first_finding():
    summary = [_summary_row(impl, doc) for impl, doc in MLX_RUN.items()]
    summary.append({**_summary_row("torch.Adam", "torch.Adam", "discrepancy"), "case": "huge"})
    fingerprints = [_fingerprint_row(impl, doc) for impl, doc in MLX_RUN.items()]
    found = key_findings(frame(summary, SUMMARY_COLUMNS), frame(fingerprints, FINGERPRINT_COLUMNS))
    assert found[0].text == (
        "mlx.Adam, mlx.AdamW compute Adam without bias correction of m and v (c = 1: m and v "
        "enter the step undivided by 1 - beta^t), as documented: early steps differ from "
        "bias-corrected Adam's"
    )
    assert not any("mlx.Adam(bias_correction=True)" in f.text for f in found)
    assert found[1].text.startswith("torch.Adam: does not conform on huge")
    page = render_html(
        {
            "summary": frame(summary, SUMMARY_COLUMNS),
            "fingerprints": frame(fingerprints, FINGERPRINT_COLUMNS),
        },
        {},
    )
    assert page.index("mlx.Adam, mlx.AdamW compute Adam without") < page.index("torch.Adam: does")


def test_no_bias_correction_finding_needs_the_fingerprint_too():
    """Documented without bias correction but fingerprinted as nothing within budget (or
    not fingerprinted): the records do not say what it computes, so no such line."""
    summary = frame([_summary_row("mlx.Adam", "mlx.Adam")], SUMMARY_COLUMNS)
    over = frame([_fingerprint_row("mlx.Adam", "mlx.Adam", within=False)], FINGERPRINT_COLUMNS)
    markdown = summary_markdown(summary, over, {})
    assert "without bias correction" not in markdown
    none = frame([], FINGERPRINT_COLUMNS)
    assert not [f for f in key_findings(summary, none) if "bias correction" in f.text]
