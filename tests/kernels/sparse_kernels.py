"""User kernels with a sparse-rows path (``sparse = True``): an embedding table's gradient
arrives as ``SparseRows(indices, values, num_rows)``, the other tensors' dense.

* ``lazy_sparse_adam`` is ``torch.optim.SparseAdam``'s arithmetic: repeated rows summed,
  then only the rows present update their moments and params (lazy); eps-hat form with
  Python-float (binary64) hyperparameters. Conforms to torch.SparseAdam.
* ``dense_sparse_adam`` is tf_keras Adam's: every row's moments decay as if its gradient
  were zero (dense-equivalent), moments in interpolation form ``m + (1 - beta1)(g - m)``
  with ``1 - beta`` formed in binary64 then held in the dtype, the powers of the dtype's
  beta, eps-hat form, weight decay decoupled and scaled by lr. Conforms to tf_keras.Adam.

Both compute in float64 and round each stored value once to the param's dtype.
"""

from __future__ import annotations

import numpy as np

from adamspec.impl.adapters.kernel_protocol import KernelState
from adamspec.spec.gradients import SparseRows


def _summed(grad, shape) -> tuple[np.ndarray, np.ndarray]:
    """The gradient as a dense float64 array (repeated rows summed) and a mask of the rows it
    touches (every row for a dense gradient)."""
    if not isinstance(grad, SparseRows):
        return grad.astype(np.float64), np.ones(shape[:1], bool)
    dense = np.zeros(shape, np.float64)
    np.add.at(dense, grad.indices, grad.values.astype(np.float64))
    touched = np.zeros(shape[:1], bool)
    touched[grad.indices] = True
    return dense, touched


def lazy_sparse_adam(param, grad, state, h):
    t = state.step + 1
    g, rows = _summed(grad, param.shape)
    m, v, p = (x.astype(np.float64) for x in (state.m, state.v, param))
    m_new = h.beta1 * m + (1 - h.beta1) * g
    v_new = h.beta2 * v + (1 - h.beta2) * g * g
    step_size = h.lr * np.sqrt(1 - h.beta2**t) / (1 - h.beta1**t)
    p_new = p - step_size * m_new / (np.sqrt(v_new) + h.eps)
    # rows the gradient does not touch keep their moments and params
    m, v, p = (np.where(rows[:, None] if x.ndim > 1 else rows, new, x)
               for x, new in ((m, m_new), (v, v_new), (p, p_new)))  # fmt: skip
    dt = param.dtype
    return p.astype(dt), KernelState(m.astype(dt), v.astype(dt), None, t)


lazy_sparse_adam.sparse = True


def dense_sparse_adam(param, grad, state, h):
    t = state.step + 1
    dt = param.dtype
    held = lambda x: float(dt.type(x))  # noqa: E731 -- a hyperparameter as the dtype holds it
    g, _ = _summed(grad, param.shape)
    m, v, p = (x.astype(np.float64) for x in (state.m, state.v, param))
    k1, k2 = held(1 - h.beta1), held(1 - h.beta2)
    lr, eps, wd = held(h.lr), held(h.eps), held(h.weight_decay)
    m = m + k1 * (g - m)
    v = v + k2 * (g * g - v)
    c1, c2 = 1 - held(h.beta1) ** t, 1 - held(h.beta2) ** t
    p = p * (1 - lr * wd) - lr * np.sqrt(c2) / c1 * m / (np.sqrt(v) + eps)
    return p.astype(dt), KernelState(m.astype(dt), v.astype(dt), None, t)


dense_sparse_adam.sparse = True
