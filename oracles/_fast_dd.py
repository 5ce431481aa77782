r"""Tier 1 in double-double: float64 targets, float64 inputs and free-running state.

The variant's formula is evaluated literally (the same order of terms as
``adamspec.oracles.adam._coordinate``) on :class:`~adamspec.oracles._fast_eft.DDV` values, each
carrying a rigorous absolute error bound (:mod:`adamspec.oracles._fast_eft`). Inputs
are exact floats (lock-step) or the previous step's double-double state with
its bound (free-running), so the bound of a trajectory's state is the
running sum of every step's rounding, damped by ``beta`` for the moments:
over 10^5 steps a parameter's bound grows to about ``10^5 * 2**-100`` relative.

Inputs must be finite, with ``v, v_max >= 0`` and nonzero magnitudes in
``[2**-160, 2**130]`` (so no double-double operation overflows, and below
``2**-900`` each operation is charged an absolute ``2**-1060`` for underflow);
other coordinates are returned uncertain.

For float64 targets the exact moments of a lock-step are decided like in
:mod:`adamspec.oracles._fast_tier1` (:class:`ExactForm`, with a float64 midpoint held as
two doubles).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from adamspec.oracles._fast_consts import Const, StepConsts
from adamspec.oracles._fast_eft import (
    DDV,
    certify_dd,
    dd_add,
    dd_div,
    dd_max,
    dd_mul,
    dd_sqrt,
    dd_sub,
    expansion_sign,
    two_prod,
)
from adamspec.oracles._fast_tier1 import ExactForm, Inputs, Outcome, StepPlan, exact_forms
from adamspec.spec.axes import AmsGrad, EpsPlacement, Family, Nesterov, WeightDecay
from adamspec.spec.formats import FLOAT64, FloatFormat
from adamspec.spec.variant import Variant

Array = Any
#: Coordinates per NumPy pass.
CHUNK = 1 << 13
#: Accepted magnitudes of nonzero inputs (see the module docstring).
IN_MIN = 2.0**-160
IN_MAX = 2.0**130


def _k(c: Const) -> DDV:
    return DDV(c.hi, c.lo, c.err)


def in_range(x: Array) -> Array:
    """Finite, and zero or of magnitude in ``[IN_MIN, IN_MAX]``."""
    a = np.abs(x)
    return (a == 0) | ((a >= IN_MIN) & (a <= IN_MAX))


@dataclass
class DDState:
    """One tensor's state as double-double values with bounds (free-running)."""

    theta: DDV
    m: DDV
    v: DDV
    vmax: DDV
    ema: DDV | None

    def take(self, sl: Any) -> DDState:
        def cut(d: DDV | None) -> DDV | None:
            if d is None:
                return None
            return DDV(d.hi[sl], d.lo[sl], np.broadcast_to(d.err, d.hi.shape)[sl])

        return DDState(cut(self.theta), cut(self.m), cut(self.v), cut(self.vmax), cut(self.ema))


