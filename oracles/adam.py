r"""The exact Adam oracle: executes any :class:`adamspec.spec.Variant` on exact real numbers.

Inputs are taken as the exact binary values of the arrays given; every
operation is exact (rationals and square roots, see :mod:`adamspec.oracles.exact`) and
each stored result is rounded once, correctly, to the requested format with
Ziv's strategy (:mod:`adamspec.oracles.ziv`). One step of a coordinate, with ``t`` the
step being taken::

    g      <- -g (maximize);  clip;  g + lambda theta (L2)
    m'     =  beta1 m + (1 - beta1) g        (d1 m + k1 g with the held constants below)
    v'     =  beta2 v + (1 - beta2) g^2
    c1, c2 =  1 - beta1^t, 1 - beta2^t      (1 when off; beta^t accumulated if so)
    u      =  m_hat / (sqrt(s_hat + eps_root) + eps_eff)     (see spec/ADAM.md)
    theta' =  theta - lr_t u                 (with decoupled decay before/after)

The moments use the held decay factors ``d_i`` and complements ``k_i`` of
:class:`~adamspec.oracles.hyperparams.ExactHyper` (``beta_i`` and exactly ``1 - beta_i``
except for the ``*_via_float64`` hyperparameter precisions); the bias
corrections use the held ``beta_i``.

Row-sparse gradients (:class:`adamspec.spec.SparseRows`) follow the variant's
``sparse`` and ``duplicates`` axes. Several tensors may be stepped at once
(``global_clipnorm`` spans them all).

The step's scalars (``1/c1``, ``sqrt(c2)``, RAdam's ``r_t``...) are computed with the
oracle's own arithmetic, apart from ``impl/_constants.py`` on purpose: the judge shares no
code with what it judges. The fast oracle is the same judge and shares their definitions
(:func:`bias_correction`, :func:`decoupled_decay`, the RAdam terms).

This module is long because it is the whole exact oracle in one reading: inputs,
gradients and clipping, the step's scalars, one coordinate's update and the public API.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from gmpy2 import mpq

from adamspec.oracles.exact import (
    NAN,
    NEG_INF,
    ONE,
    POS_INF,
    ZERO,
    Rat,
    Real,
    Special,
    compare,
    lift,
    maximum,
    sqrt,
)
from adamspec.oracles.hyperparams import ExactHyper, HyperMode, resolve
from adamspec.oracles.rounding import (
    exact_of_float,
    format_of_dtype,
    narrow_floats,
    numpy_dtype,
)
from adamspec.oracles.ziv import DEFAULT_PRECISION, decimal_string, evaluate, round_real
from adamspec.spec.axes import (
    AmsGrad,
    BiasCorrection,
    DuplicateIndices,
    EpsPlacement,
    Family,
    Nesterov,
    SparseSemantics,
    WeightDecay,
)
from adamspec.spec.formats import FloatFormat, format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper
from adamspec.spec.variant import Variant

#: Scalar state components (present only for accumulated bias corrections).
SCALAR_COMPONENTS = ("beta1_power", "beta2_power")

#: rho_t must exceed this for RAdam to rectify (torch.optim.RAdam uses 5).
RADAM_RHO_THRESHOLD = 5


class OracleInputError(ValueError):
    """Inputs the oracle cannot execute (shape mismatch, unknown dtype...)."""


# ---------------------------------------------------------------- exact state


@dataclass
class ExactState:
    """Optimizer state as exact values, one flat list per tensor.

    ``beta1_power``/``beta2_power`` hold ``beta^step`` for accumulated bias
    corrections (1 at step 0).
    """

    m: list[list[Real]]
    v: list[list[Real]]
    v_max: list[list[Real]]
    ema: list[list[Real]]
    step: int
    beta1_power: Real = ONE
    beta2_power: Real = ONE


@dataclass
class StepResult:
    """One oracle step: exact values and their correctly rounded images.

    ``exact[c]`` and ``rounded[c]`` map a component name to one array per
    tensor (object arrays of :class:`~adamspec.oracles.exact.Real` / arrays of the
    target dtype). For a single-tensor call, :meth:`value` unwraps it.
    """

    step: int
    exact: dict[str, list[Any]]
    rounded: dict[str, list[Any]]
    decimals: dict[str, list[list[str]]]
    precision: int = 0
    components: tuple[str, ...] = field(default=())

    def value(self, component: str, tensor: int = 0) -> np.ndarray:
        """Rounded values of ``component`` for one tensor."""
        return self.rounded[component][tensor]


# ---------------------------------------------------------------- inputs


def _exact(x: Any) -> Real:
    """The exact value of one float element (NaN and infinities become specials)."""
    f = float(x)
    if f != f:
        return NAN
    if f in (math.inf, -math.inf):
        return POS_INF if f > 0 else NEG_INF
    q = exact_of_float(x)
    return Rat(mpq(q.numerator, q.denominator))


def exact_list(array: Any) -> list[Real]:
    """Flat list of the exact values of a float array."""
    return [_exact(x) for x in np.asarray(array).ravel()]


def as_tensors(params: Any) -> tuple[list[np.ndarray], bool]:
    """``params`` as a list of arrays, and whether it was a single array (not a list of
    tensors): how both oracles read their ``params`` argument."""
    if isinstance(params, (list, tuple)) and params and not np.isscalar(params[0]):
        arrays = [np.asarray(p) for p in params]
        return arrays, False
    return [np.asarray(params)], True


# ---------------------------------------------------------------- gradients


@dataclass
class _Contributions:
    """Per coordinate: the gradient contributions and whether the row was touched."""

    parts: list[list[Real]]
    touched: list[bool]


def _contributions(grad: Any, shape: tuple[int, ...], variant: Variant) -> _Contributions:
    size = int(np.prod(shape))
    if not isinstance(grad, SparseRows):
        g = np.asarray(grad)
        if g.shape != shape:
            raise OracleInputError(f"gradient shape {g.shape} does not match parameter {shape}")
        return _Contributions([[x] for x in exact_list(g)], [True] * size)
    if not shape or grad.num_rows != shape[0]:
        raise OracleInputError(
            f"sparse gradient for {grad.num_rows} rows does not match parameter {shape}"
        )
    row = size // shape[0]
    parts: list[list[Real]] = [[] for _ in range(size)]
    touched = [False] * size
    values = np.asarray(grad.values).reshape(len(grad.indices), row)
    for index, contribution in zip(grad.indices, values, strict=True):
        base = int(index) * row
        for k, x in enumerate(exact_list(contribution)):
            parts[base + k].append(x)
            touched[base + k] = True
    if variant.duplicates is DuplicateIndices.SUM_THEN_SQUARE:
        parts = [[_sum(p)] if p else [] for p in parts]
    return _Contributions(parts, touched)


def _sum(values: Sequence[Real]) -> Real:
    total: Real = ZERO
    for x in values:
        total = total + x
    return total


def _clip_value(x: Real, c: mpq) -> Real:
    return -maximum(-maximum(x, Rat(-c)), Rat(-c))


def _preprocess(
    contributions: list[_Contributions],
    variant: Variant,
    hp: ExactHyper,
    sq_norms: Sequence[Any] | None = None,
) -> None:
    """Maximize, then clip (value, per-tensor norm, global norm), in place.

    ``sq_norms`` (one exact rational per tensor) replaces the squared norms the
    clipping would sum over the coordinates given (see :func:`trajectory`).
    """
    for k, c in enumerate(contributions):
        if variant.maximize:
            c.parts = [[-x for x in p] for p in c.parts]
        if hp.clipvalue is not None:
            c.parts = [[_clip_value(x, hp.clipvalue) for x in p] for p in c.parts]
        if hp.clipnorm is not None:
            # Keras clip_by_norm: g * c / max(||g||, c), norm over this tensor.
            if sq_norms is None:
                norm = sqrt(_sum([x * x for p in c.parts for x in p]))
            else:
                norm = sqrt(_given_sq_norm(sq_norms[k]))
            scale = Rat(hp.clipnorm) / maximum(norm, Rat(hp.clipnorm))
            c.parts = [[x * scale for x in p] for p in c.parts]
    if hp.global_clipnorm is not None:
        if sq_norms is None:
            total = _sum([x * x for c in contributions for p in c.parts for x in p])
        else:
            total = _sum([_given_sq_norm(q) for q in sq_norms])
        norm = sqrt(total)
        # Keras clip_by_global_norm: a non-finite norm makes the scale NaN.
        scale = (
            NAN
            if isinstance(norm, Special)
            else Rat(hp.global_clipnorm) / maximum(norm, Rat(hp.global_clipnorm))
        )
        for c in contributions:
            c.parts = [[x * scale for x in p] for p in c.parts]


def _given_sq_norm(value: Any) -> Real:
    """A squared norm handed in by the caller: an exact rational, or NaN/inf as a float."""
    if isinstance(value, float) and not math.isfinite(value):
        return _exact(value)
    q = mpq(value)
    if q < 0:
        raise OracleInputError(f"grad_sq_norms entry {value!r} is negative")
    return Rat(q)


# ---------------------------------------------------------------- one step


@dataclass(frozen=True)
class _StepScalars:
    t: int
    lr: Real
    beta1: Real  # decay factor of m (held beta1, or 1 - k1 in interpolation form)
    beta2: Real  # decay factor of v
    one_minus_beta1: Real  # complement multiplying g
    one_minus_beta2: Real  # complement multiplying g^2
    c1: Real
    c2: Real
    c1_next: Real  # 1 - beta1^(t+1), for the NAdam numerator
    eps: Real
    eps_root: Real
    decay: Real  # multiplier applied to theta by decoupled decay (1 when none)
    rectify: Real | None  # RAdam r_t, None before rho_t first exceeds the threshold
    beta1_power: Real
    beta2_power: Real


def _scalars(variant: Variant, hp: ExactHyper, state: ExactState) -> _StepScalars:
    t = state.step + 1
    b1, b2 = Rat(hp.beta1), Rat(hp.beta2)
    p1 = (
        state.beta1_power * b1
        if variant.bias_correction_m is BiasCorrection.ACCUMULATED
        else (Rat(hp.beta1**t))
    )
    p2 = (
        state.beta2_power * b2
        if variant.bias_correction_v is BiasCorrection.ACCUMULATED
        else (Rat(hp.beta2**t))
    )
    lr = Rat(hp.lr_at(t))
    rectify = None
    if variant.family is Family.RADAM:
        rectify = _radam_rectification(t, hp.beta2, p2)
    return _StepScalars(
        t,
        lr,
        Rat(hp.moment_beta1),
        Rat(hp.moment_beta2),
        Rat(hp.one_minus_beta1),
        Rat(hp.one_minus_beta2),
        bias_correction(variant.bias_correction_m, p1, ONE),
        bias_correction(variant.bias_correction_v, p2, ONE),
        bias_correction(variant.bias_correction_m, p1 * b1, ONE),
        Rat(hp.eps),
        Rat(hp.eps_root),
        decoupled_decay(variant.weight_decay, lr, Rat(hp.weight_decay), ONE),
        rectify,
        p1,
        p2,
    )


# The scalar definitions below are shared by both oracles (one judge): written once,
# generic over the number type -- exact Reals here, Fractions and mpmath intervals in
# :mod:`adamspec.oracles._fast_consts` -- with the operations in the same order.


def bias_correction(axis: BiasCorrection, power: Any, one: Any) -> Any:
    """``c = 1 - P`` for this step's power ``P`` (``beta^t`` or the accumulated ``P_t``;
    NAdam's next-step correction passes ``P beta``), ``one`` when the correction is off."""
    return one if axis is BiasCorrection.NONE else one - power


