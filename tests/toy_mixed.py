"""Toy mixed-precision Adams: 16-bit params, float32 moments, a float32 master copy.

Written the way a kernel author writes one (float64 arithmetic, one rounding per stored
value), independently of ``adamspec.impl.adam`` and the oracle, so the correct toy is within
rounding of the spec. Each ``bug`` breaks how the master copy is kept, the way real
mixed-precision kernels get it wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from toy_adapters import ToyAdam

from adamspec.impl.adapters.base import REGISTRY, AdapterInfo, register

#: bug: what the toy does with its master copy
BUGS = {
    "none": "the update on the float32 master, the param its rounding",
    "master_rounded": "the master rounded to the param dtype before the update",
    "master_absent": "no master: the update on the 16-bit param, the master its widening",
}


class ToyMixedAdam(ToyAdam):
    """torch.Adam's formula (Algorithm 1, binary64 hyperparameters) in float64 arithmetic;
    the state handling of :class:`toy_adapters.ToyAdam`, its own step."""

    dtypes = ()
    precisions = ("bf16-fp32master", "fp16-fp32master")
    sparse = False

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        h, s = self.hyper, self.state
        b1, b2, eps, lr = float(h.beta1), float(h.beta2), float(h.eps), float(h.lr_at(s.step + 1))
        t = s.step + 1
        for k, g in enumerate(grads):
            param_dtype, master_dtype = s.params[k].dtype, s.master[k].dtype
            if self.bug == "master_absent":
                theta = s.params[k].astype(np.float64)
            elif self.bug == "master_rounded":
                theta = s.master[k].astype(param_dtype).astype(np.float64)
            else:
                theta = s.master[k].astype(np.float64)
            g = np.asarray(g, np.float64)
            m = b1 * s.m[k].astype(np.float64) + (1 - b1) * g
            v = b2 * s.v[k].astype(np.float64) + (1 - b2) * g * g
            update = lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
            theta = theta - update
            if self.bug == "master_absent":
                s.params[k] = theta.astype(param_dtype)
                s.master[k] = s.params[k].astype(master_dtype)
            else:
                s.master[k] = theta.astype(master_dtype)
                s.params[k] = s.master[k].astype(param_dtype)
            with np.errstate(over="ignore"):  # huge gradients: v overflows float32, as a kernel's
                s.m[k], s.v[k] = m.astype(s.m[k].dtype), v.astype(s.v[k].dtype)
        s.step += 1


def register_mixed_toys() -> list[str]:
    """Register ``toy-mixed.<bug>`` for every bug (idempotent); returns their names."""
    names = []
    for bug in BUGS:
        name = f"toy-mixed.{bug}"
        if name not in REGISTRY:
            register(AdapterInfo(name, "", "torch.Adam", "toy_mixed:ToyMixedAdam", {"bug": bug}))
        names.append(name)
    return names
