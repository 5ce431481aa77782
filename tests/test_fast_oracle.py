"""The fast certified oracle (``adamspec.oracles.fast``) gives exactly the mpmath oracle's
rounded values.

Every comparison is bit for bit (dtype, shape, sign of zero; NaN equals NaN) against
``adamspec.oracles.adam``, on hypothesis inputs over every catalog variant, every axis member
and every dtype, including inputs built to sit exactly on a rounding boundary or one
float64 ulp beside it. The error bound itself is tested twice: the exact value lies
inside every tier-1 interval, and an injected error larger than the bound is caught.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpmath import mp

import adamspec.oracles.fast as fast
from adamspec.harness.bench_oracle import (
    HYPER_VARIANTS,
    moment_boundary_case,
    moment_boundary_pairs,
    overflow_case,
    param_tie_case,
    typical_inputs,
    wide_inputs,
)
from adamspec.oracles import OracleState, StepResult
from adamspec.oracles import adam as mpmath_oracle
from adamspec.oracles._fast_eft import expansion_sign, round_to
from adamspec.oracles.hyperparams import resolve
from adamspec.oracles.rounding import round_exact
from adamspec.spec import (
    CATALOG,
    AmsGrad,
    BiasCorrection,
    DuplicateIndices,
    EpsPlacement,
    Family,
    HyperPrecision,
    Nesterov,
    SparseRows,
    SparseSemantics,
    Variant,
    WeightDecay,
    entry,
    make_hyper,
)
from adamspec.spec.formats import FORMATS
from adamspec.spec.holding import HOLDABLE, HOLDING_FORMATS

DTYPES = ["float64", "float32", "float16", "bfloat16"]
NP = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
#: Hypothesis examples per parametrized case: a tenth of the profile's (ci 40 -> 4).
FEW = max(2, settings().max_examples // 10)


def assert_same(reference, got) -> None:
    """Same steps and components, and every rounded value identical bit for bit."""
    assert [r.step for r in reference] == [g.step for g in got]
    for r, g in zip(reference, got, strict=True):
        assert r.components == g.components
        for name in r.components:
            for k, (a, b) in enumerate(zip(r.rounded[name], g.rounded[name], strict=True)):
                a, b = np.asarray(a), np.asarray(b)
                assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype)
                x, y = a.astype(np.float64), b.astype(np.float64)
                same = ((x == y) & (np.signbit(x) == np.signbit(y))) | (np.isnan(x) & np.isnan(y))
                bad = np.flatnonzero(~same.ravel())
                assert bad.size == 0, (
                    f"step {r.step} {name}[{k}] differs at {bad[:5].tolist()}: mpmath "
                    f"{x.ravel()[bad[:5]].tolist()} fast {y.ravel()[bad[:5]].tolist()}"
                )


def both(variant, hyper, params, grads, state=None, **options):
    """The mpmath and the fast oracle on one step (lists of one StepResult each)."""
    ref = [mpmath_oracle.step(variant, hyper, params, grads, state, **options)]
    got = [fast.step(variant, hyper, params, grads, state, **options)]
    return ref, got


def draw_case(data, dtype: str, n_max: int = 12):
    """Inputs drawn by hypothesis: typical, wide-range with specials, or raw hypothesis floats
    (exact zeros, subnormals, infinities, NaN), at a drawn step."""
    dt = NP[dtype]
    kind = data.draw(st.sampled_from(["typical", "wide", "floats"]), label="kind")
    n = data.draw(st.integers(1, n_max), label="n")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    step = data.draw(st.sampled_from([0, 1, 2, 9, 999]), label="step")
    rng = np.random.default_rng(seed)
    if kind == "typical":
        return typical_inputs(n, dtype, rng, step=step)
    if kind == "wide":
        return wide_inputs(n, dtype, rng, step=step)
    width = {"float64": 64, "float32": 32, "float16": 16}.get(dtype, 32)
    floats = st.floats(width=width, allow_nan=True, allow_infinity=True)
    nonneg = st.floats(min_value=0, width=width, allow_infinity=True)

    def arr(strategy, label):
        values = data.draw(st.lists(strategy, min_size=n, max_size=n), label=label)
        return np.array(values, dtype=np.float64).astype(dt)

    v = arr(nonneg, "v")
    state = OracleState(m=arr(floats, "m"), v=v, v_max=v, step=step)
    return arr(floats, "params"), arr(floats, "grads"), state


# ---------------------------------------------------------------- every catalog variant


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CATALOG))
@settings(max_examples=FEW)
@given(data=st.data())
def test_lockstep_matches_mpmath_for_every_catalog_variant(name, dtype, data):
    e = entry(name)
    extra = data.draw(st.sampled_from(HYPER_VARIANTS), label="hyper")
    hyper = e.hyper(**extra)
    if e.variant.sparse is SparseSemantics.LAZY or name == "torch.SparseAdam":
        assert_same(*both(e.variant, hyper, *draw_sparse_case(data, dtype)))
        return
    params, grads, state = draw_case(data, dtype)
    assert_same(*both(e.variant, hyper, params, grads, state))


# ---------------------------------------------------------------- row-sparse gradients


def draw_sparse_case(data, dtype: str):
    """A table, a row-sparse gradient with repeated rows, and a state: typical values, or
    contributions whose sum is not exact in binary64 (1e30 and 1e-30 on one row), or raw
    hypothesis floats (zeros, infinities, NaN)."""
    dt = NP[dtype]
    rows = data.draw(st.integers(1, 6), label="rows")
    dim = data.draw(st.integers(1, 3), label="dim")
    count = data.draw(st.integers(0, 8), label="entries")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    kind = data.draw(st.sampled_from(["typical", "inexact", "floats"]), label="kind")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, rows, count)
    values = rng.standard_normal((count, dim))
    if kind == "inexact" and count >= 2:
        indices[1] = indices[0]
        values[0], values[1] = 1e30, 1e-30
    elif kind == "floats" and count:
        width = {"float64": 64, "float32": 32, "float16": 16}.get(dtype, 32)
        drawn = data.draw(st.lists(st.floats(width=width), min_size=count * dim,
                                   max_size=count * dim), label="values")  # fmt: skip
        values = np.array(drawn, np.float64).reshape(count, dim)
    with np.errstate(over="ignore"):
        grads = SparseRows(indices, values.astype(dt), rows)
        params = rng.standard_normal((rows, dim)).astype(dt)
        m = (0.1 * rng.standard_normal((rows, dim))).astype(dt)
        v = (0.01 * rng.random((rows, dim))).astype(dt)
    state = OracleState(m=m, v=v, v_max=(v * 2).astype(dt), step=data.draw(
        st.sampled_from([0, 1, 9]), label="step"))  # fmt: skip
    return params, grads, state


SPARSE_VARIANTS = [
    (f"{base}/{sem.value}/{dup.value}", entry(base).variant.replace(sparse=sem, duplicates=dup))
    for base in ("torch.Adam", "keras.Adam", "paper.algorithm1", "torch.Adam[amsgrad]")
    for sem in SparseSemantics
    for dup in DuplicateIndices
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("label", "variant"), SPARSE_VARIANTS, ids=[c[0] for c in SPARSE_VARIANTS])
@settings(max_examples=FEW)
@given(data=st.data())
def test_row_sparse_lockstep_matches_mpmath(label, variant, dtype, data):
    extra = data.draw(st.sampled_from([*HYPER_VARIANTS, {"weight_decay": "0.01"}]), label="hyper")
    hyper = entry(label.split("/")[0]).hyper(**extra)
    maximize = data.draw(st.booleans(), label="maximize")
    variant = variant.replace(maximize=maximize)
    with fast.counting() as stats:
        assert_same(*both(variant, hyper, *draw_sparse_case(data, dtype)))
    # never sent to mpmath whole for being sparse, but for a clipping norm or a lazy EMA
    sparse_reasons = [r for r in stats.reasons if "row-sparse" in r]
    assert not sparse_reasons or hyper.use_ema or hyper.clipnorm or hyper.global_clipnorm


@pytest.mark.parametrize("duplicates", list(DuplicateIndices))
@pytest.mark.parametrize("semantics", list(SparseSemantics))
def test_row_sparse_float32_sums_run_in_the_tiers(semantics, duplicates):
    """Summed duplicates of float32 values within 2^28 of each other are exact in binary64:
    no coordinate of a typical row-sparse lock-step goes to mpmath; squared one by one, v's
    sum carries a bound, and only the v's it leaves too near a rounding boundary do."""
    e = entry("torch.Adam")
    variant = e.variant.replace(sparse=semantics, duplicates=duplicates)
    rng = np.random.default_rng(5)
    rows, dim = 4000, 16
    indices = rng.integers(0, rows, 3000)
    grads = SparseRows(indices, rng.standard_normal((3000, dim)).astype(np.float32), rows)
    params = rng.standard_normal((rows, dim)).astype(np.float32)
    state = OracleState(m=np.zeros_like(params), v=np.zeros_like(params), step=4)
    with fast.counting() as stats:
        got = fast.step(variant, e.hyper(), params, grads, state)
    assert stats.whole == 0 and stats.element_steps == params.size
    if duplicates is DuplicateIndices.SUM_THEN_SQUARE:
        assert stats.fallback == 0
    else:  # whole rows of 16 coordinates for each v near a boundary
        assert stats.fallback_rate < 0.01, stats
    # the mpmath oracle on a few rows agrees (the whole table would take it minutes)
    picked = np.array([indices[0], indices[1], 7, rows - 1])
    rows_only = [int(i) for i in np.unique(picked)]
    mask = np.isin(indices, rows_only)
    sub = SparseRows(np.searchsorted(rows_only, indices[mask]),
                     np.asarray(grads.values)[mask], len(rows_only))  # fmt: skip
    sub_state = OracleState(m=state.m[rows_only], v=state.v[rows_only], step=4)
    ref = mpmath_oracle.step(variant, e.hyper(), params[rows_only], sub, sub_state)
    for name in ("param", "m", "v"):
        assert got.value(name)[rows_only].tobytes() == ref.value(name).tobytes(), name


