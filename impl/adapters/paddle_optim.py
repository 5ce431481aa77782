"""PaddlePaddle 3.3 (CPU wheel): ``paddle.optimizer.Adam`` and ``AdamW``, their C++ kernels.

``opt.step()`` in dynamic-graph mode calls the ``adam_`` / ``adamw_`` kernels
(paddle/phi/kernels/cpu/adam_kernel.cc, adamw_kernel.cc). Per parameter they hold
``moment1``, ``moment2`` (and ``moment2_max`` with ``amsgrad``) and two accumulated
powers, ``beta1_pow_acc``/``beta2_pow_acc``: created as ``beta``, multiplied by ``beta``
in the parameter dtype after each step, so they hold the power the *next* step divides
by. The State's ``extras`` hold the power the *last* step used, P_step (P_0 = 1), as
for ``tf.v1.AdamOptimizer``; the accumulator is ``fl(P_step * fl(beta))``, computed here
with the same multiply, and P_step is remembered because the rounded product cannot be
divided back. Paddle has no step counter; the adapter counts.

Paddle runs in its own worker process (:class:`~adamspec.impl.adapters.worker.ProcessAdapter`):
importing it next to TensorFlow in one process can clash, and a worker keeps the harness
safe from either. Its CPU kernels exist for float32 and float64 only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from adamspec.impl.adapters.base import (
    Adapter,
    AdapterInfo,
    State,
    Unsupported,
    lr_schedule_factor,
    reject_unused,
)
from adamspec.impl.adapters.repro import (
    Program,
    StepToReproduce,
    hex_float,
    keyword_literal,
    value_literal,
)
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper

#: The accumulators of ``paddle.optimizer.Adam``/``AdamW`` by the State field they hold.
SLOTS = {"m": "moment1", "v": "moment2", "v_max": "moment2_max"}
POWERS = {"beta1_power": "beta1_pow_acc", "beta2_power": "beta2_pow_acc"}


#: Paddle's AdamW on a SelectedRows gradient fails reading a dimension from memory it never
#: set ("... but received dimension is 899957634"): the number changes run to run, and a
#: report must not.
_UNSET_DIMENSION = re.compile(r"(received dimension is )-?\d+")


def _steady(message: str) -> str:
    """Paddle's error text without the value it read from uninitialized memory."""
    return _UNSET_DIMENSION.sub(r"\1<uninitialized>", message)


