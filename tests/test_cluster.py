"""The executor of task graphs (harness/cluster.py): this process, a local Dask cluster or a
running ``dask scheduler`` with its ``dask worker``s, all giving the same results."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adamspec.harness import cluster
from adamspec.harness.cluster import SchedulerError, Task, executor

BIN = Path(sys.executable).parent


def _graph() -> list[Task]:
    # module-level functions of an installed package: importable on any worker
    squares = [Task(("square", i), pow, (i, 2)) for i in range(5)]
    return [*squares, Task("sum", max, (0,), tuple(t.key for t in squares))]


def test_this_process_runs_dependencies_first_in_graph_order():
    with executor(None, 1) as ex:
        assert ex.client is None and ex.workers == 1
        done = list(ex.run(list(reversed(_graph()))))
    # the first task waits for the squares: they run first, in the order it lists them
    assert [k for k, _ in done] == [("square", 0), ("square", 1), ("square", 2),
                                    ("square", 3), ("square", 4), "sum"]  # fmt: skip
    assert dict(done)["sum"] == 16


def test_a_cycle_or_an_unknown_dependency_is_refused():
    with executor(None, 1) as ex:
        with pytest.raises(ValueError, match="depends on itself"):
            list(ex.run([Task("a", max, (0,), ("b",)), Task("b", max, (0,), ("a",))]))
        with pytest.raises(ValueError, match="waits for an unknown task 'c'"):
            list(ex.run([Task("a", max, (0,), ("c",))]))


@pytest.mark.needs("dask")
def test_a_local_cluster_gives_the_same_results_as_this_process():
    with executor(None, 1) as ex:
        here = dict(ex.run(_graph()))
    with executor("local", 2) as ex:
        assert ex.client is not None and ex.workers == 2
        there = dict(ex.run(_graph()))
    assert there == here


@pytest.mark.parametrize("address", ["bogus", "tcp://", "http://127.0.0.1:8786"])
def test_a_malformed_address_is_one_line_naming_it(address):
    with pytest.raises(SchedulerError, match="allowed: local, tcp://HOST:PORT"):
        with executor(address, 1):
            pass


@pytest.mark.needs("dask")
def test_an_unreachable_scheduler_is_one_line_naming_its_address(monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(SchedulerError, match=r"^--scheduler tcp://127\.0\.0\.1:\d+: cannot reach"):
        with executor(f"tcp://127.0.0.1:{_free_port()}", 1):
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster() -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, stopped after."""
    port = _free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", ":0"], **quiet,
    )  # fmt: skip
    workers = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "worker",
                f"tcp://127.0.0.1:{port}",
                "--nthreads",
                "1",
                "--nworkers",
                "1",
            ],
            **quiet,
        )
        for _ in range(2)
    ]
    try:
        yield f"tcp://127.0.0.1:{port}", workers
    finally:
        for process in [*workers, scheduler]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*workers, scheduler]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert all(p.poll() is not None for p in [*workers, scheduler])


@pytest.mark.needs("dask")
def test_a_running_scheduler_and_its_workers_give_the_same_results(dask_cluster):
    address, _ = dask_cluster
    with executor(address, 1) as ex:
        assert ex.client is not None
        there = dict(ex.run(_graph()))
    with executor(None, 1) as ex:
        assert there == dict(ex.run(_graph()))
