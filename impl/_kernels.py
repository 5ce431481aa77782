"""The elementwise Adam step, twice: a fast float64 pass with an error bound, and the
same formula over an exact-enough arithmetic for the coordinates the bound cannot certify.

Both follow the same literal formula as the oracle (``spec/ADAM.md`` §2),
branch for branch, with the step's scalars from :mod:`adamspec.impl._constants`:

* :func:`make_fast_kernel` evaluates in float64 and returns, for every output,
  the value and a rigorous bound on its absolute error (first-order running
  error analysis with unit roundoff doubled for margin). Where
  ``round(y - e) == round(y + e)`` the correctly rounded result is certain.
  The kernel is plain arithmetic on ``np.maximum``/``np.abs``/``np.sqrt``, so the
  same function runs vectorized on NumPy/CuPy arrays and compiled by numba on
  scalars.
  With decimal moment constants (``ideal``) the kernels carry the constants' low
  parts and representation error, and decide exact ties of m and v from the
  constants' integer forms (:func:`_tie32`, :func:`decide_ties`).
* :func:`exact_kernel` evaluates over an arithmetic: double-double with error bounds
  (:class:`adamspec.impl._dd.Bounded`, on arrays) or exact numbers
  (:class:`adamspec.impl._exact.ExactArithmetic`, one coordinate at a time); the tiers
  that use them are in :mod:`adamspec.impl._tiers`.

This module is long because it holds the one formula and every way it is run: the
fast kernel's phases, the compiled parallel driver with its certification, the CUDA
source traced from the same phases, and the slower passes' formula. Kept together, no
backend can drift from the formula the others evaluate.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any, NamedTuple

import numpy as np

from adamspec.impl import _dd
from adamspec.impl._constants import INDEX, KernelConfig, StepConstants
from adamspec.impl._dd import exact_sum_sign, two_prod, two_sum
from adamspec.spec.formats import FloatFormat

#: Unit roundoff of float64, doubled: a margin over the first-order error bounds.
_U = 2.0**-52
#: Denominator floor in relative-error ratios (a zero with zero error stays zero).
_TINY = 1e-300


#: Positions in the constants vector (module constants: numba folds them into the kernels).
B1, OB1, B2, OB2 = INDEX["B1"], INDEX["OB1"], INDEX["B2"], INDEX["OB2"]
IC1, IC1N, C2, IC2 = INDEX["IC1"], INDEX["IC1N"], INDEX["C2"], INDEX["IC2"]
SC2, EPS, EPS_SC2, EPS_ROOT = INDEX["SC2"], INDEX["EPS"], INDEX["EPS_SC2"], INDEX["EPS_ROOT"]
LR, WD, DECAY, RS = INDEX["LR"], INDEX["WD"], INDEX["DECAY"], INDEX["RS"]
SCALE, MU, OMU = INDEX["SCALE"], INDEX["MU"], INDEX["OMU"]
B1H, B1L, OB1H, OB1L = INDEX["B1H"], INDEX["B1L"], INDEX["OB1H"], INDEX["OB1L"]
B2H, B2L, OB2H, OB2L = INDEX["B2H"], INDEX["B2L"], INDEX["OB2H"], INDEX["OB2L"]
B1X, OB1X, B2X, OB2X = INDEX["B1X"], INDEX["OB1X"], INDEX["B2X"], INDEX["OB2X"]
B1E, OB1E, B2E, OB2E = INDEX["B1E"], INDEX["OB1E"], INDEX["B2E"], INDEX["OB2E"]
P1, R1, Q1, P2, R2, Q2 = (INDEX[name] for name in ("P1", "R1", "Q1", "P2", "R2", "Q2"))


#: AMSGrad forms whose v_max is a maximum over raw v (so it is stored as v' where v' wins).
RAW_AMSGRAD = ("max_raw_v_then_correct", "max_raw_v_uncorrected")


class _Branches(NamedTuple):
    """Which branches of the formula one kernel has: its :class:`KernelConfig` decoded,
    for the pass it serves. The phases copy them into closure constants, so numba
    compiles only the branches that exist."""

    l2: bool
    scaled: bool
    has_gsq: bool
    exact_g: bool  # the gradient is used as given: m and v are sums of exact products
    decimal: bool  # exact_g with decimal moment constants: add their low parts and error
    lean: bool
    ams: int  # 0 off, 1 max over raw v, 2 max over v / c2
    nest: int  # 0 off, 1 tf_raw, 2 nadam
    radam: bool
    rectified: bool
    place: int  # 0 algorithm_1, 1 eps_root, 2 eps_hat, 3 eps_hat_adaptive
    dec: int  # 0 none, 1 before the step, 2 after
    ema: bool
    overwrite: bool

    @property
    def rel(self) -> bool:
        """The step's numerator has a constant relative error (no cancellation upstream)."""
        return self.lean and self.nest == 0


def _branches(cfg: KernelConfig, precise: bool, lean: bool) -> _Branches:
    """The branches of ``cfg``'s kernel for the precise or the lean pass."""
    # With the gradient used as given, m and v are sums of exact products (for inputs
    # of at most 27 bits): carry them as double-doubles, since exact ties are common
    # (0.9 m + 0.1 g is often a float32 midpoint when beta1 is 0.9).
    exact_g = precise and not (cfg.l2 or cfg.scaled or cfg.has_gsq)
    return _Branches(
        l2=cfg.l2,
        scaled=cfg.scaled,
        has_gsq=cfg.has_gsq,
        exact_g=exact_g,
        decimal=exact_g and cfg.decimal_moments,
        lean=lean and exact_g,
        ams=0 if cfg.amsgrad == "off" else 1 if cfg.amsgrad in RAW_AMSGRAD else 2,
        nest={"off": 0, "tf_raw": 1, "nadam": 2}[cfg.nesterov],
        radam=cfg.family == "radam",
        rectified=cfg.rectified,
        place={"algorithm_1": 0, "eps_root": 1, "eps_hat": 2, "eps_hat_adaptive": 3}[cfg.placement],
        dec={"none": 0, "before": 1, "after": 2}[cfg.decay],
        ema=cfg.use_ema,
        overwrite=cfg.overwrite,
    )


