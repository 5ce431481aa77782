"""``adamspec bench oracle``: the fast certified oracle against the mpmath oracle, in one run.

:func:`bench_oracle` measures, on the same inputs:

* **speed** -- element-steps per second (one element-step: one coordinate of one
  step, every component verified) of :func:`adamspec.oracles.fast.step` on ``size``
  coordinates and of :func:`adamspec.oracles.adam.step` on the first ``mpmath_size``
  of them, for the common variants (``torch.Adam``, ``paper.algorithm1``);
* **agreement** -- for every variant family (:data:`FAMILIES`), ``check_size``
  coordinates of typical, wide-range, special and adversarial inputs (moments
  exactly on or within 1e-17 of a rounding boundary, parameters landing on a
  boundary, overflow...) under varied hyperparameters, stepped by both oracles;
  every component of every coordinate is compared bit for bit (NaN equals NaN);
* **fallback rate** -- the fraction of element-steps the fast oracle handed to
  mpmath (:class:`adamspec.oracles.fast.FastStats`).

The mpmath oracle runs at about 6,000 element-steps/s per core, so the default
cross-check (20,000 coordinates per family, both cores) takes about a minute;
the goal of 10^6 per family is ``bench_oracle(size, seed, check_size=1_000_000)``
(about 8 minutes per family on this 2-core machine).

The input builders (:func:`typical_inputs`, :func:`wide_inputs`,
:func:`moment_boundary_pairs`, :func:`param_tie_case`) are reused by
``tests/test_fast_oracle.py``.

This module is long because most of it is those builders: each adversarial kind of input
(a moment on a rounding boundary, a parameter landing on a tie, overflow...) is
constructed exactly, so that the cross-check reaches the cases the fast oracle's bounds
must decline.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from typing import Any

import ml_dtypes
import numpy as np

from adamspec.harness.cluster import Executor, Failed, Task, executor
from adamspec.oracles import OracleState, StepResult, fast
from adamspec.oracles import adam as mpmath_oracle
from adamspec.oracles.rounding import numpy_dtype, round_exact
from adamspec.spec.catalog import entry
from adamspec.spec.formats import FORMATS, FloatFormat
from adamspec.spec.holding import holding_format
from adamspec.spec.hyper import Hyper
from adamspec.spec.precision import precision_named

#: Variants timed for the headline figure (the common ones).
TIMED = ("torch.Adam", "paper.algorithm1")
#: Variant families cross-checked, each cycling over these catalog entries.
FAMILIES: dict[str, tuple[str, ...]] = {
    "adam": ("torch.Adam", "paper.algorithm1", "torch.Adam[maximize]"),
    "eps_hat": (
        "paper.eps_hat",
        "tf.raw.ApplyAdam",
        "keras.Adam",
        "tf_keras.Adam",
        "tf_keras.Adam[adaptive_epsilon]",
        "tf.v1.AdamOptimizer",
        "tfjs.adam",
        "onnx.Adam",
    ),
    "amsgrad": (
        "torch.Adam[amsgrad]",
        "reddi.amsgrad",
        "keras.Adam[amsgrad]",
        "tf.raw.ApplyAdamWithAmsgrad",
        "optax.amsgrad",
        "optax.amsgrad[bias_correction_nu=False]",
    ),
    "decoupled": ("torch.AdamW", "keras.AdamW", "optax.adamw", "onnx.Adam[norm_coefficient_post]"),
    "eps_root_nesterov": ("optax.adam", "optax.adam[nesterov]", "tf.raw.ApplyAdam[use_nesterov]"),
    "radam": ("torch.RAdam",),
}
#: Hyperparameter variations cycled through by the cross-check (on top of the defaults).
HYPER_VARIANTS: tuple[dict[str, Any], ...] = (
    {},
    {"weight_decay": "0.01"},
    {"lr": "0.1", "eps": "0"},
    {"clipvalue": "0.5"},
    {"clipnorm": "1.0"},
    {"global_clipnorm": "3"},
    {"use_ema": True, "ema_momentum": "0.9", "ema_overwrite_frequency": 2},
    {"lr": [0.01, 0.001, 0.0001]},
    {"beta1": "0.5", "beta2": "0.75"},
)
_DTYPES = {name: numpy_dtype(fmt) for name, fmt in FORMATS.items()}
#: Kinds of cross-check cases, cycled (typical inputs take half the coordinates).
KINDS = (
    "typical", "wide", "m-boundary", "typical", "param-tie", "v-boundary", "typical",
    "param-tie-beside", "typical", "overflow", "wide", "typical",
)  # fmt: skip


def _dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(_DTYPES[name])


# ---------------------------------------------------------------- inputs


@dataclass
class Case:
    """One oracle call: a catalog variant, hyperparameters and one step's inputs."""

    variant: str
    hyper: Hyper
    dtype: str
    params: np.ndarray
    grads: np.ndarray
    state: OracleState
    kind: str = "typical"
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.params.size)


