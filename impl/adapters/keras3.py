"""Keras 3 ``Adam``/``AdamW`` on each backend (tensorflow, jax, torch), eager, compiled
as ``model.fit`` compiles its step, and under the mixed dtype policies
(:class:`KerasMixedPrecisionOptimizer`).

``KERAS_BACKEND`` is fixed when keras is first imported, so every backend runs
in its own worker process (:class:`adamspec.impl.adapters.worker.ProcessAdapter`); the
class here is what runs inside the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from adamspec.impl.adapters.base import Adapter, AdapterInfo, State, Unsupported, numpy_dtype
from adamspec.impl.adapters.compiled import HoldsCompiled
from adamspec.impl.adapters.repro import (
    Program,
    StepToReproduce,
    keyword_literal,
    value_literal,
    with_compiled_step,
)
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper
from adamspec.spec.precision import Precision

BACKENDS = ("tensorflow", "jax", "torch")
#: Backends whose compiled train step is registered (XLA, jax.jit); Keras's torch backend
#: compiles with torch.compile only when asked to, and is not registered compiled.
COMPILED_BACKENDS = ("tensorflow", "jax")


def constructor_kwargs(h: Hyper, learning_rate: Any) -> dict[str, Any]:
    """Keras 3 / tf_keras optimizer keywords for ``h`` (unset clipping and zero decay left
    out, so the framework's own defaults apply). Shared with tf_keras's reproduction scripts."""
    kwargs: dict[str, Any] = {
        "learning_rate": learning_rate,
        "beta_1": float(h.beta1),
        "beta_2": float(h.beta2),
        "epsilon": float(h.eps),
    }
    if h.weight_decay:
        kwargs["weight_decay"] = float(h.weight_decay)
    for name in ("clipnorm", "clipvalue", "global_clipnorm"):
        if getattr(h, name) is not None:
            kwargs[name] = float(getattr(h, name))
    return kwargs


def _optimizer_kwargs(h: Hyper, learning_rate: Any, options: dict[str, Any]) -> dict[str, Any]:
    """A Keras 3 optimizer's keywords as the adapter and its scripts pass them: the shared
    ones, the EMA's, then ``options`` (without ``cls``)."""
    kwargs = constructor_kwargs(h, learning_rate)
    if h.use_ema:
        kwargs.update(use_ema=True, ema_momentum=float(h.ema_momentum),
                      ema_overwrite_frequency=h.ema_overwrite_frequency)  # fmt: skip
    kwargs.update(options)
    return kwargs


def sparse_gradient_literal(indices: str, values: str, shape: tuple[int, ...]) -> str:
    """A sparse gradient as Keras optimizers (Keras 3 on TensorFlow, tf_keras) take it:
    ``tf.IndexedSlices`` (for :meth:`StepToReproduce.grad_literal`)."""
    return (
        f"tf.IndexedSlices({values}, tf.constant({indices}, dtype=tf.int64), "
        f"tf.constant({list(shape)!r}, dtype=tf.int64))"
    )


def xla_apply_gradients(grad: str) -> list[str]:
    """Script lines: ``opt.apply_gradients`` for ``var`` in a jit-compiled tf.function, called
    with the gradient ``grad`` (shared by the tf_keras and Keras 3 compiled scripts)."""
    return [
        "apply = tf.function(",
        "    lambda grad: opt.apply_gradients([(grad, var)]), jit_compile=True, "
        "reduce_retracing=True",
        ")",
        f"apply({grad})",
    ]


class KerasOptimizer(Adapter):
    """One keras.optimizers optimizer over one ``keras.Variable`` per tensor.

    options: ``cls`` ("Adam" or "AdamW") and constructor keywords (amsgrad,
    clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum, ...).
    """

    framework = "keras"
    dtypes = ("float64", "float32", "float16", "bfloat16")

    def _build(self) -> None:
        import keras

        self.keras = keras
        self.backend = keras.backend.backend()
        self.sparse = self.backend == "tensorflow"
        self._configure(**self._make_objects())
        self.version = f"{keras.__version__} ({self.backend})"

    def _make_objects(self) -> dict[str, Any]:
        """The variables and the optimizer, built over them."""
        keras = self.keras
        options = dict(self.options)
        cls = getattr(keras.optimizers, options.pop("cls", "Adam"))
        h = self.hyper
        kwargs = _optimizer_kwargs(h, _schedule(keras, h) or float(h.lr_at(1)), options)
        variables = [
            keras.Variable(np.zeros(shape), dtype=self.variable_dtype, name=f"p{k}")
            for k, shape in enumerate(self.shapes)
        ]
        optimizer = self._wrapped(cls(**kwargs))
        optimizer.build(variables)
        return {"variables": variables, "optimizer": optimizer}

    @property
    def variable_dtype(self) -> str:
        """The dtype of the ``keras.Variable``s and of the optimizer's slots."""
        return self.dtype

    def _wrapped(self, optimizer: Any) -> Any:
        """The optimizer the step is applied through (a wrapper of ``optimizer``, or itself)."""
        return optimizer

    def _configure(self, variables: list[Any], optimizer: Any, **_: Any) -> None:
        self.variables, self.optimizer = variables, optimizer
        self.amsgrad = bool(optimizer.amsgrad) if hasattr(optimizer, "amsgrad") else False

    def _assign(self, variable: Any, value: np.ndarray) -> None:
        variable.assign(
            self.keras.ops.convert_to_tensor(np.asarray(value), dtype=self.variable_dtype)
        )

    def set_state(self, state: State) -> None:
        opt = self.optimizer
        for k, var in enumerate(self.variables):
            self._assign(var, state.params[k])
            self._assign(opt._momentums[k], state.m[k])
            self._assign(opt._velocities[k], state.v[k])
            if self.amsgrad:
                self._assign(opt._velocity_hats[k], state.v_max[k])
            if self.hyper.use_ema and "ema" in state.extras:
                self._assign(opt._model_variables_moving_average[k], state.extras["ema"][k])
        opt._iterations.assign(state.step)

    def _numpy(self, variable: Any, dtype: str = "") -> np.ndarray:
        value = self.keras.ops.convert_to_numpy(variable)
        return np.asarray(value).astype(numpy_dtype(dtype or self.variable_dtype), copy=True)

    def get_state(self) -> State:
        opt = self.optimizer
        extras = {}
        if self.hyper.use_ema:
            extras["ema"] = [self._numpy(x) for x in opt._model_variables_moving_average]
        return State(
            [self._numpy(v) for v in self.variables],
            [self._numpy(x) for x in opt._momentums],
            [self._numpy(x) for x in opt._velocities],
            [self._numpy(x) for x in opt._velocity_hats] if self.amsgrad else None,
            int(self.keras.ops.convert_to_numpy(opt._iterations)),
            extras,
        )

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        tensors = self._tensors(grads)
        try:
            self.optimizer.apply_gradients(zip(tensors, self.variables, strict=True))
        except (TypeError, ValueError, NotImplementedError) as exc:
            raise Unsupported(f"{self.name}: {str(exc).splitlines()[0]}") from None

    def _tensors(self, grads: Sequence[Any]) -> list[Any]:
        """The gradients as the backend's tensors (tf.IndexedSlices for sparse rows)."""
        ops = self.keras.ops
        tensors = []
        for g, var in zip(grads, self.variables, strict=True):
            if isinstance(g, SparseRows):
                import tensorflow as tf

                tensors.append(tf.IndexedSlices(
                    tf.constant(np.asarray(g.values), dtype=self.dtype),
                    tf.constant(np.asarray(g.indices, dtype=np.int64)),
                    tf.constant(var.shape, dtype=tf.int64),
                ))  # fmt: skip
            else:
                tensors.append(ops.convert_to_tensor(np.asarray(g), dtype=self.dtype))
        return tensors

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """``keras.optimizers.<cls>`` on the backend the worker runs, slots set privately."""
        h, options = step.hyper, dict(step.info.options)
        name = options.pop("cls", "Adam")
        backend = step.environment["KERAS_BACKEND"]
        kwargs = _optimizer_kwargs(h, float(step.lr), options)
        before, read = step.before, "keras.ops.convert_to_numpy"
        body = [
            f'var = keras.Variable({value_literal(before.params[0])}, dtype=DTYPE, name="p0")',
            f"opt = keras.optimizers.{name}({keyword_literal(kwargs)})",
            "opt.build([var])",
            "# Keras 3 has no public setter for the slots: these private lists are what",
            "# adamspec's adapter assigns too",
            f"opt._momentums[0].assign({value_literal(before.m[0])})",
            f"opt._velocities[0].assign({value_literal(before.v[0])})",
        ]
        results = {
            "param": f"{read}(var)",
            "m": f"{read}(opt._momentums[0])",
            "v": f"{read}(opt._velocities[0])",
        }
        if kwargs.get("amsgrad"):
            body.append(f"opt._velocity_hats[0].assign({value_literal(before.v_max[0])})")
            results["v_max"] = f"{read}(opt._velocity_hats[0])"
        if h.use_ema and "ema" in before.extras:
            ema = before.extras["ema"][0]
            body.append(f"opt._model_variables_moving_average[0].assign({value_literal(ema)})")
        grad = step.grad_literal(sparse_gradient_literal)
        body += [f"opt._iterations.assign({step.step})", f"opt.apply_gradients([({grad}, var)])"]
        imports = [
            "import os",
            "",
            f'os.environ["KERAS_BACKEND"] = "{backend}"  # fixed when keras is first imported',
            'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")',
            "import keras",
        ]
        if step.is_sparse:
            imports.append("import tensorflow as tf")
        helpers = [
            f'DTYPE = "{step.dtype}"',
            "",
            "",
            "def value(hexes, shape):",
            "    return keras.ops.convert_to_tensor(exact(hexes, shape), dtype=DTYPE)",
        ]
        return Program(imports, helpers, body, results)


def _stateless_apply_lines(optimizer: str, grads: str, variables: str) -> list[str]:
    """Script lines: the JAX trainer's step (``stateless_apply``, the values assigned back)."""
    return [
        f"trainable, optimizer_variables = {optimizer}.stateless_apply(",
        f"    [v.value for v in {optimizer}.variables], {grads}, [v.value for v in {variables}]",
        ")",
        f"for v, x in zip({variables}, trainable):",
        "    v.assign(x)",
        f"for v, x in zip({optimizer}.variables, optimizer_variables):",
        "    v.assign(x)",
    ]


#: Keras's mixed dtype policies and the precision each one runs (the policy's compute dtype
#: for the params the model sees, its variable dtype, float32, for the master and the slots).
POLICIES = {"mixed_bfloat16": "bf16-fp32master", "mixed_float16": "fp16-fp32master"}


class KerasMixedPrecisionOptimizer(KerasOptimizer):
    """``keras.optimizers.Adam``/``AdamW`` as a model under a mixed dtype policy runs it
    (Keras 3.15.1; options: ``policy``, one of :data:`POLICIES`, and those of
    :class:`KerasOptimizer`).

    What the optimizer sees, from the source:

    * keras/src/dtype_policies/dtype_policy.py:82-85: ``mixed_float16`` and
      ``mixed_bfloat16`` compute in float16/bfloat16 and keep variables in float32. The
      float32 variables are the master copy (``State.master``); the optimizer builds its
      slots like them (optimizers/base_optimizer.py:322 ``dtype=reference_variable.dtype``),
      so m and v are float32.
    * layers/layer.py:995-999: ``Layer.__call__`` enters ``backend.AutocastScope(
      compute_dtype)`` when the dtypes are mixed, and a variable read inside it is
      ``backend.cast(value, compute_dtype)`` (backend/common/variables.py:245-248 and
      696-701). That cast of the master is the param the model computes with
      (``State.params``), read here the same way.
    * The gradient of that cast is the compute dtype's gradient cast to float32 (the
      variable's dtype): the harness's gradients arrive in the compute dtype and are cast.
      optimizers/adam.py:102-137 then runs entirely in float32 (``ops.cast(gradient,
      variable.dtype)``), as keras.Adam on float32 variables.
    * trainers/trainer.py:178-186: ``compile`` wraps the optimizer in
      ``LossScaleOptimizer`` under ``mixed_float16`` (initial scale 2**15, doubled after
      2000 finite steps). The train step differentiates ``optimizer.scale_loss(loss)``
      (backend/tensorflow/trainer.py:76-84), so the gradient arrives scaled, as the
      backward pass computes it in float16: ``S g`` rounded to float16 (inf where it
      overflows), then cast to float32. optimizers/loss_scale_optimizer.py:213-254:
      finite gradients are divided by the scale (exact: a power of two) and applied by the
      inner optimizer; a non-finite one skips the step (params, slots and iterations
      unchanged) and halves the scale. The scale and its counter are ``State.extras``
      ``loss_scale`` and ``loss_scale_steps`` (set back by :meth:`set_state` when given).
    """

    dtypes = ()
    precisions = tuple(POLICIES.values())

    def check_precision(self, precision: Precision) -> None:
        policy = self.options.get("policy")
        if policy not in POLICIES:
            raise Unsupported(f"{self.name}: policy={policy!r}; allowed: {', '.join(POLICIES)}")
        if precision.name != POLICIES[policy]:
            raise Unsupported(
                f"{self.name} runs precision {POLICIES[policy]} (its policy {policy}), "
                f"not {precision.name}"
            )

    def _build(self) -> None:
        import keras

        self.policy = keras.DTypePolicy(self.options.pop("policy"))
        if (self.policy.compute_dtype, self.policy.variable_dtype) != (
            self.precision.param,
            self.precision.master,
        ):  # a precision preset and Keras's policy must agree on what they name
            raise Unsupported(f"{self.name}: {self.policy.name} is not {self.precision.name}")
        super()._build()
        self.sparse = False  # densified IndexedSlices in float16 are not what a model sends

    @property
    def variable_dtype(self) -> str:
        return self.policy.variable_dtype

    def _wrapped(self, optimizer: Any) -> Any:
        if self.policy.name == "mixed_float16":  # as Trainer.compile(auto_scale_loss=True)
            return self.keras.optimizers.LossScaleOptimizer(optimizer, name="loss_scale_optimizer")
        return optimizer

    def _configure(self, variables: list[Any], optimizer: Any, **_: Any) -> None:
        self.applied = optimizer  # what the train step calls: the wrapper, if any
        self.loss_scale = optimizer if hasattr(optimizer, "inner_optimizer") else None
        super()._configure(variables, getattr(optimizer, "inner_optimizer", optimizer))

    def set_state(self, state: State) -> None:
        """The variables take ``state.master`` (the float32 copy; without one, the params
        widened exactly), so ``state.params`` is what they round to."""
        master = state.master
        if master is None:
            master = [np.asarray(p).astype(numpy_dtype(self.variable_dtype)) for p in state.params]
        super().set_state(replace(state, params=master, master=None))
        if self.loss_scale is not None and "loss_scale" in state.extras:
            self.loss_scale.dynamic_scale.assign(float(state.extras["loss_scale"]))
            self.loss_scale.step_counter.assign(int(state.extras["loss_scale_steps"]))

    def get_state(self) -> State:
        from keras.src.backend import AutocastScope

        state = super().get_state()  # params: the float32 variables
        with AutocastScope(self.policy.compute_dtype):  # as Layer.__call__ reads them
            params = [self._numpy(var.value, self.dtype) for var in self.variables]
        extras = dict(state.extras)
        if self.loss_scale is not None:
            extras["loss_scale"] = self._numpy(self.loss_scale.dynamic_scale, "float32")
            extras["loss_scale_steps"] = np.asarray(
                self.keras.ops.convert_to_numpy(self.loss_scale.step_counter)
            ).copy()
        return replace(state, params=params, master=state.params, extras=extras)

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        tensors = self._tensors(grads)
        try:
            if self.backend == "jax":
                self._stateless_step(tensors)
            else:
                self.applied.apply_gradients(zip(tensors, self.variables, strict=True))
        except (TypeError, ValueError, NotImplementedError) as exc:
            raise Unsupported(f"{self.name}: {str(exc).splitlines()[0]}") from None

    def _stateless_step(self, tensors: list[Any]) -> None:
        """The JAX trainer's step (backend/jax/trainer.py:144-156, without its jax.jit):
        ``stateless_apply`` on the values, assigned back. The stateful ``apply`` of
        LossScaleOptimizer cannot run on JAX (its ``ops.cond`` branches assign variables:
        UnexpectedTracerError), and ``fit`` never calls it there."""
        optimizer = self.applied
        trainable, optimizer_variables = optimizer.stateless_apply(
            [v.value for v in optimizer.variables], tensors, [v.value for v in self.variables]
        )
        for var, value in zip(self.variables, trainable, strict=True):
            var.assign(value)
        for var, value in zip(optimizer.variables, optimizer_variables, strict=True):
            var.assign(value)

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """The optimizer over one float32 variable (the master) as a model under the policy
        steps it: the gradient in the compute dtype (scaled by the loss scale under
        ``mixed_float16``), cast to float32, applied as the backend's trainer applies it;
        the param read as the variable's cast to the compute dtype."""
        h, options = step.hyper, dict(step.info.options)
        name, policy = options.pop("cls", "Adam"), options.pop("policy")
        kwargs = _optimizer_kwargs(h, float(step.lr), options)
        before, read = step.before, "keras.ops.convert_to_numpy"
        master = before.master[0] if before.master is not None else before.params[0]
        inner = f"keras.optimizers.{name}({keyword_literal(kwargs)})"
        scaled = policy == "mixed_float16"
        wrapped = "opt = keras.optimizers.LossScaleOptimizer(inner)  # as compile wraps it"
        body = [
            f'policy = keras.DTypePolicy("{policy}")',
            f"var = keras.Variable({value_literal(master)}, dtype=policy.variable_dtype)",
            *([f"inner = {inner}", wrapped] if scaled else [f"opt = inner = {inner}"]),
            "opt.build([var])",
            "# Keras 3 has no public setter for the slots: these private lists are what",
            "# adamspec's adapter assigns too",
            f"inner._momentums[0].assign({value_literal(before.m[0])})",
            f"inner._velocities[0].assign({value_literal(before.v[0])})",
            f"inner._iterations.assign({step.step})",
        ]
        if scaled and "loss_scale" in before.extras:
            body += [
                f"opt.dynamic_scale.assign({float(before.extras['loss_scale'])!r})",
                f"opt.step_counter.assign({int(before.extras['loss_scale_steps'])})",
            ]
        body.append(
            f"grad = keras.ops.cast({step.grad_literal()}, policy.compute_dtype)  # backward's"
        )
        if scaled:  # the backward pass of the scaled loss computes S g in float16
            body.append(
                "grad = keras.ops.cast(keras.ops.multiply(keras.ops.cast(grad, 'float32'), "
                "opt.dynamic_scale), policy.compute_dtype)"
            )
        body.append("grad = keras.ops.cast(grad, var.dtype)  # the autocast's gradient")
        if step.environment["KERAS_BACKEND"] == "jax":
            body += _stateless_apply_lines("opt", "[grad]", "[var]")
        else:
            body.append("opt.apply_gradients([(grad, var)])")
        results = {
            # Layer.__call__'s AutocastScope reads a variable as backend.cast(value, dtype)
            "param": f"{read}(keras.ops.cast(var.value, policy.compute_dtype))",
            "master": f"{read}(var)",
            "m": f"{read}(inner._momentums[0])",
            "v": f"{read}(inner._velocities[0])",
        }
        imports = [
            "import os",
            "",
            f'os.environ["KERAS_BACKEND"] = "{step.environment["KERAS_BACKEND"]}"',
            'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")',
            "import keras",
        ]
        helpers = [
            'DTYPE = "float32"  # exact for every value of the precision\'s roles',
            "",
            "",
            "def value(hexes, shape):",
            "    return keras.ops.convert_to_tensor(exact(hexes, shape), dtype=DTYPE)",
        ]
        return Program(imports, helpers, body, results)

    def _tensors(self, grads: Sequence[Any]) -> list[Any]:
        """Each gradient as the backward pass hands it over: in the compute dtype (scaled
        by the loss scale there, under ``mixed_float16``), cast to the variable's dtype."""
        ops, compute = self.keras.ops, self.policy.compute_dtype
        tensors = []
        for g in grads:
            g = ops.convert_to_tensor(np.asarray(g), dtype=compute)
            if self.loss_scale is not None:  # S g: exact in float32, then the float16 result
                scaled = ops.multiply(ops.cast(g, "float32"), self.loss_scale.dynamic_scale)
                g = ops.cast(scaled, compute)
            tensors.append(ops.cast(g, self.variable_dtype))
        return tensors


class KerasCompiledOptimizer(HoldsCompiled, KerasOptimizer):
    """The optimizer step compiled as ``model.fit`` compiles its train step
    (keras/src/backend/*/trainer.py):

    * tensorflow: ``tf.function(step, jit_compile=True, reduce_retracing=True)`` around
      ``optimizer.apply_gradients`` (XLA; checked by lowering the function to HLO once);
    * jax: ``jax.jit(step, donate_argnums=0)`` around
      ``optimizer.stateless_apply(optimizer_variables, grads, trainable_variables)``, the
      new values assigned back to the variables after each step (as ``jax_state_sync``).

    One compiled step per configuration, dtype, shapes and hyperparameters in the worker
    process (:mod:`adamspec.impl.adapters.compiled`); ``set_state`` assigns into the cached
    variables, so nothing retraces.
    """

    def _build(self) -> None:
        import keras

        self.keras = keras
        self.backend = keras.backend.backend()
        self.sparse = self.backend == "tensorflow"
        _refuse_eager_configuration(self.name, self.backend)
        self._configure(**self._take_compiled(self._make_compiled).objects)
        self.version = f"{keras.__version__} ({self.backend})"

    def _make_compiled(self) -> dict[str, Any]:
        objects = self._make_objects()
        variables, optimizer = objects["variables"], objects["optimizer"]
        if self.backend == "tensorflow":
            import tensorflow as tf

            def apply(grads: list[Any]) -> None:
                optimizer.apply_gradients(zip(grads, variables, strict=True))

            compiled = tf.function(apply, jit_compile=True, reduce_retracing=True)
        else:
            import jax

            def train_step(state: tuple, grads: list[Any]) -> tuple:
                trainable, optimizer_variables = state
                trainable, optimizer_variables = optimizer.stateless_apply(
                    optimizer_variables, grads, trainable
                )
                return trainable, optimizer_variables

            compiled = jax.jit(train_step, donate_argnums=0)
        return {**objects, "compiled_step": compiled}

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        tensors = self._tensors(grads)
        entry, compiled = self._entry, self._entry.objects["compiled_step"]
        try:
            if self.backend == "tensorflow":
                if not entry.compiled:  # XLA must accept the function, or it is not run
                    compiled.experimental_get_compiler_ir(tensors)(stage="hlo")
                entry.timed(lambda: compiled(tensors))
            else:
                state = ([v.value for v in self.variables],
                         [v.value for v in self.optimizer.variables])  # fmt: skip
                trainable, optimizer_variables = entry.timed(lambda: compiled(state, tensors))
                for var, value in zip(self.variables, trainable, strict=True):
                    var.assign(value)
                for var, value in zip(self.optimizer.variables, optimizer_variables, strict=True):
                    var.assign(value)
        except (TypeError, ValueError, NotImplementedError) as exc:
            raise Unsupported(f"{self.name}: {str(exc).splitlines()[0]}") from None
        except Exception as exc:  # an XLA compile error is a skip with its reason
            if type(exc).__name__ not in ("InvalidArgumentError", "UnimplementedError"):
                raise
            raise Unsupported(f"{self.name}: XLA: {str(exc).splitlines()[0]}") from None

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """The eager program, its ``apply_gradients`` compiled as ``model.fit`` compiles it:
        XLA on tensorflow, ``jax.jit`` of ``stateless_apply`` on jax (the gradient passed
        as an argument: a captured constant could be folded)."""
        program = super().reproduction_program(step)
        grad = step.grad_literal(sparse_gradient_literal)
        eager = f"opt.apply_gradients([({grad}, var)])"
        if step.environment["KERAS_BACKEND"] == "tensorflow":
            if "import tensorflow as tf" not in program.imports:
                program.imports.append("import tensorflow as tf")
            return with_compiled_step(program, eager, xla_apply_gradients(grad))
        program.imports.append("import jax")
        jitted = [
            "",
            "",
            "def train_step(state, grads):  # as keras/src/backend/jax/trainer.py",
            "    trainable, optimizer_variables = state",
            "    return opt.stateless_apply(optimizer_variables, grads, trainable)",
            "",
            "",
            "state = ([var.value], [v.value for v in opt.variables])",
            "trainable, optimizer_variables = jax.jit(train_step, donate_argnums=0)(",
            f"    state, [{grad}]",
            ")",
            "var.assign(trainable[0])",
            "for v, x in zip(opt.variables, optimizer_variables):",
            "    v.assign(x)",
        ]
        return with_compiled_step(program, eager, jitted)


def _refuse_eager_configuration(name: str, backend: str) -> None:
    """Unsupported where the compiled step would silently run eagerly (or not exist)."""
    if backend == "jax":
        import jax

        if jax.config.jax_disable_jit:
            raise Unsupported(f"{name}: jax_disable_jit is on: jax.jit would run eagerly")
    elif backend == "tensorflow":
        import tensorflow as tf

        if tf.config.functions_run_eagerly():
            raise Unsupported(f"{name}: tf.config.run_functions_eagerly is on")
    else:
        raise Unsupported(f"{name}: compiled steps are registered for tensorflow and jax")


def _schedule(keras: Any, hyper: Any) -> Any:
    """A keras LearningRateSchedule for a spec Schedule: step (iterations) -> lr_at(step + 1)."""
    from adamspec.spec.hyper import Schedule

    if not isinstance(hyper.lr, Schedule):
        return None
    table = [float(hyper.lr_at(t)) for t in range(1, 10_001)]

    class Table(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step: Any) -> Any:
            index = keras.ops.minimum(keras.ops.cast(step, "int32"), len(table) - 1)
            return keras.ops.take(keras.ops.convert_to_tensor(table, dtype="float32"), index)

    return Table()


def _info(
    name: str,
    documented: str,
    backend: str,
    *,
    compiled: bool = False,
    target: str = "KerasOptimizer",
    **inner: Any,
) -> AdapterInfo:
    """``name[backend]``, or with ``compiled`` ``name[backend,jit_compile=True]`` (what
    ``model.compile(jit_compile=True)`` runs: XLA on tensorflow, jax.jit on jax), whose
    eager counterpart is ``name[backend]``, or with a ``policy`` ``name[backend,policy]``
    (:class:`KerasMixedPrecisionOptimizer`)."""
    eager = f"{name}[{backend}]"
    target = "KerasCompiledOptimizer" if compiled else target
    qualifier = "jit_compile=True" if compiled else inner.get("policy")
    return AdapterInfo(
        f"{name}[{backend},{qualifier}]" if qualifier else eager,
        "keras",
        documented,
        "adamspec.impl.adapters.worker:ProcessAdapter",
        {
            "target": f"adamspec.impl.adapters.keras3:{target}",
            "env": {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
            "inner": inner,
        },
        eager_counterpart=eager if compiled else "",
    )


INFOS = (
    [
        info
        for backend in BACKENDS
        for info in (
            _info("keras.Adam", "keras.Adam", backend),
            _info("keras.Adam(amsgrad=True)", "keras.Adam[amsgrad]", backend, amsgrad=True),
            _info("keras.AdamW", "keras.AdamW", backend, cls="AdamW"),
        )
    ]
    + [
        info
        for backend in COMPILED_BACKENDS
        for info in (
            _info("keras.Adam", "keras.Adam", backend, compiled=True),
            _info("keras.AdamW", "keras.AdamW", backend, compiled=True, cls="AdamW"),
        )
    ]
    + [
        _info(name, name, backend, target="KerasMixedPrecisionOptimizer", policy=policy, **cls)
        for backend in BACKENDS
        for policy in POLICIES
        for name, cls in (("keras.Adam", {}), ("keras.AdamW", {"cls": "AdamW"}))
    ]
)
