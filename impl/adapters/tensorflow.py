"""TensorFlow's Adam implementations: tf_keras (new and legacy), tf.compat.v1, raw kernels.

Every adapter drives the framework the way a user does, with Python floats
for hyperparameters, so the precision the framework itself chooses is what
gets measured:

* ``tf_keras.Adam`` -- ``tf_keras.optimizers.Adam`` in eager mode through
  ``apply_gradients``. The constant learning rate is a ``floatx`` (float32)
  variable and ``1 - beta`` is a Python float subtraction rounded to the
  variable dtype afterwards (keras-team/tf-keras ``optimizers/adam.py``).
* ``tf_keras.optimizers.legacy.Adam`` -- OptimizerV2; its dense step is the
  ``ResourceApplyAdam`` kernel fed ``tf.pow(beta, iterations + 1)`` in the
  variable dtype, and its hyperparameters are float32 variables cast to the
  variable dtype.
* ``tf.v1.AdamOptimizer`` -- ``tf.compat.v1.train.AdamOptimizer`` in graph mode
  with a ``tf.compat.v1.Session``. Its ``beta1_power``/``beta2_power`` are
  float32 variables multiplied by beta after every step.
* ``tf.raw.ResourceApplyAdam`` (and ``use_nesterov``, ``WithAmsgrad``) -- the
  CPU kernels called eagerly with scalars of the variable dtype.

TensorFlow is imported only when an adapter is built. Each class also writes the
script reproducing one of its steps (``reproduction_program``) next to the code that
drives it; the four share the eager plumbing and the script's imports and helpers,
which is why they are one module of some length.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from adamspec.impl.adapters.base import Adapter, AdapterInfo, State, Unsupported, reject_unused
from adamspec.impl.adapters.compiled import HoldsCompiled
from adamspec.impl.adapters.keras3 import (
    constructor_kwargs,
    sparse_gradient_literal,
    xla_apply_gradients,
)
from adamspec.impl.adapters.repro import (
    Program,
    StepToReproduce,
    hex_float,
    hex_floats,
    keyword_literal,
    python_float,
    value_literal,
    with_compiled_step,
)
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper, Schedule

#: The dtypes every TensorFlow path here runs on CPU (checked against TF 2.21).
TF_DTYPES = ("float32", "float64", "float16", "bfloat16")


def _tf() -> Any:
    """Import TensorFlow quietly (C++ INFO/WARNING logs off)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def _f(x: Fraction) -> float:
    """A hyperparameter as the Python float a user would pass (correctly rounded binary64)."""
    return float(x)


#: How every TensorFlow reproduction script starts (quiet C++ logs, as :func:`_tf` does).
_SCRIPT_IMPORTS = [
    "import os",
    "",
    'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")',
    "import tensorflow as tf",
]


def _script_helpers(dtype: str) -> list[str]:
    """``DTYPE`` and the ``value`` helper of a TensorFlow reproduction script."""
    return [
        f"DTYPE = tf.{dtype}",
        "",
        "",
        "def value(hexes, shape):",
        "    # a cast of a value the dtype holds exactly: no rounding",
        "    return tf.cast(tf.constant(exact(hexes, shape)), DTYPE)",
    ]


class _Eager(Adapter):
    """Shared eager plumbing: one ``tf.Variable`` per parameter tensor."""

    framework = "tensorflow"
    dtypes = TF_DTYPES

    def _eager_setup(self) -> None:
        self._eager_types()
        self.vars = self._variables()

    def _eager_types(self) -> None:
        tf = self.tf = _tf()
        self.tf_dtype = tf.as_dtype(self.dtype)
        self.np_dtype = np.dtype(self.tf_dtype.as_numpy_dtype)
        self._step = 0

    def _variables(self) -> list[Any]:
        tf = self.tf
        return [tf.Variable(tf.zeros(s, self.tf_dtype), trainable=True) for s in self.shapes]

    def _array(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=self.np_dtype)

    def _read(self, var: Any) -> np.ndarray:
        return np.array(var.numpy(), dtype=self.np_dtype, copy=True)

    def _assign(self, var: Any, value: Any) -> None:
        var.assign(self.tf.constant(self._array(value), dtype=self.tf_dtype))

    def _tf_grad(self, g: Any, shape: tuple[int, ...]) -> Any:
        tf = self.tf
        if isinstance(g, SparseRows):
            values = self._array(g.values).reshape((len(g.indices), *shape[1:]))
            return tf.IndexedSlices(
                tf.constant(values, dtype=self.tf_dtype),
                tf.constant(np.asarray(g.indices, dtype=np.int64)),
                tf.constant(shape, dtype=tf.int64),
            )
        return tf.constant(self._array(g).reshape(shape), dtype=self.tf_dtype)


