"""The fused CuPy kernel's logic, on the CPU: its generated source compiled as C.

No GPU was available to this work, so the CUDA kernel itself is unmeasured and
untested on a device. What is tested here is everything but the device: the
kernel body that :func:`adamspec.impl._kernels.cuda_float32_source` generates (the traced
:func:`make_fast_kernel` plus the certification helpers) is compiled with the
system C compiler (the same C is valid CUDA C++; only four macros differ) and
driven through ``adam.step_`` exactly as a CuPy array would be (a stand-in
namespace wraps NumPy), uncertain coordinates and the double-double fallback
included. Its results must equal the NumPy path's bit for bit.
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_impl_numba import CONFIGS, N, adversarial
from test_impl_numba import step_with as run
from test_impl_ties import IDEAL, assert_bit_for_bit, ours_and_oracle, tie_inputs

from adamspec.impl import _kernels, adam
from adamspec.impl._constants import KernelConfig, step_constants
from adamspec.spec import Variant, entry
from adamspec.spec.formats import FLOAT32

CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler to build the kernel body")

_C_DEFINES = r"""
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
static double adam_f64_bits(uint64_t bits) { double d; memcpy(&d, &bits, 8); return d; }
#define ADAM_F64(bits) adam_f64_bits(bits)
#define ADAM_ATOMIC_OR(p, x) (*(p) |= (x))
#define ADAM_ATOMIC_ADD(p, x) (*(p) += (x))
#define ADAM_DEVICE static
"""

_C_LOOP = r"""
void adam_step(const double* k, const float* g_, unsigned* bits, int* counter,
               float* theta_, float* m_, float* v_, float* vmax_, float* ema_, long n) {
    for (long i = 0; i < n; i++) {
        float g = g_[i], theta = theta_[i], m = m_[i], v = v_[i];
        float vmax = vmax_ ? vmax_[i] : 0.0f, ema = ema_ ? ema_[i] : 0.0f;
        {
%s
        }
        theta_[i] = theta; m_[i] = m; v_[i] = v;
        if (vmax_) vmax_[i] = vmax;
        if (ema_) ema_[i] = ema;
    }
}
"""


class StandInCupy:
    """A namespace that is not ``numpy`` but computes with it: CuPy's code paths, on the CPU."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


