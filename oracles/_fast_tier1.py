r"""Tier 1 of the fast oracle: one dense step in float64 with a running error bound.

Applies to a lock-step (state given as floats) whose inputs are all float32,
float16 or bfloat16 values and whose targets are those formats (float64 has
not enough bits to spare; see :mod:`adamspec.oracles._fast_dd`). Every coordinate is
evaluated with the variant's formula in binary64 together with a rigorous
bound on the distance to the exact real result:

* each operation's rounding error is at most ``u |result|`` (``u = 2**-53``;
  no underflow can occur: inputs lie in ``[2**-149, 2**128]`` and nonzero
  constants in ``[2**-100, 2**100]`` (:func:`applies`; otherwise the step runs
  in double-double, which charges underflow explicitly), so every nonzero
  intermediate, and every nonzero error term, is above ``2**-900``), each
  constant's representation error is its ``rel``, and
  errors propagate by the first-order rules below with every second-order
  term below ``2**-19`` of a kept one, covered by a final ``1 + 2**-40``;
* where the interval ``[x - e, x + e]`` rounds to one value of the target format,
  that value is the correctly rounded exact result
  (:func:`~adamspec.oracles._fast_eft.certify_into`; the margins it needs for its own
  rounding, ``F`` and ``W``, are folded into the kernel's bounds).

Moments ``m`` and ``v`` are often within ``2**-50`` of a rounding boundary
(``0.9 m + 0.1 g`` is a float32 midpoint for a few percent of coordinates
with decimal betas, and ``fl64(0.9) m + ...`` lies within ``1e-17`` of one).
For those, :class:`ExactForm` decides the side exactly: the exact moment is
``sum_j c_j y_j`` with rational constants ``c_j`` and products ``y_j`` of
inputs, so ``L (moment - M)`` (``L`` the common denominator, ``M`` the
boundary) is a sum of exact products of doubles whose sign
:func:`~adamspec.oracles._fast_eft.expansion_sign` computes exactly, ties included.

Whatever stays uncertain (the parameter near a boundary, non-finite inputs,
negative second moments...) is returned as a fallback coordinate.

Error propagation, with ``r(K)`` a constant's relative error::

    K x        e = (r(K) + u) |Kx| + |K| (1 + r(K)) e_x
    a + b      e = e_a + e_b + u |a + b|
    sqrt(s)    r = r_s (1 + r_s) / 2 + u              (relative, r_s <= 1/2)
    C N / den  e = (1 + 2**-19) (|st| (r(C) + r_den + 2u) + (C / den) e_N),  r_den < 2**-20

(``C`` folds the step's scalars: ``lr / c1`` times ``sqrt(c2)`` for the eps-hat
forms, times RAdam's ``r_t``; NAdam's two terms use ``P = beta1 / c1'`` and
``Q = (1 - beta1) / c1``.) ``tests/test_fast_oracle.py`` checks that the mpmath
oracle's exact value lies inside every bound, and that the bounds are not vacuous.

This module is long because each term's error bound stands next to its evaluation, and
the exact decision of the moments (:class:`ExactForm`) next to the bounds it completes:
apart, a formula and its proof would have to be read in two places.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from adamspec.oracles._fast_consts import Const, StepConsts
from adamspec.oracles._fast_eft import (
    certify_into,
    expansion_sign,
    is_even_multiple,
    round_to,
    two_prod,
    ulp_parts,
)
from adamspec.oracles.rounding import numpy_dtype
from adamspec.spec.axes import AmsGrad, EpsPlacement, Family, Nesterov, WeightDecay
from adamspec.spec.formats import FloatFormat
from adamspec.spec.variant import Variant

U = 2.0**-53
#: Certification margins folded into every output's bound (see :func:`certify_into`).
F = 1 + 2.0**-38
W = 4.01 * U
#: Coordinates per NumPy pass (the ~40 float64 temporaries stay in L2).
CHUNK = 1 << 15
#: The denominator's relative error must stay below this for the quotient rule above.
R_DEN_MAX = 2.0**-20

Array = Any


@dataclass
class Inputs:
    """One tensor's inputs as flat float64 arrays (exact values of the given floats)."""

    theta: Array
    g: Array
    m: Array
    v: Array
    vmax: Array | None
    ema: Array | None
    #: v's gradient term when it is not ``g * g``: duplicates of a sparse row squared one by
    #: one (``sum c_i^2``, a binary64 sum of exact squares), its error bound, and the mask
    #: of those coordinates (whose v no exact form decides: see :meth:`Plan._chunk`)
    gsq: Array | None = None
    gsq_err: Array | None = None
    own_square: Array | None = None