# ---------------------------------------------------------------- tf_keras


def _keras_schedule(hyper: Hyper) -> Any:
    """A tf_keras LearningRateSchedule: optimizer step ``s`` (0-based) -> ``lr_at(s + 1)``.

    Returns float32 like tf_keras's built-in schedules and its constant lr variable.
    """
    import tf_keras

    tf = _tf()

    class _Table(tf_keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step: Any) -> Any:
            t = int(tf.convert_to_tensor(step).numpy()) + 1
            return tf.constant(_f(hyper.lr_at(t)), dtype=tf.float32)

        def get_config(self) -> dict[str, Any]:
            return {}

    return _Table()


#: Per tf_keras optimizer: how its reproduction script creates the slots (as the adapter
#: does) and the expression reaching each slot.
_SCRIPT_SLOTS: dict[str, tuple[str, dict[str, str]]] = {
    "tf_keras.optimizers.Adam": (
        "opt.build([var])  # the slots are private lists; adamspec's adapter assigns them so",
        {"m": "opt._momentums[0]", "v": "opt._velocities[0]", "v_max": "opt._velocity_hats[0]"},
    ),
    "tf_keras.optimizers.legacy.Adam": (
        "opt._create_all_weights([var])  # creates the slots now, as adamspec's adapter does",
        {c: f'opt.get_slot(var, "{n}")' for c, n in (("m", "m"), ("v", "v"), ("v_max", "vhat"))},
    ),
}


class _KerasApply(_Eager):
    """tf_keras optimizers (new and legacy) step through ``apply_gradients``.

    Their reproduction scripts differ in the constructor (``script_constructor``), its
    keywords (:meth:`script_kwargs`) and the slots (:data:`_SCRIPT_SLOTS`).
    """

    script_constructor: ClassVar[str] = ""

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        tf_grads = [self._tf_grad(g, s) for g, s in zip(grads, self.shapes, strict=True)]
        self.opt.apply_gradients(zip(tf_grads, self.vars, strict=True))

    @classmethod
    def script_kwargs(cls, step: StepToReproduce) -> dict[str, Any]:
        """The constructor's keywords, as the adapter passes them (unset ones left out)."""
        return {**constructor_kwargs(step.hyper, float(step.lr)), **step.info.options}

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """The optimizer built, its slots and ``iterations`` assigned, one ``apply_gradients``."""
        kwargs = cls.script_kwargs(step)
        slot_creation, slots = _SCRIPT_SLOTS[cls.script_constructor]
        components = ("m", "v", "v_max") if kwargs.get("amsgrad") else ("m", "v")
        before = step.before
        state = {"m": before.m, "v": before.v, "v_max": before.v_max}
        body = [
            f"var = tf.Variable({value_literal(before.params[0])})",
            f"opt = {cls.script_constructor}({keyword_literal(kwargs)})",
            slot_creation,
            *(f"{slots[c]}.assign({value_literal(state[c][0])})" for c in components),
            f"opt.iterations.assign({step.step})",
            f"opt.apply_gradients([({step.grad_literal(sparse_gradient_literal)}, var)])",
        ]
        results = {"param": "var.numpy()", **{c: f"{slots[c]}.numpy()" for c in components}}
        imports = [*_SCRIPT_IMPORTS, "import tf_keras"]
        return Program(imports, _script_helpers(step.dtype), body, results)


