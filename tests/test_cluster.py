"""The executor of task graphs (harness/cluster.py): this process, a local Dask cluster or a
running ``dask scheduler`` with its ``dask worker``s, all giving the same results."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
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
                "--no-nanny",  # a killed worker stays dead (a nanny would restart it)
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


def _raises(x: int) -> int:
    raise RuntimeError(f"task {x} failed")


def test_a_failed_task_fails_its_dependents_and_no_other_task():
    graph = [Task("bad", _raises, (1,)), Task("after", max, (0,), ("bad",)),
             Task("other", pow, (3, 2))]  # fmt: skip
    with executor(None, 1) as ex:
        done = dict(ex.run(graph))
    assert isinstance(done["bad"], cluster.Failed) and "task 1 failed" in str(done["bad"])
    assert done["after"] is done["bad"] and done["other"] == 9


def test_finished_tasks_are_inputs_and_are_not_run_again():
    graph = [Task("a", _raises, (1,)), Task("b", max, (0,), ("a",))]
    with executor(None, 1) as ex:
        assert dict(ex.run(graph[1:], done={"a": 7})) == {"b": 7}


# ------------------------------------------------------------------ the main job on a cluster
# Static implementations' tasks run on the workers; the toys are registered in this process
# only (a hook), so their cases run here and their chunks are verified on the workers.

CLUSTER_IMPLS = ("adamspec[paper.eps_hat]", "user.AdamOptim(tutorial)", "toy.eps_moved")
REPORTS = ("summary.csv", "results.parquet", "junit.xml", "fingerprints.csv")


def _run_bytes(tmp: Path, **where) -> dict[str, bytes]:
    from toy_adapters import register_toys

    from adamspec.harness.run import RunConfig, run

    register_toys()
    config = RunConfig(implementations=CLUSTER_IMPLS, suite="quick", seed=2, separation=False,
                       counterexample_examples=5)  # fmt: skip
    executor_ = where.pop("executor", None)
    tables = run(replace(config, **where), progress=lambda line: None, executor=executor_)
    out = tmp / "-".join(f"{k}{v}" for k, v in where.items()) if where else tmp / "here"
    tables.write(out, {"command": "test"})
    return {name: (out / name).read_bytes() for name in REPORTS}


@pytest.fixture(scope="module")
def here_bytes(tmp_path_factory) -> dict[str, bytes]:
    """The reports of the run in this process, one task after another."""
    return _run_bytes(tmp_path_factory.mktemp("here"))


@pytest.mark.needs("dask")
def test_a_local_cluster_of_two_processes_writes_the_same_reports(here_bytes, tmp_path):
    there = _run_bytes(tmp_path, jobs=2)
    for name in REPORTS:
        assert there[name] == here_bytes[name], name
    assert b"discrepancy" in here_bytes["summary.csv"]  # the toy and its counterexample ran


@pytest.mark.needs("dask")
def test_a_running_scheduler_writes_the_same_reports(here_bytes, dask_cluster, tmp_path):
    address, _ = dask_cluster
    there = _run_bytes(tmp_path, scheduler=address)
    for name in REPORTS:
        assert there[name] == here_bytes[name], name


@pytest.mark.needs("dask")
def test_a_worker_killed_mid_run_loses_nothing(here_bytes, dask_cluster, tmp_path):
    import os
    import threading

    from distributed import Client

    address, workers = dask_cluster
    result: dict[str, dict[str, bytes]] = {}
    job = threading.Thread(target=lambda: result.update(x=_run_bytes(tmp_path, scheduler=address)))
    with Client(address, timeout=10) as watcher:
        pids = watcher.run(os.getpid)  # worker address -> its process (no nanny)
        job.start()
        deadline = time.monotonic() + 120
        busy: list[str] = []
        while not busy:
            assert time.monotonic() < deadline and job.is_alive(), "no task ever ran"
            # only workers whose process is known: under load the scheduler can list an
            # address run() did not answer for yet (a KeyError in the full suite, once)
            busy = [w for w, keys in watcher.processing().items() if keys and w in pids]
            time.sleep(0.05)
        victim = pids[busy[0]]
        os.kill(victim, signal.SIGKILL)
    job.join(timeout=600)
    assert not job.is_alive()
    assert any(p.pid == victim and p.wait(timeout=30) == -signal.SIGKILL for p in workers)
    for name in REPORTS:
        assert result["x"][name] == here_bytes[name], name


def test_an_unreachable_scheduler_exits_2_naming_it(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    done = subprocess.run(
        [str(BIN / "adamspec"), "run", "--quick", "--impl", "adamspec[paper.eps_hat]",
         "--scheduler", address, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "ADAMSPEC_CONNECT_TIMEOUT_S": "2"},
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "cannot reach" in lines[0], done.stderr


@pytest.mark.needs("dask")
def test_a_check_verifies_its_kernels_chunks_on_the_workers_with_the_same_verdicts(
    tmp_path, monkeypatch
):
    """The kernel steps in this process; each step's chunks, two tasks per tensor here,
    go to the workers. A bug past index 2^16 is found and localized as without them."""
    from test_scale import KERNELS

    from adamspec.harness.check import check

    monkeypatch.setenv("ADAMSPEC_TASK_COORDINATES", str(1 << 16))
    reports = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        result = check(f"{KERNELS}:index_wraps_at_2_16", "torch.Adam", out=out, suite="quick",
                       size=70_000, steps=2, jobs=jobs, counterexample_examples=0,
                       progress=lambda line: None)  # fmt: skip
        assert result.tier == "does not conform"
        reports[jobs] = {n: (out / n).read_bytes() for n in ("summary.csv", "index_profile.csv")}
    assert reports[1] == reports[2]
    assert b"from index 65536 (2^16) on" in reports[2]["summary.csv"]
