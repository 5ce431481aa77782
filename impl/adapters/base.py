"""The one protocol every implementation under test is driven through.

An adapter wraps one optimizer configuration of one framework. The harness
only ever calls:

    adapter = make_adapter("torch.Adam(foreach=True)", hyper, dtype="float32",
                           shapes=[(4,), (2, 3)])
    adapter.set_state(State(params=[...], m=[...], v=[...], v_max=None, step=3))
    adapter.step([g0, g1])            # dense arrays or spec.SparseRows
    state = adapter.get_state()       # exact bits, as NumPy arrays of `dtype`

so lock-step runs ("start this step from exactly these values") and
free-running trajectories look the same for every framework. A configuration
the framework cannot run raises :class:`Unsupported` (the harness records a
skip with its reason); a framework that is not installed raises
:class:`adamspec.impl.frameworks.FrameworkMissing` ("skipped: torch not installed").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np

from adamspec.impl.adapters.repro import (
    Program,
    StepToReproduce,
    exact_decimal,
    hex_float,
    value_literal,
)
from adamspec.impl.frameworks import require
from adamspec.spec.hyper import Hyper
from adamspec.spec.precision import Precision, precision_named


class Unsupported(RuntimeError):
    """This adapter cannot run the requested configuration; the message is the reason."""


class KernelLoadError(RuntimeError):
    """The implementation's code could not be loaded or built where it runs (a user kernel's
    file raised on import, a compile step failed): an error of every case, never a deliberate
    decline like :class:`Unsupported`. The message is the full reason."""


@dataclass
class State:
    """Full optimizer state as host arrays of the adapter's dtype, one per tensor.

    ``v_max`` is None unless the configuration uses AMSGrad. ``extras`` holds
    framework state that has no common name: ``beta1_power``/``beta2_power``
    (accumulated bias corrections, as 0-d arrays), ``ema`` (list of arrays)...
    ``master`` holds master weights in a mixed precision that keeps them
    (:mod:`adamspec.spec.precision`), else None. Each array is in its role's dtype.
    """

    params: list[np.ndarray]
    m: list[np.ndarray]
    v: list[np.ndarray]
    v_max: list[np.ndarray] | None
    step: int
    extras: dict[str, Any] = field(default_factory=dict)
    master: list[np.ndarray] | None = None

    def copy(self) -> State:
        def dup(xs: list[np.ndarray] | None) -> list[np.ndarray] | None:
            return None if xs is None else [np.array(x, copy=True) for x in xs]

        return replace(
            self,
            params=dup(self.params),
            m=dup(self.m),
            v=dup(self.v),
            v_max=dup(self.v_max),
            master=dup(self.master),
            extras={k: (dup(x) if isinstance(x, list) else np.array(x, copy=True))
                    for k, x in self.extras.items()},
        )  # fmt: skip


class Adapter:
    """Base class: subclasses implement ``_build``, ``set_state``, ``get_state``, ``step``.

    Class attributes describe the adapter: ``framework`` (a key of
    ``adamspec.impl.frameworks``), ``dtypes`` it supports, ``sparse`` whether
    ``adamspec.spec.SparseRows`` gradients are accepted.
    """

    framework: str = ""
    dtypes: tuple[str, ...] = ("float32", "float64")
    #: mixed precisions it runs (names of :data:`adamspec.spec.precision.PRESETS` or
    #: ``role=dtype,...``); uniform ones are ``dtypes``
    precisions: tuple[str, ...] = ()
    sparse: bool = False

    def __init__(
        self,
        name: str,
        documented: str,
        hyper: Hyper,
        dtype: str,
        shapes: Sequence[tuple[int, ...]],
        options: dict[str, Any],
    ) -> None:
        """``dtype`` names a precision (:func:`adamspec.spec.precision.precision_named`):
        a dtype, or a mix of them (``self.dtype`` is then the param's, ``self.precision``
        the whole mix)."""
        self.precision = precision_named(dtype)
        self.name = name
        self.options = dict(options)
        self.check_precision(self.precision)
        self.documented = documented
        self.hyper = hyper
        self.dtype = self.precision.param
        self.shapes = [tuple(s) for s in shapes]
        self.version = require(self.framework) if self.framework else "n/a"
        self._build()

    def check_precision(self, precision: Precision) -> None:
        """Raise :class:`Unsupported` unless this adapter runs ``precision`` (called before
        ``_build``; ``self.name`` and ``self.options`` are set)."""
        if precision.uniform:
            if precision.param not in self.dtypes:
                raise Unsupported(
                    f"{self.name} does not support dtype={precision.param}; "
                    f"supported: {self.dtypes}"
                )
        elif precision.name not in self.precisions:
            held = ", ".join(self.precisions) or "none: every array in the param's dtype"
            raise Unsupported(
                f"{self.name} does not run precision {precision.name}; its mixed precisions: {held}"
            )

    # -- to implement -------------------------------------------------------------
    def _build(self) -> None:
        raise NotImplementedError

    def set_state(self, state: State) -> None:
        raise NotImplementedError

    def get_state(self) -> State:
        raise NotImplementedError

    def step(self, grads: Sequence[Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release framework resources (sessions, child processes)."""

    def output_tail(self) -> str:
        """The first lines the implementation printed since the last call of this ("" when
        its output is not captured: only adapters running it in a worker process capture)."""
        return ""

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """``step`` as a script (:mod:`adamspec.impl.adapters.repro`).

        This default drives the implementation through :mod:`adamspec.impl.adapters`
        itself, as the harness does: it serves adamspec's own implementations, user
        kernels and test toys. Adapters of a framework override it to write the
        framework's public API instead, which is what its maintainers run.
        """
        return _adapters_program(step)

    # -- shared helpers -----------------------------------------------------------
    def check_grads(self, grads: Sequence[Any]) -> None:
        from adamspec.spec.gradients import SparseRows

        if len(grads) != len(self.shapes):
            raise ValueError(f"{len(grads)} gradients for {len(self.shapes)} tensors")
        if not self.sparse and any(isinstance(g, SparseRows) for g in grads):
            raise Unsupported(f"{self.name} has no sparse gradient path")

    def __enter__(self) -> Adapter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass(frozen=True)