class TfKerasAdam(_KerasApply):
    """``tf_keras.optimizers.Adam`` (options: ``adaptive_epsilon``, ``amsgrad``)."""

    framework = "tf_keras"
    sparse = True
    script_constructor = "tf_keras.optimizers.Adam"

    def _build(self) -> None:
        reject_unused(self.hyper, self.name, decay=True, clip=True)
        self._eager_setup()
        self.opt = self._optimizer(self.vars)
        self.amsgrad = bool(self.options.get("amsgrad", False))

    def _optimizer(self, variables: list[Any]) -> Any:
        """``tf_keras.optimizers.Adam`` as a user builds it, built over ``variables``."""
        import tf_keras

        h = self.hyper
        lr = _keras_schedule(h) if isinstance(h.lr, Schedule) else _f(h.lr)
        opt = tf_keras.optimizers.Adam(
            learning_rate=lr,
            beta_1=_f(h.beta1),
            beta_2=_f(h.beta2),
            epsilon=_f(h.eps),
            weight_decay=_f(h.weight_decay) if h.weight_decay else None,
            clipnorm=None if h.clipnorm is None else _f(h.clipnorm),
            clipvalue=None if h.clipvalue is None else _f(h.clipvalue),
            global_clipnorm=None if h.global_clipnorm is None else _f(h.global_clipnorm),
            **self.options,
        )
        opt.build(variables)
        return opt

    def _slots(self) -> tuple[list[Any], list[Any], list[Any] | None]:
        o = self.opt
        return o._momentums, o._velocities, (o._velocity_hats if self.amsgrad else None)

    def set_state(self, state: State) -> None:
        m, v, vhat = self._slots()
        for k, var in enumerate(self.vars):
            self._assign(var, state.params[k])
            self._assign(m[k], state.m[k])
            self._assign(v[k], state.v[k])
            if vhat is not None:
                self._assign(vhat[k], state.v_max[k] if state.v_max is not None else 0)
        self.opt.iterations.assign(state.step)

    def get_state(self) -> State:
        m, v, vhat = self._slots()
        return State(
            [self._read(x) for x in self.vars],
            [self._read(x) for x in m],
            [self._read(x) for x in v],
            None if vhat is None else [self._read(x) for x in vhat],
            int(self.opt.iterations.numpy()),
        )


class TfKerasCompiledAdam(HoldsCompiled, TfKerasAdam):
    """``tf_keras.optimizers.Adam`` stepped inside ``tf.function(jit_compile=True)``: XLA on
    the CPU. (tf_keras's own ``jit_compile=True`` default applies only where a GPU is
    found: on the CPU it is turned off, so the eager adapter is truly op by op.)

    One compiled function per configuration, dtype, shapes and hyperparameters in the
    process (:mod:`adamspec.impl.adapters.compiled`); XLA's acceptance is checked once by
    lowering the function to HLO, so a graph XLA cannot compile is a skip, never an
    eager run.
    """

    def _build(self) -> None:
        reject_unused(self.hyper, self.name, decay=True, clip=True)
        self._eager_types()
        if self.tf.config.functions_run_eagerly():
            raise Unsupported(f"{self.name}: tf.config.run_functions_eagerly is on")
        objects = self._take_compiled(self._make_compiled).objects
        self.vars, self.opt = objects["vars"], objects["opt"]
        self.amsgrad = bool(self.options.get("amsgrad", False))

    def _make_compiled(self) -> dict[str, Any]:
        variables = self._variables()
        opt = self._optimizer(variables)

        def apply(grads: list[Any]) -> None:
            opt.apply_gradients(zip(grads, variables, strict=True))

        compiled = self.tf.function(apply, jit_compile=True, reduce_retracing=True)
        return {"vars": variables, "opt": opt, "compiled_step": compiled}

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        tf_grads = [self._tf_grad(g, s) for g, s in zip(grads, self.shapes, strict=True)]
        entry, compiled = self._entry, self._entry.objects["compiled_step"]
        try:
            if not entry.compiled:
                compiled.experimental_get_compiler_ir(tf_grads)(stage="hlo")
            entry.timed(lambda: compiled(tf_grads))
        except (self.tf.errors.InvalidArgumentError, self.tf.errors.UnimplementedError) as exc:
            raise Unsupported(f"{self.name}: XLA: {str(exc).splitlines()[0]}") from None

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """The eager program, its ``apply_gradients`` inside ``tf.function(jit_compile=True)``
        with the gradient as the function's argument (a captured constant could be folded)."""
        grad = step.grad_literal(sparse_gradient_literal)
        return with_compiled_step(
            super().reproduction_program(step),
            f"opt.apply_gradients([({grad}, var)])",
            xla_apply_gradients(grad),
        )


