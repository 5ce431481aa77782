"""The axes on which real Adam implementations differ.

Each axis is an enum whose members document the exact formula they select.
Notation (see ``spec/ADAM.md``): ``t`` is the step counted from 1, ``g`` the
gradient, ``m``/``v`` the first/second moments, ``c1``/``c2`` the bias
corrections of ``m``/``v`` (1 when that correction is off), ``m_hat = m / c1``
and ``s_hat`` the bias-corrected second moment that enters the denominator.

This module holds data and documentation only: no numerics.
"""

from __future__ import annotations

from enum import StrEnum


class _Axis(StrEnum):
    """Base for axes: the value is a stable string used in JSON and reports."""

    def __str__(self) -> str:
        return self.value

    @property
    def doc(self) -> str:
        return _DOCS[self]


class Family(_Axis):
    """Which update rule family the variant belongs to."""

    ADAM = "adam"
    RADAM = "radam"


class EpsPlacement(_Axis):
    """Where epsilon enters the denominator.

    All four are written as ``u = m_hat / (sqrt(s_hat + eps_root) + eps_eff)``
    with ``eps_root = 0`` except for ``EPS_ROOT``.
    """

    ALGORITHM_1 = "algorithm_1"
    EPS_HAT = "eps_hat"
    EPS_HAT_ADAPTIVE = "eps_hat_adaptive"
    EPS_ROOT = "eps_root"


class BiasCorrection(_Axis):
    """How the bias correction ``c = 1 - beta^t`` of one moment is formed."""

    NONE = "none"
    POWER = "power"
    ACCUMULATED = "accumulated"


class AmsGrad(_Axis):
    """Whether and where AMSGrad's running maximum is taken."""

    OFF = "off"
    MAX_RAW_V_THEN_CORRECT = "max_raw_v_then_correct"
    MAX_CORRECTED_V = "max_corrected_v"
    MAX_RAW_V_UNCORRECTED = "max_raw_v_uncorrected"


class WeightDecay(_Axis):
    """How weight decay ``lambda`` is coupled to the update."""

    NONE = "none"
    L2 = "l2"
    DECOUPLED_LR_BEFORE = "decoupled_lr_before"
    DECOUPLED_LR_AFTER = "decoupled_lr_after"
    DECOUPLED_BEFORE = "decoupled_before"
    DECOUPLED_AFTER = "decoupled_after"


class Nesterov(_Axis):
    """Nesterov momentum: which look-ahead numerator replaces ``m_hat``."""

    OFF = "off"
    TF_RAW = "tf_raw"
    NADAM = "nadam"


class SparseSemantics(_Axis):
    """What a row-sparse gradient does to rows it does not touch."""

    DENSE_EQUIVALENT = "dense_equivalent"
    LAZY = "lazy"


class DuplicateIndices(_Axis):
    """How repeated row indices in one sparse gradient are combined."""

    SUM_THEN_SQUARE = "sum_then_square"
    SQUARE_THEN_SUM = "square_then_sum"


