"""``adamspec diff``: divergence of two implementations and what it comes from."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from toy_adapters import register_toys

from adamspec.harness.cli import main
from adamspec.harness.diff import (
    DiffUsageError,
    diff,
    distance,
    formula_share,
    gap_closed,
    problems_named,
    resolve,
    switches,
)
from adamspec.reports.diff import diff_frame, diff_html, findings, percent, read_diff_meta
from adamspec.spec.catalog import entry

register_toys()

QUIET = {"progress": lambda line: None}


def last_step(result) -> dict:
    """(problem) -> {(measure, subject): value} at the problem's last step."""
    df = diff_frame(result.rows)
    out = {}
    for name, rows in df.groupby("problem"):
        last = rows[rows["step"] == rows["step"].max()]
        out[name] = {(r.measure, r.subject): r.value for r in last.itertuples(index=False)}
    return out


@pytest.fixture(scope="module")
def toy_diff():
    # toy.eps_moved is Adam with eps added to sqrt(v) before the bias correction: one axis.
    return diff("toy.none", "toy.eps_moved", ["tiny-near-eps", "quadratic"], 30, **QUIET)


def test_two_toys_that_differ_in_one_axis_attribute_the_divergence_to_it(toy_diff):
    meta = toy_diff.meta()
    assert (meta["a"]["formula"], meta["b"]["formula"]) == ("paper.algorithm1", "paper.eps_hat")
    assert meta["formula_axes"] == [{"label": "epsilon placement", "a": "algorithm_1",
                                     "b": "eps_hat"}]  # fmt: skip
    tiny = last_step(toy_diff)["tiny-near-eps"]
    # |g| ~ eps: the two formulas are far apart (thousands of ULP), and switching eps
    # placement alone turns A's correctly rounded run into B's, bit for bit.
    assert tiny[("max_ulp", "param")] > 1000
    assert tiny[("gap_closed", "epsilon placement")] == 1.0
    assert tiny[("explained", "epsilon placement")] > 0.99
    found = {f.problem: f for f in findings(diff_frame(toy_diff.rows), meta)}
    assert found["tiny-near-eps"].headline(meta).startswith("epsilon placement explains")


def test_a_problem_where_the_axis_changes_nothing_says_so(toy_diff):
    # On the quadratic (|g| >> eps) the eps placement stays below float32's rounding:
    # identical params, nothing to attribute.
    quad = last_step(toy_diff)["quadratic"]
    assert quad[("relative_distance", "A vs B")] == 0.0
    found = {f.problem: f for f in findings(diff_frame(toy_diff.rows), toy_diff.meta())}
    assert found["quadratic"].headline(toy_diff.meta()).startswith("params bit-identical")


@pytest.mark.needs("torch")
def test_torch_foreach_against_fused_is_rounding_only():
    result = diff("torch.Adam(foreach=True)", "torch.Adam(fused=True)", ["mlp"], 40, **QUIET)
    meta = result.meta()
    assert meta["a"]["formula"] == meta["b"]["formula"] == "torch.Adam"
    assert meta["formula_axes"] == [] and meta["problems"][0]["switches"] == []
    df = diff_frame(result.rows)
    gaps = df[df["measure"] == "formula_gap"]["value"]
    assert len(gaps) == 40 and (gaps == 0).all()
    # the two kernels do round differently on the MLP (measured: ~10 ULP in params)
    assert df[(df["measure"] == "max_ulp") & (df["subject"] == "param")]["value"].max() > 0
    found = findings(df, meta)[0]
    assert found.headline(meta).startswith("rounding only")
    assert "both compute torch.Adam" in found.headline(meta)


def test_switches_list_every_axis_and_hyperparameter_that_differs():
    torch_adam, keras_adam = entry("torch.Adam"), entry("keras.Adam")
    found = switches(torch_adam.variant, keras_adam.variant, torch_adam.hyper(),
                     keras_adam.hyper())  # fmt: skip
    by_key = {s.key: s for s in found}
    assert set(by_key) == {"eps_placement", "weight_decay", "duplicates", "hyper_precision",
                           "hyper.eps"}  # fmt: skip
    assert (by_key["hyper.eps"].a_value, by_key["hyper.eps"].b_value) == ("1e-08", "1e-07")
    assert by_key["eps_placement"].variant == torch_adam.variant.replace(eps_placement="eps_hat")
    # RAdam's family needs eps-hat: switching the family alone is not a formula
    radam = switches(torch_adam.variant, entry("torch.RAdam").variant, torch_adam.hyper(),
                     torch_adam.hyper())  # fmt: skip
    family = next(s for s in radam if s.key == "family")
    assert family.variant is None and "eps_hat" in family.reason