@dataclass
class Outcome:
    """Tier 1's answer for one tensor: rounded values (float64 arrays holding format values)
    and the flat indices it could not certify."""

    param: Array
    m: Array
    v: Array
    vmax: Array
    ema: Array | None
    fallback: Array
    resolved_exactly: int = 0


#: Nonzero constants tier 1 accepts (see the module docstring).
CONST_RANGE = (2.0**-100, 2.0**100)


def applies(consts: StepConsts, scales: list[Const | None]) -> bool:
    """Every constant of the step (and clipping scale) within :data:`CONST_RANGE`."""
    low, high = CONST_RANGE
    every = [*consts.consts.values(), *(s for s in scales if s is not None)]
    return all(c.within(low, high) for c in every)


class StepPlan:
    """What every tier's step plan knows: the variant, its constants at this step, the
    formats, and which gradient transforms (clipnorm ``scale``, L2, clipvalue) apply."""

    def __init__(
        self,
        variant: Variant,
        consts: StepConsts,
        fmt: FloatFormat,
        state_fmt: FloatFormat,
        use_ema: bool,
        overwrite: bool,
        scale: Const | None,
    ) -> None:
        self.variant = variant
        self.c = consts
        self.fmt = fmt
        self.state_fmt = state_fmt
        self.use_ema = use_ema
        self.overwrite = overwrite
        self.scale = None if scale is None or scale.is_one else scale
        wd = consts["WD"]
        self.l2 = variant.weight_decay is WeightDecay.L2 and not (wd.is_double and wd.hi == 0.0)
        self.clipv = consts.get("CLIPV")

    def clip_value(self, g: Array) -> tuple[Array, Any]:
        """``g`` clipped to ``[-c, c]`` as doubles (``+-c.hi`` where clipped), and the error
        bound of the clipped coordinates (0 where ``c`` is exactly a double)."""
        cv = self.clipv
        c_hi = cv.hi
        c_lo = c_hi if Fraction(c_hi) <= cv.exact else math.nextafter(c_hi, 0.0)
        clipped = np.abs(g) > c_lo
        g = np.where(clipped, np.copysign(c_hi, g), g)
        if cv.is_double:
            return g, 0.0
        return g, clipped * (abs(cv.lo) + cv.err)