class HyperPrecision(_Axis):
    """How the implementation holds its hyperparameters (lr, betas, eps, ...).

    The oracle's "as held" mode rounds each hyperparameter this way before
    the exact arithmetic; its "ideal" mode uses the decimal values as given.

    Besides the held betas, two derived constants enter the moments: the
    complements ``k_i`` that multiply ``g`` (``g^2``) and the decay factors
    ``d_i`` that multiply ``m`` (``v``). Under the first four members
    ``k_i = 1 - beta_i`` and ``d_i = beta_i`` exactly (held betas). The two
    ``*_via_float64`` members describe frameworks that receive Python/JS
    numbers (binary64) and form ``1 - beta`` in binary64 before it meets a
    tensor, so ``k_i`` is *not* ``1 - fl(beta_i)``; see their docs. Verified
    sources (Keras 3.15.1, tf-keras 2.21.0, optax 0.2.8 with jax 0.10.2 and
    x64 off, tfjs-core 4.22.0):

    * keras/src/optimizers/adam.py:107-112 ``ops.power(ops.cast(self.beta_1,
      dtype), local_step)`` (beta cast first, power in the dtype);
      :120 ``m += (g - m) * (1 - self.beta_1)`` and :125 likewise for v: the
      Python float ``1 - beta`` is cast when it meets the tensor, and m/v are
      updated in interpolation form, so the decay is ``1 - k_i``; :135
      ``+ self.epsilon`` (Python float, cast). AdamW (adamw.py) inherits it.
      The torch backend overrides it
      (keras/src/backend/torch/optimizers/torch_adam.py:35-40:
      ``_foreach_mul_(m, self.beta_1)`` then ``_foreach_add_(m, g,
      alpha=1 - self.beta_1)``: decay ``fl(beta)``, i.e. ``param_dtype_via_float64``).
    * tf_keras/src/optimizers/adam.py:172-173 (powers of the cast beta),
      :207-208 dense ``m.assign_add((gradient - m) * (1 - self.beta_1))``,
      :187-196 sparse ``-m * (1 - beta)`` plus ``scatter_add(g * (1 - beta))``:
      the same interpolation form.
    * optax/tree_utils/_tree_math.py:398/433 ``(1 - decay) * g**order + decay * t``
      (decay cast to the moment dtype when it meets ``t``: ``d_i = fl(beta_i)``);
      :449 ``1 - decay**count`` with ``count`` int32: jax computes the power in
      float32 (weak-typed Python float, x64 off), i.e. of ``fl32(beta)`` with
      float32 rounding, then casts: arithmetic, not a binary64 constant (and in
      bfloat16 a known deviation, see the optax.adam catalog note);
      optax/_src/transform.py:288 (nesterov) ``b1 * m + (1 - b1) * g`` likewise.
    * tfjs-core dist/optimizers/adam_optimizer.js:84-85
      ``add(mul(m, this.beta1), mul(g, 1 - this.beta1))`` (JS number 1 - beta,
      then a float32 scalar); :47-48/:93-94 ``accBeta = scalar(beta1)`` times
      ``this.beta1``: powers of ``fl32(beta)``; :90 ``this.epsilon`` and
      ``-this.learningRate`` become float32 scalars.

    ``lr * sqrt(1 - beta2^t) / (1 - beta1^t)`` and the other per-step scalars
    are float32 (param dtype) arithmetic in all of them: rounding, not
    representation, so no member models them. Not modelled either: in 16-bit
    dtypes several of these casts pass through float32 first (Keras's lr is a
    float32 variable; ml_dtypes converts binary64 to bfloat16 via float32), a
    double rounding that differs from ``fl_p(fl64(h))`` only next to a tie.
    """

    IDEAL = "ideal"
    FLOAT64 = "float64"
    PARAM_DTYPE = "param_dtype"
    FLOAT32 = "float32"
    PARAM_DTYPE_VIA_FLOAT64 = "param_dtype_via_float64"
    PARAM_DTYPE_VIA_FLOAT64_LERP = "param_dtype_via_float64_lerp"