def test_row_sparse_trajectories_and_norm_clipping_go_to_mpmath_whole():
    e = entry("torch.Adam")
    params = np.ones((3, 2), np.float32)
    grads = SparseRows([0, 2], np.ones((2, 2), np.float32), 3)
    with fast.counting() as stats:
        got = fast.trajectory(e.variant, e.hyper(), params, [grads, grads])
    assert stats.whole == 12 and "row-sparse gradients in a trajectory" in stats.reasons
    assert_same(mpmath_oracle.trajectory(e.variant, e.hyper(), params, [grads, grads]), got)
    with fast.counting() as stats:
        assert_same(*both(e.variant, e.hyper(clipnorm="1"), params, grads))
    assert stats.whole == 6


# ---------------------------------------------------------------- every axis member


def _axis_cases() -> list[tuple[str, Variant]]:
    base = Variant(hyper_precision=HyperPrecision.FLOAT64)
    out = []
    for member in Family:
        v = (
            base.replace(family=member, eps_placement=EpsPlacement.EPS_HAT)
            if member is Family.RADAM
            else base.replace(family=member)
        )
        out.append((f"family={member}", v))
    for member in EpsPlacement:
        out.append((f"eps_placement={member}", base.replace(eps_placement=member)))
    for member in BiasCorrection:
        out.append((f"bias_correction_m={member}", base.replace(bias_correction_m=member)))
        out.append((f"bias_correction_v={member}", base.replace(bias_correction_v=member)))
    for member in AmsGrad:
        v = (
            base.replace(amsgrad=member, bias_correction_v=BiasCorrection.NONE)
            if member is AmsGrad.MAX_RAW_V_UNCORRECTED
            else base.replace(amsgrad=member)
        )
        out.append((f"amsgrad={member}", v))
    for member in WeightDecay:
        out.append((f"weight_decay={member}", base.replace(weight_decay=member)))
    for member in Nesterov:
        out.append((f"nesterov={member}", base.replace(nesterov=member)))
    out.append(("maximize=true", base.replace(maximize=True)))
    for member in SparseSemantics:
        out.append((f"sparse={member}", base.replace(sparse=member)))
    for member in DuplicateIndices:
        out.append((f"duplicates={member}", base.replace(duplicates=member)))
    for member in HyperPrecision:
        out.append((f"hyper_precision={member}", base.replace(hyper_precision=member)))
    return out


