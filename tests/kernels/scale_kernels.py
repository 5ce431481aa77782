"""Toy kernels for the scale suite, index localization and the range tier (issue 15)."""

from __future__ import annotations

import numpy as np

from adamspec.impl.adapters.kernel_protocol import KernelState


def torch_like(param, grad, state, h):
    """torch.Adam's float32 arithmetic (foreach=False) in NumPy float32: conforms, range tier."""
    f = param.dtype.type
    t = state.step + 1
    g = grad
    if h.weight_decay:
        g = g + f(h.weight_decay) * param
    m = state.m + f(1 - h.beta1) * (g - state.m)  # lerp_(grad, 1 - beta1)
    with np.errstate(over="ignore", invalid="ignore"):
        v = state.v * f(h.beta2) + f(1 - h.beta2) * g * g  # mul_(beta2).addcmul_(g, g, 1 - b2)
        step_size = h.lr / (1 - h.beta1**t)
        denom = np.sqrt(v) / f(np.sqrt(1 - h.beta2**t)) + f(h.eps)
        p = param - f(step_size) * (m / denom)
    return p, KernelState(m, v, None, t)
