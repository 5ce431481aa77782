"""Long runs (the ``long`` suite, 10,000 steps): bias corrections near 1 and accumulated beta
powers, where step-counter and accumulation effects show. ``slow``: minutes of oracle work."""

from __future__ import annotations

import pytest

from adamspec.harness.budgets import DEFAULT
from adamspec.harness.engine import budget_multiple, free_running, lockstep, record_trace
from adamspec.harness.problems import suite
from adamspec.impl.adapters import REGISTRY, load_registry
from adamspec.spec.catalog import entry

LONG = suite("long")[0]  # typical gradients, 10,000 steps


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "adamspec[torch.Adam]",  # beta^t from the step counter
        "adamspec[tf.raw.ApplyAdam]",  # beta powers accumulated in float32, step after step
    ],
)
def test_ten_thousand_steps_stay_within_budget_in_lockstep_and_divergence_is_measured(name):
    load_registry()
    assert LONG.steps >= 10_000
    trace = record_trace(name, LONG, "float32", 0)
    assert trace.status == "ok" and len(trace.steps) == LONG.steps, trace.detail
    variant = entry(REGISTRY[name].documented).variant
    per_step = lockstep(trace, variant)
    over = [i + 1 for i, e in enumerate(per_step) if budget_multiple(e, DEFAULT) > 1]
    assert not over, f"over budget at steps {over[:10]}"
    free = free_running(trace, variant)
    assert len(free) == LONG.steps
    # the oracle's own trajectory: every coordinate measurable (no NaN/inf mismatch) to the end
    assert all(e.ulp >= 0 for e in free[-1].values()), free[-1]


def test_anchored_free_running_reference_equals_the_exact_trajectory(monkeypatch):
    """Segments restarted from the binary64 rounding of the exact state give the same float32
    reference as one exact trajectory (the anchor moves it by <= 2^-29 of a float32 ULP)."""
    import adamspec.harness.engine as engine

    load_registry()
    trace = record_trace("adamspec[tf.raw.ApplyAdam]", LONG.with_(steps=240), "float32", 0)
    variant = entry("tf.raw.ApplyAdam").variant  # accumulated beta powers: anchored too
    exact = engine._anchored_trajectory(trace, variant, trace.hyper)
    monkeypatch.setattr(engine, "ANCHOR_EVERY", 50)
    anchored = engine._anchored_trajectory(trace, variant, trace.hyper)
    assert len(anchored) == len(exact) == 240
    for a, b in zip(anchored, exact, strict=True):
        for component in ("param", "m", "v"):
            assert a.value(component).tobytes() == b.value(component).tobytes(), (a.step, component)