class Plan(StepPlan):
    """The float64 step of one variant at one step for one tensor (``scale``: clipnorm)."""

    def __init__(self, variant: Variant, consts: StepConsts, *args: Any) -> None:
        super().__init__(variant, consts, *args)
        self.ams = variant.amsgrad
        # The gradient is exact (a double) unless scaled, L2-decayed or clipped to an inexact value.
        self.g_exact = (
            self.scale is None and not self.l2 and (self.clipv is None or self.clipv.is_double)
        )
        # g * g is then exact too when g has at most 26 significant bits.
        self.gsq_exact = self.g_exact and (
            self.clipv is None or _significant_bits(self.clipv.hi) <= 26
        )
        self.form_m, self.form_v = exact_forms(variant, consts, self)

    def widen_gradient(self) -> None:
        """The gradient is an exact double of up to 53 significant bits (a sum of a sparse
        row's duplicates), not a narrow input: ``g * g`` is then rounded, and bounded so."""
        self.gsq_exact = False

    # ------------------------------------------------------------------ the kernel

    def kernel(self, x: Inputs) -> dict[str, tuple[Array, Array]]:
        """Values and certification widths of every output for one chunk: each width bounds
        the distance to the exact value with the margins :func:`certify_into` needs for its
        own rounding (a factor ``F`` and ``W |x|``) already included."""
        g, eg = self._gradient(x)
        mn, em, vn, ev, cv = self._moments(x, g, eg)
        out = {"m": (mn, em), "v": (vn, ev)}
        raw, r_raw, corrected_in_max = self._second_moment(x, vn, ev, cv, out)
        if self.variant.family is Family.RADAM and not self.c.rectified:
            # RAdam before rectification: step = lr m_hat
            st, e_st = self._unrectified_step(mn, em)
        else:
            den, r_den = self._denominator(
                raw, r_raw, corrected_in_max, vn, cv, ev, self.per_coord_r
            )
            num, e_num = self._numerator(mn, em, g, eg)
            st, e_st = self._step(num, e_num, den, r_den)
        thn, e_th = self._parameter(x.theta, st, e_st)
        if self.use_ema:
            out["ema"] = self._ema(x.ema, thn, e_th)
            if self.overwrite:
                thn, e_th = out["ema"]
        out["param"] = (thn, e_th)
        return out

    @property
    def per_coord_r(self) -> bool:
        """The relative error of v' is per coordinate (g^2 inexact), not one constant."""
        return not self.gsq_exact

    def _gradient(self, x: Inputs) -> tuple[Array, Any]:
        """The gradient the moments see (maximized, clipped, scaled, L2-decayed) and a bound
        on its error (0 while it is the exact input)."""
        c, g = self.c, x.g
        if self.variant.maximize:
            g = -g
        eg: Any = 0.0
        if self.clipv is not None:
            g, eg = self.clip_value(g)
        if self.scale is not None:
            s = self.scale
            gs = g * s.hi
            eg = eg * abs(s.hi) * (1 + s.rel) + np.abs(gs) * (s.rel + U)
            g = gs
        if self.l2:
            w = c["WD"].hi * x.theta
            g = g + w
            eg = eg + np.abs(w) * (c["WD"].rel + U) + U * np.abs(g)
        return g, eg

    def _moments(self, x: Inputs, g: Array, eg: Any) -> tuple[Array, Array, Array, Array, float]:
        """``m' = d1 m + k1 g`` and ``v' = d2 v + k2 g^2`` with their bounds, and ``cv``, the
        relative error of v' while g^2 is exact (all its terms are >= 0: inputs with v < 0
        are sent to mpmath)."""
        c = self.c
        d1, k1 = c["D1"], c["K1"]
        t1 = d1.hi * x.m
        t2 = k1.hi * g
        mn = t1 + t2
        em = (np.abs(t1) + np.abs(t2)) * ((max(d1.rel, k1.rel) + 2 * U + W) * F)
        if not self.g_exact:
            em = em + eg * (abs(k1.hi) * (1 + k1.rel) * F)
        d2, k2 = c["D2"], c["K2"]
        gsq = g * g
        if self.gsq_exact:
            egsq: Any = 0.0
        else:
            egsq = gsq * U
            if not self.g_exact:
                egsq = egsq + np.abs(g) * eg * 2.0 + eg * eg
        if x.gsq is not None:  # the sum of the contributions' squares, with its own bound
            gsq = np.where(x.own_square, x.gsq, gsq)
            egsq = np.where(x.own_square, x.gsq_err, egsq)
        vn = d2.hi * x.v + k2.hi * gsq
        cv = (max(d2.rel, k2.rel) + 2 * U + W) * F
        ev = vn * cv
        if not self.gsq_exact:
            ev = ev + egsq * (abs(k2.hi) * (1 + k2.rel) * F)
        return mn, em, vn, ev, cv

    def _second_moment(
        self, x: Inputs, vn: Array, ev: Array, cv: float, out: dict[str, tuple[Array, Array]]
    ) -> tuple[Array, Any, bool]:
        """The second moment under the square root (AMSGrad's maximum where it applies, into
        ``out``), its relative error, and whether the maximum is over the corrected v / c2."""
        ic2 = self.c["IC2"]
        r_raw: Any = None if self.per_coord_r else cv
        corrected_in_max = False
        if self.ams is AmsGrad.OFF:
            raw, e_raw = vn, ev
        elif self.ams is AmsGrad.MAX_CORRECTED_V and not ic2.is_one:
            vc = vn * ic2.hi
            evc = ev * (ic2.hi * (1 + ic2.rel)) + vc * (ic2.rel + U)
            raw = np.maximum(x.vmax, vc)
            e_raw = evc
            out["vmax"] = (raw, evc * F + raw * W)
            out["vc"] = (vc, evc * F + vc * W)
            corrected_in_max = True
            if r_raw is not None:
                r_raw = r_raw + ic2.rel + 2 * U
        else:
            raw = np.maximum(x.vmax, vn)
            e_raw = ev
            out["vmax"] = (raw, ev + raw * W)
        if self.per_coord_r:
            with np.errstate(divide="ignore", invalid="ignore"):
                r_raw = e_raw / np.maximum(raw, 1e-300)
        return raw, r_raw, corrected_in_max

    def _numerator(self, mn: Array, em: Array, g: Array, eg: Any) -> tuple[Array, Array]:
        """m' or a Nesterov numerator (``D1 m' + K1 g`` for tf_raw, ``P m' + Q g`` for
        NAdam), and its bound."""
        nest = self.variant.nesterov
        if nest is Nesterov.OFF:
            return mn, em
        c = self.c
        a, b = (c["D1"], c["K1"]) if nest is Nesterov.TF_RAW else (c["P"], c["Q"])
        a1 = a.hi * mn
        a2 = b.hi * g
        num = a1 + a2
        e_num = (np.abs(a1) + np.abs(a2)) * ((max(a.rel, b.rel) + 2 * U) * (1 + 2.0**-50))
        e_num = e_num + em * (abs(a.hi) * (1 + a.rel))
        if not self.g_exact:
            e_num = e_num + eg * (abs(b.hi) * (1 + b.rel))
        return num, e_num

    def _unrectified_step(self, mn: Array, em: Array) -> tuple[Array, Array]:
        """RAdam before rectification: ``C m'`` (no denominator) and its bound."""
        cc = self.c["C"]
        st = cc.hi * mn
        e_st = np.abs(st) * ((cc.rel + U) * F) + em * (cc.hi * (1 + cc.rel) * F)
        return st, e_st

    def _step(self, num: Array, e_num: Array, den: Array, r_den: Any) -> tuple[Array, Array]:
        """``C num / den`` and its bound (infinite where the denominator's relative error is
        too large for the quotient rule)."""
        cc = self.c["C"]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ci = cc.hi / den
            st = num * ci
            e_st = np.abs(st) * ((cc.rel + r_den + 2.01 * U) * (1 + 2.0**-18))
            e_st = e_st + ci * e_num * (1 + 2.0**-18)
            if self.per_coord_r:
                e_st = np.where(r_den < R_DEN_MAX, e_st, np.inf)
        return st, e_st

    def _parameter(self, th: Array, st: Array, e_st: Array) -> tuple[Array, Array]:
        """The new parameter with decoupled decay before or after the step, and its bound."""
        wd_axis = self.variant.weight_decay
        dec = self.c["DEC"]
        decays = not dec.is_one
        if wd_axis in (WeightDecay.DECOUPLED_LR_BEFORE, WeightDecay.DECOUPLED_BEFORE) and decays:
            kp = th * dec.hi
            thn = kp - st
            e_th = e_st + np.abs(kp) * ((dec.rel + U) * F) + np.abs(thn) * (U + W)
        elif wd_axis in (WeightDecay.DECOUPLED_LR_AFTER, WeightDecay.DECOUPLED_AFTER) and decays:
            mv = th - st
            thn = mv * dec.hi
            e_th = (e_st + np.abs(mv) * U) * (abs(dec.hi) * (1 + dec.rel) * F)
            e_th = e_th + np.abs(thn) * (dec.rel + U + W)
        else:
            thn = th - st
            e_th = e_st + np.abs(thn) * (U + W)
        return thn, e_th

    def _ema(self, ema: Array, thn: Array, e_th: Array) -> tuple[Array, Array]:
        """The EMA ``mu avg + (1 - mu) theta'`` and its bound."""
        mu, omu = self.c["MU"], self.c["OMU"]
        w1 = mu.hi * ema
        w2 = omu.hi * thn
        avg = w1 + w2
        e_avg = np.abs(w1) * ((mu.rel + U) * F) + np.abs(w2) * ((omu.rel + U) * F)
        e_avg = e_avg + np.abs(avg) * (U + W) + e_th * (abs(omu.hi) * (1 + omu.rel) * F)
        return avg, e_avg

    def _denominator(
        self,
        raw: Array,
        r_raw: Any,
        corrected_in_max: bool,
        vn: Array,
        cv: float,
        ev: Any,
        per_coord_r: bool,
    ) -> tuple[Array, Any]:
        c, v_ = self.c, self.variant
        ic2, sc2 = c["IC2"], c["SC2"]
        if v_.family is Family.RADAM:  # rectified: r_t sqrt(c2) m_hat / (sqrt(v) + eps)
            s, r_s = vn, r_raw if per_coord_r else cv
            if per_coord_r:
                with np.errstate(divide="ignore", invalid="ignore"):
                    r_s = ev / np.maximum(vn, 1e-300)
            eps = c["EPS"]
            scale_root = None
        elif v_.eps_placement in (EpsPlacement.ALGORITHM_1, EpsPlacement.EPS_ROOT):
            if corrected_in_max or ic2.is_one:
                s, r_s = raw, r_raw  # max over v / c2 is already corrected
            else:
                s, r_s = raw * ic2.hi, r_raw + ic2.rel + U
            if v_.eps_placement is EpsPlacement.EPS_ROOT:
                er = c["EPS_ROOT"]
                if not (er.is_double and er.hi == 0.0):
                    s = s + er.hi
                    r_s = np.maximum(r_s, er.rel) + U if per_coord_r else max(r_s, er.rel) + U
            eps = c["EPS"]
            scale_root = None
        else:
            # eps-hat forms: sqrt(raw) = sqrt(c2) sqrt(v_max / c2... ) when the max is corrected
            s, r_s = raw, r_raw
            eps = c["EPS"] if v_.eps_placement is EpsPlacement.EPS_HAT else c["EPS_SC2"]
            scale_root = sc2 if corrected_in_max else None
        sq = np.sqrt(s)
        r_sq = r_s * (1 + r_s) * 0.5 + U
        if scale_root is not None:
            sq = sq * scale_root.hi
            r_sq = r_sq + scale_root.rel + U
        if eps.is_double and eps.hi == 0.0:
            den, r_den = sq, r_sq
        else:
            den = sq + eps.hi
            r_den = (np.maximum(r_sq, eps.rel) if per_coord_r else max(r_sq, eps.rel)) + U
        if not per_coord_r and not r_den < R_DEN_MAX:
            r_den = math.inf
        return den, r_den

    # ------------------------------------------------------------------ driving

    def run(self, x: Inputs, n: int, hook: Any = None) -> Outcome:
        """All coordinates of one tensor, in chunks spread over :func:`workers` threads
        (``hook``: the test hook ``adamspec.oracles.fast._inject_error``)."""
        fmt, sfmt = self.fmt, self.state_fmt
        out = {
            "param": np.empty(n, dtype=numpy_dtype(fmt)),
            "m": np.empty(n, dtype=numpy_dtype(sfmt)),
            "v": np.empty(n, dtype=numpy_dtype(sfmt)),
            "vmax": np.empty(n, dtype=numpy_dtype(sfmt)),
            "ema": np.empty(n, dtype=numpy_dtype(fmt)) if self.use_ema else None,
        }
        if self.ams is AmsGrad.OFF:  # v_max passes through, rounded to the state format
            vmax = np.asarray(x.vmax)
            if vmax.dtype == out["vmax"].dtype:
                out["vmax"][:] = vmax
            else:
                out["vmax"][:] = round_to(vmax.astype(np.float64), sfmt)
        starts = range(0, n, CHUNK)
        pool = _pool() if n > 2 * CHUNK else None
        parts = (
            list(pool.map(lambda lo: self._chunk(x, lo, min(n, lo + CHUNK), out, hook), starts))
            if pool is not None
            else [self._chunk(x, lo, min(n, lo + CHUNK), out, hook) for lo in starts]
        )
        fallback = [p[0] for p in parts if p[0].size]
        return Outcome(
            out["param"],
            out["m"],
            out["v"],
            out["vmax"],
            out["ema"],
            np.concatenate(fallback) if fallback else np.zeros(0, dtype=np.intp),
            sum(p[1] for p in parts),
        )

    def _chunk(
        self, x: Inputs, lo: int, hi: int, out: dict[str, Any], hook: Any
    ) -> tuple[Array, dict[str, tuple[Array, Array, Array]]]:
        """One chunk: writes the rounded values, returns the hard fallbacks (flat indices)
        and the moments left for an exact decision."""
        fmt, sfmt = self.fmt, self.state_fmt
        sl = slice(lo, hi)
        ams = self.ams is not AmsGrad.OFF
        chunk = Inputs(
            _f64(x.theta[sl]),
            _f64(x.g[sl]),
            _f64(x.m[sl]),
            _f64(x.v[sl]),
            _f64(x.vmax[sl]) if ams else None,
            None if x.ema is None else _f64(x.ema[sl]),
            None if x.gsq is None else x.gsq[sl],
            None if x.gsq_err is None else x.gsq_err[sl],
            None if x.own_square is None else x.own_square[sl],
        )
        with np.errstate(all="ignore"):
            res = self.kernel(chunk)
            if hook is not None:
                res = {name: hook(name, *value) for name, value in res.items()}
            # Negative second moments break the bound of v (its terms must be >= 0): mpmath.
            # Non-finite inputs need no test: they make a value or its bound NaN or
            # infinite, so that output is uncertain (or, for v = inf, the parameter is
            # exactly theta, as in the mpmath oracle, while v itself falls back).
            hard = chunk.v < 0
            hard |= ~certify_into(*res["param"], fmt, out["param"][sl])
            if self.use_ema:
                hard |= ~certify_into(*res["ema"], fmt, out["ema"][sl])
            soft = {}
            for name in ("m", "v", "vmax") if ams else ("m", "v"):
                ok = certify_into(*res[name], sfmt, out[name][sl])
                if not ok.all():
                    soft[name] = ~ok
                    if name != "m" and chunk.own_square is not None:
                        # v's exact form squares g: not these coordinates' v
                        hard |= soft[name] & chunk.own_square
        if "vmax" in soft:
            # the exact decision is about V itself (round(max(a, V)) = max(round(a), round(V)))
            res["vmax"] = res["vc"] if "vc" in res else res["v"]
        pending = {}
        for name, mask in soft.items():
            sel = np.flatnonzero(mask & ~hard)
            if sel.size:
                xv, ev = res[name]
                ev = np.broadcast_to(ev, xv.shape)
                pending[name] = (sel + lo, xv[sel], ev[sel])
        fallback = [np.flatnonzero(hard) + lo]
        resolved = 0
        if pending:
            unresolved, resolved = self._resolve(x, pending, out)
            fallback.append(unresolved)
        return np.unique(np.concatenate(fallback)), resolved

    def _resolve(
        self, x: Inputs, pending: dict[str, tuple[Array, Array, Array]], out: dict[str, Any]
    ) -> tuple[Array, int]:
        """Decide the uncertain moments exactly (:class:`ExactForm`), writing them into
        ``out``; returns the flat indices left for mpmath and the number of coordinates
        decided this way."""
        sfmt = self.state_fmt
        fallback = []
        decided = []
        corrected = self.ams is AmsGrad.MAX_CORRECTED_V and not self.c["IC2"].is_one
        for name, (idx, xv, ev) in pending.items():
            form = self.form_m if name == "m" else self.form_v
            if form is None or (name == "vmax" and corrected):
                fallback.append(idx)
                continue
            value, ok = form.resolve(x, idx, xv, ev, sfmt)
            if name == "vmax":
                # xv, ev describe V = v'; the stored maximum is max(round(v_max), round(V)).
                old = _f64(x.vmax[idx])
                base = round_to(old, sfmt)
                below = xv + ev * (1 + 2.0**-40) + np.abs(xv) * 2.0**-51 < old
                value = np.where(below, base, np.maximum(base, value))
                ok = ok | below
            out[name][idx[ok]] = value[ok]
            decided.append(idx[ok])
            fallback.append(idx[~ok])
        unresolved = np.concatenate(fallback) if fallback else np.zeros(0, dtype=np.intp)
        exact = np.setdiff1d(np.concatenate(decided), unresolved) if decided else decided
        return unresolved, len(exact)


