"""Minimal counterexamples (harness/counterexample.py) on toy kernels and torch.

Each found counterexample must be small (one coordinate, a small step), and its
snippet, run in a fresh interpreter, must print the very bits the adapter
produced next to the oracle's value: a maintainer pasting it sees the bug.
"""

from __future__ import annotations

import numpy as np
import pytest
from script_helpers import assert_script_reproduces, bits, run_script
from toy_adapters import register_toys

from adamspec.harness.counterexample import (
    minimal_counterexample,
    snippet,
    write_counterexample,
)
from adamspec.impl.adapters import Unsupported
from adamspec.spec.catalog import entry
from adamspec.spec.gradients import SparseRows

register_toys()

needs_torch = pytest.mark.needs("torch")
PAPER = entry("paper.algorithm1")


def test_eps_moved_toy_gives_a_small_counterexample_whose_snippet_reproduces_it(tmp_path):
    ce = minimal_counterexample("toy.eps_moved", PAPER.hyper(), PAPER.variant)
    assert ce is not None
    assert ce.shape == (1,) and ce.step <= 10
    assert ce.multiple > 1 and ce.errors["param"].ulp > 2
    assert ce.category == "epsilon placement", ce.explanation
    # exact decimals and correctly rounded values for every measured component
    assert set(ce.oracle) == set(ce.exact) == {"param", "m", "v"}
    assert len(ce.exact["param"][0].replace("-", "").replace(".", "").lstrip("0")) >= 15

    text = snippet(ce)
    assert "compared with: paper.algorithm1" in text
    assert "category" in text and "epsilon placement" in text
    assert "lr=0.001 beta1=0.9 beta2=0.999 eps=1e-8" in text
    path = write_counterexample(tmp_path / "eps_moved.py", ce)
    assert path.read_text() == text and ce.suffix == ".py"
    assert [p.name for p in tmp_path.iterdir()] == ["eps_moved.py"]  # no temporary left behind
    assert_script_reproduces(ce, run_script(path))


def test_correct_toy_has_no_counterexample():
    assert (
        minimal_counterexample("toy.none", PAPER.hyper(), PAPER.variant, max_examples=100) is None
    )


def test_search_is_deterministic_for_a_seed():
    a, b = (
        minimal_counterexample("toy.no_bias_correction", PAPER.hyper(), "paper.algorithm1")
        for _ in range(2)
    )
    assert a is not None and b is not None
    assert a.step == b.step and a.examples == b.examples
    for x, y in (
        (a.before.params, b.before.params),
        (a.before.m, b.before.m),
        (a.before.v, b.before.v),
        (a.grads, b.grads),
        (a.after.params, b.after.params),
    ):
        assert (bits(x[0]) == bits(y[0])).all()
    assert snippet(a) == snippet(b)


def test_lazy_sparse_toy_needs_an_untouched_row(tmp_path):
    # with one row every row is touched, so lazy and dense agree: the search must grow
    torch_adam = entry("torch.Adam")
    ce = minimal_counterexample("toy.lazy_sparse", torch_adam.hyper(), torch_adam.variant,
                                sparse=True)  # fmt: skip
    assert ce is not None and ce.shape == (2, 1)
    g = ce.grads[0]
    assert isinstance(g, SparseRows) and len(set(np.asarray(g.indices).tolist())) < 2
    assert ce.category == "sparse momentum", ce.explanation
    path = write_counterexample(tmp_path / "lazy.py", ce)
    assert "SparseRows(" in path.read_text()
    assert_script_reproduces(ce, run_script(path))


def test_a_configuration_that_cannot_run_is_unsupported_not_an_all_clear():
    with pytest.raises(Unsupported):
        minimal_counterexample("toy.none", PAPER.hyper(weight_decay="0.01"), PAPER.variant)


@needs_torch
def test_torch_snippet_prints_the_bits_torch_produced(tmp_path):
    # torch computes Algorithm 1's eps placement; with eps = 0.1 the eps-hat form is far away
    hyper = entry("torch.Adam").hyper(eps="0.1")
    ce = minimal_counterexample("torch.Adam(foreach=False)", hyper, entry("paper.eps_hat").variant)
    assert ce is not None and ce.shape == (1,) and ce.step <= 10
    assert ce.category == "epsilon placement", ce.explanation
    text = snippet(ce)
    assert "import torch" in text and "torch.optim.Adam([p]" in text and "foreach=False" in text
    assert "opt.state[p]" in text and "eps=0.1" in text
    assert_script_reproduces(ce, run_script(write_counterexample(tmp_path / "torch_adam.py", ce)))