class TfKerasLegacyAdam(_KerasApply):
    """``tf_keras.optimizers.legacy.Adam`` (OptimizerV2 calling ResourceApplyAdam)."""

    framework = "tf_keras"
    sparse = True
    script_constructor = "tf_keras.optimizers.legacy.Adam"

    @classmethod
    def script_kwargs(cls, step: StepToReproduce) -> dict[str, Any]:
        kwargs = constructor_kwargs(step.hyper, float(step.lr))
        kwargs.pop("weight_decay", None)  # the adapter rejects it: legacy Adam has none
        return {**kwargs, **step.info.options}

    def _build(self) -> None:
        import tf_keras

        h = self.hyper
        reject_unused(h, self.name, clip=True)
        self._eager_setup()
        lr = _keras_schedule(h) if isinstance(h.lr, Schedule) else _f(h.lr)
        clips = {
            k: _f(getattr(h, k))
            for k in ("clipnorm", "clipvalue", "global_clipnorm")
            if getattr(h, k) is not None
        }
        # epsilon=0 silently becomes backend epsilon() = 1e-7 here (`epsilon or ...`).
        self.opt = tf_keras.optimizers.legacy.Adam(
            learning_rate=lr,
            beta_1=_f(h.beta1),
            beta_2=_f(h.beta2),
            epsilon=_f(h.eps),
            **clips,
            **self.options,
        )
        self.amsgrad = bool(self.options.get("amsgrad", False))
        self.opt._create_all_weights(self.vars)

    def _slot(self, var: Any, name: str) -> Any:
        return self.opt.get_slot(var, name)

    def set_state(self, state: State) -> None:
        for k, var in enumerate(self.vars):
            self._assign(var, state.params[k])
            self._assign(self._slot(var, "m"), state.m[k])
            self._assign(self._slot(var, "v"), state.v[k])
            if self.amsgrad:
                vmax = state.v_max[k] if state.v_max is not None else 0
                self._assign(self._slot(var, "vhat"), vmax)
        self.opt.iterations.assign(state.step)

    def get_state(self) -> State:
        def slots(name: str) -> list[np.ndarray]:
            return [self._read(self._slot(var, name)) for var in self.vars]

        return State(
            [self._read(x) for x in self.vars],
            slots("m"),
            slots("v"),
            slots("vhat") if self.amsgrad else None,
            int(self.opt.iterations.numpy()),
        )


# ---------------------------------------------------------------- raw kernels


