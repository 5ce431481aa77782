"""The generated problems every implementation is run on.

A :class:`Problem` says, for each step of a run, which gradients an optimizer
receives. *Open-loop* problems fix them in advance (a regime of magnitudes and
signs chosen to expose one failure mode); *closed-loop* problems compute them
from the implementation's own current params with one shared pure function
(float64 arithmetic, then one correct rounding to the param dtype), so every
implementation gets the same gradient from the same params and divergence
feeds back as it would in training.

Everything is deterministic: the randomness of a problem is a
:class:`numpy.random.Generator` derived from ``(seed, crc32(name), step)``,
never from Python's salted ``hash``. Fixed data of closed-loop objectives
(regression samples, the quadratic's matrix) does not depend on ``seed``:
the seed draws the starting point (and minibatches), not the objective.

Sizes of the first four suites are small on purpose (at most ~32 coordinates, ~10
steps), sized for the exact mpmath oracle (about 8k element-steps per second).
:data:`SUITES` groups them: ``quick``, ``default``, ``discriminating``, ``long``, and
``scale``: tensor sizes that straddle a real kernel's vector, block and index boundaries
(13 coordinates to 2^24 + 4099), a transposed tensor and a 1,000-step run, for the fast
oracle (tens of millions of element-steps per second) and the engine's streaming
verification (:mod:`adamspec.harness.stream`). :func:`resized` gives any problem another
size or number of steps (``--size``, ``--steps``).

This module is long because it is the catalogue itself: each open-loop regime, each
closed-loop objective and each named problem is a few lines of data or one small pure
function, and they read best side by side.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from adamspec.oracles.rounding import numpy_dtype
from adamspec.spec.formats import FloatFormat, format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import HyperparameterError, make_hyper

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
REGIMES: tuple[str, ...] = ("open", "closed")
LAYOUTS: tuple[str, ...] = ("contiguous", "transposed")

#: The most coordinates per tensor ``--size`` accepts (float32 state: 4 GiB per array).
MAX_SIZE = 2**30

Gradient = np.ndarray | SparseRows

# Independent random streams of one problem: the tag keeps e.g. the initial
# params of a seed from correlating with the gradients of step 0.
_GRADS, _PARAMS, _STATE, _DATA, _FIXED = 0, 1, 2, 3, 4


# ------------------------------------------------------------------ formats and rounding


def _fmt(dtype: str) -> FloatFormat:
    return format_named(dtype)


def largest_finite(fmt: FloatFormat) -> float:
    """The largest finite value of ``fmt`` (65504 for float16)."""
    return (2.0 - 2.0 ** (1 - fmt.precision)) * 2.0**fmt.emax


def smallest_normal(fmt: FloatFormat) -> float:
    """The smallest positive normal value of ``fmt``."""
    return 2.0**fmt.emin


def smallest_subnormal(fmt: FloatFormat) -> float:
    """The smallest positive subnormal value of ``fmt``."""
    return 2.0**fmt.quantum_exponent_min


def _round_to_odd_float32(x: np.ndarray) -> np.ndarray:
    """``x`` (float64) rounded to float32 with round-to-odd (sticky last bit)."""
    nearest = x.astype(np.float32)
    back = nearest.astype(np.float64)
    inexact = np.isfinite(x) & (back != x)
    # The float32 neighbour of x towards zero; inf only arises above float32's range, whose
    # neighbour towards zero is the largest finite float32.
    toward_zero = np.where(np.abs(back) > np.abs(x), np.nextafter(nearest, np.float32(0)), nearest)
    odd = (toward_zero.view(np.uint32) | np.uint32(1)).view(np.float32)
    return np.where(inexact, odd, nearest)


def round_to_dtype(values: Any, dtype: str) -> np.ndarray:
    """``values`` read as float64, correctly rounded (nearest-even) to ``dtype``.

    NumPy's float64 -> float32/float16 casts round once, correctly. ml_dtypes'
    float64 -> bfloat16 cast goes through float32 and can round twice
    (1 + 2**-8 + 2**-30 becomes 1), so bfloat16 goes through float32 with
    round-to-odd, which is exact for a second rounding to 8 bits.
    """
    fmt = _fmt(dtype)
    x = np.asarray(values, dtype=np.float64)
    dt = numpy_dtype(fmt)
    if fmt.name == "float64":
        return x.copy()
    with np.errstate(over="ignore"):  # overflow to +-inf is the correct rounding there
        if fmt.name == "bfloat16":
            return _round_to_odd_float32(x).astype(dt)
        return x.astype(dt)


# ------------------------------------------------------------------ random streams


def _name_hash(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _check_counts(**values: Any) -> None:
    for what, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{what}={value!r} must be a non-negative integer")


def rng_for(name: str, seed: int, step: int, stream: int = _GRADS) -> np.random.Generator:
    """The generator of one problem, seed, step and stream: stable across processes/machines."""
    _check_counts(seed=seed, step=step, stream=stream)
    entropy = [int(stream), int(seed), _name_hash(name), int(step)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def _signs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, shape: tuple[int, ...]):
    """Magnitudes with log10 uniform in [lo, hi]."""
    return 10.0 ** rng.uniform(lo, hi, shape)


# ------------------------------------------------------------------ open-loop regimes


@dataclass(frozen=True)
class _Draw:
    """What an open-loop generator may use for one tensor of one step."""

    rng: np.random.Generator  # this step's stream
    fixed: np.random.Generator  # a stream independent of the step (per-coordinate constants)
    shape: tuple[int, ...]
    fmt: FloatFormat
    step: int


def _typical(d: _Draw) -> np.ndarray:
    return d.rng.standard_normal(d.shape)


def _tiny_near_eps(d: _Draw) -> np.ndarray:
    # |g| in 1e-9..1e-6 puts sqrt(v_hat) within a few decades of eps = 1e-8, so where eps
    # enters the denominator (algorithm 1, eps-hat, eps_root) decides the update.
    return _signs(d.rng, d.shape) * _log_uniform(d.rng, -9.0, -6.0, d.shape)


def _huge(d: _Draw) -> np.ndarray:
    top = math.log10(largest_finite(d.fmt))
    hi = min(30.0, top)
    # float16 cannot hold 1e15: take its top two decades instead, still huge for the format
    # (g**2 overflows), rather than a tensor of identical clamped values.
    lo = min(15.0, hi - 2.0)
    mags = np.minimum(_log_uniform(d.rng, lo, hi, d.shape), largest_finite(d.fmt))
    return _signs(d.rng, d.shape) * mags


def _mixed_scales(d: _Draw) -> np.ndarray:
    lo = max(-30.0, math.log10(smallest_normal(d.fmt)))
    hi = min(30.0, math.log10(largest_finite(d.fmt)))
    mags = np.clip(
        _log_uniform(d.rng, lo, hi, d.shape), smallest_normal(d.fmt), largest_finite(d.fmt)
    )
    return _signs(d.rng, d.shape) * mags


# Each step's magnitude is 1/64 of the previous one: g_t**2 = 2**-12 g_{t-1}**2 < (1 - beta2)
# g_{t-1}**2 <= v_{t-1} for beta2 = 0.999, so the raw v (and v_hat) shrink from the second step
# on and AMSGrad's maximum binds. A power of two keeps the decay itself exact.
_DECAY = 2.0**-6


def _sign_flips_decreasing(d: _Draw) -> np.ndarray:
    base = 0.5 + np.abs(d.fixed.standard_normal(d.shape))
    first_sign = _signs(d.fixed, d.shape)
    return first_sign * (-1.0) ** d.step * base * _DECAY**d.step


def _exact_zeros(d: _Draw) -> np.ndarray:
    g = d.rng.standard_normal(d.shape)
    zero = d.rng.random(d.shape) < 0.5
    # Half of the random zeros are -0.0: maximize negates, and signed zeros must survive.
    g = np.where(zero, np.where(d.rng.random(d.shape) < 0.5, -0.0, 0.0), g)
    # Every third coordinate never sees a gradient: its m and v stay exactly 0 (0/(0+eps)).
    always = (np.arange(g.size) % 3 == 0).reshape(d.shape)
    return np.where(always, 0.0, g)


def _subnormals(d: _Draw) -> np.ndarray:
    p = d.fmt.precision
    # k * 2**qmin for 1 <= k < 2**(p-1) is exactly the subnormal range (and exact in float64).
    k = d.rng.integers(1, 2 ** (p - 1), d.shape, dtype=np.int64)
    g = _signs(d.rng, d.shape) * np.ldexp(k.astype(np.float64), d.fmt.quantum_exponent_min)
    normal = d.rng.random(d.shape) < 0.125
    return np.where(normal, d.rng.standard_normal(d.shape), g)


def _small_decreasing(d: _Draw) -> np.ndarray:
    # |g| ~ 1e-4 against eps = 1e-3: eps dominates the denominator, so each eps placement
    # gives a different update; decreasing magnitudes make every AMSGrad form bind.
    base = _log_uniform(d.fixed, -4.5, -3.5, d.shape)
    return _signs(d.fixed, d.shape) * (-1.0) ** d.step * base * _DECAY**d.step


def _small_typical(d: _Draw) -> np.ndarray:
    # 1e-2 against a history of N(0, 10**2) gradients: v keeps shrinking, v_max keeps binding.
    return 1e-2 * d.rng.standard_normal(d.shape)


def _history_big_then_small(step: int, steps: int) -> float:
    """Scale of history gradient ``step`` of ``steps``: N(0, 10**2) first, then N(0, 0.01**2).

    v peaks mid-history and then decays (each new g**2 is far below v), so the
    state has v_max > v strictly.
    """
    return 1000.0 if step < (steps + 1) // 2 else 1.0


# ------------------------------------------------------------------ closed-loop objectives


def _data_rng(name: str, shapes: tuple[tuple[int, ...], ...]) -> np.random.Generator:
    # Data of an objective: fixed per problem (and size), never per seed.
    sizes = [d for s in shapes for d in (len(s), *s)]
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([_DATA, _name_hash(name), *sizes]))
    )


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b by elementwise products and a sum: no BLAS, so no machine-dependent kernels."""
    return np.sum(a[:, :, None] * b[None, :, :], axis=1)