AXIS_CASES = _axis_cases()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("label", "variant"), AXIS_CASES, ids=[c[0] for c in AXIS_CASES])
@settings(max_examples=FEW)
@given(data=st.data())
def test_lockstep_matches_mpmath_for_every_axis_member(label, variant, dtype, data):
    extra = data.draw(st.sampled_from(HYPER_VARIANTS), label="hyper")
    hyper = make_hyper(**{"weight_decay": "0.01", "eps_root": "1e-12", **extra})
    if label.startswith(("sparse=", "duplicates=")):
        params = np.linspace(-1, 1, 12).reshape(4, 3).astype(NP[dtype])
        grads = SparseRows([3, 0, 3], np.full((3, 3), 0.5, dtype=NP[dtype]), 4)
        assert_same(*both(variant, hyper, params, grads))
        return
    params, grads, state = draw_case(data, dtype)
    assert_same(*both(variant, hyper, params, grads, state))


HELD_CASES = [(name, fmt.name) for name in HOLDABLE for fmt in HOLDING_FORMATS]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "fmt"), HELD_CASES, ids=[f"{n}@{f}" for n, f in HELD_CASES])
@settings(max_examples=FEW)
@given(data=st.data())
def test_lockstep_matches_mpmath_with_a_hyperparameter_held_in_its_own_format(
    name, fmt, dtype, data
):
    """``Hyper.held_formats`` (one hyperparameter held in a format of its own) is resolved in
    one place for both oracles; over variants that hold the rest differently (ideal, the
    param dtype, binary64 complements, the interpolation form)."""
    variant = data.draw(
        st.sampled_from(
            [entry(n).variant for n in ("paper.algorithm1", "tf.raw.ApplyAdam", "optax.adam",
                                        "keras.Adam", "torch.AdamW")]
        ),
        label="variant",
    )  # fmt: skip
    hyper = make_hyper(weight_decay="0.01", eps_root="1e-12", eps="1e-3", held_formats={name: fmt})
    params, grads, state = draw_case(data, dtype)
    assert_same(*both(variant, hyper, params, grads, state))


def test_a_held_format_changes_only_its_hyperparameter():
    """beta1 held in bfloat16 under a float32 kernel: 0.8984375 as both the held beta and the
    decay of m, its complement exactly 1 - 0.8984375; beta2 keeps the variant's holding."""
    e = entry("keras.Adam")
    fmt = FORMATS["float32"]
    plain = resolve(e.hyper(), e.variant, fmt)
    own = resolve(e.hyper(held_formats={"beta1": "bfloat16"}), e.variant, fmt)
    assert own.beta1 == own.moment_beta1 == Fraction(115, 128)
    assert own.one_minus_beta1 == 1 - Fraction(115, 128)
    assert (own.beta2, own.one_minus_beta2, own.moment_beta2) == (
        plain.beta2, plain.one_minus_beta2, plain.moment_beta2,
    )  # fmt: skip
    ideal = resolve(e.hyper(held_formats={"beta1": "bfloat16"}), e.variant, fmt, "ideal")
    assert ideal.beta1 == Fraction(9, 10)


