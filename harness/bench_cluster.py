"""``adamspec bench cluster``: a full-tensor check's chunks verified on 1, 2, ... Dask workers.

One step of an implementation on ``size`` coordinates is verified as ``adamspec check``
verifies it (:func:`~adamspec.harness.stream.verify_case`: the implementation steps in this
process, the step's chunks go to the workers), once in this process alone and once per
worker count on a local Dask cluster, side by side in one run. With the verification's
time, the report gives what a model of N hosts needs (docs/cluster.md): the oracle's
seconds per task and per coordinate, the bytes a task sends and the seconds a round trip
of them took here, and each worker's peak memory.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from typing import Any

from adamspec.harness.budgets import DEFAULT
from adamspec.harness.chunks import CHUNK, CHUNKS_PER_TASK, chunks, verify_chunks
from adamspec.harness.cluster import Task, executor, map_ordered, mapping_on
from adamspec.harness.engine import record_trace
from adamspec.harness.problems import problem, resized
from adamspec.harness.stream import verify_case
from adamspec.impl.adapters import REGISTRY, load_registry
from adamspec.spec.catalog import entry

#: The implementation whose step is verified: our correctly rounded NumPy Adam (it passes,
#: so every chunk's oracle work is the common path, not a failing case's extra bookkeeping).
IMPLEMENTATION = "adamspec[torch.Adam]"


def _peak_rss_bytes() -> int:
    """This process's peak resident memory: ``VmHWM``, of this process's own memory map
    (``getrusage``'s ``ru_maxrss`` is not: Linux carries it over ``exec`` from the process
    that forked this one, here the benchmark holding the whole tensor)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def _payload_bytes(batch: Sequence[Any]) -> int:
    """What a task's chunks weigh (every array of their states and gradients)."""
    total = 0
    for chunk in batch:
        for state in (chunk.before, chunk.after):
            for arrays in (state.params, state.m, state.v, state.v_max):
                total += sum(a.nbytes for a in arrays or ())
        total += getattr(chunk.grad, "nbytes", 0)
    return total


def _received(batch: Sequence[Any]) -> int:
    """A round trip's far end: the batch arrived (its size comes back, not the batch)."""
    return _payload_bytes(batch)


def bench_cluster(
    size: int = 1 << 26,
    workers: Sequence[int] = (1, 2),
    *,
    dtype: str = "float32",
    seed: int = 0,
    repeats: int = 3,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Verification of one step of ``size`` coordinates here and on each worker count (or
    on ``scheduler``'s cluster, as it is); JSON-ready, :func:`format_table` renders it."""
    load_registry()
    info = REGISTRY[IMPLEMENTATION]
    variant = entry(info.documented).variant
    case = resized(problem("typical"), max(1, size // 2), steps=1)  # two tensors of size/2

    def verify() -> float:
        started = time.perf_counter()
        verify_case(IMPLEMENTATION, case, dtype, seed, variant, DEFAULT)
        return time.perf_counter() - started

    def timed(ex: Any) -> float:
        samples = []
        for _ in range(max(1, repeats)):
            ((_, seconds),) = ex.run([Task("verify", verify, here=True)])
            samples.append(seconds)
        return min(samples)

    trace = record_trace(IMPLEMENTATION, resized(case, CHUNK * CHUNKS_PER_TASK // 2), dtype, seed)
    record = trace.steps[0]
    batch = tuple(chunks(record))[:CHUNKS_PER_TASK]
    started = time.perf_counter()
    verify_chunks("fast", variant, trace.hyper, DEFAULT, batch)
    oracle_per_task = time.perf_counter() - started
    coordinates_per_task = sum(c.before.params[0].size for c in batch)

    rows = []
    with executor(None, 1) as here:
        alone = timed(here)
    rows.append({"where": "this process", "workers": 0, "seconds": alone, "speedup": 1.0})
    counts = [None] if scheduler is not None else list(workers)
    for count in counts:
        with executor(scheduler or "local", count or 1) as ex:
            for _ in map_ordered(_received, [(batch,)]):  # start-up: imports, first transfer
                pass
            with mapping_on(ex):
                started = time.perf_counter()
                list(map_ordered(_received, [(batch,)] * 4))
                round_trip = (time.perf_counter() - started) / 4
            seconds = timed(ex)
            peaks = ex.client.run(_peak_rss_bytes)
            rows.append(
                {
                    "where": ex.description,
                    "workers": ex.workers,
                    "seconds": seconds,
                    "speedup": alone / seconds,
                    "task_round_trip_s": round_trip,
                    "worker_peak_rss_bytes": max(peaks.values()),
                }
            )
    return {
        "implementation": IMPLEMENTATION,
        "size": 2 * case.shapes[0][0],
        "dtype": dtype,
        "seed": seed,
        "coordinates_per_task": coordinates_per_task,
        "task_bytes": _payload_bytes(batch),
        "oracle_seconds_per_task": oracle_per_task,
        "rows": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
    }


def format_table(result: dict[str, Any]) -> str:
    """The benchmark as Markdown."""
    per_coordinate = result["oracle_seconds_per_task"] / result["coordinates_per_task"]
    lines = [
        f"one step of {result['implementation']} on {result['size']:,} {result['dtype']} "
        f"coordinates verified (as `adamspec check` does), {result['machine']['cpus']} CPUs",
        "",
        f"a task: {result['coordinates_per_task']:,} coordinates, "
        f"{result['task_bytes'] / 1e6:.1f} MB sent, "
        f"{result['oracle_seconds_per_task'] * 1e3:.1f} ms of oracle work "
        f"({1 / per_coordinate / 1e6:.1f} M coordinates/s per worker)",
        "",
        "| where | workers | seconds | speedup | task round trip | worker peak memory |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        trip = row.get("task_round_trip_s")
        peak = row.get("worker_peak_rss_bytes")
        lines.append(
            f"| {row['where']} | {row['workers']} | {row['seconds']:.2f} | "
            f"{row['speedup']:.2f}x | {'' if trip is None else f'{trip * 1e3:.0f} ms'} | "
            f"{'' if peak is None else f'{peak / 2**20:.0f} MiB'} |"
        )
    return "\n".join(lines)


__all__ = ["IMPLEMENTATION", "bench_cluster", "format_table"]