def _readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.setflags(write=False)
    return arrays


class _Objective:
    """A closed-loop objective: fixed data, a loss and its gradient in float64."""

    #: the only shapes allowed, or None when ``accepts`` decides
    fixed_shapes: tuple[tuple[int, ...], ...] | None = None

    def accepts(self, shapes: tuple[tuple[int, ...], ...]) -> str | None:
        """None if ``shapes`` are valid, else what is allowed."""
        if self.fixed_shapes is not None and shapes != self.fixed_shapes:
            return f"this objective has fixed shapes {self.fixed_shapes}"
        return None

    def init(self, p: Problem, rng: np.random.Generator) -> list[np.ndarray]:
        raise NotImplementedError

    def loss(self, p: Problem, x: list[np.ndarray], step: int, seed: int) -> float:
        raise NotImplementedError

    def grad(self, p: Problem, x: list[np.ndarray], step: int, seed: int) -> list[Any]:
        raise NotImplementedError


class _KerasDoc(_Objective):
    """tf.keras Adam doc: ``var1 = tf.Variable(10.0); loss = lambda: (var1 ** 2) / 2.0``."""

    fixed_shapes = ((1,),)

    def init(self, p, rng):
        return [np.array([10.0])]

    def loss(self, p, x, step, seed):
        return float(x[0][0] ** 2 / 2.0)

    def grad(self, p, x, step, seed):
        return [x[0].copy()]  # d(loss)/d(var1) == var1, as the doc's comment says