@pytest.mark.parametrize("mode", ["held", "ideal"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_hyper_mode_state_dtype_and_several_tensors(mode, dtype):
    """Two tensors at once (global clipping spans both), another state dtype, both modes."""
    rng = np.random.default_rng(7)
    e = entry("keras.Adam")
    hyper = e.hyper(global_clipnorm="2")
    p1, g1, st1 = typical_inputs(9, dtype, rng)
    p2, g2, st2 = typical_inputs(5, dtype, rng)
    state = OracleState(m=[st1.m, st2.m], v=[st1.v, st2.v], step=4)
    for state_dtype in (None, "float32"):
        assert_same(
            *both(e.variant, hyper, [p1, p2], [g1, g2], state, state_dtype=state_dtype,
                  hyper_mode=mode)
        )  # fmt: skip


# ---------------------------------------------------------------- rounding boundaries


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("which", ["m", "v"])
@pytest.mark.parametrize("name", ["paper.algorithm1", "torch.Adam", "onnx.Adam"])
def test_moments_on_and_beside_rounding_boundaries(name, which, dtype):
    """Moments exactly on a midpoint (decimal betas: ties, rounded to even) or a few float64
    ulps beside it (betas held in binary64: 1 - fl64(0.999) is 8.9e-16 relatively off
    0.001): the same values as mpmath, decided by the bound or by an exact sign, never
    by mpmath."""
    rng = np.random.default_rng(11)
    case = moment_boundary_case(name, dtype, rng, 40, which)
    assert case is not None and case.size == 40
    e = entry(name)
    with fast.counting() as stats:
        ref, got = both(e.variant, case.hyper, case.params, case.grads, case.state)
    assert_same(ref, got)
    assert stats.fallback == 0 and stats.whole == 0
    if name == "paper.algorithm1":
        assert stats.exact_sign >= 40  # exact ties: only an exact sign can decide them


def test_boundary_search_finds_exact_ties():
    """The adversarial builder really produces moments on (or a hair beside) a float32
    midpoint, checked independently: a relative nudge of 2**-40 either way rounds apart."""
    rng = np.random.default_rng(3)
    s, g, dist = moment_boundary_pairs(Fraction(9, 10), Fraction(1, 10), "float32", rng, 50)
    assert s.size == 50 and np.count_nonzero(dist == 0) >= 10
    f32 = FORMATS["float32"]
    for si, gi in zip(s, g, strict=True):
        x = Fraction(9, 10) * Fraction(float(si)) + Fraction(1, 10) * Fraction(float(gi))
        nudge = abs(x) / 2**40
        assert round_exact(x - nudge, f32) != round_exact(x + nudge, f32)


@pytest.mark.parametrize("beside", [False, True], ids=["on", "one-ulp-beside"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["torch.Adam", "paper.algorithm1", "keras.Adam", "optax.adam"])
def test_params_on_and_beside_rounding_boundaries(name, dtype, beside):
    """theta - lr * (+-1) with lr half a ulp: exactly a midpoint (the mpmath oracle rounds to
    even), or one float64 ulp of lr beside it. Tier 1 cannot certify these; they fall back."""
    case = param_tie_case(name, dtype, np.random.default_rng(5), 24, beside=beside)
    e = entry(name)
    assert_same(*both(e.variant, case.hyper, case.params, case.grads, case.state))


@pytest.mark.parametrize("dtype", DTYPES)
def test_overflow_to_infinity(dtype):
    case = overflow_case("torch.Adam", dtype, np.random.default_rng(2), 16)
    e = entry("torch.Adam")
    assert_same(*both(e.variant, case.hyper, case.params, case.grads, case.state))


@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm"])
def test_extreme_clipping_scales(clip):
    """Gradients near the float64 maximum under clipping make a scale of 2**-1024, a
    subnormal constant (found by the slow profile): mpmath takes such a step."""
    e = entry("tf.raw.ApplyAdam[use_nesterov]")
    hyper = e.hyper(**{clip: "1.0"})
    grads = np.array([3.8e26, 2.7e-23, 1.7976931348623157e308, 1e-7, -0.07])
    params = np.linspace(-2, 2, 5)
    state = OracleState(m=np.array([0, 0, 3.4e-12, -1e-26, 2e7]), step=0)
    with fast.counting() as stats:
        assert_same(*both(e.variant, hyper, params, grads, state))
    assert stats.whole == 5


@pytest.mark.parametrize("extra", [{"lr": "1e-45"}, {"eps": "1e40"}, {"weight_decay": "1e35"}])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_constants_beyond_the_binary64_tier_run_in_double_double(extra, dtype):
    """Constants outside [2^-100, 2^100] could underflow binary64 intermediates: such steps
    of narrow formats run in double-double (which charges underflow), not in mpmath."""
    rng = np.random.default_rng(71)
    e = entry("torch.Adam")
    params, grads, state = wide_inputs(40, dtype, rng, specials=False)
    params[:5] = 0
    with fast.counting() as stats:
        assert_same(*both(e.variant, e.hyper(**extra), params, grads, state))
    assert stats.whole == 0


# ---------------------------------------------------------------- trajectories


TRAJECTORY_CASES = [
    ("torch.Adam", {"weight_decay": "0.01"}),
    ("paper.algorithm1", {}),
    ("torch.Adam[amsgrad]", {}),
    ("keras.Adam", {"use_ema": True, "ema_overwrite_frequency": 3, "clipnorm": "1"}),
    ("tf.v1.AdamOptimizer", {}),
    ("optax.amsgrad", {"global_clipnorm": "2"}),
    ("optax.adam[nesterov]", {"eps_root": "1e-10", "lr": [0.01, 0.003, 0.001]}),
    ("torch.RAdam", {}),
    ("onnx.Adam[norm_coefficient_post]", {"clipvalue": "0.7"}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize(
    ("name", "extra"), TRAJECTORY_CASES, ids=[f"{n}{sorted(x)}" for n, x in TRAJECTORY_CASES]
)
def test_trajectory_matches_mpmath(name, extra, dtype):
    """Free-running: the fast oracle's double-double state against the mpmath oracle's exact
    state (steps 1..8 cover RAdam's switch to rectification at t = 6)."""
    rng = np.random.default_rng(17)
    e = entry(name)
    hyper = e.hyper(**extra)
    params, _, _ = typical_inputs(6, dtype, rng)
    grads = [typical_inputs(6, dtype, rng)[1] for _ in range(8)]
    ref = mpmath_oracle.trajectory(e.variant, hyper, params, grads)
    got = fast.trajectory(e.variant, hyper, params, grads)
    assert_same(ref, got)


def test_trajectory_200_steps_matches_mpmath():
    """The short check of the carried state: 200 steps of torch.Adam in float32."""
    rng = np.random.default_rng(23)
    e = entry("torch.Adam")
    params = rng.standard_normal(3).astype(np.float32)
    grads = [(rng.standard_normal(3) * 0.1 + 0.02).astype(np.float32) for _ in range(200)]
    ref = mpmath_oracle.trajectory(e.variant, e.hyper(), params, grads)
    with fast.counting() as stats:
        got = fast.trajectory(e.variant, e.hyper(), params, grads)
    assert_same(ref, got)
    assert stats.element_steps == 600 and stats.whole == 0


def test_trajectory_fallback_reseeds_from_the_exact_state(monkeypatch):
    """A coordinate the bound cannot certify at step 4 is recomputed exactly over steps 1..4,
    its double-double state reseeded, and the later steps still agree."""
    rng = np.random.default_rng(29)
    e = entry("paper.algorithm1")
    params = rng.standard_normal(5).astype(np.float32)
    grads = [rng.standard_normal(5).astype(np.float32) for _ in range(7)]
    steps = {"n": 0}

    def blind_at_step_4(name, value, bound):
        if name == "param":
            steps["n"] += 1
            if steps["n"] == 4:  # coordinate 2's parameter bound is lost at step 4
                bound = np.where(np.arange(value.size) == 2, np.inf, bound)
        return value, bound

    monkeypatch.setattr(fast, "_inject_error", blind_at_step_4)
    with fast.counting() as stats:
        got = fast.trajectory(e.variant, e.hyper(), params, grads)
    assert stats.fallback == 1
    assert_same(mpmath_oracle.trajectory(e.variant, e.hyper(), params, grads), got)


def test_trajectory_with_a_nan_state_is_recomputed_exactly():
    e = entry("torch.Adam")
    params = np.array([1.0, 2.0, 3.0], np.float32)
    grads = [np.array([0.5, np.nan, 1.0], np.float32), *[np.ones(3, np.float32)] * 4]
    assert_same(
        mpmath_oracle.trajectory(e.variant, e.hyper(), params, grads),
        fast.trajectory(e.variant, e.hyper(), params, grads),
    )


@pytest.mark.slow
def test_trajectory_100000_steps_stays_faithful():
    """10^5 free-running steps of torch.Adam in float32 against an independent mpmath
    trajectory (plain mpf arithmetic at 256 and at 320 bits, which must agree with each
    other): every stored value of every step is identical."""
    steps, n = 100_000, 4
    rng = np.random.default_rng(31)
    params = rng.standard_normal(n).astype(np.float32)
    scale = np.array([1.0, 1e-3, 10.0, 0.1])
    grads = (rng.standard_normal((steps, n)) * scale + 0.01 * scale).astype(np.float32)
    e = entry("torch.Adam")
    with fast.counting() as stats:
        got = fast.trajectory(e.variant, e.hyper(), params, list(grads))
    assert stats.whole == 0
    reference = {p: _mpmath_torch_adam(params, grads, p) for p in (256, 320)}
    for name in ("param", "m", "v"):
        ref = reference[256][name]
        assert np.array_equal(ref, reference[320][name]), "the reference itself is undecided"
        fast_values = np.stack([r.rounded[name][0] for r in got]).astype(np.float64)
        bad = np.argwhere(fast_values != ref)
        assert bad.size == 0, f"{name} differs at (step, coordinate) {bad[:5].tolist()}"


def _mpmath_torch_adam(params, grads, prec):
    """torch.Adam (hyperparameters as binary64) in mpmath at ``prec`` bits, rounded to float32."""
    b1, b2, lr, eps = (mp.mpf(x) for x in (0.9, 0.999, 0.001, 1e-8))
    f32 = FORMATS["float32"]
    out = {name: np.empty(grads.shape) for name in ("param", "m", "v")}

    def rounded(x):
        sign, man, exp, _ = x._mpf_
        value = Fraction(int(man)) * Fraction(2) ** int(exp)
        return round_exact(-value if sign else value, f32)

    with mp.workprec(prec):
        for i in range(params.size):
            theta, m, v = mp.mpf(float(params[i])), mp.mpf(0), mp.mpf(0)
            p1, p2 = mp.mpf(1), mp.mpf(1)
            for t in range(grads.shape[0]):
                g = mp.mpf(float(grads[t, i]))
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                p1, p2 = p1 * b1, p2 * b2
                theta = theta - lr * (m / (1 - p1)) / (mp.sqrt(v / (1 - p2)) + eps)
                out["param"][t, i], out["m"][t, i], out["v"][t, i] = (
                    rounded(theta),
                    rounded(m),
                    rounded(v),
                )
    return out


# ---------------------------------------------------------------- the bound itself


def _capture(monkeypatch):
    seen = {}

    def record(name, value, bound):
        seen[name] = (np.array(value, dtype=np.float64), np.broadcast_to(bound, value.shape).copy())
        return value, bound

    monkeypatch.setattr(fast, "_inject_error", record)
    return seen


BOUND_CASES = [
    ("torch.Adam", entry("torch.Adam").variant),
    ("onnx.Adam", entry("onnx.Adam").variant),
    ("reddi.amsgrad", entry("reddi.amsgrad").variant),
    ("torch.RAdam", entry("torch.RAdam").variant),
    ("amsgrad=max_corrected_v", Variant(amsgrad=AmsGrad.MAX_CORRECTED_V)),
    ("nesterov=nadam", Variant(nesterov=Nesterov.NADAM, hyper_precision="float64")),
    ("nesterov=tf_raw+decoupled_after", Variant(nesterov=Nesterov.TF_RAW,
     eps_placement=EpsPlacement.EPS_HAT, weight_decay=WeightDecay.DECOUPLED_AFTER)),
    ("eps_root+l2", Variant(eps_placement=EpsPlacement.EPS_ROOT, weight_decay=WeightDecay.L2)),
]  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize(("name", "variant"), BOUND_CASES, ids=[c[0] for c in BOUND_CASES])
def test_exact_value_lies_within_the_tier1_bound(monkeypatch, name, variant, dtype):
    """For every output of tier 1 the exact real (the mpmath oracle's enclosure, 400 bits)
    is within the claimed bound of the float64 value."""
    rng = np.random.default_rng(37)
    hyper = make_hyper(weight_decay="0.01", eps_root="1e-9", use_ema=True, clipnorm="1")
    params, grads, state = typical_inputs(64, dtype, rng, step=6)
    seen = _capture(monkeypatch)
    with fast.counting() as stats:
        fast.step(variant, hyper, params, grads, state)
    assert stats.whole == 0
    exact = mpmath_oracle.step(variant, hyper, params, grads, state).exact
    assert {"param", "m", "v", "ema"} <= set(seen)
    components = {"param": "param", "m": "m", "v": "v", "vmax": "v_max", "ema": "ema"}
    for name_out, (value, bound) in seen.items():
        if name_out not in components:
            continue
        # not vacuous: the widths are a few float64 ulps, relative
        assert np.median(bound / np.maximum(np.abs(value), 1e-300)) < 2.0**-45, name_out
        with mp.workprec(400):
            for i, real in enumerate(exact[components[name_out]][0].ravel()):
                lo, hi = (mp.mpf(x) for x in real.enclosure())
                assert value[i] - bound[i] <= lo and hi <= value[i] + bound[i], (name_out, i)


@pytest.mark.parametrize(("name", "variant"), BOUND_CASES, ids=[c[0] for c in BOUND_CASES])
def test_exact_value_lies_within_the_double_double_bound(monkeypatch, name, variant):
    """The same for the double-double tier (float64): ``|exact - (hi + lo)| <= err``."""
    import adamspec.oracles._fast_dd as dd_tier

    seen = {}

    def record(hook, name_out, d):
        seen[name_out] = d
        return d

    monkeypatch.setattr(dd_tier, "_hooked", record)
    monkeypatch.setattr(fast, "_inject_error", lambda *a: a[1:])
    rng = np.random.default_rng(67)
    hyper = make_hyper(weight_decay="0.01", eps_root="1e-9", use_ema=True, clipnorm="1")
    params, grads, state = typical_inputs(48, "float64", rng, step=6)
    fast.step(variant, hyper, params, grads, state)
    exact = mpmath_oracle.step(variant, hyper, params, grads, state).exact
    components = {"param": "param", "m": "m", "v": "v", "vmax": "v_max", "ema": "ema"}
    assert {"param", "m", "v", "ema"} <= set(seen)
    for name_out, d in seen.items():
        err = np.broadcast_to(d.err, d.hi.shape)
        # not vacuous: about 100 bits, relative
        assert np.median(err / np.maximum(np.abs(d.hi), 1e-300)) < 2.0**-95, name_out
        with mp.workprec(400):
            for i, real in enumerate(exact[components[name_out]][0].ravel()):
                lo, hi = (mp.mpf(x) for x in real.enclosure())
                center = mp.mpf(float(d.hi[i])) + mp.mpf(float(d.lo[i]))
                assert center - float(err[i]) <= lo and hi <= center + float(err[i]), (name_out, i)


def test_injected_error_beyond_the_bound_is_caught(monkeypatch):
    """An error larger than the bound, added to tier 1's values: unannounced, it shows up as
    mismatches against mpmath (so the comparisons above would catch a wrong tier 1);
    announced by widening the bound accordingly, certification sends the affected
    coordinates to mpmath and the result is exact again."""
    rng = np.random.default_rng(41)
    e = entry("torch.Adam")
    params, grads, state = typical_inputs(4000, "float32", rng)
    ref = [mpmath_oracle.step(e.variant, e.hyper(), params, grads, state)]

    def shift(name, value, bound):  # 2**-26 relative: a quarter float32 ulp, >> the bound
        return value + np.abs(value) * 2.0**-26 + 4 * bound, bound

    monkeypatch.setattr(fast, "_inject_error", shift)
    wrong = [fast.step(e.variant, e.hyper(), params, grads, state)]
    with pytest.raises(AssertionError, match="differs"):
        assert_same(ref, wrong)

    def shift_and_widen(name, value, bound):
        delta = np.abs(value) * 2.0**-26 + 4 * bound
        return value + delta, bound + delta

    monkeypatch.setattr(fast, "_inject_error", shift_and_widen)
    with fast.counting() as stats:
        right = [fast.step(e.variant, e.hyper(), params, grads, state)]
    assert_same(ref, right)
    assert stats.fallback > 100  # the widened intervals straddle boundaries: mpmath decides


def test_threaded_chunks_match_mpmath(monkeypatch):
    """A tensor of several chunks, spread over worker threads, with a global clipping norm:
    the same values as one thread, and coordinates from every chunk (and the chunk seams)
    as mpmath computes them with the whole tensor's norm."""
    from adamspec.oracles._fast_tier1 import CHUNK

    n = 3 * CHUNK + 123
    rng = np.random.default_rng(61)
    e = entry("torch.Adam")
    hyper = e.hyper(weight_decay="0.01", global_clipnorm="100")
    params, grads, state = typical_inputs(n, "float32", rng)
    monkeypatch.setenv("ADAMSPEC_FAST_THREADS", "2")
    threaded = fast.step(e.variant, hyper, params, grads, state)
    monkeypatch.setenv("ADAMSPEC_FAST_THREADS", "1")
    serial = fast.step(e.variant, hyper, params, grads, state)
    assert_same([serial], [threaded])
    seams = [k * CHUNK + d for k in range(1, 4) for d in (-1, 0)]
    idx = np.unique(np.concatenate([rng.choice(n, 200, replace=False), seams]))
    norm = sum((Fraction(float(g)) ** 2 for g in grads), Fraction(0))
    sub = OracleState(m=state.m[idx], v=state.v[idx], v_max=state.v_max[idx], step=state.step)
    ref = mpmath_oracle.trajectory(
        e.variant, hyper, params[idx], [grads[idx]], sub, grad_sq_norms=[[norm]]
    )
    got = StepResult(threaded.step, {}, {k: [v[0][idx]] for k, v in threaded.rounded.items()},
                     {}, 0, threaded.components)  # fmt: skip
    assert_same(ref, [got])


def test_no_injection_means_no_fallback_on_typical_inputs():
    rng = np.random.default_rng(43)
    e = entry("torch.Adam")
    params, grads, state = typical_inputs(20_000, "float32", rng)
    with fast.counting() as stats:
        fast.step(e.variant, e.hyper(), params, grads, state)
    assert stats.fallback == 0 and stats.whole == 0
    assert stats.tier1 + stats.exact_sign == 20_000


# ---------------------------------------------------------------- building blocks


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_to_is_correct_rounding_near_midpoints(dtype):
    """float64 values on, and 1 or 2**20 float64 ulps beside, every kind of midpoint (normal,
    subnormal, overflow threshold) round as round_exact says."""
    fmt = FORMATS[dtype]
    rng = np.random.default_rng(47)
    base = np.concatenate(
        [
            rng.standard_normal(300),
            rng.standard_normal(50) * 2.0 ** (fmt.emin - 3),
            [float(np.finfo(np.float32).max) if dtype == "float32" else 65504.0],
        ]
    )
    grid = round_to(base, fmt)
    quantum = np.ldexp(1.0, np.maximum(np.frexp(np.abs(grid))[1] - 1, fmt.emin) - fmt.precision + 1)
    mids = grid + quantum / 2 * np.sign(base)
    xs = np.concatenate([mids, np.nextafter(mids, 0), np.nextafter(mids, np.inf),
                         mids * (1 + 2.0**-32)])  # fmt: skip
    got = round_to(xs, fmt)
    for x, y in zip(xs, got, strict=True):
        assert y == round_exact(Fraction(float(x)), fmt) or (math.isinf(y) and math.isinf(
            round_exact(Fraction(float(x)), fmt)))  # fmt: skip


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e200,
                          max_value=1e200), min_size=1, max_size=8))  # fmt: skip
def test_expansion_sign_is_exact(values):
    terms = [np.array([v]) for v in values] + [np.array([-v]) for v in values[:-1]]
    expected = sum((Fraction(v) for v in values[-1:]), Fraction(0))
    assert expansion_sign(terms)[0] == (expected > 0) - (expected < 0)
    exact = sum((Fraction(v) for v in values), Fraction(0))
    assert expansion_sign([np.array([v]) for v in values])[0] == (exact > 0) - (exact < 0)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=30))