def typical_inputs(
    n: int, dtype: str, rng: np.random.Generator, step: int = 10
) -> tuple[np.ndarray, np.ndarray, OracleState]:
    """Training-like inputs: params ~ N(0, 1), grads ~ N(0, 1), moments of a few steps."""
    dt = _dtype(dtype)
    params = rng.standard_normal(n).astype(dt)
    grads = rng.standard_normal(n).astype(dt)
    m = (rng.standard_normal(n) * 0.3).astype(dt)
    v = (rng.random(n) * 0.05).astype(dt)
    v_max = np.maximum(v.astype(np.float64), (rng.random(n) * 0.05)).astype(dt)
    return params, grads, OracleState(m=m, v=v, v_max=v_max, step=step)


def wide_inputs(
    n: int, dtype: str, rng: np.random.Generator, step: int = 3, specials: bool = True
) -> tuple[np.ndarray, np.ndarray, OracleState]:
    """Magnitudes log-uniform over the format's range (1e-30..1e30 within it), with exact
    zeros, subnormals, the largest finite values and (``specials``) infinities and NaN."""
    fmt = FORMATS[dtype]
    dt = _dtype(dtype)
    lo_exp = max(-100, fmt.emin - fmt.precision + 1)
    hi_exp = min(100, fmt.emax)

    def draw(nonneg: bool = False) -> np.ndarray:
        mag = np.exp2(rng.uniform(lo_exp, hi_exp, n))
        x = mag if nonneg else mag * rng.choice([-1.0, 1.0], n)
        pick = rng.random(n)
        x = np.where(pick < 0.05, 0.0, x)
        tiny = 2.0 ** (fmt.emin - fmt.precision + 1) * rng.integers(1, 8, n)
        x = np.where((pick >= 0.05) & (pick < 0.08), tiny, x)
        biggest = float(np.finfo(np.float32).max) if dtype == "float32" else None
        if biggest is None:
            biggest = float(ml_dtypes.finfo(dt).max) if dtype == "bfloat16" else None
        if biggest is None:
            biggest = float(np.finfo(dt).max)
        x = np.where((pick >= 0.08) & (pick < 0.1), biggest, x)
        if specials and not nonneg:
            x = np.where((pick >= 0.1) & (pick < 0.11), np.inf, x)
            x = np.where((pick >= 0.11) & (pick < 0.12), np.nan, x)
        return x.astype(dt)

    params, grads = draw(), draw()
    m, v = draw(), draw(nonneg=True)
    v_max = np.maximum(v.astype(np.float64), draw(nonneg=True).astype(np.float64)).astype(dt)
    return params, grads, OracleState(m=m, v=v, v_max=v_max, step=step)


def _midpoint_distance(x: Fraction, fmt: FloatFormat) -> Fraction:
    """Signed distance from ``x`` to the nearest rounding midpoint of ``fmt``, in ulps."""
    if x == 0:
        return Fraction(1, 2)
    a = abs(x)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if a < Fraction(2) ** e:
        e -= 1
    q = max(e, fmt.emin) - fmt.precision + 1
    scaled = a / Fraction(2) ** q
    return scaled - math.floor(scaled) - Fraction(1, 2)


def _representable(x: Fraction, fmt: FloatFormat) -> bool:
    return round_exact(x, fmt) == x


def _random_midpoints(fmt: FloatFormat, rng: np.random.Generator, n: int) -> list[Fraction]:
    """Random rounding midpoints of ``fmt`` (normal range, both signs)."""
    out = []
    for _ in range(n):
        e = int(rng.integers(-8, 8))
        significand = int(rng.integers(2 ** (fmt.precision - 1), 2**fmt.precision))
        mid = (Fraction(2 * significand + 1) / 2) * Fraction(2) ** (e - fmt.precision + 1)
        out.append(mid if rng.random() < 0.5 else -mid)
    return out