class _TorchLinearRegression(_Objective):
    """PyTorch tutorial: ``t = 2.4785694 x + 7.3256989 + 0.1 N(0,1)``, nn.Linear(1, 1), MSELoss."""

    fixed_shapes = ((1,), (1,))

    @functools.cached_property
    def data(self) -> tuple[np.ndarray, ...]:
        rng = _data_rng("torch-linear-regression", self.fixed_shapes)
        x = rng.standard_normal(100)
        t = 2.4785694 * x + 7.3256989 + rng.standard_normal(100) * 0.1
        return _readonly(x, t)

    def init(self, p, rng):
        # nn.Linear(1, 1) draws weight and bias from U(-1/sqrt(in), 1/sqrt(in)) = U(-1, 1).
        return [rng.uniform(-1.0, 1.0, 1), rng.uniform(-1.0, 1.0, 1)]

    def _residual(self, x):
        xs, t = self.data
        return x[0][0] * xs + x[1][0] - t

    def loss(self, p, x, step, seed):
        return float(np.mean(self._residual(x) ** 2))

    def grad(self, p, x, step, seed):
        r = self._residual(x)
        xs, _ = self.data
        return [np.array([np.mean(2.0 * r * xs)]), np.array([np.mean(2.0 * r)])]


class _TfjsCubic(_Objective):
    """TF.js tf.train.adam example: ``b = p a^3 - q a + r`` on a = [0,1,2,3], b = [1,2,5,11]."""

    fixed_shapes = ((1,), (1,), (1,))
    a = np.array([0.0, 1.0, 2.0, 3.0])
    b = np.array([1.0, 2.0, 5.0, 11.0])

    def init(self, p, rng):
        return [rng.random(1) for _ in range(3)]  # tf.scalar(Math.random()).variable()

    def _residual(self, x):
        return x[0][0] * self.a**3 - x[1][0] * self.a + x[2][0] - self.b

    def loss(self, p, x, step, seed):
        return float(np.mean(self._residual(x) ** 2))

    def grad(self, p, x, step, seed):
        r2 = 2.0 * self._residual(x)
        return [np.array([np.mean(r2 * self.a**3)]), np.array([np.mean(-r2 * self.a)]),
                np.array([np.mean(r2)])]  # fmt: skip


class _Quadratic(_Objective):
    """0.5 x^T A x - b^T x, A symmetric positive definite with eigenvalues 1..100."""

    def accepts(self, shapes):
        if len(shapes) != 1 or len(shapes[0]) != 1:
            return "quadratic takes one vector: shapes ((n,),)"
        return None

    @staticmethod
    @functools.cache
    def data(n: int) -> tuple[np.ndarray, ...]:
        rng = _data_rng("quadratic", ((n,),))
        # A = Q diag(lambda) Q with Q a Householder reflection: orthogonal and built without
        # LAPACK, so it is the same matrix on every machine; condition number 100.
        u = rng.standard_normal(n)
        q = np.eye(n) - 2.0 * np.outer(u, u) / np.sum(u * u)
        lam = np.logspace(0.0, 2.0, n) if n > 1 else np.ones(1)
        a = _matmul(q * lam, q.T)
        a = (a + a.T) / 2.0  # exactly symmetric, so A x - b is exactly the loss's gradient
        b = rng.standard_normal(n)
        return _readonly(a, b)

    def init(self, p, rng):
        return [rng.standard_normal(p.shapes[0])]

    def loss(self, p, x, step, seed):
        a, b = self.data(x[0].size)
        return float(0.5 * np.sum(x[0] * _matmul(a, x[0][:, None])[:, 0]) - np.sum(b * x[0]))

    def grad(self, p, x, step, seed):
        a, b = self.data(x[0].size)
        return [_matmul(a, x[0][:, None])[:, 0] - b]