_POOL: ThreadPoolExecutor | None = None


def workers() -> int:
    """Threads tier 1 uses: ``ADAMSPEC_FAST_THREADS``, else 1. (On the 2-core development
    machine two threads were no faster than one: each chunk's ~80 NumPy passes over
    ~40 temporaries are bound by cache bandwidth, not by arithmetic.)"""
    return max(1, int(os.environ.get("ADAMSPEC_FAST_THREADS", "1")))


_POOL_PID = 0


def _pool() -> ThreadPoolExecutor | None:
    """The shared worker threads (recreated in a forked child, whose copy has no threads)."""
    global _POOL, _POOL_PID
    if workers() == 1:
        return None
    if _POOL is None or _POOL._max_workers != workers() or _POOL_PID != os.getpid():
        _POOL = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="adamspec-fast")
        _POOL_PID = os.getpid()
    return _POOL


def _f64(a: Array) -> Array:
    return np.asarray(a, dtype=np.float64)


def _significant_bits(x: float) -> int:
    if x == 0 or not math.isfinite(x):
        return 0
    m, _ = math.frexp(abs(x))
    bits = 53
    n = int(m * 2**53)
    while n and not n & 1:
        n >>= 1
        bits -= 1
    return bits


# ---------------------------------------------------------------- exact moments