class AdapterInfo:
    """A registered configuration: how to build it and which catalog variant its docs claim.

    ``factory`` is ``"module:Class"`` so frameworks are imported only when used.
    ``correctly_rounded``: the implementation claims every stored value is the correctly
    rounded result of the documented formula (ours, ``adamspec[...]``), so the harness
    judges it with a zero budget (:func:`adamspec.harness.budgets.budget_for`).
    ``eager_counterpart`` is set on compiled implementations (``torch.compile``, XLA,
    ``jax.jit``): the registered name of the same optimizer run op by op, against which
    the compiled one is compared (:mod:`adamspec.impl.adapters.compiled`).
    """

    name: str
    framework: str
    documented: str
    factory: str
    options: dict[str, Any] = field(default_factory=dict)
    _: KW_ONLY  # the flags below are named where set (two of them were once confused)
    correctly_rounded: bool = False
    eager_counterpart: str = ""

    def load(self) -> type[Adapter]:
        module, _, cls = self.factory.partition(":")
        return getattr(importlib.import_module(module), cls)


REGISTRY: dict[str, AdapterInfo] = {}


def register(*infos: AdapterInfo) -> None:
    for info in infos:
        if info.name in REGISTRY:
            raise ValueError(f"adapter {info.name!r} registered twice")
        REGISTRY[info.name] = info


def make_adapter(
    name: str, hyper: Hyper, dtype: str = "float32", shapes: Sequence[tuple[int, ...]] = ((4,),)
) -> Adapter:
    """Build the adapter called ``name`` (see :data:`REGISTRY`)."""
    from adamspec.impl.adapters import load_registry

    load_registry()
    try:
        info = REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"adapter={name!r} is unknown; allowed: {', '.join(sorted(REGISTRY))}"
        ) from None
    require(info.framework) if info.framework else None
    return info.load()(name, info.documented, hyper, dtype, shapes, info.options)


def _adapters_program(step: StepToReproduce) -> Program:
    """The default :meth:`Adapter.reproduction_program`: register, build, set, step, read."""
    info, before = step.info, step.before
    hyper, needs_fraction = _make_hyper_literal(step.hyper, step.lr)
    precision = precision_named(step.dtype)

    def literal(a: Any) -> str:  # each role's array in its own dtype (a mixed precision)
        dtype = str(np.asarray(a).dtype)
        return value_literal(a, "" if dtype == precision.param else _numpy_dtype_literal(dtype))

    extras = []
    for key, x in before.extras.items():
        if isinstance(x, list):
            extras.append(f'"{key}": [{", ".join(value_literal(a) for a in x)}]')
        else:
            a = np.asarray(x)
            dtype = _numpy_dtype_literal(str(a.dtype))
            extras.append(f'"{key}": np.asarray(float.fromhex("{hex_float(a)}"), dtype={dtype})')
    v_max = "None" if before.v_max is None else f"[{literal(before.v_max[0])}]"
    master = "" if before.master is None else f"        master=[{literal(before.master[0])}],"
    grad = step.grad_literal(_sparse_rows_literal) if step.is_sparse else literal(step.grads[0])
    registration = repr(
        AdapterInfo(info.name, info.framework, info.documented, info.factory, dict(info.options))
    )
    body = [
        f"NAME = {step.implementation!r}",
        "load_registry()",
        "if NAME not in REGISTRY:  # registered outside impl.adapters (a test or user module)",
        f"    register({registration})",
        f"hyper = {hyper}",
        f"adapter = make_adapter(NAME, hyper, {step.dtype!r}, [{step.shape!r}])",
        "adapter.set_state(",
        "    State(",
        f"        params=[{value_literal(before.params[0])}],",
        f"        m=[{literal(before.m[0])}],",
        f"        v=[{literal(before.v[0])}],",
        f"        v_max={v_max},",
        f"        step={step.step},",
        f"        extras={{{', '.join(extras)}}},",
        *([master] if master else []),
        "    )",
        ")",
        f"adapter.step([{grad}])",
        "after = adapter.get_state()",
        "adapter.close()",
    ]
    results = {
        "param": "after.params[0]",
        "m": "after.m[0]",
        "v": "after.v[0]",
        "v_max": "after.v_max[0]",
        **({"master": "after.master[0]"} if before.master is not None else {}),
    }
    imports = [
        "# needs adamspec installed; the tests' toy kernels also need tests/ on PYTHONPATH",
        *(["from fractions import Fraction", ""] if needs_fraction else []),
        "from adamspec.impl.adapters import (",
        "    REGISTRY, AdapterInfo, State, load_registry, make_adapter, register,",
        ")",
        *(["from adamspec.spec.gradients import SparseRows"] if step.is_sparse else []),
        "from adamspec.spec.hyper import make_hyper",
    ]
    roles = (precision.param, precision.grad, precision.state, precision.master)
    if "bfloat16" in (*roles, *(str(np.asarray(x).dtype) for x in before.extras.values())):
        imports.append("import ml_dtypes")
    helpers = [
        f"DTYPE = {_numpy_dtype_literal(precision.param)}",
        "",
        "",
        "def value(hexes, shape, dtype=DTYPE):",
        "    return exact(hexes, shape).astype(dtype)",
    ]
    return Program(imports, helpers, body, results)


