"""Keras 3 ``Adam``/``AdamW`` on each backend (tensorflow, jax, torch).

``KERAS_BACKEND`` is fixed when keras is first imported, so every backend runs
in its own worker process (:class:`adamspec.impl.adapters.worker.ProcessAdapter`); the
class here is what runs inside the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adamspec.impl.adapters.base import Adapter, AdapterInfo, State, Unsupported, numpy_dtype
from adamspec.impl.adapters.repro import Program, StepToReproduce, keyword_literal, value_literal
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper

BACKENDS = ("tensorflow", "jax", "torch")


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
        options = dict(self.options)
        cls = getattr(keras.optimizers, options.pop("cls", "Adam"))
        h = self.hyper
        kwargs = _optimizer_kwargs(h, _schedule(keras, h) or float(h.lr_at(1)), options)
        self.amsgrad = bool(kwargs.get("amsgrad"))
        self.variables = [
            keras.Variable(np.zeros(shape), dtype=self.dtype, name=f"p{k}")
            for k, shape in enumerate(self.shapes)
        ]
        self.optimizer = cls(**kwargs)
        self.optimizer.build(self.variables)
        self.version = f"{keras.__version__} ({self.backend})"

    def _assign(self, variable: Any, value: np.ndarray) -> None:
        variable.assign(self.keras.ops.convert_to_tensor(np.asarray(value), dtype=self.dtype))

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

    def _numpy(self, variable: Any) -> np.ndarray:
        value = self.keras.ops.convert_to_numpy(variable)
        return np.asarray(value).astype(numpy_dtype(self.dtype), copy=True)

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
        try:
            self.optimizer.apply_gradients(zip(tensors, self.variables, strict=True))
        except (TypeError, ValueError, NotImplementedError) as exc:
            raise Unsupported(f"{self.name}: {str(exc).splitlines()[0]}") from None

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


def _info(name: str, documented: str, backend: str, **inner: Any) -> AdapterInfo:
    return AdapterInfo(
        f"{name}[{backend}]",
        "keras",
        documented,
        "adamspec.impl.adapters.worker:ProcessAdapter",
        {
            "target": "adamspec.impl.adapters.keras3:KerasOptimizer",
            "env": {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
            "inner": inner,
        },
    )


INFOS = [
    info
    for backend in BACKENDS
    for info in (
        _info("keras.Adam", "keras.Adam", backend),
        _info("keras.Adam(amsgrad=True)", "keras.Adam[amsgrad]", backend, amsgrad=True),
        _info("keras.AdamW", "keras.AdamW", backend, cls="AdamW"),
    )
]