def test_exact_sum_of_squares(values):
    expected = sum((Fraction(v) ** 2 for v in values), Fraction(0))
    assert fast.exact_sum_of_squares(np.array(values, dtype=np.float64)) == expected


def test_exact_values_are_the_mpmath_oracles_and_computed_lazily():
    rng = np.random.default_rng(53)
    e = entry("torch.Adam")
    params, grads, state = typical_inputs(6, "float32", rng)
    got = fast.step(e.variant, e.hyper(), params, grads, state)
    assert "not computed" in repr(got.exact)
    ref = mpmath_oracle.step(e.variant, e.hyper(), params, grads, state)
    with mp.workprec(200):
        for name in ref.components:
            a = [x.enclosure() for x in ref.exact[name][0].ravel()]
            b = [x.enclosure() for x in got.exact[name][0].ravel()]
            assert a == b
    assert got.decimals == {} and got.precision == 0


def test_digits_go_to_mpmath_whole():
    e = entry("torch.Adam")
    params = np.array([1.0, -2.0], np.float32)
    with fast.counting() as stats:
        r = fast.step(e.variant, e.hyper(), params, params, digits=12)
    assert stats.whole == 2 and r.decimals["param"][0][0].startswith("0.999")
    ref = mpmath_oracle.step(e.variant, e.hyper(), params, params, digits=12)
    assert r.decimals == ref.decimals


