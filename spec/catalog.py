"""The catalog of named, documented Adam variants.

Each entry pins a :class:`~adamspec.spec.variant.Variant` to the document or source
that defines it, quotes the sentence it encodes, and carries the documented
defaults. Names follow ``<source>.<Optimizer>[<options>]``.

An entry records what the *documentation or source says*; where a framework's
code is known to differ from its docs, ``notes`` says so and the harness
measures it. The catalog is data: no numerics here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from adamspec.spec.axes import (
    AmsGrad,
    BiasCorrection,
    DuplicateIndices,
    EpsPlacement,
    Family,
    HyperPrecision,
    Nesterov,
    SparseSemantics,
    WeightDecay,
)
from adamspec.spec.hyper import Hyper, make_hyper
from adamspec.spec.variant import Variant, VariantError


@dataclass(frozen=True)
class Citation:
    """Where a variant is defined: a human-readable reference and a link."""

    reference: str
    url: str
    quote: str

    def __str__(self) -> str:
        return f"{self.reference} <{self.url}>"


@dataclass(frozen=True)
class CatalogEntry:
    """A named variant with its documented defaults and citation.

    ``defaults`` are exact decimal strings (``"1e-7"``), so the ideal value
    of a default is the decimal the docs print, not a binary neighbour.
    ``options`` are the framework's own constructor arguments that select
    this variant (used by adapters), and ``notes`` record known deviations
    of code from docs with links.
    """

    name: str
    variant: Variant
    defaults: Mapping[str, Any]
    citation: Citation
    options: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def family(self) -> str:
        return self.variant.family.value

    @property
    def source(self) -> str:
        return self.name.split(".", 1)[0]

    def hyper(self, **overrides: Any) -> Hyper:
        """The documented defaults with ``overrides`` applied (validated)."""
        return make_hyper(**{**self.defaults, **overrides})

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "source": str(self.citation),
            "quote": self.citation.quote,
            "axes": self.variant.axes(),
            "defaults": dict(self.defaults),
            "options": dict(self.options),
            "notes": self.notes,
        }


_TORCH_DOC = "https://docs.pytorch.org/docs/stable/generated/torch.optim.{}.html"
_KERAS3_SRC = "https://github.com/keras-team/keras/blob/master/keras/src/optimizers/{}.py"
_TFK_SRC = "https://github.com/keras-team/tf-keras/blob/master/tf_keras/optimizers/{}.py"
_TF_TRAINING_OPS = (
    "https://github.com/tensorflow/tensorflow/blob/master/tensorflow/core/kernels/training_ops.cc"
)
_OPTAX_SRC = "https://github.com/google-deepmind/optax/blob/main/optax/_src/{}.py"
_PADDLE_SRC = "https://github.com/PaddlePaddle/Paddle/blob/develop/paddle/phi/kernels/{}"
_PADDLE_PY = "https://github.com/PaddlePaddle/Paddle/blob/develop/python/paddle/optimizer/{}.py"
_MLX_SRC = "https://github.com/ml-explore/mlx/blob/main/python/mlx/optimizers/optimizers.py"

_PAPER_DEFAULTS = {"lr": "0.001", "beta1": "0.9", "beta2": "0.999", "eps": "1e-8"}
_KERAS_DEFAULTS = {"lr": "0.001", "beta1": "0.9", "beta2": "0.999", "eps": "1e-7"}

PAPER = Variant(hyper_precision=HyperPrecision.IDEAL)
EPS_HAT_PARAM_DTYPE = Variant(
    eps_placement=EpsPlacement.EPS_HAT, hyper_precision=HyperPrecision.PARAM_DTYPE
)
TORCH = Variant(weight_decay=WeightDecay.L2, hyper_precision=HyperPrecision.FLOAT64)
# Keras 3 and tf_keras: Python-float betas, ``m += (g - m) * (1 - beta_1)`` (interpolation
# form, 1 - beta formed in binary64), powers of the beta cast to the variable dtype.
KERAS = EPS_HAT_PARAM_DTYPE.replace(
    weight_decay=WeightDecay.DECOUPLED_LR_BEFORE,
    duplicates=DuplicateIndices.SQUARE_THEN_SUM,
    hyper_precision=HyperPrecision.PARAM_DTYPE_VIA_FLOAT64_LERP,
)
TF_KERAS = EPS_HAT_PARAM_DTYPE.replace(
    weight_decay=WeightDecay.DECOUPLED_LR_BEFORE,
    hyper_precision=HyperPrecision.PARAM_DTYPE_VIA_FLOAT64_LERP,
)
# optax: ``(1 - decay) * g**order + decay * t`` with Python-float decay.
OPTAX = Variant(
    eps_placement=EpsPlacement.EPS_ROOT, hyper_precision=HyperPrecision.PARAM_DTYPE_VIA_FLOAT64
)

# MLX: ``b1 * m + (1 - b1) * gradient`` with Python-float betas (cast, and a binary64
# complement), and by default no bias correction at all.
MLX = Variant(
    bias_correction_m=BiasCorrection.NONE,
    bias_correction_v=BiasCorrection.NONE,
    hyper_precision=HyperPrecision.PARAM_DTYPE_VIA_FLOAT64,
)
_MLX_DEFAULTS = {"lr": "0.001", "beta1": "0.9", "beta2": "0.999", "eps": "1e-8"}
_MLX_NOTES = (
    "learning_rate has no default in MLX (the catalog uses the Adam paper's 0.001); it is "
    "held as a float32 array and cast to the gradient's dtype. m = b1 * m + (1 - b1) * "
    "gradient with Python-float betas: b1 is cast to the dtype, 1 - b1 is formed in "
    "binary64 first. MLX 0.32 has no AMSGrad."
)

# PaddlePaddle's CPU kernels: betas and epsilon cast to the parameter dtype (1 - beta in
# that dtype), powers accumulated in the parameter dtype, float weight_decay as L2.
PADDLE = Variant(
    bias_correction_m=BiasCorrection.ACCUMULATED,
    bias_correction_v=BiasCorrection.ACCUMULATED,
    weight_decay=WeightDecay.L2,
    hyper_precision=HyperPrecision.PARAM_DTYPE,
)

_PADDLE_NOTES = (
    "beta1_pow_acc/beta2_pow_acc start at beta and are multiplied by beta (in the "
    "parameter dtype) after every step. The AVX-512 JIT kernel (phi/kernels/funcs/jit/gen) "
    "fuses beta1 * m + (1 - beta1) g and p - lr_t * u into FMAs, so float32 results "
    "depend on the CPU. A float weight_decay is L2 regularisation (g + coeff * p) added "
    "before the kernel. CPU kernels exist for float32 and float64 only."
)

_ENTRIES: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="paper.algorithm1",
        variant=PAPER,
        defaults=_PAPER_DEFAULTS,
        citation=Citation(
            "Kingma & Ba, Adam: A Method for Stochastic Optimization, ICLR 2015, Algorithm 1",
            "https://arxiv.org/abs/1412.6980",
            "θt ← θt−1 − α · m̂t/(√v̂t + ε) (Update parameters)",
        ),
        notes="Defaults from the paper: 'Good default settings for the tested machine "
        "learning problems are α = 0.001, β1 = 0.9, β2 = 0.999 and ε = 10−8.'",
    ),
    CatalogEntry(
        name="paper.eps_hat",
        variant=PAPER.replace(eps_placement=EpsPlacement.EPS_HAT),
        defaults=_PAPER_DEFAULTS,
        citation=Citation(
            "Kingma & Ba, Adam, ICLR 2015, end of Section 2 (just before Section 2.1)",
            "https://arxiv.org/abs/1412.6980",
            "the efficiency of algorithm 1 can, at the expense of clarity, be improved upon by "
            "changing the order of computation, e.g. by replacing the last three lines in the "
            "loop with the following lines: αt = α · √(1 − β2^t)/(1 − β1^t) and "
            "θt ← θt−1 − αt · mt/(√vt + ε̂).",
        ),
        notes="Equals paper.algorithm1 exactly when eps_hat = eps * sqrt(1 - beta2^t); the "
        "paper never states that relation (keras-team/keras#17391).",
    ),
    CatalogEntry(
        name="reddi.amsgrad",
        variant=PAPER.replace(
            amsgrad=AmsGrad.MAX_RAW_V_UNCORRECTED,
            bias_correction_m=BiasCorrection.NONE,
            bias_correction_v=BiasCorrection.NONE,
        ),
        defaults={"lr": "0.001", "beta1": "0.9", "beta2": "0.999", "eps": "0"},
        citation=Citation(
            "Reddi, Kale & Kumar, On the Convergence of Adam and Beyond, ICLR 2018, Algorithm 2",
            "https://openreview.net/forum?id=ryQu7f-RZ",
            "v̂t = max(v̂t−1, vt) and V̂t = diag(v̂t); xt+1 = ΠF,√V̂t(xt − αt mt/√v̂t)",
        ),
        notes="Algorithm 2 has no bias correction and no epsilon; its beta1_t schedule and "
        "alpha_t = alpha/sqrt(t) are taken constant here (use an lr schedule for alpha_t). "
        "No documented defaults: the catalog uses the Adam paper's.",
    ),
    CatalogEntry(
        name="torch.Adam",
        variant=TORCH,
        defaults={**_PAPER_DEFAULTS, "weight_decay": "0"},
        citation=Citation(
            "PyTorch torch.optim.Adam documentation",
            _TORCH_DOC.format("Adam"),
            r"\theta_t \leftarrow \theta_{t-1} - \gamma \widehat{m_t}/"
            r"\big(\sqrt{\widehat{v_t}} + \epsilon \big)",
        ),
        options={"foreach": False},
        notes="weight_decay is coupled L2 (g + lambda theta); the step counter is a float32 "
        "tensor; fused/foreach paths round differently (pytorch/pytorch#153649).",
    ),
    CatalogEntry(
        name="torch.Adam[amsgrad]",
        variant=TORCH.replace(amsgrad=AmsGrad.MAX_RAW_V_THEN_CORRECT),
        defaults={**_PAPER_DEFAULTS, "weight_decay": "0"},
        citation=Citation(
            "PyTorch torch.optim.Adam documentation (amsgrad=True)",
            _TORCH_DOC.format("Adam"),
            r"v_t^{max} \leftarrow \mathrm{max}(v_{t-1}^{max},v_t); "
            r"\widehat{v_t} \leftarrow v_t^{max}/\big(1-\beta_2^t \big)",
        ),
        options={"amsgrad": True, "foreach": False},
        notes="Docs said max over v_hat until Dec 2024; the code always took max over raw v "
        "(pytorch/pytorch#142041, #142323, PR #142351 corrected the docs).",
    ),
    CatalogEntry(
        name="torch.Adam[maximize]",
        variant=TORCH.replace(maximize=True),
        defaults={**_PAPER_DEFAULTS, "weight_decay": "0"},
        citation=Citation(
            "PyTorch torch.optim.Adam documentation (maximize=True)",
            _TORCH_DOC.format("Adam"),
            "maximize (bool, optional): maximize the objective with respect to the params, "
            "instead of minimizing (default: False)",
        ),
        options={"maximize": True, "foreach": False},
        notes="The gradient is negated first, then L2 weight decay is added.",
    ),
    CatalogEntry(
        name="torch.AdamW",
        variant=TORCH.replace(weight_decay=WeightDecay.DECOUPLED_LR_BEFORE),
        defaults={**_PAPER_DEFAULTS, "weight_decay": "0.01"},
        citation=Citation(
            "PyTorch torch.optim.AdamW documentation",
            _TORCH_DOC.format("AdamW"),
            r"\theta_t \leftarrow \theta_{t-1} - \gamma \lambda \theta_{t-1}",
        ),
        options={"foreach": False},
        notes="Decay multiplies by lr (theta <- theta (1 - lr lambda)), unlike Loshchilov & "
        "Hutter's schedule multiplier alone.",
    ),
    CatalogEntry(
        name="torch.SparseAdam",
        variant=TORCH.replace(
            eps_placement=EpsPlacement.EPS_HAT,
            weight_decay=WeightDecay.NONE,
            sparse=SparseSemantics.LAZY,
            duplicates=DuplicateIndices.SUM_THEN_SQUARE,
        ),
        defaults=_PAPER_DEFAULTS,
        citation=Citation(
            "PyTorch torch.optim.SparseAdam documentation",
            _TORCH_DOC.format("SparseAdam"),
            "Whereas the Adam algorithm will update the first moment, the second moment, and the "
            "parameters based on all values of the gradients, SparseAdam only updates the moments "
            "and parameters corresponding to the non-zero values of the gradients.",
        ),
        notes="Source (torch/optim/_functional.py sparse_adam) uses the eps-hat form: "
        "step_size = lr * sqrt(bc2) / bc1, denom = sqrt(v) + eps; gradients are coalesced "
        "(duplicates summed) first.",
    ),
    CatalogEntry(
        name="torch.RAdam",
        variant=TORCH.replace(family=Family.RADAM, eps_placement=EpsPlacement.EPS_HAT),
        defaults={**_PAPER_DEFAULTS, "weight_decay": "0"},
        citation=Citation(
            "PyTorch torch.optim.RAdam documentation",
            _TORCH_DOC.format("RAdam"),
            r"\textbf{if} \: \rho_t > 5; "
            r"l_t \leftarrow \frac{\sqrt{ (1-\beta^t_2) }}{ \sqrt{v_t} +\epsilon  }",
        ),
        notes="Rectification switches on at the first step with rho_t > 5 (t = 6 for "
        "beta2 = 0.999); eps is added to sqrt(v) before the sqrt(c2) factor (eps-hat form).",
    ),
    CatalogEntry(
        name="keras.Adam",
        variant=KERAS,
        defaults=_KERAS_DEFAULTS,
        citation=Citation(
            "Keras 3 keras.optimizers.Adam docstring",
            _KERAS3_SRC.format("adam"),
            'This epsilon is "epsilon hat" in the Kingma and Ba paper (in the formula just '
            "before Section 2.1), not the epsilon in Algorithm 1 of the paper.",
        ),
        notes="Hyperparameters and the step are cast to the variable dtype: in bfloat16, "
        "beta2 = 0.999 becomes 1.0 and every update is zero (keras-team/keras-hub#2629). "
        "update_step (adam.py) forms 1 - self.beta_1 from the Python float (binary64) and "
        "casts it when it meets the tensor, in m += (g - m) * (1 - beta_1): interpolation "
        "form, so the decay is 1 - fl(1 - beta), while beta^t uses ops.cast(beta, dtype). "
        "The torch backend's own torch_adam.py multiplies m by beta_1 instead "
        "(param_dtype_via_float64). The learning rate is a floatx (float32) variable, so "
        "in float16/bfloat16/float64 it is fl(fl32(lr)). "
        "Sparse gradients are densified, so duplicates contribute sum(g^2) to v (inferred "
        "from source, untested upstream).",
    ),
    CatalogEntry(
        name="keras.Adam[amsgrad]",
        variant=KERAS.replace(amsgrad=AmsGrad.MAX_RAW_V_THEN_CORRECT),
        defaults=_KERAS_DEFAULTS,
        citation=Citation(
            "Keras 3 keras.optimizers.Adam docstring (amsgrad=True)",
            _KERAS3_SRC.format("adam"),
            "amsgrad: Boolean. Whether to apply AMSGrad variant of this algorithm from the "
            'paper "On the Convergence of Adam and beyond". Defaults to `False`.',
        ),
        options={"amsgrad": True},
        notes="v_hat = max(v_hat, v) over raw v; the bias correction is folded into alpha. "
        "Hyperparameters as keras.Adam (binary64 1 - beta, interpolation form).",
    ),
    CatalogEntry(
        name="keras.AdamW",
        variant=KERAS,
        defaults={**_KERAS_DEFAULTS, "weight_decay": "0.004"},
        citation=Citation(
            "Keras 3 keras.optimizers.AdamW docstring",
            _KERAS3_SRC.format("adamw"),
            "AdamW optimization is a stochastic gradient descent method that is based on "
            "adaptive estimation of first-order and second-order moments with an added method "
            "to decay weights per the techniques discussed in the paper, 'Decoupled Weight "
            "Decay Regularization' by [Loshchilov, Hutter et al., 2019]"
            "(https://arxiv.org/abs/1711.05101).",
        ),
        notes="Decay var <- var - var * wd * lr is applied before the Adam step; the Adam "
        "step is keras.Adam's update_step (binary64 1 - beta, interpolation form).",
    ),
    CatalogEntry(
        name="tf_keras.Adam",
        variant=TF_KERAS,
        defaults=_KERAS_DEFAULTS,
        citation=Citation(
            "tf_keras.optimizers.Adam docstring (tf-keras 2.21)",
            _TFK_SRC.format("adam"),
            'This epsilon is "epsilon hat" in the Kingma and Ba paper (in the formula just before '
            "Section 2.1) if `adaptive_epsilon` is `False`, not the epsilon in Algorithm 1 of the "
            "paper.",
        ),
        notes="Sparse IndexedSlices are deduplicated (summed) before the dense-equivalent "
        "sparse update. update_step forms 1 - self.beta_1 from the Python float (binary64) "
        "and updates m += (g - m) * (1 - beta_1) (dense) or m - m (1 - beta_1) plus "
        "scatter_add(g (1 - beta_1)) (sparse): interpolation form; beta^t uses "
        "tf.cast(beta, dtype). The constant lr is a floatx (float32) variable, so in float64 "
        "it is fl32(lr).",
    ),
    CatalogEntry(
        name="tf_keras.Adam[adaptive_epsilon]",
        variant=TF_KERAS.replace(eps_placement=EpsPlacement.EPS_HAT_ADAPTIVE),
        defaults=_KERAS_DEFAULTS,
        citation=Citation(
            "tf_keras.optimizers.Adam docstring (tf-keras 2.21)",
            _TFK_SRC.format("adam"),
            "adaptive_epsilon: If `True` the epsilon hat is computed adaptively from the given "
            "epsilon (Algorithm 1 on the paper). If `False`, the epsilon given will be "
            '"epsilon hat". Default to `False`.',
        ),
        options={"adaptive_epsilon": True},
        notes="adaptive_epsilon is not serialized by get_config (tf-keras 2.16-2.21). "
        "Hyperparameters as tf_keras.Adam (binary64 1 - beta, interpolation form).",
    ),
    CatalogEntry(
        name="tf.v1.AdamOptimizer",
        variant=EPS_HAT_PARAM_DTYPE.replace(
            bias_correction_m=BiasCorrection.ACCUMULATED,
            bias_correction_v=BiasCorrection.ACCUMULATED,
        ),
        defaults=_PAPER_DEFAULTS,
        citation=Citation(
            "tf.compat.v1.train.AdamOptimizer docstring",
            "https://github.com/tensorflow/tensorflow/blob/master/tensorflow/python/training/adam.py",
            "Note that since AdamOptimizer uses the formulation just before Section 2.1 of the "
            'Kingma and Ba paper rather than the formulation in Algorithm 1, the "epsilon" '
            'referred to here is "epsilon hat" in the paper.',
        ),
        notes="beta1_power/beta2_power are float variables multiplied by beta after every "
        "step; the sparse path decays every row (dense-equivalent).",
    ),
    CatalogEntry(
        name="tf.raw.ApplyAdam",
        variant=EPS_HAT_PARAM_DTYPE,
        defaults=_KERAS_DEFAULTS,
        citation=Citation(
            "tf.raw_ops.ApplyAdam / ResourceApplyAdam op documentation (TF 2.21)",
            "https://www.tensorflow.org/api_docs/python/tf/raw_ops/ApplyAdam",
            r"$$\text{lr}_t := \mathrm{lr} \cdot \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}$$; "
            r"\text{var} - m_t \cdot \text{lr}_t /(\sqrt{v_t} + \epsilon), &\text{otherwise}",
        ),
        notes="beta1_power and beta2_power are inputs supplied by the caller; all arithmetic "
        "is in the variable dtype T. The op has no default hyperparameters: the catalog uses "
        "tf_keras's.",
    ),
    CatalogEntry(
        name="tf.raw.ApplyAdam[use_nesterov]",
        variant=EPS_HAT_PARAM_DTYPE.replace(nesterov=Nesterov.TF_RAW),
        defaults=_KERAS_DEFAULTS,
        citation=Citation(
            "tensorflow/core/kernels/training_ops.cc ApplyAdamNonCuda (use_nesterov)",
            _TF_TRAINING_OPS,
            "var -= ((g * (T(1) - beta1()) + beta1() * m) * alpha) / (v.sqrt() + epsilon());",
        ),
        options={"use_nesterov": True},
    ),
    CatalogEntry(
        name="tf.raw.ApplyAdamWithAmsgrad",
        variant=EPS_HAT_PARAM_DTYPE.replace(amsgrad=AmsGrad.MAX_RAW_V_THEN_CORRECT),
        defaults=_KERAS_DEFAULTS,
        citation=Citation(
            "tf.raw_ops.ResourceApplyAdamWithAmsgrad op documentation (TF 2.21)",
            "https://www.tensorflow.org/api_docs/python/tf/raw_ops/ResourceApplyAdamWithAmsgrad",
            r"$$\hat{v}_t := max{\hat{v}_{t-1}, v_t}$$; "
            r"$$\text{variable} := \text{variable} - \text{lr}_t * m_t / "
            r"(\sqrt{\hat{v}_t} + \epsilon)$$",
        ),
        notes="No use_nesterov attribute on the AMSGrad op; tf.raw_ops exposes only the "
        "resource form ResourceApplyAdamWithAmsgrad (no ref-variable ApplyAdamWithAmsgrad).",
    ),
    CatalogEntry(
        name="optax.adam",
        variant=OPTAX,
        defaults={**_PAPER_DEFAULTS, "eps_root": "0"},
        citation=Citation(
            "optax.adam docstring",
            _OPTAX_SRC.format("alias"),
            "PyTorch and optax's implementation follow Algorithm 1 of [Kingma et al. 2014]. "
            "Note that TensorFlow used instead the formulation just before Section 2.1 of the "
            "paper.",
        ),
        notes="The step count is int32 and saturates; bias corrections are computed in "
        "float32 and then cast to the moment dtype. tree_update_moment computes "
        "(1 - decay) * g**order + decay * t with the Python float decay: 1 - decay is "
        "binary64, cast when it meets the tensor, decay itself is cast (decay * t); "
        "1 - decay**count is a float32 power of fl32(decay) (jax, x64 off).",
    ),
    CatalogEntry(
        name="optax.adam[nesterov]",
        variant=OPTAX.replace(nesterov=Nesterov.NADAM),
        defaults={**_PAPER_DEFAULTS, "eps_root": "0"},
        citation=Citation(
            "optax.scale_by_adam source (nesterov=True)",
            _OPTAX_SRC.format("transform"),
            "mu_hat = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, "
            "optax.tree.bias_correction(mu, b1, numerics.safe_increment(count_inc)), "
            "optax.tree.bias_correction(updates, b1, count_inc),)",
        ),
        options={"nesterov": True},
        notes="The NAdam numerator b1 * m + (1 - b1) * g has the same binary64 1 - b1 as the "
        "moments (hyperparameters as optax.adam).",
    ),
    CatalogEntry(
        name="optax.adamw",
        variant=OPTAX.replace(weight_decay=WeightDecay.DECOUPLED_LR_BEFORE),
        defaults={**_PAPER_DEFAULTS, "eps_root": "0", "weight_decay": "0.0001"},
        citation=Citation(
            "optax.adamw docstring",
            _OPTAX_SRC.format("alias"),
            "AdamW uses weight decay to regularize learning towards small weights, as this "
            "leads to better generalization.",
        ),
        notes="chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate): the decay "
        "is multiplied by lr (optax notes this differs from Loshchilov & Hutter). "
        "Hyperparameters as optax.adam (binary64 1 - beta).",
    ),
    CatalogEntry(
        name="optax.amsgrad",
        variant=OPTAX.replace(amsgrad=AmsGrad.MAX_CORRECTED_V),
        defaults={**_PAPER_DEFAULTS, "eps_root": "0"},
        citation=Citation(
            "optax.scale_by_amsgrad source",
            _OPTAX_SRC.format("transform"),
            "nu_eff = optax.tree.bias_correction(nu, b2, count_inc); "
            "nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu_eff)",
        ),
        notes="The maximum is over the bias-corrected nu_hat (google-deepmind/optax#1389), "
        "unlike PyTorch and TensorFlow. The moments come from tree_update_moment as in "
        "optax.adam (binary64 1 - beta).",
    ),
    CatalogEntry(
        name="optax.amsgrad[bias_correction_nu=False]",
        variant=OPTAX.replace(
            amsgrad=AmsGrad.MAX_RAW_V_UNCORRECTED, bias_correction_v=BiasCorrection.NONE
        ),
        defaults={**_PAPER_DEFAULTS, "eps_root": "0"},
        citation=Citation(
            "optax.scale_by_amsgrad source, bias_correction_nu=False (optax >= 0.2.7)",
            _OPTAX_SRC.format("transform"),
            "bias_correction_nu: Whether to apply bias correction to the second moment estimate "
            "before taking the elementwise maximum (``nu_max``). Set to ``False`` to match the "
            "original AMSGrad paper.",
        ),
        options={"bias_correction_nu": False},
        notes="Added in google-deepmind/optax PR #1423; max over raw nu and no division "
        "by 1 - b2^t. Moments as optax.adam (binary64 1 - beta).",
    ),
    CatalogEntry(
        name="mlx.Adam",
        variant=MLX,
        defaults=_MLX_DEFAULTS,
        citation=Citation(
            "mlx.optimizers.Adam source and docstring (mlx 0.32)",
            _MLX_SRC,
            "bias_correction (bool, optional): If set to ``True``, bias correction "
            "is applied. Default: ``False``; "
            "return parameter - lr * m / (mx.sqrt(v) + eps)",
        ),
        notes="No bias correction by default: from 10.0 with lr 0.2 and gradient 10.0 one "
        "step gives 9.36754 (m = 1, v = 0.1), where bias-corrected Adam gives 9.8. " + _MLX_NOTES,
    ),
    CatalogEntry(
        name="mlx.Adam[bias_correction]",
        variant=MLX.replace(
            bias_correction_m=BiasCorrection.POWER, bias_correction_v=BiasCorrection.POWER
        ),
        defaults=_MLX_DEFAULTS,
        citation=Citation(
            "mlx.optimizers.Adam source (bias_correction=True, mlx 0.32)",
            _MLX_SRC,
            "c1 = (lr / (1 - b1**step)).astype(gradient.dtype); "
            "c2 = mx.rsqrt(1 - b2**step).astype(gradient.dtype); "
            "denominator = mx.sqrt(v) * c2 + eps",
        ),
        options={"bias_correction": True},
        notes="sqrt(v) * rsqrt(1 - b2^t) + eps is Algorithm 1's denominator; b1**step is a "
        "float32 power of the uint64 step. " + _MLX_NOTES,
    ),
    CatalogEntry(
        name="mlx.AdamW",
        variant=MLX.replace(weight_decay=WeightDecay.DECOUPLED_LR_BEFORE),
        defaults={**_MLX_DEFAULTS, "weight_decay": "0.01"},
        citation=Citation(
            "mlx.optimizers.AdamW source (mlx 0.32)",
            _MLX_SRC,
            "return super().apply_single( gradient, parameter * (1 - lr * self.weight_decay), "
            "state )",
        ),
        notes="The decay factor 1 - lr * weight_decay is float32 arithmetic on the held lr, "
        "then the Adam step of mlx.Adam (no bias correction by default). " + _MLX_NOTES,
    ),
    CatalogEntry(
        name="paddle.Adam",
        variant=PADDLE,
        defaults={**_PAPER_DEFAULTS, "weight_decay": "0"},
        citation=Citation(
            "PaddlePaddle CPU adam kernel (paddle/phi/kernels/cpu/adam_kernel.cc, Paddle 3.3)",
            _PADDLE_SRC.format("cpu/adam_kernel.cc"),
            "T eps = epsilon_ * sqrt(1 - beta2_p);",
        ),
        notes="The docstring shows the eps-hat form (learning_rate scaled by "
        "sqrt(1 - beta2^t) / (1 - beta1^t), then moment_1 / (sqrt(moment_2) + epsilon)); "
        "the kernel multiplies epsilon by sqrt(1 - beta2_pow), which is Algorithm 1 "
        "(measured on the disc-eps problem: algorithm_1 within 1 ULP, eps_hat 2086 ULP). "
        + _PADDLE_NOTES,
    ),
    CatalogEntry(
        name="paddle.Adam[amsgrad]",
        variant=PADDLE.replace(amsgrad=AmsGrad.MAX_RAW_V_THEN_CORRECT),
        defaults={**_PAPER_DEFAULTS, "weight_decay": "0"},
        citation=Citation(
            "paddle.optimizer.Adam docstring (amsgrad=True, Paddle 3.3)",
            _PADDLE_PY.format("adam"),
            r"moment\_2\_max\_out = max(moment\_2\_out, moment\_2\_max)",
        ),
        options={"amsgrad": True},
        notes="The maximum is over raw moment_2; the kernel's epsilon is Algorithm 1's, as "
        "for paddle.Adam. " + _PADDLE_NOTES,
    ),
    CatalogEntry(
        name="paddle.Adam[lazy_mode]",
        variant=PADDLE.replace(sparse=SparseSemantics.LAZY),
        defaults={**_PAPER_DEFAULTS, "weight_decay": "0"},
        citation=Citation(
            "paddle.optimizer.Adam docstring (lazy_mode=True, Paddle 3.3)",
            _PADDLE_PY.format("adam"),
            "The lazy mode only update the element that has gradient in current mini-batch, "
            "so it will be much more faster.",
        ),
        options={"lazy_mode": True},
        notes="Applies to SelectedRows gradients (embedding(..., sparse=True)); duplicate "
        "rows are summed first (MergeAdd). Measured: the CPU SelectedRows kernel "
        "(selected_rows/cpu/adam_kernel.cc) bias-corrects with beta^(t+1), lazy or not: it "
        "advances beta1_pow_out before the update loop reads beta1_pow, and adam_ runs in "
        "place, so both are one buffer (PaddlePaddle/Paddle#53052, closed). " + _PADDLE_NOTES,
    ),
    CatalogEntry(
        name="paddle.AdamW",
        variant=PADDLE.replace(weight_decay=WeightDecay.DECOUPLED_LR_BEFORE),
        defaults={**_PAPER_DEFAULTS, "weight_decay": "0.01"},
        citation=Citation(
            "PaddlePaddle CPU adamw kernel (paddle/phi/kernels/cpu/adamw_kernel.cc, Paddle 3.3)",
            _PADDLE_SRC.format("cpu/adamw_kernel.cc"),
            "T old_lr = static_cast<T>(learning_rate.data<double>()[0]);",
        ),
        notes="The parameter is first decayed by the uncorrected lr: p - lr * lr_ratio * "
        "coeff * p (one fused multiply-add in the AVX-512 JIT kernel); the docstring writes "
        "the decay inside the bias-corrected learning_rate's product. The coefficient is "
        "held as float32 even for float64 parameters (measured: 2024 ULP after one float64 "
        "step, 1 ULP once weight_decay is given as its float32 value). A SelectedRows "
        "gradient (a sparse embedding's) crashes Paddle 3.3.1's AdamW on the CPU ('Invalid "
        "dimension to be accessed', a garbage dimension). " + _PADDLE_NOTES,
    ),
    CatalogEntry(
        name="tfjs.adam",
        variant=PAPER.replace(
            bias_correction_m=BiasCorrection.ACCUMULATED,
            bias_correction_v=BiasCorrection.ACCUMULATED,
            hyper_precision=HyperPrecision.PARAM_DTYPE_VIA_FLOAT64,
        ),
        defaults={"lr": "0.001", "beta1": "0.9", "beta2": "0.999", "eps": "1e-7"},
        citation=Citation(
            "TensorFlow.js tf.train.adam (tfjs-core adam_optimizer.ts)",
            "https://github.com/tensorflow/tfjs/blob/master/tfjs-core/src/optimizers/adam_optimizer.ts",
            "const biasCorrectedFirstMoment = div(newFirstMoment, oneMinusAccBeta1); "
            "const biasCorrectedSecondMoment = div(newSecondMoment, oneMinusAccBeta2); "
            "... div(biasCorrectedFirstMoment, add(sqrt(biasCorrectedSecondMoment), "
            "this.epsilon))",
        ),
        notes="A null epsilon becomes the backend's epsilon(): 1e-7 on 32-bit backends, 1e-4 "
        "on 16-bit. accBeta1/accBeta2 are multiplied by beta after each step. "
        "Hyperparameters are JS numbers (binary64): mul(m, this.beta1) casts beta to a "
        "float32 scalar, mul(g, 1 - this.beta1) casts the binary64 1 - beta; TF.js tensors "
        "are float32 only, so the parameter dtype is float32.",
    ),
    CatalogEntry(
        name="onnx.Adam",
        variant=Variant(
            eps_placement=EpsPlacement.EPS_HAT,
            weight_decay=WeightDecay.L2,
            hyper_precision=HyperPrecision.FLOAT32,
        ),
        defaults={"lr": "0.001", "beta1": "0.9", "beta2": "0.999", "eps": "1e-6"},
        citation=Citation(
            "ONNX ai.onnx.preview.training Adam-1 operator specification",
            "https://onnx.ai/onnx/operators/onnx_aionnxpreviewtraining_Adam.html",
            "R_adjusted = T > 0 ? R * Sqrt(1 - beta**T) / (1 - alpha**T) : R; "
            "X_new = X - R_adjusted * V_new / H_sqrt",
        ),
        options={"norm_coefficient": 0.0},
        notes="Attribute names are shifted: alpha is beta1, beta is beta2; epsilon defaults "
        "to 1e-6. T = 0 disables bias correction. Attributes are float32.",
    ),
    CatalogEntry(
        name="onnx.Adam[norm_coefficient_post]",
        variant=Variant(
            eps_placement=EpsPlacement.EPS_HAT,
            weight_decay=WeightDecay.DECOUPLED_AFTER,
            hyper_precision=HyperPrecision.FLOAT32,
        ),
        defaults={"lr": "0.001", "beta1": "0.9", "beta2": "0.999", "eps": "1e-6"},
        citation=Citation(
            "ONNX ai.onnx.preview.training Adam-1 operator specification",
            "https://onnx.ai/onnx/operators/onnx_aionnxpreviewtraining_Adam.html",
            "X_final = (1 - norm_coefficient_post) * X_new",
        ),
        options={"norm_coefficient_post": True},
        notes="Decoupled decay applied after the step and not scaled by the learning rate.",
    ),
)


class UnknownVariantError(KeyError):
    """A catalog name that does not exist; the message lists close names."""

    def __str__(self) -> str:
        return str(self.args[0])


CATALOG: Mapping[str, CatalogEntry] = MappingProxyType({e.name: e for e in _ENTRIES})


def entry(name: str) -> CatalogEntry:
    """The catalog entry called ``name`` (exact match), or the entry of an axis-space
    formula such as ``"eps_placement=eps_hat, weight_decay=decoupled_before"`` (see
    :func:`formula_entry`)."""
    try:
        return CATALOG[name]
    except KeyError:
        if isinstance(name, str) and "=" in name:
            return formula_entry(name)
        import difflib

        close = difflib.get_close_matches(name, CATALOG, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownVariantError(
            f"variant={name!r} is not in the catalog{hint} (see `adamspec variants`) nor an "
            "axis formula (axis=value, ...: e.g. eps_placement=eps_hat)"
        ) from None


def entries() -> Iterator[CatalogEntry]:
    """All entries in catalog order."""
    return iter(_ENTRIES)


# ------------------------------------------------------------ formulas named by their axes

#: The formula an axis-space name changes: the paper's Algorithm 1, with its defaults.
FORMULA_BASE = "paper.algorithm1"


def formula_name(variant: Variant) -> str:
    """The axes where ``variant`` differs from the paper's Algorithm 1, as
    ``"axis=value, axis=value"`` in field order (:data:`FORMULA_BASE` when none differs).
    :func:`entry` reads the name back."""
    base = CATALOG[FORMULA_BASE].variant.axes()
    changed = [
        f"{k}={str(v).lower() if isinstance(v, bool) else v}"
        for k, v in variant.axes().items()
        if base[k] != v
    ]
    return ", ".join(changed) or FORMULA_BASE


def formula_entry(text: str) -> CatalogEntry:
    """A catalog-shaped entry for an axis-space formula: :data:`FORMULA_BASE` with the axes
    ``text`` names (``"axis=value, ..."``; ``maximize=true``), its defaults and no citation
    of its own. Its name is :func:`formula_name` of the result. An unknown axis or value
    raises :class:`VariantError` listing what is allowed."""
    axes = CATALOG[FORMULA_BASE].variant.axes()
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (x.strip() for x in part.partition("="))
        if not sep or not key:
            raise VariantError(f"{part!r} is not axis=value (e.g. eps_placement=eps_hat)")
        if key not in axes:
            raise VariantError(f"unknown variant axis {key!r}; allowed: {', '.join(axes)}")
        if key == "maximize":
            if value.lower() not in ("true", "false"):
                raise VariantError(f"maximize={value!r} is not allowed; allowed: true, false")
            axes[key] = value.lower() == "true"
        else:
            axes[key] = value
    variant = Variant.from_axes(axes)
    base = CATALOG[FORMULA_BASE]
    name = formula_name(variant)
    return CatalogEntry(
        name=name,
        variant=variant,
        defaults=base.defaults,
        citation=Citation(f"{base.name} with {name}", base.citation.url, ""),
    )


def same_formula(variant: Variant) -> list[str]:
    """The catalog names whose variant is exactly ``variant``, in catalog order."""
    return [e.name for e in _ENTRIES if e.variant == variant]


def formula_key(name: str) -> Any:
    """What makes two catalog names one formula: their variant (names outside the catalog
    are their own formula), so ``formula_key(a) == formula_key(b)`` says "same formula"."""
    found = CATALOG.get(name)
    if found is not None:
        return found.variant
    try:  # an axis-space name ("eps_placement=eps_hat") is the formula it names
        return formula_entry(name).variant
    except VariantError:
        return name
