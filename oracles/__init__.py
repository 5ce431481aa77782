"""The arbitrary-precision oracle: executes any spec variant exactly and rounds correctly.

Public entry points: :func:`step` (lock-step: one exact step from given
state) and :func:`trajectory` (free-running: the oracle carries its own exact
state), both in :mod:`oracles.adam`; correct rounding in
:mod:`oracles.rounding`; error metrics in :mod:`oracles.metrics`.
"""

from oracles.adam import (
    OracleInputError,
    OracleState,
    StepResult,
    radam_rho,
    step,
    trajectory,
)
from oracles.hyperparams import HYPER_MODES, ExactHyper, resolve
from oracles.ziv import MAX_PRECISION, RoundingUndecided

__all__ = [
    "HYPER_MODES",
    "MAX_PRECISION",
    "ExactHyper",
    "OracleInputError",
    "OracleState",
    "RoundingUndecided",
    "StepResult",
    "radam_rho",
    "resolve",
    "step",
    "trajectory",
]