class DDPlan(StepPlan):
    """The double-double step of one variant at one step for one tensor."""

    def __init__(self, variant: Variant, consts: StepConsts, *args: Any) -> None:
        super().__init__(variant, consts, *args)
        self.form_m, self.form_v = exact_forms(variant, consts, self)  # type: ignore[arg-type]

    def kernel(
        self, th: DDV, g: Array, m: DDV, v: DDV, vmax: DDV, ema: DDV | None
    ) -> dict[str, DDV]:
        """Every output of one step as double-double values with error bounds."""
        c, var = self.c, self.variant
        if var.maximize:
            g = -g
        if self.clipv is not None:
            cv = self.clipv
            clipped = np.abs(g) > (
                cv.hi if Fraction(cv.hi) <= cv.exact else np.nextafter(cv.hi, 0.0)
            )
            sign = np.sign(g)
            gd = DDV(
                np.where(clipped, sign * cv.hi, g),
                np.where(clipped, sign * cv.lo, 0.0),
                clipped * cv.err,
            )
        else:
            gd = DDV(g, np.zeros_like(g), 0.0)
        if self.scale is not None:
            gd = dd_mul(gd, _k(self.scale))
        if self.l2:
            gd = dd_add(gd, dd_mul(_k(c["WD"]), th))
        mn = dd_add(dd_mul(_k(c["D1"]), m), dd_mul(_k(c["K1"]), gd))
        vn = dd_add(dd_mul(_k(c["D2"]), v), dd_mul(_k(c["K2"]), dd_mul(gd, gd)))
        out = {"m": mn, "v": vn}
        ams = var.amsgrad
        corrected = ams is AmsGrad.MAX_CORRECTED_V and not c["IC2"].is_one
        if ams is AmsGrad.OFF:
            raw = vn
        elif corrected:
            raw = dd_max(vmax, dd_mul(vn, _k(c["IC2"])))
            out["vmax"] = raw
        else:
            raw = dd_max(vmax, vn)
            out["vmax"] = raw
        nest = var.nesterov
        if nest is Nesterov.TF_RAW:
            num = dd_add(dd_mul(_k(c["D1"]), mn), dd_mul(_k(c["K1"]), gd))
        elif nest is Nesterov.NADAM:
            num = dd_add(dd_mul(_k(c["P"]), mn), dd_mul(_k(c["Q"]), gd))
        else:
            num = mn
        cc = _k(c["C"])
        if var.family is Family.RADAM:
            if c.rectified:
                den = dd_add(dd_sqrt(vn), _k(c["EPS"]))
                st = dd_div(dd_mul(cc, num), den)
            else:
                st = dd_mul(cc, num)
        else:
            place = var.eps_placement
            if place in (EpsPlacement.ALGORITHM_1, EpsPlacement.EPS_ROOT):
                s = raw if corrected or c["IC2"].is_one else dd_mul(raw, _k(c["IC2"]))
                if place is EpsPlacement.EPS_ROOT:
                    s = dd_add(s, _k(c["EPS_ROOT"]))
                den = dd_add(dd_sqrt(s), _k(c["EPS"]))
            else:
                root = dd_sqrt(raw)
                if corrected:
                    root = dd_mul(root, _k(c["SC2"]))
                eps = c["EPS"] if place is EpsPlacement.EPS_HAT else c["EPS_SC2"]
                den = dd_add(root, _k(eps))
            st = dd_div(dd_mul(cc, num), den)
        dec = c["DEC"]
        axis = var.weight_decay
        if axis in (WeightDecay.DECOUPLED_LR_BEFORE, WeightDecay.DECOUPLED_BEFORE):
            thn = dd_sub(dd_mul(th, _k(dec)), st)
        elif axis in (WeightDecay.DECOUPLED_LR_AFTER, WeightDecay.DECOUPLED_AFTER):
            thn = dd_mul(dd_sub(th, st), _k(dec))
        else:
            thn = dd_sub(th, st)
        if self.use_ema:
            avg = dd_add(dd_mul(_k(c["MU"]), ema), dd_mul(_k(c["OMU"]), thn))
            out["ema"] = avg
            if self.overwrite:
                thn = avg
        out["param"] = thn
        return out

    # ------------------------------------------------------------------ lock-step

    def run(self, x: Inputs, n: int, hook: Any = None) -> Outcome:
        """A lock-step from exact float inputs (any of the four formats)."""
        out = {name: np.empty(n) for name in ("param", "m", "v", "vmax")}
        out_ema = np.empty(n) if self.use_ema else None
        fallback, pending = [], {"m": [], "v": []}
        for lo in range(0, n, CHUNK):
            sl = slice(lo, min(n, lo + CHUNK))
            f = {
                name: np.asarray(getattr(x, name)[sl], dtype=np.float64)
                for name in ("theta", "g", "m", "v", "vmax")
            }
            ema = None if x.ema is None else np.asarray(x.ema[sl], dtype=np.float64)
            good = np.ones(f["g"].shape, dtype=bool)
            for arr in (*f.values(), ema):
                if arr is not None:
                    good &= in_range(arr)
            good &= (f["v"] >= 0) & (f["vmax"] >= 0)
            with np.errstate(all="ignore"):
                res = self.kernel(
                    _exact(f["theta"]),
                    f["g"],
                    _exact(f["m"]),
                    _exact(f["v"]),
                    _exact(f["vmax"]),
                    None if ema is None else _exact(ema),
                )
                if hook is not None:
                    res = {name: _hooked(hook, name, d) for name, d in res.items()}
                hard = ~good
                value, ok = certify_dd(res["param"], self.fmt)
                out["param"][sl] = value
                hard |= ~ok
                if self.use_ema:
                    value, ok = certify_dd(res["ema"], self.fmt)
                    out_ema[sl] = value
                    hard |= ~ok
                if "vmax" in res:
                    value, ok = certify_dd(res["vmax"], self.state_fmt)
                    out["vmax"][sl] = value
                    hard |= ~ok  # rare: decided with the full fallback
                else:
                    out["vmax"][sl] = _round_exact_floats(f["vmax"], self.state_fmt)
                for name in ("m", "v"):
                    value, ok = certify_dd(res[name], self.state_fmt)
                    out[name][sl] = value
                    sel = np.flatnonzero(~ok & ~hard)
                    if sel.size:
                        d = res[name]
                        err = np.broadcast_to(d.err, d.hi.shape)
                        pending[name].append((sel + lo, d.hi[sel], d.lo[sel], err[sel]))
                idx = np.flatnonzero(hard)
                if idx.size:
                    fallback.append(idx + lo)
        outcome = Outcome(
            out["param"],
            out["m"],
            out["v"],
            out["vmax"],
            out_ema,
            np.concatenate(fallback) if fallback else np.zeros(0, dtype=np.intp),
        )
        self._resolve(x, outcome, pending)
        return outcome

    def _resolve(self, x: Inputs, outcome: Outcome, pending: dict[str, list]) -> None:
        fallback = [outcome.fallback]
        decided = []
        for name, parts in pending.items():
            if not parts:
                continue
            idx, hi, lo, err = (np.concatenate([p[i] for p in parts]) for i in range(4))
            form = self.form_m if name == "m" else self.form_v
            if form is None:
                fallback.append(idx)
                continue
            if self.state_fmt == FLOAT64:
                with np.errstate(all="ignore"):
                    value, ok = _resolve64(form, x, idx, hi, lo, err)
            else:
                value, ok = form.resolve(x, idx, hi, err + np.abs(lo), self.state_fmt)
            target = outcome.m if name == "m" else outcome.v
            target[idx[ok]] = value[ok]
            decided.append(idx[ok])
            fallback.append(idx[~ok])
        outcome.fallback = np.unique(np.concatenate(fallback))
        if decided:
            outcome.resolved_exactly = len(np.setdiff1d(np.concatenate(decided), outcome.fallback))

    # ------------------------------------------------------------------ free-running

    def advance(
        self, state: DDState, g: Array, hook: Any = None
    ) -> tuple[DDState, dict[str, Array], Array]:
        """One free-running step: the new state, rounded outputs and the uncertain mask."""
        n = g.size
        new: dict[str, list] = {k: [] for k in ("theta", "m", "v", "vmax", "ema")}
        rounded: dict[str, list] = {k: [] for k in ("param", "m", "v", "v_max", "ema")}
        uncertain = []
        for lo in range(0, max(n, 1), CHUNK):
            sl = slice(lo, min(n, lo + CHUNK))
            s = state.take(sl)
            gg = np.asarray(g[sl], dtype=np.float64)
            good = in_range(gg)
            for d in (s.theta, s.m, s.v, s.vmax, s.ema):
                if d is not None:
                    good &= in_range(d.hi) & np.isfinite(d.err)
            good &= (s.v.hi >= 0) & (s.vmax.hi >= 0)
            with np.errstate(all="ignore"):
                res = self.kernel(s.theta, gg, s.m, s.v, s.vmax, s.ema)
                if hook is not None:
                    res = {name: _hooked(hook, name, d) for name, d in res.items()}
                bad = ~good
                for name, fmt in (
                    ("param", self.fmt),
                    ("m", self.state_fmt),
                    ("v", self.state_fmt),
                ):
                    value, ok = certify_dd(res[name], fmt)
                    rounded[name].append(value)
                    bad |= ~ok
                if "vmax" in res:
                    vmax = res["vmax"]
                else:
                    vmax = s.vmax
                value, ok = certify_dd(vmax, self.state_fmt)
                rounded["v_max"].append(value)
                bad |= ~ok
                if self.use_ema:
                    value, ok = certify_dd(res["ema"], self.fmt)
                    rounded["ema"].append(value)
                    bad |= ~ok
            uncertain.append(bad)
            new["theta"].append(res["param"])
            new["m"].append(res["m"])
            new["v"].append(res["v"])
            new["vmax"].append(vmax)
            if self.use_ema:
                new["ema"].append(res["ema"])
        joined = DDState(
            _join(new["theta"], n),
            _join(new["m"], n),
            _join(new["v"], n),
            _join(new["vmax"], n),
            _join(new["ema"], n) if self.use_ema else None,
        )
        out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in rounded.items() if v}
        return joined, out, np.concatenate(uncertain) if uncertain else np.zeros(0, bool)