def make_fast_kernel(
    cfg: KernelConfig,
    precise: bool = True,
    lean: bool = False,
    compile_phase: Callable[[Callable], Callable] | None = None,
) -> Callable[..., tuple]:
    """The float64 step for ``cfg``: ``kernel(k, theta, g, gsq, m, v, vmax, ema)`` returns
    ``(theta, theta_lo, e_theta, m, m_lo, e_m, v, v_lo, e_v, vmax, vmax_lo, e_vmax,
    ema, ema_lo, e_ema)``: each output as a double-double and a bound on its error.

    ``k`` is the vector of constants (hi parts); the config's branches are
    closure constants, so numba compiles only the branches that exist. With
    ``precise``, m and v are carried as double-doubles (see below); without, they
    are plain doubles with a bound (cheaper, but near-ties stay uncertified).

    ``lean`` is the compiled driver's first pass (scalar code: it selects with
    ``if``). Where the gradient is used as given it keeps m a double-double but
    cheaper (:func:`_lean_products_sum`: one bound for the whole sum), v a plain
    double (v's near-ties are rare: about 1 in 10^5 coordinates, against 4-9% for
    m when beta1 is 0.9), and without Nesterov bounds the step by relative errors,
    which are constants once m' is certified (its error is then below
    ``2 u |m'|``, see :func:`_certify32_dd`) and v' is a sum of non-negative terms.
    Coordinates outside those assumptions (m' cancels, v < 0) get a bound on m or
    v that its certification rejects, so this pass never stores them and the
    driver retries them with the precise kernel.

    The kernel runs its phases in order (``_gradient_phase`` ... ``_average_phase``):
    the same functions run vectorized on NumPy/CuPy arrays, traced into CUDA C in
    the order their operations are evaluated, and, passed through ``compile_phase``,
    compiled by numba, which inlines them into one body (the lean pass must stay one
    loop body for LLVM to vectorize it).
    """
    b = _branches(cfg, precise, lean)
    phases = [make(b) for make in _PHASES]
    if compile_phase is not None:
        phases = [compile_phase(phase) for phase in phases]
    gradient, moments, second_moment, first_moment_hat, relative_errors = phases[:5]
    direction, step_size, parameter, average = phases[5:]
    LEAN = b.lean

    def kernel(k, theta, g, gsq, m, v, vmax, ema):
        gg, e_g, gs, e_gs = gradient(k, theta, g, gsq)
        mm, m_lo, e_m_out, vv, v_lo, e_v_out = moments(k, m, v, gg, e_g, gs, e_gs)
        # From here on m and v enter as hi parts, their lo parts folded into the error.
        e_m = e_m_out + np.abs(m_lo)
        e_v = e_v_out + np.abs(v_lo)
        vmx, vmx_lo, e_vmx, raw, e_raw = second_moment(k, vmax, vv, v_lo, e_v)
        mh, e_mh = first_moment_hat(k, mm, e_m, gg, e_g)
        r_v, r_raw = relative_errors(vv, e_v, raw, e_raw)
        numer, e_numer, den, r_den, r_numer = direction(k, mh, e_mh, vv, raw, r_v, r_raw)
        step, e_step = step_size(k, mm, numer, e_numer, den, r_den, r_numer)
        th, e_th = parameter(k, theta, step, e_step)
        em, e_em, th, e_th = average(k, ema, th, e_th)
        zero = 0.0 if LEAN else 0.0 * th
        return (th, zero, e_th, mm, m_lo, e_m_out, vv, v_lo, e_v_out,
                vmx, vmx_lo, e_vmx, em, zero, e_em)  # fmt: skip

    return kernel


def _gradient_phase(b: _Branches) -> Callable:
    """The gradient the moments see (L2, clipping scale) and its square, with bounds."""
    L2, SCALED, HAS_GSQ = b.l2, b.scaled, b.has_gsq
    U = _U

    def gradient(k, theta, g, gsq):
        gg = g
        e_g = 0.0 * g
        if L2:
            wdth = k[WD] * theta
            gg = g + wdth
            e_g = 2 * U * (np.abs(g) + np.abs(wdth))
        if SCALED:
            gg = gg * k[SCALE]
            e_g = e_g * k[SCALE] + 2 * U * np.abs(gg)
        if HAS_GSQ:
            gs = gsq * (k[SCALE] * k[SCALE]) if SCALED else gsq
            e_gs = 4 * U * gs
        else:
            gs = gg * gg
            e_gs = 2 * np.abs(gg) * e_g + e_g * e_g + U * gs
        return gg, e_g, gs, e_gs

    return gradient


def _moments_phase(b: _Branches) -> Callable:
    """m' and v' as double-doubles with bounds."""
    LEAN, EXACT_G, DECIMAL = b.lean, b.exact_g, b.decimal
    U = _U

    def moments(k, m, v, gg, e_g, gs, e_gs):
        if LEAN:
            if DECIMAL:
                mm, m_lo, e_m = _lean_decimal_products_sum(
                    k[B1H], k[B1L], k[B1X], k[B1E], m, k[OB1H], k[OB1L], k[OB1X], k[OB1E], gg
                )
            else:
                mm, m_lo, e_m = _lean_products_sum(k[B1H], k[B1L], m, k[OB1H], k[OB1L], gg)
            # gs = g*g is exact, so for v >= 0 this sums two non-negative terms: each
            # rounding is relative to v' itself (and so is a decimal constant's, u each).
            # A negative stored v (outside Adam's domain) gets an unbounded error: never
            # certified here.
            vv = k[B2] * v + k[OB2] * gs
            v_lo = 0.0
            e_v = 4 * U * vv if v >= 0.0 else np.inf
        elif DECIMAL:
            mm, m_lo, e_m = _decimal_products_sum(
                k[B1H], k[B1L], k[B1X], k[B1E], m, k[OB1], k[OB1X], k[OB1E], gg
            )
            vv, v_lo, e_v = _decimal_products_sum(
                k[B2H], k[B2L], k[B2X], k[B2E], v, k[OB2], k[OB2X], k[OB2E], gs
            )
        elif EXACT_G:
            mm, m_lo, e_m = _exact_products_sum(k[B1H], k[B1L], m, k[OB1], gg)
            vv, v_lo, e_v = _exact_products_sum(k[B2H], k[B2L], v, k[OB2], gs)
        else:
            t1 = k[B1] * m
            t2 = k[OB1] * gg
            mm = t1 + t2
            m_lo = 0.0 * mm
            e_m = 3 * U * (np.abs(t1) + np.abs(t2)) + k[OB1] * e_g
            s1 = k[B2] * v
            s2 = k[OB2] * gs
            vv = s1 + s2
            v_lo = 0.0 * vv
            e_v = 3 * U * (np.abs(s1) + np.abs(s2)) + k[OB2] * e_gs
        return mm, m_lo, e_m, vv, v_lo, e_v

    return moments


def _second_moment_phase(b: _Branches) -> Callable:
    """AMSGrad's v_max (a double-double) and the raw second moment under the root."""
    AMS = b.ams
    U = _U

    def second_moment(k, vmax, vv, v_lo, e_v):
        vmx_lo = 0.0 * vv
        if AMS == 0:
            vmx = vmax
            e_vmx = 0.0 * vmax
            raw = vv
            e_raw = e_v
        elif AMS == 1:
            vmx = np.maximum(vmax, vv)
            vmx_lo = (vv > vmax) * v_lo
            e_vmx = e_v
            raw = vmx
            e_raw = e_v
        else:
            vc = vv * k[IC2]
            e_vc = e_v * k[IC2] + 2 * U * np.abs(vc)
            vmx = np.maximum(vmax, vc)
            e_vmx = e_vc
            raw = k[C2] * vmx
            e_raw = k[C2] * e_vc + 2 * U * np.abs(raw)
        return vmx, vmx_lo, e_vmx, raw, e_raw

    return second_moment


def _first_moment_hat_phase(b: _Branches) -> Callable:
    """m_hat: m' / c1, or the Nesterov numerator over c1."""
    NEST = b.nest
    U = _U

    def first_moment_hat(k, mm, e_m, gg, e_g):
        if NEST == 0:
            mh = mm * k[IC1]
            e_mh = e_m * k[IC1] + 2 * U * np.abs(mh)
        elif NEST == 1:
            a1 = k[B1] * mm
            a2 = k[OB1] * gg
            mh = (a1 + a2) * k[IC1]
            e_mh = (k[B1] * e_m + k[OB1] * e_g + 3 * U * (np.abs(a1) + np.abs(a2))) * k[IC1] + (
                2 * U * np.abs(mh)
            )
        else:
            a1 = k[B1] * mm * k[IC1N]
            a2 = k[OB1] * gg * k[IC1]
            mh = a1 + a2
            e_mh = k[B1] * k[IC1N] * e_m + k[OB1] * k[IC1] * e_g + 4 * U * (np.abs(a1) + np.abs(a2))
        return mh, e_mh

    return first_moment_hat


