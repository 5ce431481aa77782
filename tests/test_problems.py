"""The generated problems (harness/problems.py) and the hypothesis strategies built on them."""

from __future__ import annotations

import math
import pickle
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adamspec.harness.problems import (
    DTYPES,
    PROBLEMS,
    SUITES,
    Problem,
    problem,
    round_to_dtype,
    suite,
)
from adamspec.harness.strategies import (
    GRADIENT_REGIMES,
    gradient_arrays,
    hypers,
    problems,
    runs,
    sparse_rows,
    states,
)
from adamspec.oracles import OracleState, trajectory
from adamspec.oracles.rounding import numpy_dtype, round_exact
from adamspec.spec.axes import AmsGrad, BiasCorrection, EpsPlacement, HyperPrecision
from adamspec.spec.catalog import entries
from adamspec.spec.formats import format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import make_hyper
from adamspec.spec.variant import Variant, VariantError

ALL = list(PROBLEMS.values())
CLOSED = [p for p in ALL if p.regime == "closed"]
SEEDED_START = [p for p in ALL if p.name not in ("keras-doc", "rosenbrock")]


def np_dtype(dtype: str) -> np.dtype:
    return np.dtype(numpy_dtype(format_named(dtype)))


def bits(grads) -> list[bytes]:
    """Everything a gradient list holds, as bytes (so -0.0 and NaN payloads count)."""
    out = []
    for g in grads:
        if isinstance(g, SparseRows):
            out += [np.asarray(g.indices).tobytes(), g.values.tobytes(), bytes([g.num_rows])]
        else:
            out.append(g.tobytes())
    return out


def dense(g, shape) -> np.ndarray:
    if isinstance(g, SparseRows):
        out = np.zeros(shape)
        np.add.at(out, np.asarray(g.indices), np.asarray(g.values, dtype=np.float64))
        return out
    return np.asarray(g, dtype=np.float64)


# ------------------------------------------------------------------ lookup and suites


def test_lookup_errors_name_the_allowed_values():
    with pytest.raises(ValueError, match=r"^suite='x' is unknown; allowed: quick, default, "):
        suite("x")
    with pytest.raises(ValueError, match=r"^problem='x' is unknown; allowed: typical, "):
        problem("x")
    assert problem("rosenbrock").regime == "closed"
    assert suite("quick") is SUITES["quick"]


def test_suites_have_the_promised_sizes():
    quick = suite("quick")
    assert 11 <= len(quick) <= 13 and all(p.steps <= 4 for p in quick)
    names = {p.name for p in quick}
    assert {
        "typical",
        "tiny-near-eps",
        "sign-flips-decreasing",
        "sparse-rows",
        "weight-decay",
    } <= names
    assert sum(p.regime == "closed" for p in quick) >= 2
    default = suite("default")
    assert len({p.name for p in default}) == len(default) == 18
    assert all(p.coordinates <= 32 and p.steps == 10 for p in default)
    disc = suite("discriminating")
    assert len(disc) <= 6 and all(p.steps == 3 and p.coordinates <= 8 for p in disc)
    # the quick suite holds every discriminating problem (the closed loop only in full size)
    assert {p for p in disc if p.name.startswith("disc-")} <= set(quick)
    long = suite("long")
    assert {p.regime for p in long} == {"open", "closed"}
    assert all(p.steps == 10_000 and 2 <= p.coordinates <= 4 for p in long)
    for p in (*quick, *default, *disc, *long):
        assert p.description and p.regime in ("open", "closed")
        make_hyper(**p.hyper)  # overrides are valid hyperparameters


def test_problems_pickle_and_compare():
    for p in ALL:
        q = pickle.loads(pickle.dumps(p))
        assert q == p and hash(q) == hash(p)
        assert bits(q.gradients(0, q.initial_params("float32", 1), "float32", 1)) == bits(
            p.gradients(0, p.initial_params("float32", 1), "float32", 1)
        )


def test_resizing_is_validated():
    q = problem("quadratic").with_(steps=2, shapes=[[3]])
    assert (q.steps, q.shapes, q.kind, q.name) == (2, ((3,),), "quadratic", "quadratic")
    assert problem("typical").with_(shapes=((5,),)).shapes == ((5,),)
    with pytest.raises(ValueError, match="steps=0 must be an integer >= 1"):
        problem("typical").with_(steps=0)
    with pytest.raises(ValueError, match="empty"):
        problem("typical").with_(shapes=())
    with pytest.raises(ValueError, match="fixed shapes"):
        problem("rosenbrock").with_(shapes=((3,),))
    with pytest.raises(ValueError, match="2-D table"):
        problem("sparse-rows").with_(shapes=((8,),))
    with pytest.raises(ValueError, match="hyper is invalid"):
        Problem("typical", "open", ((2,),), 1, {"beta1": "1.5"})
    with pytest.raises(ValueError, match="is 'open'"):
        Problem("typical", "closed", ((2,),), 1)