def moment_boundary_pairs(
    d: Fraction,
    k: Fraction,
    dtype: str,
    rng: np.random.Generator,
    count: int,
    squared: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(s, g)`` of ``dtype`` values whose moment ``d s + k g`` (``d s + k g^2`` when
    ``squared``) lies exactly on a rounding midpoint of ``dtype``, and the exact distance
    of each from it in ulps (0: a tie).

    Constructed, for the decimal betas of the catalog (``k = 1/D``): for ``m``, a random
    midpoint ``M``, ``s`` the ``dtype`` value nearest ``D M / (D d)`` and ``g = D M - D d s``
    (a small multiple of ``M``'s quantum, so representable); for ``v``, ``s = 0`` and
    ``g = r h 2^e`` with ``r^2`` absorbing the odd part of ``D`` and ``h`` odd, so that
    ``k g^2`` has exactly one bit more than ``dtype`` holds. The same pairs under the
    betas held in binary64 lie within about 1e-17 (relative) of the midpoint: one float64
    ulp beside it. Other constants: whatever pairs the construction still yields.
    """
    fmt = FORMATS[dtype]
    dt = _dtype(dtype)
    found: list[tuple[Fraction, Fraction]] = []
    if squared:
        found = _square_ties(k, fmt, rng, count)
    elif k.numerator == 1 and (d * k.denominator).denominator == 1:
        D, a = k.denominator, int(d * k.denominator)
        for mid in _random_midpoints(fmt, rng, 4 * count):
            if len(found) >= count or a == 0:
                break
            s = Fraction(round_exact(D * mid / a, fmt))
            g = D * mid - a * s
            if _representable(g, fmt) and s != 0:
                found.append((s, g))
    dist = [_midpoint_distance(d * s + k * (g * g if squared else g), fmt) for s, g in found]
    return (
        np.array([float(s) for s, _ in found], dtype=np.float64).astype(dt),
        np.array([float(g) for _, g in found], dtype=np.float64).astype(dt),
        np.array([float(x) for x in dist], dtype=np.float64),
    )


def _square_ties(
    k: Fraction, fmt: FloatFormat, rng: np.random.Generator, count: int
) -> list[tuple[Fraction, Fraction]]:
    """``(0, g)`` with ``k g^2`` exactly a midpoint of ``fmt`` (``k = b / (2^a c)``, c odd)."""
    if k.numerator != 1:
        return []
    c = k.denominator
    while c % 2 == 0:
        c //= 2
    r = 1
    rest, q = c, 3
    while rest > 1:  # r: the smallest number with c | r^2
        e = 0
        while rest % q == 0:
            rest //= q
            e += 1
        r *= q ** ((e + 1) // 2)
        q += 2
    w = r * r // c  # odd
    p = fmt.precision
    # h odd with w h^2 in [2^p, 2^(p+1)): exactly p + 1 significant bits, odd
    h_min = math.isqrt((2**p - 1) // w) + 1
    h_max = math.isqrt((2 ** (p + 1) - 1) // w)
    out: list[tuple[Fraction, Fraction]] = []
    for _ in range(4 * count):
        if h_max < h_min or len(out) >= count:
            break
        h = int(rng.integers(h_min, h_max + 1)) | 1
        if not 2**p <= w * h * h < 2 ** (p + 1):
            continue
        g = Fraction(r * h) * Fraction(2) ** int(rng.integers(-12, 6))
        if rng.random() < 0.5:
            g = -g
        v = k * g * g
        in_range = Fraction(2) ** fmt.emin <= v < Fraction(2) ** fmt.emax
        if in_range and _representable(g, fmt) and _midpoint_distance(v, fmt) == 0:
            out.append((Fraction(0), g))
    return out


def moment_boundary_case(
    name: str, dtype: str, rng: np.random.Generator, count: int, which: str = "m"
) -> Case | None:
    """A step whose new ``m`` (or ``v``) is exactly a rounding midpoint of ``dtype`` under the
    variant's decimal betas (:func:`moment_boundary_pairs`): on the boundary for the
    "ideal" hyperparameter precision, one float64 ulp beside it for betas held in binary64."""
    e = entry(name)
    hyper = e.hyper()
    beta = Fraction(hyper.beta1 if which == "m" else hyper.beta2)
    s, g, _ = moment_boundary_pairs(beta, 1 - beta, dtype, rng, count, squared=(which == "v"))
    if s.size == 0:
        return None
    if e.variant.maximize:
        g = -g
    dt = _dtype(dtype)
    n = s.size
    params = rng.standard_normal(n).astype(dt)
    other = (rng.random(n) * 0.01).astype(dt)
    if which == "m":
        state = OracleState(m=s, v=other, v_max=other, step=5)
    else:
        state = OracleState(m=(rng.standard_normal(n) * 0.1).astype(dt), v=s, v_max=s, step=5)
    return Case(name, hyper, dtype, params, g, state, kind=f"{which}-boundary")


def param_tie_case(
    name: str, dtype: str, rng: np.random.Generator, n: int, beside: bool = False
) -> Case:
    """Step 1 from zero state with ``eps = 0`` and ``lr`` half a ulp of params in [1, 2):
    ``theta - lr * u`` with ``u = +-1`` exactly (the oracle recognises the surds) lands
    exactly on a rounding midpoint. ``beside``: ``lr`` one float64 ulp larger, so the
    exact result lies one ulp (of float64, relative) beside it."""
    fmt = FORMATS[dtype]
    dt = _dtype(dtype)
    half = 2.0**-(fmt.precision)  # half a ulp on [1, 2)
    lr = math.nextafter(half, 1.0) if beside else half
    params = 1.0 + rng.integers(0, 2 ** min(fmt.precision - 1, 30), n) * 2.0 ** (1 - fmt.precision)
    params = params.astype(dt)
    grads = (rng.standard_normal(n) * np.exp2(rng.integers(-10, 10, n))).astype(dt)
    grads = np.where(grads == 0, dt.type(1.0), grads).astype(dt)
    hyper = entry(name).hyper(lr=float.hex(lr), eps="0")
    return Case(name, hyper, dtype, params, grads, OracleState(), kind="param-tie" + (
        "-beside" if beside else ""))  # fmt: skip


def overflow_case(name: str, dtype: str, rng: np.random.Generator, n: int) -> Case:
    """Params at the largest finite value, pushed over it by a huge learning rate."""
    dt = _dtype(dtype)
    big = float(ml_dtypes.finfo(dt).max) if dtype == "bfloat16" else float(np.finfo(dt).max)
    params = (np.full(n, big) * rng.choice([-1.0, 1.0, 0.999], n)).astype(dt)
    grads = rng.standard_normal(n).astype(dt)
    held = holding_format(entry(name).variant, FORMATS[dtype]) or FORMATS["float64"]
    top = (2 - 2.0 ** (1 - held.precision)) * 2.0**held.emax  # largest finite held value
    hyper = entry(name).hyper(lr=float.hex(float(np.float32(top / 4)) if top < 1e300 else 1e300))
    return Case(name, hyper, dtype, params, grads, OracleState(step=2), kind="overflow")


def family_cases(
    family: str, dtype: str, rng: np.random.Generator, total: int, batch: int | None = None
) -> list[Case]:
    """About ``total`` coordinates of cases for one family: typical (about half), wide with
    specials, moment boundaries, parameter ties and overflow, over the family's variants
    and :data:`HYPER_VARIANTS`."""
    names = FAMILIES[family]
    batch = batch or min(2000, max(100, total // 40))
    cases: list[Case] = []
    count = 0
    i = 0
    while count < total:
        name = names[int(rng.integers(len(names)))]
        extra = HYPER_VARIANTS[int(rng.integers(len(HYPER_VARIANTS)))]
        kind = KINDS[i % len(KINDS)]
        i += 1
        n = min(batch, total - count)
        try:
            hyper = entry(name).hyper(**extra)
        except ValueError:
            hyper = entry(name).hyper()
        small = min(n, 200)
        case: Case | None = None
        if kind == "typical":
            p, g, st = typical_inputs(n, dtype, rng, step=int(rng.integers(0, 50)))
            case = Case(name, hyper, dtype, p, g, st, "typical")
        elif kind == "wide":
            p, g, st = wide_inputs(n, dtype, rng, step=int(rng.integers(0, 5)))
            case = Case(name, hyper, dtype, p, g, st, "wide")
        elif kind in ("m-boundary", "v-boundary"):
            case = moment_boundary_case(name, dtype, rng, small, kind[0])
        elif kind == "param-tie":
            case = param_tie_case(name, dtype, rng, small)
        elif kind == "param-tie-beside":
            case = param_tie_case(name, dtype, rng, small, beside=True)
        else:
            case = overflow_case(name, dtype, rng, small)
        if case is None:  # no boundary pair found for these constants
            continue
        cases.append(case)
        count += case.size
    return cases


# ---------------------------------------------------------------- running both oracles


def mismatches(reference: StepResult, candidate: StepResult) -> int:
    """Coordinates where any rounded component differs bit for bit (NaN equals NaN); a
    differing scalar component (an accumulated beta power) counts every coordinate."""
    per_tensor: list[np.ndarray] = []
    scalar_bad = False
    for name in reference.components:
        for k, (a, b) in enumerate(zip(reference.rounded[name], candidate.rounded[name],
                                       strict=True)):  # fmt: skip
            a, b = np.asarray(a), np.asarray(b)
            x, y = a.astype(np.float64), b.astype(np.float64)
            same = ((x == y) & (np.signbit(x) == np.signbit(y))) | (np.isnan(x) & np.isnan(y))
            same &= a.dtype == b.dtype and a.shape == b.shape
            if a.ndim == 0:
                scalar_bad |= not bool(same)
                continue
            if len(per_tensor) <= k:
                per_tensor.append(~same.ravel())
            else:
                per_tensor[k] |= ~same.ravel()
    if scalar_bad:
        return sum(int(np.asarray(a).size) for a in reference.rounded["param"])
    return sum(int(bad.sum()) for bad in per_tensor)


def _run_mpmath(case: Case) -> StepResult:
    e = entry(case.variant)
    return mpmath_oracle.step(
        e.variant, case.hyper, case.params, case.grads, case.state, **_roles(case.dtype)
    )


def _run_fast(case: Case) -> StepResult:
    e = entry(case.variant)
    return fast.step(
        e.variant, case.hyper, case.params, case.grads, case.state, **_roles(case.dtype)
    )


# ---------------------------------------------------------------- mixed precision


def _roles(dtype: str) -> dict[str, Any]:
    """Both oracles' dtype arguments for precision ``dtype`` (a dtype or a mix)."""
    p = precision_named(dtype)
    return {"dtype": p.param, "state_dtype": p.state, "master_dtype": p.master}


def drawn_in(dtype: str) -> str:
    """The dtype a precision's inputs are drawn in: the state's (float32 for every preset),
    each role then cast to its own."""
    return precision_named(dtype).state


def in_precision(case: Case, dtype: str) -> Case:
    """``case`` (drawn in :func:`drawn_in`'s dtype) with each role cast to its dtype under
    precision ``dtype``: params and gradients to theirs, and the drawn params kept as the
    master where the precision has one (so the master is not its param's rounding)."""
    p = precision_named(dtype)
    if p.uniform:
        return case

    def cast(a: Any, role: str) -> Any:
        return None if a is None else np.asarray(a).astype(_dtype(getattr(p, role)))

    s = case.state
    state = OracleState(
        m=cast(s.m, "state"), v=cast(s.v, "state"), v_max=cast(s.v_max, "state"), ema=s.ema,
        step=s.step, beta1_power=s.beta1_power, beta2_power=s.beta2_power,
        master=cast(case.params, "master") if p.master else None,
    )  # fmt: skip
    params, grads = cast(case.params, "param"), cast(case.grads, "grad")
    return Case(case.variant, case.hyper, p.name, params, grads, state, case.kind, case.notes)


@dataclass
class _Tally:
    checked: int = 0
    mismatches: int = 0
    fast_seconds: float = 0.0
    stats: fast.FastStats = field(default_factory=fast.FastStats)
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "mismatches": self.mismatches,
            "fallback_rate": self.stats.fallback_rate,
            "exact_sign": self.stats.exact_sign,
            "fast_seconds": self.fast_seconds,
            "by_kind": {
                k: {"checked": v[0], "mismatches": v[1], "fallback_rate": v[2] / max(v[0], 1)}
                for k, v in self.by_kind.items()
            },
            "examples": self.examples[:5],
        }


def _cross_check(cases: Sequence[Case], ex: Executor) -> _Tally:
    tally = _Tally()
    done = dict(ex.run([Task(i, _run_mpmath, (case,)) for i, case in enumerate(cases)]))
    for i, case in enumerate(cases):
        ref = done[i]
        if isinstance(ref, Failed):
            raise RuntimeError(f"mpmath on {case.variant} {case.dtype} {case.kind}: {ref}")
        with fast.counting() as s:
            started = time.perf_counter()
            got = _run_fast(case)
            tally.fast_seconds += time.perf_counter() - started
        tally.stats.add(s)
        bad = mismatches(ref, got)
        tally.checked += case.size
        tally.mismatches += bad
        kind = tally.by_kind.setdefault(case.kind, [0, 0, 0])
        kind[0] += case.size
        kind[1] += bad
        kind[2] += s.fallback + s.whole
        if bad:
            tally.examples.append(f"{case.variant} {case.dtype} {case.kind}: {bad} coordinates")
    return tally


# ---------------------------------------------------------------- the benchmark


def bench_oracle(
    size: int = 1 << 20,
    seed: int = 0,
    *,
    dtype: str = "float32",
    mpmath_size: int = 2000,
    check_size: int = 20_000,
    families: Sequence[str] | None = None,
    repeats: int = 5,
    jobs: int | None = None,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Speed, agreement and fallback rate of the fast oracle against mpmath, one run.

    ``size`` coordinates are timed with the fast oracle (median of ``repeats`` after a
    warm-up) for each variant of :data:`TIMED`; the mpmath oracle is timed on the
    first ``mpmath_size`` of the same coordinates and both results compared.
    ``check_size`` coordinates per family (``families``: keys of :data:`FAMILIES`,
    default all) are cross-checked, mpmath in ``jobs`` processes (default: one per CPU) or
    on the Dask cluster ``scheduler`` names (:func:`adamspec.harness.cluster.executor`).
    Returns a JSON-ready dict; :func:`format_table` renders it.
    """
    rng = np.random.default_rng(seed)
    timed = {
        name: _time_variant(name, size, dtype, rng, min(mpmath_size, size), repeats)
        for name in TIMED
    }
    fams, where = _cross_check_families(
        families or list(FAMILIES), dtype, rng, check_size, jobs, scheduler
    )
    fast_rate = min(t["fast_steps_per_s"] for t in timed.values())
    mp_rate = float(np.median([t["mpmath_steps_per_s"] for t in timed.values()]))
    checked_x = sum(f["checked"] for f in fams.values())
    fallback_x = sum(f["fallback_rate"] * f["checked"] for f in fams.values())
    return {
        "mpmath_steps_per_s": mp_rate,
        "fast_steps_per_s": fast_rate,
        "speedup": fast_rate / mp_rate,
        "fallback_rate": max(t["fallback_rate"] for t in timed.values()),
        "mismatches": sum(t["mismatches"] for t in timed.values())
        + sum(f["mismatches"] for f in fams.values()),
        "checked": sum(t["checked"] for t in timed.values()) + checked_x,
        "size": size,
        "seed": seed,
        "dtype": dtype,
        "timed": timed,
        "families": fams,
        "check_size": check_size,
        "cross_check_fallback_rate": fallback_x / checked_x if checked_x else 0.0,
        "threads": fast_threads(),
        "mpmath_ran_on": where,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }


def _time_variant(
    name: str, size: int, dtype: str, rng: np.random.Generator, k: int, repeats: int
) -> dict[str, Any]:
    """One timed variant: the fast oracle on ``size`` typical coordinates (median of
    ``repeats`` after a warm-up), mpmath on the first ``k``, and their agreement there."""
    e = entry(name)
    hyper = e.hyper()
    drawn = Case(name, hyper, drawn_in(dtype), *typical_inputs(size, drawn_in(dtype), rng))
    case = in_precision(drawn, dtype)
    params, grads, state, roles = case.params, case.grads, case.state, _roles(dtype)
    fast.step(e.variant, hyper, params[:4096], grads[:4096], _head(state, 4096),
              **roles)  # warm-up  # fmt: skip
    samples = []
    with fast.counting() as stats:
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            result = fast.step(e.variant, hyper, params, grads, state, **roles)
            samples.append(time.perf_counter() - started)
    fast_s = float(np.median(samples))
    started = time.perf_counter()
    ref = mpmath_oracle.step(e.variant, hyper, params[:k], grads[:k], _head(state, k), **roles)
    mp_s = time.perf_counter() - started
    return {
        "fast_steps_per_s": size / fast_s,
        "mpmath_steps_per_s": k / mp_s,
        "fast_seconds_median": fast_s,
        "fallback_rate": stats.fallback_rate,
        "exact_sign_rate": stats.exact_sign / max(stats.element_steps, 1),
        "mismatches": mismatches(ref, _head_result(result, k)),
        "checked": k,
    }


def _cross_check_families(
    families: Sequence[str],
    dtype: str,
    rng: np.random.Generator,
    check_size: int,
    jobs: int | None,
    scheduler: str | None,
) -> tuple[dict[str, Any], str]:
    """Every family's cross-check (:func:`family_cases`), mpmath in ``jobs`` processes or on
    ``scheduler``'s cluster; and where mpmath ran."""
    workers = jobs or os.cpu_count() or 1
    log = partial(print, "adamspec:", file=sys.stderr)
    with executor(scheduler, workers, log=log) as ex:
        fams = {
            family: _cross_check(
                [in_precision(c, dtype)
                 for c in family_cases(family, drawn_in(dtype), rng, check_size)],
                ex,
            ).as_dict()
            for family in families
        }  # fmt: skip
        return fams, ex.description


def fast_threads() -> int:
    from adamspec.oracles._fast_tier1 import workers

    return workers()


def _head(state: OracleState, k: int) -> OracleState:
    def cut(x: Any) -> Any:
        return None if x is None else np.asarray(x)[:k]

    return OracleState(
        m=cut(state.m), v=cut(state.v), v_max=cut(state.v_max), ema=cut(state.ema),
        step=state.step, beta1_power=state.beta1_power, beta2_power=state.beta2_power,
        master=cut(state.master),
    )  # fmt: skip


def _head_result(r: StepResult, k: int) -> StepResult:
    rounded = {
        name: [np.asarray(a)[:k] if np.ndim(a) else a for a in arrays]
        for name, arrays in r.rounded.items()
    }
    return StepResult(r.step, {}, rounded, {}, r.precision, r.components)


def format_table(result: dict[str, Any]) -> str:
    """The benchmark as Markdown: the headline, the timed variants and the families."""
    lines = [
        f"fast oracle vs mpmath, {result['dtype']}, {result['size']:,} coordinates, "
        f"seed {result['seed']}, {result['threads']} thread(s), "
        f"{result['machine']['cpus']} CPUs; the cross-check's mpmath ran on "
        f"{result.get('mpmath_ran_on', 'this process')}",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| mpmath element-steps/s | {result['mpmath_steps_per_s']:,.0f} |",
        f"| fast element-steps/s | {result['fast_steps_per_s']:,.0f} |",
        f"| speedup | {result['speedup']:,.0f}x |",
        f"| fallback rate (timed inputs) | {result['fallback_rate']:.2e} |",
        f"| mismatches / checked | {result['mismatches']:,} / {result['checked']:,} |",
        f"| fallback rate (cross-check, adversarial included) | "
        f"{result['cross_check_fallback_rate']:.2%} |",
        "",
        "| timed variant | fast steps/s | mpmath steps/s | fallback | exact-sign | mismatches |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, t in result["timed"].items():
        lines.append(
            f"| {name} | {t['fast_steps_per_s']:,.0f} | {t['mpmath_steps_per_s']:,.0f} | "
            f"{t['fallback_rate']:.2e} | {t['exact_sign_rate']:.2%} | "
            f"{t['mismatches']} / {t['checked']:,} |"
        )
    if result["families"]:
        lines += [
            "",
            "| family | checked | mismatches | fallback rate | kinds (checked, fallback rate) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for fam, f in result["families"].items():
            kinds = ", ".join(
                f"{k} {v['checked']:,} ({v['fallback_rate']:.0%})" for k, v in f["by_kind"].items()
            )
            lines.append(
                f"| {fam} | {f['checked']:,} | {f['mismatches']} | {f['fallback_rate']:.2%} | "
                f"{kinds} |"
            )
    return "\n".join(lines) + "\n"


__all__ = [
    "FAMILIES",
    "TIMED",
    "Case",
    "bench_oracle",
    "family_cases",
    "format_table",
    "mismatches",
    "moment_boundary_case",
    "moment_boundary_pairs",
    "overflow_case",
    "param_tie_case",
    "typical_inputs",
    "wide_inputs",
]