def _relative_errors_phase(b: _Branches) -> Callable:
    """The relative errors of v' and of the raw second moment. With the gradient used
    as given, v is a sum of non-negative exact products carried to ~2**-78, so its
    relative error as a double is below 2U: no division needed."""
    LEAN, EXACT_G, AMS = b.lean, b.exact_g, b.ams
    U, TINY = _U, _TINY

    def relative_errors(vv, e_v, raw, e_raw):
        if LEAN:  # e_v = 4U v' (a negative v is never certified)
            r_v = 4 * U
            r_raw = 4 * U if AMS != 2 else 10 * U
        elif EXACT_G:
            r_v = 2 * U
            r_raw = 2 * U if AMS != 2 else 8 * U
        else:
            r_v = e_v / np.maximum(vv, TINY)
            r_raw = e_raw / np.maximum(raw, TINY)
        return r_v, r_raw

    return relative_errors


def _direction_phase(b: _Branches) -> Callable:
    """u = numer / den with den > 0: numer and its bound, den and its relative error
    r_den, and numer's relative error r_numer where it is a constant (REL)."""
    RADAM, RECTIFIED, PLACE = b.radam, b.rectified, b.place
    U = _U

    def direction(k, mh, e_mh, vv, raw, r_v, r_raw):
        # m' certified by the lean pass means |m_lo| + e_m < 2 |m_lo| <= 2**-52 |mm|
        # (= U; with IC1, LR and their product rounded, 2.5 U of the 3 U).
        r_numer = 3 * U
        if RADAM:
            if RECTIFIED:
                r_numer += 2 * U
                numer = mh * k[RS]
                e_numer = e_mh * k[RS] + 2 * U * np.abs(numer)
                den = np.sqrt(vv) + k[EPS]
                r_den = 0.5 * r_v + 3 * U
            else:
                numer = mh
                e_numer = e_mh
                den = 1.0  # a scalar: 1 + 0 * mh would turn an infinite mh into NaN
                r_den = 0.0
        elif PLACE == 0:
            numer = mh
            e_numer = e_mh
            den = np.sqrt(raw * k[IC2]) + k[EPS]
            r_den = 0.5 * r_raw + 4 * U
        elif PLACE == 1:
            numer = mh
            e_numer = e_mh
            den = np.sqrt(raw * k[IC2] + k[EPS_ROOT]) + k[EPS]
            r_den = 0.5 * r_raw + 5 * U
        else:
            r_numer += 2 * U
            numer = mh * k[SC2]
            e_numer = e_mh * k[SC2] + 2 * U * np.abs(numer)
            den = np.sqrt(raw) + (k[EPS] if PLACE == 2 else k[EPS_SC2])
            r_den = 0.5 * r_raw + 3 * U
        return numer, e_numer, den, r_den, r_numer

    return direction


def _step_size_phase(b: _Branches) -> Callable:
    """lr u and its bound."""
    REL, RADAM, RECTIFIED, PLACE = b.rel, b.radam, b.rectified, b.place
    U = _U

    def step_size(k, mm, numer, e_numer, den, r_den, r_numer):
        if REL:
            # the same product, associated differently: numer = mm (IC1 LR [RS|SC2]), each
            # constant factor's rounding counted in r_numer (2U each)
            gain = k[IC1] * k[LR]
            if RADAM and RECTIFIED:
                gain = gain * k[RS]
            elif not RADAM and PLACE >= 2:
                gain = gain * k[SC2]
            step = (mm * gain) / den
            e_step = np.abs(step) * (r_numer + r_den + 4 * U)
        else:
            inv_den = 1.0 / den  # one division; u and its error both multiply by it
            u = numer * inv_den
            e_u = e_numer * inv_den + np.abs(u) * (r_den + 3 * U)
            step = k[LR] * u
            e_step = k[LR] * e_u + 2 * U * np.abs(step)
        return step, e_step

    return step_size


def _parameter_phase(b: _Branches) -> Callable:
    """The new parameter, decoupled decay before or after the step, and its bound."""
    DEC = b.dec
    U = _U

    def parameter(k, theta, step, e_step):
        if DEC == 1:
            kept = theta * k[DECAY]
            th = kept - step
            e_th = e_step + 2 * U * np.abs(kept) + U * np.abs(th)
        elif DEC == 2:
            moved = theta - step
            th = moved * k[DECAY]
            e_th = (e_step + U * np.abs(moved)) * k[DECAY] + 2 * U * np.abs(th)
        else:
            th = theta - step
            e_th = e_step + U * np.abs(th)
        return th, e_th

    return parameter


def _average_phase(b: _Branches) -> Callable:
    """The EMA of the parameter and its bound; the parameter, overwritten if due."""
    EMA, OVERWRITE = b.ema, b.overwrite
    U = _U

    def average(k, ema, th, e_th):
        em = ema
        e_em = 0.0 * ema
        if EMA:
            w1 = k[MU] * ema
            w2 = k[OMU] * th
            em = w1 + w2
            e_em = k[OMU] * e_th + 3 * U * (np.abs(w1) + np.abs(w2))
            if OVERWRITE:
                th = em
                e_th = e_em
        return em, e_em, th, e_th

    return average


#: The kernel's phases in the order it runs them.
_PHASES = (
    _gradient_phase,
    _moments_phase,
    _second_moment_phase,
    _first_moment_hat_phase,
    _relative_errors_phase,
    _direction_phase,
    _step_size_phase,
    _parameter_phase,
    _average_phase,
)


def _exact_products_sum(ah, al, x, b, y):
    """``(a x + b y)`` as a double-double with an error bound.

    ``ah x`` and ``al x`` are exact (26-bit halves of ``a`` times an input of at most 27
    bits: a stored m or v); ``b y`` is split exactly by Dekker's product, whatever ``y``
    has (``g^2`` of a float32 ``g`` has 48 bits: the halves of ``b`` times it would not be
    exact). The big pair is summed error-free and the small terms are rounded twice, so
    the bound is about ``2**-78 |a x + b y|`` unless they cancel.
    """
    p, q = two_prod(b, y)
    s, e = two_sum(ah * x, p)
    small = (al * x + q) + e
    e_small = 2 * _U * (np.abs(al * x) + np.abs(q) + np.abs(e))
    hi, lo = two_sum(s, small)
    return hi, lo, e_small


#: Bound factor on the rounding of the small terms in :func:`_lean_products_sum`: twice
#: 2.0001 u, so that the roundings of the bound itself cannot bring it below.
_LEAN_C = 2.0**-51


def _lean_products_sum(ah, al, x, bh, bl, y):
    """``(a x + b y)`` as a normalized double-double ``(hi, lo)`` and ``e``, a bound
    on its error.

    ``A = al x``, ``B = bl y`` and ``ah x + bh y = s + t`` are exact, and
    ``hi + lo = s + fl(fl(A + B) + t)`` exactly (``two_sum``: no assumption on
    magnitudes, so cancellation needs no separate test), so the only errors are the
    two roundings of ``small``: at most ``2.0001 u (|fl(A + B)| + |t|)``, half of
    ``e``. ``e == 0`` only when ``A + B = t = 0``, where the sum is exact, so exact
    ties stay decidable.
    """
    s, t = two_sum(ah * x, bh * y)
    ab = al * x + bl * y
    hi, lo = two_sum(s, ab + t)
    return hi, lo, _LEAN_C * (np.abs(ab) + np.abs(t))


