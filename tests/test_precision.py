"""Mixed precision (issue 17): the roles' dtypes in the spec, both oracles' roundings of each
role, our production master path, and the harness measuring and classifying each role.

The oracle's rounding order (``spec/ADAM.md``, "Mixed precision"): the update is computed on
the master, the master is rounded to its dtype, the param is that rounded master rounded to
the param dtype, the state is rounded to its dtype. Every expectation below is computed
here from exact rationals (``fractions``), not from the code under test.
"""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpmath import mp, mpf
from toy_mixed import BUGS, register_mixed_toys

import adamspec.oracles.fast as fast
from adamspec.harness.classify import (
    MASTER_ABSENT,
    MASTER_ROUNDED,
    MASTER_WEIGHTS,
    ROUNDING_ONLY,
    classify,
)
from adamspec.harness.engine import lockstep, record_trace, worst
from adamspec.harness.problems import suite
from adamspec.impl import adam
from adamspec.oracles import OracleState
from adamspec.oracles import adam as mpmath_oracle
from adamspec.oracles.rounding import exact_of_float, round_exact
from adamspec.oracles.ziv import round_real
from adamspec.spec import Variant, entry
from adamspec.spec.formats import FORMATS
from adamspec.spec.precision import PRESETS, Precision, PrecisionError, precision_named

NP = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}

# ---------------------------------------------------------------- the spec's names

#: (text, the precision it names): the one case table of the parser's accepted forms
NAMED = [
    ("float32", Precision("float32")),
    ("bfloat16", Precision("bfloat16", "bfloat16", "bfloat16", None)),
    ("bf16-fp32state", Precision("bfloat16", state="float32")),
    ("bf16-fp32master", Precision("bfloat16", state="float32", master="float32")),
    ("fp16-fp32master", Precision("float16", "float16", "float32", "float32")),
    ("param=bfloat16,grad=float32,state=float32", Precision("bfloat16", "float32", "float32")),
    ("param=float16, master=float64", Precision("float16", master="float64")),
    ("param=bfloat16,state=float32,master=none", PRESETS["bf16-fp32state"]),
]


@pytest.mark.parametrize(("text", "expected"), NAMED, ids=[t for t, _ in NAMED])
def test_precision_names_parse_to_their_roles(text, expected):
    assert precision_named(text) == expected
    assert precision_named(expected.name) == expected  # a name reads back as itself


#: (text, words the one-line error must contain)
BAD = [
    ("bf16-fp64master", ["'bf16-fp64master' is unknown", "bf16-fp32master", "float32"]),
    ("param=bfloat16,moment=float32", ["role 'moment'", "param, grad, state, master"]),
    ("param=bfloat16,state=float8", ["state='float8' is not a dtype", "bfloat16"]),
    ("param=float32,master=bfloat16", ["master='bfloat16' is narrower than param='float32'"]),
    (
        "param=bfloat16,master=float16",
        ["narrower than param='bfloat16'", "allowed: float64, float32, bfloat16"],
    ),
    ("state=float32", ["names no param dtype"]),
    ("param=float32,param=float16", ["'param' is given twice"]),
    ("", ["is not a name"]),
]


@pytest.mark.parametrize(("text", "words"), BAD, ids=[t or "empty" for t, _ in BAD])
def test_a_bad_precision_is_one_line_naming_the_value_and_what_is_allowed(text, words):
    with pytest.raises(PrecisionError) as err:
        precision_named(text)
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


def test_presets_and_their_roles():
    assert {n: (p.param, p.grad, p.state, p.master) for n, p in PRESETS.items()} == {
        "bf16-fp32state": ("bfloat16", "bfloat16", "float32", None),
        "bf16-fp32master": ("bfloat16", "bfloat16", "float32", "float32"),
        "fp16-fp32master": ("float16", "float16", "float32", "float32"),
    }
    assert PRESETS["bf16-fp32master"].compute == "float32"
    assert PRESETS["bf16-fp32state"].compute == "bfloat16"
    assert not PRESETS["bf16-fp32state"].uniform and Precision("float16").uniform


# ---------------------------------------------------------------- the oracles' roundings


def _exact_adam_step(theta, g, m, v, t, lr, b1, b2, eps):
    """torch.Adam's exact step (Algorithm 1) on Fractions, with sqrt to 200 bits: enough to
    round a float32 value correctly unless it is within 2^-150 of a tie (never, here)."""

    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    c1, c2 = 1 - b1**t, 1 - b2**t
    return theta - lr * (m / c1) / (_sqrt(v / c2) + eps), m, v


def _sqrt(x: Fraction) -> Fraction:
    with mp.workprec(400):
        r = mp.sqrt(mpf(x.numerator) / x.denominator)
    man, exp = int(r.man), int(r.exp)
    return Fraction(man * 2**exp) if exp >= 0 else Fraction(man, 2**-exp)


