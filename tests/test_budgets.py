"""Budgets: the one way to change one (``Budget.with_ulps``), as --budget-ulp and a gate use it."""

from __future__ import annotations

import pytest

from adamspec.harness.budgets import DEFAULT
from adamspec.harness.check import uniform_budget
from adamspec.harness.run import RunUsageError


def test_with_ulps_sets_both_measures_of_the_named_components_only():
    budget = DEFAULT.with_ulps({"v": 0, "param": 7}, "measured 6 ULP on the fused kernel")
    assert budget.ulp == {**DEFAULT.ulp, "v": 0, "param": 7}
    assert list(budget.ulp) == list(DEFAULT.ulp)  # meta.json lists them in this order
    assert budget.scaled == {**DEFAULT.scaled, "v": 0.0, "param": 7.0}
    assert budget.reasons["v"] == budget.reasons["param"] == "measured 6 ULP on the fused kernel"
    assert budget.reasons["m"] == DEFAULT.reasons["m"]
    # 0 is correctly rounded: one ULP off is over, by either measure
    assert budget.within("v", 0, 0.0) and not budget.within("v", 1, 1.0)
    assert budget.within("m", 2, 9.0)  # m keeps the default
    assert DEFAULT.ulp["v"] == 3  # a copy: the default is untouched


@pytest.mark.parametrize(
    ("ulps", "message"),
    [
        ({"w": 1}, "budget component 'w' is unknown; allowed: param, m, v, v_max, ema, master"),
        ({"m": -1}, "budget m=-1 must be a non-negative integer"),
        ({"m": 1.5}, "budget m=1.5 must be a non-negative integer"),
        ({"m": True}, "budget m=True must be a non-negative integer"),
    ],
)
def test_with_ulps_rejects_what_is_not_a_budget(ulps, message):
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[") + "$"):
        DEFAULT.with_ulps(ulps, "r")


def test_uniform_budget_is_every_component_at_one_count():
    budget = uniform_budget(5)
    assert budget.ulp == dict.fromkeys(DEFAULT.ulp, 5)
    assert budget.scaled == dict.fromkeys(DEFAULT.ulp, 5.0)
    assert set(budget.reasons.values()) == {"--budget-ulp 5"}
    with pytest.raises(RunUsageError, match=r"--budget-ulp -1 must be a non-negative integer"):
        uniform_budget(-1)