# ------------------------------------------------------------------ determinism and dtypes


@pytest.mark.parametrize("p", ALL, ids=lambda p: p.name)
def test_same_arguments_give_the_same_bits_in_every_dtype(p: Problem):
    for dtype in DTYPES:
        runs_ = []
        for _ in range(2):
            params = p.initial_params(dtype, 7)
            m, v, v_max = p.initial_state(dtype, 7, amsgrad=True)
            grads = [p.gradients(k, params, dtype, 7) for k in range(min(p.steps, 3))]
            runs_.append([bits(params), bits(m), bits(v), bits(v_max), *map(bits, grads)])
        assert runs_[0] == runs_[1]
        for a in (*params, *m, *v, *v_max):
            assert a.dtype == np_dtype(dtype) and a.shape in p.shapes
        for gs in grads:
            assert len(gs) == len(p.shapes)
            for g, shape in zip(gs, p.shapes, strict=True):
                if isinstance(g, SparseRows):
                    assert p.sparse and g.num_rows == shape[0]
                    assert g.values.dtype == np_dtype(dtype) and g.values.shape[1:] == shape[1:]
                else:
                    assert g.dtype == np_dtype(dtype) and g.shape == shape


@pytest.mark.parametrize("p", ALL, ids=lambda p: p.name)
def test_other_seeds_give_other_values(p: Problem):
    params = [p.initial_params("float64", s) for s in (0, 1)]
    if p in SEEDED_START:
        assert bits(params[0]) != bits(params[1])
    if p.regime == "open":
        a, b = (p.gradients(0, None, "float64", s) for s in (0, 1))
        assert bits(a) != bits(b)


@pytest.mark.parametrize("p", ALL, ids=lambda p: p.name)
def test_gradients_are_finite_in_every_dtype(p: Problem):
    for dtype in DTYPES:
        params = p.initial_params(dtype, 0)
        for k in range(p.steps):
            for g in p.gradients(k, params, dtype, 0):
                values = g.values if isinstance(g, SparseRows) else g
                assert np.isfinite(values.astype(np.float64)).all(), (dtype, k)


@pytest.mark.parametrize("p", [p for p in ALL if p.sparse], ids=lambda p: p.name)
def test_sparse_problems_repeat_row_indices_at_every_step(p: Problem):
    params = p.initial_params("float32", 3)
    for k in range(p.steps):
        g = p.gradients(k, params, "float32", 3)[0]
        assert isinstance(g, SparseRows)
        idx = np.asarray(g.indices)
        assert len(set(idx.tolist())) < len(idx)
        assert len(set(idx.tolist())) < g.num_rows or g.num_rows <= 2  # some rows untouched


# ------------------------------------------------------------------ rounding


@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(DTYPES))
def test_round_to_dtype_is_correct_rounding(x: float, dtype: str):
    fmt = format_named(dtype)
    expected = round_exact(Fraction(x), fmt)
    got = float(round_to_dtype([x], dtype)[0])
    assert math.copysign(1, got) == math.copysign(1, expected) or expected == 0
    assert got == expected or (math.isinf(got) and math.isinf(expected))


def test_bfloat16_rounds_once_where_a_float32_detour_rounds_twice():
    # 1 + 2**-8 + 2**-30 is just above the bfloat16 midpoint 1 + 2**-8; via float32 it lands on
    # the midpoint and ties to even (1.0).
    x = 1 + 2**-8 + 2**-30
    assert float(round_to_dtype([x], "bfloat16")[0]) == 1 + 2**-7
    assert float(round_to_dtype([-x], "bfloat16")[0]) == -(1 + 2**-7)


# ------------------------------------------------------------------ regimes


def _open_grads(name: str, dtype: str = "float64", seed: int = 0) -> list[np.ndarray]:
    p = problem(name)
    return [
        np.concatenate([g.ravel() for g in p.gradients(k, None, dtype, seed)])
        for k in range(p.steps)
    ]