@pytest.mark.parametrize("name", ["bf16-fp32master", "fp16-fp32master", "bf16-fp32state"])
def test_each_role_is_rounded_to_its_own_dtype_in_the_specified_order(name):
    """Independent expectations: the exact step from the master (or param), then each
    stored value rounded, the param as the rounded master rounded again."""
    p = precision_named(name)
    variant, hyper = entry("torch.Adam").variant, entry("torch.Adam").hyper(lr="0.01")
    rng = np.random.default_rng(7)
    param = rng.standard_normal(6).astype(NP[p.param])
    master = (param.astype(np.float64) + rng.standard_normal(6) * 1e-3).astype(np.float32)
    grad = rng.standard_normal(6).astype(NP[p.grad])
    m = (rng.standard_normal(6) * 0.1).astype(NP[p.state])
    v = (rng.random(6) * 0.1).astype(NP[p.state])
    state = OracleState(m=m, v=v, step=3, master=master if p.master else None)
    got = mpmath_oracle.step(variant, hyper, param, grad, state, dtype=p.param,
                             state_dtype=p.state, master_dtype=p.master)  # fmt: skip
    assert got.components == (("param", "m", "v", "v_max", "master") if p.master
                              else ("param", "m", "v", "v_max"))  # fmt: skip
    lr, b1, b2, eps = (Fraction(float(x)) for x in (hyper.lr_at(4), hyper.beta1, hyper.beta2,
                                                   hyper.eps))  # fmt: skip
    fmt = {r: FORMATS[getattr(p, r)] for r in ("param", "state")}
    for i in range(6):
        start = master[i] if p.master else param[i]
        theta, m1, v1 = _exact_adam_step(
            exact_of_float(start), exact_of_float(grad[i]), exact_of_float(m[i]),
            exact_of_float(v[i]), 4, lr, b1, b2, eps,
        )  # fmt: skip
        assert got.value("m")[i] == round_exact(m1, fmt["state"])
        assert got.value("v")[i] == round_exact(v1, fmt["state"])
        if p.master:
            stored_master = round_exact(theta, FORMATS[p.master])
            assert got.value("master")[i] == stored_master
            expected_param = round_exact(Fraction(stored_master), fmt["param"])
        else:
            expected_param = round_exact(theta, fmt["param"])
        assert got.value("param")[i] == expected_param
    for component, role in (("param", "param"), ("m", "state"), ("master", "master")):
        if component in got.components:
            assert got.value(component).dtype == np.dtype(NP[getattr(p, role)])


def test_the_param_is_the_rounded_master_rounded_again_even_where_that_double_rounds():
    """Where the float32 master lands on a bfloat16 tie, rounding the exact value once would
    give the other neighbour: the spec (and DeepSpeed/apex, which cast the stored master)
    round twice. Found among 2^20 coordinates by binary64 arithmetic, decided exactly."""
    variant, hyper = entry("torch.Adam").variant, entry("torch.Adam").hyper(lr="0.001")
    rng = np.random.default_rng(11)
    n = 1 << 20
    param = rng.standard_normal(n).astype(ml_dtypes.bfloat16)
    master = (param.astype(np.float64) * (1 + rng.standard_normal(n) * 2**-9)).astype(np.float32)
    grad = rng.standard_normal(n).astype(ml_dtypes.bfloat16)
    state = OracleState(master=master)
    kw = dict(dtype="bfloat16", state_dtype="float32", master_dtype="float32")
    whole = fast.step(variant, hyper, param, grad, state, **kw)
    bits = whole.value("master").view(np.uint32)
    on_tie = np.flatnonzero((bits & 0xFFFF) == 0x8000)  # a bfloat16 midpoint, exactly
    assert on_tie.size >= 1
    idx = on_tie[:8]
    sub = mpmath_oracle.step(
        variant, hyper, param[idx], grad[idx], OracleState(master=master[idx]), **kw
    )
    double = sub.value("master").astype(ml_dtypes.bfloat16)  # ties to even from float32
    np.testing.assert_array_equal(sub.value("param"), double)
    np.testing.assert_array_equal(whole.value("param")[idx], double)
    once = [round_real(x, FORMATS["bfloat16"]) for x in sub.exact["master"][0]]
    assert any(float(a) != b for a, b in zip(double, once, strict=True)), "no double rounding"


ROLE_MIXES = ["bf16-fp32state", "bf16-fp32master", "fp16-fp32master",
              "param=bfloat16,grad=float32,state=float32,master=float32",
              "param=float16,state=float16,master=float64"]  # fmt: skip
VARIANTS = ["torch.Adam", "torch.Adam[amsgrad]", "keras.Adam", "optax.adam", "tf.v1.AdamOptimizer"]


