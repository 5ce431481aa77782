"""The mpmath oracle against closed forms, independent re-derivations and the seed documents.

Expected values are computed here from the formulas with Python's Fraction
or with mpmath directly (never by calling the code under test twice).
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mpmath import mp

from adamspec.oracles import OracleState, radam_rho, step, trajectory
from adamspec.oracles.exact import Ival, Rat, Surd
from adamspec.oracles.rounding import round_exact
from adamspec.spec import AmsGrad, SparseRows, Variant, entry, make_hyper
from adamspec.spec.formats import FLOAT32, FLOAT64

DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
}


def finite_floats(dtype: str, **kw):
    width = {"float64": 64, "float32": 32, "float16": 16}.get(dtype, 32)
    return st.floats(allow_nan=False, allow_infinity=False, width=width, **kw)


def exact_of(real) -> Fraction:
    """The value of an exact oracle result; fails if the oracle had to use an interval."""
    assert isinstance(real, Rat), f"expected an exact rational, got {real!r}"
    return Fraction(int(real.q.numerator), int(real.q.denominator))


# The independent references below run plain mpmath at 300 bits: a few ulps of that,
# relative, is their own error, so enclosures are widened by it and nothing more.
REFERENCE_ERROR = mp.mpf(2) ** -280


def assert_encloses(real, value: mp.mpf) -> None:
    """The oracle's rigorous enclosure of ``real`` contains the independently computed value."""
    with mp.workprec(400):
        lo, hi = (mp.mpf(x) for x in real.enclosure())
        slack = REFERENCE_ERROR * abs(value)
        assert lo - slack <= value <= hi + slack, f"{value} not in [{lo}, {hi}]"


def midpoint(real) -> mp.mpf:
    with mp.workprec(300):
        lo, hi = real.enclosure()
        return (mp.mpf(lo) + mp.mpf(hi)) / 2


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@given(data=st.data())
def test_algorithm1_first_step_is_lr_g_over_abs_g_plus_eps(dtype, data):
    """From zero state m_hat = g and sqrt(v_hat) = |g|: theta_1 = theta_0 - lr g / (|g| + eps)."""
    g = data.draw(finite_floats(dtype), label="g")
    theta = data.draw(finite_floats(dtype, min_value=-1e6, max_value=1e6), label="theta")
    e = entry("paper.algorithm1")
    result = step(
        e.variant, e.hyper(), np.array([theta], DTYPES[dtype]), np.array([g], DTYPES[dtype])
    )
    lr, eps = Fraction(1, 1000), Fraction(1, 10**8)
    gq, tq = Fraction(g), Fraction(theta)
    expected = tq - lr * gq / (abs(gq) + eps)
    assert exact_of(result.exact["param"][0][0]) == expected
    assert result.value("param")[0] == round_exact(
        expected, {"float64": FLOAT64, "float32": FLOAT32}[dtype]
    )


STATE_AT_1 = OracleState(m=np.array([0.025, -0.15, 1e-4]), v=np.array([0.5, 0.25, 1e-6]), step=1)


def _paper_forms(beta2: str, t: int, eps_hat: Fraction, grads: list[float]):
    """Both paper forms taking step t from the same state (ideal hyperparameters)."""
    hyper = make_hyper(beta2=beta2, eps=Fraction(1, 1000))
    params = np.array([0.5, -2.0, 3.0])
    state = STATE_AT_1 if t == 2 else None
    g = np.array(grads[t - 1])
    alg1 = step(entry("paper.algorithm1").variant, hyper, params, g, state)
    hat = step(entry("paper.eps_hat").variant, hyper.with_(eps=eps_hat), params, g, state)
    return alg1, hat


# 1 - beta2^t is a perfect square for these, so eps_hat = eps sqrt(1 - beta2^t) is rational:
# t=1, beta2=15/16: 1 - beta2 = 1/16; t=2, beta2=3/5: 1 - 9/25 = 16/25.
@pytest.mark.parametrize(
    ("beta2", "t", "root"),
    [("0.9375", 1, Fraction(1, 4)), ("0.6", 2, Fraction(4, 5))],
    ids=["t=1,beta2=15/16", "t=2,beta2=3/5"],
)
def test_paper_forms_agree_when_eps_hat_is_eps_sqrt_bc2(beta2, t, root):
    grads = [[0.25, -1.5, 1e-3], [0.5, 2.0, -1e-3]]
    alg1, hat = _paper_forms(beta2, t, Fraction(1, 1000) * root, grads)
    for a, h in zip(alg1.exact["param"][0], hat.exact["param"][0], strict=True):
        assert abs(midpoint(a) - midpoint(h)) < mp.mpf(2) ** -250
    np.testing.assert_array_equal(alg1.value("param"), hat.value("param"))


