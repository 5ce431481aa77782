"""Compiled implementations (``torch.compile``, XLA, ``jax.jit``) and their eager twins.

Every compiled registration names its eager counterpart (``AdapterInfo.eager_counterpart``).
Each pair is measured directly: from one state (step 3, nonzero moments, the seeds of
tests/adapter_helpers.py, float32), the ULP distance between the two implementations'
results per component, over 20 steps each taken by both from the same state (lock-step;
the first of them separately) and over 20 steps each runs on its own (free-running).
Each compiled implementation is also checked against the oracle (1 and 20 lock-step
steps) with measured budgets, like its eager twin in tests/test_adapters_*.py.

Verdicts (the measured reasons for the budgets below):

* XLA and jax.jit (Keras 3 on tensorflow and jax, tf_keras, optax): **same formula,
  rounding only.** XLA fuses ``m + (g - m)(1 - beta1)`` (Keras) and
  ``(1 - b1) g + b1 m`` (optax) into fused multiply-adds, one rounding fewer: m's
  cancellation error against the oracle drops from 266-270 to 103 (Keras) and 181
  (optax) ULP; the two differ by at most 35 ULP of m per step, 1 of v, 0 of the
  parameter.
* ``torch.compile``: **not the same hyperparameter precision.** Under compile the step
  counter stays a float32 tensor (``torch.optim.optimizer._get_value`` returns it when
  compiling), so ``beta ** step`` and ``1 - beta ** step`` are float32 arithmetic on
  ``float32(beta)``, where eager torch forms them in binary64 from the Python float: the
  compiled step is the catalog's ``param_dtype_via_float64`` (optax's), the eager one
  ``float64``. Where the update nearly cancels the parameter this is up to 1632 ULP of
  the parameter between the two (mlp, quadratic, logistic-regression problems), over the
  documented torch.Adam variant's budget (test_torch_compile_holds_hyperparameters_...).

The fast suite runs one pair per compiler (torch.compile Adam, Keras 3 Adam with XLA and
with jax.jit, tf_keras with XLA, optax adam), the rest are slow. The first compile of a
process costs seconds (torch's inductor about 17 s with a cold cache, XLA about 1 s);
every later test of the same configuration and shapes reuses it
(impl/adapters/compiled.py), so the 1-step, 20-step, pair and round-trip tests of one
configuration compile once.
"""

from __future__ import annotations

import numpy as np
import pytest
from adapter_helpers import (
    assert_lockstep_within,
    assert_state_roundtrip,
    assert_within,
    keras_doc_step,
    pair_errors,
)

from adamspec.harness.budgets import DEFAULT
from adamspec.harness.engine import record_trace
from adamspec.harness.fingerprint import score_variant
from adamspec.harness.problems import suite
from adamspec.impl.adapters import REGISTRY, State, Unsupported, load_registry, make_adapter
from adamspec.impl.adapters.base import AdapterInfo
from adamspec.spec import entry
from adamspec.spec.axes import HyperPrecision


def _compiled() -> dict[str, AdapterInfo]:
    load_registry()
    return {name: info for name, info in REGISTRY.items() if info.eager_counterpart}


# Measured ULP distances between compiled and eager (see the module docstring): per step
# from the same state (lock-step), its first step, and free-running trajectories, which
# drift apart as m's cancellation errors accumulate (m 144 ULP, the parameter up to 5).
XLA_PAIR = {
    "lock": {"param": 0, "m": 33, "v": 1},
    "first": {"param": 0, "m": 1, "v": 0},
    "free": {"param": 0, "m": 144, "v": 1},
}
OPTAX_PAIR = {
    "lock": {"param": 0, "m": 35, "v": 1},
    "first": {"param": 0, "m": 2, "v": 1},
    "free": {"param": 1, "m": 93, "v": 1},
}
TORCH_PAIR = {
    "lock": {"param": 1, "m": 33, "v": 1, "v_max": 1},
    "first": {"param": 1, "m": 1, "v": 0, "v_max": 0},
    "free": {"param": 5, "m": 144, "v": 1, "v_max": 1},
}
# Against the oracle, float32 lock-step from zero moments: (1 step, 20 steps). m: the
# cancellation error with fused multiply-adds (XLA 103, optax 181, inductor 154 ULP; eager
# 266-344); the parameter 1 ULP (torch 2: its float32 bias-correction scalars).
XLA_ORACLE = ({"param": 0, "m": 0, "v": 1}, {"param": 1, "m": 103, "v": 1})
XLA_ORACLE_W = ({"param": 1, "m": 0, "v": 1}, {"param": 1, "m": 103, "v": 1})
OPTAX_ORACLE = ({"param": 0, "m": 0, "v": 1}, {"param": 1, "m": 181, "v": 1})
TORCH_ORACLE = (
    {"param": 1, "m": 1, "v": 1, "v_max": 1},
    {"param": 2, "m": 154, "v": 1, "v_max": 1},
)

