"""Deliberately wrong toy Adams, for proving the engine finds and names each bug.

One small NumPy implementation, written independently of ``adamspec.impl.adam`` and the
oracle: float64 arithmetic on float32 state, one rounding per stored value, so
the correct toy is within rounding of the paper. Each ``bug`` option breaks
exactly one thing, the way hand-written kernels get it wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adamspec.impl.adapters.base import REGISTRY, Adapter, AdapterInfo, State, Unsupported, register
from adamspec.spec.gradients import SparseRows

BUGS: dict[str, tuple[str, str]] = {
    # bug: (documented catalog variant, the category the engine must report)
    "none": ("paper.algorithm1", "rounding only"),
    "no_bias_correction": ("paper.algorithm1", "bias correction"),
    "eps_moved": ("paper.algorithm1", "epsilon placement"),
    "v_unsquared": ("paper.algorithm1", "unexplained"),
    "lazy_sparse": ("torch.Adam", "sparse momentum"),
    "amsgrad_over_vhat": ("torch.Adam[amsgrad]", "AMSGrad max placement"),
    "off_by_one_step": ("paper.algorithm1", "step counting"),
}
#: Toys right in exact arithmetic but not in the dtype's range, and the problem showing it.
RANGE_BUGS: dict[str, str] = {
    "square_overflows": "huge",  # g * g formed in float32: inf beyond 1.8e19
    "flush_subnormals": "subnormals",  # denormals-are-zero inputs, flush-to-zero results
}


def _flush(x: np.ndarray, dtype: Any) -> np.ndarray:
    """Subnormals of ``dtype`` to signed zero (what FTZ/DAZ hardware modes do)."""
    tiny = np.finfo(dtype).tiny
    return np.where(np.abs(x) < tiny, np.copysign(np.zeros_like(x), x), x)


class ToyAdam(Adapter):
    """Adam in float64 on float32 state; ``options["bug"]`` names the one thing it gets wrong."""

    framework = ""
    dtypes = ("float32", "float64")
    sparse = True

    def _build(self) -> None:
        if self.hyper.weight_decay:
            raise Unsupported(f"{self.name} has no weight decay")
        self.bug = self.options.get("bug", "none")
        self.amsgrad = self.bug == "amsgrad_over_vhat"
        self.state: State | None = None

    def set_state(self, state: State) -> None:
        self.state = state.copy()

    def get_state(self) -> State:
        return self.state.copy()

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        if self.state.step + 1 == self.options.get("raise_at_step"):
            raise FloatingPointError("toy kernel gave up")
        h, s = self.hyper, self.state
        b1, b2, eps, lr = float(h.beta1), float(h.beta2), float(h.eps), float(h.lr_at(s.step + 1))
        t = s.step + (2 if self.bug == "off_by_one_step" else 1)
        for k, g in enumerate(grads):
            p, m, v = (x[k].astype(np.float64) for x in (s.params, s.m, s.v))
            rows = slice(None)
            if isinstance(g, SparseRows):
                dense = np.zeros_like(p)
                np.add.at(dense, np.asarray(g.indices), np.asarray(g.values, np.float64))
                if self.bug == "lazy_sparse":
                    rows = np.unique(np.asarray(g.indices))
                g = dense
            g = np.asarray(g, np.float64)
            if self.bug == "flush_subnormals":
                p, m, v, g = (_flush(x, s.params[k].dtype) for x in (p, m, v, g))
            m[rows] = b1 * m[rows] + (1 - b1) * g[rows]
            sq = np.abs(g) if self.bug == "v_unsquared" else g * g
            if self.bug == "square_overflows":
                with np.errstate(over="ignore"):
                    sq = np.square(g.astype(np.float32)).astype(np.float64)
            v[rows] = b2 * v[rows] + (1 - b2) * sq[rows]
            c1, c2 = (1.0, 1.0) if self.bug == "no_bias_correction" else (1 - b1**t, 1 - b2**t)
            v_hat = v / c2
            if self.amsgrad:
                v_hat = np.maximum(s.v_max[k].astype(np.float64), v_hat)
                s.v_max[k] = v_hat.astype(s.v_max[k].dtype)
            if self.bug == "eps_moved":
                update = lr * np.sqrt(c2) / c1 * m / (np.sqrt(v) + eps)
            else:
                update = lr * (m / c1) / (np.sqrt(v_hat) + eps)
            p[rows] = (p - update)[rows]
            dtype = s.params[k].dtype
            s.params[k], s.m[k], s.v[k] = p.astype(dtype), m.astype(dtype), v.astype(dtype)
            if self.bug == "flush_subnormals":
                s.params[k], s.m[k], s.v[k] = (
                    _flush(x, dtype) for x in (s.params[k], s.m[k], s.v[k])
                )
        s.step += 1


def register_toys() -> list[str]:
    """Register ``toy.<bug>`` for every bug (idempotent), and ``toy.raises`` (fails at its
    third step); returns the bug names."""
    if "toy.raises" not in REGISTRY:
        register(
            AdapterInfo(
                "toy.raises", "", "paper.algorithm1", "toy_adapters:ToyAdam", {"raise_at_step": 3}
            )
        )
    names = []
    for bug, (documented, _) in {
        **BUGS,
        **dict.fromkeys(RANGE_BUGS, ("paper.algorithm1", "")),
    }.items():
        name = f"toy.{bug}"
        if name not in REGISTRY:
            register(AdapterInfo(name, "", documented, "toy_adapters:ToyAdam", {"bug": bug}))
        names.append(name)
    return names
