"""``adamspec bench impl``: our Adam and the torch peers, timed side by side in one run.

Every implementation steps the same float tensors (same size, dtype and data)
with torch.optim.Adam's defaults; the median of several timed steps after
warm-up is reported, with the ratio of each time to ours (``> 1``: slower
than ours). Peak extra memory of our step is measured with tracemalloc (NumPy
registers its buffers there) and reported relative to one parameter array.

Both sides use the same number of threads: numba's and torch's defaults (one per
core) unless ``threads`` sets both; the report records the counts used.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from impl import adam
from impl.frameworks import FrameworkMissing, require
from spec.catalog import entry

BENCH_DTYPES = ("float32", "float64", "float16", "bfloat16")


@dataclass
class Timing:
    name: str
    median_s: float | None
    skipped: str | None = None


def _time(step: Callable[[], Any], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _ours(size: int, dtype: str, backend: str, rng: np.random.Generator) -> Callable[[], Any]:
    import ml_dtypes

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    e = entry("torch.Adam")
    params = rng.standard_normal(size).astype(np_dtype)
    grads = rng.standard_normal(size).astype(np_dtype)
    state = adam.init(params, e.variant)
    hyper = e.hyper()
    holder = {"state": state}

    def step() -> None:
        holder["state"] = adam.step_(
            params, grads, holder["state"], hyper, e.variant, backend=backend
        )

    return step


def _torch(size: int, dtype: str, options: dict[str, Any], rng: np.random.Generator) -> Callable:
    import torch

    torch_dtype = {"bfloat16": torch.bfloat16}.get(dtype) or getattr(torch, dtype)
    param = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(size)).to(torch_dtype))
    param.grad = torch.from_numpy(rng.standard_normal(size)).to(torch_dtype)
    optimizer = torch.optim.Adam([param], lr=1e-3, **options)
    return optimizer.step


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
    size: int, dtype: str, repeats: int = 7, warmup: int = 2, threads: int | None = None
) -> dict[str, Any]:
    """Time ours and the torch peers on ``size`` parameters of ``dtype`` (both sides on
    ``threads`` threads when given, else their defaults: one per core).

    Ours is timed before torch is imported: torch's OpenMP threads, once started,
    wait spinning and took a third of the cores' time from numba's (measured: 28 ms
    -> 38 ms per 16M-parameter step; 30 ms with ``OMP_WAIT_POLICY=PASSIVE``).
    """
    if dtype not in BENCH_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; allowed: {', '.join(BENCH_DTYPES)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads={threads} must be a positive integer")
    rng = np.random.default_rng(0)
    with _threads(_optional("numba"), threads) as numba_threads:
        timings = [
            Timing("adamspec (auto)", _time(_ours(size, dtype, "auto", rng), repeats, warmup)),
            Timing(
                "adamspec (numpy)",
                _time(_ours(size, dtype, "numpy", rng), max(1, repeats // 2), 1),
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
                timings.append(
                    Timing(name, _time(_torch(size, dtype, options, rng), repeats, warmup))
                )
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
            }
            for t in timings
        ],
        "memory": peak_extra_memory(size, dtype),
        "threads": {"numba": numba_threads, "torch": torch_threads},
    }


def format_table(report: dict[str, Any]) -> str:
    threads = report.get("threads", {})
    lines = [
        f"Adam step on {report['size']:,} {report['dtype']} params "
        f"(median of {report['repeats']}; ratio = time / ours; threads: "
        f"numba {threads.get('numba')}, torch {threads.get('torch')})",
        f"{'implementation':<34} {'median':>10} {'params/s':>12} {'ratio':>7}",
    ]
    for r in report["results"]:
        if r["median_s"] is None:
            lines.append(f"{r['name']:<34} {r['skipped']}")
            continue
        lines.append(
            f"{r['name']:<34} {r['median_s'] * 1e3:>8.1f}ms {r['params_per_s']:>12.3g} "
            f"{r['ratio_to_ours']:>7.2f}"
        )
    mem = report["memory"]
    lines.append(
        f"peak extra memory of our step: {mem['peak_extra_bytes'] / 2**20:.1f} MiB "
        f"= {mem['ratio_to_param']:.2f} x one parameter array"
    )
    return "\n".join(lines)
