"""``harness.bench``: ours and torch timed on the same number of threads, recorded."""

from __future__ import annotations

import importlib.util

import pytest

from harness.bench import bench_impl, format_table, thread_counts


def test_thread_counts_sets_both_sides_and_restores_them():
    with thread_counts(None) as default:
        pass
    with thread_counts(1) as counts:
        assert counts == {
            "numba": 1 if default["numba"] is not None else None,
            "torch": 1 if default["torch"] is not None else None,
        }
    with thread_counts(None) as after:
        assert after == default


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_bench_reports_the_thread_counts_used():
    report = bench_impl(4096, "float32", repeats=1, warmup=0, threads=1)
    assert report["threads"]["torch"] == 1
    assert "torch 1" in format_table(report).splitlines()[0]


def test_bench_rejects_a_thread_count_below_one():
    with pytest.raises(ValueError, match="threads=0 must be a positive integer"):
        bench_impl(4096, "float32", threads=0)