class TfRawAdam(_Eager):
    """``tf.raw_ops.ResourceApplyAdam`` / ``ResourceApplyAdamWithAmsgrad`` called eagerly.

    Every scalar input is a tensor of the variable dtype made from the Python
    float; ``beta1_power``/``beta2_power`` are ``tf.pow(beta, t)`` in that dtype,
    exactly as tf_keras's legacy Adam computes them (``_prepare_local``).
    """

    def _build(self) -> None:
        reject_unused(self.hyper, self.name)
        self._eager_setup()
        tf = self.tf
        self.amsgrad = bool(self.options.get("amsgrad", False))
        self.use_nesterov = bool(self.options.get("use_nesterov", False))
        self.m = [tf.Variable(tf.zeros(s, self.tf_dtype)) for s in self.shapes]
        self.v = [tf.Variable(tf.zeros(s, self.tf_dtype)) for s in self.shapes]
        self.vhat = (
            [tf.Variable(tf.zeros(s, self.tf_dtype)) for s in self.shapes] if self.amsgrad else None
        )

    def set_state(self, state: State) -> None:
        for k, var in enumerate(self.vars):
            self._assign(var, state.params[k])
            self._assign(self.m[k], state.m[k])
            self._assign(self.v[k], state.v[k])
            if self.vhat is not None:
                self._assign(self.vhat[k], state.v_max[k] if state.v_max is not None else 0)
        self._step = state.step

    def get_state(self) -> State:
        return State(
            [self._read(x) for x in self.vars],
            [self._read(x) for x in self.m],
            [self._read(x) for x in self.v],
            None if self.vhat is None else [self._read(x) for x in self.vhat],
            self._step,
        )

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        tf, dt, h = self.tf, self.tf_dtype, self.hyper
        t = self._step + 1
        beta1 = tf.constant(_f(h.beta1), dt)
        beta2 = tf.constant(_f(h.beta2), dt)
        local_step = tf.cast(tf.constant(t, tf.int64), dt)
        scalars = {
            "beta1_power": tf.pow(beta1, local_step),
            "beta2_power": tf.pow(beta2, local_step),
            "lr": tf.constant(_f(h.lr_at(t)), dt),
            "beta1": beta1,
            "beta2": beta2,
            "epsilon": tf.constant(_f(h.eps), dt),
        }
        for k, var in enumerate(self.vars):
            grad = self._tf_grad(grads[k], self.shapes[k])
            if self.vhat is not None:
                tf.raw_ops.ResourceApplyAdamWithAmsgrad(
                    var=var.handle,
                    m=self.m[k].handle,
                    v=self.v[k].handle,
                    vhat=self.vhat[k].handle,
                    grad=grad,
                    **scalars,
                )
            else:
                tf.raw_ops.ResourceApplyAdam(
                    var=var.handle,
                    m=self.m[k].handle,
                    v=self.v[k].handle,
                    grad=grad,
                    use_nesterov=self.use_nesterov,
                    **scalars,
                )
        self._step = t

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """The raw kernel called once on variables holding the state, scalars as in ``step``."""
        h, options, before = step.hyper, step.info.options, step.before
        amsgrad = bool(options.get("amsgrad"))
        body = [
            f"var = tf.Variable({value_literal(before.params[0])})",
            f"m = tf.Variable({value_literal(before.m[0])})",
            f"v = tf.Variable({value_literal(before.v[0])})",
        ]
        results = {"param": "var.numpy()", "m": "m.numpy()", "v": "v.numpy()"}
        if amsgrad:
            body.append(f"vhat = tf.Variable({value_literal(before.v_max[0])})")
            results["v_max"] = "vhat.numpy()"
        body += [
            f"beta1 = tf.constant({python_float(h.beta1)}, DTYPE)",
            f"beta2 = tf.constant({python_float(h.beta2)}, DTYPE)",
            f"t = tf.cast(tf.constant({step.step + 1}, tf.int64), DTYPE)  # the step being taken",
            "# bias-correction powers as tf_keras's legacy Adam forms them: tf.pow in the dtype",
        ]
        op = "ResourceApplyAdamWithAmsgrad" if amsgrad else "ResourceApplyAdam"
        nesterov = bool(options.get("use_nesterov", False))
        args = [
            "var=var.handle",
            "m=m.handle",
            "v=v.handle",
            *(["vhat=vhat.handle"] if amsgrad else []),
            "beta1_power=tf.pow(beta1, t)",
            "beta2_power=tf.pow(beta2, t)",
            f"lr=tf.constant({python_float(step.lr)}, DTYPE)",
            "beta1=beta1",
            "beta2=beta2",
            f"epsilon=tf.constant({python_float(h.eps)}, DTYPE)",
            f"grad={step.grad_literal()}",
            *([] if amsgrad else [f"use_nesterov={nesterov!r}"]),
        ]
        body += [f"tf.raw_ops.{op}(", *[f"    {a}," for a in args], ")"]
        return Program(list(_SCRIPT_IMPORTS), _script_helpers(step.dtype), body, results)


# ---------------------------------------------------------------- tf.compat.v1


