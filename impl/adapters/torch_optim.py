"""PyTorch 2.13 optimizers: Adam (for-loop, foreach, fused, capturable, amsgrad,
decoupled weight decay), AdamW, SparseAdam with sparse COO gradients, RAdam."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from adamspec.impl.adapters.base import (
    Adapter,
    AdapterInfo,
    State,
    Unsupported,
    lr_schedule_factor,
    torch_to_numpy,
)
from adamspec.impl.adapters.compiled import HoldsCompiled
from adamspec.impl.adapters.repro import (
    Program,
    StepToReproduce,
    keyword_literal,
    value_literal,
    with_compiled_step,
)
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper, Schedule
from adamspec.spec.precision import precision_named

_TORCH_DTYPES = ("float64", "float32", "float16", "bfloat16")


class TorchOptimizer(Adapter):
    """One ``torch.optim`` optimizer over one Parameter per tensor.

    options: ``cls`` (Adam, AdamW, SparseAdam, RAdam) and the constructor keywords.
    A learning-rate schedule is driven by ``torch.optim.lr_scheduler.LambdaLR``.
    """

    framework = "torch"
    dtypes = _TORCH_DTYPES

    def _build(self) -> None:
        import torch

        self.torch = torch
        self._configure(**self._make_objects())
        self._step = 0

    def _make_objects(self) -> dict[str, Any]:
        """The parameters, the optimizer and its LambdaLR scheduler (None for a constant lr)."""
        torch = self.torch
        options = dict(self.options)
        name = options.pop("cls")
        dtype = getattr(torch, self.stored_dtype)
        params = [torch.nn.Parameter(torch.zeros(shape, dtype=dtype)) for shape in self.shapes]
        h = self.hyper
        optimizer = getattr(torch.optim, name)(
            params, **_constructor_kwargs(h, name, float(h.lr_at(1)), options)
        )
        factor = lr_schedule_factor(h)
        scheduler = (
            None
            if factor is None
            else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: factor(epoch + 1))
        )
        return {"params": params, "optimizer": optimizer, "scheduler": scheduler}

    @property
    def stored_dtype(self) -> str:
        """The dtype of the Parameters the optimizer steps (and of their state)."""
        return self.dtype

    def _configure(self, params: list[Any], optimizer: Any, scheduler: Any, **_: Any) -> None:
        self.params, self.optimizer, self.scheduler = params, optimizer, scheduler
        self.torch_dtype = params[0].dtype
        self.sparse = isinstance(optimizer, self.torch.optim.SparseAdam)
        self.amsgrad = bool(self.options.get("amsgrad"))

    def _run_step(self) -> None:
        self.optimizer.step()

    def _tensor(self, array: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(array).astype(np.float64)).to(
            self.torch_dtype
        )

    def set_state(self, state: State) -> None:
        torch = self.torch
        if self.amsgrad and state.v_max is None:
            raise ValueError(f"{self.name} uses AMSGrad: the state needs v_max")
        with torch.no_grad():
            for k, p in enumerate(self.params):
                p.copy_(self._tensor(state.params[k]))
                slots = self.optimizer.state[p]
                # the step is a float32 (default scalar dtype) tensor, as torch creates it
                values = {
                    "step": torch.tensor(float(state.step), dtype=torch.float32),
                    "exp_avg": self._tensor(state.m[k]),
                    "exp_avg_sq": self._tensor(state.v[k]),
                }
                if self.amsgrad:
                    values["max_exp_avg_sq"] = self._tensor(state.v_max[k])
                if set(slots) == set(values):
                    # into the tensors the optimizer holds: a compiled step's guards and
                    # static buffers stay valid
                    for key, value in values.items():
                        slots[key].copy_(value)
                else:
                    slots.clear()
                    slots.update(values)
        self._step = state.step
        if self.scheduler is not None:
            self.scheduler.last_epoch = state.step
            for group, base in zip(
                self.optimizer.param_groups, self.scheduler.base_lrs, strict=True
            ):
                group["lr"] = base * self.scheduler.lr_lambdas[0](state.step)

    def get_state(self) -> State:
        m, v, v_max = [], [], []
        for p in self.params:
            slots = self.optimizer.state.get(p, {})
            zeros = np.zeros(tuple(p.shape), dtype=torch_to_numpy(p).dtype)
            m.append(torch_to_numpy(slots["exp_avg"]).copy() if "exp_avg" in slots else zeros)
            v.append(torch_to_numpy(slots["exp_avg_sq"]).copy() if "exp_avg_sq" in slots else zeros)
            if self.amsgrad:
                slot = slots.get("max_exp_avg_sq")
                v_max.append(torch_to_numpy(slot).copy() if slot is not None else zeros)
        return State(
            [torch_to_numpy(p).copy() for p in self.params],
            m,
            v,
            v_max if self.amsgrad else None,
            self._step,
        )

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        torch = self.torch
        for p, g in zip(self.params, grads, strict=True):
            if isinstance(g, SparseRows):
                indices = torch.as_tensor(np.asarray(g.indices, dtype=np.int64)).reshape(1, -1)
                values = self._tensor(np.asarray(g.values))
                p.grad = torch.sparse_coo_tensor(
                    indices, values, tuple(p.shape), check_invariants=True
                )
            else:
                p.grad = self._tensor(g)
        try:
            self._run_step()
        except (RuntimeError, AssertionError) as exc:  # no kernel for this dtype or device
            raise Unsupported(f"{self.name} in {self.dtype}: {str(exc).splitlines()[0]}") from None
        if self.scheduler is not None:
            self.scheduler.step()
        self._step += 1

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """``torch.optim.<cls>`` on one Parameter whose ``opt.state`` is set as a resumed run's."""
        h, options = step.hyper, dict(step.info.options)
        name = options.pop("cls")
        if isinstance(h.lr, Schedule):
            # the adapter drives LambdaLR: lr = base_lr * (lr_t / lr_1), a binary64 product
            base = h.lr_at(1)
            lr = float(base) * (float(step.lr / base) if base else 0.0)
        else:
            lr = float(h.lr)
        kwargs = _constructor_kwargs(h, name, lr, options)
        before = step.before
        body = [
            f"p = torch.nn.Parameter({value_literal(before.params[0])})",
            f"opt = torch.optim.{name}([p], {keyword_literal(kwargs)})",
            "state = opt.state[p]  # the state a resumed run holds (adamspec's adapter sets it so)",
            f'state["step"] = torch.tensor({float(step.step)!r}, dtype=torch.float32)'
            "  # torch counts steps in a float32 tensor",
            f'state["exp_avg"] = {value_literal(before.m[0])}',
            f'state["exp_avg_sq"] = {value_literal(before.v[0])}',
        ]
        results = {
            "param": "p.detach().double()",
            "m": 'state["exp_avg"].double()',
            "v": 'state["exp_avg_sq"].double()',
        }
        if kwargs.get("amsgrad"):
            body.append(f'state["max_exp_avg_sq"] = {value_literal(before.v_max[0])}')
            results["v_max"] = 'state["max_exp_avg_sq"].double()'
        grad = step.grad_literal(
            lambda indices, values, shape: (
                f"torch.sparse_coo_tensor(torch.tensor([{indices}]), {values}, {shape!r})"
            )
        )
        body += [f"p.grad = {grad}", "opt.step()"]
        helpers = [
            f"DTYPE = torch.{step.dtype}",
            "",
            "",
            "def value(hexes, shape):",
            "    return torch.from_numpy(exact(hexes, shape)).to(DTYPE)",
        ]
        return Program(["import torch"], helpers, body, results)


