"""Optional frameworks are detected without importing them; a missing one is a skip reason."""

from __future__ import annotations

import importlib.util

import needs
import pytest
from needs import need

from adamspec.impl import frameworks


def test_every_known_framework_reports_available_or_a_reason():
    for name, status in frameworks.installed().items():
        assert status.name == name
        if status.available:
            assert status.reason is None
        else:
            assert status.reason and status.reason.startswith(f"{name} not installed")


def test_installed_framework_reports_its_distribution_version():
    if importlib.util.find_spec("numpy") is None:  # pragma: no cover - numpy is core
        pytest.fail("numpy is a core dependency")
    need("torch")
    status = frameworks.availability("torch")
    import torch

    assert torch.__version__.startswith(status.version)


def test_missing_framework_is_skipped_with_reason_not_import_error(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "optax" else real_find_spec(name, *a),
    )
    with pytest.raises(frameworks.FrameworkMissing, match=r"^skipped: optax not installed"):
        frameworks.require("optax")
    assert "pip install 'adamspec[jax]'" in frameworks.availability("optax").reason


def test_unknown_framework_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"framework='mxnet' is unknown; allowed: torch, "):
        frameworks.availability("mxnet")


def _lose(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = frameworks.availability

    def fake(n: str) -> frameworks.Availability:
        if n == name:
            return frameworks.Availability(n, False, None, f"{n} not installed (test)")
        return real(n)

    monkeypatch.setattr(needs, "availability", fake)


@pytest.mark.parametrize("env", [{"CI": "true"}, {"ADAMSPEC_REQUIRE_FRAMEWORKS": "1"}])
def test_a_missing_framework_fails_where_all_are_required(monkeypatch, env):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ADAMSPEC_REQUIRE_FRAMEWORKS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _lose(monkeypatch, "tensorflow")
    with pytest.raises(pytest.fail.Exception, match=r"tensorflow not installed .*require every"):
        need("tensorflow")


def test_a_missing_framework_is_a_skip_in_a_users_own_pytest(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ADAMSPEC_REQUIRE_FRAMEWORKS", raising=False)
    _lose(monkeypatch, "tensorflow")
    with pytest.raises(pytest.skip.Exception, match="tensorflow not installed"):
        need("tensorflow")
