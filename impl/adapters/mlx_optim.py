"""MLX (Apple's array framework, on the Linux CPU through ``mlx[cpu]``): ``Adam`` and ``AdamW``.

``mlx.optimizers.Adam(learning_rate, betas, eps, bias_correction=False)``: by default MLX
applies **no bias correction** (``w - lr m / (sqrt(v) + eps)``), where every other
framework divides by ``1 - beta^t``; ``bias_correction=True`` gives Algorithm 1.
``AdamW`` multiplies the parameter by ``1 - lr wd`` (float32 arithmetic on the held
learning rate) before the same step. MLX 0.32 has no AMSGrad: nothing is registered
for it (tests/test_adapters_mlx.py fails once an installed MLX grows the argument).

The parameters are one pytree (``{"p0": ..., "p1": ...}``) driven with
``opt.apply_gradients`` (what ``opt.update(model, grads)`` calls); the state is
``opt.state``: ``step`` (uint64, steps taken), ``learning_rate`` (a float32 array) and
``m``/``v`` per parameter. The arithmetic (optimizers.py ``Adam.apply_single``):
``b1 * m + (1 - b1) * g`` with Python-float betas, so ``b1`` is cast to the dtype and
``1 - b1`` is formed in binary64 first (hyper_precision ``param_dtype_via_float64``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adamspec.impl.adapters.base import (
    Adapter,
    AdapterInfo,
    State,
    numpy_dtype,
    reject_unused,
)
from adamspec.impl.adapters.repro import Program, StepToReproduce, keyword_literal, value_literal
from adamspec.spec.hyper import Hyper, Schedule

#: Steps covered by the learning-rate table of a schedule (the last value holds afterwards).
SCHEDULE_STEPS = 10_000


def _key(k: int) -> str:
    return f"p{k}"


class MlxAdam(Adapter):
    """``mlx.optimizers.<cls>`` over a dict of ``mx.array`` (one entry per tensor).

    options: ``cls`` (``Adam`` or ``AdamW``) and constructor keywords (``bias_correction``).
    """

    framework = "mlx"
    # float64 runs on the CPU only, which is where adamspec runs MLX
    dtypes = ("float32", "float64", "float16", "bfloat16")

    def _build(self) -> None:
        import mlx.core as mx
        import mlx.optimizers as optim

        self.mx = mx
        options = dict(self.options)
        name = options.pop("cls", "Adam")
        h = self.hyper
        reject_unused(h, self.name, decay=name == "AdamW")
        self.mx_dtype = getattr(mx, self.dtype)
        self.optimizer = getattr(optim, name)(
            **_constructor_kwargs(h, name, self._learning_rate(), options)
        )
        self.params = {_key(k): self._array(np.zeros(s)) for k, s in enumerate(self.shapes)}
        self.optimizer.init(self.params)

    def _learning_rate(self) -> Any:
        """A float, or for a :class:`Schedule` MLX's form: ``step -> lr_at(step + 1)``
        (MLX calls it with the steps taken before the one being taken)."""
        h, mx = self.hyper, self.mx
        if not isinstance(h.lr, Schedule):
            return float(h.lr)
        table = mx.array([float(h.lr_at(t)) for t in range(1, SCHEDULE_STEPS + 1)])
        return lambda step: table[mx.minimum(step, SCHEDULE_STEPS - 1)]

    def _array(self, values: Any) -> Any:
        """An ``mx.array`` of the dtype holding ``values`` (which it represents exactly)."""
        # from float64: mx.array would round a float64 NumPy array to float32 by default
        host = np.asarray(values, dtype=np.float64)
        return self.mx.array(host, dtype=self.mx.float64).astype(self.mx_dtype)

    def _host(self, array: Any) -> np.ndarray:
        wide = np.array(array.astype(self.mx.float64), copy=True)
        return wide.astype(numpy_dtype(self.dtype))

    def set_state(self, state: State) -> None:
        mx, opt = self.mx, self.optimizer
        self.params = {_key(k): self._array(p) for k, p in enumerate(state.params)}
        for k in range(len(self.shapes)):
            opt.state[_key(k)] = {"m": self._array(state.m[k]), "v": self._array(state.v[k])}
        opt.state["step"] = mx.array(state.step, dtype=mx.uint64)
        mx.eval(self.params, opt.state)

    def get_state(self) -> State:
        opt = self.optimizer
        slots = [opt.state[_key(k)] for k in range(len(self.shapes))]
        return State(
            [self._host(self.params[_key(k)]) for k in range(len(self.shapes))],
            [self._host(s["m"]) for s in slots],
            [self._host(s["v"]) for s in slots],
            None,
            int(opt.state["step"].item()),
        )

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        tree = {_key(k): self._array(g) for k, g in enumerate(grads)}
        self.params = self.optimizer.apply_gradients(tree, self.params)
        self.mx.eval(self.params, self.optimizer.state)

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """``mlx.optimizers.<cls>`` with ``opt.state`` set as a resumed run's, one
        ``apply_gradients``."""
        options = dict(step.info.options)
        name = options.pop("cls", "Adam")
        kwargs = _constructor_kwargs(step.hyper, name, float(step.lr), options)
        before = step.before
        body = [
            f"opt = optim.{name}({keyword_literal(kwargs)})",
            f'params = {{"p0": {value_literal(before.params[0])}}}',
            "opt.init(params)",
            "# the state a resumed run holds: steps taken (uint64) and the moments",
            f'opt.state["step"] = mx.array({step.step}, dtype=mx.uint64)',
            f'opt.state["p0"]["m"] = {value_literal(before.m[0])}',
            f'opt.state["p0"]["v"] = {value_literal(before.v[0])}',
            f'params = opt.apply_gradients({{"p0": {step.grad_literal()}}}, params)',
        ]
        results = {
            "param": 'host(params["p0"])',
            "m": 'host(opt.state["p0"]["m"])',
            "v": 'host(opt.state["p0"]["v"])',
        }
        helpers = [
            f"DTYPE = mx.{step.dtype}",
            "",
            "",
            "def value(hexes, shape):",
            "    # float64 first (mx.array would make float32 of it), then the dtype, which",
            "    # holds these values exactly: no rounding",
            "    return mx.array(exact(hexes, shape), dtype=mx.float64).astype(DTYPE)",
            "",
            "",
            "def host(a):",
            "    return np.array(a.astype(mx.float64))",
        ]
        return Program(["import mlx.core as mx", "import mlx.optimizers as optim"], helpers,
                       body, results)  # fmt: skip


def _constructor_kwargs(
    h: Hyper, name: str, learning_rate: Any, options: dict[str, Any]
) -> dict[str, Any]:
    """``mlx.optimizers.<name>``'s keywords as the adapter and its scripts pass them (only
    AdamW takes weight_decay); ``options`` last, without ``cls``."""
    kwargs: dict[str, Any] = {
        "learning_rate": learning_rate,
        "betas": [float(h.beta1), float(h.beta2)],
        "eps": float(h.eps),
    }
    if name == "AdamW":
        kwargs["weight_decay"] = float(h.weight_decay)
    kwargs.update(options)
    return kwargs


def _info(name: str, documented: str, cls: str = "Adam", **options: Any) -> AdapterInfo:
    options = {"cls": cls, **options}
    return AdapterInfo(name, "mlx", documented, "adamspec.impl.adapters.mlx_optim:MlxAdam", options)


INFOS = [
    _info("mlx.Adam", "mlx.Adam"),
    _info("mlx.Adam(bias_correction=True)", "mlx.Adam[bias_correction]", bias_correction=True),
    _info("mlx.AdamW", "mlx.AdamW", cls="AdamW"),
]