@pytest.mark.parametrize("name", ["tf.raw.ApplyAdam", "torch.Adam", "keras.Adam", "optax.adam"])
def test_hyper_dtype_is_answered_in_the_tiers_with_mpmaths_answer(name):
    """float32-held hyperparameters, results rounded to binary64: the engine's anchor of a
    long free-running reference (harness.stream), three steps of a trajectory."""
    e = entry(name)
    rng = np.random.default_rng(3)
    params = rng.standard_normal(40)
    grads = [rng.standard_normal(40) for _ in range(3)]
    kw = {"dtype": "float64", "state_dtype": "float64", "hyper_dtype": "float32"}
    with fast.counting() as stats:
        got = fast.trajectory(e.variant, e.hyper(), params, grads, **kw)
    assert stats.whole == 0 and stats.fallback_rate < 0.1
    ref = mpmath_oracle.trajectory(e.variant, e.hyper(), params, grads, **kw)
    for g, r in zip(got, ref, strict=True):
        for component in ("param", "m", "v"):
            assert g.value(component).tobytes() == r.value(component).tobytes(), component
    if name == "tf.raw.ApplyAdam":  # the keyword matters: its hyperparameters are float32
        plain = mpmath_oracle.trajectory(e.variant, e.hyper(), params, grads, dtype="float64")
        assert got[0].value("param").tobytes() != plain[0].value("param").tobytes()