class TfV1Adam(Adapter):
    """``tf.compat.v1.train.AdamOptimizer`` in graph mode, run by a ``tf.compat.v1.Session``.

    TF1 keeps ``beta1_power``/``beta2_power`` as float32 non-slot variables whatever
    the variable dtype, initialised to beta and multiplied by beta (float32) after
    each step (``_finish``): the variable holds the power the *next* step uses.
    Our ``extras`` hold ``beta^step`` as the power the *last* step used, P_step
    (P_0 = 1), so the TF variable is always ``float32(P_step * float32(beta))``.
    That product is computed here with the same float32 multiply TF does, so the
    conversion is exact in both directions; the adapter remembers P_step itself
    because it cannot be recovered from the rounded product. Extras are 0-d arrays
    of the variable dtype for float32/float64 (float32 values are exact there) and
    float32 for float16/bfloat16, which cannot hold them.

    lr, beta1, beta2 and epsilon are float32 tensors (Python floats converted by
    ``_prepare``) cast to the variable dtype inside the ops; an lr schedule is fed
    through a float32 placeholder. TF1 has no step counter; it is tracked here.
    """

    framework = "tensorflow"
    dtypes = TF_DTYPES
    sparse = True

    def _build(self) -> None:
        reject_unused(self.hyper, self.name)
        tf = self.tf = _tf()
        v1 = tf.compat.v1
        h = self.hyper
        self.tf_dtype = tf.as_dtype(self.dtype)
        self.np_dtype = np.dtype(self.tf_dtype.as_numpy_dtype)
        self.extras_dtype = self.np_dtype if self.dtype in ("float32", "float64") else np.float32
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.vars = [
                v1.Variable(tf.zeros(s, self.tf_dtype), name=f"param{k}")
                for k, s in enumerate(self.shapes)
            ]
            self.lr_ph = v1.placeholder(tf.float32, [], name="lr")
            self.opt = v1.train.AdamOptimizer(
                learning_rate=self.lr_ph if isinstance(h.lr, Schedule) else _f(h.lr),
                beta1=_f(h.beta1),
                beta2=_f(h.beta2),
                epsilon=_f(h.eps),
            )
            self._ops: dict[tuple[bool, ...], tuple[Any, list[Any]]] = {}
            self._apply_op(tuple(False for _ in self.shapes))  # creates slots and powers
            self.m = [self.opt.get_slot(x, "m") for x in self.vars]
            self.v = [self.opt.get_slot(x, "v") for x in self.vars]
            self.powers = list(self.opt._get_beta_accumulators())
            self._assigns = {}
            for var in [*self.vars, *self.m, *self.v, *self.powers]:
                ph = v1.placeholder(var.dtype.base_dtype, var.shape)
                self._assigns[var.name] = (ph, var.assign(ph))
            init = v1.global_variables_initializer()
        self.sess = v1.Session(graph=self.graph)
        self.sess.run(init)
        self.beta32 = [np.float32(_f(h.beta1)), np.float32(_f(h.beta2))]
        self._step = 0
        self._p = [np.float32(1), np.float32(1)]

    def _apply_op(self, pattern: tuple[bool, ...]) -> tuple[Any, list[Any]]:
        """The apply_gradients op for one dense/sparse pattern and its gradient placeholders."""
        if pattern in self._ops:
            return self._ops[pattern]
        tf, v1 = self.tf, self.tf.compat.v1
        with self.graph.as_default():
            feeds, grads = [], []
            for sparse, shape in zip(pattern, self.shapes, strict=True):
                if sparse:
                    values = v1.placeholder(self.tf_dtype, (None, *shape[1:]))
                    indices = v1.placeholder(tf.int64, (None,))
                    feeds.append((values, indices))
                    grads.append(tf.IndexedSlices(values, indices, tf.constant(shape, tf.int64)))
                else:
                    ph = v1.placeholder(self.tf_dtype, shape)
                    feeds.append(ph)
                    grads.append(ph)
            op = self.opt.apply_gradients(list(zip(grads, self.vars, strict=True)))
        self._ops[pattern] = (op, feeds)
        return op, feeds

    def _set(self, var: Any, value: Any) -> None:
        ph, op = self._assigns[var.name]
        self.sess.run(op, {ph: np.asarray(value, dtype=var.dtype.base_dtype.as_numpy_dtype)})

    def set_state(self, state: State) -> None:
        for k, var in enumerate(self.vars):
            self._set(var, state.params[k])
            self._set(self.m[k], state.m[k])
            self._set(self.v[k], state.v[k])
        self._step = state.step
        for i, key in enumerate(("beta1_power", "beta2_power")):
            if key in state.extras:
                p = np.float32(np.asarray(state.extras[key]))  # TF can hold nothing finer
            else:  # what TF1 holds after `step` steps: P_t = fl32(P_{t-1} * fl32(beta))
                p = np.float32(1)
                for _ in range(state.step):
                    p = np.float32(p * self.beta32[i])
            self._p[i] = p
            self._set(self.powers[i], np.float32(p * self.beta32[i]))

    def get_state(self) -> State:
        read = self.sess.run([self.vars, self.m, self.v, self.powers])
        params, m, v, powers = read
        for i in range(2):  # the invariant the extras conversion relies on
            expected = np.float32(self._p[i] * self.beta32[i])
            # TF runs its kernels with denormals flushed to zero: a subnormal product reads 0
            flushed = abs(expected) < np.finfo(np.float32).tiny and powers[i] == 0
            if powers[i] != expected and not flushed:
                raise RuntimeError(
                    f"beta power out of sync: TF holds {powers[i]!r}, expected {expected!r}"
                )
        arr = lambda xs: [np.array(x, dtype=self.np_dtype, copy=True) for x in xs]  # noqa: E731
        extras = {
            "beta1_power": np.asarray(self._p[0], dtype=self.extras_dtype),
            "beta2_power": np.asarray(self._p[1], dtype=self.extras_dtype),
        }
        return State(arr(params), arr(m), arr(v), None, self._step, extras)

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        pattern = tuple(isinstance(g, SparseRows) for g in grads)
        op, feeds = self._apply_op(pattern)
        feed: dict[Any, Any] = {}
        for g, ph, shape in zip(grads, feeds, self.shapes, strict=True):
            if isinstance(g, SparseRows):
                values = np.asarray(g.values, dtype=self.np_dtype)
                feed[ph[0]] = values.reshape((len(g.indices), *shape[1:]))
                feed[ph[1]] = np.asarray(g.indices, dtype=np.int64)
            else:
                feed[ph] = np.asarray(g, dtype=self.np_dtype).reshape(shape)
        t = self._step + 1
        if isinstance(self.hyper.lr, Schedule):
            feed[self.lr_ph] = np.float32(_f(self.hyper.lr_at(t)))
        used = self.sess.run(self.powers)  # the powers this step uses become P_t
        self.sess.run(op, feed)
        self._p = [np.float32(used[0]), np.float32(used[1])]
        self._step = t

    def close(self) -> None:
        sess = getattr(self, "sess", None)
        if sess is not None:
            sess.close()
            self.sess = None

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """The graph built as the adapter builds it (gradient fed through placeholders),
        slots and the private beta-power accumulators assigned, one session run."""
        h, before = step.hyper, step.before
        powers = []
        for key, beta in (("beta1_power", h.beta1), ("beta2_power", h.beta2)):
            # TF1's variable holds the power the NEXT step divides by: fl32(P_step * fl32(beta))
            used = np.float32(np.asarray(before.extras[key], np.float64))
            powers.append(hex_float(np.float32(used * np.float32(float(beta)))))
        kwargs = {
            "learning_rate": float(step.lr),
            "beta1": float(h.beta1),
            "beta2": float(h.beta2),
            "epsilon": float(h.eps),
        }
        grad, feed = _v1_gradient_feed(step)
        body = [
            "v1 = tf.compat.v1",
            "graph = tf.Graph()",
            "with graph.as_default():",
            f'    var = v1.Variable({value_literal(before.params[0])}, name="param0")',
            *grad,
            f"    opt = v1.train.AdamOptimizer({keyword_literal(kwargs)})",
            "    train = opt.apply_gradients([(grad, var)])",
            '    m, v = opt.get_slot(var, "m"), opt.get_slot(var, "v")',
            "    # private float32 accumulators holding the powers the NEXT step divides by,",
            "    # beta^t, as TF1 forms them after step t - 1: fl32(beta^(t-1) * fl32(beta))",
            "    beta1_power, beta2_power = opt._get_beta_accumulators()",
            "    load = tf.group(",
            f"        m.assign({value_literal(before.m[0])}),",
            f"        v.assign({value_literal(before.v[0])}),",
            f'        beta1_power.assign(tf.constant(float.fromhex("{powers[0]}"), tf.float32)),',
            f'        beta2_power.assign(tf.constant(float.fromhex("{powers[1]}"), tf.float32)),',
            "    )",
            "    init = v1.global_variables_initializer()",
            "with v1.Session(graph=graph) as sess:",
            "    sess.run(init)",
            "    sess.run(load)",
            f"    sess.run(train, {{{', '.join(feed)}}})".replace("'", '"'),
            '    result = dict(zip(["param", "m", "v"], sess.run([var, m, v])))',
        ]
        results = {"param": 'result["param"]', "m": 'result["m"]', "v": 'result["v"]'}
        helpers = [
            *_script_helpers(step.dtype),
            "",
            "",
            "def host(hexes, shape):",
            "    return exact(hexes, shape).astype(DTYPE.as_numpy_dtype)",
        ]
        return Program(list(_SCRIPT_IMPORTS), helpers, body, results)