def _hooked(hook: Any, name: str, d: DDV) -> DDV:
    """The test hook applied to a double-double output (its value is ``hi``)."""
    hi, err = hook(name, d.hi, d.err)
    return DDV(hi, d.lo, err)


def _exact(x: Array) -> DDV:
    return DDV(x, np.zeros_like(x), 0.0)


def _join(parts: list[DDV], n: int) -> DDV:
    if not parts:
        return DDV(np.zeros(n), np.zeros(n), np.zeros(n))
    return DDV(
        np.concatenate([np.broadcast_to(p.hi, np.shape(p.hi)) for p in parts]),
        np.concatenate([np.broadcast_to(p.lo, np.shape(p.hi)) for p in parts]),
        np.concatenate([np.broadcast_to(p.err, np.shape(p.hi)) for p in parts]),
    )


def _round_exact_floats(x: Array, fmt: FloatFormat) -> Array:
    from adamspec.oracles._fast_eft import round_to

    return round_to(x, fmt)


def _resolve64(
    form: ExactForm, x: Inputs, idx: Array, hi: Array, lo: Array, err: Array
) -> tuple[Array, Array]:
    """Exact decision of a float64 moment ``hi + lo (+- err)`` whose interval reaches the
    midpoint between ``hi`` and its neighbour on ``lo``'s side."""
    g = form.gradient(x, idx)
    products = form.products(x, idx, g)
    up = (np.nextafter(hi, np.inf) - hi) * 0.5
    down = (hi - np.nextafter(hi, -np.inf)) * 0.5
    width = err * (1 + 2.0**-40) + np.abs(lo) * 2.0**-50
    single = (lo != 0) & (hi != 0) & (width < 0.25 * up) & (width < 0.25 * down)
    single &= np.isfinite(hi) & (np.abs(hi) < 2.0**900)
    toward = np.where(lo > 0, 1.0, -1.0)
    half = np.where(lo > 0, up, -down)
    terms = list(products)
    for c in form.scale:
        for part in (hi, half):
            p, e = two_prod(c, -part)
            terms += [p, e]
    side = expansion_sign(terms) * toward  # > 0: beyond the midpoint, away from hi
    neighbour = np.nextafter(hi, toward * np.inf)
    hi_even = (hi.view(np.int64) & 1) == 0
    tie_value = np.where(hi_even, hi, neighbour)
    value = np.where(side > 0, neighbour, np.where(side < 0, hi, tie_value))
    return value, single


__all__ = ["CHUNK", "DDPlan", "DDState", "in_range"]