@settings(max_examples=10, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("mix", ROLE_MIXES)
def test_the_fast_oracle_is_bit_identical_to_mpmath_on_mixed_precisions(mix, name, data):
    p = precision_named(mix)
    e = entry(name)
    seed = data.draw(st.integers(0, 2**32 - 1))
    steps = data.draw(st.integers(1, 3))
    rng = np.random.default_rng(seed)
    np_ = {r: np.dtype(NP.get(getattr(p, r), np.float64)) for r in ("param", "grad", "state")}
    param = (rng.standard_normal(16) * 10.0 ** rng.integers(-3, 3)).astype(np_["param"])
    grads = [(rng.standard_normal(16) * 10.0 ** rng.integers(-6, 2)).astype(np_["grad"])
             for _ in range(steps)]  # fmt: skip
    master = param.astype(p.master) if p.master else None
    state = OracleState(m=np.zeros(16, np_["state"]), v=np.zeros(16, np_["state"]),
                        v_max=np.zeros(16, np_["state"]), master=master, step=2)  # fmt: skip
    kw = dict(dtype=p.param, state_dtype=p.state, master_dtype=p.master)
    hyper = e.hyper(lr="0.01")
    a = mpmath_oracle.trajectory(e.variant, hyper, param, grads, state, **kw)
    b = fast.trajectory(e.variant, hyper, param, grads, state, **kw)
    for x, y in zip(a, b, strict=True):
        assert x.components == y.components
        for c in x.components:
            u, w = np.atleast_1d(x.value(c)), np.atleast_1d(y.value(c))
            assert u.dtype == w.dtype, c
            np.testing.assert_array_equal(u.view(np.uint8), w.view(np.uint8), err_msg=c)


def test_a_master_in_the_state_needs_a_master_dtype():
    param = np.ones(2, ml_dtypes.bfloat16)
    with pytest.raises(mpmath_oracle.OracleInputError, match="no master_dtype"):
        mpmath_oracle.step(Variant(), entry("torch.Adam").hyper(), param, param,
                           OracleState(master=param.astype(np.float32)))  # fmt: skip


# ---------------------------------------------------------------- production and harness


@pytest.mark.parametrize("name", ["bf16-fp32state", "bf16-fp32master", "fp16-fp32master"])
def test_our_production_adam_is_correctly_rounded_in_every_role(name):
    """adamspec[...] in lock-step on the default suite's open-loop problems: 0 ULP on param,
    m, v and master (our production claims correct rounding of every stored value)."""
    problems = [p for p in suite("default") if p.name in ("typical", "mixed-scales", "mlp")]
    traces = [record_trace("adamspec[torch.Adam]", p, name, 0) for p in problems]
    assert all(t.status == "ok" for t in traces), [t.detail for t in traces]
    errors = worst([e for t in traces for e in lockstep(t, entry("torch.Adam").variant)])
    expected = {"param", "m", "v"} | ({"master"} if precision_named(name).master else set())
    assert set(errors) == expected
    assert {c: e.ulp for c, e in errors.items()} == dict.fromkeys(expected, 0)
    last = traces[0].steps[-1].after
    assert last.m[0].dtype == np.float32
    assert last.params[0].dtype == NP[precision_named(name).param]


def test_production_master_path_rounds_the_stored_master_for_the_param():
    variant, hyper = entry("torch.Adam").variant, entry("torch.Adam").hyper(lr="0.01")
    rng = np.random.default_rng(3)
    params = rng.standard_normal(4096).astype(ml_dtypes.bfloat16)
    grads = rng.standard_normal(4096).astype(ml_dtypes.bfloat16)
    state = adam.init(params, variant, master_weights=True)
    new_params, new = adam.step(params, grads, state, hyper, variant)
    np.testing.assert_array_equal(new_params, new.master[0].astype(ml_dtypes.bfloat16))


def test_an_adapter_without_the_mix_is_skipped_with_its_reason():
    problem = suite("default")[0]
    trace = record_trace("torch.Adam(foreach=False)", problem, "bf16-fp32master", 0)
    assert trace.status == "skipped"
    assert "does not run precision bf16-fp32master" in trace.detail


#: toy bug -> (category, explanation it must start with)
EXPECTED = {
    "none": (ROUNDING_ONLY, "within budget"),
    "master_rounded": (MASTER_WEIGHTS, MASTER_ROUNDED),
    "master_absent": (MASTER_WEIGHTS, MASTER_ABSENT),
}


@pytest.mark.parametrize("mix", ["bf16-fp32master", "fp16-fp32master"])
@pytest.mark.parametrize("bug", list(BUGS))
def test_a_kernel_keeping_its_master_wrongly_is_caught_and_named(bug, mix):
    register_mixed_toys()
    problems = [p for p in suite("default") if p.name in ("typical", "mixed-scales", "late-steps")]
    traces = [record_trace(f"toy-mixed.{bug}", p, mix, 0) for p in problems]
    assert all(t.status == "ok" for t in traces), [t.detail for t in traces]
    found = classify(traces, entry("torch.Adam").variant)
    category, explanation = EXPECTED[bug]
    assert found.category == category
    assert found.explanation.startswith(explanation), found.explanation
    if bug != "none":
        master = worst([e for t in traces for e in lockstep(t, entry("torch.Adam").variant)])
        assert master["master"].ulp > 1000  # float32 ULPs: far beyond the 2-ULP budget