def _v1_gradient_feed(step: StepToReproduce) -> tuple[list[str], list[str]]:
    """The graph lines making ``grad`` from placeholders, and the session's feed entries.

    The gradient is fed, as the adapter feeds it: a constant gradient lets graph
    optimisation fold the sparse update into other arithmetic.
    """
    g = step.grads[0]
    if isinstance(g, SparseRows):
        values = np.asarray(g.values)
        graph = [
            f"    values = v1.placeholder(DTYPE, {(None, *values.shape[1:])!r})",
            "    indices = v1.placeholder(tf.int64, (None,))",
            f"    dense_shape = tf.constant({list(step.shape)!r}, tf.int64)",
            "    grad = tf.IndexedSlices(values, indices, dense_shape)",
        ]
        feed = [
            f"values: host({hex_floats(values)!r}, {values.shape!r})",
            f"indices: np.asarray({[int(i) for i in np.asarray(g.indices)]!r}, dtype=np.int64)",
        ]
        return graph, feed
    graph = [f"    grad = v1.placeholder(DTYPE, {step.shape!r})"]
    return graph, [f"grad: host({hex_floats(g)!r}, {step.shape!r})"]


_TFK = "adamspec.impl.adapters.tensorflow:TfKerasAdam"
_TFK_LEGACY = "adamspec.impl.adapters.tensorflow:TfKerasLegacyAdam"
_RAW = "adamspec.impl.adapters.tensorflow:TfRawAdam"

