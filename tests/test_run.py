"""The main job end to end: rows for every implementation, reports on disk, determinism, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from toy_adapters import register_toys

from adamspec.harness.run import RunConfig, RunUsageError, run, select, summary_table
from adamspec.reports import write_reports

register_toys()
ROOT = Path(__file__).resolve().parents[1]
TOYS = ("toy.none", "toy.eps_moved", "toy.raises")


@pytest.fixture(scope="module")
def toy_run():
    config = RunConfig(implementations=TOYS, suite="quick", seed=3, separation_dtypes=("float32",))
    return run(config, progress=lambda line: None)


def test_every_selected_implementation_has_summary_rows_with_verdicts(toy_run):
    by_impl = {}
    for row in toy_run.summary:
        by_impl.setdefault(row["implementation"], set()).add(row["verdict"])
    assert set(by_impl) == set(TOYS)
    assert by_impl["toy.none"] <= {"pass", "skipped"} and "pass" in by_impl["toy.none"]
    assert "discrepancy" in by_impl["toy.eps_moved"]
    assert "error" in by_impl["toy.raises"]
    eps = [r for r in toy_run.summary if r["implementation"] == "toy.eps_moved"
           and r["verdict"] == "discrepancy"]  # fmt: skip
    assert {r["category"] for r in eps} == {"epsilon placement"}
    assert {r["matched_variant"] for r in eps} <= {"paper.eps_hat", "tf.raw.ApplyAdam",
                                                   "keras.Adam", "tf_keras.Adam"}  # fmt: skip


def test_each_discrepancy_links_a_minimal_counterexample_script_that_runs(toy_run, tmp_path):
    eps = [r for r in toy_run.summary if r["implementation"] == "toy.eps_moved"
           and r["verdict"] == "discrepancy"]  # fmt: skip
    links = {r["counterexample"] for r in eps}
    # one search per configuration: tiny-near-eps (eps 1e-8) and disc-eps (eps 1e-3)
    assert {r["case"] for r in eps} == {"tiny-near-eps", "disc-eps"}
    assert len(links) == 2 and "" not in links, links
    assert all(r["counterexample"] == "" for r in toy_run.summary if r["verdict"] == "pass")
    paths = write_reports(tmp_path, toy_run.results, toy_run.summary, toy_run.fingerprints,
                          toy_run.separation, {"seed": 3}, toy_run.counterexamples)  # fmt: skip
    # report.md links the worst case's script (tiny-near-eps)
    script = tmp_path / next(r["counterexample"] for r in eps if r["case"] == "tiny-near-eps")
    assert script.exists() and f"]({script.relative_to(tmp_path)})" in paths["markdown"].read_text()
    # the script drives the toy through the adapter registry: the checkout and tests/ importable
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "param: got" in done.stdout and "DIFFERS from adamspec oracle" in done.stdout


def test_fingerprints_rank_the_documented_formula_first_for_the_correct_toy(toy_run):
    rows = [r for r in toy_run.fingerprints if r["implementation"] == "toy.none"]
    assert rows[0]["rank"] == 1 and rows[0]["within_budget"]
    assert rows[0]["variant"] == "paper.algorithm1"


def test_results_rows_cover_both_modes_and_a_crash_keeps_earlier_steps(toy_run):
    modes = {r["mode"] for r in toy_run.results}
    assert modes == {"lockstep", "free"}
    crashed = [r for r in toy_run.results if r["implementation"] == "toy.raises"
               and r["case"] == "typical" and r["mode"] == "lockstep"]  # fmt: skip
    assert {r["step"] for r in crashed} == {1, 2}


def test_reports_are_written_and_summary_is_byte_identical_for_the_same_seed(toy_run, tmp_path):
    meta = {"seed": 3}
    first = write_reports(tmp_path / "a", toy_run.results, toy_run.summary, toy_run.fingerprints,
                          toy_run.separation, meta)  # fmt: skip
    again = run(RunConfig(implementations=TOYS, suite="quick", seed=3,
                          separation_dtypes=("float32",)), progress=lambda line: None)  # fmt: skip
    second = write_reports(tmp_path / "b", again.results, again.summary, again.fingerprints,
                           again.separation, meta)  # fmt: skip
    assert first["summary"].read_bytes() == second["summary"].read_bytes()
    results = pd.read_parquet(first["results"])
    for column in ("implementation", "framework_version", "case", "dtype", "step", "component",
                   "ulp_error", "bits_error", "outcome"):  # fmt: skip
        assert column in results.columns
    assert "toy.eps_moved" in summary_table(toy_run)


def test_unknown_pattern_is_a_usage_error_naming_it():
    with pytest.raises(RunUsageError, match="nothing-like-this"):
        select(["nothing-like-this*"])
    assert select(["toy.none"]) == ["toy.none"]
    assert "keras.Adam[jax]" in select(["keras.Adam[*]"])  # brackets are literal


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adamspec.harness.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_cli_run_writes_reports_and_prints_the_summary(tmp_path):
    out = tmp_path / "out"
    done = _cli("run", "--quick", "--impl", "adamspec[paper.eps_hat]", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "adamspec[paper.eps_hat]" in done.stdout and "pass" in done.stdout
    for name in ("results.parquet", "summary.csv", "fingerprints.csv", "separation.csv",
                 "report.md", "report.html", "junit.xml", "meta.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert json.loads((out / "meta.json").read_text())["suite"] == "quick"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--impl", "nope*"], "'nope*'"),
        (["run", "--suite", "huge"], "'huge'"),
        (["run", "--jobs", "0"], "--jobs"),
        (["fingerprint", "nope"], "'nope'"),
    ],
    ids=["unknown-impl", "unknown-suite", "zero-jobs", "fingerprint-unknown"],
)
def test_cli_bad_input_is_one_line_exit_2(args, needle):
    done = _cli(*args)
    assert done.returncode == 2
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_fingerprint_json_ranks_variants():
    done = _cli("fingerprint", "adamspec[paper.eps_hat]", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["variants"][0]["variant"] == "paper.eps_hat"
    assert answer["variants"][0]["documented"] and answer["variants"][0]["within_budget"]
    assert answer["summary"].startswith("computes eps_placement=eps_hat (= paper.eps_hat")
    assert (
        answer["summary"].endswith("claimed paper.eps_hat")
        or "claimed paper.eps_hat;" in (answer["summary"])
    )


def test_a_resumed_run_reuses_finished_tasks(tmp_path, monkeypatch):
    import adamspec.harness.run as run_module

    config = RunConfig(implementations=("toy.none",), suite="quick", seed=3, separation=False,
                       counterexample_examples=0)  # fmt: skip
    checkpoint = run_module.Checkpoint(tmp_path / "ckpt", config)
    first = run(config, progress=lambda line: None, checkpoint=checkpoint)
    saved = list((tmp_path / "ckpt").glob(f"{config.key()}-*.pickle"))
    assert len(saved) == 1 + len(config.problems())  # the fingerprint and every case

    def must_not_run(*args):
        raise AssertionError(f"recomputed: {args[:2]}")

    monkeypatch.setattr(run_module, "fingerprint_task", must_not_run)
    monkeypatch.setattr(run_module, "case_task", must_not_run)
    lines: list[str] = []
    again = run(config, progress=lines.append, checkpoint=checkpoint)
    assert repr(again.summary) == repr(first.summary)  # NaN medians: compare as text
    assert repr(again.results) == repr(first.results)
    assert any(f"resumed {len(saved)} finished tasks" in line for line in lines)
    # an interrupted run resumes where it stopped: one lost case is the only work left
    saved[-1].unlink()
    monkeypatch.undo()
    again = run(config, progress=lines.append, checkpoint=checkpoint)
    assert repr(again.summary) == repr(first.summary)
    # another configuration never reads these files
    other = run_module.Checkpoint(tmp_path / "ckpt", RunConfig(implementations=("toy.none",),
                                                               seed=4))  # fmt: skip
    assert other.load(("fingerprint", "toy.none")) is None
    checkpoint.clear()
    assert not (tmp_path / "ckpt").exists()
