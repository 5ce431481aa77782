"""How much error counts as "rounding only": per-component ULP budgets, each with its reason.

A float32 implementation rounds after every operation, so it cannot be
correctly rounded; the question the harness asks is whether its error is the
size rounding explains or the size a different formula explains. Two measures
are used, and a component is within budget when either holds:

* ``ulp``: ordinal ULP distance to the correctly rounded exact result;
* ``scaled``: the error in ULPs of the *operands'* magnitude (for ``m``:
  ``max(beta1 |m_prev|, (1 - beta1) |g|)``; for the parameter, ``max(|theta|,
  (4 + kappa_t + c_m) |step|)`` where 4 counts the roundings of the step itself
  (:data:`adamspec.harness.engine.UPDATE_ROUNDINGS`), ``kappa_t`` is the conditioning of
  ``1 - beta^t`` (:func:`adamspec.harness.engine.bias_correction_condition`) and ``c_m``
  m's cancellation, see :func:`adamspec.harness.engine.component_scales`).
  ``m + (g - m)(1 - beta1)`` loses hundreds of ULPs of a result that cancels to nearly
  zero, yet stays within one ULP of the terms: that is rounding, not a wrong formula, and
  only the scaled measure can say so.

Wrong formulas (eps moved, a bias correction missing, v unsquared) miss by
thousands to millions of ULPs on the problems of :mod:`adamspec.harness.problems`
(the separation matrix of every run shows it), so these budgets separate the
two by orders of magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Budget:
    """ULP budgets per state component; ``reasons`` says where each number comes from."""

    ulp: Mapping[str, int]
    scaled: Mapping[str, float]
    reasons: Mapping[str, str] = field(default_factory=dict)

    def within(self, component: str, ulp_error: int, scaled_ulp: float) -> bool:
        """True if the error is rounding-sized by either measure (``-1``: never)."""
        if ulp_error < 0:
            return False
        return ulp_error <= self.ulp.get(component, 0) or scaled_ulp <= self.scaled.get(
            component, 0.0
        )

    def multiple(self, component: str, ulp_error: int, scaled_ulp: float) -> float:
        """How many budgets the error spends (<= 1 is within); inf for NaN/inf mismatches.

        A component budgeted at 0 by both measures is correctly rounded: only 0 ULP is
        within (1 ULP spends 2), however small the error is against the operands' scale.
        """
        if ulp_error < 0:
            return math.inf
        by_ulp = ulp_error / max(self.ulp.get(component, 0), 0.5)
        if self.correctly_rounded(component):
            return by_ulp
        by_scale = scaled_ulp / max(self.scaled.get(component, 0.0), 0.5)
        return min(by_ulp, by_scale)

    def correctly_rounded(self, component: str) -> bool:
        """Budgeted 0 by both measures: only 0 ULP is within, the scaled measure never
        rescues an error (:meth:`multiple`, and its vectorized form in the engine)."""
        return self.ulp.get(component, 0) == 0 and self.scaled.get(component, 0.0) == 0

    def with_ulps(self, ulps: Mapping[str, int], reason: str) -> Budget:
        """A copy with these components at these ULPs, for ``reason``; the others unchanged.

        The number replaces both measures (ULPs of the result and ULPs of the operands'
        scale), so ``0`` means correctly rounded. The one way a budget is changed: by
        ``--budget-ulp``, a gate config's ``[budget]`` table, a per-implementation budget.
        Raises :class:`ValueError` for a component this budget does not have or a count
        that is not a non-negative integer.
        """
        for name, value in ulps.items():
            if name not in self.ulp:
                allowed = ", ".join(self.ulp)
                raise ValueError(f"budget component {name!r} is unknown; allowed: {allowed}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"budget {name}={value!r} must be a non-negative integer")
        return Budget(
            {**self.ulp, **ulps},
            {**self.scaled, **{name: float(value) for name, value in ulps.items()}},
            {**self.reasons, **dict.fromkeys(ulps, reason)},
        )


#: The default budget for every implementation in every dtype.
DEFAULT = Budget(
    ulp=dict({"param": 2, "m": 2, "v": 3, "v_max": 3, "ema": 2, "master": 2}),
    scaled=dict({"param": 2.0, "m": 2.0, "v": 3.0, "v_max": 3.0, "ema": 2.0, "master": 2.0}),
    reasons=dict(
        {
            "param": (
                "theta - lr*u rounds theta's neighbourhood: issue-4 adapter tests measured "
                "<= 1 ULP for every framework in float32 (1 with decoupled decay, whose "
                "theta*(1 - lr*wd) is rounded before the update); 2 leaves one rounding spare"
            ),
            "m": (
                "one or two float32 roundings of terms no larger than max(|m|, |g|): "
                "<= 1.5 ULP of that scale (lerp form included); the plain-ULP figure is "
                "the correctly rounded forms' 1 ULP plus one spare"
            ),
            "v": (
                "beta2*v + (1-beta2)*g*g: three roundings on non-negative terms, measured 2 "
                "ULP for torch fused (one expression); 3 allows the binary64 complement "
                "forms that round 1-beta2 once more"
            ),
            "v_max": "a max of v values: v's budget",
            "ema": "one lerp of the weights: m's argument",
            "master": (
                "the master copy is theta - lr*u in the master's arithmetic: the param's "
                "argument (the 16-bit param is then its rounding, within 1 ULP of its own "
                "where the master is within budget)"
            ),
        }
    ),
)

#: Why our own implementations (``adamspec[...]``) have no budget at all.
CORRECTLY_ROUNDED = "correctly rounded by construction"


def budget_for(implementation: str, budget: Budget = DEFAULT) -> Budget:
    """The budget ``implementation`` is judged by in run, check and gate: ``budget``, or 0
    ULP on every component for one registered as correctly rounded
    (:attr:`adamspec.impl.adapters.base.AdapterInfo.correctly_rounded`: ours), whatever
    ``--budget-ulp`` or a gate config says, so that any nonzero ULP is a discrepancy."""
    from adamspec.impl.adapters import REGISTRY, load_registry

    load_registry()
    info = REGISTRY.get(implementation)
    if info is None or not info.correctly_rounded:
        return budget
    return budget.with_ulps(dict.fromkeys(budget.ulp, 0), CORRECTLY_ROUNDED)


#: Two catalog variants are "separated" on a problem set when their exact steps, rounded
#: to the problem's dtype, differ somewhere by at least this many ULPs: 16x the largest
#: default budget, so no implementation within budget of one can be within budget of both.
SEPARATION_THRESHOLD_ULP = 48