def test_paper_forms_differ_by_the_predicted_amount():
    """With a constant eps_hat = eps, eps-hat acts as Algorithm 1 with eps / sqrt(1 - beta2^t)."""
    grads = [[0.25, -1.5, 1e-3], [0.5, 2.0, -1e-3]]
    alg1, hat = _paper_forms("0.999", 2, Fraction(1, 1000), grads)
    with mp.workprec(300):
        lr, b1, b2, eps = mp.mpf("0.001"), mp.mpf("0.9"), mp.mpf("0.999"), mp.mpf("0.001")
        for k in range(3):
            g = mp.mpf(grads[1][k])
            m = b1 * mp.mpf(STATE_AT_1.m[k]) + (1 - b1) * g
            v = b2 * mp.mpf(STATE_AT_1.v[k]) + (1 - b2) * g**2
            m_hat, v_hat, c2 = m / (1 - b1**2), v / (1 - b2**2), 1 - b2**2
            predicted = (
                lr * m_hat * (1 / (mp.sqrt(v_hat) + eps) - 1 / (mp.sqrt(v_hat) + eps / mp.sqrt(c2)))
            )
            measured = midpoint(hat.exact["param"][0][k]) - midpoint(alg1.exact["param"][0][k])
            assert abs(measured - predicted) <= abs(predicted) * mp.mpf(10) ** -30
            assert abs(predicted) > mp.mpf(10) ** -12  # the difference is real, not rounding


def _amsgrad_pair(grads):
    hyper = entry("torch.Adam").hyper()
    params = np.array([1.0, -1.0], np.float32)
    gs = [np.array(g, np.float32) for g in grads]
    plain = trajectory(entry("torch.Adam").variant, hyper, params, gs)
    ams = trajectory(entry("torch.Adam[amsgrad]").variant, hyper, params, gs)
    return plain, ams


def test_amsgrad_equals_adam_while_v_never_decreases():
    # |g| doubles every step, so v_t = b2 v + (1 - b2) g^2 > v_{t-1}: the max never binds.
    plain, ams = _amsgrad_pair([[2.0**k, -(2.0**k)] for k in range(8)])
    for a, b in zip(plain, ams, strict=True):
        for c in ("param", "m", "v"):
            np.testing.assert_array_equal(a.value(c), b.value(c))
        np.testing.assert_array_equal(b.value("v_max"), b.value("v"))


def test_amsgrad_differs_from_adam_once_v_decreases():
    plain, ams = _amsgrad_pair([[8.0, -8.0], [1e-3, -1e-3], [1e-3, -1e-3]])
    assert not np.array_equal(plain[-1].value("param"), ams[-1].value("param"))
    assert np.all(ams[-1].value("v_max") > ams[-1].value("v"))


def _rho_t(t: int, beta2: Fraction) -> Fraction:
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * t * beta2**t / (1 - beta2**t)


@pytest.mark.parametrize("beta2", ["0.999", "0.99", "0.9"])
def test_radam_switches_where_rho_t_first_exceeds_5(beta2):
    b2 = Fraction(beta2)
    switch = next(t for t in range(1, 200) if _rho_t(t, b2) > 5)
    if beta2 == "0.999":
        assert switch == 6  # PyTorch's test comment: "rho_t becomes greater than 5 in step 6"
    e = entry("torch.RAdam")
    hyper = e.hyper(beta2=beta2, lr="0.01")
    grads = [np.array([1.0, -0.5 * k]) for k in range(1, switch + 2)]
    results = trajectory(e.variant, hyper, np.array([0.0, 0.0]), grads, hyper_mode="ideal")
    theta, m = [Fraction(0), Fraction(0)], [Fraction(0), Fraction(0)]
    b1 = Fraction(9, 10)
    for t, (g, r) in enumerate(zip(grads, results, strict=True), start=1):
        _, rho = radam_rho(t, _mpq(b2))
        assert exact_of(rho) == _rho_t(t, b2)
        for k in range(2):
            m[k] = b1 * m[k] + (1 - b1) * Fraction(g[k])
            if t < switch:  # un-rectified: plain momentum SGD, exact rationals
                theta[k] -= Fraction(1, 100) * m[k] / (1 - b1**t)
                assert exact_of(r.exact["param"][0][k]) == theta[k]
        if t == switch:
            assert not all(isinstance(x, Rat) for x in r.exact["param"][0])
            break