#: compiled name -> (pair budgets, oracle budgets, in the fast suite)
CASES = {
    "torch.compile(torch.Adam(foreach=False))": (TORCH_PAIR, TORCH_ORACLE, True),
    "torch.compile(torch.Adam(amsgrad=True))": (TORCH_PAIR, TORCH_ORACLE, False),
    "torch.compile(torch.AdamW(foreach=False))": (TORCH_PAIR, TORCH_ORACLE, False),
    "keras.Adam[tensorflow,jit_compile=True]": (XLA_PAIR, XLA_ORACLE, True),
    "keras.AdamW[tensorflow,jit_compile=True]": (XLA_PAIR, XLA_ORACLE_W, False),
    "keras.Adam[jax,jit_compile=True]": (XLA_PAIR, XLA_ORACLE, True),
    "keras.AdamW[jax,jit_compile=True]": (XLA_PAIR, XLA_ORACLE_W, False),
    "tf.function(jit_compile=True)(tf_keras.Adam)": (XLA_PAIR, XLA_ORACLE, True),
    "optax.adam": (OPTAX_PAIR, OPTAX_ORACLE, True),
    "optax.adamw": (OPTAX_PAIR, OPTAX_ORACLE, False),
}
NEEDS = {
    "torch": ("torch",),
    "keras": ("keras",),
    "tf.function": ("tf_keras",),
    "optax": ("optax",),
}


def _params() -> list:
    out = []
    for name, (_, _, fast) in CASES.items():
        needs = next(v for k, v in NEEDS.items() if name.startswith(k))
        if "[jax" in name:
            needs = (*needs, "jax")
        marks = [pytest.mark.needs(*needs)] + ([] if fast else [pytest.mark.slow])
        out.append(pytest.param(name, id=name, marks=marks))
    return out


def test_every_compiled_registration_links_its_registered_eager_twin():
    """Same framework, same documented variant, and the twin itself is eager."""
    compiled = _compiled()
    assert set(compiled) == set(CASES)
    for name, info in compiled.items():
        twin = REGISTRY[info.eager_counterpart]
        assert (twin.framework, twin.documented) == (info.framework, info.documented), name
        assert not twin.eager_counterpart, f"{name}'s twin {twin.name} is itself compiled"


@pytest.mark.parametrize("name", _params())
def test_compiled_and_eager_differ_by_rounding_within_measured_ulp(name):
    info, (pair, _, _) = _compiled()[name], CASES[name]
    errors = pair_errors(info.eager_counterpart, name, entry(info.documented).hyper())
    assert_within(errors.lockstep, pair["lock"], f"{name} lock-step")
    assert_within(errors.first, pair["first"], f"{name} first step")
    assert_within(errors.free, pair["free"], f"{name} free-running")


@pytest.mark.parametrize("name", _params())
@pytest.mark.parametrize("steps", [1, 20], ids=["1-step", "20-steps"])
def test_compiled_lockstep_against_the_oracle_within_measured_ulp(name, steps):
    oracle = CASES[name][1]
    assert_lockstep_within(name, _compiled()[name].documented, oracle[steps != 1], steps)


@pytest.mark.parametrize("name", _params())
def test_compiled_state_round_trip_is_bit_exact(name):
    assert_state_roundtrip(name, entry(_compiled()[name].documented).hyper(), "float32")


def _ulps(a: np.float32, b: np.float32) -> int:
    return abs(int(np.float32(a).view(np.int32)) - int(np.float32(b).view(np.int32)))


@pytest.mark.parametrize("name", _params())
def test_keras_doc_example(name):
    """From 10.0, lr 0.2, gradient 10.0, one step: float32(9.8 - 2 wd) (AdamW first decays
    by 0.2 * wd * 10), measured within 1 ULP for every compiled step and its twin, except
    torch.compile's AdamW, 2 ULP: one more than eager torch's, from the float32 bias
    corrections under compile. Compiled and eager differ by at most 1 ULP."""
    info = _compiled()[name]
    want = np.float32(9.8 - 2 * float(entry(info.documented).hyper().weight_decay))
    compiled, _ = keras_doc_step(name, info.documented)
    eager, _ = keras_doc_step(info.eager_counterpart, info.documented)
    assert _ulps(compiled, want) <= (2 if name.startswith("torch.compile(torch.AdamW") else 1)
    assert _ulps(compiled, eager) <= 1, (compiled, eager)


