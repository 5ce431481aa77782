"""A mixed-precision Adam step as GPU kernels write it: bfloat16 params and gradients,
float32 m and v (adamspec's preset ``bf16-fp32state``).

    adamspec check examples/bf16_adam.py:bf16_adam --variant torch.Adam

The step is torch.Adam's float32 arithmetic on the param and gradient upcast to float32,
and the new param is rounded back to bfloat16 once. The ``precision`` attribute tells the
harness the dtype of each array it hands over and gets back.
"""

import numpy as np

from adamspec.impl.adapters.kernel_protocol import KernelState

f32 = np.float32


def bf16_adam(param, grad, state, h):  # param, grad: bfloat16; state.m, state.v: float32
    t = state.step + 1
    p, g = param.astype(f32), grad.astype(f32)
    if h.weight_decay:
        g = g + f32(h.weight_decay) * p
    with np.errstate(over="ignore", invalid="ignore"):  # g*g may overflow float32
        m = state.m + f32(1 - h.beta1) * (g - state.m)
        v = state.v * f32(h.beta2) + f32(1 - h.beta2) * g * g
        denom = np.sqrt(v) / f32(np.sqrt(1 - h.beta2**t)) + f32(h.eps)
        p = p - f32(h.lr / (1 - h.beta1**t)) * (m / denom)
    return p.astype(param.dtype), KernelState(m, v, None, t)


bf16_adam.precision = "bf16-fp32state"
