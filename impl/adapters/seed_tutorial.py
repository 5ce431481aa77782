"""A "user kernel": the hand-written ``AdamOptim`` from the PyTorch tutorial seed
(pythonguides.com "Adam optimizer PyTorch", ``shared/seeds/003_*``), wrapped as a
third-party kernel would be, bugs and all.

The class below is the tutorial's code as published (only reformatted, and with
``np`` bound as the tutorial's own code uses it; the tutorial imports
``numpy as num`` and then calls ``np.sqrt``, a NameError as written). Its bug
that adamspec reports: the bias's second moment is updated with ``db``, not
``db**2`` (``self.v_db = ... + (1-self.beta2)*(db)``). adamspec measures it;
it does not fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adamspec.impl.adapters.base import Adapter, AdapterInfo, State, Unsupported


class AdamOptim:  # the tutorial's code, verbatim apart from formatting
    def __init__(self, eta=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8):
        self.m_dw, self.v_dw = 0, 0
        self.m_db, self.v_db = 0, 0
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.eta = eta

    def updates(self, t, weight, b, dw, db):
        ## dw, db are from current minibatch
        # weights
        self.m_dw = self.beta1 * self.m_dw + (1 - self.beta1) * dw
        self.m_db = self.beta1 * self.m_db + (1 - self.beta1) * db

        ## rms beta 2
        self.v_dw = self.beta2 * self.v_dw + (1 - self.beta2) * (dw**2)

        self.v_db = self.beta2 * self.v_db + (1 - self.beta2) * (db)

        m_dw_corr = self.m_dw / (1 - self.beta1**t)
        m_db_corr = self.m_db / (1 - self.beta1**t)
        v_dw_corr = self.v_dw / (1 - self.beta2**t)
        v_db_corr = self.v_db / (1 - self.beta2**t)

        weight = weight - self.eta * (m_dw_corr / (np.sqrt(v_dw_corr) + self.epsilon))
        b = b - self.eta * (m_db_corr / (np.sqrt(v_db_corr) + self.epsilon))
        return weight, b


class TutorialAdamOptim(Adapter):
    """The tutorial kernel on two tensors: tensor 0 is ``weight``, tensor 1 is ``b``.

    Its state is the four attributes ``m_dw``, ``v_dw``, ``m_db``, ``v_db``; its step
    count is the ``t`` the caller passes (we pass 1, 2, ...).
    """

    framework = ""
    dtypes = ("float64", "float32")

    def _build(self) -> None:
        if len(self.shapes) != 2:
            raise Unsupported("the tutorial kernel updates exactly two tensors (weight, b)")
        h = self.hyper
        self.version = "pythonguides tutorial"
        self.kernel = AdamOptim(float(h.lr_at(1)), float(h.beta1), float(h.beta2), float(h.eps))
        self.params: list[np.ndarray] = []
        self._step = 0

    def set_state(self, state: State) -> None:
        dt = np.dtype(self.dtype)
        self.params = [np.asarray(p, dtype=dt).copy() for p in state.params]
        k = self.kernel
        k.m_dw, k.m_db = (np.asarray(x, dtype=dt).copy() for x in state.m)
        k.v_dw, k.v_db = (np.asarray(x, dtype=dt).copy() for x in state.v)
        self._step = state.step

    def get_state(self) -> State:
        k = self.kernel
        dt = np.dtype(self.dtype)

        def arr(x: Any, shape: tuple[int, ...]) -> np.ndarray:
            return np.broadcast_to(np.asarray(x, dtype=dt), shape).copy()

        return State(
            [p.copy() for p in self.params],
            [arr(k.m_dw, self.shapes[0]), arr(k.m_db, self.shapes[1])],
            [arr(k.v_dw, self.shapes[0]), arr(k.v_db, self.shapes[1])],
            None,
            self._step,
        )

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        dt = np.dtype(self.dtype)
        dw, db = (np.asarray(g, dtype=dt) for g in grads)
        self._step += 1
        self.kernel.eta = float(self.hyper.lr_at(self._step))
        with np.errstate(invalid="ignore"):  # its v_db can go negative: sqrt -> NaN, reported
            weight, b = self.kernel.updates(self._step, self.params[0], self.params[1], dw, db)
        self.params = [np.asarray(weight, dtype=dt), np.asarray(b, dtype=dt)]


INFOS = [
    AdapterInfo(
        "user.AdamOptim(tutorial)",
        "",
        "paper.algorithm1",
        "adamspec.impl.adapters.seed_tutorial:TutorialAdamOptim",
    )
]
