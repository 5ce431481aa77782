"""PyTorch optimizers and the tutorial's hand-written kernel, driven through the adapter protocol.

Budgets are the worst ULP distances measured against the oracle's exact step
(lock-step, float32, seeds fixed in tests/adapter_helpers.py), each with why
the framework is not correctly rounded. They are regression bounds, not
tolerances chosen to pass: a change in them is a change in the framework.
"""

from __future__ import annotations

import numpy as np
import pytest
from adapter_helpers import assert_state_roundtrip, initial_state, lockstep_errors

from adamspec.impl.adapters import REGISTRY, Unsupported, load_registry, make_adapter
from adamspec.impl.frameworks import FrameworkMissing
from adamspec.oracles import OracleState
from adamspec.oracles import step as oracle_step
from adamspec.oracles.metrics import ulp_distance
from adamspec.spec import SparseRows, entry, make_hyper
from adamspec.spec.formats import FLOAT32

needs_torch = pytest.mark.needs("torch")

# m is computed by torch as exp_avg.lerp_(g, 1 - beta1) = m + 0.1 (g - m) in float32:
# where m' nearly cancels, the absolute error of one float32 rounding of (g - m) is
# hundreds of ULPs of the small result (measured 344 at 20 steps, 270 for AdamW's data,
# 98 for RAdam's). v (mul_ then addcmul_) is 1-2 ULP; the parameter, moved by ~1e-3 of
# itself, rounds correctly in every measured step (0 ULP), or 1 ULP with decoupled decay
# (theta * (1 - lr wd) is rounded before the update is subtracted).
ADAM_20 = {"param": 0, "m": 344, "v": 2}
BUDGETS = {
    "torch.Adam(foreach=False)": ({"param": 0, "m": 1, "v": 1}, {**ADAM_20, "v": 1}),
    "torch.Adam(foreach=True)": ({"param": 0, "m": 1, "v": 1}, {**ADAM_20, "v": 1}),
    # fused computes v = beta2 v + (1 - beta2) g^2 in one expression: 2 ULP measured
    "torch.Adam(fused=True)": ({"param": 0, "m": 1, "v": 1}, ADAM_20),
    "torch.Adam(amsgrad=True)": (
        {"param": 0, "m": 1, "v": 1, "v_max": 1},
        {"param": 0, "m": 344, "v": 1, "v_max": 1},
    ),
    "torch.Adam(amsgrad=True,fused=True)": (
        {"param": 0, "m": 1, "v": 1, "v_max": 1},
        {"param": 0, "m": 344, "v": 2, "v_max": 2},
    ),
    "torch.Adam(decoupled_weight_decay=True)": (
        {"param": 1, "m": 1, "v": 1},
        {"param": 1, "m": 270, "v": 1},
    ),
    "torch.AdamW(foreach=False)": ({"param": 1, "m": 1, "v": 1}, {"param": 1, "m": 270, "v": 1}),
    "torch.RAdam(foreach=False)": ({"param": 0, "m": 1, "v": 1}, {"param": 0, "m": 98, "v": 2}),
    # maximize with L2 (weight_decay 0.01): g = -g + lambda theta is one more float32
    # rounding before g^2, measured v 2 ULP after one step, param 1 after 20
    "torch.Adam(maximize=True)": ({"param": 0, "m": 1, "v": 2}, {"param": 1, "m": 98, "v": 2}),
}


def _hyper(name: str):
    doc = entry(REGISTRY[name].documented)
    return doc.hyper(weight_decay="0.01") if "weight_decay" in doc.defaults else doc.hyper()


def test_registry_lists_every_torch_configuration_of_the_issue():
    load_registry()
    torch_names = {
        n
        for n, info in REGISTRY.items()
        if info.framework == "torch" and not info.eager_counterpart
    }  # the compiled twins: tests/test_compiled.py
    # the master-weight paths run one mixed precision each: tests/test_adapters_mixed.py
    master = {f"torch.{cls}(foreach=False)[{path}]" for cls in ("Adam", "AdamW")
              for path in ("param_dtype=bfloat16", "autocast=float16,GradScaler")}  # fmt: skip
    assert (
        set(BUDGETS) | {"torch.SparseAdam", "torch.Adam(capturable=True)"} | master == torch_names
    )


@needs_torch
@pytest.mark.parametrize("name", list(BUDGETS))
@pytest.mark.parametrize("steps", [1, 20], ids=["1-step", "20-steps"])
def test_lockstep_float32_within_measured_ulp(name, steps):
    load_registry()
    budget = BUDGETS[name][0 if steps == 1 else 1]
    errors = lockstep_errors(name, _hyper(name), "float32", steps=steps)
    for component, worst in errors.max_ulp.items():
        assert 0 <= worst <= budget[component], (name, component, worst, budget)


