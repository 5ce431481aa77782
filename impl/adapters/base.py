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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from adamspec.impl.frameworks import require
from adamspec.spec.hyper import Hyper


class Unsupported(RuntimeError):
    """This adapter cannot run the requested configuration; the message is the reason."""


@dataclass
class State:
    """Full optimizer state as host arrays of the adapter's dtype, one per tensor.

    ``v_max`` is None unless the configuration uses AMSGrad. ``extras`` holds
    framework state that has no common name: ``beta1_power``/``beta2_power``
    (accumulated bias corrections, as 0-d arrays), ``ema`` (list of arrays)...
    """

    params: list[np.ndarray]
    m: list[np.ndarray]
    v: list[np.ndarray]
    v_max: list[np.ndarray] | None
    step: int
    extras: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> State:
        def dup(xs: list[np.ndarray] | None) -> list[np.ndarray] | None:
            return None if xs is None else [np.array(x, copy=True) for x in xs]

        return replace(
            self,
            params=dup(self.params),
            m=dup(self.m),
            v=dup(self.v),
            v_max=dup(self.v_max),
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
        if dtype not in self.dtypes:
            raise Unsupported(f"{name} does not support dtype={dtype}; supported: {self.dtypes}")
        self.name = name
        self.documented = documented
        self.hyper = hyper
        self.dtype = dtype
        self.shapes = [tuple(s) for s in shapes]
        self.options = dict(options)
        self.version = require(self.framework) if self.framework else "n/a"
        self._build()

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
    """

    name: str
    framework: str
    documented: str
    factory: str
    options: dict[str, Any] = field(default_factory=dict)

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
