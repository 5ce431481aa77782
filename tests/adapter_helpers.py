"""Driving an adapter against the oracle: lock-step and free-running ULP errors.

Shared by every adapter test so each framework's test is a table of
configurations and budgets, not a copy of this loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adamspec.harness.pairs import PairErrors
from adamspec.harness.pairs import pair_errors as measure_pair
from adamspec.impl.adapters import REGISTRY, State, load_registry, make_adapter
from adamspec.oracles import OracleState
from adamspec.oracles import step as oracle_step
from adamspec.oracles.metrics import ulp_distance
from adamspec.oracles.rounding import format_of_dtype, numpy_dtype
from adamspec.spec.catalog import entry
from adamspec.spec.formats import format_named
from adamspec.spec.hyper import Hyper
from adamspec.spec.variant import Variant

COMPONENTS = ("param", "m", "v", "v_max")


@dataclass
class Errors:
    """Worst ULP distance per component over a run (-1: a NaN/inf mismatch), and per step."""

    max_ulp: dict[str, int]
    steps: int
    per_step: list[dict[str, int]]

    def worst(self) -> int:
        return max(self.max_ulp.values())


def initial_state(shapes, dtype: str, amsgrad: bool, seed: int = 0, step: int = 0) -> State:
    """A known, nonzero starting state (moments from a few earlier steps' worth of data)."""
    rng = np.random.default_rng(seed)
    dt = numpy_dtype(format_named(dtype))
    params = [rng.standard_normal(s).astype(dt) for s in shapes]
    if step == 0:
        zeros = [np.zeros(s, dt) for s in shapes]
        return State(params, zeros, [z.copy() for z in zeros],
                     [z.copy() for z in zeros] if amsgrad else None, 0)  # fmt: skip
    m = [(0.1 * rng.standard_normal(s)).astype(dt) for s in shapes]
    v = [(0.01 * rng.random(s) + 1e-4).astype(dt) for s in shapes]
    v_max = [(x * 1.5).astype(dt) for x in v] if amsgrad else None
    return State(params, m, v, v_max, step)


def gradients(shapes, dtype: str, steps: int, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    dt = numpy_dtype(format_named(dtype))
    return [[rng.standard_normal(s).astype(dt) for s in shapes] for _ in range(steps)]


def _oracle_state(state: State) -> OracleState:
    """All tensors' state at once: global clipping spans every tensor of a step."""
    extras = state.extras
    return OracleState(
        m=list(state.m),
        v=list(state.v),
        v_max=list(state.v_max) if state.v_max is not None else None,
        step=state.step,
        beta1_power=extras.get("beta1_power"),
        beta2_power=extras.get("beta2_power"),
        ema=list(extras["ema"]) if "ema" in extras else None,
    )


def lockstep_errors(
    adapter_name: str,
    hyper: Hyper,
    dtype: str = "float32",
    shapes=((5,), (2, 3)),
    steps: int = 20,
    start_step: int = 0,
    variant_name: str | None = None,
    tensors: Sequence[int] | None = None,
    variant: Variant | None = None,
) -> Errors:
    """Run ``steps`` steps; before each, compare the adapter's step with the oracle's exact
    step from the adapter's own state. ``variant_name`` defaults to the documented one;
    ``tensors`` limits the comparison to some tensor indices (default: all); ``variant``
    overrides the reference variant itself (e.g. with another ``hyper_precision``)."""
    adapter = make_adapter(adapter_name, hyper, dtype, shapes)
    try:
        variant = variant or entry(variant_name or adapter.documented).variant
        amsgrad = variant.amsgrad.value != "off"
        state = initial_state(shapes, dtype, amsgrad, step=start_step)
        if hyper.use_ema:  # the moving average starts as a copy of the weights
            state.extras["ema"] = [p.copy() for p in state.params]
        adapter.set_state(state)
        fmt = format_of_dtype(state.params[0].dtype)
        worst = dict.fromkeys(COMPONENTS[: 4 if amsgrad else 3], 0)
        if hyper.use_ema:
            worst["ema"] = 0
        per_step = []
        for grads in gradients(shapes, dtype, steps):
            this_step = dict.fromkeys(worst, 0)
            before = adapter.get_state()
            adapter.step(grads)
            after = adapter.get_state()
            ref = oracle_step(variant, hyper, list(before.params), list(grads),
                              _oracle_state(before))  # fmt: skip
            for k in range(len(shapes)) if tensors is None else tensors:
                ours = {"param": after.params[k], "m": after.m[k], "v": after.v[k]}
                if amsgrad:
                    ours["v_max"] = after.v_max[k]
                if hyper.use_ema:
                    ours["ema"] = after.extras["ema"][k]
                for name, got in ours.items():
                    d = np.asarray(ulp_distance(got, ref.value(name, k), fmt))
                    value = -1 if np.any(d < 0) else int(d.max())
                    for record in (worst, this_step):
                        record[name] = (
                            -1 if -1 in (value, record[name]) else max(record[name], value)
                        )
            per_step.append(this_step)
        return Errors(worst, steps, per_step)
    finally:
        adapter.close()


def assert_state_roundtrip(adapter_name: str, hyper: Hyper, dtype: str, shapes=((5,), (2, 3))):
    """set_state then get_state returns the same bits."""
    adapter = make_adapter(adapter_name, hyper, dtype, shapes)
    try:
        variant = entry(adapter.documented).variant
        state = initial_state(shapes, dtype, variant.amsgrad.value != "off", step=7)
        adapter.set_state(state.copy())
        got = adapter.get_state()
        assert got.step == state.step
        for name in ("params", "m", "v", "v_max"):
            want_list, got_list = getattr(state, name), getattr(got, name)
            if want_list is None:
                continue
            for want, have in zip(want_list, got_list, strict=True):
                assert have.dtype == want.dtype, (name, have.dtype, want.dtype)
                assert have.tobytes() == want.tobytes(), name
    finally:
        adapter.close()


def pair_errors(
    first: str, second: str, hyper: Hyper, dtype: str = "float32", shapes=((5,), (2, 3)),
    steps: int = 20,
) -> PairErrors:  # fmt: skip
    """:func:`adamspec.harness.pairs.pair_errors` (lock-step, first step and free-running)
    from the known start of :func:`initial_state` (step 3) with the gradients of
    :func:`gradients`."""
    load_registry()
    amsgrad = entry(REGISTRY[first].documented).variant.amsgrad.value != "off"
    start = initial_state(shapes, dtype, amsgrad, step=3)
    return measure_pair(first, second, hyper, dtype, shapes, start, gradients(shapes, dtype, steps))


def assert_within(measured: dict[str, int], budget: dict[str, int], what: str) -> None:
    """Every component measured (-1, a NaN/inf mismatch, fails) within its budget."""
    for component, worst in measured.items():
        assert 0 <= worst <= budget[component], (what, component, worst, budget)


def assert_lockstep_within(
    name: str, documented: str, budget: dict[str, int], steps: int, dtype: str = "float32"
) -> None:
    """:func:`lockstep_errors` of ``name`` with ``documented``'s defaults within ``budget``."""
    errors = lockstep_errors(name, entry(documented).hyper(), dtype, steps=steps)
    assert_within(errors.max_ulp, budget, f"{name}, {steps} steps")


def keras_doc_step(name: str, documented: str) -> tuple[np.floating, np.floating]:
    """The Keras documentation's example, one step from 10.0 with lr 0.2 and gradient 10.0
    (d/dx of 10 x), float32: the implementation's parameter and the oracle's for the
    documented variant (``documented``'s other defaults, weight decay included)."""
    hyper = entry(documented).hyper(lr="0.2")
    variant = entry(documented).variant
    one = [np.float32([10.0])]
    zeros = [np.float32([0.0])]
    amsgrad = variant.amsgrad.value != "off"
    start = State(list(one), list(zeros), list(zeros), list(zeros) if amsgrad else None, 0)
    with make_adapter(name, hyper, "float32", [(1,)]) as adapter:
        adapter.set_state(start.copy())
        adapter.step([np.float32([10.0])])
        got = adapter.get_state().params[0][0]
    ref = oracle_step(variant, hyper, list(start.params), [np.float32([10.0])],
                      _oracle_state(start))  # fmt: skip
    return got, ref.value("param", 0)[0]
