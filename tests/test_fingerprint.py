"""Fingerprints in axis space: real third-party Adams and planted bugs come out as the formula
they compute, stated as axes, with honest ties and no placeholder claim.

The third-party kernels are in tests/kernels/third_party.py (scikit-learn's AdamOptimizer,
jax.example_libraries' adam, Chainer's Adam transcribed, a line-for-line copy of torch's
AdamW); the planted bugs in tests/kernels/planted.py (``adamspec bench verdicts``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adamspec.harness.bench_verdicts import bench_verdicts
from adamspec.harness.check import check, verdict_text
from adamspec.harness.engine import record_trace
from adamspec.harness.fingerprint import (
    EQUAL,
    IDENTICAL,
    SEPARATED,
    WITHIN_ROUNDING,
    canonical,
    describe,
    fingerprint,
    separation,
)
from adamspec.harness.hyperfacts import HyperFact, fit
from adamspec.harness.problems import problem, suite
from adamspec.impl.adapters.kernel_protocol import register_target
from adamspec.spec.catalog import entries, entry, formula_name

ROOT = Path(__file__).resolve().parent
THIRD_PARTY = ROOT / "kernels" / "third_party.py"
PLANTED = ROOT / "kernels" / "planted.py"


def _fingerprint(kernel: str, documented: str = ""):
    name = register_target(f"{THIRD_PARTY}:{kernel}", "paper.algorithm1", in_process=True)
    traces = [record_trace(name, p, "float32", 0) for p in suite("discriminating")]
    return fingerprint(traces, documented=documented), traces


# ------------------------------------------------------------------ third-party Adams


def test_sklearn_adam_is_the_eps_hat_form_with_its_ties_named():
    fp, traces = _fingerprint("sklearn_adam")
    best = fp.best
    assert best.within == best.cases == 4  # disc-weight-decay and disc-sparse are declined
    assert best.formula.variant == canonical(entry("paper.eps_hat").variant, traces)
    assert formula_name(best.formula.variant) == "eps_placement=eps_hat"
    # what these problems cannot tell from it is named, not broken arbitrarily
    tied = {m.variant for m in fp.ties}
    assert {"keras.Adam", "torch.SparseAdam"} <= tied, tied
    assert "onnx.Adam" not in tied  # float32-held hyperparameters show on disc-hyper-precision
    text = describe(fp)
    assert text.startswith("computes eps_placement=eps_hat (= paper.eps_hat): within budget "
                           "on 4/4 cases; not told apart on these problems from: ")  # fmt: skip
    assert text.endswith("nothing claimed")


@pytest.mark.needs("jax")
def test_jax_example_libraries_adam_is_algorithm1_holding_binary64_hyperparameters():
    fp, _ = _fingerprint("jax_example_adam")
    best = fp.best
    assert best.within == best.cases
    assert formula_name(best.formula.variant) == "hyper_precision=param_dtype_via_float64"
    # optax.adam with eps_root = 0 and tfjs.adam without carried powers: the same formula here
    assert {"optax.adam", "tfjs.adam"} <= set(best.names)


def test_chainer_adam_is_eps_hat_with_unscaled_decay_not_onnx():
    fp, _ = _fingerprint("chainer_adam")
    best = fp.best
    assert formula_name(best.formula.variant) == (
        "eps_placement=eps_hat, weight_decay=decoupled_before"
    )
    assert best.within == best.cases and not best.names  # no catalog name computes it
    onnx = fp.catalog["onnx.Adam[norm_coefficient_post]"]
    eps_hat = fp.catalog["paper.eps_hat"]
    # one case does not decide: paper.eps_hat is within budget on every case but the decay's
    assert eps_hat.failing == ("disc-weight-decay",)
    assert eps_hat.key() < onnx.key()
    assert "no catalog name" in describe(fp)


@pytest.mark.needs("torch")
def test_a_line_for_line_copy_of_torch_adamw_is_torch_adamw():
    fp, _ = _fingerprint("torch_adamw_copy")
    assert fp.best.variant == "torch.AdamW", [m.variant for m in fp.matches[:4]]
    assert fp.best.within == fp.best.cases


def test_a_claim_wins_a_tie_and_nothing_else():
    unclaimed, _ = _fingerprint("sklearn_adam")
    claimed, _ = _fingerprint("sklearn_adam", documented="keras.Adam")
    assert unclaimed.best.variant == "paper.eps_hat"
    assert claimed.best.variant == "keras.Adam"  # within budget on the same cases: a tie
    chainer, _ = _fingerprint("chainer_adam", documented="paper.eps_hat")
    assert chainer.best.variant != "paper.eps_hat"  # a failing case is evidence against it


# ------------------------------------------------------------------ a check without a claim


def test_a_check_without_a_claim_records_no_claim_and_states_the_formula_as_axes(tmp_path):
    result = check(f"{THIRD_PARTY}:chainer_adam", None, suite="quick", out=tmp_path,
                   progress=lambda line: None)  # fmt: skip
    assert not result.claimed
    assert result.variant == "eps_placement=eps_hat, weight_decay=decoupled_before"
    assert result.conforms, [(r["case"], r["detail"]) for r in result.tables.summary]
    text = verdict_text(result, tmp_path)
    assert "documents" not in text and "paper.algorithm1" not in text.splitlines()[1]
    assert text.startswith("fingerprint: computes eps_placement=eps_hat, "
                           "weight_decay=decoupled_before (no catalog name)")  # fmt: skip
    assert {r["claimed"] for r in result.tables.summary} == {""}
    assert not any(r["documented"] for r in result.tables.fingerprints)
    ran = [r for r in result.tables.summary if r["steps"]]
    assert all(r["documented_variant"] == result.variant for r in ran)
    assert all(r["matched_variant"] == result.variant for r in ran)


def test_an_axis_formula_is_a_claim_like_a_catalog_name(tmp_path):
    result = check(f"{THIRD_PARTY}:chainer_adam", "weight_decay=decoupled_before, "
                   "eps_placement=eps_hat", suite="quick", out=tmp_path,
                   progress=lambda line: None)  # fmt: skip
    assert result.claimed and result.conforms
    assert result.variant == "eps_placement=eps_hat, weight_decay=decoupled_before"
    assert {r["claimed"] for r in result.tables.summary} == {result.variant}


# ------------------------------------------------------------------ formulas, facts, ties


def test_every_catalog_formula_is_named_by_its_axes_and_read_back():
    for e in entries():
        name = formula_name(e.variant)
        assert entry(name).variant == e.variant, (e.name, name)
    assert formula_name(entry("paper.algorithm1").variant) == "paper.algorithm1"


def test_a_fitted_hyperparameter_without_informative_steps_is_not_guessed():
    name = register_target(f"{THIRD_PARTY}:sklearn_adam", "paper.algorithm1", in_process=True)
    typical = record_trace(name, problem("typical"), "float32", 0)  # |g| ~ 1: eps is invisible
    fitted = fit([typical], entry("paper.eps_hat").variant)
    assert fitted["eps"].startswith("eps cannot be estimated: no step where eps is comparable")
    assert fitted["beta1"] == "beta1 fitted as the value it is given"
    tiny = record_trace(name, problem("disc-eps"), "float32", 0)
    assert fit([tiny], entry("paper.eps_hat").variant)["eps"] == (
        "eps fitted as the value it is given"
    )


def test_a_hard_coded_eps_is_fitted_from_the_traces():
    name = register_target(f"{PLANTED}:k_eps_hard_coded_1e-7", "paper.algorithm1",
                           in_process=True)  # fmt: skip
    traces = [record_trace(name, problem(p), "float32", 0) for p in ("disc-eps", "tiny-near-eps")]
    fact = fit(traces, entry("paper.algorithm1").variant)["eps"]
    assert fact == HyperFact("eps", value="1e-7", source="fitted")
    assert fact.describe(traces[1].hyper) == "fitted: behaves as eps = 1e-7 (given 1e-08)"


def test_the_quick_suite_separates_every_pair_of_catalog_variants_or_says_they_are_the_same():
    # its discriminating problems alone do (the other quick problems can only add to it)
    disc = [p for p in suite("quick") if p.name.startswith("disc-")]
    assert len(disc) == 5
    pairs = separation(disc, ("float32", "bfloat16"))
    undecided = [p for p in pairs if p.relation not in (SEPARATED, IDENTICAL, EQUAL,
                                                        WITHIN_ROUNDING)]  # fmt: skip
    assert not undecided, undecided[:3]


# ------------------------------------------------------------------ the verdict benchmark


#: A subset of the planted kernels, one per kind of diagnosis (the whole table is the
#: benchmark `adamspec bench verdicts`, not a test).
SUBSET = ("control_paper", "lr_in_float16", "eps_hard_coded_1e-7", "maximize_m_stored_unnegated",
          "eps_hat_and_unscaled_decay")  # fmt: skip


def test_the_verdict_benchmark_diagnoses_a_subset_of_planted_bugs_right():
    report = bench_verdicts("quick", PLANTED, only=SUBSET, progress=lambda line: None)
    wrong = [(k["name"], k["diagnosis"], k["cases"]) for k in report["kernels"] if not k["right"]]
    assert not wrong, wrong
    assert report["false_alarms"] == 0 and report["controls"] == 1
    assert report["detected"] == report["bugs"] == len(SUBSET) - 1


def _scored(name: str, category: str, verdicts: dict[str, tuple[str, str]]) -> dict:
    """The benchmark's score of one kernel whose cases got ``verdicts`` (case -> verdict,
    category), without running it."""
    from types import SimpleNamespace

    from adamspec.harness.bench_verdicts import score

    rows = [{"case": c, "verdict": v, "category": k, "detail": ""}
            for c, (v, k) in verdicts.items()]  # fmt: skip
    planted = SimpleNamespace(name=name, claim="paper.algorithm1", category=category,
                              description="", control=category == "rounding only")  # fmt: skip
    return score(planted, rows)


def test_a_range_case_is_a_finding_of_a_planted_bug_and_no_false_alarm_on_a_control():
    from adamspec.harness.bench_verdicts import summarize

    typical, huge = ("pass", "rounding only"), ("range", "format range")
    squares = _scored("squares_in_float32", "format range", {"typical": typical, "huge": huge})
    control = _scored("float32_control", "rounding only", {"typical": typical, "huge": huge})
    eps_off = ("discrepancy", "epsilon placement")
    eps = _scored("eps_moved", "epsilon placement", {"huge": huge, "tiny-near-eps": eps_off})
    assert (squares["diagnosis"], squares["detected"], squares["right"]) == (
        "format range", True, True)  # fmt: skip
    assert (control["alarm"], control["right"]) == (False, True)
    assert eps["diagnosis"] == "epsilon placement"  # the range case names nothing else
    report = summarize([squares, control, eps])
    assert (report["detected"], report["right_category"], report["bugs"]) == (2, 2, 2)
    assert (report["false_alarms"], report["controls_range"]) == (0, 1)
