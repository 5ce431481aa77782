"""Stored-state transforms: a kernel whose parameters are right but whose stored m or v is
not the moment itself.

Some kernels keep the bias-corrected ``m_hat`` in the slot for ``m``, store ``-m`` (a
maximize done by negating the update), keep ``sqrt(v)``, or keep ``v_hat``. Their
parameters match the formula; the stored component does not. Each :data:`TRANSFORMS` entry
says how to read the stored value back as the moment; :func:`read_back` rewrites a trace's
states that way (before and after every step), so the lock-step engine measures the kernel
as it really computes. Nothing is re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from adamspec.harness.engine import State, StepRecord, Trace
from adamspec.spec.hyper import Hyper


@dataclass(frozen=True)
class Transform:
    """``moment = back(stored, hyper, t)`` for one state component; ``description`` reads
    "m is stored bias-corrected"."""

    component: str
    description: str
    back: Callable[[np.ndarray, Hyper, int], np.ndarray]


def _corrected(beta: str) -> Callable[[np.ndarray, Hyper, int], np.ndarray]:
    def back(stored: np.ndarray, hyper: Hyper, t: int) -> np.ndarray:
        return stored * (1.0 - float(getattr(hyper, beta)) ** t)

    return back


TRANSFORMS: tuple[Transform, ...] = (
    Transform("m", "m is stored bias-corrected (m_hat)", _corrected("beta1")),
    Transform("m", "m is stored negated", lambda x, h, t: -x),
    Transform("v", "v is stored as its square root", lambda x, h, t: x * x),
    Transform("v", "v is stored bias-corrected (v_hat)", _corrected("beta2")),
)


def read_back(trace: Trace, transforms: Sequence[Transform]) -> Trace:
    """The trace with every stored component read back through ``transforms`` (each rounded
    once to the trace's dtype, as the kernel would hold the moment it works with)."""
    if not transforms or trace.hyper is None:
        return trace
    hyper = trace.hyper

    def state(st: State) -> State:
        changes = {}
        for tr in transforms:
            arrays = getattr(st, tr.component)
            changes[tr.component] = [
                tr.back(a.astype(np.float64), hyper, st.step).astype(a.dtype) for a in arrays
            ]
        return replace(st, **changes)

    steps = [StepRecord(state(r.before), r.grads, state(r.after)) for r in trace.steps]
    return replace(trace, steps=steps)


__all__ = ["TRANSFORMS", "Transform", "read_back"]