def decoupled_decay(axis: WeightDecay, lr: Any, wd: Any, one: Any) -> Any:
    """The factor decoupled weight decay multiplies theta by: ``1 - lr lambda`` when it is
    scaled by the learning rate, ``1 - lambda`` when not, ``one`` for coupled or no decay."""
    if axis in (WeightDecay.DECOUPLED_LR_BEFORE, WeightDecay.DECOUPLED_LR_AFTER):
        return one - lr * wd
    if axis in (WeightDecay.DECOUPLED_BEFORE, WeightDecay.DECOUPLED_AFTER):
        return one - wd
    return one


def ema_momentum(t: int, mu: Any, zero: Any) -> Any:
    """The EMA momentum of step ``t``: Keras 3 uses 0 on the first step (the average
    starts at theta), then ``mu``: ``avg <- mu avg + (1 - mu) theta``."""
    return zero if t == 1 else mu


def radam_rho_inf(beta2: Any) -> Any:
    """RAdam's ``rho_inf = 2 / (1 - beta2) - 1``."""
    return 2 / (1 - beta2) - 1


def radam_rho_t(t: int, rho_inf: Any, beta2_power: Any) -> Any:
    """RAdam's ``rho_t = rho_inf - 2 t P / (1 - P)`` with ``P = beta2^t`` (or accumulated)."""
    return rho_inf - 2 * t * beta2_power / (1 - beta2_power)


