"""The differential engine on deliberately wrong toy Adams (tests/toy_adapters.py).

Each toy breaks one thing the way hand-written kernels do; the engine must
name the spec axis that explains it, rank the right catalog variant first, and
keep what it measured when a kernel fails mid-run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from toy_adapters import BUGS, RANGE_BUGS, register_toys

from adamspec.harness.budgets import DEFAULT
from adamspec.harness.classify import CATEGORIES, FORMAT_RANGE, classify
from adamspec.harness.engine import (
    ComponentError,
    budget_multiple,
    free_running,
    lockstep,
    measure,
    record_trace,
    worst,
)
from adamspec.harness.fingerprint import rank_variants, separation
from adamspec.harness.problems import problem, suite
from adamspec.spec.catalog import entry
from adamspec.spec.formats import FLOAT32

register_toys()


def _traces(name: str, suite_name: str = "quick"):
    return [record_trace(name, p, "float32", 0) for p in suite(suite_name)]


@pytest.mark.parametrize("bug", list(BUGS))
def test_each_toy_bug_gets_its_category(bug):
    documented, expected = BUGS[bug]
    traces = _traces(f"toy.{bug}")
    assert all(t.status in ("ok", "skipped") for t in traces), [t.detail for t in traces]
    verdict = classify(traces, entry(documented).variant)
    assert verdict.category == expected, verdict.explanation
    assert verdict.category in CATEGORIES


@pytest.mark.parametrize("bug", list(RANGE_BUGS))
def test_a_kernel_right_in_exact_arithmetic_but_not_in_the_dtype_range_is_format_range(bug):
    trace = record_trace(f"toy.{bug}", problem(RANGE_BUGS[bug]), "float32", 0)
    variant = entry("paper.algorithm1").variant
    assert budget_multiple(worst(lockstep(trace, variant))) > 1  # a real discrepancy...
    verdict = classify([trace], variant)
    assert verdict.category == FORMAT_RANGE, verdict.explanation  # ...confined to the range
    # the correct toy on the same problem needs no such excuse
    good = record_trace("toy.none", problem(RANGE_BUGS[bug]), "float32", 0)
    assert classify([good], variant).category == "rounding only"


def test_correct_toy_is_rounding_only_and_off_by_one_is_not():
    good = worst(lockstep(record_trace("toy.none", problem("typical"), "float32", 0),
                          entry("paper.algorithm1").variant))  # fmt: skip
    # float64 arithmetic rounded once per stored value: at most 1 ULP (the double rounding
    # of 0.9 m + 0.1 g through binary64), far inside the default budget
    assert max(e.ulp for e in good.values()) <= 1
    bad = worst(lockstep(record_trace("toy.off_by_one_step", problem("typical"), "float32", 0),
                         entry("paper.algorithm1").variant))  # fmt: skip
    assert budget_multiple(bad, DEFAULT) > 100


@pytest.mark.parametrize(
    ("bug", "expected"),
    [("none", "paper.algorithm1"), ("eps_moved", "paper.eps_hat")],
)
def test_fingerprint_ranks_the_implemented_formula_first(bug, expected):
    traces = _traces(f"toy.{bug}", "discriminating")
    matches = rank_variants(traces, documented=BUGS[bug][0])
    best = matches[0]
    assert entry(best.variant).variant == entry(expected).variant, [m.variant for m in matches[:3]]
    assert best.score <= 1
    # the documented variant of the eps-moved toy is far from it: a real discrepancy
    if bug == "eps_moved":
        documented = next(m for m in matches if m.variant == "paper.algorithm1")
        assert documented.score > 100


def test_free_running_divergence_grows_only_for_the_wrong_formula():
    variant = entry("paper.algorithm1").variant
    for name, small in (("toy.none", True), ("toy.no_bias_correction", False)):
        trace = record_trace(name, problem("quadratic"), "float32", 0)
        per_step = free_running(trace, variant)
        assert len(per_step) == trace.problem.steps
        param = max(e["param"].ulp for e in per_step)
        assert (param <= 64) == small, (name, param)


def test_a_kernel_that_raises_keeps_its_earlier_steps():
    trace = record_trace("toy.raises", problem("typical"), "float32", 0)
    assert trace.status == "error"
    assert "step 3" in trace.detail and "FloatingPointError" in trace.detail
    assert len(trace.steps) == 2
    assert len(lockstep(trace, entry("paper.algorithm1").variant)) == 2


def test_an_unsupported_configuration_is_a_skip_with_its_reason():
    trace = record_trace("toy.none", problem("weight-decay"), "float32", 0)
    assert trace.status == "skipped"
    assert "weight decay" in trace.detail


def test_separation_matrix_tells_paper_forms_apart_and_reports_identical_formulas():
    names = ["paper.algorithm1", "paper.eps_hat", "torch.Adam", "torch.Adam[amsgrad]",
             "tf.raw.ApplyAdam", "tf.v1.AdamOptimizer"]  # fmt: skip
    pairs = {(p.variant_a, p.variant_b): p for p in
             separation(suite("discriminating"), ("float32",), 0, names)}  # fmt: skip
    assert pairs[("paper.algorithm1", "paper.eps_hat")].relation == "separated"
    assert pairs[("torch.Adam", "torch.Adam[amsgrad]")].relation == "separated"
    assert pairs[("paper.algorithm1", "torch.Adam")].axes  # they differ on some axis
    for pair in pairs.values():
        same = entry(pair.variant_a).variant == entry(pair.variant_b).variant
        assert (pair.relation == "identical formula") == same


# ----------------------------------------------------------------- one component's measure


def _up(x: np.float32, steps: int) -> np.float32:
    for _ in range(steps):
        x = np.nextafter(x, np.float32(np.inf))
    return x


def test_measure_reports_the_worst_coordinate_and_the_worst_outcome():
    """Distances and outcomes per coordinate come from oracles/metrics.py; the engine keeps
    the worst of each, with -1 once any coordinate is not measurable in ULPs."""
    ref = np.array([1.5, -0.25, 3.0, 0.0], np.float32)
    scale = np.zeros(ref.shape)
    assert measure(ref.copy(), ref, scale, FLOAT32) == ComponentError(0, 0.0, "exact", 4)
    got = ref.copy()
    got[0] = _up(got[0], 2)
    assert measure(got, ref, scale, FLOAT32) == ComponentError(2, 2.0, "ulp", 4)
    got[3] = np.float32(-0.0)  # a wrong sign of zero is worse than an ULP, 0 ULP away
    assert measure(got, ref, scale, FLOAT32) == ComponentError(2, 2.0, "signed_zero", 4)
    got[1] = np.float32(-np.inf)
    assert measure(got, ref, scale, FLOAT32) == ComponentError(-1, math.inf, "neginf", 4)
    got[2] = np.float32(np.nan)
    assert measure(got, ref, scale, FLOAT32).outcome == "nan"


def test_measure_takes_nan_where_the_exact_result_is_undefined_as_right():
    ref = np.array([np.nan, 1.0], np.float32)
    right = measure(ref.copy(), ref, np.zeros(2), FLOAT32)
    assert (right.ulp, right.outcome, right.coordinates) == (0, "exact", 2)
    wrong = measure(np.array([1.0, 1.0], np.float32), ref, np.zeros(2), FLOAT32)
    assert (wrong.ulp, wrong.outcome) == (-1, "missed_nan")


def test_measure_scales_by_the_largest_term():
    """Two ULPs of 1.5 against a term of magnitude 8 are a quarter of a ULP at 8."""
    ref = np.array([1.5, 2.0], np.float32)
    got = np.array([_up(ref[0], 2), ref[1]], np.float32)
    err = measure(got, ref, np.array([8.0, 0.0]), FLOAT32)
    assert (err.ulp, err.scaled) == (2, 0.25)
    assert measure(got[:0], ref[:0], np.zeros(0), FLOAT32) == ComponentError(0, 0.0, "exact", 0)


@pytest.mark.parametrize("documented", ["torch.Adam", "torch.AdamW"])
def test_a_215_ulp_error_in_v_on_tiny_gradients_fails_whatever_the_decay_coupling(documented):
    """Decoupled decay never enters m or v, so it must not widen their scale: the same
    error in v fails under torch.AdamW (weight_decay 0.01) as under torch.Adam (issue 15)."""
    from adamspec.harness.engine import State, compare, oracle_state, oracle_step

    e = entry(documented)
    hyper = e.hyper(weight_decay="0.01")
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(6).astype(np.float32)
    g = (rng.choice([-1, 1], 6) * 10 ** rng.uniform(-9, -6, 6)).astype(np.float32)
    zeros = np.zeros(6, np.float32)
    before = State([theta], [zeros], [zeros.copy()], None, 0)
    ref = oracle_step(e.variant, hyper, [theta], [g], oracle_state(before, e.variant))
    v = ref.rounded["v"][0].copy()
    for _ in range(215):  # v 215 ULPs high, everything else correctly rounded
        v = np.nextafter(v, np.float32(np.inf))
    after = State([ref.rounded["param"][0]], [ref.rounded["m"][0]], [v], None, 1)
    errors = compare(before, [g], after, ref, e.variant, hyper)
    assert errors["v"].ulp == 215
    assert not DEFAULT.within("v", errors["v"].ulp, errors["v"].scaled), errors["v"]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_coordinate_errors_read_from_bits_agree_with_the_metrics_module(dtype):
    """The engine's fast path (two finite values: outcome and ULP distance from their bit
    patterns) gives what oracles.metrics' classify_array and ulp_distance give."""
    from adamspec.harness.engine import _SEVERITY, coordinate_errors, ulp_at
    from adamspec.oracles.metrics import classify_array, ulp_distance
    from adamspec.oracles.rounding import numpy_dtype
    from adamspec.spec.formats import format_named

    fmt = format_named(dtype)
    dt = numpy_dtype(fmt)
    rng = np.random.default_rng(7)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 2.0**-140])
    ref = np.concatenate([rng.standard_normal(500), special, special]).astype(dt)
    got = ref.copy()
    got[:400] = (ref[:400].astype(np.float64) * (1 + rng.normal(0, 1e-3, 400))).astype(dt)
    got[500:508] = special[::-1].astype(dt)  # specials against others, signed zeros...
    scale = np.abs(rng.standard_normal(ref.size))
    found = coordinate_errors(got, ref, scale, fmt)
    outcomes = classify_array(got, ref, fmt)
    assert [_SEVERITY[i] for i in found.outcomes] == list(outcomes)
    expected = np.where(outcomes == "exact", 0, ulp_distance(got, ref, fmt))
    assert np.array_equal(found.ulp, expected)
    with np.errstate(all="ignore"):
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        spacing = ulp_at(np.maximum(scale, np.abs(ref.astype(np.float64))), fmt)
        scaled = np.where(diff == 0, 0.0, diff / spacing)
    assert np.array_equal(found.scaled, np.where(expected < 0, np.inf, scaled), equal_nan=True)
