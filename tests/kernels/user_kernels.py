"""User kernels in adamspec's bring-your-own-kernel forms, for the `adamspec check` tests."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from adamspec.impl.adapters.kernel_protocol import KernelState


def adam(param, grad, state, h):
    """Algorithm 1 in float64, each stored value rounded once: conforms."""
    t = state.step + 1
    g = grad.astype(np.float64)
    m = h.beta1 * state.m.astype(np.float64) + (1 - h.beta1) * g
    v = h.beta2 * state.v.astype(np.float64) + (1 - h.beta2) * g * g
    m_hat, v_hat = m / (1 - h.beta1**t), v / (1 - h.beta2**t)
    p = param.astype(np.float64) - h.lr * m_hat / (np.sqrt(v_hat) + h.eps)
    dt = param.dtype
    return p.astype(dt), KernelState(m.astype(dt), v.astype(dt), None, t)


def adam_eps_hat(param, grad, state, h):
    """eps added to sqrt(v) before the bias correction: the paper's eps-hat form."""
    t = state.step + 1
    g = grad.astype(np.float64)
    m = h.beta1 * state.m.astype(np.float64) + (1 - h.beta1) * g
    v = h.beta2 * state.v.astype(np.float64) + (1 - h.beta2) * g * g
    lr_t = h.lr * np.sqrt(1 - h.beta2**t) / (1 - h.beta1**t)
    p = param.astype(np.float64) - lr_t * m / (np.sqrt(v) + h.eps)
    dt = param.dtype
    return p.astype(dt), {"m": m.astype(dt), "v": v.astype(dt), "step": t}


def raises_at_step_3(param, grad, state, h):
    if state.step + 1 == 3:
        raise FloatingPointError("kernel gave up at step 3")
    return adam(param, grad, state, h)


def hangs_at_step_2(param, grad, state, h):
    if state.step + 1 == 2:
        time.sleep(3600)
    return adam(param, grad, state, h)


def segfaults_at_step_2(param, grad, state, h):
    if state.step + 1 == 2:
        os.kill(os.getpid(), signal.SIGSEGV)
    return adam(param, grad, state, h)


def wrong_dtype(param, grad, state, h):
    p, s = adam(param, grad, state, h)
    return p.astype(np.float64), s


def wrong_shape(param, grad, state, h):
    p, s = adam(param, grad, state, h)
    return p.reshape(-1)[:1], s


NOT_A_KERNEL = 42