def radam_rectification_squared(rho_inf: Any, rho_t: Any) -> Any:
    """``r_t^2 = (rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)``."""
    return (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)


def radam_rho(t: int, beta2: mpq, beta2_power: Real | None = None) -> tuple[Real, Real]:
    """RAdam's ``(rho_inf, rho_t)`` as exact Reals (``beta2_power`` defaults to ``b2^t``)."""
    p2 = beta2_power if beta2_power is not None else Rat(beta2**t)
    rho_inf = radam_rho_inf(Rat(beta2))
    return rho_inf, radam_rho_t(t, rho_inf, p2)


def _radam_rectification(t: int, beta2: mpq, p2: Real) -> Real | None:
    if beta2 == 1:
        # beta2 held as 1 (0.999 in bfloat16): rho_inf = 2/0 - 1 and rho_t = inf - inf is NaN,
        # which never exceeds the threshold in torch.optim.RAdam: the update is un-adapted
        return None
    rho_inf, rho_t = radam_rho(t, beta2, p2)
    if compare(rho_t, RADAM_RHO_THRESHOLD) <= 0:
        return None
    return sqrt(radam_rectification_squared(rho_inf, rho_t))


def _coordinate(
    variant: Variant,
    s: _StepScalars,
    wd: Real,
    theta: Real,
    parts: list[Real],
    m: Real,
    v: Real,
    v_max: Real,
) -> tuple[Real, Real, Real, Real]:
    """New (theta, m, v, v_max) of one coordinate."""
    if variant.weight_decay is WeightDecay.L2 and wd.sign() != 0:
        # As torch: skipped entirely when lambda = 0 (so 0 * inf never makes NaN).
        parts = _with_l2(parts, wd * theta)
    g = _sum(parts) if len(parts) != 1 else parts[0]
    g_sq = _sum([x * x for x in parts])
    b1, b2, ob1, ob2 = s.beta1, s.beta2, s.one_minus_beta1, s.one_minus_beta2
    m_new = b1 * m + ob1 * g
    v_new = b2 * v + ob2 * g_sq

    # The raw second moment entering the denominator and its corrected form.
    amsgrad = variant.amsgrad
    if amsgrad is AmsGrad.OFF:
        v_max_new, raw = v_max, v_new
    elif amsgrad is AmsGrad.MAX_CORRECTED_V:
        v_max_new = maximum(v_max, v_new / s.c2)
        raw = s.c2 * v_max_new
    else:
        v_max_new = maximum(v_max, v_new)
        raw = v_max_new

    if variant.nesterov is Nesterov.TF_RAW:
        m_hat = (b1 * m_new + ob1 * g) / s.c1
    elif variant.nesterov is Nesterov.NADAM:
        m_hat = b1 * m_new / s.c1_next + ob1 * g / s.c1
    else:
        m_hat = m_new / s.c1

    if variant.family is Family.RADAM:
        if s.rectify is None:
            u = m_hat
        else:
            u = m_hat * s.rectify * sqrt(s.c2) / (sqrt(v_new) + s.eps)
    else:
        u = _adam_direction(variant.eps_placement, m_hat, raw, s)

    step = s.lr * u
    if variant.weight_decay in (WeightDecay.DECOUPLED_LR_AFTER, WeightDecay.DECOUPLED_AFTER):
        theta_new = (theta - step) * s.decay
    else:
        theta_new = theta * s.decay - step
    return theta_new, m_new, v_new, v_max_new


