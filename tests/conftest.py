"""Shared test configuration: hypothesis profiles and mpmath precision hygiene."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from mpmath import mp
from needs import need

# "ci": a fixed, derandomized profile so CI is reproducible; "slow": many more
# examples for `make test-slow`; "dev": hypothesis defaults.
settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "slow", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("ADAMSPEC_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _reset_mp_precision():
    """Every test starts and ends at mpmath's default precision (precision is always scoped)."""
    mp.prec = 53
    yield
    assert mp.prec == 53, "a test or the code under test leaked an mpmath precision change"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.needs(...)``: skip without the framework, fail where all are required."""
    for mark in item.iter_markers(name="needs"):
        need(*mark.args)