def test_open_regimes_have_their_magnitudes():
    tiny = np.abs(np.concatenate(_open_grads("tiny-near-eps")))
    assert tiny.min() >= 1e-9 and tiny.max() <= 1e-6
    for dtype in ("float64", "float32", "bfloat16"):
        huge = np.abs(np.concatenate(_open_grads("huge", dtype)).astype(np.float64))
        assert huge.min() >= 1e15 * (1 - 2**-7) and huge.max() <= 1e30 * (1 + 2**-7)
    half = np.abs(np.concatenate(_open_grads("huge", "float16")).astype(np.float64))
    assert half.max() <= 65504 and half.min() >= 600
    mixed = np.abs(np.concatenate(_open_grads("mixed-scales")))
    assert mixed.min() < 1e-20 and mixed.max() > 1e20
    for dtype in DTYPES:
        fmt = format_named(dtype)
        sub = np.abs(np.concatenate(_open_grads("subnormals", dtype)).astype(np.float64))
        is_sub = (sub > 0) & (sub < 2.0**fmt.emin)
        assert is_sub.mean() > 0.6 and is_sub.mean() < 1


def test_exact_zeros_keep_every_third_coordinate_at_zero():
    grads = np.array(_open_grads("exact-zeros"))
    assert (grads[:, ::3] == 0).all()
    assert (grads == 0).mean() > 0.5 and np.signbit(grads[grads == 0]).any()


def test_sign_flips_decrease_so_the_amsgrad_maximum_binds():
    grads = np.array(_open_grads("sign-flips-decreasing"))
    assert (np.sign(grads[1:]) == -np.sign(grads[:-1])).all()
    assert (np.abs(grads[1:]) < np.abs(grads[:-1])).all()
    v = np.zeros(grads.shape[1])
    for k, g in enumerate(grads):  # raw v with beta2 = 0.999 shrinks from the second step on
        new = 0.999 * v + 0.001 * g * g
        assert k == 0 or (new < v).all()
        v = new


def test_keras_doc_first_gradient_is_ten():
    p = problem("keras-doc")
    for dtype in DTYPES:
        params = p.initial_params(dtype, 123)
        assert float(params[0][0]) == 10.0
        assert float(p.gradients(0, params, dtype, 123)[0][0]) == 10.0


def test_states_after_start_step_are_consistent():
    for p in ALL:
        for dtype in DTYPES:
            m, v, v_max = p.initial_state(dtype, 0, amsgrad=True)
            _, _, none = p.initial_state(dtype, 0, amsgrad=False)
            assert none is None
            for a, b, c in zip(m, v, v_max, strict=True):
                assert (b >= 0).all() and (c >= b).all()
                if p.start_step == 0:
                    assert not a.any() and not b.any() and not c.any()
                elif dtype != "float16":
                    assert (b > 0).any()
    m, v, v_max = problem("disc-amsgrad").initial_state("float32", 0, amsgrad=True)
    assert (v_max[0] > v[0]).all()  # the state AMSGrad binds on


# ------------------------------------------------------------------ closed loops


@pytest.mark.parametrize("p", CLOSED, ids=lambda p: p.name)
def test_closed_loop_gradients_follow_params(p: Problem):
    params = p.initial_params("float64", 0)
    moved = [a + 0.25 for a in params]
    assert bits(p.gradients(0, params, "float64", 0)) != bits(p.gradients(0, moved, "float64", 0))
    # "float64 arithmetic, then one rounding": float32 gradients are the float64 ones rounded.
    p32 = p.initial_params("float32", 0)
    g64 = p.gradients(0, [a.astype(np.float64) for a in p32], "float64", 0)
    g32 = p.gradients(0, p32, "float32", 0)
    for a, b in zip(g64, g32, strict=True):
        a = a.values if isinstance(a, SparseRows) else a
        b = b.values if isinstance(b, SparseRows) else b
        assert round_to_dtype(a, "float32").tobytes() == b.tobytes()
    with pytest.raises(ValueError, match="expected"):
        p.gradients(0, params[:-1] if len(params) > 1 else [np.zeros(7)], "float64", 0)


