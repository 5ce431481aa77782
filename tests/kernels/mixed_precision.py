"""Mixed-precision user kernels (issue 17): 16-bit params, float32 moments, and for two
presets a float32 master copy, each declaring its precision as a kernel author would.

Written from the paper's Algorithm 1 the way such kernels are written: the update formed in
float64 from the stored values, each stored value rounded once to its own dtype.

* ``bf16_fp32state`` (``precision = "bf16-fp32state"``): bfloat16 params, float32 m and v,
  the update on the bfloat16 param itself. Conforms.
* ``bf16_fp32master`` (``precision = {"state": "float32", "master": "float32"}``, the param
  dtype from ``--dtype bfloat16``): the update on the float32 master, the param the new
  master rounded to bfloat16. Conforms.
* ``fp16_fp32master`` (``precision = "fp16-fp32master"``): the same for float16 params.
* ``bf16_fp32master_all`` and ``Bf16MasterAdam``: ``bf16_fp32master`` in the multi-tensor
  and stateful-object forms. Conform.
* ``master_rounded_to_bf16``: the master rounded to bfloat16 before the update (the bug of
  a kernel that reloads its master from the params): does not conform.
* ``no_master_copy``: the update on the bfloat16 param, the master returned as the param
  upcast (a kernel that keeps no master at all): does not conform.
* ``m_in_bfloat16``: returns m in bfloat16 while declaring float32 state: an error row.
* ``forgets_master``: declares a master and returns none: an error row.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from adamspec.impl.adapters.kernel_protocol import KernelState

BF16 = np.dtype(ml_dtypes.bfloat16)


def _moments(grad, state, h):
    """The new m and v in float64 from the stored ones (Algorithm 1)."""
    g = grad.astype(np.float64)
    m = h.beta1 * state.m.astype(np.float64) + (1 - h.beta1) * g
    v = h.beta2 * state.v.astype(np.float64) + (1 - h.beta2) * g * g
    return m, v


def _updated(weights, m, v, t, h):
    """``weights - lr * m_hat / (sqrt(v_hat) + eps)`` in float64."""
    m_hat, v_hat = m / (1 - h.beta1**t), v / (1 - h.beta2**t)
    return weights.astype(np.float64) - h.lr * m_hat / (np.sqrt(v_hat) + h.eps)


def _fp32_state(m, v, t, master=None):
    return KernelState(m.astype(np.float32), v.astype(np.float32), None, t, master)


def bf16_fp32state(param, grad, state, h):
    t = state.step + 1
    m, v = _moments(grad, state, h)
    return _updated(param, m, v, t, h).astype(param.dtype), _fp32_state(m, v, t)


bf16_fp32state.precision = "bf16-fp32state"


def _master_step(param, grad, state, h, master_in=None):
    """A master-weight step: the update on ``master_in`` (the stored master by default),
    the new master in float32, the param the new master rounded to the param's dtype."""
    t = state.step + 1
    m, v = _moments(grad, state, h)
    start = state.master if master_in is None else master_in
    master = _updated(start, m, v, t, h).astype(np.float32)
    return master.astype(param.dtype), _fp32_state(m, v, t, master)


def bf16_fp32master(param, grad, state, h):
    return _master_step(param, grad, state, h)


bf16_fp32master.precision = {"state": "float32", "master": "float32"}


def fp16_fp32master(param, grad, state, h):
    return _master_step(param, grad, state, h)


fp16_fp32master.precision = "fp16-fp32master"


def bf16_fp32master_all(params, grads, state, h):
    """``bf16_fp32master`` with every tensor at once (lists), as a multi-tensor kernel."""
    t = state.step
    out = [
        _master_step(p, g, KernelState(m, v, None, t, w), h)
        for p, g, m, v, w in zip(params, grads, state.m, state.v, state.master, strict=True)
    ]
    new = KernelState(
        [o[1].m for o in out], [o[1].v for o in out], None, t + 1, [o[1].master for o in out]
    )
    return [o[0] for o in out], new


bf16_fp32master_all.multi_tensor = True
bf16_fp32master_all.precision = "bf16-fp32master"


class Bf16MasterAdam:
    """``bf16_fp32master`` as a stateful object (lists of tensors)."""

    precision = "bf16-fp32master"

    def __init__(self, h):
        self.h = h
        self.state: KernelState | None = None

    def set_state(self, state):
        self.state = state

    def get_state(self):
        return self.state

    def step(self, params, grads):
        s, t = self.state, self.state.step
        out = [
            _master_step(p, g, KernelState(m, v, None, t, w), self.h)
            for p, g, m, v, w in zip(params, grads, s.m, s.v, s.master, strict=True)
        ]
        self.state = KernelState(
            [o[1].m for o in out], [o[1].v for o in out], None, t + 1, [o[1].master for o in out]
        )
        return [o[0] for o in out]


def master_rounded_to_bf16(param, grad, state, h):
    """The update starts from the master rounded to bfloat16: the master adds nothing."""
    return _master_step(param, grad, state, h, master_in=state.master.astype(BF16))


master_rounded_to_bf16.precision = "bf16-fp32master"


def no_master_copy(param, grad, state, h):
    """The update on the bfloat16 param; the 'master' is the new param upcast."""
    t = state.step + 1
    m, v = _moments(grad, state, h)
    p = _updated(param, m, v, t, h).astype(param.dtype)
    return p, _fp32_state(m, v, t, p.astype(np.float32))


no_master_copy.precision = "bf16-fp32master"


def m_in_bfloat16(param, grad, state, h):
    p, s = bf16_fp32master(param, grad, state, h)
    return p, KernelState(s.m.astype(BF16), s.v, None, s.step, s.master)


m_in_bfloat16.precision = "bf16-fp32master"


def forgets_master(param, grad, state, h):
    p, s = bf16_fp32master(param, grad, state, h)
    return p, KernelState(s.m, s.v, None, s.step)


forgets_master.precision = "bf16-fp32master"


def declares_an_unknown_preset(param, grad, state, h):
    return bf16_fp32state(param, grad, state, h)


declares_an_unknown_preset.precision = "bf16-fp32mastr"


def declares_a_param_role(param, grad, state, h):
    return bf16_fp32state(param, grad, state, h)


declares_a_param_role.precision = {"param": "bfloat16", "state": "float32"}


def undeclared_bf16_fp32state(param, grad, state, h):
    """``bf16_fp32state`` without the declaration: the command line says the precision."""
    return bf16_fp32state(param, grad, state, h)