def _with_l2(parts: list[Real], l2: Real) -> list[Real]:
    """Add the L2 term ``lambda theta`` to the gradient of one coordinate.

    A single contribution becomes ``g + lambda theta`` (so v sees its square).
    With several square-then-sum duplicates the L2 term is one more
    contribution: m sees ``sum(g_i) + l2`` and v sees ``sum(g_i^2) + l2^2``.
    """
    if len(parts) <= 1:
        return [(parts[0] if parts else ZERO) + l2]
    return [*parts, l2]


def _adam_direction(placement: EpsPlacement, m_hat: Real, raw: Real, s: _StepScalars) -> Real:
    """The update direction ``u`` for each epsilon placement, written as its source writes it.

    The literal forms keep degenerate cases (``c2 = 0`` when beta2 is held as
    1.0) behaving as the implementations do: the eps-hat forms scale by
    ``sqrt(c2) = 0`` while Algorithm 1 divides by it.
    """
    if placement is EpsPlacement.ALGORITHM_1:
        return m_hat / (sqrt(raw / s.c2) + s.eps)
    if placement is EpsPlacement.EPS_ROOT:
        return m_hat / (sqrt(raw / s.c2 + s.eps_root) + s.eps)
    root_c2 = sqrt(s.c2)
    if placement is EpsPlacement.EPS_HAT:
        return m_hat * root_c2 / (sqrt(raw) + s.eps)
    return m_hat * root_c2 / (sqrt(raw) + s.eps * root_c2)  # EPS_HAT_ADAPTIVE


