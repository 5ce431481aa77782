"""Every adapter's reproduction script runs and prints the bits the adapter computed.

Each adapter class writes its own script (``Adapter.reproduction_program``,
impl/adapters/repro.py); harness/counterexample.py only wraps it. Here each adapter
family gets one fixed step (no search): a tensor of shape (2,) (sparse: (2, 1) with one
row touched twice and one untouched) from step 3 with nonzero m and v (and v_max),
measured in-process by :func:`counterexample_from_step`. Its script is written with
:func:`write_counterexample` and run as a user would (``.venv/bin/python script.py``;
TF.js with ``node`` and ``NODE_PATH`` at the packages the adapter uses). The script must
print one verdict line per measured component, whose "got" values are bit for bit what
the adapter computed for the same step and whose oracle values are the oracle's.

Cost: every script imports its framework in a fresh process (TensorFlow about 5 s,
torch about 4 s, Keras 3 on JAX about 3 s, the rest under 1.5 s). The fast suite runs
one script per framework: torch Adam, optax adam, Keras 3 on JAX, tf.compat.v1 (the
TensorFlow program with the most logic: fed gradients, TF1's beta powers), ONNX, TF.js,
adamspec's own and a user kernel, about 45 s alone on a shared 2-core machine, a third
of it importing the frameworks in-process (which the rest of the suite does anyway).
The other configurations are marked slow: torch AdamW, SparseAdam, AMSGrad and
bfloat16; optax adamw, amsgrad and eps_root; Keras 3 on TensorFlow (dense and sparse)
and on torch; tf_keras Adam and legacy Adam (dense and sparse); sparse tf.compat.v1;
tf.raw_ops with and without AMSGrad. Rendering without running is cheap, so every
registered configuration's program is also checked to compile in the fast suite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from script_helpers import assert_script_reproduces, run_script

from adamspec.harness.counterexample import counterexample_from_step, write_counterexample
from adamspec.harness.problems import round_to_dtype
from adamspec.impl.adapters import REGISTRY, State, load_registry
from adamspec.impl.adapters.kernel_protocol import register_target
from adamspec.impl.adapters.repro import StepToReproduce, hex_float
from adamspec.spec.axes import AmsGrad
from adamspec.spec.catalog import entry
from adamspec.spec.gradients import SparseRows

REPO = Path(__file__).resolve().parents[1]
KERNEL = f"{REPO / 'tests' / 'kernels' / 'user_kernels.py'}:adam"

# The fixed step: from step 3 (t = 4), nonzero moments, v_max above v in one coordinate.
PARAMS, M, V, V_MAX, GRAD = (1.0, -2.0), (0.1, -0.2), (0.01, 0.04), (0.02, 0.04), (0.5, -0.25)
STEP = 3
SPARSE_INDICES = (0, 0)  # row 0 twice, row 1 untouched (lazy and dense updates differ there)


@dataclass(frozen=True)
class Case:
    """One adapter configuration and how its fixed step is taken."""

    implementation: str
    needs: tuple[str, ...] = ()
    dtype: str = "float32"
    sparse: bool = False
    hyper: dict[str, str] = field(default_factory=dict)  # overrides of the documented defaults
    slow: bool = False

    def param(self) -> pytest.param:
        marks = [pytest.mark.needs(*self.needs)] if self.needs else []
        if self.slow:
            marks.append(pytest.mark.slow)
        suffix = "".join(
            [f"-{self.dtype}" if self.dtype != "float32" else "", "-sparse" if self.sparse else ""]
        )
        name = self.implementation.replace(f"{REPO}/", "")  # ids without the checkout's path
        return pytest.param(self, id=f"{name}{suffix}", marks=marks)


CASES = [
    # torch
    Case("torch.Adam(foreach=False)", ("torch",)),
    Case("torch.Adam(amsgrad=True)", ("torch",), slow=True),
    Case("torch.AdamW(foreach=False)", ("torch",), slow=True),
    Case("torch.SparseAdam", ("torch",), sparse=True, slow=True),
    Case("torch.Adam(foreach=False)", ("torch",), dtype="bfloat16", slow=True),
    Case("torch.compile(torch.Adam(foreach=False))", ("torch",), slow=True),
    Case("torch.compile(torch.AdamW(foreach=False))", ("torch",), slow=True),
    # optax
    Case("optax.adam", ("optax",)),
    Case("optax.amsgrad", ("optax",), slow=True),
    Case("optax.adamw", ("optax",), slow=True),
    Case("optax.adam(eps_root=1e-8)", ("optax",), hyper={"eps_root": "1e-8"}, slow=True),
    Case("optax.adam(jit=False)", ("optax",), slow=True),
    # Keras 3, one backend per worker process
    Case("keras.Adam(amsgrad=True)[jax]", ("keras", "jax")),
    Case("keras.Adam[tensorflow]", ("keras", "tensorflow"), slow=True),
    Case("keras.Adam[tensorflow]", ("keras", "tensorflow"), sparse=True, slow=True),
    Case("keras.AdamW[torch]", ("keras", "torch"), slow=True),
    Case("keras.Adam[jax,jit_compile=True]", ("keras", "jax"), slow=True),
    Case("keras.AdamW[tensorflow,jit_compile=True]", ("keras", "tensorflow"), slow=True),
    # TensorFlow: tf_keras (new and legacy), tf.compat.v1, tf.raw_ops
    Case("tf_keras.Adam", ("tf_keras",), slow=True),
    Case("tf_keras.Adam", ("tf_keras",), sparse=True, slow=True),
    Case("tf.function(jit_compile=True)(tf_keras.Adam)", ("tf_keras",), slow=True),
    Case("tf_keras.optimizers.legacy.Adam", ("tf_keras",), slow=True),
    Case("tf_keras.optimizers.legacy.Adam", ("tf_keras",), sparse=True, slow=True),
    Case("tf.v1.AdamOptimizer", ("tensorflow",)),
    Case("tf.v1.AdamOptimizer", ("tensorflow",), sparse=True, slow=True),
    Case("tf.raw.ResourceApplyAdam", ("tensorflow",), slow=True),
    Case("tf.raw.ResourceApplyAdamWithAmsgrad", ("tensorflow",), slow=True),
    # ONNX reference evaluator, TF.js
    Case("onnx.Adam", ("onnx",)),
    Case("onnx.Adam(norm_coefficient_post)", ("onnx",), "float64", hyper={"weight_decay": "0.01"}),
    Case("tfjs.adam", ("tfjs",)),
    # MLX
    Case("mlx.Adam", ("mlx",)),
    Case("mlx.Adam(bias_correction=True)", ("mlx",), slow=True),
    Case("mlx.AdamW", ("mlx",), slow=True),
    Case("mlx.Adam", ("mlx",), dtype="bfloat16", slow=True),
    # PaddlePaddle (the adapter in a worker process, the script in-process)
    Case("paddle.Adam", ("paddle",)),
    Case("paddle.Adam(amsgrad=True)", ("paddle",), slow=True),
    Case("paddle.AdamW", ("paddle",), "float64", slow=True),
    Case("paddle.Adam(lazy_mode=True)", ("paddle",), sparse=True, slow=True),
    Case("paddle.Adam", ("paddle",), sparse=True, slow=True),
    # driven through adamspec.impl.adapters: ours (with accumulated powers as extras) and
    # a user kernel (registered behind a worker process, reproduced in-process)
    Case("adamspec[paper.algorithm1]"),
    Case("adamspec[tf.v1.AdamOptimizer]", dtype="bfloat16"),
    Case("adamspec[torch.SparseAdam]", sparse=True),
    Case(f"kernel:{KERNEL}"),
]


def _array(values: tuple[float, ...], dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return round_to_dtype(np.asarray(values, np.float64), dtype).reshape(shape)


def _fixed_step(case: Case, amsgrad: bool) -> tuple[State, list]:
    shape = (2, 1) if case.sparse else (2,)
    v = _array(V, case.dtype, shape)
    v_max = [np.maximum(v, _array(V_MAX, case.dtype, shape))] if amsgrad else None
    before = State(
        [_array(PARAMS, case.dtype, shape)], [_array(M, case.dtype, shape)], [v], v_max, STEP
    )
    if case.sparse:
        values = _array(GRAD, case.dtype, (len(SPARSE_INDICES), 1))
        return before, [SparseRows(np.asarray(SPARSE_INDICES, np.int64), values, shape[0])]
    return before, [_array(GRAD, case.dtype, shape)]


def _registered(implementation: str) -> str:
    load_registry()
    if implementation.startswith("kernel:"):
        return register_target(implementation.removeprefix("kernel:"), "paper.algorithm1")
    return implementation


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_the_script_prints_the_bits_the_adapter_computed(case: Case, tmp_path: Path) -> None:
    name = _registered(case.implementation)
    documented = entry(REGISTRY[name].documented)
    before, grads = _fixed_step(case, documented.variant.amsgrad is not AmsGrad.OFF)
    ce = counterexample_from_step(
        name, documented.hyper(**case.hyper), documented.variant, before, grads, case.dtype
    )
    path = write_counterexample(tmp_path / f"step{ce.suffix}", ce)
    text = path.read_text()
    assert "a given step, not searched" in text
    stdout = run_script(path)
    assert_script_reproduces(ce, stdout)
    # every component measured, and nothing else, got its verdict line
    shown = re.findall(r"^(\w+): got \[", stdout, re.M)
    assert shown == list(ce.oracle), stdout


# ------------------------------------------------------------------------- every registration


def _program_input(implementation: str) -> StepToReproduce:
    """A step every registered configuration can render (nothing is run)."""
    info = REGISTRY[implementation]
    documented = entry(info.documented)
    amsgrad = documented.variant.amsgrad is not AmsGrad.OFF
    before, grads = _fixed_step(Case(implementation), amsgrad)
    powers = {"beta1_power": np.float32(0.729), "beta2_power": np.float32(0.997003)}
    before.extras = {k: np.asarray(x) for k, x in powers.items()}
    hyper = documented.hyper(**({"eps_root": "1e-8"} if "eps_root" in info.options else {}))
    return StepToReproduce(implementation, info, "float32", hyper, Fraction(1, 1000), before, grads)


def _all_registered() -> list[str]:
    load_registry()
    return sorted(REGISTRY)


@pytest.mark.parametrize("implementation", _all_registered())
def test_every_registered_configuration_renders_a_program_that_compiles(implementation: str):
    step = _program_input(implementation)
    program = REGISTRY[implementation].load().reproduction_program(step)
    needed = {"param", "m", "v"} | ({"v_max"} if step.before.v_max is not None else set())
    assert needed <= set(program.results), program.results
    if program.language == "javascript":
        assert program.usage and any("node" in line for line in program.usage)
        return
    assert program.language == "python"
    compile("\n".join([*program.imports, *program.helpers, *program.body]), implementation, "exec")
    for expression in program.results.values():
        compile(expression, implementation, "eval")


# ------------------------------------------------------------------------- the harness's part


def test_the_harness_names_no_framework():
    """Framework knowledge lives in the adapters: harness/counterexample.py names none."""
    text = (REPO / "harness" / "counterexample.py").read_text()
    pattern = r"torch|keras|optax|onnx|tfjs|tf\.js|tensorflow|tf_keras|jax|\btf\b"
    assert re.findall(pattern, text, re.I) == []


@pytest.mark.parametrize(
    "x", [0.0, -0.0, 1.0, -2.5, float(np.float32(0.1)), 2.0**-149, 3.4028234663852886e38, 1e-310]
)
def test_hex_floats_round_trip(x):
    text = hex_float(x)
    assert float.fromhex(text) == x and np.signbit(float.fromhex(text)) == np.signbit(x)
    assert not re.search(r"\.[0-9a-f]*0p", text)  # trailing zeros dropped