class TorchMasterWeightsOptimizer(TorchOptimizer):
    """``torch.optim`` on float32 params for a model that computes in bfloat16: the master
    weight path of FSDP2's ``MixedPrecisionPolicy(param_dtype=torch.bfloat16)`` (torch
    2.13), on one rank (options: those of :class:`TorchOptimizer`).

    * torch/distributed/fsdp/_fully_shard/_fsdp_param.py:586-599 and 901: the sharded
      params keep their original dtype (float32: the master, ``State.master``); the
      forward all-gathers them ``.to(param_dtype)`` (_fsdp_common.py:173-178): the param
      the model computes with (``State.params``), read here the same way.
    * _fsdp_api.py:26-32 ("The optimizer step uses the sharded parameter in the original
      dtype") and _fsdp_collectives.py:696: the gradient, computed in bfloat16, is cast to
      the original dtype after the reduction (on one rank, the gradient itself): the
      harness's bfloat16 gradients arrive cast to float32.
    * The optimizer is plain ``torch.optim.Adam`` over those float32 params: its state
      follows them (float32 m and v).

    ``torch.autocast(dtype=torch.bfloat16)`` over float32 params presents the same
    optimizer with the same arrays (weights cast to bfloat16 per op, float32 gradients).
    """

    dtypes = ()
    precisions = ("bf16-fp32master",)

    @property
    def stored_dtype(self) -> str:
        return self.precision.master

    def set_state(self, state: State) -> None:
        """The params take ``state.master`` (without one, the params widened exactly)."""
        master = state.master
        if master is None:
            master = [np.asarray(p).astype(np.float32) for p in state.params]
        super().set_state(replace(state, params=master, master=None))

    def get_state(self) -> State:
        state = super().get_state()  # params: the float32 master
        compute = getattr(self.torch, self.dtype)
        params = [torch_to_numpy(p.detach().to(compute)).copy() for p in self.params]
        return replace(state, params=params, master=state.params)

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """The optimizer over one float32 Parameter holding the master; the 16-bit
        gradient cast to float32 as the adapter hands it over; the param read as the
        master's cast (:meth:`_master_program`)."""
        program = cls._master_program(step)
        program.body = [
            line.replace("p.grad = ", "p.grad = GRAD_DTYPE(") + ")  # the cast's gradient"
            if line.startswith("p.grad = ")
            else line
            for line in program.body
        ]
        return program

    @classmethod
    def _master_program(cls, step: StepToReproduce) -> Program:
        """:class:`TorchOptimizer`'s program on the master in float32 (values written
        exactly: every role's dtype fits in float32), the param and master shown too."""
        # the precision the adapter runs (a step recorded in another cannot come from it)
        runs = step.dtype if step.dtype in cls.precisions else cls.precisions[0]
        precision = precision_named(runs)
        before = step.before
        master = before.master if before.master is not None else before.params
        program = TorchOptimizer.reproduction_program(
            replace(step, dtype=precision.master, before=replace(before, params=master))
        )
        compute = f"torch.{precision.param}"
        program.helpers += [
            "",
            "",
            "def GRAD_DTYPE(g):",
            f"    return g.to({compute}).to(DTYPE)",
        ]
        program.results = {
            **program.results,
            "param": f"p.detach().to({compute}).double()",
            "master": "p.detach().double()",
        }
        return program