@pytest.mark.needs("torch")
def test_torch_compile_holds_hyperparameters_like_optax_not_like_eager_torch():
    """On the mlp and logistic-regression problems (updates that nearly cancel the
    parameter), the fingerprint tells the two apart. Eager torch.Adam is within budget of
    its documented float64 variant (0.67 of it) and closer to it than to
    param_dtype_via_float64 (1.0, at the edge of its budget since the parameter's scale
    counts the step's own roundings); the compiled step is over budget of float64 (1.25x)
    and within param_dtype_via_float64 (0.5): under compile the bias corrections are
    float32 powers of float32(beta)."""
    problems = [p for p in suite("default") if p.name in ("mlp", "logistic-regression")]
    documented = entry("torch.Adam").variant
    via_float64 = documented.replace(hyper_precision=HyperPrecision.PARAM_DTYPE_VIA_FLOAT64)
    scores = {}
    for name in ("torch.Adam(foreach=False)", "torch.compile(torch.Adam(foreach=False))"):
        traces = [record_trace(name, p, "float32", 0) for p in problems]
        scores[name] = [score_variant(traces, v, DEFAULT)[0] for v in (documented, via_float64)]
    eager, compiled = scores.values()
    assert eager[0] <= 1 and eager[0] < eager[1], scores
    assert compiled[1] <= 1 < compiled[0], scores


# ------------------------------------------------------------ never silently eager


@pytest.mark.needs("torch")
def test_torch_compile_with_dynamo_disabled_is_unsupported():
    """TORCH_COMPILE_DISABLE=1 (torch._dynamo.config.disable) makes torch.compile return
    the function unchanged: the compiled registration is then a skip with that reason."""
    import torch._dynamo

    with torch._dynamo.config.patch(disable=True):
        with pytest.raises(Unsupported, match="TorchDynamo is disabled"):
            make_adapter("torch.compile(torch.Adam(foreach=False))", entry("torch.Adam").hyper())


@pytest.mark.needs("torch")
def test_a_torch_step_that_captured_no_graph_is_unsupported(monkeypatch):
    """torch.compile that returns the function itself (what a fallback amounts to): the
    first step runs but captures no graph, so the adapter refuses to report it."""
    import torch

    monkeypatch.setattr(torch, "compile", lambda fn, **_: fn)
    hyper = entry("torch.Adam").hyper(lr="0.0123")  # a key no other test compiled
    with make_adapter("torch.compile(torch.Adam(foreach=False))", hyper, "float32", [(3,)]) as a:
        a.set_state(State([np.ones(3, np.float32)], [np.zeros(3, np.float32)],
                          [np.zeros(3, np.float32)], None, 0))  # fmt: skip
        with pytest.raises(Unsupported, match="captured no graph"):
            a.step([np.ones(3, np.float32)])


@pytest.mark.needs("optax")
def test_jitted_optax_with_jit_disabled_is_unsupported():
    import jax

    jax.config.update("jax_disable_jit", True)
    try:
        with pytest.raises(Unsupported, match="jax_disable_jit"):
            make_adapter("optax.adam", entry("optax.adam").hyper())
        with make_adapter("optax.adam(jit=False)", entry("optax.adam").hyper()):
            pass  # the eager twin does not need jit
    finally:
        jax.config.update("jax_disable_jit", False)


@pytest.mark.needs("tf_keras")
def test_xla_tf_keras_with_functions_run_eagerly_is_unsupported():
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    try:
        with pytest.raises(Unsupported, match="run_functions_eagerly"):
            make_adapter("tf.function(jit_compile=True)(tf_keras.Adam)",
                         entry("tf_keras.Adam").hyper())  # fmt: skip
    finally:
        tf.config.run_functions_eagerly(False)


@pytest.mark.slow
@pytest.mark.needs("keras", "jax")
def test_keras_jit_in_a_worker_with_jit_disabled_is_unsupported():
    """JAX_DISABLE_JIT=1 in the worker's environment: jax.jit would run the train step op
    by op, so the compiled registration is a skip with that reason."""
    from dataclasses import replace

    from adamspec.impl.adapters import register

    info = REGISTRY["keras.Adam[jax,jit_compile=True]"]
    env = {**info.options["env"], "JAX_DISABLE_JIT": "1"}
    name = "test-only keras.Adam[jax,jit_compile=True] with JAX_DISABLE_JIT"
    if name not in REGISTRY:
        register(replace(info, name=name, options={**info.options, "env": env}))
    with pytest.raises(Unsupported, match="jax_disable_jit"):
        make_adapter(name, entry("keras.Adam").hyper())
