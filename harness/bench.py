"""``adamspec bench impl``: our Adam and the torch peers, timed side by side in one run.

Every implementation steps the same float tensors (same size, dtype and data)
with torch.optim.Adam's defaults; the median of several timed steps after
warm-up is reported, with the ratio of each time to ours (``> 1``: slower
than ours). Peak extra memory of our step is measured with tracemalloc (NumPy
registers its buffers there) and reported relative to one parameter array.

Both sides use the same number of threads: numba's and torch's defaults (one per
core) unless ``threads`` sets both; the report records the counts used.

Both sides also get the same kind of memory pages (``pages``). With ``"default"``
the params and grads are ordinary NumPy/torch buffers and each implementation
allocates its state as it ships (ours puts large state on transparent huge pages,
:mod:`adamspec.impl._memory`; torch's allocator does not). With ``"huge"`` every array of
every side is on huge pages: ours and torch's params and grads, and torch's state
through its own switch, ``THP_MEM_ALLOC_ENABLE=1`` (read when torch is first
imported, so it is set before that). The report records, per implementation, the
fraction of its param and state that the OS actually put on huge pages.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from adamspec.impl import _memory, adam
from adamspec.impl.frameworks import FrameworkMissing, require
from adamspec.spec.catalog import entry

BENCH_DTYPES = ("float32", "float64", "float16", "bfloat16")
#: Memory pages for the benchmarked arrays (see the module docstring).
BENCH_PAGES = ("default", "huge")


@dataclass
class Timing:
    name: str
    median_s: float | None
    skipped: str | None = None
    huge_pages: dict[str, float | None] | None = None


def _pages(values: np.ndarray, pages: str) -> np.ndarray:
    """``values`` in a buffer on the given kind of pages."""
    if pages == "default":
        return values
    out = _memory.zeros(values.shape, values.dtype)
    out[...] = values
    return out


def _huge_fractions(**arrays: np.ndarray) -> dict[str, float | None]:
    return {name: _memory.huge_page_fraction(a) for name, a in arrays.items()}


def _time(step: Callable[[], Any], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _timing(name: str, step: Any, repeats: int, warmup: int) -> Timing:
    """Time ``step`` and record the huge-page share of its arrays (``step.pages()``)
    afterwards."""
    return Timing(name, _time(step, repeats, warmup), huge_pages=step.pages())


def _ours(
    size: int, dtype: str, backend: str, rng: np.random.Generator, pages: str = "default"
) -> Callable[[], Any]:
    """One in-place step of ours; ``step.pages()`` reports its arrays' huge-page share."""
    import ml_dtypes

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    e = entry("torch.Adam")
    params = _pages(rng.standard_normal(size).astype(np_dtype), pages)
    grads = _pages(rng.standard_normal(size).astype(np_dtype), pages)
    state = adam.init(params, e.variant)
    hyper = e.hyper()
    holder = {"state": state}

    def step() -> None:
        holder["state"] = adam.step_(
            params, grads, holder["state"], hyper, e.variant, backend=backend
        )

    step.pages = lambda: _huge_fractions(param=params, grad=grads, m=holder["state"].m[0])
    return step


def _torch(
    size: int, dtype: str, options: dict[str, Any], rng: np.random.Generator
) -> Callable[[], Any]:
    """One step of a torch optimizer over one parameter; ``step.pages()`` reports the
    huge-page share of its arrays (after a first step has made the state)."""
    import torch

    torch_dtype = {"bfloat16": torch.bfloat16}.get(dtype) or getattr(torch, dtype)
    param = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(size)).to(torch_dtype))
    param.grad = torch.from_numpy(rng.standard_normal(size)).to(torch_dtype)
    optimizer = torch.optim.Adam([param], lr=1e-3, **options)

    def numpy_view(tensor: Any) -> np.ndarray:  # the same memory, as NumPy sees it
        return tensor.detach().view(torch.int16 if dtype == "bfloat16" else tensor.dtype).numpy()

    def step() -> None:
        optimizer.step()

    step.pages = lambda: _huge_fractions(
        param=numpy_view(param),
        grad=numpy_view(param.grad),
        m=numpy_view(optimizer.state[param]["exp_avg"]),
    )
    return step


def peak_extra_memory(size: int, dtype: str) -> dict[str, float]:
    """Peak bytes NumPy allocates during one of our steps, beyond params and state."""
    step = _ours(size, dtype, "auto", np.random.default_rng(0))
    step()  # compile and warm up outside the measurement
    tracemalloc.start()
    tracemalloc.reset_peak()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    param_bytes = size * np.dtype(np.float16 if dtype == "bfloat16" else dtype).itemsize
    return {"peak_extra_bytes": float(peak), "param_bytes": float(param_bytes),
            "ratio_to_param": peak / param_bytes}  # fmt: skip


@contextmanager
def _threads(module: Any, threads: int | None) -> Iterator[int | None]:
    """``module``'s (numba's or torch's) thread count, set to ``threads`` inside."""
    if module is None:
        yield None
        return
    before = module.get_num_threads()
    try:
        if threads is not None:
            module.set_num_threads(threads)
        yield module.get_num_threads()
    finally:
        module.set_num_threads(before)