@pytest.mark.parametrize("p", CLOSED, ids=lambda p: p.name)
def test_closed_loop_gradients_match_finite_differences(p: Problem):
    # Central differences with h = 1e-6 |x|: truncation error ~ h**2 |f'''| ~ 1e-12 and
    # cancellation error ~ 2**-52 |f| / h ~ 1e-10 |f| here, so 1e-6 relative to the largest
    # gradient (plus 1e-8 absolute) leaves four orders of margin yet catches any wrong term.
    rng = np.random.default_rng(5)
    start = p.initial_params("float64", 1)
    for params in (start, [a + 0.3 * rng.standard_normal(a.shape) for a in start]):
        grads = p.gradients(2, params, "float64", 1)
        for i, (g, shape) in enumerate(zip(grads, p.shapes, strict=True)):
            g = dense(g, shape)
            scale = max(1.0, float(np.abs(g).max()))
            for j in np.ndindex(shape):
                h = 1e-6 * max(1.0, abs(params[i][j]))
                plus = [a.copy() for a in params]
                minus = [a.copy() for a in params]
                plus[i][j] += h
                minus[i][j] -= h
                fd = (p.loss(plus, 2, 1) - p.loss(minus, 2, 1)) / (plus[i][j] - minus[i][j])
                assert abs(fd - g[j]) <= 1e-6 * scale + 1e-8, (p.name, i, j, fd, g[j])


def test_open_loop_problems_have_no_loss():
    with pytest.raises(ValueError, match="open-loop"):
        problem("typical").loss(problem("typical").initial_params("float64", 0))


# ------------------------------------------------------------------ the discriminating suite


def _exactly_equivalent(variant: Variant, axis: str, new, dtype: str) -> bool:
    """Single-axis changes that cannot change an exact result, whatever the gradients."""
    pair = {getattr(variant, axis), new}
    if axis.startswith("bias_correction_") and pair == {
        BiasCorrection.POWER,
        BiasCorrection.ACCUMULATED,
    }:
        return True  # the accumulated power is beta^t exactly; only rounded powers differ
    if axis == "eps_placement" and pair <= {
        EpsPlacement.ALGORITHM_1,
        EpsPlacement.EPS_HAT_ADAPTIVE,
        EpsPlacement.EPS_ROOT,
    }:
        return True  # adaptive eps-hat is algorithm 1 rewritten; eps_root is 0 by default
    if axis in ("eps_placement", "amsgrad") and variant.bias_correction_v is BiasCorrection.NONE:
        return True  # c2 = 1: eps-hat is eps and every AMSGrad form takes the same maximum
    if axis == "hyper_precision" and dtype == "float32":
        return pair == {HyperPrecision.PARAM_DTYPE, HyperPrecision.FLOAT32}
    return False


def _oracle_states(variant: Variant, e, dtype: str) -> list[bytes]:
    amsgrad = variant.amsgrad is not AmsGrad.OFF
    out = []
    for p in suite("discriminating"):
        if p.regime != "open":  # open loops: the gradients are known before the run
            continue
        params = p.initial_params(dtype, 0)
        m, v, v_max = p.initial_state(dtype, 0, amsgrad)
        grads = [p.gradients(k, params, dtype, 0) for k in range(p.steps)]
        state = OracleState(m=m, v=v, v_max=v_max, step=p.start_step)
        for r in trajectory(variant, e.hyper(**p.hyper), params, grads, state, dtype=dtype):
            out += [a.tobytes() for c in ("param", "m", "v", "v_max") for a in r.rounded[c]]
    return out


def _single_axis_changes(every: bool):
    seen = set()
    for e in entries():
        for axis, current in e.variant.axes().items():
            values = (not current,) if axis == "maximize" else type(getattr(e.variant, axis))
            for new in values:
                if new == getattr(e.variant, axis):
                    continue
                try:
                    changed = e.variant.replace(**{axis: new})
                except VariantError:
                    continue
                key = (axis, str(getattr(e.variant, axis)), str(new))
                if _exactly_equivalent(e.variant, axis, new, "float32") or (
                    not every and key in seen
                ):
                    continue
                seen.add(key)
                yield e, axis, changed


def _check_discriminates(every: bool) -> None:
    undistinguished = []
    for e, axis, changed in _single_axis_changes(every):
        if _oracle_states(e.variant, e, "float32") == _oracle_states(changed, e, "float32"):
            undistinguished.append(f"{e.name}: {axis} -> {getattr(changed, axis)}")
    assert not undistinguished


def test_discriminating_suite_separates_every_axis_change():
    """Each kind of single-axis change (first catalog variant where it applies) shows in float32."""
    _check_discriminates(every=False)


@pytest.mark.slow
def test_discriminating_suite_separates_every_change_of_every_catalog_variant():
    _check_discriminates(every=True)


# ------------------------------------------------------------------ strategies


def _finite_in(a: np.ndarray) -> bool:
    return bool(np.isfinite(a.astype(np.float64)).all())


