"""The compiled float32 driver (numba) against the NumPy path, bit for bit, at scale.

Both paths certify every stored value as the correctly rounded result of the
same exact formula, so they must agree bit for bit; the NumPy path is itself
checked against the exact oracle in ``tests/test_impl.py``. Here the driver sees
thousands of coordinates per configuration, built to reach every branch of its
two passes: the common near-ties of m (``0.9 m + 0.1 g`` lands on a float32
midpoint for 4-9% of coordinates after a few steps), exact ties (beta1 = 0.5),
cancelling moments, negative and NaN state, infinities, zeros and subnormals.
Compiled drivers are cached on disk by numba, so only the first run compiles.
"""

from __future__ import annotations

import numpy as np
import pytest

from adamspec.impl import adam
from adamspec.impl._constants import step_constants
from adamspec.impl._kernels import BLOCK, numba_float32_driver
from adamspec.impl.adam import _set_bits
from adamspec.spec import Variant, entry
from adamspec.spec.formats import FLOAT32

pytestmark = pytest.mark.needs("numba")

N = 6000


#: (id, variant, hyper overrides, step count before the step): every branch of the
#: lean pass (eps placement, AMSGrad, Nesterov, RAdam, decay, EMA), exact ties, and the
#: paper's decimal hyperparameters (``ideal``: the low parts and the ties' integer forms).
CONFIGS = [
    ("torch.Adam", entry("torch.Adam").variant, {}, 4),
    ("torch.AdamW", entry("torch.AdamW").variant, {"weight_decay": "0.01"}, 4),
    ("optax.amsgrad", entry("optax.amsgrad").variant, {"eps_root": "1e-12"}, 4),
    ("tf.raw.ApplyAdam[use_nesterov]", entry("tf.raw.ApplyAdam[use_nesterov]").variant, {}, 4),
    ("optax.adam[nesterov]", entry("optax.adam[nesterov]").variant, {}, 4),
    ("torch.RAdam-rectified", entry("torch.RAdam").variant, {}, 9),
    ("onnx.Adam[norm_coefficient_post]", entry("onnx.Adam[norm_coefficient_post]").variant,
     {"weight_decay": "0.01"}, 4),
    ("paper.algorithm1", entry("paper.algorithm1").variant, {}, 1),
    ("paper.eps_hat", entry("paper.eps_hat").variant, {}, 4),
    ("reddi.amsgrad", entry("reddi.amsgrad").variant, {}, 4),
    ("ema", Variant(hyper_precision="float64"),
     {"use_ema": True, "ema_momentum": "0.9", "ema_overwrite_frequency": 5}, 4),
    ("exact-ties", Variant(hyper_precision="float64"), {"beta1": "0.5", "beta2": "0.75"}, 4),
]  # fmt: skip


