"""Toy kernels for the scale suite, index localization and the range tier (issue 15).

Each is torch.Adam's float32 arithmetic (``torch_like``, the control) with at most one bug
of the kind a SIMD or GPU kernel has, and each is caught on the suite that should catch it
and only there (tests/test_scale.py):

* ``torch_like``: conforms to torch.Adam, with the range tier on ``default`` (g*g overflows
  float32 on ``huge`` and ``mixed-scales``) and on ``scale``;
* ``blocks_skip_v_correction``: a main loop over full 1024-element blocks (16 lanes x 64)
  that leaves out v's bias correction, which its scalar tail applies: only tensors of at
  least one full block show it (the scale suite; the default suite's are at most 24);
* ``index_wraps_at_2_16``: gradients read through a 16-bit index (``g[i mod 2^16]``), as a
  kernel with int16/uint16 offsets does: only tensors past 2^16 coordinates show it;
* ``adamw_one_minus_beta2_in_float32``: torch.AdamW whose ``1 - beta2`` is formed from
  float32(beta2) in float32, a 215-ULP error in v everywhere, which the engine used to miss
  on tiny gradients under decoupled decay (``tiny-near-eps``).
"""

from __future__ import annotations

import numpy as np

from adamspec.impl.adapters.kernel_protocol import KernelState

#: The main loop's block (16 float32 lanes of a 512-bit vector, unrolled 64 times).
BLOCK = 1024


def _moments(grad, state, h, one_minus_beta2):
    f = np.float32
    g = grad
    m = state.m + f(1 - h.beta1) * (g - state.m)  # lerp_(grad, 1 - beta1)
    with np.errstate(over="ignore", invalid="ignore"):
        v = state.v * f(h.beta2) + one_minus_beta2 * g * g  # mul_(beta2).addcmul_(g, g)
    return m, v


def _step(param, m, v, h, t, v_correction):
    f = np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        step_size = h.lr / (1 - h.beta1**t)
        denom = np.sqrt(v) / v_correction + f(h.eps)
        return param - f(step_size) * (m / denom)


def torch_like(param, grad, state, h):
    """torch.Adam's float32 arithmetic (foreach=False) in NumPy float32: conforms, range tier."""
    t = state.step + 1
    if h.weight_decay:
        grad = grad + np.float32(h.weight_decay) * param
    m, v = _moments(grad, state, h, np.float32(1 - h.beta2))
    p = _step(param, m, v, h, t, np.float32(np.sqrt(1 - h.beta2**t)))
    return p, KernelState(m, v, None, t)


def blocks_skip_v_correction(param, grad, state, h):
    """torch_like whose full 1024-element blocks divide sqrt(v) by 1 instead of sqrt(1 -
    beta2^t); the scalar tail after the last full block is right."""
    p, s = torch_like(param, grad, state, h)
    full = (param.size // BLOCK) * BLOCK
    if full:
        flat_p = p.reshape(-1).copy()
        t = state.step + 1
        m, v = s.m.reshape(-1)[:full], s.v.reshape(-1)[:full]
        flat_p[:full] = _step(param.reshape(-1)[:full], m, v, h, t, np.float32(1.0))
        p = flat_p.reshape(param.shape)
    return p, s


def index_wraps_at_2_16(param, grad, state, h):
    """torch_like reading each coordinate's gradient through a 16-bit index."""
    flat = grad.reshape(-1)
    wrapped = flat[np.arange(flat.size) % (1 << 16)].reshape(grad.shape)
    return torch_like(param, wrapped, state, h)


def adamw_one_minus_beta2_in_float32(param, grad, state, h):
    """torch.AdamW (decoupled decay, lr-scaled) with ``1 - beta2`` formed in float32 from
    float32(beta2): 1 - 0.99900001 = 0.00099998713, 1.3e-5 relative (215 ULPs) off in v."""
    f = np.float32
    t = state.step + 1
    decayed = param * f(1 - h.lr * h.weight_decay)
    m, v = _moments(grad, state, h, f(1) - f(h.beta2))
    p = _step(decayed, m, v, h, t, f(np.sqrt(1 - h.beta2**t)))
    return p, KernelState(m, v, None, t)
