"""Our own implementations are judged at 0 ULP (issue 18).

``adamspec[...]`` claims every stored value is correctly rounded, so a budget of a few
ULP (right for frameworks) would hide exactly the bugs it must show: its registrations
say ``correctly_rounded`` and :func:`adamspec.harness.budgets.budget_for`, which run,
check and gate all go through, gives them zero on every component whatever the
configured budget. One ULP off is then a discrepancy; the same numbers under a
framework's name are rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from adamspec.harness.budgets import CORRECTLY_ROUNDED, DEFAULT, budget_for
from adamspec.harness.check import uniform_budget
from adamspec.harness.engine import CoordinateErrors
from adamspec.harness.run import RunConfig, run
from adamspec.impl.adapters import REGISTRY, load_registry
from adamspec.impl.adapters.base import AdapterInfo
from adamspec.impl.adapters.ours import Ours


class OneUlpOff(Ours):
    """Ours, with the first parameter moved one ULP up after every step."""

    def step(self, grads: Sequence[Any]) -> None:
        super().step(grads)
        first = self._params[0].reshape(-1)
        first[0] = np.nextafter(first[0], first.dtype.type(np.inf))


def test_every_registration_of_ours_and_only_ours_claims_correct_rounding():
    load_registry()
    claimed = {name for name, info in REGISTRY.items() if info.correctly_rounded}
    assert claimed and claimed == {name for name in REGISTRY if name.startswith("adamspec[")}


def test_ours_has_zero_on_every_component_whatever_the_configured_budget():
    load_registry()
    for configured in (DEFAULT, uniform_budget(7)):
        budget = budget_for("adamspec[torch.Adam]", configured)
        assert budget.ulp == dict.fromkeys(DEFAULT.ulp, 0)
        assert budget.scaled == dict.fromkeys(DEFAULT.ulp, 0.0)
        assert set(budget.reasons.values()) == {CORRECTLY_ROUNDED}
        assert not budget.within("param", 1, 1.0)
    framework = next(name for name, info in REGISTRY.items() if not info.correctly_rounded)
    assert budget_for(framework, DEFAULT) is DEFAULT
    assert budget_for("not registered", DEFAULT) is DEFAULT


@pytest.fixture
def one_ulp_off():
    """``test.one_ulp_off`` registered twice: as ours (correctly rounded) and not."""
    load_registry()
    names = {"test.one_ulp_off[ours]": True, "test.one_ulp_off": False}
    for name, claim in names.items():
        REGISTRY[name] = AdapterInfo(
            name, "", "torch.Adam", "test_impl_budget:OneUlpOff", correctly_rounded=claim
        )
    yield list(names)
    for name in names:
        del REGISTRY[name]


def test_one_ulp_is_a_discrepancy_for_ours_and_rounding_for_a_framework(one_ulp_off):
    config = RunConfig(
        implementations=tuple(one_ulp_off),
        suite="quick",
        separation=False,
        counterexample_examples=0,
    )
    rows = run(config, progress=lambda line: None).summary
    verdicts = {
        name: {r["verdict"] for r in rows if r["implementation"] == name} for name in one_ulp_off
    }
    assert verdicts["test.one_ulp_off[ours]"] == {"discrepancy"}
    assert verdicts["test.one_ulp_off"] == {"pass"}
    assert {r["max_ulp"] for r in rows} == {1}
    # the localization counts by the same zero budget: the moved coordinate fails
    ours = [r for r in rows if r["implementation"] == "test.one_ulp_off[ours]"]
    assert all(r["failing_coordinates"] >= 1 for r in ours)


def test_a_zero_budget_is_not_rescued_by_the_scaled_measure():
    """1 ULP of a parameter that is small against its step is a fraction of a ULP of the
    operands' scale: within any nonzero budget, over a zero one (the closed problems above
    were 'pass' before ``multiple`` knew it)."""
    zero = budget_for("adamspec[torch.Adam]", DEFAULT)
    assert zero.multiple("param", 1, 0.25) == 2.0 and zero.multiple("param", 0, 0.0) == 0.0
    assert DEFAULT.multiple("param", 1, 0.25) <= 1
    # per coordinate (the streamed verification's localization) alike
    errors = CoordinateErrors(np.zeros(2, np.int8), np.array([1, 0]), np.array([0.25, 0.0]))
    assert errors.multiples("param", zero).tolist() == [2.0, 0.0]
    assert errors.multiples("param", DEFAULT)[0] <= 1