def _step_exact(
    variant: Variant,
    hp: ExactHyper,
    params: list[list[Real]],
    grads: Sequence[Any],
    shapes: list[tuple[int, ...]],
    state: ExactState,
    sq_norms: Sequence[Any] | None = None,
) -> tuple[list[list[Real]], ExactState]:
    s = _scalars(variant, hp, state)
    contributions = [
        _contributions(g, shape, variant) for g, shape in zip(grads, shapes, strict=True)
    ]
    _preprocess(contributions, variant, hp, sq_norms)
    wd = Rat(hp.weight_decay)
    lazy = variant.sparse is SparseSemantics.LAZY
    new_params, new_m, new_v, new_vmax, new_ema = [], [], [], [], []
    for k, c in enumerate(contributions):
        theta_k, m_k, v_k, vmax_k = params[k], state.m[k], state.v[k], state.v_max[k]
        out_t, out_m, out_v, out_vm = list(theta_k), list(m_k), list(v_k), list(vmax_k)
        for i in range(len(theta_k)):
            if lazy and not c.touched[i]:
                continue
            out_t[i], out_m[i], out_v[i], out_vm[i] = _coordinate(
                variant, s, wd, theta_k[i], c.parts[i], m_k[i], v_k[i], vmax_k[i]
            )
        ema_k = state.ema[k]
        if hp.use_ema:
            mu = ema_momentum(s.t, Rat(hp.ema_momentum), ZERO)
            ema_k = [mu * a + (ONE - mu) * x for a, x in zip(ema_k, out_t, strict=True)]
            freq = hp.ema_overwrite_frequency
            if freq and s.t % freq == 0:
                out_t = list(ema_k)
        new_params.append(out_t)
        new_m.append(out_m)
        new_v.append(out_v)
        new_vmax.append(out_vm)
        new_ema.append(ema_k)
    return new_params, ExactState(
        new_m, new_v, new_vmax, new_ema, s.t, s.beta1_power, s.beta2_power
    )


# ---------------------------------------------------------------- public API


@dataclass(frozen=True)
class OracleState:
    """Optimizer state given as float arrays (exact binary values); None means zeros.

    ``beta1_power``/``beta2_power`` default to ``beta^step`` exactly.
    """

    m: Any = None
    v: Any = None
    v_max: Any = None
    ema: Any = None
    step: int = 0
    beta1_power: Any = None
    beta2_power: Any = None
    master: Any = None