def _decimal_products_sum(ah, al, ax, ae, x, b, bx, be, y):
    """:func:`_exact_products_sum` for decimal constants ``a ~ ah + al + ax`` (``ae``
    bounds, per unit ``|x|``, what that misses and the rounding of ``ax x``; ``b ~ b + bx``
    likewise with ``be``): the low parts' products join the small terms, their misses
    the bound."""
    p, q = two_prod(b, y)
    s, e = two_sum(ah * x, p)
    small = ((al * x + q) + (ax * x + bx * y)) + e
    e_small = 2 * _U * (
        np.abs(al * x) + np.abs(q) + np.abs(ax * x) + np.abs(bx * y) + np.abs(e)
    ) + (ae * np.abs(x) + be * np.abs(y))
    hi, lo = two_sum(s, small)
    return hi, lo, e_small


def _lean_decimal_products_sum(ah, al, ax, ae, x, bh, bl, bx, be, y):
    """:func:`_lean_products_sum` for decimal constants (see
    :func:`_decimal_products_sum`): ``ab`` and ``xy = fl(fl(ax x) + fl(bx y))`` are
    rounded once each, then ``fl(ab + xy)`` and ``fl(that + t)``: four roundings, at most
    ``3.001 u (|ab| + |xy| + |t|)`` with the two products' roundings counted in ``ae``
    and ``be`` (``2**-52 |ax|`` each), so ``_LEAN_C = 4 u`` bounds them with room for the
    bound's own rounding. ``e > 0`` unless ``x = y = 0``: an exact tie is never certified
    here, the precise retry decides it."""
    s, t = two_sum(ah * x, bh * y)
    ab = al * x + bl * y
    xy = ax * x + bx * y
    hi, lo = two_sum(s, (ab + xy) + t)
    return (
        hi,
        lo,
        _LEAN_C * (np.abs(ab) + np.abs(xy) + np.abs(t)) + (ae * np.abs(x) + be * np.abs(y)),
    )


def exact_kernel(cfg: KernelConfig, K: StepConstants, x: dict[str, Any], arithmetic: Any) -> dict:
    """The step written once over ``arithmetic``: :class:`adamspec.impl._dd.Bounded`
    (double-double values with error bounds, on arrays) or
    :class:`adamspec.impl._exact.ExactArithmetic` (exact numbers, one coordinate).

    ``x`` holds theta, g, gsq, m, v, vmax and ema (and, for the double-double pass, the
    gradient's low parts and error bounds); returns theta, m, v, vmax and ema in the
    arithmetic's representation.
    """
    A = arithmetic
    c = partial(A.constant, K)
    d = partial(A.input, x)
    theta = d("theta")
    g = d("g")
    if cfg.l2:
        g = A.add(g, A.mul(c("WD"), theta))
    if cfg.scaled:
        g = A.mul(g, c("SCALE"))
    if cfg.has_gsq:
        gsq = d("gsq")
        if cfg.scaled:
            gsq = A.mul(gsq, A.mul(c("SCALE"), c("SCALE")))
    else:
        gsq = A.mul(g, g)
    m = A.add(A.mul(c("B1"), d("m")), A.mul(c("OB1"), g))
    v = A.add(A.mul(c("B2"), d("v")), A.mul(c("OB2"), gsq))
    if cfg.amsgrad == "off":
        vmax, raw = d("vmax"), v
    elif cfg.amsgrad == "max_corrected_v":
        vmax = A.maximum(d("vmax"), A.mul(v, c("IC2")))
        raw = A.mul(c("C2"), vmax)
    else:
        vmax = A.maximum(d("vmax"), v)
        raw = vmax
    if cfg.nesterov == "tf_raw":
        mh = A.mul(A.add(A.mul(c("B1"), m), A.mul(c("OB1"), g)), c("IC1"))
    elif cfg.nesterov == "nadam":
        mh = A.add(A.mul(A.mul(c("B1"), m), c("IC1N")), A.mul(A.mul(c("OB1"), g), c("IC1")))
    else:
        mh = A.mul(m, c("IC1"))
    if cfg.family == "radam":
        u = A.div(A.mul(mh, c("RS")), A.add(A.sqrt(v), c("EPS"))) if cfg.rectified else mh
    elif cfg.placement == "algorithm_1":
        u = A.div(mh, A.add(A.sqrt(A.mul(raw, c("IC2"))), c("EPS")))
    elif cfg.placement == "eps_root":
        u = A.div(mh, A.add(A.sqrt(A.add(A.mul(raw, c("IC2")), c("EPS_ROOT"))), c("EPS")))
    elif cfg.placement == "eps_hat":
        u = A.div(A.mul(mh, c("SC2")), A.add(A.sqrt(raw), c("EPS")))
    else:
        u = A.div(A.mul(mh, c("SC2")), A.add(A.sqrt(raw), c("EPS_SC2")))
    step = A.mul(c("LR"), u)
    if cfg.decay == "before":
        theta_new = A.sub(A.mul(theta, c("DECAY")), step)
    elif cfg.decay == "after":
        theta_new = A.mul(A.sub(theta, step), c("DECAY"))
    else:
        theta_new = A.sub(theta, step)
    ema = d("ema")
    if cfg.use_ema:
        ema = A.add(A.mul(c("MU"), ema), A.mul(c("OMU"), theta_new))
        if cfg.overwrite:
            theta_new = ema
    return {"theta": theta_new, "m": m, "v": v, "vmax": vmax, "ema": ema}


def _rebind(fn: Callable, **names: Any) -> Callable:
    """``fn`` with some global names rebound (its closure kept): the same source,
    compiled by numba against numba-compiled helpers."""
    return types.FunctionType(
        fn.__code__, {**fn.__globals__, **names}, fn.__name__, fn.__defaults__, fn.__closure__
    )


def _certify32(h, lo, e):
    """``(rounded, certain)``: float32 rounding of the double-double ``h + lo``, certain
    when every real within ``e`` of it rounds the same way.

    Rounding boundaries are float32 midpoints, which are doubles. With ``R`` the
    float32 nearest ``h`` and ``T = f32(2h - R)``: if ``T == R`` the nearest midpoint
    is more than a quarter float32 spacing (``>= |R| 2**-26``) away; otherwise ``T`` is
    the neighbour on ``h``'s side, the midpoint is ``M = (R + T)/2`` and ``h - M`` is
    exact, so the side of ``h + lo +- e`` is decided by exact-sign arithmetic. An exact
    tie (``h + lo == M`` with ``e == 0``) rounds to even like the hardware.
    """
    r = np.float64(np.float32(h))
    t = np.float64(np.float32(2.0 * h - r))
    near = (np.abs(lo) + e) <= np.abs(r) * 2.0**-26
    mid = 0.5 * (r + t)
    side = (h - mid) + lo
    exact_tie = (side == 0.0) & (e == 0.0)
    # Branch-free (selects only) so that the compiled loop vectorizes.
    split_value = t if side * (t - r) > 0.0 else r
    split_value = np.float64(np.float32(mid)) if exact_tie else split_value
    split_sure = near & ((np.abs(side) > e * (1.0 + 2.0**-40)) | exact_tie)
    far = t == r
    return (r if far else split_value), (near if far else split_sure)