class PaddleAdam(Adapter):
    """``paddle.optimizer.<cls>`` over one parameter per tensor, on the CPU.

    options: ``cls`` (``Adam`` or ``AdamW``) and constructor keywords (``amsgrad``,
    ``lazy_mode``). A learning-rate schedule is a ``paddle.optimizer.lr.LambdaDecay``
    stepped after every step, as torch's adapter drives ``LambdaLR``.
    """

    framework = "paddle"
    dtypes = ("float32", "float64")
    sparse = True

    def _build(self) -> None:
        import paddle

        self.paddle = paddle
        paddle.set_device("cpu")
        options = dict(self.options)
        name = options.pop("cls", "Adam")
        self.amsgrad = bool(options.get("amsgrad"))
        h = self.hyper
        reject_unused(h, self.name, decay=True)
        self.params = [
            paddle.create_parameter(
                list(shape), self.dtype, default_initializer=paddle.nn.initializer.Constant(0.0)
            )
            for shape in self.shapes
        ]
        factor = lr_schedule_factor(h)
        base = float(h.lr_at(1))
        self.scheduler = (
            None
            if factor is None
            else paddle.optimizer.lr.LambdaDecay(base, lambda epoch: factor(epoch + 1))
        )
        lr = base if self.scheduler is None else self.scheduler
        kwargs = _constructor_kwargs(h, name, lr, options)
        self.optimizer = getattr(paddle.optimizer, name)(parameters=self.params, **kwargs)
        # the accumulators exist only after a first step unless created now, as step() does
        block = paddle.static.default_main_program().global_block()
        self.optimizer._create_accumulators(block, self.params)
        self.beta = [self._scalar(float(h.beta1)), self._scalar(float(h.beta2))]
        self._powers = [self._scalar(1.0), self._scalar(1.0)]
        self._step = 0

    def _scalar(self, x: float) -> np.ndarray:
        return np.asarray(x, dtype=self.dtype)

    def _slot(self, slot: str, k: int) -> Any:
        return self.optimizer._accumulators[slot][self.params[k].name]

    def set_state(self, state: State) -> None:
        for k, param in enumerate(self.params):
            param.set_value(np.asarray(state.params[k], dtype=self.dtype))
            self._slot("moment1", k).set_value(np.asarray(state.m[k], dtype=self.dtype))
            self._slot("moment2", k).set_value(np.asarray(state.v[k], dtype=self.dtype))
            if self.amsgrad:
                if state.v_max is None:
                    raise ValueError(f"{self.name} uses AMSGrad: the state needs v_max")
                self._slot("moment2_max", k).set_value(np.asarray(state.v_max[k], self.dtype))
        for i, key in enumerate(POWERS):
            if key in state.extras:
                power = self._scalar(np.asarray(state.extras[key], np.float64))
            else:  # what Paddle holds after `step` steps: P_t = fl(P_{t-1} * fl(beta))
                power = self._scalar(1.0)
                for _ in range(state.step):
                    power = power * self.beta[i]
            self._powers[i] = power
            for k in range(len(self.params)):
                self._slot(POWERS[key], k).set_value((power * self.beta[i]).reshape(1))
        self._step = state.step
        if self.scheduler is not None:
            self.scheduler.last_epoch = state.step
            self.scheduler.last_lr = self.scheduler.get_lr()

    def _read(self, tensor: Any) -> np.ndarray:
        return np.array(tensor.numpy(), dtype=self.dtype, copy=True)

    def get_state(self) -> State:
        held = self._read(self._slot("beta1_pow_acc", 0))[0]
        if held != self._powers[0] * self.beta[0]:  # the invariant the extras rely on
            raise RuntimeError(f"beta1 power out of sync: Paddle holds {held!r}")
        slots = {
            field: [self._read(self._slot(slot, k)) for k in range(len(self.params))]
            for field, slot in SLOTS.items()
            if field != "v_max" or self.amsgrad
        }
        return State(
            [self._read(p) for p in self.params],
            slots["m"],
            slots["v"],
            slots.get("v_max"),
            self._step,
            {key: np.array(p, copy=True) for key, p in zip(POWERS, self._powers, strict=True)},
        )

    def _set_gradient(self, k: int, g: Any) -> None:
        """Dense: the tensor as the parameter's gradient. Sparse: a ``SelectedRows`` gradient
        made as a user's model makes one, by backpropagating through a sparse embedding
        lookup (``embedding(indices, weight, sparse=True)``): its rows are the indices
        (duplicates kept) and its values exactly the upstream gradient."""
        paddle, param = self.paddle, self.params[k]
        param.clear_gradient(set_to_zero=False)
        if not isinstance(g, SparseRows):
            param._set_grad_ivar(paddle.to_tensor(np.asarray(g, dtype=self.dtype)))
            return
        if len(self.shapes[k]) != 2:
            raise Unsupported(
                f"{self.name}: sparse rows of a {len(self.shapes[k])}-d tensor (Paddle's "
                "sparse gradients come from 2-d embedding tables)"
            )
        indices = paddle.to_tensor(np.asarray(g.indices, dtype=np.int64))
        values = paddle.to_tensor(np.asarray(g.values, dtype=self.dtype))
        rows = paddle.nn.functional.embedding(indices, param, sparse=True)
        (rows * values).sum().backward()

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        used = [self._read(self._slot(POWERS[key], 0))[0] for key in POWERS]
        for k, g in enumerate(grads):
            self._set_gradient(k, g)
        try:
            self.optimizer.step()
        except OSError as exc:
            raise OSError(_steady(str(exc))) from None
        if self.scheduler is not None:
            self.scheduler.step()
        self._powers = [self._scalar(p) for p in used]  # the powers this step used: P_t
        self._step += 1

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """``paddle.optimizer.<cls>`` with its accumulators created and set (private
        ``_accumulators``, as the adapter sets them), one ``opt.step()``."""
        h, options = step.hyper, dict(step.info.options)
        name = options.pop("cls", "Adam")
        kwargs = _constructor_kwargs(h, name, float(step.lr), options)
        before = step.before
        state = {"m": before.m, "v": before.v, "v_max": before.v_max}
        components = ("m", "v", "v_max") if options.get("amsgrad") else ("m", "v")
        powers = []
        for key, beta in (("beta1_power", h.beta1), ("beta2_power", h.beta2)):
            # the accumulator holds the power the NEXT step divides by: fl(P_step * fl(beta))
            dtype = np.dtype(step.dtype)
            used = dtype.type(np.asarray(before.extras[key], np.float64))
            powers.append(hex_float(used * dtype.type(float(beta))))
        body = [
            'paddle.set_device("cpu")',
            f"p = paddle.create_parameter({list(step.shape)!r}, DTYPE)",
            f"p.set_value({value_literal(before.params[0])})",
            f"opt = paddle.optimizer.{name}(parameters=[p], {keyword_literal(kwargs)})",
            "# private: create the accumulators now (opt.step() would on its first call)",
            "opt._create_accumulators(paddle.static.default_main_program().global_block(), [p])",
            "slots = {k: v[p.name] for k, v in opt._accumulators.items()}",
            *(f'slots["{SLOTS[c]}"].set_value({value_literal(state[c][0])})' for c in components),
            "# the accumulated powers the NEXT step divides by: fl(beta^(t-1) * fl(beta))",
            f'slots["beta1_pow_acc"].set_value(value(["{powers[0]}"], (1,)))',
            f'slots["beta2_pow_acc"].set_value(value(["{powers[1]}"], (1,)))',
            *_gradient_lines(step),
            "opt.step()",
        ]
        results = {"param": "p.numpy()", **{c: f'slots["{SLOTS[c]}"].numpy()' for c in components}}
        helpers = [
            f'DTYPE = "{step.dtype}"',
            "",
            "",
            "def value(hexes, shape):",
            "    return paddle.to_tensor(exact(hexes, shape).astype(DTYPE))",
        ]
        return Program(["import paddle"], helpers, body, results)