class TorchGradScalerOptimizer(TorchMasterWeightsOptimizer):
    """``torch.optim`` on float32 params with ``torch.autocast(dtype=torch.float16)`` and
    ``torch.amp.GradScaler`` (torch 2.13): PyTorch's automatic mixed precision recipe
    (docs "Automatic Mixed Precision examples": ``scaler.scale(loss).backward()``,
    ``scaler.step(optimizer)``, ``scaler.update()``).

    The float32 params are the master; autocast computes with their ``.to(float16)`` (the
    param, ``State.params``), so the gradient is the float16 backward's, cast to float32.
    The loss is scaled (torch/amp/grad_scaler.py:126-129: initial scale 2**16, halved on
    an inf/NaN, doubled after 2000 finite steps), so the gradient arrives as ``S g``
    rounded to float16 (inf where it overflows), cast to float32. ``scaler.step``
    (grad_scaler.py:302-375) multiplies it by ``1/S`` (a float32 reciprocal formed in
    binary64: exact for a power of two) and skips ``optimizer.step()`` if any value is
    not finite; ``update`` then halves the scale. The scale and its growth counter are
    ``State.extras`` ``loss_scale`` and ``loss_scale_steps``, as for Keras.
    """

    precisions = ("fp16-fp32master",)

    def _build(self) -> None:
        super()._build()
        self.scaler = self.torch.amp.GradScaler("cpu")

    def set_state(self, state: State) -> None:
        super().set_state(state)
        if "loss_scale" in state.extras:
            self._scale_of_loss()  # the scale exists once a loss was scaled
            self.scaler.update(float(state.extras["loss_scale"]))
            self.scaler._growth_tracker.fill_(int(state.extras["loss_scale_steps"]))

    def get_state(self) -> State:
        state = super().get_state()
        scale = self._scale_of_loss()
        tracker = self.scaler._growth_tracker
        extras = {
            **state.extras,
            "loss_scale": np.float32(scale.item()),
            "loss_scale_steps": np.int32(tracker.item()),
        }
        return replace(state, extras=extras)

    def _scale_of_loss(self) -> Any:
        """``S``, as ``scaler.scale(loss)`` multiplies a float32 loss by it."""
        return self.scaler.scale(self.torch.ones((), dtype=self.torch.float32))

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        torch, compute = self.torch, getattr(self.torch, self.dtype)
        scale = self._scale_of_loss()
        for p, g in zip(self.params, grads, strict=True):
            g32 = torch.from_numpy(np.asarray(g).astype(np.float32))  # exact: a float16 value
            p.grad = (g32 * scale).to(compute).to(p.dtype)  # the float16 backward's S g
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self._step = int(self.optimizer.state[self.params[0]]["step"])  # not moved if skipped

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """The optimizer over one float32 Parameter holding the master, stepped through a
        GradScaler: the gradient scaled in float16 as the backward pass computes it."""
        program = cls._master_program(step)
        scaler = ['scaler = torch.amp.GradScaler("cpu")', "scale = scaler.scale(torch.ones(()))"]
        if "loss_scale" in step.before.extras:
            extras = step.before.extras
            scaler += [
                f"scaler.update({float(extras['loss_scale'])!r})",
                f"scaler._growth_tracker.fill_({int(extras['loss_scale_steps'])})",
                "scale = scaler.scale(torch.ones(()))",
            ]
        body = []
        for line in program.body:
            if line.startswith("p.grad = "):
                body += scaler
                grad = line.removeprefix("p.grad = ")
                line = f"p.grad = GRAD_DTYPE({grad} * scale)  # the float16 backward's S g"
            elif line == "opt.step()":
                line = "scaler.step(opt)"
            body.append(line)
        program.body = [*body, "scaler.update()"]
        return program