def test_bad_input_raises_the_mpmath_oracles_error():
    e = entry("torch.Adam")
    with pytest.raises(mpmath_oracle.OracleInputError, match="does not match"):
        fast.step(e.variant, e.hyper(), np.zeros(3, np.float32), np.zeros(2, np.float32))


def test_fallback_counters():
    fast.reset_stats()
    case = param_tie_case("paper.algorithm1", "float32", np.random.default_rng(59), 30)
    e = entry("paper.algorithm1")
    with fast.counting() as stats:
        fast.step(e.variant, case.hyper, case.params, case.grads, case.state)
    assert stats.element_steps == 30 and stats.calls == 1
    assert stats.fallback == 30 and stats.fallback_rate == 1.0  # exact ties: mpmath decides
    assert fast.STATS.element_steps == 30


def test_held_hyperparameters_reach_tier1():
    """Every HyperPrecision member gives its own constants (bfloat16 beta2 = 1 is degenerate:
    1 - beta2^t = 0, so that step goes to mpmath whole)."""
    e = entry("keras.Adam")
    hp = resolve(e.hyper(), e.variant, FORMATS["bfloat16"])
    assert hp.beta2 == 1
    params = np.array([1.0, 2.0], ml_dtypes.bfloat16)
    with fast.counting() as stats:
        assert_same(*both(e.variant, e.hyper(), params, params))
    assert stats.whole == 2


def test_bench_oracle_reports_the_agreed_keys():
    """A tiny run of the benchmark: the JSON keys the CLI promises, a table, no mismatches."""
    from adamspec.harness.bench_oracle import bench_oracle, format_table

    result = bench_oracle(
        size=5000, seed=1, mpmath_size=200, check_size=400, families=["adam"], repeats=1, jobs=1
    )
    keys = {"mpmath_steps_per_s", "fast_steps_per_s", "speedup", "fallback_rate", "mismatches",
            "checked"}  # fmt: skip
    assert keys <= set(result)
    assert result["mismatches"] == 0 and result["checked"] >= 800
    assert result["speedup"] == result["fast_steps_per_s"] / result["mpmath_steps_per_s"]
    table = format_table(result)
    assert "| fast element-steps/s |" in table and "| adam |" in table


def test_nested_counting_blocks_each_count_their_own_calls():
    e = entry("torch.Adam")
    params = np.array([1.0, -2.0], np.float32)
    with fast.counting() as outer:
        with fast.counting() as inner:  # equal to outer when it leaves: must not remove it
            fast.step(e.variant, e.hyper(), params, params)
        fast.step(e.variant, e.hyper(), params, params)
    assert (inner.element_steps, outer.element_steps) == (2, 4)