def _tie32(h, lo, e, P, x, R, y, Q):
    """``(rounded, decided)``: the float32 rounding of ``(P x + R y) / Q``, within ``e`` of
    the double-double ``h + lo``, decided exactly where that interval reaches one float32
    midpoint ``M`` (as in :func:`_certify32`: ``near`` and ``T != R``).

    The side of ``M`` is the sign of ``P x + R y - Q M``, three products that are exact in
    float64 (:func:`adamspec.impl._constants.integer_forms` sees to their sizes), summed
    with an exact sign (:func:`adamspec.impl._dd.exact_sum_sign`); an exact tie rounds to
    even. ``Q == 0``: no integer forms, nothing decided."""
    r = np.float64(np.float32(h))
    t = np.float64(np.float32(2.0 * h - r))
    mid = 0.5 * (r + t)
    near = (np.abs(lo) + e) <= np.abs(r) * 2.0**-26
    side = exact_sum_sign(P * x, R * y, -Q * mid)
    value = t if side * (t - r) > 0.0 else r
    value = np.float64(np.float32(mid)) if side == 0.0 else value
    return value, near and t != r and Q != 0.0 and np.isfinite(mid)


def decide_ties(h, lo, e, P, x, R, y, Q, fmt: FloatFormat, xp: Any = np) -> tuple[Any, Any]:
    """:func:`_tie32` on arrays, for any format narrower than binary64 (the NumPy path)."""
    r = _dd.round_to_format(h, fmt, xp)
    t = _dd.round_to_format(2.0 * h - r, fmt, xp)
    mid = 0.5 * (r + t)
    near = (xp.abs(lo) + e) <= xp.abs(r) * 2.0 ** -(fmt.precision + 2)
    side = exact_sum_sign(P * x, R * y, -Q * mid)
    value = xp.where(side * (t - r) > 0.0, t, r)
    value = xp.where(side == 0.0, _dd.round_to_format(mid, fmt, xp), value)
    return value, near & (t != r) & xp.isfinite(mid) & (Q != 0.0)


def ties_decidable(cfg: KernelConfig) -> bool:
    """Decimal moment constants with the gradient used as given: m' and v' are
    ``(P x + R y) / Q`` of inputs and integer forms, their ties decided exactly."""
    return cfg.decimal_moments and not (cfg.l2 or cfg.scaled or cfg.has_gsq)


def _certify32_wide(h, lo, e):
    """Like :func:`_certify32` with two casts only: certain when both ends of the
    interval, widened by a float64 ulp, round alike. Used for the parameter, whose
    exact value is irrational in general and so almost never near a midpoint (the
    moments are sums of products of short decimals and often are).

    ``h - width`` rounds to float64 at or below ``h + lo - e`` (the widening covers
    that rounding), likewise ``h + width``; float32 rounding is monotonic, so equal
    ends mean every value in between, the exact one included, rounds to that value,
    which is returned."""
    width = np.abs(lo) + e + np.abs(h) * 2.0**-52
    below = np.float32(h - width)
    return np.float64(below), below == np.float32(h + width)


def _certify32_near(h, e):
    """:func:`_certify32_wide` for a double ``h`` (no low part) within ``e``."""
    width = e + np.abs(h) * 2.0**-52
    below = np.float32(h - width)
    return np.float64(below), below == np.float32(h + width)


def _certify32_dd(h, lo, e):
    """:func:`_certify32` for a normalized double-double (``|lo| <= ulp(h)/2``) with
    an error bound ``e``, by round-to-odd (compiled only: ``_f64_bits`` and
    ``_bits_f64`` are numba bit casts, rebound by the driver).

    ``h + lo`` is first rounded to 53 bits *to odd*: ``h`` itself if ``lo == 0``,
    else whichever of ``h`` and its neighbour on ``lo``'s side has an odd last bit
    (``h`` moved one step toward zero when ``lo`` points there, then the last bit
    set). Rounding to odd at 53 bits and then to nearest at 24 (or fewer, for
    subnormal results) is the nearest rounding of ``h + lo`` itself, since
    53 >= 24 + 2 (Boldo and Melquiond, 2008), so no midpoint test is needed.

    It is certain when ``e < |lo|`` (or ``e == 0``, exact): the exact value then lies
    strictly between ``h`` and ``h + 2 lo``, an open interval that holds no double
    that could be a float32 rounding boundary (the only double inside, at a power
    of two, is ``h - ulp(h)/2``, whose low bits are all ones), so it rounds like
    ``h + lo``. The comparison is made against ``|lo| (1 - 2**-52)``, which is
    below ``|lo|`` after rounding.
    """
    bits = _f64_bits(h)
    inexact = lo != 0.0
    toward_zero = inexact and ((lo < 0.0) != (h < 0.0))
    odd = (bits - (1 if toward_zero else 0)) | (1 if inexact else 0)
    return np.float64(np.float32(_bits_f64(odd))), e <= np.abs(lo) * (1.0 - 2.0**-52)


def _f64_bits(x):  # pragma: no cover - replaced by a numba intrinsic in the driver
    raise NotImplementedError


def _bits_f64(x):  # pragma: no cover - replaced by a numba intrinsic in the driver
    raise NotImplementedError


def _numba_bitcasts(numba: Any) -> tuple[Callable, Callable]:
    """Numba intrinsics reinterpreting a float64 as int64 and back (no conversion)."""
    from llvmlite import ir
    from numba.core import types

    @numba.extending.intrinsic
    def f64_bits(typingctx, x):  # pragma: no cover - compiled
        if x != types.float64:
            return None
        return types.int64(types.float64), lambda c, b, s, a: b.bitcast(a[0], ir.IntType(64))

    @numba.extending.intrinsic
    def bits_f64(typingctx, x):  # pragma: no cover - compiled
        if x != types.int64:
            return None
        return types.float64(types.int64), lambda c, b, s, a: b.bitcast(a[0], ir.DoubleType())

    return f64_bits, bits_f64


#: Coordinates per word of the driver's "uncertain" bitmask (one uint64 per block).
BLOCK = 64


@lru_cache(maxsize=256)
def numba_float32_driver(cfg: KernelConfig) -> Callable[..., int] | None:
    """A compiled, parallel, in-place float32 step for ``cfg``; None without numba.

    ``driver(k, theta, g, m, v, vmax, ema, bits)`` (``k``: the constants' hi parts,
    as a tuple or an array) updates the float32 arrays in place where every output
    is certified; coordinate ``i`` whose rounding neither pass can certify is left
    untouched for the double-double pass, with bit ``i % 64`` of ``bits[i // 64]``
    set. Returns the number of such coordinates.
    """
    try:
        import numba
    except ImportError:
        return None
    # error_model="numpy": IEEE division (x/0 = inf) without Python's zero checks.
    # fastmath={"contract"} only lets LLVM fuse a*b + c into one FMA. That changes no
    # stored value: the products the exactness arguments rely on are exact (26-bit
    # halves of constants times float32 inputs, and 2h), so fusing them rounds the same;
    # every other fused operation rounds once instead of twice, and the error bounds
    # (which count a rounding per operation, with unit roundoff doubled) stay bounds.
    # Every stored value is certified correctly rounded, so it is unique.
    import numba.extending

    jit = numba.njit(inline="always", fastmath={"contract"}, error_model="numpy")
    eft = {
        "two_sum": jit(_dd.two_sum),
        "two_prod": jit(_rebind(_dd.two_prod, split=jit(_dd.split))),
    }
    two_sum_nb = eft["two_sum"]
    helpers = {
        name: jit(_rebind(fn, **eft))
        for name, fn in (
            ("_exact_products_sum", _exact_products_sum),
            ("_lean_products_sum", _lean_products_sum),
            ("_decimal_products_sum", _decimal_products_sum),
            ("_lean_decimal_products_sum", _lean_decimal_products_sum),
        )
    }

    sign_nb = jit(_rebind(_dd.exact_sum_sign, two_sum=two_sum_nb))

    def phase(fn: Callable) -> Callable:
        return jit(_rebind(fn, **helpers))

    def kernel(lean: bool) -> Callable:
        return phase(make_fast_kernel(cfg, lean=lean, compile_phase=phase))

    compiled = {
        "_lean": kernel(True),
        "_precise": kernel(False),
        "_tie": jit(_rebind(_tie32, exact_sum_sign=sign_nb)),
        "_certify": jit(_certify32),
        "_certify_dd": numba_certify32_dd(),
        "_certify_wide": jit(_certify32_wide),
        "_certify_near": jit(_certify32_near),
    }
    return _make_pass(numba, compiled, cfg)