def _initial_state(
    state: OracleState | None, arrays: list[np.ndarray], hp: ExactHyper, single: bool
) -> ExactState:
    state = state or OracleState()
    if not isinstance(state.step, int) or isinstance(state.step, bool) or state.step < 0:
        raise OracleInputError(f"state step={state.step!r} must be a non-negative integer")

    def component(name: str) -> list[list[Real]]:
        given = getattr(state, name)
        if given is None:
            return [[ZERO] * a.size for a in arrays]
        tensors = [given] if single else list(given)
        if len(tensors) != len(arrays):
            raise OracleInputError(f"state {name} has {len(tensors)} tensors, params {len(arrays)}")
        out = []
        for t, a in zip(tensors, arrays, strict=True):
            t = np.asarray(t)
            if t.shape != a.shape:
                raise OracleInputError(f"state {name} shape {t.shape} does not match {a.shape}")
            out.append(exact_list(t))
        return out

    def power(given: Any, beta: mpq) -> Real:
        return Rat(beta**state.step) if given is None else _exact(given)

    return ExactState(
        component("m"),
        component("v"),
        component("v_max"),
        component("ema"),
        state.step,
        power(state.beta1_power, hp.beta1),
        power(state.beta2_power, hp.beta2),
    )


def component_names(variant: Variant, hp: ExactHyper) -> tuple[str, ...]:
    """The components a result of both oracles carries, in report order (``master`` after
    ``v_max`` when kept: :func:`master_trajectory`)."""
    # v_max is part of the full state even when AMSGrad is off (it then passes through).
    names = ["param", "m", "v", "v_max"]
    if hp.use_ema:
        names.append("ema")
    if variant.bias_correction_m is BiasCorrection.ACCUMULATED:
        names.append("beta1_power")
    if variant.bias_correction_v is BiasCorrection.ACCUMULATED:
        names.append("beta2_power")
    return tuple(names)


def target_format(dtype: Any) -> FloatFormat:
    """The format named by a ``dtype``/``state_dtype`` argument (a format, its name or a
    NumPy dtype), as both oracles read it."""
    if isinstance(dtype, FloatFormat):
        return dtype
    if isinstance(dtype, str):
        return format_named(dtype)
    return format_of_dtype(dtype)


@dataclass(frozen=True)
class Roles:
    """The formats both oracles round to, read from their dtype arguments once: the param's,
    the state's, the master's (None: no master copy) and the hyperparameters' holding
    format (the master's when there is one: the update is computed for it)."""

    param: FloatFormat
    state: FloatFormat
    master: FloatFormat | None
    hyper: FloatFormat

    @classmethod
    def read(
        cls, arrays: list[np.ndarray], dtype: Any, state_dtype: Any, master_dtype: Any,
        hyper_dtype: Any,
    ) -> Roles:  # fmt: skip
        param = target_format(dtype if dtype is not None else arrays[0].dtype)
        master = target_format(master_dtype) if master_dtype is not None else None
        state = target_format(state_dtype) if state_dtype is not None else param
        hyper = target_format(hyper_dtype) if hyper_dtype is not None else (master or param)
        return cls(param, state, master, hyper)

    def target(self, component: str) -> FloatFormat:
        """The format ``component`` is stored in when no master is kept (with one, the
        step is computed with the master's format as the param's: :func:`master_trajectory`)."""
        return self.param if component in ("param", "ema") else self.state


def theta_arrays(
    arrays: list[np.ndarray], state: Any, single: bool, roles: Roles
) -> list[np.ndarray]:
    """The weights the update starts from: the params, or with a master the state's master
    copy (the params' exact values when the state has none: a fresh master)."""
    given = getattr(state, "master", None)
    if roles.master is None:
        if given is not None:
            raise OracleInputError("state has a master copy but no master_dtype was given")
        return arrays
    if given is None:
        return arrays
    masters = [np.asarray(given)] if single else [np.asarray(m) for m in given]
    if len(masters) != len(arrays):
        raise OracleInputError(f"state master has {len(masters)} tensors, params {len(arrays)}")
    for m, a in zip(masters, arrays, strict=True):
        if m.shape != a.shape:
            raise OracleInputError(f"state master shape {m.shape} does not match {a.shape}")
    return masters


