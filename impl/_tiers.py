"""The chunked NumPy (or CuPy) path of our step, and the tiers behind every first pass.

Each stored value is written only once its rounding is proven:

1. the float64 kernel (:func:`adamspec.impl._kernels.make_fast_kernel`) on a
   cache-sized chunk, every output with a bound on its error, stored where every value
   within the bound rounds alike; with decimal moment constants (``ideal``), m and v
   near a midpoint are decided exactly from the constants' integer forms
   (:func:`adamspec.impl._kernels.decide_ties`);
2. the coordinates left, in double-double with error bounds
   (:class:`adamspec.impl._dd.Bounded`), stored where proven likewise; a result that
   meets NaN or infinity takes the plain IEEE evaluation of the same formula;
3. the coordinates left (exact ties of held values, values within ~2**-100 of a
   boundary, inputs beyond the double-double range), exactly
   (:mod:`adamspec.impl._exact`).

The compiled and CuPy drivers run their own first pass and hand the coordinates it
leaves to :func:`apply_numpy` as flat indices.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Any

import numpy as np

from adamspec.impl import _dd
from adamspec.impl._constants import INDEX, StepConstants, integer_forms
from adamspec.impl._exact import (
    MAX_BITS,
    SPECIAL,
    START_BITS,
    ExactArithmetic,
    RoundingUndecided,
    decide,
)
from adamspec.impl._formats import format_of
from adamspec.impl._gradients import Gradient
from adamspec.impl._kernels import (
    RAW_AMSGRAD,
    decide_ties,
    exact_kernel,
    make_fast_kernel,
    ties_decidable,
)
from adamspec.impl._xp import array_namespace, to_numpy
from adamspec.spec.formats import FLOAT64, FloatFormat

#: Argument order of the fast kernel after the constants.
KERNEL_INPUTS = ("theta", "g", "gsq", "m", "v", "vmax", "ema")
#: Elements per NumPy chunk: the working set of ~20 float64 temporaries stays in L2.
CHUNK = 1 << 14
#: Where each output's ``(value, low part, bound)`` starts in the fast kernel's result.
_POSITION = {"theta": 0, "m": 3, "v": 6, "vmax": 9, "ema": 12}
#: Magnitudes beyond which float64 error-free transformations may underflow or overflow
#: (products of such inputs with the step's constants leave the normal range): such
#: coordinates go to the exact tier (measured before it existed: a float64 gradient of
#: 5e-324 made a subnormal parameter update come out as 0, 24,419 ULP off).
_EXTREME_LOW, _EXTREME_HIGH = 2.0**-440, 2.0**440

#: Coordinates each tier behind the first pass took since import ("bounded": the
#: double-double pass, "exact": the exact one), for measurements and tests.
TIERS: Counter[str] = Counter()

#: ``(array stored to, kernel output, its format)`` of every array a step writes.
_Outputs = list[tuple[str, str, FloatFormat]]


def apply_numpy(
    K: StepConstants, grad: Gradient, arrays: dict[str, Any], theta_store: Any, index: Any
) -> None:
    """Update the arrays in place, chunk by chunk, through the three tiers.

    ``index`` selects flat coordinates of the tensor (None: all); gradient
    arrays are indexed by position in ``index`` for lazy updates (they cover
    only the touched rows) and by coordinate otherwise.
    """
    xp = array_namespace(arrays["param"])
    kernel = make_fast_kernel(K.config)
    k_hi = K.values[:, 0]
    flat = {name: (a.reshape(-1) if a is not None else None) for name, a in arrays.items()}
    theta_flat = theta_store.reshape(-1)
    n = theta_flat.size if index is None else len(index)
    lazy = grad.rows is not None
    outputs = _outputs(flat, K.config)
    for start in range(0, n, CHUNK):
        pos = slice(start, min(start + CHUNK, n))
        where = pos if index is None else index[pos]
        gpos = pos if (lazy or index is None) else where
        x = _chunk_inputs(flat, theta_flat, grad, where, gpos, xp)
        size = x["theta"].shape[0]
        fast = kernel(k_hi, *(x.get(name, 0.0) for name in KERNEL_INPUTS))
        exact_needed = not grad.dense or "g_lo" in x
        results, sure = _certified(fast, outputs, size, exact_needed, xp)
        if ties_decidable(K.config) and not exact_needed:
            _decide_ties(K, x, fast, outputs, results, sure, xp)
        certain = xp.ones(size, dtype=bool)
        for mask in sure.values():
            certain &= mask
        redo = xp.flatnonzero(~certain)
        if redo.size:
            positions = xp.arange(size) if isinstance(gpos, slice) else None
            gidx = (positions + gpos.start if positions is not None else gpos)[redo]
            sub = {name: a[redo] for name, a in x.items()}
            _redo_bounded(K, grad, sub, redo, gidx, outputs, results, xp)
        for store, _key, _fmt in outputs:
            target = flat[store]
            target[where] = results[store].astype(target.dtype)
        if flat["master"] is not None:
            # the param is the stored master rounded once more (spec/ADAM.md, "Mixed
            # precision"): float32 masters only (init), whose NumPy and ml_dtypes casts to
            # float16 and bfloat16 round correctly, ties to even
            flat["param"][where] = flat["master"][where].astype(flat["param"].dtype)


def _outputs(flat: dict[str, Any], cfg: Any) -> _Outputs:
    """What the step writes: m, v, and v_max, the EMA if kept, and the updated weights: the
    param, or the master copy where one is kept (the param is then its rounding)."""
    stores = [("param" if flat["master"] is None else "master", "theta"), ("m", "m"), ("v", "v")]
    if flat["vmax"] is not None:
        stores.append(("vmax", "vmax"))
    if flat["ema"] is not None and cfg.use_ema:
        stores.append(("ema", "ema"))
    return [(store, key, format_of(flat[store])) for store, key in stores]


def _chunk_inputs(
    flat: dict[str, Any], theta_flat: Any, grad: Gradient, where: Any, gpos: Any, xp: Any
) -> dict[str, Any]:
    """One chunk's kernel inputs as float64 arrays (zeros for an absent v_max or EMA), and
    the gradient's low parts and error bounds where it has them."""
    x = {
        "theta": theta_flat[where].astype(np.float64),
        "g": grad.g[gpos].astype(np.float64),
        "m": flat["m"][where].astype(np.float64),
        "v": flat["v"][where].astype(np.float64),
    }
    size = x["theta"].shape[0]
    x["vmax"] = (
        flat["vmax"][where].astype(np.float64) if flat["vmax"] is not None else xp.zeros(size)
    )
    x["ema"] = flat["ema"][where].astype(np.float64) if flat["ema"] is not None else xp.zeros(size)
    for name in ("g_lo", "gsq", "gsq_lo", "g_err", "gsq_err"):
        part = getattr(grad, name)
        if part is not None:
            x[name] = part[gpos]
    return x