def adversarial(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """float32 inputs for both passes' corner cases (see the module docstring)."""
    g = rng.standard_normal(n)
    m = np.zeros(n)
    v = np.zeros(n)
    for _ in range(4):  # a few honest steps: m and v as training leaves them (near-ties)
        g_t = rng.standard_normal(n).astype(np.float32).astype(np.float64)
        m = (0.9 * m + 0.1 * g_t).astype(np.float32).astype(np.float64)
        v = (0.999 * v + 0.001 * g_t * g_t).astype(np.float32).astype(np.float64)
    theta = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)
    k = n // 10
    parts = rng.permutation(n)
    wild = parts[:k]  # magnitudes from 1e-30 to 1e30 and exact zeros
    g[wild] *= 10.0 ** rng.uniform(-30, 30, k)
    m[wild] *= 10.0 ** rng.uniform(-30, 10, k)
    g[parts[k : 2 * k : 3]] = 0.0
    cancel = parts[2 * k : 3 * k]  # 0.9 m + 0.1 g cancels (exactly for some)
    m[cancel] = rng.standard_normal(k)
    g[cancel] = -9.0 * m[cancel] * (1 + rng.integers(-2, 3, k) * 2.0**-22)
    sub = parts[3 * k : 3 * k + k // 4]
    g[sub] = np.float32(1e-45) * rng.integers(-3, 4, len(sub))
    x = {
        "theta": theta.astype(np.float32),
        "g": g.astype(np.float32),
        "m": m.astype(np.float32),
        "v": v.astype(np.float32),
    }
    special = parts[4 * k : 4 * k + 40]
    x["v"][special[:10]] = -np.abs(x["v"][special[:10]]) - 1e-3  # outside Adam's domain
    x["v"][special[10:15]] = np.nan
    x["g"][special[15:20]] = np.inf
    x["g"][special[20:25]] = np.nan
    x["m"][special[25:30]] = -np.inf
    x["theta"][special[30:35]] = np.inf
    x["v"][special[35:40]] = np.inf
    x["v_max"] = (x["v"] * rng.uniform(0.5, 2, n)).astype(np.float32)
    return x


def step_with(variant: Variant, hyper_overrides: dict, steps: int, x: dict, backend: str) -> dict:
    """One in-place step of our Adam on ``backend`` from the drawn state ``x``."""
    hyper = entry("paper.algorithm1").hyper(**hyper_overrides)
    params = x["theta"].copy()
    state = adam.init(params, variant, ema=bool(hyper.use_ema))
    state = state._replace(
        step=steps,
        m=(x["m"].copy(),),
        v=(x["v"].copy(),),
        v_max=(x["v_max"].copy(),) if state.v_max is not None else None,
        ema=(x["theta"][::-1].copy(),) if state.ema is not None else None,
    )
    new = adam.step_(params, x["g"], state, hyper, variant, backend=backend)
    out = {"param": params, "m": new.m[0], "v": new.v[0]}
    if new.v_max is not None:
        out["v_max"] = new.v_max[0]
    if new.ema is not None:
        out["ema"] = new.ema[0]
    return out


def run_both(variant: Variant, hyper_overrides: dict, steps: int, x: dict) -> tuple[dict, dict]:
    return tuple(step_with(variant, hyper_overrides, steps, x, b) for b in ("numba", "numpy"))


def assert_same_bits(ours: dict, reference: dict) -> None:
    for name, got in ours.items():
        want = reference[name]
        same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
        bad = np.flatnonzero(~same)
        assert not bad.size, (
            f"{name}: {bad.size} differ, e.g. at {bad[:5]}: {got[bad[:5]]} vs {want[bad[:5]]}"
        )


@pytest.mark.parametrize(
    ("name", "variant", "hyper", "steps"), CONFIGS, ids=[c[0] for c in CONFIGS]
)
def test_compiled_driver_matches_the_numpy_path_bit_for_bit(name, variant, hyper, steps):
    x = adversarial(np.random.default_rng(abs(hash(name)) % 2**32), N)
    ours, reference = run_both(variant, hyper, steps, x)
    assert_same_bits(ours, reference)


def test_most_coordinates_are_certified_by_the_compiled_passes():
    """The first pass and its retry certify all but the special and cancelling inputs:
    those few go to the double-double NumPy pass, each flagged in the bitmask."""
    x = adversarial(np.random.default_rng(7), N)
    variant = entry("torch.Adam").variant
    K = step_constants(variant, entry("torch.Adam").hyper(), 5, FLOAT32, 1, 1)
    driver = numba_float32_driver(K.config)
    bits = np.empty(-(-N // BLOCK), np.uint64)
    arrays = [x[k].copy() for k in ("theta", "g", "m", "v")]
    one = np.zeros(1, np.float32)
    flagged = driver(K.values[:, 0].copy(), *arrays, one, one, bits)
    index = _set_bits(bits)
    assert flagged == len(index)
    # 40 special inputs (NaN, inf, negative v) and some of the 600 built to cancel
    assert 20 < flagged < 100
    special = ~np.isfinite(x["g"] + x["m"] + x["v"] + x["theta"]) | (x["v"] < 0)
    assert special[index].sum() >= 20
    untouched = np.zeros(N, bool)
    untouched[index] = True
    for before, after in zip((x[k] for k in ("theta", "g", "m", "v")), arrays, strict=True):
        np.testing.assert_array_equal(after[untouched], before[untouched])


def test_set_bits_lists_flagged_coordinates_in_order():
    bits = np.zeros(3, np.uint64)
    bits[0] = (1 << 0) | (1 << 63)
    bits[2] = 1 << 5
    np.testing.assert_array_equal(_set_bits(bits), [0, 63, 2 * BLOCK + 5])
    assert _set_bits(np.zeros(2, np.uint64)).size == 0


def test_backend_numpy_is_honoured_for_large_tensors(monkeypatch):
    """backend='numpy' never compiles, whatever the size ('auto' compiles from JIT_MIN_SIZE)."""
    calls = []
    monkeypatch.setattr(adam, "numba_float32_driver", lambda cfg: calls.append(cfg))
    n = adam.JIT_MIN_SIZE
    params = np.ones(n, np.float32)
    variant = Variant(hyper_precision="float64")
    state = adam.init(params, variant)
    adam.step_(params, params.copy(), state, entry("torch.Adam").hyper(), variant, backend="numpy")
    assert calls == []
    adam.step_(params, params.copy(), state, entry("torch.Adam").hyper(), variant, backend="auto")
    assert len(calls) == 1


def _double_doubles(rng: np.random.Generator) -> list[tuple[float, float, str]]:
    """``(hi, lo, kind)``, normalized (``|lo| < ulp(hi)/2``), around every place where
    rounding to float32 is delicate: ``hi`` on a float32 midpoint (normal and
    subnormal), one or two float64 ulps beside one, at a power of two, at float32
    values, near the overflow threshold, and zero."""
    f32 = np.float32
    cases = []
    for _ in range(300):
        r = f32(rng.standard_normal() * 10.0 ** rng.uniform(-30, 30))
        up = np.nextafter(r, f32(np.inf))
        mid = (np.float64(r) + np.float64(up)) / 2
        sub = np.float64(f32(1e-45)) * (rng.integers(1, 2**20) + 0.5)  # odd multiple of 2**-150
        power = 2.0 ** int(rng.integers(-140, 120)) * rng.choice([-1.0, 1.0])
        top = np.float64(np.finfo(np.float32).max) + 2.0**103  # the overflow threshold
        for hi, kind in [
            (mid, "midpoint"), (-mid, "midpoint"), (sub, "subnormal midpoint"),
            (np.nextafter(mid, np.inf), "beside"), (np.nextafter(mid, -np.inf), "beside"),
            (np.float64(r), "float32"), (power, "power of two"), (top, "overflow threshold"),
        ]:  # fmt: skip
            ulp = np.spacing(abs(hi))
            below = ulp / 2 if abs(hi) == 2.0 ** np.floor(np.log2(abs(hi))) else ulp
            lo = rng.uniform(-0.49, 0.49) * (below if rng.random() < 0.5 else ulp)
            cases.append((float(hi), float(lo), kind))
            cases.append((float(hi), 0.0, kind))
    cases.append((0.0, 0.0, "zero"))
    return cases


def test_round_to_odd_rounds_double_doubles_like_exact_arithmetic():
    """The lean pass rounds m through round-to-odd (``_certify32_dd``): for every
    delicate double-double the result is the float32 nearest ``hi + lo`` exactly;
    it claims certainty exactly when the bound is zero or below ``|lo|``."""
    from fractions import Fraction

    from adamspec.impl._kernels import numba_certify32_dd
    from adamspec.oracles.rounding import round_exact

    certify = numba_certify32_dd()
    rng = np.random.default_rng(7)
    for hi, lo, kind in _double_doubles(rng):
        exact = Fraction(hi) + Fraction(lo)
        want = round_exact(exact, FLOAT32)
        got, sure = certify(hi, lo, 0.0)  # an exact double-double
        assert sure and got == want, (kind, hi.hex(), lo.hex(), got, want)
        got, sure = certify(hi, lo, abs(lo) / 2)
        assert got == want, (kind, hi.hex(), lo.hex(), got, want)
        assert sure, (kind, hi.hex(), lo.hex())  # e < |lo|, or e == lo == 0
        assert not certify(hi, lo, abs(lo))[1] or lo == 0.0, (kind, hi.hex(), lo.hex())