def _numpy_dtype_literal(name: str) -> str:
    return "ml_dtypes.bfloat16" if name == "bfloat16" else f"np.{name}"


def _sparse_rows_literal(indices: str, values: str, shape: tuple[int, ...]) -> str:
    return f"SparseRows(np.asarray({indices}), {values}, {shape[0]})"


def _make_hyper_literal(h: Hyper, lr: Fraction) -> tuple[str, bool]:
    """``make_hyper(...)`` with exact decimal strings; True if ``Fraction`` is needed."""

    def lit(x: Fraction) -> str:
        text = exact_decimal(x)
        return f"Fraction({x.numerator}, {x.denominator})" if "/" in text else f'"{text}"'

    parts = [f"lr={lit(lr)}"]
    parts += [f"{k}={lit(getattr(h, k))}" for k in ("beta1", "beta2", "eps")]
    parts += [f"{k}={lit(getattr(h, k))}" for k in ("eps_root", "weight_decay") if getattr(h, k)]
    parts += [
        f"{k}={lit(getattr(h, k))}"
        for k in ("clipnorm", "clipvalue", "global_clipnorm")
        if getattr(h, k) is not None
    ]
    if h.use_ema:
        parts += [
            "use_ema=True",
            f"ema_momentum={lit(h.ema_momentum)}",
            f"ema_overwrite_frequency={h.ema_overwrite_frequency!r}",
        ]
    text = f"make_hyper({', '.join(parts)})"
    return text, "Fraction(" in text


def reject_unused(hyper: Hyper, name: str, *, decay: bool = False, clip: bool = False) -> None:
    """Unsupported for hyperparameters the wrapped API has no argument for: eps_root, the
    EMA, weight decay (unless ``decay``) and gradient clipping (unless ``clip``)."""
    if hyper.eps_root:
        raise Unsupported(f"{name} has no eps_root")
    if hyper.use_ema:
        raise Unsupported(f"{name}: use_ema state is not exposed by this adapter")
    if hyper.weight_decay and not decay:
        raise Unsupported(f"{name} has no weight_decay argument")
    if not clip and any(
        x is not None for x in (hyper.clipnorm, hyper.clipvalue, hyper.global_clipnorm)
    ):
        raise Unsupported(f"{name} has no gradient clipping")


def lr_schedule_factor(hyper: Hyper) -> Callable[[int], float] | None:
    """For frameworks that scale a base lr: ``t -> lr_t / lr_1`` (None for a constant lr)."""
    from adamspec.spec.hyper import Schedule

    if not isinstance(hyper.lr, Schedule):
        return None
    base = hyper.lr_at(1)
    return lambda t: float(hyper.lr_at(t) / base) if base else 0.0


def numpy_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype an adapter exchanges arrays in (``ml_dtypes.bfloat16`` for bfloat16)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def torch_to_numpy(tensor: Any) -> np.ndarray:
    """A host NumPy view of a torch tensor (CPU or CUDA); bfloat16 through its bits, which
    ``Tensor.numpy`` cannot export."""
    host = tensor.detach().cpu()
    if str(host.dtype) == "torch.bfloat16":
        import torch

        return host.view(torch.int16).numpy().view(numpy_dtype("bfloat16"))
    return host.numpy()