def test_distance_and_shares():
    assert distance([np.array([3.0, 4.0])], [np.zeros(2)]) == 1.0
    assert distance([np.array([1.0, 1.0])], [np.array([1.0, 3.0])]) == pytest.approx(
        2 / math.sqrt(10)
    )
    assert distance([np.zeros(2)], [np.zeros(2)]) == 0.0
    assert math.isnan(distance([np.array([np.nan])], [np.array([1.0])]))
    assert formula_share(1.0, 4.0) == 0.25 and formula_share(5.0, 4.0) == 1.0
    assert math.isnan(formula_share(1.0, 0.0))
    assert gap_closed(0.25, 1.0) == 0.75 and math.isnan(gap_closed(0.5, 0.0))


@pytest.mark.parametrize(
    ("share", "text"),
    [(0.9996, "99.96%"), (0.99999, "> 99.99%"), (1.0, "100.0%"), (0.0002, "< 0.1%"),
     (0.0, "0.0%"), (-0.25, "−25.0%"), (math.nan, "—")],
)  # fmt: skip
def test_percent_never_rounds_to_a_claim_it_does_not_make(share, text):
    assert percent(share) == text


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["torch.adam", "toy.none"], r"A='torch.adam' is not a registered implementation.*"
                                     r"closest: torch\.Adam\(foreach=False\)"),
        (["toy.none", "nope.Adam"], r"B='nope.Adam' is not a registered implementation"),
        (["toy.none", "no_such_module:Thing"], r"B='no_such_module:Thing': TARGET"),
        (["toy.none", "toy.none", "--problem", "nope"], r"--problem='nope' is unknown; allowed: "
                                                        r"typical, tiny-near-eps"),
        (["toy.none", "toy.none", "--steps", "0"], r"--steps=0 must be a positive integer"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    try:
        code = main(["diff", *args, "--out", str(tmp_path / "out")])
    except SystemExit as exc:  # argparse's own errors (--steps 0)
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "out").exists()  # nothing written before the arguments are good


def test_api_rejects_bad_steps_and_names():
    with pytest.raises(DiffUsageError, match="--steps=0"):
        problems_named(["typical"], 0)
    with pytest.raises(DiffUsageError, match="A='x'"):
        resolve("x", "A")


def test_cli_writes_the_three_reports_and_prints_the_answer(capsys, tmp_path):
    out = tmp_path / "diff"
    code = main(["diff", "toy.none", "toy.eps_moved", "--problem", "tiny-near-eps", "--steps",
                 "8", "--out", str(out), "--progress", "plain"])  # fmt: skip
    printed, _ = capsys.readouterr()
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"diff.md", "diff.html", "diff.parquet",
                                                "adamspec.log"}  # fmt: skip
    assert "epsilon placement explains" in printed
    df = pd.read_parquet(out / "diff.parquet")
    assert set(df["problem"]) == {"tiny-near-eps"} and df["step"].max() == 8
    meta = read_diff_meta(out / "diff.parquet")
    assert meta["a"]["implementation"] == "toy.none" and meta["problems"][0]["steps"] == 8
    md = (out / "diff.md").read_text()
    first_item = next(line for line in md.splitlines() if line.startswith("- **"))
    assert "epsilon placement explains" in first_item
    page = (out / "diff.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # attribution, divergence (no loss: open)
    assert "<script" not in page


def test_reports_render_a_problem_where_a_and_b_never_differ(toy_diff):
    # the quadratic's params are identical at every step: nothing to draw on a log axis
    quadratic_only = [r for r in toy_diff.rows if r["problem"] == "quadratic"]
    meta = {**toy_diff.meta(), "problems": [p for p in toy_diff.meta()["problems"]
                                            if p["name"] == "quadratic"]}  # fmt: skip
    page = diff_html(diff_frame(quadratic_only), meta)
    assert page.count("data:image/png;base64,") == 2  # divergence and loss; no attribution
    assert "params bit-identical at step 30" in page


def test_the_cli_defaults_are_the_harness_defaults():
    from adamspec.harness import cli
    from adamspec.harness.diff import DEFAULT_PROBLEMS, DEFAULT_STEPS

    assert cli._DIFF_DEFAULTS == (" ".join(DEFAULT_PROBLEMS), DEFAULT_STEPS)