def trajectory(
    variant: Variant,
    hyper: Hyper,
    params: Any,
    grads: Sequence[Any],
    state: OracleState | None = None,
    *,
    dtype: Any = None,
    state_dtype: Any = None,
    hyper_mode: HyperMode = "held",
    precision: int = DEFAULT_PRECISION,
    digits: int | None = None,
    grad_sq_norms: Sequence[Sequence[Any]] | None = None,
    hyper_dtype: Any = None,
    master_dtype: Any = None,
) -> list[StepResult]:
    """Run ``len(grads)`` exact steps from ``params`` and ``state``, the oracle keeping its own
    exact state between steps (free-running); each step's state is rounded for reporting.

    ``params`` is one float array or a list of arrays (tensors); each element
    of ``grads`` is one gradient per tensor in the same form (dense arrays or
    :class:`adamspec.spec.SparseRows`). ``dtype`` is the rounding format of params
    (default: the params' dtype), ``state_dtype`` that of the state (default:
    ``dtype``). With ``digits``, each result also carries the exact values as
    decimal strings of that many significant digits. The whole trajectory is
    recomputed at doubled precision until every rounding is certain.

    ``grad_sq_norms`` (for ``clipnorm``/``global_clipnorm`` only; one sequence per
    step, one exact rational per tensor) gives the squared 2-norm of each tensor's
    whole gradient, used instead of the sum over the coordinates passed: it lets a
    caller step a subset of coordinates exactly as they move in the whole tensor
    (:mod:`adamspec.oracles.fast` falls back to this oracle coordinate by coordinate).

    ``hyper_dtype`` is the parameter dtype the held hyperparameters are rounded for
    (default ``master_dtype`` if given, else ``dtype``): rounding results to binary64 for a
    float32 kernel's trajectory keeps that kernel's float32 hyperparameters.

    ``master_dtype`` keeps master weights (:mod:`adamspec.spec.precision`): the update
    starts from ``state.master`` (an exact copy of ``params`` when not given), the result
    carries a ``master`` component rounded to ``master_dtype`` (the EMA too), and the param
    is that rounded master rounded to ``dtype`` (``spec/ADAM.md``, "Mixed precision").
    """
    if digits is not None and (isinstance(digits, bool) or not 1 <= int(digits) <= 1000):
        raise OracleInputError(f"digits={digits!r} must be an integer in [1, 1000]")
    arrays, single = as_tensors(params)
    roles = Roles.read(arrays, dtype, state_dtype, master_dtype, hyper_dtype)
    if roles.master is not None:
        return master_trajectory(
            trajectory, narrow_floats, variant, hyper, params, grads, state, roles,
            hyper_mode=hyper_mode, precision=precision, digits=digits,
            grad_sq_norms=grad_sq_norms,
        )  # fmt: skip
    theta_arrays(arrays, state, single, roles)  # no master copy without a master_dtype
    hp = resolve(hyper, variant, roles.hyper, hyper_mode)
    shapes = [a.shape for a in arrays]
    grads_per_step = [[g] if single else list(g) for g in grads]
    for t, gs in enumerate(grads_per_step, start=1):
        if len(gs) != len(arrays):
            raise OracleInputError(f"step {t} has {len(gs)} gradients for {len(arrays)} tensors")
    names = component_names(variant, hp)
    if grad_sq_norms is not None and len(grad_sq_norms) != len(grads_per_step):
        raise OracleInputError(
            f"grad_sq_norms has {len(grad_sq_norms)} entries for {len(grads_per_step)} steps"
        )
    norms_per_step = grad_sq_norms if grad_sq_norms is not None else [None] * len(grads_per_step)

    def compute() -> list[StepResult]:
        theta = [exact_list(a) for a in arrays]
        st = _initial_state(state, arrays, hp, single)
        results = []
        for gs, norms in zip(grads_per_step, norms_per_step, strict=True):
            theta, st = _step_exact(variant, hp, theta, gs, shapes, st, norms)
            results.append(_rounded(st, theta, names, shapes, roles, digits))
        return results

    start = precision if digits is None else max(precision, int(digits * 3.33) + 32)
    results, used = evaluate(compute, start)
    for r in results:
        r.precision = used
    return results


def step(
    variant: Variant,
    hyper: Hyper,
    params: Any,
    grads: Any,
    state: OracleState | None = None,
    **options: Any,
) -> StepResult:
    """One exact step from exactly these params and state (the lock-step primitive).

    Same arguments as :func:`trajectory` with a single gradient (or one per tensor).
    """
    return trajectory(variant, hyper, params, [grads], state, **options)[0]