class _Rosenbrock(_Objective):
    """(1 - x)^2 + 100 (y - x^2)^2 from the classic start (-1.2, 1)."""

    fixed_shapes = ((2,),)

    def init(self, p, rng):
        return [np.array([-1.2, 1.0])]

    def loss(self, p, z, step, seed):
        x, y = z[0]
        return float((1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2)

    def grad(self, p, z, step, seed):
        x, y = z[0]
        return [np.array([-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])]


class _Logistic(_Objective):
    """Mean binary cross-entropy of a linear classifier on 32 fixed samples (weights, bias)."""

    samples = 32

    def accepts(self, shapes):
        if len(shapes) != 2 or len(shapes[0]) != 1 or shapes[1] != (1,):
            return "logistic-regression takes shapes ((features,), (1,))"
        return None

    @staticmethod
    @functools.cache
    def data(features: int) -> tuple[np.ndarray, ...]:
        rng = _data_rng("logistic-regression", ((features,), (1,)))
        x = rng.standard_normal((_Logistic.samples, features))
        w_true = rng.standard_normal(features)
        # Label noise keeps the data non-separable, so the optimum is finite.
        z = np.sum(x * w_true, axis=1) + 0.5 + 0.7 * rng.standard_normal(_Logistic.samples)
        return _readonly(x, (z > 0).astype(np.float64))

    def init(self, p, rng):
        return [0.1 * rng.standard_normal(p.shapes[0]), 0.1 * rng.standard_normal(1)]

    def _logits(self, w):
        x, y = self.data(w[0].size)
        return np.sum(x * w[0], axis=1) + w[1][0], x, y

    def loss(self, p, w, step, seed):
        z, _, y = self._logits(w)
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    def grad(self, p, w, step, seed):
        z, x, y = self._logits(w)
        err = 0.5 * (1.0 + np.tanh(0.5 * z)) - y  # sigmoid(z) - y, without exp overflow
        return [np.sum(x * err[:, None], axis=0) / len(y), np.array([np.mean(err)])]


class _Mlp(_Objective):
    """3-4-1 tanh network, MSE on 16 fixed samples; params W1 (3,4), b1 (4,), W2 (4,1), b2 (1,)."""

    fixed_shapes = ((3, 4), (4,), (4, 1), (1,))

    @functools.cached_property
    def data(self) -> tuple[np.ndarray, ...]:
        rng = _data_rng("mlp", self.fixed_shapes)
        x = rng.standard_normal((16, 3))
        y = (np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2])[:, None]
        return _readonly(x, y)

    def init(self, p, rng):
        return [rng.standard_normal((3, 4)) / math.sqrt(3.0), 0.1 * rng.standard_normal(4),
                rng.standard_normal((4, 1)) / 2.0, 0.1 * rng.standard_normal(1)]  # fmt: skip

    def _forward(self, w):
        x, y = self.data
        h = np.tanh(_matmul(x, w[0]) + w[1])
        return x, y, h, _matmul(h, w[2]) + w[3]

    def loss(self, p, w, step, seed):
        _, y, _, out = self._forward(w)
        return float(np.mean((out - y) ** 2))

    def grad(self, p, w, step, seed):
        x, y, h, out = self._forward(w)
        d_out = 2.0 * (out - y) / y.size
        d_pre = _matmul(d_out, w[2].T) * (1.0 - h * h)
        return [_matmul(x.T, d_pre), np.sum(d_pre, axis=0), _matmul(h.T, d_out),
                np.sum(d_out, axis=0)]  # fmt: skip


