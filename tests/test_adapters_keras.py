"""Keras 3 Adam/AdamW on the tensorflow, jax and torch backends, each in its own worker process.

Budgets are the worst ULP distances measured against the oracle (lock-step,
float32), with the reason: Keras updates ``m += (g - m)(1 - beta1)`` and
``v += (g^2 - v)(1 - beta2)`` in float32, so where the new moment nearly cancels
one rounding of ``g - m`` is thousands of ULPs of the small result (measured:
m 4324, v 212 on tensorflow and jax; m 3467 on the torch backend, whose own
foreach implementation rounds differently). The parameter is within 1 ULP.
"""

from __future__ import annotations

import numpy as np
import pytest
from adapter_helpers import assert_state_roundtrip, initial_state, lockstep_errors

from impl.adapters import REGISTRY, load_registry, make_adapter
from impl.frameworks import availability
from oracles import OracleState
from oracles import step as oracle_step
from oracles.metrics import ulp_distance
from spec import SparseRows, entry
from spec.formats import FLOAT32

pytestmark = pytest.mark.skipif(
    not availability("keras").available, reason=str(availability("keras").reason)
)

M_BUDGET = {"tensorflow": 4324, "jax": 4324, "torch": 3467}
CONFIGS = [("keras.Adam", "keras.Adam"), ("keras.Adam(amsgrad=True)", "keras.Adam[amsgrad]"),
           ("keras.AdamW", "keras.AdamW")]  # fmt: skip
BACKENDS = ("tensorflow", "jax", "torch")


def test_every_backend_and_configuration_is_registered():
    load_registry()
    for backend in BACKENDS:
        for name, documented in CONFIGS:
            assert REGISTRY[f"{name}[{backend}]"].documented == documented


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "documented"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_one_and_twenty_lockstep_steps_within_measured_ulp(name, documented, backend):
    errors = lockstep_errors(f"{name}[{backend}]", entry(documented).hyper(), "float32", steps=20)
    budget = {"param": 1, "m": M_BUDGET[backend], "v": 212, "v_max": 212}
    for component, worst in errors.max_ulp.items():
        assert 0 <= worst <= budget[component], (name, backend, component, worst)
    # the first step alone (from zero moments): m 3, v and v_max 212 (the 1 - beta_2
    # coefficient, see test_one_step_and_state_round_trip), param 1
    first = {"param": 1, "m": 3, "v": 212, "v_max": 212}
    for component, worst in errors.per_step[0].items():
        assert 0 <= worst <= first[component], ("step 1", name, backend, component, worst)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_step_and_state_round_trip(backend):
    name = f"keras.Adam[{backend}]"
    hyper = entry("keras.Adam").hyper()
    errors = lockstep_errors(name, hyper, "float32", steps=1)
    # Measured after one step: param 1, m 3, v 212 ULP. The 212 is not arithmetic noise:
    # Keras forms 1 - beta_2 from the Python float (binary64) and only then casts it to
    # float32 (fl32(0.001)), while the catalog's model holds beta_2 in float32 and
    # subtracts exactly (1 - fl32(0.999)): the coefficients differ by 1.3e-5 relative.
    # optax and TF.js do the same (see their tests); the spec axis for it is still missing.
    budget = {"param": 1, "m": 3, "v": 212}
    for component, worst in errors.max_ulp.items():
        assert 0 <= worst <= budget[component], (component, worst)
    assert_state_roundtrip(name, hyper, "float32")


def test_sparse_duplicates_are_squared_then_summed_on_tensorflow():
    """Keras 3 densifies IndexedSlices after squaring: v receives sum(g_i^2), not (sum g_i)^2.
    Inferred from source in shared/research/impls.md §2 ("untested upstream"); measured here:
    square_then_sum within 138 ULP (float32 cancellation in v), sum_then_square millions off."""
    hyper = entry("keras.Adam").hyper()
    start = initial_state([(5, 3)], "float32", amsgrad=False, step=3)
    rows = SparseRows([3, 0, 3], np.array([[1, -1, 0.5], [2, 2, 2], [3, 1, -0.5]], np.float32), 5)
    with make_adapter("keras.Adam[tensorflow]", hyper, "float32", [(5, 3)]) as adapter:
        adapter.set_state(start.copy())
        adapter.step([rows])
        got = adapter.get_state()
    worst = {}
    for duplicates in ("square_then_sum", "sum_then_square"):
        variant = entry("keras.Adam").variant.replace(duplicates=duplicates)
        ref = oracle_step(variant, hyper, start.params[0], rows,
                          OracleState(m=start.m[0], v=start.v[0], step=3))  # fmt: skip
        worst[duplicates] = int(ulp_distance(got.v[0], ref.value("v"), FLOAT32).max())
    assert worst["square_then_sum"] <= 138
    assert worst["sum_then_square"] > 10**6


# Clipping (tensorflow backend, 20 lock-step steps): budgets measured as for plain Adam;
# the m/v figures are the float32 cancellation described above, the param stays 1 ULP.
CLIP_BUDGETS = {
    "clipnorm": ("0.5", {"param": 1, "m": 2051, "v": 214}),
    "clipvalue": ("0.1", {"param": 1, "m": 339, "v": 212}),
    "global_clipnorm": ("1.0", {"param": 1, "m": 443, "v": 212}),
}


@pytest.mark.parametrize("clip", list(CLIP_BUDGETS))
def test_clipping_within_measured_ulp(clip):
    value, budget = CLIP_BUDGETS[clip]
    hyper = entry("keras.Adam").hyper(**{clip: value})
    errors = lockstep_errors("keras.Adam[tensorflow]", hyper, "float32", steps=20)
    for component, worst in errors.max_ulp.items():
        assert 0 <= worst <= budget[component], (clip, component, worst)


def test_learning_rate_schedule_is_a_keras_schedule():
    """lr [0.01, 0.002, 0.0005] becomes a LearningRateSchedule indexed by iterations."""
    hyper = entry("keras.Adam").hyper(lr=[0.01, 0.002, 0.0005])
    errors = lockstep_errors("keras.Adam[jax]", hyper, "float32", steps=4)
    # measured param 9 ULP: with lr 0.01 the step is 10x larger relative to the param, so
    # the float32 error of alpha = lr sqrt(1 - b2^t)/(1 - b1^t) shows; a wrong schedule
    # entry would be off by millions
    assert 0 <= errors.max_ulp["param"] <= 9


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_ema_with_overwrite_matches_the_oracle(backend):
    """use_ema with ema_momentum 0.9, weights overwritten by the average every 3 steps
    (t = 3, 6, 9): measured 1 ULP on the average (one float32 rounding per term) and on
    the overwritten weights; m and v as for plain Adam."""
    hyper = entry("keras.Adam").hyper(use_ema=True, ema_momentum="0.9", ema_overwrite_frequency=3)
    errors = lockstep_errors(f"keras.Adam[{backend}]", hyper, "float32", steps=10)
    budget = {"param": 1, "m": 4324, "v": 212, "ema": 1}
    for component, worst in errors.max_ulp.items():
        assert 0 <= worst <= budget[component], (component, worst)