def _mpq(f: Fraction):
    from gmpy2 import mpq

    return mpq(f.numerator, f.denominator)


# ---------------------------------------------------------------- precision independence


CATALOG_NAMES = [e.name for e in __import__("spec").entries()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@given(
    name=st.sampled_from(CATALOG_NAMES),
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=9, max_size=9),
    scale=st.sampled_from([1e-30, 1e-8, 1.0, 1e8, 1e30]),
)
def test_results_at_128_and_512_bits_round_identically(dtype, name, values, scale):
    e = entry(name)
    overrides = {"weight_decay": "0.01"} if "weight_decay" in e.defaults else {}
    hyper = e.hyper(**overrides)
    arr = np.array(values, dtype=DTYPES[dtype])
    params, grads = arr[:3], [arr[3:6] * scale, arr[6:9]]
    low = trajectory(e.variant, hyper, params, grads, precision=128)
    high = trajectory(e.variant, hyper, params, grads, precision=512)
    for a, b in zip(low, high, strict=True):
        for c in a.components:
            np.testing.assert_array_equal(a.value(c), b.value(c), err_msg=f"{name} {c}")


# ---------------------------------------------------------------- the seed documents


@pytest.mark.parametrize("name", ["keras.Adam", "tf_keras.Adam"])
def test_keras_doc_example_gives_9_8(name):
    """Seed 000 (Keras doc): Adam(learning_rate=0.2) on loss val1**2/2 from 10.0 -> 9.8.

    The doc's 9.8 is the ideal-decimal result. As Keras holds its hyperparameters
    (float32 lr and beta, 1 - beta formed in binary64: param_dtype_via_float64_lerp) the
    exact step lands at 9.80000139..., i.e. float32 9.800001 -- which is what Keras 3 on
    tensorflow, jax and torch and tf_keras 2.21 return for this example (measured)."""
    e = entry(name)
    val1 = np.array([10.0], np.float32)
    ideal = step(e.variant, e.hyper(lr="0.2"), val1, val1.copy(), hyper_mode="ideal")
    result = step(e.variant, e.hyper(lr="0.2"), val1, val1.copy())  # d(loss)/d(val1) == val1
    assert ideal.value("param")[0] == np.float32(9.8)
    assert result.value("param").dtype == np.float32
    assert result.value("param")[0] == np.float32(9.800001)
    assert result.step == 1  # the doc's step_count


def test_tf_doc_lr_t_formula_is_the_eps_hat_form():
    """Seed 000/004: lr_t <- learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t), eps is eps-hat."""
    e = entry("tf.raw.ApplyAdam")
    g = [np.array([0.5, -3.0]), np.array([0.25, 1.0])]
    results = trajectory(e.variant, e.hyper(eps="0"), np.array([1.0, 2.0]), g, hyper_mode="ideal")
    with mp.workprec(300):
        b1, b2, lr = mp.mpf("0.9"), mp.mpf("0.999"), mp.mpf("0.001")
        theta = [mp.mpf(1), mp.mpf(2)]
        m, v = [mp.mpf(0)] * 2, [mp.mpf(0)] * 2
        for t, (gs, r) in enumerate(zip(g, results, strict=True), start=1):
            lr_t = lr * mp.sqrt(1 - b2**t) / (1 - b1**t)
            for k in range(2):
                m[k] = b1 * m[k] + (1 - b1) * gs[k]
                v[k] = b2 * v[k] + (1 - b2) * gs[k] ** 2
                theta[k] -= lr_t * m[k] / mp.sqrt(v[k])
                assert_encloses(r.exact["param"][0][k], theta[k])