@needs_torch
def test_sparse_adam_with_duplicate_rows_matches_the_lazy_eps_hat_oracle():
    hyper = entry("torch.SparseAdam").hyper()
    adapter = make_adapter("torch.SparseAdam", hyper, "float32", [(5, 3)])
    start = initial_state([(5, 3)], "float32", amsgrad=False, step=3)
    adapter.set_state(start.copy())
    rows = SparseRows([3, 0, 3], np.array([[1, -1, 0.5], [2, 2, 2], [3, 1, -0.5]], np.float32), 5)
    adapter.step([rows])
    got = adapter.get_state()
    ref = oracle_step(entry("torch.SparseAdam").variant, hyper, start.params[0], rows,
                      OracleState(m=start.m[0], v=start.v[0], step=3))  # fmt: skip
    # float32 ops one by one: 1 ULP measured on m and v, the parameter exact
    for component, got_value, budget in (("param", got.params[0], 0), ("m", got.m[0], 1),
                                         ("v", got.v[0], 1)):  # fmt: skip
        assert ulp_distance(got_value, ref.value(component), FLOAT32).max() <= budget
    untouched = [1, 2, 4]  # lazy: rows absent from the gradient do not move
    np.testing.assert_array_equal(got.params[0][untouched], start.params[0][untouched])


@needs_torch
def test_capturable_is_unsupported_on_cpu_with_torchs_reason():
    adapter = make_adapter("torch.Adam(capturable=True)", _hyper("torch.Adam(foreach=False)"))
    adapter.set_state(initial_state([(4,)], "float32", amsgrad=False))
    with pytest.raises(Unsupported, match="capturable=True, params and state_steps must be on"):
        adapter.step([np.ones(4, np.float32)])


@needs_torch
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_state_round_trip_is_bit_exact(dtype):
    assert_state_roundtrip("torch.Adam(amsgrad=True)", _hyper("torch.Adam(amsgrad=True)"), dtype)
    assert_state_roundtrip("torch.Adam(foreach=True)", _hyper("torch.Adam(foreach=True)"), dtype)


@needs_torch
def test_lambda_lr_schedule_drives_each_step():
    """Seed 003's LambdaLR(lambda epoch: 0.67 ** epoch): step t uses lr 0.67^(t-1) * base."""
    hyper = make_hyper(lr=lambda t: 0.01 * 0.67 ** (t - 1))
    errors = lockstep_errors("torch.Adam(foreach=False)", hyper, "float32", steps=4)
    assert errors.max_ulp["param"] <= 1  # float32 ops; the schedule itself must match exactly


def test_missing_framework_is_a_skip_reason(monkeypatch):
    import adamspec.impl.adapters.base as base

    def missing(name):
        raise FrameworkMissing(f"skipped: {name} not installed (pip install 'adamspec[torch]')")

    monkeypatch.setattr(base, "require", missing)
    with pytest.raises(FrameworkMissing, match=r"^skipped: torch not installed"):
        make_adapter("torch.Adam(foreach=True)", _hyper("torch.Adam(foreach=True)"))


# ---------------------------------------------------------------- the tutorial kernel


def test_tutorial_kernel_weight_is_adam_but_its_bias_second_moment_is_not_squared():
    """seeds/003: ``self.v_db = self.beta2*self.v_db + (1-self.beta2)*(db)`` (no square).
    adamspec reports it: the weight tensor is Adam to float32 rounding, the bias is not."""
    hyper = entry("paper.algorithm1").hyper()
    shapes = ((5,), (1,))
    weight = lockstep_errors("user.AdamOptim(tutorial)", hyper, "float32", shapes, steps=20,
                             tensors=[0])  # fmt: skip
    # weight: float32 ops one by one; measured at most 13 ULP (m, cancellation), v 1
    assert 0 <= weight.max_ulp["m"] <= 13 and 0 <= weight.max_ulp["v"] <= 2
    bias = lockstep_errors("user.AdamOptim(tutorial)", hyper, "float32", shapes, steps=1,
                           tensors=[1])  # fmt: skip
    assert bias.max_ulp["v"] > 10**6 or bias.max_ulp["v"] == -1  # not squared: way off
    adapter = make_adapter("user.AdamOptim(tutorial)", hyper, "float32", shapes)
    start = initial_state(shapes, "float32", amsgrad=False)
    adapter.set_state(start)
    adapter.step([np.ones(5, np.float32), np.array([-2.0], np.float32)])
    v_db = adapter.get_state().v[1][0]
    assert v_db == np.float32((1 - 0.999) * -2.0)  # the bug, reproduced exactly
