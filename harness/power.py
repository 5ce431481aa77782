"""The power of a pass: the smallest relative error a suite would have caught.

A kernel that passes a suite may still be off by a relative error too small for the budget
to see. Which size is that? Perturb the oracle's answers of the run -- its step from each
recorded state, correctly rounded -- by a relative ``epsilon`` (the parameter's update
``theta' - theta`` for "update", the stored value itself for m, v and v_max), round the
perturbed value to the dtype, measure it exactly as the engine measures a kernel
(:func:`adamspec.harness.engine.measure` with the component's budget), and bisect on
``epsilon`` for the smallest one that fails somewhere in the suite.

Measuring every coordinate at every bisection step would cost a second run. Instead each
chunk keeps, per component, the :data:`KEEP` coordinates that would fail first (the
smallest ``budget * spacing(scale) / |delta|``, the threshold the scaled measure sets);
:func:`merge_candidates` keeps the best over chunks, steps and cases, and
:func:`detection_threshold` bisects on them with the real measure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adamspec.harness.budgets import Budget
from adamspec.spec.formats import format_named

#: Candidates kept per component (per chunk, and after every merge).
KEEP = 8

#: How the perturbed quantity of each component is named in sentences.
WHAT = {"param": "update", "m": "m", "v": "v", "v_max": "v_max", "master": "master update"}


@dataclass(frozen=True)
class Candidate:
    """One coordinate whose perturbation the measure sees first: the perturbed value is
    ``base + delta (1 + epsilon)`` rounded to ``dtype``, measured against ``ref`` with
    ``scale`` the magnitude of its largest term."""

    threshold: float  # the epsilon at which the scaled measure crosses the budget, about
    ref: float
    base: float
    delta: float
    scale: float
    dtype: str


Candidates = dict[str, tuple[Candidate, ...]]


def candidates(
    before: Any,
    after: Any,
    reference: Any,
    variant: Any,
    budget: Budget,
    scales: Mapping[str, np.ndarray],
) -> Candidates:
    """A one-tensor chunk's :data:`KEEP` most sensitive coordinates per component (the
    oracle's ``reference`` step from ``before``; ``after`` only names the components), each
    with the ``scales`` the engine's measure uses
    (:func:`~adamspec.harness.engine.component_scales`)."""
    from adamspec.harness.engine import _components, ulp_at

    out: Candidates = {}
    for name in _components(after, variant):
        ref = np.asarray(reference.value(name, 0)).ravel()
        dtype = str(ref.dtype)  # each component in its precision's dtype
        fmt = format_named(dtype)
        r64 = ref.astype(np.float64)
        if name in ("param", "master"):
            weights = before.params if name == "param" else before.master
            base = np.asarray(weights[0], np.float64).ravel()
            delta = r64 - base
        else:
            base, delta = np.zeros_like(r64), r64
        scale = np.asarray(scales[name], np.float64).ravel()
        with np.errstate(all="ignore"):
            room = max(budget.scaled.get(name, 0.0), 0.5) * ulp_at(
                np.maximum(scale, np.abs(r64)), fmt
            )
            threshold = room / np.abs(delta)
        usable = np.isfinite(threshold) & np.isfinite(r64) & (delta != 0)
        idx = np.flatnonzero(usable)
        if not idx.size:
            continue
        if idx.size > KEEP:  # the KEEP smallest, in order
            idx = idx[np.argpartition(threshold[idx], KEEP - 1)[:KEEP]]
        best = idx[np.argsort(threshold[idx], kind="stable")]
        out[name] = tuple(
            Candidate(float(threshold[i]), float(r64[i]), float(base[i]), float(delta[i]),
                      float(scale[i]), dtype)
            for i in best
        )  # fmt: skip
    return out


def merge_candidates(a: Candidates, b: Candidates) -> Candidates:
    """The best :data:`KEEP` per component of both (associative; ties by value, so the
    order of merging does not matter)."""
    out = dict(a)
    for name, found in b.items():
        both = sorted({*out.get(name, ()), *found}, key=_order)
        out[name] = tuple(both[:KEEP])
    return out


def _order(c: Candidate) -> tuple:
    return (c.threshold, c.ref, c.base, c.delta, c.scale, c.dtype)


def _detected(found: Sequence[Candidate], name: str, epsilon: float, budget: Budget) -> bool:
    """Whether perturbing every candidate by ``epsilon`` puts the component over budget."""
    from adamspec.harness.engine import measure
    from adamspec.oracles.rounding import numpy_dtype

    by_dtype: dict[str, list[Candidate]] = {}
    for c in found:
        by_dtype.setdefault(c.dtype, []).append(c)
    for dtype, cs in by_dtype.items():
        fmt = format_named(dtype)
        dt = numpy_dtype(fmt)
        ref = np.array([c.ref for c in cs]).astype(dt)
        with np.errstate(over="ignore"):
            got = np.array([c.base + c.delta * (1.0 + epsilon) for c in cs]).astype(dt)
        err = measure(got, ref, np.array([c.scale for c in cs]), fmt)
        if not budget.within(name, err.ulp, err.scaled):
            return True
    return False


def detection_threshold(found: Sequence[Candidate], name: str, budget: Budget) -> float:
    """The smallest relative perturbation of component ``name`` the measure catches on these
    candidates (bisected to 1%), or inf when even a relative error of 1 passes."""
    if not found:
        return math.inf
    hi = max(min(c.threshold for c in found) * 4.0, 2.0**-60)
    while not _detected(found, name, hi, budget):
        hi *= 4.0
        if hi > 1.0:
            return math.inf
    lo = hi / 1024.0
    while _detected(found, name, lo, budget) and lo > 2.0**-80:
        lo /= 1024.0
    while hi / lo > 1.01:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if _detected(found, name, mid, budget) else (mid, hi)
    return hi


def suite_power(found: Mapping[str, Sequence[Candidate]], budget: Budget) -> dict[str, float]:
    """Per component (named as in :data:`WHAT`), the smallest relative error caught."""
    return {WHAT[name]: detection_threshold(cs, name, budget) for name, cs in found.items()}


def power_sentence(power: Mapping[str, float]) -> str:
    """``"this suite detects update errors >= 3.1e-06 relative, m >= ..., v >= ..."``."""
    shown = [f"{what} {'errors ' if i == 0 else ''}>= {value:.2g}"
             for i, (what, value) in enumerate(power.items()) if math.isfinite(value)]  # fmt: skip
    if not shown:
        return "this suite detects no relative error of its stored values below 1"
    shown[0] += " relative"
    return "this suite detects " + ", ".join(shown)
