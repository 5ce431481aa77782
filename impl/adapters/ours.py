"""Our production implementation (impl.adam) configured as each catalog variant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adamspec.impl import adam
from adamspec.impl.adapters.base import Adapter, AdapterInfo, State, numpy_dtype
from adamspec.spec.catalog import entries, entry


class Ours(Adapter):
    """``adamspec[<catalog name>]``: impl.adam with that entry's variant."""

    framework = ""
    dtypes = ("float64", "float32", "float16", "bfloat16")
    #: float32 moments for 16-bit params, with or without the float32 master copy of
    #: ``adam.init(master_weights=True)``
    precisions = ("bf16-fp32state", "bf16-fp32master", "fp16-fp32master")
    sparse = True

    def _build(self) -> None:
        self.variant = entry(self.documented).variant  # ideal: the exact decimals
        self.version = "adamspec"
        self._params: list[np.ndarray] = []
        self._state: adam.AdamState | None = None

    def set_state(self, state: State) -> None:
        self._params = [np.array(p, copy=True) for p in state.params]
        self._state = adam.AdamState(
            step=state.step,
            m=tuple(np.array(x, copy=True) for x in state.m),
            v=tuple(np.array(x, copy=True) for x in state.v),
            v_max=None
            if state.v_max is None
            else tuple(np.array(x, copy=True) for x in state.v_max),
            ema=None,
            master=None
            if state.master is None
            else tuple(np.array(x, copy=True) for x in state.master),
            beta1_power=float(state.extras.get("beta1_power", self._power(1, state.step))),
            beta2_power=float(state.extras.get("beta2_power", self._power(2, state.step))),
        )

    def _power(self, which: int, step: int) -> float:
        beta = self.hyper.beta1 if which == 1 else self.hyper.beta2
        dtype = numpy_dtype(self.precision.state)
        return float(np.asarray(float(beta) ** step, dtype=dtype))

    def get_state(self) -> State:
        s = self._state
        extras: dict[str, Any] = {}
        if self.variant.bias_correction_m.value == "accumulated":
            extras["beta1_power"] = np.asarray(s.beta1_power, dtype=s.m[0].dtype)
        if self.variant.bias_correction_v.value == "accumulated":
            extras["beta2_power"] = np.asarray(s.beta2_power, dtype=s.m[0].dtype)
        return State(
            [p.copy() for p in self._params],
            [x.copy() for x in s.m],
            [x.copy() for x in s.v],
            None if s.v_max is None else [x.copy() for x in s.v_max],
            s.step,
            extras,
            None if s.master is None else [x.copy() for x in s.master],
        )

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        self._state = adam.step_(self._params, list(grads), self._state, self.hyper, self.variant)


_FACTORY = "adamspec.impl.adapters.ours:Ours"
INFOS = [
    AdapterInfo(f"adamspec[{e.name}]", "", e.name, _FACTORY, correctly_rounded=True)
    for e in entries()
]