@lru_cache(maxsize=1)
def numba_certify32_dd() -> Callable[[float, float, float], tuple[float, bool]] | None:
    """:func:`_certify32_dd` compiled as the driver inlines it (None without numba);
    callable on its own too, to test it against exact rounding."""
    try:
        import numba
    except ImportError:
        return None
    import numba.extending

    f64_bits, bits_f64 = _numba_bitcasts(numba)
    jit = numba.njit(inline="always", fastmath={"contract"}, error_model="numpy")
    return jit(_rebind(_certify32_dd, _f64_bits=f64_bits, _bits_f64=bits_f64))


def _cache_key(cfg: KernelConfig) -> str:
    """What a compiled driver depends on beyond this file's source (which numba's cache
    checks itself): the configuration and the sources of the modules it inlines."""
    import hashlib
    import inspect

    from adamspec.impl import _constants

    sources = "".join(inspect.getsource(module) for module in (_dd, _constants))
    return hashlib.sha256((repr(cfg) + sources).encode()).hexdigest()


# Names the driver's loop calls, bound to compiled functions by _make_pass.
_lean = _precise = _certify = _certify_dd = _certify_wide = _certify_near = _tie = None
_load = _lane = _retry = None


def _make_pass(numba: Any, compiled: dict[str, Callable], cfg: KernelConfig) -> Callable:
    """A parallel loop over blocks of :data:`BLOCK` coordinates, in place where all
    outputs are certain.

    Each full block runs the ``lean`` kernel vectorized (m as a double-double, since
    its near-ties are common, rounded through round-to-odd by
    :func:`_certify32_dd`; the parameter, v, v_max and EMA as plain doubles, by the
    two-cast test of :func:`_certify32_near`), then retries its few uncertain
    coordinates with the ``precise`` kernel (m and v double-doubles, midpoint-aware
    :func:`_certify32`) as scalar code: they are still untouched, since nothing was
    written for them. The last, partial block goes to the precise kernel whole.
    What is still uncertain is flagged in ``bits``.

    Compiled code is cached on disk (numba's ``cache=True``, in ``__pycache__``): the
    compiled kernels are globals of the loop, and its closure holds only plain values
    (the configuration's hash among them), which is what numba keys its cache on.
    """
    # Unused vmax/ema arrays are passed with one element and never read: a load from a
    # fixed address that the loop's stores might alias would stop vectorization.
    ams, ema_on = cfg.amsgrad != "off", cfg.use_ema
    options = {"fastmath": {"contract"}, "error_model": "numpy"}
    compiled = {**compiled}
    compiled["_load"] = numba.njit(inline="always", **options)(_loader(ams, ema_on))
    compiled["_lane"] = numba.njit(inline="always", **options)(
        _rebind(_lean_lane(ams, ema_on), **compiled)
    )
    # Not inlined: a call per (rare) retry costs nothing, and compiling the precise
    # kernel once as scalar code, not inside the vectorized loop, saves seconds.
    retry = _precise_retry(ams, ema_on, ties_decidable(cfg), cfg.amsgrad in RAW_AMSGRAD)
    compiled["_retry"] = numba.njit(**options)(_rebind(retry, **compiled))
    run = _rebind(_block_loop(numba, ams, ema_on, _cache_key(cfg)), **compiled)
    try:
        return numba.njit(parallel=True, cache=True, **options)(run)
    except RuntimeError:  # no writable cache location: compile per process
        return numba.njit(parallel=True, **options)(run)


def _loader(ams: bool, ema_on: bool) -> Callable:
    """Coordinate ``j`` of a block's arrays as the kernels' float64 inputs (0 for an unused
    v_max or EMA, whose one-element array is never read)."""

    def load(th_b, g_b, m_b, v_b, x_b, e_b, j):  # pragma: no cover - compiled
        return (
            np.float64(th_b[j]),
            np.float64(g_b[j]),
            np.float64(m_b[j]),
            np.float64(v_b[j]),
            np.float64(x_b[j]) if ams else 0.0,
            np.float64(e_b[j]) if ema_on else 0.0,
        )

    return load


def _lean_lane(ams: bool, ema_on: bool) -> Callable:
    """The lean pass on coordinate ``j`` of a block: stores where certain, returns 1 where
    not (inlined into the block loop)."""

    def lane(k, th_b, g_b, m_b, v_b, x_b, e_b, j):  # pragma: no cover - compiled
        theta, g, m, v, vmax, ema = _load(th_b, g_b, m_b, v_b, x_b, e_b, j)
        out = _lean(k, theta, g, 0.0, m, v, vmax, ema)
        # Only m has a low part in the lean kernel (the others are exactly 0, or NaN
        # next to an infinite bound).
        r_th, ok = _certify_near(out[0], out[2])
        r_m, ok_m = _certify_dd(out[3], out[4], out[5])
        r_v, ok_v = _certify_near(out[6], out[8])
        ok = ok & ok_m & ok_v
        r_x = 0.0
        r_e = 0.0
        if ams:
            r_x, ok_x = _certify_near(out[9], out[11])
            ok = ok & ok_x
        if ema_on:
            r_e, ok_e = _certify_near(out[12], out[14])
            ok = ok & ok_e
        # Selects, not branches, so that the loop vectorizes.
        th_b[j] = np.float32(r_th) if ok else th_b[j]
        m_b[j] = np.float32(r_m) if ok else m_b[j]
        v_b[j] = np.float32(r_v) if ok else v_b[j]
        if ams:
            x_b[j] = np.float32(r_x) if ok else x_b[j]
        if ema_on:
            e_b[j] = np.float32(r_e) if ok else e_b[j]
        return np.uint64(0 if ok else 1)

    return lane