class TorchCompiledOptimizer(HoldsCompiled, TorchOptimizer):
    """``torch.compile(optimizer.step)`` (inductor, C++ on the CPU), as PyTorch's recipe
    "Compiling the optimizer with torch.compile" runs it; state set and read as for eager.

    One compiled step per configuration, dtype, shapes and hyperparameters in the process
    (:mod:`adamspec.impl.adapters.compiled`): the first step of an entry traces and
    compiles (seconds), later adapters of that key reuse its parameters, optimizer and
    compiled step. ``dynamic=False``: every key gets kernels for its own shapes, so what
    is measured does not depend on which problems ran before (automatic dynamic shapes
    would switch to shape-generic kernels after the first recompile). Dynamo's recompile
    limit is raised and made an error, because at the limit torch.compile otherwise runs
    the step eagerly without saying so; TORCH_COMPILE_DISABLE is refused for the same reason.
    """

    def _build(self) -> None:
        import torch
        import torch._dynamo

        self.torch = torch
        if torch._dynamo.config.disable:
            raise Unsupported(
                f"{self.name}: TorchDynamo is disabled (TORCH_COMPILE_DISABLE): torch.compile "
                "would run the step eagerly"
            )
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
        config.fail_on_recompile_limit_hit = True
        self._configure(**self._take_compiled(self._make_compiled).objects)
        self._step = 0

    def _make_compiled(self) -> dict[str, Any]:
        objects = self._make_objects()
        objects["compiled_step"] = self.torch.compile(objects["optimizer"].step, dynamic=False)
        return objects

    def _run_step(self) -> None:
        entry = self._entry
        if entry.compiled:
            entry.timed(entry.objects["compiled_step"])
            return
        from torch._dynamo.utils import counters

        graphs = counters["stats"]["unique_graphs"]
        entry.timed(entry.objects["compiled_step"])
        if counters["stats"]["unique_graphs"] == graphs:
            entry.first_step_s = None  # the next adapter of this key checks again
            raise Unsupported(
                f"{self.name}: torch.compile captured no graph for the step (it ran "
                "eagerly); not reported as compiled"
            )

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """The eager program, its ``opt.step()`` compiled as the adapter compiles it."""
        compiled = [
            "# inductor compiles the step on its first call (seconds), as in the adapter",
            "torch.compile(opt.step, dynamic=False)()",
        ]
        return with_compiled_step(super().reproduction_program(step), "opt.step()", compiled)