def test_bfloat16_beta2_rounds_to_one_and_freezes_keras_adam():
    """keras-team/keras-hub#2629: bf16(0.999) == 1.0, so 1 - beta2^t = 0 and alpha = 0.

    v still moves: Keras multiplies by the Python float 1 - 0.999 cast to bfloat16
    (0.00099945068359375), not by 1 - bf16(0.999) = 0. Measured on Keras 3.15.1
    (tensorflow and jax backends): param [1, -2], v [2.49862671e-04, 6.24656677e-05],
    the oracle's values bit for bit."""
    e = entry("keras.Adam")
    params = np.array([1.0, -2.0], ml_dtypes.bfloat16)
    grads = np.array([0.5, 0.25], ml_dtypes.bfloat16)
    held = step(e.variant, e.hyper(lr="0.1"), params, grads)
    ideal = step(e.variant, e.hyper(lr="0.1"), params, grads, hyper_mode="ideal")
    assert [exact_of(x) for x in held.exact["param"][0]] == [1, -2]  # exactly no update
    c2 = float(ml_dtypes.bfloat16(1 - 0.999))  # the binary64 complement, cast
    want_v = np.array([c2 * 0.25, c2 * 0.0625]).astype(ml_dtypes.bfloat16)
    assert held.value("v").tobytes() == want_v.tobytes()
    assert not np.array_equal(ideal.value("param"), params)


# ---------------------------------------------------------------- sparse semantics


def _embedding_case(variant_name: str):
    e = entry(variant_name)
    table = np.arange(12, dtype=np.float32).reshape(4, 3) / 4
    rows = SparseRows([2, 0, 2], np.array([[1, -1, 0.5], [2, 2, 2], [3, 1, -0.5]], np.float32), 4)
    state = OracleState(
        m=np.full((4, 3), 0.25, np.float32), v=np.full((4, 3), 0.5, np.float32), step=3
    )
    return e, table, rows, state


def test_lazy_sparse_leaves_untouched_rows_exactly_alone():
    e, table, rows, state = _embedding_case("torch.SparseAdam")
    r = step(e.variant, e.hyper(), table, rows, state)
    for row in (1, 3):
        np.testing.assert_array_equal(r.value("param")[row], table[row])
        np.testing.assert_array_equal(r.value("m")[row], state.m[row])
    assert not np.array_equal(r.value("param")[2], table[2])


def test_dense_equivalent_sparse_equals_the_dense_gradient_with_duplicates_summed():
    e, table, rows, state = _embedding_case("tf_keras.Adam")
    dense = np.zeros((4, 3), np.float32)
    np.add.at(dense, rows.indices, rows.values)  # exact: small dyadic values
    sparse_r = step(e.variant, e.hyper(), table, rows, state)
    dense_r = step(e.variant, e.hyper(), table, dense, state)
    for c in ("param", "m", "v"):
        np.testing.assert_array_equal(sparse_r.value(c), dense_r.value(c))
    # untouched rows still move: their momentum decays and is applied
    assert not np.array_equal(sparse_r.value("param")[1], table[1])


def test_duplicates_square_then_sum_puts_sum_of_squares_in_v():
    e, table, rows, state = _embedding_case("keras.Adam")  # square_then_sum
    r = step(e.variant, e.hyper(), table, rows, state, hyper_mode="ideal")
    b2 = Fraction(999, 1000)
    expected_v = b2 * Fraction(1, 2) + (1 - b2) * (Fraction(1) ** 2 + Fraction(3) ** 2)
    assert exact_of(r.exact["v"][0][2, 0]) == expected_v
    summed = e.variant.replace(duplicates="sum_then_square")
    r2 = step(summed, e.hyper(), table, rows, state, hyper_mode="ideal")
    assert exact_of(r2.exact["v"][0][2, 0]) == b2 * Fraction(1, 2) + (1 - b2) * 16


# ---------------------------------------------------------------- IEEE special values


def test_nan_and_inf_gradients_propagate_like_ieee():
    e = entry("torch.Adam")
    r = step(e.variant, e.hyper(), np.array([1.0, 1.0, 1.0]), np.array([math.nan, math.inf, 1.0]))
    p, m, v = r.value("param"), r.value("m"), r.value("v")
    assert math.isnan(p[0]) and math.isnan(m[0])
    assert m[1] == math.inf and v[1] == math.inf and math.isnan(p[1])  # inf / inf
    assert math.isfinite(p[2])