def _precise_retry(ams: bool, ema_on: bool, ties: bool, ams_raw: bool) -> Callable:
    """The precise kernel on coordinate ``j`` of a block: stores and returns True if
    certain. With ``ties`` (decimal moment constants, gradient used as given), m and v
    near a midpoint are decided exactly (:func:`_tie32`); with ``ams_raw`` as well, v_max
    is v's rounding wherever v' is the maximum."""

    def retry(k, th_b, g_b, m_b, v_b, x_b, e_b, j):  # pragma: no cover - compiled
        theta, g, m, v, vmax, ema = _load(th_b, g_b, m_b, v_b, x_b, e_b, j)
        out = _precise(k, theta, g, 0.0, m, v, vmax, ema)
        r_th, ok = _certify_wide(out[0], out[1], out[2])
        r_m, ok_m = _certify(out[3], out[4], out[5])
        r_v, ok_v = _certify(out[6], out[7], out[8])
        if ties:
            if not ok_m:
                r_m, ok_m = _tie(out[3], out[4], out[5], k[P1], m, k[R1], g, k[Q1])
            if not ok_v:
                r_v, ok_v = _tie(out[6], out[7], out[8], k[P2], v, k[R2], g * g, k[Q2])
        ok = ok & ok_m & ok_v
        r_x = 0.0
        r_e = 0.0
        if ams:
            r_x, ok_x = _certify(out[9], out[10], out[11])
            if ties and ams_raw and not ok_x and ok_v and out[9] == out[6]:
                r_x, ok_x = r_v, True  # v_max = v', stored as v' is
            ok = ok & ok_x
        if ema_on:
            r_e, ok_e = _certify(out[12], out[13], out[14])
            ok = ok & ok_e
        if ok:
            th_b[j] = np.float32(r_th)
            m_b[j] = np.float32(r_m)
            v_b[j] = np.float32(r_v)
            if ams:
                x_b[j] = np.float32(r_x)
            if ema_on:
                e_b[j] = np.float32(r_e)
        return ok

    return retry


def _block_loop(numba: Any, ams: bool, ema_on: bool, key: str) -> Callable:
    """The parallel loop over blocks (see :func:`_make_pass`); ``key`` is in its closure
    only to be part of numba's cache key."""
    one = np.uint64(1)

    def run(k, theta, g, m, v, vmax, ema, bits):  # pragma: no cover - compiled
        n = theta.size
        flagged = 0 if key else -1  # key: only to make it part of numba's cache key
        for b in numba.prange(bits.size):
            start = b * BLOCK
            stop = min(start + BLOCK, n)
            # Views of the block, indexed from 0: LLVM then sees plain, non-negative
            # offsets from pointers held in registers and vectorizes the loop (indexing
            # the whole arrays by start + j, it reloads their pointers after each store).
            th_b, g_b, m_b, v_b = theta[start:stop], g[start:stop], m[start:stop], v[start:stop]
            x_b = vmax[start:stop] if ams else vmax
            e_b = ema[start:stop] if ema_on else ema
            word = np.uint64(0)
            if stop - start == BLOCK:
                for j in range(BLOCK):
                    word |= _lane(k, th_b, g_b, m_b, v_b, x_b, e_b, j) << np.uint64(j)
            else:  # the last, partial block: all of it to the precise pass (scalar,
                # compiled once), rather than a second vectorized copy of the lean pass
                word = (one << np.uint64(stop - start)) - one
            left = 0
            if word:
                for j in range(stop - start):
                    bit = one << np.uint64(j)
                    if word & bit:
                        if _retry(k, th_b, g_b, m_b, v_b, x_b, e_b, j):
                            word ^= bit
                        else:
                            left += 1
            bits[b] = word
            flagged += left
        return flagged

    return run


# ---------------------------------------------------------------- CuPy: one fused kernel


class _Trace:
    """The operations of a kernel run on symbolic values, as C statements in order.

    :func:`make_fast_kernel` is plain arithmetic on ``np.abs``/``np.sqrt``/
    ``np.maximum``, so running it on :class:`_Sym` values records the formula,
    operation by operation and in Python's evaluation order, as C: the CUDA kernel
    is generated from the same source as the NumPy and numba paths, never retyped.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []

    def emit(self, ctype: str, expr: str) -> _Sym:
        name = f"_t{len(self.lines)}"
        self.lines.append(f"{ctype} {name} = {expr};")
        return _Sym(self, name, ctype)


def _c_double(x: float) -> str:
    """An exact C expression for the double ``x``, from its bits (no decimal rounding)."""
    return f"ADAM_F64(0x{np.float64(x).view(np.uint64):016x}ULL)"


def _c_operand(x: Any) -> str:
    if isinstance(x, _Sym):
        return f"(double){x.name}" if x.ctype == "bool" else x.name
    if isinstance(x, (bool, np.bool_)):
        return _c_double(float(x))
    return _c_double(float(x))


class _Sym:
    """A symbolic double (or bool) in a :class:`_Trace`."""

    __array_priority__ = 1000  # numpy scalars defer to our operators

    def __init__(self, trace: _Trace, name: str, ctype: str = "double") -> None:
        self.trace, self.name, self.ctype = trace, name, ctype

    def _op(self, other: Any, op: str, reverse: bool = False, ctype: str = "double") -> _Sym:
        a, b = _c_operand(self), _c_operand(other)
        if reverse:
            a, b = b, a
        return self.trace.emit(ctype, f"{a} {op} {b}")

    def __add__(self, o):
        return self._op(o, "+")

    def __radd__(self, o):
        return self._op(o, "+", True)

    def __sub__(self, o):
        return self._op(o, "-")

    def __rsub__(self, o):
        return self._op(o, "-", True)

    def __mul__(self, o):
        return self._op(o, "*")

    def __rmul__(self, o):
        return self._op(o, "*", True)

    def __truediv__(self, o):
        return self._op(o, "/")

    def __rtruediv__(self, o):
        return self._op(o, "/", True)

    def __neg__(self):
        return self.trace.emit("double", f"-{_c_operand(self)}")

    def __lt__(self, o):
        return self._op(o, "<", ctype="bool")

    def __le__(self, o):
        return self._op(o, "<=", ctype="bool")

    def __gt__(self, o):
        return self._op(o, ">", ctype="bool")

    def __ge__(self, o):
        return self._op(o, ">=", ctype="bool")

    def __bool__(self):
        raise TypeError("a traced kernel may not branch on a value")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> _Sym:
        functions = {np.absolute: "fabs", np.sqrt: "sqrt", np.maximum: "adam_max"}
        if method != "__call__" or kwargs or ufunc not in functions:
            raise TypeError(f"{ufunc.__name__} is not traced into C")
        args = ", ".join(_c_operand(x) for x in inputs)
        return self.trace.emit("double", f"{functions[ufunc]}({args})")


class _TracedConstants:
    """The constants vector of a traced kernel: ``k[i]`` reads the kernel's ``k``."""

    def __init__(self, trace: _Trace) -> None:
        self.trace = trace

    def __getitem__(self, index: int) -> _Sym:
        return _Sym(self.trace, f"k[{int(index)}]")