def _rounded(
    st: ExactState,
    theta: list[list[Real]],
    names: tuple[str, ...],
    shapes: list[tuple[int, ...]],
    roles: Roles,
    digits: int | None,
) -> StepResult:
    exact: dict[str, list[Any]] = {}
    rounded: dict[str, list[Any]] = {}
    decimals: dict[str, list[list[str]]] = {}
    sources = {"param": theta, "m": st.m, "v": st.v, "v_max": st.v_max, "ema": st.ema}
    for name in names:
        target = roles.target(name)
        if name in SCALAR_COMPONENTS:
            values = [[st.beta1_power if name == "beta1_power" else st.beta2_power]]
            tensor_shapes: list[tuple[int, ...]] = [()]
        else:
            values, tensor_shapes = sources[name], shapes
        exact[name] = [
            np.array(vals, dtype=object).reshape(shape)
            for vals, shape in zip(values, tensor_shapes, strict=True)
        ]
        rounded[name] = [
            np.array([round_real(x, target) for x in vals], dtype=numpy_dtype(target)).reshape(
                shape
            )
            for vals, shape in zip(values, tensor_shapes, strict=True)
        ]
        if digits is not None:
            decimals[name] = [[decimal_string(x, digits) for x in vals] for vals in values]
    return StepResult(st.step, exact, rounded, decimals, 0, names)


# ---------------------------------------------------------------- master weights
#
# Both oracles compute a master-weight step the same way: the step without a master, from
# the master's values and rounded to the master's dtype, then the param as that rounded
# master rounded once more (each oracle brings its own correct narrowing: exact here,
# vectorized in the fast one).


def master_trajectory(
    run: Callable[..., list[StepResult]],
    narrow: Callable[[np.ndarray, FloatFormat], np.ndarray],
    variant: Variant,
    hyper: Hyper,
    params: Any,
    grads: Sequence[Any],
    state: OracleState | None,
    roles: Roles,
    **options: Any,
) -> list[StepResult]:
    """``run`` (a ``trajectory`` without masters) made a master-weight trajectory."""
    arrays, single = as_tensors(params)
    theta = theta_arrays(arrays, state, single, roles)
    inner = replace(state, master=None) if state is not None else None
    results = run(
        variant, hyper, theta[0] if single else theta, grads, inner,
        dtype=roles.master, state_dtype=roles.state, hyper_dtype=roles.hyper, **options,
    )  # fmt: skip
    return [_split_master(r, roles.param, narrow) for r in results]


def _split_master(
    r: StepResult, param: FloatFormat, narrow: Callable[[np.ndarray, FloatFormat], np.ndarray]
) -> StepResult:
    names = (*r.components[:4], "master", *r.components[4:])  # after param, m, v, v_max
    rounded = {
        **r.rounded,
        "master": r.rounded["param"],
        "param": [narrow(a, param) for a in r.rounded["param"]],
    }
    decimals = {**r.decimals, "master": r.decimals["param"]} if r.decimals else {}
    return StepResult(
        r.step, _MasterAlias(r.exact), {n: rounded[n] for n in names}, decimals, r.precision,
        names,
    )  # fmt: skip


class _MasterAlias(Mapping):
    """Exact values with ``master`` read as ``param`` (the same exact weights), without
    reading any of them (the fast oracle's exact values are computed on first read)."""

    def __init__(self, exact: Mapping[str, Any]) -> None:
        self._exact = exact

    def __getitem__(self, name: str) -> Any:
        return self._exact["param" if name == "master" else name]

    def __iter__(self) -> Iterator[str]:
        yield from self._exact
        yield "master"

    def __len__(self) -> int:
        return len(self._exact) + 1


__all__ = [
    "RADAM_RHO_THRESHOLD",
    "OracleInputError",
    "OracleState",
    "Roles",
    "StepResult",
    "as_tensors",
    "bias_correction",
    "component_names",
    "decoupled_decay",
    "ema_momentum",
    "exact_list",
    "lift",
    "master_trajectory",
    "radam_rectification_squared",
    "radam_rho",
    "radam_rho_inf",
    "radam_rho_t",
    "step",
    "target_format",
    "theta_arrays",
    "trajectory",
]