#: Dynamo's recompile limit while compiled adapters run: one compile per problem's shapes
#: of each configuration (the default, 8, would send later problems to eager execution).
RECOMPILE_LIMIT = 512


def _constructor_kwargs(h: Hyper, name: str, lr: float, options: dict[str, Any]) -> dict[str, Any]:
    """``torch.optim.<name>``'s keywords as the adapter and its scripts pass them
    (SparseAdam has no weight_decay); ``options`` last, without ``cls``."""
    kwargs: dict[str, Any] = {
        "lr": lr,
        "betas": (float(h.beta1), float(h.beta2)),
        "eps": float(h.eps),
    }
    if name != "SparseAdam":
        kwargs["weight_decay"] = float(h.weight_decay)
    kwargs.update(options)
    return kwargs


def _info(name: str, documented: str, cls: str = "Adam", **options: Any) -> AdapterInfo:
    return AdapterInfo(
        name,
        "torch",
        documented,
        "adamspec.impl.adapters.torch_optim:TorchOptimizer",
        {"cls": cls, **options},
    )


def _compiled(eager: AdapterInfo) -> AdapterInfo:
    """``torch.compile`` of ``eager``'s ``optimizer.step``: same options, its own entry."""
    return replace(
        eager,
        name=f"torch.compile({eager.name})",
        factory="adamspec.impl.adapters.torch_optim:TorchCompiledOptimizer",
        eager_counterpart=eager.name,
    )


EAGER = [
    _info("torch.Adam(foreach=False)", "torch.Adam", foreach=False),
    _info("torch.Adam(foreach=True)", "torch.Adam", foreach=True),
    _info("torch.Adam(fused=True)", "torch.Adam", fused=True),
    _info("torch.Adam(capturable=True)", "torch.Adam", capturable=True, foreach=False),
    _info("torch.Adam(amsgrad=True)", "torch.Adam[amsgrad]", amsgrad=True, foreach=False),
    _info("torch.Adam(maximize=True)", "torch.Adam[maximize]", maximize=True, foreach=False),
    _info("torch.Adam(amsgrad=True,fused=True)", "torch.Adam[amsgrad]", amsgrad=True, fused=True),
    _info(
        "torch.Adam(decoupled_weight_decay=True)",
        "torch.AdamW",
        decoupled_weight_decay=True,
        foreach=False,
    ),
    _info("torch.AdamW(foreach=False)", "torch.AdamW", cls="AdamW", foreach=False),
    _info("torch.SparseAdam", "torch.SparseAdam", cls="SparseAdam"),
    _info("torch.RAdam(foreach=False)", "torch.RAdam", cls="RAdam", foreach=False),
]


def _mixed(path: str, target: str) -> list[AdapterInfo]:
    """The for-loop Adam and AdamW driven as the mixed-precision ``path`` (``name[path]``)
    drives them, by ``target``, a class of this module."""
    return [
        replace(
            info,
            name=f"{info.name}[{path}]",
            factory=f"adamspec.impl.adapters.torch_optim:{target}",
        )
        for info in EAGER
        if info.name in ("torch.Adam(foreach=False)", "torch.AdamW(foreach=False)")
    ]


#: FSDP2's MixedPrecisionPolicy master weights, and the AMP recipe (autocast + GradScaler).
MIXED = _mixed("param_dtype=bfloat16", "TorchMasterWeightsOptimizer") + _mixed(
    "autocast=float16,GradScaler", "TorchGradScalerOptimizer"
)
#: Compiled twins of the for-loop Adam, AMSGrad and AdamW: the CPU default (foreach=None and
#: fused=None choose the for-loop when the parameters are on the CPU).
COMPILED = [
    _compiled(info)
    for info in EAGER
    if info.name
    in ("torch.Adam(foreach=False)", "torch.Adam(amsgrad=True)", "torch.AdamW(foreach=False)")
]
INFOS = EAGER + MIXED + COMPILED