def test_amsgrad_maximum_is_over_raw_v_for_torch_and_over_v_hat_for_optax():
    grads = [np.array([4.0]), np.array([1.0])]
    for name, expect in (("torch.Adam[amsgrad]", "raw"), ("optax.amsgrad", "corrected")):
        e = entry(name)
        r = trajectory(e.variant, e.hyper(), np.array([0.0]), grads, hyper_mode="ideal")[-1]
        v = exact_of(r.exact["v"][0][0])
        v1 = Fraction(1, 1000) * 16
        c1, c2 = 1 - Fraction(999, 1000), 1 - Fraction(999, 1000) ** 2
        want = max(v1, v) if expect == "raw" else max(v1 / c1, v / c2)
        assert exact_of(r.exact["v_max"][0][0]) == want
    assert e.variant.amsgrad is AmsGrad.MAX_CORRECTED_V


def test_surd_algebra_keeps_rational_results_exact():
    """sqrt(c2) / sqrt(v) with v = c2 g^2 is 1/|g|: the eps-hat form with eps = 0 stays exact."""
    v = Variant(eps_placement="eps_hat")
    r = step(v, make_hyper(eps=0), np.array([1.0]), np.array([-3.0]), hyper_mode="ideal")
    assert exact_of(r.exact["param"][0][0]) == 1 + Fraction(1, 1000)
    # and genuinely irrational results are intervals or surds, never mislabelled rationals
    r = step(v, make_hyper(), np.array([1.0]), np.array([-3.0]), hyper_mode="ideal")
    assert isinstance(r.exact["param"][0][0], (Ival, Surd))


def test_pytorch_tutorial_lambda_lr_schedule_drives_each_step():
    """Seed 003: Adam(lr=100) with LambdaLR(lambda epoch: 0.67 ** epoch): step t uses
    100 * 0.67**(t-1). From zero state with eps = 0 each Algorithm-1 step moves theta by
    exactly lr_t * m_hat / sqrt(v_hat), which for a constant gradient is lr_t."""
    schedule = make_hyper(lr=lambda t: 100 * Fraction("0.67") ** (t - 1), eps=0)
    e = entry("paper.algorithm1")
    grads = [np.array([2.0])] * 4
    results = trajectory(e.variant, schedule, np.array([0.0]), grads, hyper_mode="ideal")
    theta = Fraction(0)
    for t, r in enumerate(results, start=1):
        theta -= 100 * Fraction("0.67") ** (t - 1)
        assert exact_of(r.exact["param"][0][0]) == theta
    assert [float(schedule.lr_at(t)) for t in (1, 2, 3)] == [100.0, 67.0, 44.89]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch.Adam[amsgrad]", "keras.Adam", "tfjs.adam", "optax.adam"])
def test_long_trajectory_rounds_identically_at_128_and_1024_bits(name):
    """1,000 free-running steps: accumulated beta powers and exact state stay certified."""
    rng = np.random.default_rng(7)
    e = entry(name)
    grads = [
        rng.standard_normal(4).astype(np.float32) * 10.0 ** rng.integers(-6, 6) for _ in range(1000)
    ]
    params = rng.standard_normal(4).astype(np.float32)
    low = trajectory(e.variant, e.hyper(), params, grads, precision=128)
    high = trajectory(e.variant, e.hyper(), params, grads, precision=1024)
    for a, b in zip(low[::50], high[::50], strict=True):
        for c in a.components:
            np.testing.assert_array_equal(a.value(c), b.value(c), err_msg=f"{name} {c}")


# ---------------------------------------------------------------- ties and refusal


