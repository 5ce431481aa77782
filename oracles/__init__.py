"""The arbitrary-precision oracle: executes any spec variant exactly and rounds correctly.

Public entry points: :func:`step` (lock-step: one exact step from given
state) and :func:`trajectory` (free-running: the oracle carries its own exact
state), both in :mod:`adamspec.oracles.adam`; correct rounding in
:mod:`adamspec.oracles.rounding`; error metrics in :mod:`adamspec.oracles.metrics`.
"""

from adamspec.oracles.adam import (
    OracleInputError,
    OracleState,
    StepResult,
    radam_rho,
    step,
    trajectory,
)
from adamspec.oracles.hyperparams import HYPER_MODES, ExactHyper, resolve
from adamspec.oracles.ziv import MAX_PRECISION, RoundingUndecided

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