def _round_bounded(hi: Any, lo: Any, err: Any, fmt: FloatFormat, xp: Any) -> tuple[Any, Any]:
    """``hi + lo`` rounded to ``fmt``, and where every value within ``err`` of it rounds
    alike. The ends are widened by what the float64 subtraction ``lo - err`` may round
    inward (``2**-53 (|lo| + err)``), then summed with ``hi`` exactly."""
    widened = (err + 2.0**-52 * xp.abs(lo)) * (1 + 2.0**-51)
    below = _dd.round_dd(*_dd.two_sum(hi, lo - widened), fmt, xp)
    above = _dd.round_dd(*_dd.two_sum(hi, lo + widened), fmt, xp)
    return _dd.round_dd(hi, lo, fmt, xp), (below == above) & xp.isfinite(err)


def _fast_output(fast: tuple, key: str, size: int, xp: Any) -> tuple[Any, Any, Any]:
    at = _POSITION[key]
    return tuple(
        xp.broadcast_to(xp.asarray(a, dtype=np.float64), (size,)) for a in fast[at : at + 3]
    )


def _certified(
    fast: tuple, outputs: _Outputs, size: int, exact_needed: bool, xp: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fast pass rounded to each output's format, and where each output's rounding is
    certain (nowhere for float64 outputs or inexact gradients: double-double decides)."""
    results, sure = {}, {}
    for store, key, fmt in outputs:
        h, lo, e = _fast_output(fast, key, size, xp)
        if fmt == FLOAT64 or exact_needed:
            results[store] = _dd.round_dd(h, lo, fmt, xp)
            sure[store] = xp.zeros(size, dtype=bool)
        else:
            results[store], sure[store] = _round_bounded(h, lo, e, fmt, xp)
    return results, sure


def _decide_ties(
    K: StepConstants, x: dict, fast: tuple, outputs: _Outputs, results: dict, sure: dict, xp: Any
) -> None:
    """Where the fast pass leaves m or v uncertain with decimal moment constants: decide
    the ties exactly (:func:`adamspec.impl._kernels.decide_ties`); v_max over raw v is
    then stored as v' wherever v' is the maximum."""
    k = K.values[:, 0]
    size = x["theta"].shape[0]
    forms = {
        "m": ("P1", "R1", "Q1", x["m"], x["g"]),
        "v": ("P2", "R2", "Q2", x["v"], x["g"] * x["g"]),
    }
    for store, key, fmt in outputs:
        if key not in forms or fmt == FLOAT64 or bool(sure[store].all()):
            continue
        p, r, q, inputs, gradient = forms[key]
        h, lo, e = _fast_output(fast, key, size, xp)
        value, decided = decide_ties(
            h, lo, e, k[INDEX[p]], inputs, k[INDEX[r]], gradient, k[INDEX[q]], fmt, xp
        )
        take = ~sure[store] & decided
        results[store] = xp.where(take, value, results[store])
        sure[store] = sure[store] | take
    if "vmax" in sure and K.config.amsgrad in RAW_AMSGRAD:
        v_max, v = _fast_output(fast, "vmax", size, xp)[0], _fast_output(fast, "v", size, xp)[0]
        take = ~sure["vmax"] & sure["v"] & (v_max == v)
        results["vmax"] = xp.where(take, results["v"], results["vmax"])
        sure["vmax"] = sure["vmax"] | take


def _plain(K: StepConstants, sub: dict[str, Any]) -> tuple:
    """The formula evaluated in plain float64 (IEEE specials where they arise)."""
    kernel = make_fast_kernel(K.config, precise=False)
    return kernel(K.values[:, 0], *(sub.get(name, 0.0) for name in KERNEL_INPUTS))


def _redo_bounded(
    K: StepConstants,
    grad: Gradient,
    sub: dict[str, Any],
    redo: Any,
    gidx: Any,
    outputs: _Outputs,
    results: dict,
    xp: Any,
) -> None:
    """Tier 2: the uncertain coordinates ``redo`` (inputs ``sub``, gradient positions
    ``gidx``) in double-double with bounds, into ``results``; what that leaves, exactly."""
    TIERS["bounded"] += len(redo)
    values = exact_kernel(K.config, K, sub, _dd.Bounded(xp))
    # Where double-double meets NaN or infinity (inf - inf in an error term), the
    # plain IEEE evaluation of the same formula gives the special the oracle does.
    plain = None
    rounded, proven = {}, {}
    for store, key, fmt in outputs:
        hi, lo, err = _broadcast(values[key], len(redo), xp)
        rounded[store], proven[store] = _round_bounded(hi, lo, err, fmt, xp)
        special = ~(xp.isfinite(hi) & xp.isfinite(lo))
        if bool(special.any()):
            plain = _plain(K, sub) if plain is None else plain
            fallback = _dd.round_to_format(
                xp.broadcast_to(plain[_POSITION[key]], hi.shape) + 0.0, fmt, xp
            )
            rounded[store] = xp.where(special, fallback, rounded[store])
            proven[store] = proven[store] | special
    _decide_bounded_ties(K, sub, values, outputs, rounded, proven, xp)
    unsure = xp.zeros(len(redo), dtype=bool)
    for store, _key, _fmt in outputs:
        results[store][redo] = rounded[store]
        unsure |= ~proven[store]
    for name in KERNEL_INPUTS:
        if name in sub:
            unsure |= _extreme(sub[name], xp)
    left = to_numpy(xp.flatnonzero(unsure))
    if left.size:
        host = {name: to_numpy(a)[left] for name, a in sub.items()}
        _decide_exactly(K, grad, host, to_numpy(redo)[left], to_numpy(gidx)[left], outputs, results)


def _broadcast(parts: tuple, size: int, xp: Any) -> tuple:
    return tuple(xp.broadcast_to(xp.asarray(a, dtype=np.float64), (size,)) for a in parts)


def _extreme(a: Any, xp: Any) -> Any:
    """Finite nonzero magnitudes outside the range where float64 error-free
    transformations of the step's products stay exact."""
    a = xp.abs(a)
    return (a != 0) & xp.isfinite(a) & ((a < _EXTREME_LOW) | (a > _EXTREME_HIGH))


def _decide_bounded_ties(
    K: StepConstants,
    sub: dict,
    values: dict,
    outputs: _Outputs,
    rounded: dict,
    proven: dict,
    xp: Any,
) -> None:
    """Where the double-double pass leaves m' or v' uncertain, with the gradient used as
    given: decide on which side of the one midpoint ``M`` within reach the exact value
    lies, from the sign of ``P x + R y - Q M`` (:func:`adamspec.impl._constants.integer_forms`
    of the moment constants, decimal or binary), every product split into doubles
    exactly and summed exactly (:func:`adamspec.impl._dd.expansion_sign`). Any format,
    float64 included (its midpoints are two doubles, ``r + (t - r)/2``)."""
    cfg = K.config
    if cfg.l2 or cfg.scaled or cfg.has_gsq:
        return
    g = sub["g"]
    usable = ~_extreme(g, xp) & xp.isfinite(g)
    for name in ("g_lo", "g_err"):
        if name in sub:
            usable &= sub[name] == 0
    forms = {
        "m": (integer_forms(K.exact_value("B1"), K.exact_value("OB1")), sub["m"], [g]),
        "v": (
            integer_forms(K.exact_value("B2"), K.exact_value("OB2")),
            sub["v"],
            list(_dd.two_prod(g, g)),
        ),
    }
    for store, key, fmt in outputs:
        if key not in forms or bool(proven[store].all()):
            continue
        (p, r, q), x, ys = forms[key]
        if not (abs(p) < 2**53 and abs(r) < 2**53 and float(q) == q):
            continue
        hi, lo, err = _broadcast(values[key], len(x), xp)
        nearest = _dd.round_dd(hi, lo, fmt, xp)
        if fmt == FLOAT64:  # the neighbour on lo's side; the midpoint as two doubles
            other = xp.nextafter(nearest, xp.where(lo > 0, xp.inf, -xp.inf))
            mid_hi, mid_lo = nearest, (other - nearest) * 0.5
            near = err <= xp.abs(nearest) * 2.0**-55
        else:
            other = _dd.round_to_format(2.0 * hi - nearest, fmt, xp)
            mid_hi, mid_lo = 0.5 * (nearest + other), 0.0 * hi
            near = (xp.abs(lo) + err) <= xp.abs(nearest) * 2.0 ** -(fmt.precision + 2)
        terms = [
            *_dd.two_prod(float(p), x),
            *(part for y in ys for part in _dd.two_prod(float(r), y)),
        ]
        terms += [*_dd.two_prod(-float(q), mid_hi), -float(q) * mid_lo]
        side = _dd.expansion_sign(terms, xp)
        even = xp.where(_even(nearest, fmt, xp), nearest, other)
        value = xp.where(side * (other - nearest) > 0, other, xp.where(side == 0, even, nearest))
        decided = (
            ~proven[store] & usable & ~_extreme(x, xp) & near & (other != nearest)
            & xp.isfinite(mid_hi) & xp.isfinite(hi)
        )  # fmt: skip
        rounded[store] = xp.where(decided, value, rounded[store])
        proven[store] = proven[store] | decided
    if "vmax" in proven and cfg.amsgrad in RAW_AMSGRAD:
        same = values["vmax"][0] == values["v"][0]
        take = ~proven["vmax"] & proven["v"] & same
        rounded["vmax"] = xp.where(take, rounded["v"], rounded["vmax"])
        proven["vmax"] = proven["vmax"] | take


def _even(x: Any, fmt: FloatFormat, xp: Any) -> Any:
    """``x`` (a value of ``fmt``) has an even last significand bit."""
    quantum = xp.maximum(xp.frexp(xp.abs(x))[1] - 1, fmt.emin) - (fmt.precision - 1)
    return xp.fmod(xp.ldexp(xp.abs(x), -quantum), 2.0) == 0


def _exact_input(value: float) -> Fraction | float:
    """A stored input as an exact rational; NaN and infinities stay floats (special)."""
    return Fraction(value) if np.isfinite(value) else SPECIAL


def _decide_exactly(
    K: StepConstants,
    grad: Gradient,
    sub: dict[str, np.ndarray],
    where: np.ndarray,
    gidx: np.ndarray,
    outputs: _Outputs,
    results: dict,
) -> None:
    """Tier 3: each coordinate of ``sub`` (results at ``where``, gradient positions
    ``gidx``) evaluated exactly; irrational values enclosed at doubling precision until
    their rounding is decided (Ziv); specials from the plain IEEE evaluation."""
    TIERS["exact"] += len(where)
    if grad.exact is not None:
        gs, squares = grad.exact(gidx)
    else:  # the gradient arrays hold the exact values
        gs, squares = [_exact_input(float(v)) for v in sub["g"]], None
    plain = None
    for i, at in enumerate(where):
        x = {name: _exact_input(float(sub[name][i])) for name in ("theta", "m", "v", "vmax", "ema")}
        x["g"] = gs[i]
        x["gsq"] = squares[i] if squares is not None else None
        pending, bits = list(outputs), START_BITS
        while pending:
            values = exact_kernel(K.config, K, x, ExactArithmetic(bits))
            still = []
            for store, key, fmt in pending:
                rounded = decide(values[key], fmt, bits)
                if rounded is None:
                    still.append((store, key, fmt))
                    continue
                if rounded != rounded:  # SPECIAL
                    plain = _plain(K, sub) if plain is None else plain
                    value = np.broadcast_to(np.asarray(plain[_POSITION[key]]), (len(where),))[i]
                    rounded = float(_dd.round_to_format(np.float64(value) + 0.0, fmt))
                results[store][int(at)] = rounded
            pending, bits = still, 2 * bits
            if pending and bits > MAX_BITS:
                raise RoundingUndecided(
                    f"{', '.join(store for store, _, _ in pending)}: the exact value stays "
                    f"within 2**-{MAX_BITS} of a rounding boundary (inputs "
                    f"{ {name: float(sub[name][i]) for name in ('theta', 'g', 'm', 'v')} })"
                )


__all__ = ["CHUNK", "KERNEL_INPUTS", "TIERS", "apply_numpy"]