# (eps_hat is absent: it divides eps by sqrt(c2), so the same lr is not a tie there.)
@pytest.mark.parametrize("placement", ["algorithm_1", "eps_hat_adaptive", "eps_root"])
def test_exact_rounding_ties_are_decided_not_looped(placement):
    """theta_1 = 1 - lr g / (|g| + eps) made exactly the float32 midpoint 1 - 2^-25: it must
    round half-to-even to 1.0. An interval around a tie never decides, so this passes only
    because the exact layer keeps the rational result exact through the square roots."""
    eps = Fraction(1, 10**8)
    lr = Fraction(1, 2**25) * (1 + eps)  # with g = 1: lr g / (|g| + eps) = 2^-25 exactly
    variant = Variant(eps_placement=placement)
    r = step(
        variant,
        make_hyper(lr=lr, eps=eps),
        np.array([1.0], np.float32),
        np.array([1.0], np.float32),
        hyper_mode="ideal",
    )
    assert exact_of(r.exact["param"][0][0]) == 1 - Fraction(1, 2**25)
    assert r.value("param")[0] == np.float32(1.0)
    assert r.precision == 128


def test_ziv_refuses_to_guess_past_the_precision_cap():
    from adamspec.oracles.exact import NeedPrecision
    from adamspec.oracles.ziv import MAX_PRECISION, RoundingUndecided, evaluate

    seen = []

    def never_decides():
        seen.append(mp.prec)
        raise NeedPrecision("always straddles")

    with pytest.raises(RoundingUndecided, match=str(MAX_PRECISION)):
        evaluate(never_decides, 128)
    assert seen[0] == 128 and seen[-1] == MAX_PRECISION and seen == sorted(seen)


# ---------------------------------------------------------------- held complements


def _resolved(precision: str, dtype: str, **hyper):
    from adamspec.oracles.hyperparams import resolve
    from adamspec.spec.formats import format_named

    variant = Variant(hyper_precision=precision)
    return resolve(make_hyper(**hyper), variant, format_named(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_via_float64_complements_are_binary64_then_rounded(dtype):
    """param_dtype_via_float64: c = fl_p(fl64(1 - fl64(beta))), beta = fl_p(fl64(beta)),
    computed here with NumPy casts of Python floats, as the frameworks do."""
    dt = DTYPES[dtype]
    for beta1, beta2 in (("0.9", "0.999"), ("0.3", "0.1")):
        hp = _resolved("param_dtype_via_float64", dtype, beta1=beta1, beta2=beta2)
        for held, one_minus, moment, text in (
            (hp.beta1, hp.one_minus_beta1, hp.moment_beta1, beta1),
            (hp.beta2, hp.one_minus_beta2, hp.moment_beta2, beta2),
        ):
            assert Fraction(held) == Fraction(float(dt(float(text))))
            assert Fraction(one_minus) == Fraction(float(dt(1 - float(text))))
            assert moment == held
        lerp = _resolved("param_dtype_via_float64_lerp", dtype, beta1=beta1, beta2=beta2)
        assert (lerp.beta1, lerp.one_minus_beta1) == (hp.beta1, hp.one_minus_beta1)
        assert lerp.moment_beta1 == 1 - lerp.one_minus_beta1
        assert lerp.moment_beta2 == 1 - lerp.one_minus_beta2


def test_via_float64_differs_from_param_dtype_where_the_source_says():
    """float32, 0.999: 1 - fl32(0.999) and fl32(1 - 0.999) are 1.3e-5 relatively apart;
    the other members keep c = 1 - beta and d = beta exactly; ideal stays the decimals."""
    old = _resolved("param_dtype", "float32")
    new = _resolved("param_dtype_via_float64", "float32")
    assert old.beta2 == new.beta2 and old.one_minus_beta2 == 1 - old.beta2
    assert abs(Fraction(new.one_minus_beta2) / Fraction(old.one_minus_beta2) - 1) > 1e-5
    lerp = _resolved("param_dtype_via_float64_lerp", "float32")
    assert lerp.moment_beta1 == Fraction(120795955, 2**27) != lerp.beta1  # 1 - fl32(0.1)
    for precision in ("float64", "float32", "param_dtype"):
        hp = _resolved(precision, "float16")
        assert (hp.one_minus_beta1, hp.moment_beta1) == (1 - hp.beta1, hp.beta1)
    from adamspec.oracles.hyperparams import resolve

    ideal = resolve(make_hyper(), Variant(hyper_precision="param_dtype_via_float64"), FLOAT32,
                    "ideal")  # fmt: skip
    assert (ideal.beta2, ideal.one_minus_beta2) == (Fraction(999, 1000), Fraction(1, 1000))