def _optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


@contextmanager
def thread_counts(threads: int | None) -> Iterator[dict[str, int | None]]:
    """Numba's and torch's thread counts, set to ``threads`` inside (when given)."""
    with _threads(_optional("numba"), threads) as n, _threads(_optional("torch"), threads) as t:
        yield {"numba": n, "torch": t}


def bench_impl(
    size: int,
    dtype: str,
    repeats: int = 7,
    warmup: int = 2,
    threads: int | None = None,
    pages: str = "default",
) -> dict[str, Any]:
    """Time ours and the torch peers on ``size`` parameters of ``dtype`` (both sides on
    ``threads`` threads when given, else their defaults: one per core; both on
    ``pages``, see the module docstring).

    Ours is timed before torch is imported: torch's OpenMP threads, once started,
    wait spinning and took a third of the cores' time from numba's (measured: 28 ms
    -> 38 ms per 16M-parameter step; 30 ms with ``OMP_WAIT_POLICY=PASSIVE``).
    """
    if dtype not in BENCH_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; allowed: {', '.join(BENCH_DTYPES)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads={threads} must be a positive integer")
    if pages not in BENCH_PAGES:
        raise ValueError(f"pages={pages!r} is not supported; allowed: {', '.join(BENCH_PAGES)}")
    torch_pages = pages
    if pages == "huge":
        if "torch" in sys.modules and os.environ.get("THP_MEM_ALLOC_ENABLE") != "1":
            torch_pages = "default (torch was imported before THP_MEM_ALLOC_ENABLE was set)"
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
    rng = np.random.default_rng(0)
    with _threads(_optional("numba"), threads) as numba_threads:
        timings = [
            _timing("adamspec (auto)", _ours(size, dtype, "auto", rng, pages), repeats, warmup),
            _timing(
                "adamspec (numpy)",
                _ours(size, dtype, "numpy", rng, pages),
                max(1, repeats // 2),
                1,
            ),
        ]
    peers = {
        "torch.optim.Adam(foreach=False)": {"foreach": False},
        "torch.optim.Adam(foreach=True)": {"foreach": True},
        "torch.optim.Adam(fused=True)": {"fused": True},
    }
    try:
        torch_version = require("torch")
    except FrameworkMissing as missing:
        torch_version = None
        timings += [Timing(name, None, str(missing)) for name in peers]
    with _threads(_optional("torch") if torch_version else None, threads) as torch_threads:
        for name, options in peers.items() if torch_version is not None else ():
            try:
                timings.append(_timing(name, _torch(size, dtype, options, rng), repeats, warmup))
            except (RuntimeError, TypeError) as exc:  # e.g. a dtype the path does not support
                timings.append(Timing(name, None, f"skipped: {exc}".splitlines()[0]))
    ours = timings[0].median_s
    return {
        "size": size,
        "dtype": dtype,
        "repeats": repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "torch": torch_version,
        "results": [
            {
                "name": t.name,
                "median_s": t.median_s,
                "params_per_s": None if t.median_s is None else size / t.median_s,
                "ratio_to_ours": None if t.median_s is None else t.median_s / ours,
                **({"skipped": t.skipped} if t.skipped else {}),
                **({"huge_pages": t.huge_pages} if t.huge_pages is not None else {}),
            }
            for t in timings
        ],
        "pages": {"requested": pages, "torch": torch_pages},
        "memory": peak_extra_memory(size, dtype),
        "threads": {"numba": numba_threads, "torch": torch_threads},
    }


def format_table(report: dict[str, Any]) -> str:
    threads = report.get("threads", {})
    lines = [
        f"Adam step on {report['size']:,} {report['dtype']} params "
        f"(median of {report['repeats']}; ratio = time / ours; threads: "
        f"numba {threads.get('numba')}, torch {threads.get('torch')}; "
        f"pages: {report.get('pages', {}).get('requested', 'default')})",
        f"{'implementation':<34} {'median':>10} {'params/s':>12} {'ratio':>7}  "
        "on huge pages (param/grad/m)",
    ]
    for r in report["results"]:
        if r["median_s"] is None:
            lines.append(f"{r['name']:<34} {r['skipped']}")
            continue
        huge = r.get("huge_pages") or {}
        shares = "/".join(
            "?" if huge.get(k) is None else f"{huge[k]:.0%}" for k in ("param", "grad", "m")
        )
        lines.append(
            f"{r['name']:<34} {r['median_s'] * 1e3:>8.1f}ms {r['params_per_s']:>12.3g} "
            f"{r['ratio_to_ours']:>7.2f}  {shares}"
        )
    mem = report["memory"]
    lines.append(
        f"peak extra memory of our step: {mem['peak_extra_bytes'] / 2**20:.1f} MiB "
        f"= {mem['ratio_to_param']:.2f} x one parameter array"
    )
    return "\n".join(lines)
