"""Real third-party Adams, wrapped as kernels (``impl/adapters/kernel_protocol.py``'s functional
form), for the fingerprint tests: what each one computes must come out of ``adamspec check``
without a claim.

* :func:`sklearn_adam` drives scikit-learn's own ``AdamOptimizer`` (the MLP's optimizer);
* :func:`jax_example_adam` drives ``jax.example_libraries.optimizers.adam``;
* :func:`chainer_adam` is Chainer 7.8.1's ``AdamRule.update_core_cpu`` transcribed line for
  line (Chainer does not run here: its ``setup.py`` imports ``pkg_resources`` and its
  ``chainer/backends/_cpu.py`` reads ``numpy.sctypes``, removed in NumPy 2.0);
* :func:`torch_adamw_copy` is torch 2.13's ``_single_tensor_adam`` with
  ``decoupled_weight_decay=True`` (what ``torch.optim.AdamW`` runs) copied line for line.

Each wrapper declines (NotImplementedError) what its optimizer does not have, so those cases
are reported as skipped rather than measured against a formula the optimizer never claimed.
"""

from __future__ import annotations

import math

import numpy as np

from adamspec.impl.adapters.kernel_protocol import KernelState


def _no_weight_decay(h, who: str) -> None:
    if h.weight_decay:
        raise NotImplementedError(f"{who} has no weight decay")


def sklearn_adam(param, grad, state, h):
    """scikit-learn's ``AdamOptimizer``: ``update_params`` adds ``-lr_t m / (sqrt(v) + eps)``
    with ``lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)`` (the paper's eps-hat form)."""
    from sklearn.neural_network._stochastic_optimizers import AdamOptimizer

    _no_weight_decay(h, "sklearn AdamOptimizer")
    if h.eps_root:
        raise NotImplementedError("sklearn AdamOptimizer has no eps_root")
    p = param.copy()
    opt = AdamOptimizer([p], h.lr, h.beta1, h.beta2, h.eps)
    opt.ms, opt.vs, opt.t = [state.m.copy()], [state.v.copy()], state.step
    opt.update_params([p], [grad])
    return p, KernelState(opt.ms[0], opt.vs[0], None, opt.t)


def jax_example_adam(param, grad, state, h):
    """``jax.example_libraries.optimizers.adam``'s raw update (the function the ``optimizer``
    decorator wraps), on the kernel's arrays; its step index ``i`` counts from 0."""
    import jax.numpy as jnp
    from jax.example_libraries import optimizers

    _no_weight_decay(h, "jax.example_libraries adam")
    if h.eps_root:
        raise NotImplementedError("jax.example_libraries adam has no eps_root")
    if param.dtype != np.float32:
        raise NotImplementedError("jax runs float32 here (x64 is off)")
    _, update, _ = optimizers.adam.__wrapped__(h.lr, h.beta1, h.beta2, h.eps)
    x, m, v = update(
        state.step,
        jnp.asarray(grad),
        (jnp.asarray(param), jnp.asarray(state.m), jnp.asarray(state.v)),
    )
    return np.asarray(x), KernelState(np.asarray(m), np.asarray(v), None, state.step + 1)


def chainer_adam(param, grad, state, h):
    """Chainer 7.8.1's ``AdamRule`` (amsgrad and adabound off, ``eta = 1``), transcribed from
    https://github.com/chainer/chainer/blob/v7.8.1/chainer/optimizers/adam.py ::

        52      fix1 = 1. - math.pow(hp.beta1, t)
        53      fix2 = 1. - math.pow(hp.beta2, t)
        54      return hp.alpha * math.sqrt(fix2) / fix1
        ...
        71          if a == 1:
        72              x += b * y
        73          else:
        74              x[...] = a * x + b * y
        ...
        200         # m += (1 - beta1) * (grad - m)
        201         _inplace_axpby(m, 1.0, 1.0 - hp.beta1, grad - m)
        202         # v += (1 - beta2) * (grad * grad - v)
        203         _inplace_axpby(v, 1.0, 1.0 - hp.beta2, grad*grad - v)
        ...
        213             vhat = v
        214         vhat = vhat.astype(dtype, copy=False)
        215         step = self.alpha_t / (numpy.sqrt(vhat) + hp.eps)
        ...
        221         _inplace_axpby(
        222             param.data, 1.0 - hp.eta * hp.weight_decay_rate, -hp.eta, step * m)

    so the weight decay ``(1 - eta * weight_decay_rate) * param`` is not scaled by ``alpha``
    (the learning rate), and eps is added to ``sqrt(v)`` before the bias correction."""
    if h.eps_root:
        raise NotImplementedError("Chainer's Adam has no eps_root")
    eta, t = 1.0, state.step + 1
    dtype = np.float32 if param.dtype == np.float16 else param.dtype  # _get_intermediate_dtype
    grad = grad.astype(dtype, copy=False)
    m, v, p = state.m.copy(), state.v.copy(), param.copy()
    fix1 = 1.0 - math.pow(h.beta1, t)
    fix2 = 1.0 - math.pow(h.beta2, t)
    alpha_t = h.lr * math.sqrt(fix2) / fix1
    m += (1.0 - h.beta1) * (grad - m)
    v += (1.0 - h.beta2) * (grad * grad - v)
    vhat = v.astype(dtype, copy=False)
    step = alpha_t / (np.sqrt(vhat) + h.eps)
    a, b = 1.0 - eta * h.weight_decay, -eta
    if a == 1:
        p += b * (step * m)
    else:
        p[...] = a * p + b * (step * m)
    return p, KernelState(m, v, None, t)


def torch_adamw_copy(param, grad, state, h):
    """torch 2.13 ``torch/optim/adam.py`` ``_single_tensor_adam`` with
    ``decoupled_weight_decay=True`` (``torch.optim.AdamW``), amsgrad, maximize, capturable
    and differentiable off: the lines from ``param.mul_(1 - lr * weight_decay)`` to
    ``param.addcdiv_(exp_avg, denom, value=-step_size)`` below are torch's, on torch
    tensors (``device_beta1`` is ``beta1`` on CPU)."""
    import torch

    if h.eps_root:
        raise NotImplementedError("torch.optim.AdamW has no eps_root")
    lr, beta1, beta2, eps, weight_decay = h.lr, h.beta1, h.beta2, h.eps, h.weight_decay
    param = torch.from_numpy(param.copy())
    grad = torch.from_numpy(np.asarray(grad).copy())
    exp_avg, exp_avg_sq = torch.from_numpy(state.m.copy()), torch.from_numpy(state.v.copy())
    step = state.step + 1
    if weight_decay != 0:
        param.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)
    return param.numpy(), KernelState(exp_avg.numpy(), exp_avg_sq.numpy(), None, step)