def _gradient_lines(step: StepToReproduce) -> list[str]:
    """The script's gradient, set as the adapter sets it (a sparse one by backpropagating
    through ``embedding(..., sparse=True)``: a SelectedRows gradient)."""
    g = step.grads[0]
    if not isinstance(g, SparseRows):
        return [f"p._set_grad_ivar({step.grad_literal()})"]
    indices = [int(i) for i in np.asarray(g.indices)]
    return [
        f'indices = paddle.to_tensor({indices!r}, dtype="int64")',
        "rows = paddle.nn.functional.embedding(indices, p, sparse=True)",
        f"(rows * {value_literal(np.asarray(g.values))}).sum().backward()  # p.grad: SelectedRows",
    ]


def _constructor_kwargs(
    h: Hyper, name: str, learning_rate: Any, options: dict[str, Any]
) -> dict[str, Any]:
    """``paddle.optimizer.<name>``'s keywords as the adapter and its scripts pass them:
    Adam's float weight_decay is L2 regularisation (left out when zero, Paddle's default
    None), AdamW's the decoupled coefficient; ``options`` last, without ``cls``."""
    kwargs: dict[str, Any] = {
        "learning_rate": learning_rate,
        "beta1": float(h.beta1),
        "beta2": float(h.beta2),
        "epsilon": float(h.eps),
    }
    if name == "AdamW" or h.weight_decay:
        kwargs["weight_decay"] = float(h.weight_decay)
    kwargs.update(options)
    return kwargs


def _info(name: str, documented: str, cls: str = "Adam", **inner: Any) -> AdapterInfo:
    return AdapterInfo(
        name,
        "paddle",
        documented,
        "adamspec.impl.adapters.worker:ProcessAdapter",
        {
            "target": "adamspec.impl.adapters.paddle_optim:PaddleAdam",
            "env": {"GLOG_minloglevel": "2", "FLAGS_call_stack_level": "0"},
            "inner": {"cls": cls, **inner},
        },
    )


INFOS = [
    _info("paddle.Adam", "paddle.Adam"),
    _info("paddle.Adam(amsgrad=True)", "paddle.Adam[amsgrad]", amsgrad=True),
    _info("paddle.Adam(lazy_mode=True)", "paddle.Adam[lazy_mode]", lazy_mode=True),
    _info("paddle.AdamW", "paddle.AdamW", cls="AdamW"),
]