@pytest.fixture(scope="module")
def c_driver(tmp_path_factory):
    """``cupy_float32_driver`` with the generated body compiled as C (one library per config)."""
    built: dict[KernelConfig, Any] = {}
    folder = tmp_path_factory.mktemp("cuda_as_c")

    def factory(cfg: KernelConfig):
        if cfg not in built:
            source = _kernels.cuda_float32_source(cfg)
            path = folder / f"k{len(built)}"
            text = _C_DEFINES + source["helpers"] + _C_LOOP % source["body"]
            path.with_suffix(".c").write_text(text)
            subprocess.run(
                [CC, "-O2", "-std=c99", "-shared", "-fPIC", "-o", str(path.with_suffix(".so")),
                 str(path.with_suffix(".c")), "-lm"],
                check=True, capture_output=True,
            )  # fmt: skip
            built[cfg] = ctypes.CDLL(str(path.with_suffix(".so"))).adam_step
        step = built[cfg]

        def driver(k, theta, g, m, v, vmax, ema):
            bits = np.zeros(-(-theta.size // 32), np.uint32)
            counter = np.zeros(1, np.int32)
            arrays = [np.ascontiguousarray(k, np.float64), g, bits, counter, theta, m, v]
            arrays += [vmax, ema]
            pointers = [None if a is None else a.ctypes.data_as(ctypes.c_void_p) for a in arrays]
            step(*pointers, ctypes.c_long(theta.size))
            return int(counter[0]), bits

        return driver

    return factory


#: The compiled CPU driver's configurations, and the precise kernel's other branches
#: (a gradient that is not used as given: L2 decay, clipping; nadam on top).
TRACED = [
    *CONFIGS,
    ("l2+nadam", Variant(weight_decay="l2", nesterov="nadam", hyper_precision="float64"),
     {"weight_decay": "0.1"}, 4),
    ("clipnorm", Variant(hyper_precision="float64"), {"clipnorm": "0.5"}, 4),
    ("amsgrad=max_corrected_v", Variant(eps_placement="eps_root", amsgrad="max_corrected_v",
     hyper_precision="float64"), {"eps_root": "1e-10"}, 4),
]  # fmt: skip


@pytest.mark.parametrize(("name", "variant", "hyper", "steps"), TRACED, ids=[c[0] for c in TRACED])
def test_fused_kernel_logic_matches_the_numpy_path_bit_for_bit(
    name, variant, hyper, steps, c_driver, monkeypatch
):
    calls = []

    def counting_factory(cfg):
        calls.append(cfg)
        return c_driver(cfg)

    monkeypatch.setattr(adam, "array_namespace", lambda *arrays: StandInCupy())
    monkeypatch.setattr(adam, "cupy_float32_driver", counting_factory)
    x = adversarial(np.random.default_rng(abs(hash(name)) % 2**32), N)
    fused = run(variant, hyper, steps, x, "auto")
    assert calls, "the fused kernel was not used"
    reference = run(variant, hyper, steps, x, "numpy")  # CuPy's elementwise path
    for key, got in fused.items():
        want = reference[key]
        same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), (key, np.flatnonzero(~same)[:5])


@pytest.mark.parametrize("name", IDEAL)
@given(data=st.data())
def test_fused_kernel_decides_exact_ties_of_the_moments(name, data, c_driver):
    """Inputs on float32 midpoints of (9 m + g) / 10 and (999 v + g^2) / 1000 (see
    tests/test_impl_ties.py): the fused kernel decides them as the oracle does."""
    calls = []

    def counting_factory(cfg):
        calls.append(cfg)
        return c_driver(cfg)

    x = data.draw(tie_inputs("float32"), label="inputs")
    step = data.draw(st.integers(1, 6), label="step")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adam, "array_namespace", lambda *arrays: StandInCupy())
        patch.setattr(adam, "cupy_float32_driver", counting_factory)
        ours, oracle = ours_and_oracle(name, x, step, "auto")
    assert calls and all(cfg.decimal_moments for cfg in calls)
    assert_bit_for_bit(ours, oracle)


def test_uncertain_coordinates_are_left_untouched_and_flagged(c_driver):
    """The contract the fallback relies on: nothing written where not certain."""
    name, variant, hyper, steps = CONFIGS[0]
    x = adversarial(np.random.default_rng(11), N)
    K = step_constants(variant, entry(name).hyper(**hyper), steps + 1, FLOAT32, 1, 1)
    arrays = {key: x[key].copy() for key in ("theta", "m", "v")}
    flagged, bits = c_driver(K.config)(
        K.values[:, 0], arrays["theta"], x["g"], arrays["m"], arrays["v"], None, None
    )
    index = adam._set_bits(bits)
    assert flagged == len(index) > 0
    for key, after in arrays.items():
        np.testing.assert_array_equal(after[index], x[key][index])
    certain = np.ones(N, bool)
    certain[index] = False
    assert (arrays["m"][certain] != x["m"][certain]).mean() > 0.5


def test_the_traced_source_is_the_formula_op_by_op():
    """Tracing records the operations in order, with constants from their bits, and
    only the branches of the configuration."""
    K = step_constants(CONFIGS[0][1], entry("torch.Adam").hyper(), 5, FLOAT32, 1, 1)
    source = _kernels.cuda_float32_source(K.config)
    body = source["body"]
    assert "sqrt(" in body and " / " in body and "ADAM_F64(0x" in body
    assert "vmax" not in body and "ema" not in body
    assert source["in_params"] == "raw float64 k, float32 g"
    assert source["out_params"] == (
        "float32 theta, float32 m, float32 v, raw uint32 bits, raw int32 counter"
    )
    with pytest.raises(TypeError, match="may not branch"):
        bool(_kernels._Sym(_kernels._Trace(), "x") > 0.0)


def test_without_cupy_there_is_no_fused_driver():
    if importlib.util.find_spec("cupy") is not None:  # pragma: no cover - a GPU machine
        pytest.skip("cupy is installed")
    K = step_constants(Variant(), entry("torch.Adam").hyper(), 1, FLOAT32, 1, 1)
    assert _kernels.cupy_float32_driver(K.config) is None