@given(st.sampled_from(DTYPES), st.sampled_from(GRADIENT_REGIMES), st.data())
def test_gradient_arrays_are_finite_arrays_of_the_dtype(dtype: str, regime: str, data):
    a = data.draw(gradient_arrays(dtype, (2, 3), regime))
    assert a.dtype == np_dtype(dtype) and a.shape == (2, 3) and _finite_in(a)
    mags = np.abs(a.astype(np.float64))
    fmt = format_named(dtype)
    if regime == "subnormals":
        assert ((mags > 0) & (mags < 2.0**fmt.emin)).all()
    if regime == "huge":
        assert (mags >= 2.0 ** min(50, fmt.emax - 7)).all()


@given(st.sampled_from(DTYPES), st.data())
def test_sparse_rows_always_repeat_a_row(dtype: str, data):
    g = data.draw(sparse_rows((3, 2), dtype))
    idx = np.asarray(g.indices)
    assert len(set(idx.tolist())) < len(idx) and g.num_rows == 3
    assert g.values.shape == (len(idx), 2) and g.values.dtype == np_dtype(dtype)


@given(hypers())
def test_hypers_construct(values: dict[str, str]):
    h = make_hyper(**values)
    assert 0 < h.beta1 < 1 and 0 < h.beta2 < 1 and h.eps >= 0 and h.weight_decay >= 0


@given(st.sampled_from(DTYPES), st.booleans(), st.data())
def test_states_are_valid(dtype: str, amsgrad: bool, data):
    s = data.draw(states(dtype, [(2,), (1, 3)], amsgrad))
    assert s.step >= 0 and (s.v_max is not None) == amsgrad
    for i, shape in enumerate([(2,), (1, 3)]):
        assert s.m[i].shape == s.v[i].shape == shape and s.v[i].dtype == np_dtype(dtype)
        assert _finite_in(s.m[i]) and (s.v[i] >= 0).all() and not np.signbit(s.v[i]).any()
        if amsgrad:
            assert (s.v_max[i] >= s.v[i]).all()


@given(runs())
def test_drawn_problems_run(run):
    p, dtype, seed = run
    assert p.steps <= 3 and dtype in p.meaningful_dtypes
    params = p.initial_params(dtype, seed)
    p.initial_state(dtype, seed, amsgrad=True)
    for k in range(p.steps):
        assert len(p.gradients(k, params, dtype, seed)) == len(p.shapes)


@given(problems(regimes=["closed"]))
def test_problems_filter_by_regime(p: Problem):
    assert p.regime == "closed"


def test_problem_strategy_rejects_unknown_regimes():
    with pytest.raises(ValueError, match="unknown"):
        problems(regimes=["nope"])


def test_resized_changes_open_loop_sizes_and_every_problems_steps():
    from adamspec.harness.problems import MAX_SIZE, resized

    assert resized(problem("typical"), 100, 3).shapes == ((100,), (100,))
    assert resized(problem("typical"), 100, 3).steps == 3
    # a sparse table keeps its row width (3): ceil(100 / 3) rows
    assert resized(problem("sparse-rows"), 100).shapes == ((34, 3),)
    # closed loops keep the shapes their data fix; their steps change
    mlp = resized(problem("mlp"), 100, 2)
    assert (mlp.shapes, mlp.steps) == (problem("mlp").shapes, 2)
    assert resized(problem("typical")) == problem("typical")
    for bad in (0, -1, MAX_SIZE + 1, 2.5, True):
        with pytest.raises(ValueError, match=r"--size .* must be an integer in \[1, "):
            resized(problem("typical"), bad)


def test_the_scale_suite_straddles_vector_block_and_index_boundaries():
    scale = {p.name: p for p in suite("scale")}
    sizes = [p.coordinates for p in scale.values()]
    assert min(sizes) < 16  # less than one 512-bit vector of float32
    assert any(16 < n < 32 and n % 16 for n in sizes)  # one vector and a tail
    blocks = scale["scale-blocks"].coordinates
    assert blocks // 4096 >= 8 and blocks % 1024 and blocks < 2**16  # many blocks and a tail
    assert any(2**16 < n < 2**17 for n in sizes) and any(2**24 < n < 2**25 for n in sizes)
    transposed = scale["scale-transposed"]
    assert transposed.layout == "transposed"
    (param,) = transposed.initial_params("float32", 0)
    (grad,) = transposed.gradients(0, [param], "float32", 0)
    assert param.flags.f_contiguous and not param.flags.c_contiguous and grad.flags.f_contiguous
    long = scale["scale-long"]
    assert long.steps >= 1000 and 4096 < long.coordinates < 2**16
    assert any(p.sparse for p in scale.values())
    assert all(p.regime == "open" for p in scale.values())