class _Embedding(_Objective):
    """Embedding table (rows, dim) with a linear readout (dim,): MSE to fixed per-row targets.

    Each step a minibatch of rows (drawn from ``(seed, step)``, always with a
    repeated row) is looked up; the table's gradient is one SparseRows entry
    per lookup, as embedding backward passes produce it.
    """

    def accepts(self, shapes):
        if len(shapes) != 2 or len(shapes[0]) != 2 or shapes[1] != (shapes[0][1],):
            return "embedding takes shapes ((rows, dim), (dim,))"
        return None

    @staticmethod
    @functools.cache
    def targets(rows: int, dim: int) -> np.ndarray:
        (y,) = _readonly(_data_rng("embedding", ((rows, dim), (dim,))).standard_normal(rows))
        return y

    def batch(self, p: Problem, step: int, seed: int) -> np.ndarray:
        rows = p.shapes[0][0]
        return _indices_with_duplicate(rng_for(p.name, seed, step), rows, max(2, 3 * rows // 4))

    def init(self, p, rng):
        return [0.5 * rng.standard_normal(p.shapes[0]), rng.standard_normal(p.shapes[1])]

    def _residual(self, p, w, step, seed):
        idx = self.batch(p, step, seed)
        y = self.targets(*p.shapes[0])
        return idx, np.sum(w[0][idx] * w[1], axis=1) - y[idx]

    def loss(self, p, w, step, seed):
        _, r = self._residual(p, w, step, seed)
        return float(np.mean(r * r))

    def grad(self, p, w, step, seed):
        idx, r = self._residual(p, w, step, seed)
        coef = 2.0 * r / len(idx)
        rows = coef[:, None] * w[1][None, :]
        return [(idx, rows), np.sum(coef[:, None] * w[0][idx], axis=0)]


def _indices_with_duplicate(rng: np.random.Generator, rows: int, count: int) -> np.ndarray:
    """``count >= 2`` row indices drawn with replacement, at least one of them repeated."""
    idx = rng.integers(0, rows, count, dtype=np.int64)
    idx[-1] = idx[0]
    return rng.permutation(idx)


# ------------------------------------------------------------------ kinds


@dataclass(frozen=True)
class _Kind:
    regime: str
    open_gen: Callable[[_Draw], np.ndarray] | None = None
    objective: _Objective | None = None
    sparse_rows: bool = False  # open loop: tensor 0 is a SparseRows of draws of open_gen
    history_scale: Callable[[int, int], float] | None = None
    dtypes: tuple[str, ...] = DTYPES


_KINDS: dict[str, _Kind] = {
    "typical": _Kind("open", _typical),
    "tiny-near-eps": _Kind("open", _tiny_near_eps, dtypes=("float64", "float32", "bfloat16")),
    "huge": _Kind("open", _huge),
    "mixed-scales": _Kind("open", _mixed_scales),
    "sign-flips-decreasing": _Kind("open", _sign_flips_decreasing),
    "exact-zeros": _Kind("open", _exact_zeros),
    "subnormals": _Kind("open", _subnormals),
    "sparse-rows": _Kind("open", _typical, sparse_rows=True),
    "small-decreasing": _Kind("open", _small_decreasing),
    "small-after-large": _Kind("open", _small_typical, history_scale=_history_big_then_small),
    "keras-doc": _Kind("closed", objective=_KerasDoc()),
    "torch-linear-regression": _Kind("closed", objective=_TorchLinearRegression()),
    "tfjs-cubic": _Kind("closed", objective=_TfjsCubic()),
    "quadratic": _Kind("closed", objective=_Quadratic()),
    "rosenbrock": _Kind("closed", objective=_Rosenbrock()),
    "logistic-regression": _Kind("closed", objective=_Logistic()),
    "mlp": _Kind("closed", objective=_Mlp()),
    "embedding": _Kind("closed", objective=_Embedding()),
}


def _shape_error(kind: _Kind, shapes: tuple[tuple[int, ...], ...]) -> str | None:
    if kind.objective is not None:
        return kind.objective.accepts(shapes)
    if kind.sparse_rows and len(shapes[0]) != 2:
        return "a sparse-rows problem's tensor 0 is a 2-D table (rows, dim)"
    return None


# ------------------------------------------------------------------ the problem


def _normalise_shapes(shapes: Any) -> tuple[tuple[int, ...], ...]:
    try:
        out = tuple(tuple(int(d) for d in s) for s in shapes)
    except TypeError:
        raise ValueError(
            f"shapes={shapes!r} must be a sequence of shapes (tuples of ints)"
        ) from None
    if not out:
        raise ValueError("shapes=() is empty; a problem needs at least one tensor")
    for s in out:
        if any(d < 1 for d in s):
            raise ValueError(f"shape {s} has a dimension < 1; every tensor needs an element")
    return out


@dataclass(frozen=True)
class Problem:
    """One generated optimisation problem: shapes, steps, hyperparameters, gradients.

    ``name`` identifies it in test ids and reports; ``regime`` is ``"open"``
    (gradients fixed in advance) or ``"closed"`` (computed from the current
    params); ``hyper`` overrides documented defaults with exact decimal
    strings; a run starts from a state that already took ``start_step``
    steps; ``sparse`` problems give tensor 0's gradient as
    :class:`adamspec.spec.SparseRows`; ``description`` says which failure mode it
    exposes. ``kind`` names the generator (open-loop regime or closed-loop objective);
    it defaults to ``name`` and survives resizing with :meth:`with_`. ``layout`` is how
    its arrays are laid out in memory (:data:`LAYOUTS`): ``"transposed"`` hands 2-D
    params, state and gradients over as the transpose of a contiguous array (Fortran
    order: the same values, a non-contiguous view for kernels that accept one).
    ``step`` arguments count from 0 within a run: the optimizer's own step
    counter at ``gradients(k, ...)`` is ``start_step + k + 1``.
    """

    name: str
    regime: str
    shapes: tuple[tuple[int, ...], ...]
    steps: int
    hyper: Mapping[str, str] = field(default_factory=dict, hash=False)
    start_step: int = 0
    sparse: bool = False
    description: str = ""
    kind: str = ""
    layout: str = "contiguous"

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        if not self.kind:
            set_("kind", self.name)
        if self.kind not in _KINDS:
            raise ValueError(f"kind={self.kind!r} is unknown; allowed: {', '.join(_KINDS)}")
        kind = _KINDS[self.kind]
        if self.regime not in REGIMES:
            raise ValueError(f"regime={self.regime!r} is unknown; allowed: {', '.join(REGIMES)}")
        if self.regime != kind.regime:
            raise ValueError(f"regime={self.regime!r} but kind {self.kind!r} is {kind.regime!r}")
        for what, value, low in (("steps", self.steps, 1), ("start_step", self.start_step, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{what}={value!r} must be an integer >= {low}")
        set_("shapes", _normalise_shapes(self.shapes))
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r} is unknown; allowed: {', '.join(LAYOUTS)}")
        if self.layout == "transposed" and (self.sparse or any(len(s) != 2 for s in self.shapes)):
            raise ValueError(f"{self.name}: a transposed layout needs dense 2-D tensors")
        problem = _shape_error(kind, self.shapes)
        if problem:
            raise ValueError(f"{self.name}: shapes={self.shapes} are invalid: {problem}")
        sparse = kind.sparse_rows or isinstance(kind.objective, _Embedding)
        if self.sparse != sparse:
            raise ValueError(f"{self.name}: sparse={self.sparse!r} but kind {self.kind!r} is not")
        hyper = {str(k): str(v) for k, v in dict(self.hyper).items()}
        try:
            make_hyper(**hyper)
        except HyperparameterError as exc:
            raise ValueError(f"{self.name}: hyper is invalid: {exc}") from None
        # A plain dict copy (not a mappingproxy) so problems pickle into worker processes.
        set_("hyper", hyper)

    # -------------------------------------------------------------- resizing and queries

    def with_(
        self, *, steps: int | None = None, shapes: Sequence[Sequence[int]] | None = None
    ) -> Problem:
        """A copy with another number of steps and/or shapes (validated like the original)."""
        changes: dict[str, Any] = {}
        if steps is not None:
            changes["steps"] = steps
        if shapes is not None:
            changes["shapes"] = shapes
        return dataclasses.replace(self, **changes)

    @property
    def coordinates(self) -> int:
        """Total number of scalar parameters."""
        return sum(math.prod(s) for s in self.shapes)

    @property
    def meaningful_dtypes(self) -> tuple[str, ...]:
        """The dtypes in which this problem exercises what it describes.

        Every problem runs in every dtype; ``tiny-near-eps`` in float16 mostly
        underflows to zero gradients, so it is left out there.
        """
        return _KINDS[self.kind].dtypes

    # -------------------------------------------------------------- values

    def initial_params(self, dtype: str, seed: int) -> list[np.ndarray]:
        """The starting params in ``dtype``: documented starts are fixed, others follow ``seed``."""
        return [self._laid_out(round_to_dtype(p, dtype)) for p in self._params64(seed)]

    def _laid_out(self, a: np.ndarray) -> np.ndarray:
        """``a`` in this problem's memory layout (same values)."""
        return np.asfortranarray(a) if self.layout == "transposed" else a

    def _params64(self, seed: int) -> list[np.ndarray]:
        rng = rng_for(self.name, seed, 0, _PARAMS)
        kind = _KINDS[self.kind]
        if kind.objective is not None:
            return [np.asarray(p, dtype=np.float64) for p in kind.objective.init(self, rng)]
        return [rng.standard_normal(s) for s in self.shapes]

    def initial_state(
        self, dtype: str, seed: int, amsgrad: bool
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None]:
        """``(m, v, v_max)`` in ``dtype`` after ``start_step`` steps (zeros when it is 0).

        A nonzero state is the exact float64 moment recursion (with this
        problem's betas) over a history of gradients like the problem's own,
        rounded to ``dtype``: ``v >= 0`` and ``v_max >= v`` hold exactly
        because rounding is monotone. ``v_max`` is the running maximum of the
        raw ``v`` (the PyTorch/TensorFlow form); None unless ``amsgrad``.
        """
        fmt = _fmt(dtype)
        if self.start_step == 0:
            zeros = [self._laid_out(np.zeros(s, dtype=numpy_dtype(fmt))) for s in self.shapes]
            copies = lambda: [z.copy(order="K") for z in zeros]  # noqa: E731
            return zeros, copies(), copies() if amsgrad else None
        hyper = make_hyper(**self.hyper)
        b1, b2 = float(hyper.beta1), float(hyper.beta2)
        m = [np.zeros(s) for s in self.shapes]
        v = [np.zeros(s) for s in self.shapes]
        v_max = [np.zeros(s) for s in self.shapes]
        for grads in self._history(fmt, seed):
            for i, g in enumerate(grads):
                m[i] = b1 * m[i] + (1.0 - b1) * g
                v[i] = b2 * v[i] + (1.0 - b2) * g * g
                v_max[i] = np.maximum(v_max[i], v[i])

        def rounded(arrays: list[np.ndarray]) -> list[np.ndarray]:
            return [self._laid_out(round_to_dtype(a, dtype)) for a in arrays]

        return rounded(m), rounded(v), rounded(v_max) if amsgrad else None

    def _history(self, fmt: FloatFormat, seed: int):
        """Dense float64 gradients of the ``start_step`` steps before the run."""
        kind = _KINDS[self.kind]
        rng = rng_for(self.name, seed, 0, _STATE)
        if kind.objective is not None:
            # Closed loop: the gradient at the start, jittered, stands for the recent past.
            g0 = self._dense(self._grad64(0, self._params64(seed), fmt, seed))
            for _ in range(self.start_step):
                yield [g * (1.0 + 0.1 * rng.standard_normal(g.shape)) for g in g0]
            return
        fixed = rng_for(self.name, seed, 0, _FIXED)
        for k in range(self.start_step):
            scale = kind.history_scale(k, self.start_step) if kind.history_scale else 1.0
            # Sparse kinds: the dense history of a table whose every row has been touched.
            yield [scale * kind.open_gen(_Draw(rng, fixed, s, fmt, 0)) for s in self.shapes]

    def _dense(self, grads: list[Any]) -> list[np.ndarray]:
        out = []
        for g, s in zip(grads, self.shapes, strict=True):
            if isinstance(g, tuple):
                dense = np.zeros(s)
                np.add.at(dense, g[0], g[1])
                out.append(dense)
            else:
                out.append(g)
        return out

    def gradients(
        self, step: int, params: Sequence[np.ndarray], dtype: str, seed: int
    ) -> list[Gradient]:
        """The gradients of run step ``step`` (0-based), one per tensor, in ``dtype``.

        Open-loop problems ignore ``params``; closed-loop ones read them
        exactly (as float64) and return the float64 gradient correctly
        rounded to ``dtype``. Same arguments, same bits.
        """
        fmt = _fmt(dtype)
        kind = _KINDS[self.kind]
        if kind.objective is not None:
            x = self._check_params(params)
            grads = self._grad64(step, x, fmt, seed)
        else:
            grads = self._open64(step, fmt, seed)
        out: list[Gradient] = []
        for g, s in zip(grads, self.shapes, strict=True):
            if isinstance(g, tuple):
                idx, values = g
                out.append(SparseRows(idx, round_to_dtype(values, dtype), s[0]))
            else:
                out.append(self._laid_out(round_to_dtype(g, dtype)))
        return out

    def _check_params(self, params: Sequence[np.ndarray]) -> list[np.ndarray]:
        if params is None or len(params) != len(self.shapes):
            n = "None" if params is None else len(params)
            raise ValueError(f"{self.name}: got {n} param tensors, expected {len(self.shapes)}")
        x = []
        for i, (p, s) in enumerate(zip(params, self.shapes, strict=True)):
            a = np.asarray(p)
            if a.shape != s:
                raise ValueError(f"{self.name}: param {i} has shape {a.shape}, expected {s}")
            x.append(a.astype(np.float64))  # exact for all four formats
        return x

    def _grad64(self, step: int, x: list[np.ndarray], fmt: FloatFormat, seed: int) -> list[Any]:
        _check_counts(seed=seed, step=step)  # as open loops do, though most objectives ignore them
        return _KINDS[self.kind].objective.grad(self, x, step, seed)

    def _open64(self, step: int, fmt: FloatFormat, seed: int) -> list[Any]:
        kind = _KINDS[self.kind]
        rng = rng_for(self.name, seed, step)
        fixed = rng_for(self.name, seed, 0, _FIXED)
        out: list[Any] = []
        for i, s in enumerate(self.shapes):
            if kind.sparse_rows and i == 0:
                rows, rest = s[0], s[1:]
                idx = _indices_with_duplicate(rng, rows, max(2, 3 * rows // 4))
                values = kind.open_gen(_Draw(rng, fixed, (len(idx), *rest), fmt, step))
                out.append((idx, values))
            else:
                out.append(kind.open_gen(_Draw(rng, fixed, s, fmt, step)))
        return out

    def loss(self, params: Sequence[np.ndarray], step: int = 0, seed: int = 0) -> float:
        """The closed-loop objective at ``params`` in float64 (for checks; open loops have none)."""
        kind = _KINDS[self.kind]
        if kind.objective is None:
            raise ValueError(f"{self.name} is open-loop: its gradients are not of a loss")
        return kind.objective.loss(self, self._check_params(params), step, seed)


# ------------------------------------------------------------------ the catalogue of problems


def _open(name: str, shapes, description: str, **kw: Any) -> Problem:
    return Problem(name, "open", shapes, kw.pop("steps", 10), description=description, **kw)


def _closed(name: str, shapes, hyper: Mapping[str, str], description: str, **kw: Any) -> Problem:
    return Problem(name, "closed", shapes, 10, hyper, description=description, **kw)


_DEFAULT: tuple[Problem, ...] = (
    _open("typical", ((2, 3), (4,)), "N(0, 1) gradients on two tensors: the baseline."),
    _open("tiny-near-eps", ((6,),),
          "|g| in 1e-9..1e-6 so sqrt(v) ~ eps: where epsilon enters the denominator dominates.",
          hyper={"eps": "1e-8"}),
    _open("huge", ((6,),),
          "|g| in 1e15..1e30 (float16: its top two decades): g**2 overflows in low precision."),
    _open("mixed-scales", ((4, 4),),
          "|g| log-uniform over 1e-30..1e30 within the dtype's normal range, random signs."),
    _open("sign-flips-decreasing", ((6,),),
          "alternating signs, magnitudes / 64 each step: v shrinks and AMSGrad's max binds."),
    _open("exact-zeros", ((3, 4),),
          "half the gradients are +-0 and every third coordinate always 0: 0/(0+eps) paths."),
    _open("subnormals", ((8,),),
          "gradients in the dtype's subnormal range plus a few normals: flush-to-zero shows."),
    _open("sparse-rows", ((8, 3),),
          "embedding-style SparseRows with repeated indices: lazy vs dense, sum vs square.",
          sparse=True),
    _open("weight-decay", ((2, 3), (3,)),
          "typical gradients with weight_decay 0.01: L2 vs decoupled, before vs after.",
          hyper={"weight_decay": "0.01"}, kind="typical"),
    _open("late-steps", ((6,),),
          "starts at step 1000: bias corrections near 1, step-counter precision shows.",
          start_step=1000, kind="typical"),
    _closed("keras-doc", ((1,),), {"lr": "0.2"},
            "tf.keras Adam doc: loss = var1**2 / 2 from var1 = 10.0 (first gradient 10.0)."),
    _closed("torch-linear-regression", ((1,), (1,)), {"lr": "0.05"},
            "PyTorch tutorial: nn.Linear(1, 1) fit to 2.4785694 x + 7.3256989 + noise, MSE."),
    _closed("tfjs-cubic", ((1,), (1,), (1,)), {"lr": "0.01"},
            "TF.js doc: fit p a^3 - q a + r to a = [0,1,2,3], b = [1,2,5,11], MSE."),
    _closed("quadratic", ((4,),), {"lr": "0.05"},
            "0.5 x^T A x - b^T x with A SPD, condition 100: per-coordinate scaling."),
    _closed("rosenbrock", ((2,),), {"lr": "0.01"},
            "Rosenbrock from (-1.2, 1): curved valley, large then small gradients."),
    _closed("logistic-regression", ((4,), (1,)), {"lr": "0.05"},
            "logistic regression on 32 fixed samples x 4 features, weights and bias."),
    _closed("mlp", ((3, 4), (4,), (4, 1), (1,)), {"lr": "0.01"},
            "a 3-4-1 tanh MLP with MSE: four tensors of different shapes."),
    _closed("embedding", ((8, 3), (3,)), {"lr": "0.05"},
            "embedding table with a linear readout: SparseRows with duplicates from the batch.",
            sparse=True),
)  # fmt: skip

_DISCRIMINATING_ONLY: tuple[Problem, ...] = (
    _open("disc-eps", ((2, 3),),
          "eps 1e-3 over |g| ~ 1e-4 in the first steps: eps placement, bias correction, every "
          "AMSGrad form (magnitudes / 64 per step) and hyperparameter precision all show.",
          steps=3, hyper={"eps": "1e-3"}, kind="small-decreasing"),
    _open("disc-amsgrad", ((6,),),
          "starts at step 10 with v_max > v (large, then tiny history) and tiny gradients: raw "
          "AMSGrad binds and RAdam's rectification (rho_t > 5) is active.",
          steps=3, start_step=10, kind="small-after-large"),
    _open("disc-weight-decay", ((2, 3),),
          "weight_decay 0.05 with lr 0.01: L2, decoupled, lr-scaled or not, before or after.",
          steps=3, hyper={"weight_decay": "0.05", "lr": "0.01"}, kind="typical"),
    _open("disc-hyper-precision", ((6,),),
          "lr 0.1: a step is many bfloat16 ULPs of theta, so how each variant holds its "
          "hyperparameters shows (beta2 = 0.999 is 1.0 in bfloat16: 1 - beta2^t vanishes).",
          steps=3, hyper={"lr": "0.1"}, kind="typical"),
    _open("disc-sparse", ((4, 2),),
          "SparseRows with a repeated index on a table whose untouched rows have moments: lazy "
          "vs dense-equivalent and sum-then-square vs square-then-sum.",
          steps=3, start_step=5, sparse=True, kind="sparse-rows"),
)  # fmt: skip

#: Sizes that straddle the boundaries a real kernel has: a 512-bit vector holds 16 float32,
#: GPU blocks and unrolled SIMD loops take 1024 or 4096 elements, int16/uint16 indices end
#: at 2^16 and float32 indices (and 24-bit address arithmetic) at 2^24.
_VECTOR, _BLOCK, _BIG_BLOCK = 16, 1024, 4096

_SCALE: tuple[Problem, ...] = (
    _open("scale-under-a-vector", ((13,),),
          "13 coordinates: less than one 512-bit vector of float32, only a scalar tail runs.",
          kind="typical"),
    _open("scale-vector-and-tail", ((_VECTOR + 5,),),
          "one full 16-lane vector and a 5-coordinate tail.", kind="typical"),
    _open("scale-blocks", ((15 * _BIG_BLOCK + 3 * _BLOCK + 29,),),
          "64,541 coordinates: 15 full 4096-element blocks, 63 full 1024-element blocks, a "
          "29-coordinate tail, all below 2^16.", steps=5, kind="typical"),
    _open("scale-past-2^16", ((2**16 + _BLOCK + 7,),),
          "66,567 coordinates: indices past 2^16 (int16/uint16 index arithmetic wraps there).",
          steps=5, kind="typical"),
    _open("scale-past-2^24", ((2**24 + _BIG_BLOCK + 3,),),
          "16,781,315 coordinates: indices past 2^24 (float32 index arithmetic rounds there).",
          steps=3, kind="typical"),
    _open("scale-transposed", ((257, 129),),
          "a 257 x 129 tensor handed over transposed (Fortran order): a non-contiguous view "
          "for kernels that accept one, a contiguous copy for the others.",
          steps=5, kind="typical", layout="transposed"),
    _open("scale-long", ((_BIG_BLOCK + _BLOCK + 13,),),
          "5,133 coordinates free-running for 1,000 steps: divergence from the oracle's own "
          "trajectory, bias corrections near 1.", steps=1000, kind="typical"),
    _open("scale-sparse-rows", ((4099, 16),),
          "SparseRows on a 4099 x 16 table, repeated indices: lazy vs dense at size.",
          steps=5, sparse=True, kind="sparse-rows"),
)  # fmt: skip

_BY_NAME: dict[str, Problem] = {p.name: p for p in (*_DEFAULT, *_DISCRIMINATING_ONLY)}

#: The discriminating problems' names: chosen (shapes, steps, hyperparameters) to separate
#: the catalog's variants, they keep what they have under --size/--steps, as the fingerprint
#: suite does, also where a suite (quick) holds them.
DISCRIMINATING: frozenset[str] = frozenset(p.name for p in _DISCRIMINATING_ONLY)


def _quick(name: str, shapes) -> Problem:
    return _BY_NAME[name].with_(steps=4, shapes=shapes)


SUITES: Mapping[str, tuple[Problem, ...]] = MappingProxyType(
    {
        # the discriminating problems too: together they separate every pair of catalog
        # variants or show them the same formula (the separation matrix of a run says which)
        "quick": (
            _quick("typical", ((2, 2), (2,))),
            _quick("tiny-near-eps", ((4,),)),
            _quick("sign-flips-decreasing", ((4,),)),
            _quick("sparse-rows", ((4, 2),)),
            _quick("weight-decay", ((4,),)),
            _quick("keras-doc", ((1,),)),
            _quick("torch-linear-regression", ((1,), (1,))),
            *_DISCRIMINATING_ONLY,
        ),
        "default": _DEFAULT,
        "discriminating": (*_DISCRIMINATING_ONLY, _BY_NAME["rosenbrock"].with_(steps=3)),
        "long": (
            _BY_NAME["typical"].with_(steps=10_000, shapes=((3,),)),
            _BY_NAME["quadratic"].with_(steps=10_000, shapes=((3,),)),
        ),
        "scale": _SCALE,
    }
)


def resized(p: Problem, size: int | None = None, steps: int | None = None) -> Problem:
    """``p`` with ``size`` coordinates per tensor and/or ``steps`` steps (``--size``,
    ``--steps``); None keeps what it has.

    Only open-loop problems change size: a closed-loop objective's data fix its shapes (and
    the quadratic's matrix costs n^3). Dense tensors become ``(size,)``; a sparse table or a
    transposed 2-D tensor keeps its row width and takes ``ceil(size / width)`` rows.
    """
    for flag, value in (("--size", size), ("--steps", steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= MAX_SIZE):  # fmt: skip
            raise ValueError(f"{flag} {value!r} must be an integer in [1, {MAX_SIZE}]")
    shapes = None
    if size is not None and p.regime == "open":
        keeps_rows = p.sparse or p.layout == "transposed"
        shapes = tuple(
            (-(-size // s[-1]), *s[1:]) if keeps_rows and len(s) == 2 else (size,) for s in p.shapes
        )
    return p.with_(steps=steps, shapes=shapes)


#: Every named problem at its default size (the ``default`` suite and the discriminating ones;
#: the ``scale`` suite's are not: at up to 2^24 coordinates they are no strategy's draw).
PROBLEMS: Mapping[str, Problem] = MappingProxyType(_BY_NAME)


def problem(name: str) -> Problem:
    """The problem called ``name`` at its default size."""
    named = {**_BY_NAME, **{p.name: p for p in _SCALE}}
    try:
        return named[name]
    except (KeyError, TypeError):
        raise ValueError(f"problem={name!r} is unknown; allowed: {', '.join(named)}") from None


def suite(name: str) -> tuple[Problem, ...]:
    """The problems of suite ``name`` (``quick``, ``default``, ``discriminating``, ``long``,
    ``scale``)."""
    try:
        return SUITES[name]
    except (KeyError, TypeError):
        raise ValueError(f"suite={name!r} is unknown; allowed: {', '.join(SUITES)}") from None


__all__ = [
    "DISCRIMINATING",
    "DTYPES",
    "LAYOUTS",
    "MAX_SIZE",
    "PROBLEMS",
    "REGIMES",
    "SUITES",
    "Gradient",
    "Problem",
    "largest_finite",
    "problem",
    "resized",
    "rng_for",
    "round_to_dtype",
    "smallest_normal",
    "smallest_subnormal",
    "suite",
]