class ExactForm:
    """An exact moment ``sum_j c_j prod(inputs_j)`` with rational ``c_j``, scaled by the common
    denominator ``L`` so that every coefficient is an integer split into doubles.

    ``terms``: ``(chunks, names)`` -- the integer coefficient ``c_j L`` as a sum of
    doubles and the one or two input names whose product ``y_j`` it multiplies.
    """

    def __init__(self, terms: list[tuple[list[float], tuple[str, ...]]], scale: list[float]):
        self.terms = terms
        self.scale = scale  # L as a sum of doubles

    @staticmethod
    def build(coefficients: list[tuple[Fraction, tuple[str, ...]]]) -> ExactForm | None:
        nonzero = [(q, names) for q, names in coefficients if q != 0]
        if not nonzero:
            return None
        odd = 1  # powers of two need no scaling: doubles hold them
        for q, _ in nonzero:
            d = q.denominator
            odd = math.lcm(odd, d >> ((d & -d).bit_length() - 1))
        scale = _dyadic_chunks(Fraction(odd))
        terms = []
        for q, names in nonzero:
            chunks = _dyadic_chunks(q * odd)
            if chunks is None:
                return None
            terms.append((chunks, names))
        if scale is None:
            return None
        return ExactForm(terms, scale)

    def products(self, x: Inputs, idx: Array, g: Array) -> list[Array]:
        values = {"m": _f64(x.m[idx]), "v": _f64(x.v[idx]), "theta": _f64(x.theta[idx]), "g": g}
        out = []
        for chunks, names in self.terms:
            if len(names) == 1:
                ys = [values[names[0]]]
            else:
                p, e = two_prod(values[names[0]], values[names[1]])
                ys = [p, e]
            for c in chunks:
                for y in ys:
                    p, e = two_prod(c, y)
                    out += [p, e]
        return out

    def resolve(
        self, x: Inputs, idx: Array, approx: Array, err: Array, fmt: FloatFormat
    ) -> tuple[Array, Array]:
        """``(value, decided)``: the correctly rounded moment where one boundary is in play
        (never decided for non-finite inputs: every comparison with NaN is false)."""
        with np.errstate(all="ignore"):
            return self._resolve(x, idx, approx, err, fmt)

    def _resolve(
        self, x: Inputs, idx: Array, approx: Array, err: Array, fmt: FloatFormat
    ) -> tuple[Array, Array]:
        g = self.gradient(x, idx)
        products = self.products(x, idx, g)
        width = err * (1 + 2.0**-40) + np.abs(approx) * 2.0**-51
        mag = np.abs(approx)
        low, high, q = ulp_parts(approx, fmt)
        sgn = np.where(approx < 0, -1.0, 1.0)
        single = (mag - width >= low) & (mag + width <= high) & (mag - width > 0)
        midpoint = (low + high) * 0.5
        terms = list(products)
        for c in self.scale:
            p, e = two_prod(c, -sgn * midpoint)
            terms += [p, e]
        side = expansion_sign(terms) * sgn  # > 0: |moment| above the midpoint
        even_high = is_even_multiple(high, q)
        chosen = np.where(side > 0, high, np.where(side < 0, low, np.where(even_high, high, low)))
        chosen = np.where(chosen >= 2.0 ** (fmt.emax + 1), np.inf, chosen)
        value = sgn * chosen
        # Around zero: below half the smallest subnormal the result is a zero of the exact sign.
        half_tiny = 2.0 ** (fmt.emin - fmt.precision)
        near_zero = (mag + width < half_tiny) & ~single
        if near_zero.any():
            zero_sign = expansion_sign(products)
            value = np.where(near_zero, np.where(zero_sign < 0, -0.0, 0.0), value)
        return value, single | near_zero

    gradient: Any = None  # set by exact_forms: the preprocessed exact gradient of a subset