_DOCS: dict[_Axis, str] = {
    Family.ADAM: "Adam (Kingma & Ba 2014) and its AMSGrad/AdamW relatives.",
    Family.RADAM: (
        "Rectified Adam (Liu et al. 2019) as in torch.optim.RAdam: rho_inf = 2/(1-beta2) - 1, "
        "rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t); when rho_t > 5 the update is "
        "lr * m_hat * r_t * sqrt(c2) / (sqrt(v) + eps) with "
        "r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t)), "
        "otherwise the un-adapted lr * m_hat."
    ),
    EpsPlacement.ALGORITHM_1: (
        "Algorithm 1 of the paper: eps is added to sqrt(v_hat); u = m_hat / (sqrt(s_hat) + eps)."
    ),
    EpsPlacement.EPS_HAT: (
        "The paper's faster form (end of Section 2): alpha_t = lr sqrt(c2)/c1 and "
        "u = sqrt(c2)/c1 * m / (sqrt(v) + eps_hat) with a constant eps_hat; "
        "equals Algorithm 1 with eps = eps_hat / sqrt(c2)."
    ),
    EpsPlacement.EPS_HAT_ADAPTIVE: (
        "eps-hat form with eps_hat = eps * sqrt(1 - beta2^t) (tf_keras adaptive_epsilon=True); "
        "exactly Algorithm 1 in real arithmetic, different in rounding."
    ),
    EpsPlacement.EPS_ROOT: (
        "optax: eps_root inside the square root and eps outside; "
        "u = m_hat / (sqrt(s_hat + eps_root) + eps)."
    ),
    BiasCorrection.NONE: "No bias correction: c = 1.",
    BiasCorrection.POWER: "c = 1 - beta^t computed from the step count t.",
    BiasCorrection.ACCUMULATED: (
        "c = 1 - P_t with P_t = P_{t-1} * beta held as optimizer state (TF1 beta1_power, "
        "TF.js accBeta1); P_0 = 1. Exact arithmetic gives beta^t; an implementation "
        "that rounds P each step accumulates error, which lock-step checks see."
    ),
    AmsGrad.OFF: "No AMSGrad: s_hat = v / c2.",
    AmsGrad.MAX_RAW_V_THEN_CORRECT: (
        "v_max = max(v_max, v) over raw v, then s_hat = v_max / c2 (PyTorch, TensorFlow, Keras)."
    ),
    AmsGrad.MAX_CORRECTED_V: (
        "v_max = max(v_max, v / c2) over the bias-corrected v_hat, s_hat = v_max "
        "(optax scale_by_amsgrad default, Reddi et al. applied to v_hat)."
    ),
    AmsGrad.MAX_RAW_V_UNCORRECTED: (
        "v_max = max(v_max, v) and s_hat = v_max with no v bias correction at all "
        "(optax bias_correction_nu=False); requires bias_correction_v = none."
    ),
    WeightDecay.NONE: "No weight decay.",
    WeightDecay.L2: (
        "Coupled L2: g <- g + lambda * theta before the moments "
        "(torch.optim.Adam weight_decay, ONNX norm_coefficient)."
    ),
    WeightDecay.DECOUPLED_LR_BEFORE: (
        "Decoupled, scaled by lr, on the pre-step weights: "
        "theta <- theta (1 - lr lambda) - lr u (torch AdamW, Keras weight_decay, optax adamw)."
    ),
    WeightDecay.DECOUPLED_LR_AFTER: (
        "Decoupled, scaled by lr, on the post-step weights: theta <- (theta - lr u)(1 - lr lambda)."
    ),
    WeightDecay.DECOUPLED_BEFORE: (
        "Decoupled, not scaled by lr, on the pre-step weights: "
        "theta <- theta (1 - lambda) - lr u (tfa AdamW's decay op)."
    ),
    WeightDecay.DECOUPLED_AFTER: (
        "Decoupled, not scaled by lr, on the post-step weights: "
        "theta <- (theta - lr u)(1 - lambda) (ONNX norm_coefficient_post)."
    ),
    Nesterov.OFF: "No Nesterov look-ahead.",
    Nesterov.TF_RAW: (
        "tf.raw_ops ApplyAdam use_nesterov: numerator beta1 m_t + (1 - beta1) g, "
        "divided by c1 = 1 - beta1^t."
    ),
    Nesterov.NADAM: (
        "optax scale_by_adam(nesterov=True) (Dozat's NAdam): "
        "m_hat = beta1 m_t / (1 - beta1^(t+1)) + (1 - beta1) g / (1 - beta1^t)."
    ),
    SparseSemantics.DENSE_EQUIVALENT: (
        "Untouched rows behave as if their gradient were zero: m and v decay on every "
        "row and every row's parameter moves (TensorFlow, Keras)."
    ),
    SparseSemantics.LAZY: (
        "Only rows present in the gradient update m, v and the parameter; other rows are "
        "left untouched; the step count is global (torch SparseAdam, tfa LazyAdam)."
    ),
    DuplicateIndices.SUM_THEN_SQUARE: (
        "Duplicate indices are summed first (coalesce); v uses (sum g)^2."
    ),
    DuplicateIndices.SQUARE_THEN_SUM: (
        "Each duplicate contributes its own square: v uses sum(g^2), m uses sum(g)."
    ),
    HyperPrecision.IDEAL: "Hyperparameters are the exact decimals given (the paper).",
    HyperPrecision.FLOAT64: "Hyperparameters are Python floats (binary64), e.g. torch.",
    HyperPrecision.PARAM_DTYPE: (
        "Hyperparameters are cast to the parameter dtype and 1 - beta is formed in that "
        "dtype (TensorFlow kernels, tf.compat.v1, tf_keras legacy): k_i = 1 - fl_p(beta_i) "
        "exactly; in bfloat16 0.999 becomes 1.0."
    ),
    HyperPrecision.FLOAT32: "Hyperparameters are float32 scalars whatever the params (ONNX).",
    HyperPrecision.PARAM_DTYPE_VIA_FLOAT64: (
        "Hyperparameters are Python/JS floats: every h (lr, beta_i, eps, eps_root, "
        "weight_decay, clip thresholds, ema_momentum) is held as fl_p(fl64(h)), the binary64 "
        "float rounded to the param dtype p. The complements are formed in binary64 first: "
        "k_i = fl_p(fl64(1 - fl64(beta_i))), NOT 1 - fl_p(beta_i) (1 - 0.999 = "
        "0.0010000000000000009 in binary64; fl32 of it is 1.3e-5 relatively away from "
        "1 - fl32(0.999)). beta_i itself is fl_p(fl64(beta_i)), both as the decay of the "
        "moment (m' = beta_1 m + k_1 g, v' = beta_2 v + k_2 g^2) and in beta_i^t "
        "(optax, TF.js, Keras 3's torch backend)."
    ),
    HyperPrecision.PARAM_DTYPE_VIA_FLOAT64_LERP: (
        "As param_dtype_via_float64, but the moments are updated in interpolation form "
        "m' = m + k_1 (g - m), v' = v + k_2 (g^2 - v), whose exact value is "
        "(1 - k_1) m + k_1 g: the decay factor is 1 - k_i, not fl_p(beta_i) (they differ: "
        "1 - fl32(1 - 0.9) = 0.8999999985 vs fl32(0.9) = 0.8999999762). beta_i = "
        "fl_p(fl64(beta_i)) appears only in the bias corrections beta_i^t "
        "(Keras 3 on tensorflow/jax, tf_keras)."
    ),
}

ALL_AXES: tuple[type[_Axis], ...] = (
    Family,
    EpsPlacement,
    BiasCorrection,
    AmsGrad,
    WeightDecay,
    Nesterov,
    SparseSemantics,
    DuplicateIndices,
    HyperPrecision,
)
