"""``adamspec.harness.bench``: ours and torch timed on the same number of threads, recorded."""

from __future__ import annotations

import pytest

from adamspec.harness.bench import bench_impl, format_table, thread_counts


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


@pytest.mark.needs("torch")
def test_bench_reports_the_thread_counts_used():
    report = bench_impl(4096, "float32", repeats=1, warmup=0, threads=1)
    assert report["threads"]["torch"] == 1
    assert "torch 1" in format_table(report).splitlines()[0]


def test_bench_rejects_a_thread_count_below_one():
    with pytest.raises(ValueError, match="threads=0 must be a positive integer"):
        bench_impl(4096, "float32", threads=0)


def test_bench_rejects_unknown_pages():
    with pytest.raises(ValueError, match="pages='tiny' is not supported; allowed: default, huge"):
        bench_impl(4096, "float32", pages="tiny")


@pytest.mark.needs("torch")
def test_bench_records_the_pages_of_every_side(monkeypatch):
    import sys

    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    torch_was_imported = "torch" in sys.modules
    report = bench_impl(2**21, "float32", repeats=1, warmup=0, threads=1, pages="huge")
    assert report["pages"]["requested"] == "huge"
    if torch_was_imported:  # torch reads its switch once, at import: say so, not pretend
        assert report["pages"]["torch"].startswith("default (torch was imported")
    else:
        assert report["pages"]["torch"] == "huge"
    for result in report["results"]:
        if result["median_s"] is None:
            continue
        shares = result["huge_pages"]
        assert set(shares) == {"param", "grad", "m"}
        assert all(s is None or 0.0 <= s <= 1.0 for s in shares.values()), result
    assert "pages: huge" in format_table(report).splitlines()[0]