def _dyadic_chunks(q: Fraction) -> list[float] | None:
    """A dyadic rational as a sum of at most three doubles in ``[2**-400, 2**400]``, or None."""
    if q.denominator & (q.denominator - 1):
        return None
    chunks = []
    rest = q
    while rest:
        if len(chunks) == 3:
            return None
        piece = rest.numerator / rest.denominator  # correctly rounded
        if not 2.0**-400 <= abs(piece) <= 2.0**400:
            return None
        chunks.append(piece)
        rest -= Fraction(piece)
    return chunks


def exact_forms(
    variant: Variant, c: StepConsts, plan: Plan
) -> tuple[ExactForm | None, ExactForm | None]:
    """The exact forms of m' and v' when the gradient is an exact double."""
    if plan.scale is not None or (plan.clipv is not None and not plan.clipv.is_double):
        return None, None
    d1, k1, d2, k2 = (c[n].exact for n in ("D1", "K1", "D2", "K2"))
    if None in (d1, k1, d2, k2):
        return None, None
    m_terms: list[tuple[Fraction, tuple[str, ...]]] = [(d1, ("m",)), (k1, ("g",))]
    v_terms: list[tuple[Fraction, tuple[str, ...]]] = [(d2, ("v",)), (k2, ("g", "g"))]
    if plan.l2:
        wd = c["WD"].exact
        m_terms.append((k1 * wd, ("theta",)))
        v_terms += [(2 * k2 * wd, ("g", "theta")), (k2 * wd * wd, ("theta", "theta"))]
    form_m = ExactForm.build(m_terms)
    form_v = ExactForm.build(v_terms)

    def gradient(x: Inputs, idx: Array) -> Array:
        g = _f64(x.g[idx])
        if variant.maximize:
            g = -g
        if plan.clipv is not None:
            g, _ = plan.clip_value(g)
        return g

    for form in (form_m, form_v):
        if form is not None:
            form.gradient = gradient
    return form_m, form_v


__all__ = ["CHUNK", "ExactForm", "Inputs", "Outcome", "Plan", "StepPlan", "exact_forms"]