#: Helpers of the generated kernel, in C that is also valid CUDA C++. ``ADAM_F64``,
#: ``ADAM_ATOMIC_OR``, ``ADAM_ATOMIC_ADD`` and ``ADAM_DEVICE`` are defined by the
#: target (CUDA below; plain C in tests/test_impl_cupy.py).
_C_HELPERS = r"""
ADAM_DEVICE double adam_max(double a, double b) { return (a >= b || a != a) ? a : b; }

/* _certify32: float32 rounding of the double-double h + lo, certain within e. */
ADAM_DEVICE void adam_certify32(double h, double lo, double e, double* value, bool* sure) {
    double r = (double)(float)h;
    double t = (double)(float)(2.0 * h - r);
    bool near_ = (fabs(lo) + e) <= fabs(r) * ADAM_F64(0x3e50000000000000ULL);
    double mid = 0.5 * (r + t);
    double side = (h - mid) + lo;
    bool exact_tie = (side == 0.0) && (e == 0.0);
    double split_value = (side * (t - r) > 0.0) ? t : r;
    split_value = exact_tie ? (double)(float)mid : split_value;
    bool split_sure = near_ && ((fabs(side) > e * ADAM_F64(0x3ff0000000000100ULL)) || exact_tie);
    bool far_ = (t == r);
    *value = far_ ? r : split_value;
    *sure = far_ ? near_ : split_sure;
}

/* exact_sum_sign: a double with the sign of a + b + c, exactly. */
ADAM_DEVICE double adam_sum_sign(double a, double b, double c) {
    double s1 = a + b, b1 = s1 - a, e1 = (a - (s1 - b1)) + (b - b1);
    double s2 = s1 + c, c2 = s2 - s1, e2 = (s1 - (s2 - c2)) + (c - c2);
    return s2 + (e1 + e2);
}

/* _tie32: the float32 rounding of (P x + R y) / Q near one midpoint, decided exactly. */
ADAM_DEVICE void adam_tie32(double h, double lo, double e, double P, double x, double R,
                            double y, double Q, double* value, bool* sure) {
    double r = (double)(float)h;
    double t = (double)(float)(2.0 * h - r);
    double mid = 0.5 * (r + t);
    bool near_ = (fabs(lo) + e) <= fabs(r) * ADAM_F64(0x3e50000000000000ULL);
    double side = adam_sum_sign(P * x, R * y, -Q * mid);
    double chosen = (side * (t - r) > 0.0) ? t : r;
    *value = (side == 0.0) ? (double)(float)mid : chosen;
    *sure = near_ && t != r && Q != 0.0 && isfinite(mid);
}

/* _certify32_wide: both ends of h + lo +- e, widened by a float64 ulp, round alike. */
ADAM_DEVICE void adam_certify32_wide(double h, double lo, double e, double* value, bool* sure) {
    double width = fabs(lo) + e + fabs(h) * ADAM_F64(0x3cb0000000000000ULL);
    float below = (float)(h - width);
    *value = (double)below;
    *sure = below == (float)(h + width);
}
"""

_CUDA_DEFINES = r"""
#define ADAM_F64(bits) __longlong_as_double((long long)(bits))
#define ADAM_ATOMIC_OR(p, x) atomicOr((p), (x))
#define ADAM_ATOMIC_ADD(p, x) atomicAdd((p), (x))
#define ADAM_DEVICE __device__
"""


def cuda_float32_source(cfg: KernelConfig) -> dict[str, str]:
    """The fused float32 step for ``cfg`` as a CuPy ``ElementwiseKernel``'s parts.

    One pass over memory: reads g and the state, evaluates the precise kernel (the
    traced :func:`make_fast_kernel`) in float64, certifies every output like the
    compiled CPU driver's retry (:func:`_certify32`, :func:`_certify32_wide`), and
    writes param, m, v (v_max, EMA) in place where all are certain. Elsewhere it
    writes nothing and sets bit ``i % 32`` of ``bits[i / 32]`` and counts it in
    ``counter[0]``, for the double-double pass. Returns ``in_params``,
    ``out_params``, ``helpers`` (C valid as CUDA and C99) and ``body``.
    """
    ams, ema_on = cfg.amsgrad != "off", cfg.use_ema
    trace = _Trace()

    def load(name: str) -> _Sym:
        return trace.emit("double", f"(double){name}")

    inputs = {name: load(name) for name in ("theta", "g", "m", "v")}
    out = make_fast_kernel(cfg)(
        _TracedConstants(trace),
        inputs["theta"],
        inputs["g"],
        0.0,
        inputs["m"],
        inputs["v"],
        load("vmax") if ams else 0.0,
        load("ema") if ema_on else 0.0,
    )
    stores = [("theta", 0, "adam_certify32_wide"), ("m", 3, "adam_certify32"),
              ("v", 6, "adam_certify32")]  # fmt: skip
    if ams:
        stores.append(("vmax", 9, "adam_certify32"))
    if ema_on:
        stores.append(("ema", 12, "adam_certify32"))
    lines = list(trace.lines)
    for name, at, certify in stores:
        args = ", ".join(_c_operand(x) for x in out[at : at + 3])
        lines.append(f"double _r_{name}; bool _ok_{name};")
        lines.append(f"{certify}({args}, &_r_{name}, &_ok_{name});")
    if ties_decidable(cfg):  # as the compiled driver's retry: _tie32
        g = inputs["g"].name
        for name, at, x, y, suffix in (("m", 3, "m", g, "1"), ("v", 6, "v", f"{g} * {g}", "2")):
            args = ", ".join(_c_operand(a) for a in out[at : at + 3])
            forms = [f"k[{INDEX[letter + suffix]}]" for letter in "PRQ"]
            lines.append(
                f"if (!_ok_{name}) adam_tie32({args}, {forms[0]}, {inputs[x].name}, "
                f"{forms[1]}, {y}, {forms[2]}, &_r_{name}, &_ok_{name});"
            )
        if ams and cfg.amsgrad in RAW_AMSGRAD:
            same = f"{_c_operand(out[9])} == {_c_operand(out[6])}"
            lines.append(
                f"if (!_ok_vmax && _ok_v && {same}) {{ _r_vmax = _r_v; _ok_vmax = true; }}"
            )
    lines.append("bool _ok = " + " && ".join(f"_ok_{name}" for name, _, _ in stores) + ";")
    lines.append("if (_ok) {")
    lines += [f"    {name} = (float)_r_{name};" for name, _, _ in stores]
    lines.append("} else {")
    lines.append("    ADAM_ATOMIC_OR(&bits[i >> 5], 1u << (unsigned)(i & 31));")
    lines.append("    ADAM_ATOMIC_ADD(&counter[0], 1);")
    lines.append("}")
    # bits and counter are outputs: CuPy passes raw inputs as const arrays.
    return {
        "in_params": "raw float64 k, float32 g",
        "out_params": ", ".join(f"float32 {name}" for name, _, _ in stores)
        + ", raw uint32 bits, raw int32 counter",
        "helpers": _C_HELPERS,
        "body": "\n".join(lines),
    }


@lru_cache(maxsize=256)
def cupy_float32_driver(cfg: KernelConfig) -> Callable[..., tuple[int, Any]] | None:
    """The fused CuPy step for ``cfg`` (:func:`cuda_float32_source`); None without cupy.

    ``driver(k, theta, g, m, v, vmax, ema)`` (CuPy arrays; ``k`` the constants' hi
    parts, float64) updates in place where certain and returns ``(flagged, bits)``:
    the number of uncertain coordinates, left untouched, and their bitmask (uint32
    words). GPU timings are unmeasured: no GPU was available to this work.
    """
    try:
        import cupy
    except ImportError:
        return None
    source = cuda_float32_source(cfg)
    kernel = cupy.ElementwiseKernel(
        source["in_params"],
        source["out_params"],
        source["body"],
        name="adamspec_float32_step",
        preamble=_CUDA_DEFINES + source["helpers"],
    )
    ams, ema_on = cfg.amsgrad != "off", cfg.use_ema

    def driver(k: Any, theta: Any, g: Any, m: Any, v: Any, vmax: Any, ema: Any) -> tuple:
        bits = cupy.zeros(-(-theta.size // 32), dtype=cupy.uint32)
        counter = cupy.zeros(1, dtype=cupy.int32)
        outputs = [theta, m, v] + ([vmax] if ams else []) + ([ema] if ema_on else [])
        kernel(k, g, *outputs, bits, counter)
        return int(counter.get()[0]), bits

    return driver