INFOS = [
    AdapterInfo("tf_keras.Adam", "tf_keras", "tf_keras.Adam", _TFK),
    AdapterInfo(
        "tf.function(jit_compile=True)(tf_keras.Adam)",
        "tf_keras",
        "tf_keras.Adam",
        "adamspec.impl.adapters.tensorflow:TfKerasCompiledAdam",
        eager_counterpart="tf_keras.Adam",
    ),
    AdapterInfo(
        "tf_keras.Adam(adaptive_epsilon=True)",
        "tf_keras",
        "tf_keras.Adam[adaptive_epsilon]",
        _TFK,
        {"adaptive_epsilon": True},
    ),
    AdapterInfo("tf_keras.optimizers.legacy.Adam", "tf_keras", "tf.raw.ApplyAdam", _TFK_LEGACY),
    AdapterInfo(
        "tf.v1.AdamOptimizer",
        "tensorflow",
        "tf.v1.AdamOptimizer",
        "adamspec.impl.adapters.tensorflow:TfV1Adam",
    ),
    AdapterInfo("tf.raw.ResourceApplyAdam", "tensorflow", "tf.raw.ApplyAdam", _RAW),
    AdapterInfo(
        "tf.raw.ResourceApplyAdam(use_nesterov=True)",
        "tensorflow",
        "tf.raw.ApplyAdam[use_nesterov]",
        _RAW,
        {"use_nesterov": True},
    ),
    AdapterInfo(
        "tf.raw.ResourceApplyAdamWithAmsgrad",
        "tensorflow",
        "tf.raw.ApplyAdamWithAmsgrad",
        _RAW,
        {"amsgrad": True},
    ),
]
