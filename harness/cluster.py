"""Where a run's tasks execute: this process, or a Dask cluster.

A run, check, gate or oracle benchmark is a graph of independent tasks (one per
implementation x problem, plus the fingerprints, counterexample searches and chunks of a
big tensor that depend on them). :func:`executor` turns ``--jobs`` and ``--scheduler``
into the one object that runs such a graph:

* no ``--scheduler``, ``--jobs 1``: one task after another in this process, in graph
  order (the degenerate cluster of one worker: no Dask start-up cost, and tests can
  monkeypatch what the tasks call);
* no ``--scheduler`` and ``--jobs N > 1``, or ``--scheduler local``: an in-process Dask
  ``LocalCluster`` with N single-threaded worker processes;
* ``--scheduler tcp://HOST:PORT``: a running ``dask scheduler`` and its ``dask worker``\\s,
  on this host or others (``docs/cluster.md``).

Every path runs the same task functions on the same arguments and hands back results
keyed by task, so what the caller merges (in its own fixed order) does not depend on
where or in which order tasks ran: the reports are byte-identical for any scheduler and
worker count. A worker that dies mid-task loses nothing: the scheduler runs its tasks again
elsewhere (tasks are pure functions of their arguments).

Nothing here knows what a task computes.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: How long to wait for a ``tcp://`` scheduler to answer before calling it unreachable.
CONNECT_TIMEOUT_S = 10
#: How long a reachable scheduler may take to have its first worker (workers started with
#: it need some seconds to import and register on a loaded machine).
WORKER_WAIT_S = 60
#: Times a task is retried after raising (a task that raises is a harness bug: tasks turn
#: an implementation's failure into a row); a task whose worker died is rerun by the
#: scheduler itself (``distributed.scheduler.allowed-failures``, 3 by default).
RETRIES = 1


class SchedulerError(ValueError):
    """A ``--scheduler`` that cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class Task:
    """One unit of work: ``function(*args, *results of dependencies)``.

    ``key`` names it in the graph and in the results; ``after`` lists the keys whose
    results are appended to ``args``, in that order. ``function`` must be importable by
    name on a worker (a module-level function of an installed package).
    """

    key: Hashable
    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    after: tuple[Hashable, ...] = ()


@dataclass
class Executor:
    """Runs task graphs; see :func:`executor`. ``workers`` is the number of processes
    tasks can run in at once; ``description`` says where (for logs and meta.json)."""

    description: str
    workers: int
    client: Any = None  # a distributed.Client, or None for this process
    dashboard: str | None = None
    _prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Hashable, Any]]:
        """Yield ``(key, result)`` for every task as it finishes (dependencies first).

        Raises :class:`ValueError` for an unknown dependency or a cycle, and whatever a
        task raised (after :data:`RETRIES`)."""
        order = _topological(tasks)
        if self.client is None:
            yield from self._run_here(order)
        else:
            yield from self._run_on_cluster(order)

    def _run_here(self, order: list[Task]) -> Iterator[tuple[Hashable, Any]]:
        done: dict[Hashable, Any] = {}
        for task in order:
            done[task.key] = task.function(*task.args, *(done[k] for k in task.after))
            yield task.key, done[task.key]

    def _run_on_cluster(self, order: list[Task]) -> Iterator[tuple[Hashable, Any]]:
        from distributed import as_completed

        futures: dict[Hashable, Any] = {}
        keys: dict[str, Hashable] = {}
        for n, task in enumerate(order):
            name = f"adamspec-{self._prefix}-{n}"
            keys[name] = task.key
            futures[task.key] = self.client.submit(
                task.function,
                *task.args,
                *(futures[k] for k in task.after),
                key=name,
                pure=False,
                retries=RETRIES,
            )
        try:
            for future in as_completed(list(futures.values())):
                yield keys[future.key], future.result()
        finally:
            for future in futures.values():
                future.release()


def _topological(tasks: Sequence[Task]) -> list[Task]:
    """``tasks`` in an order where every task follows its dependencies (stable otherwise)."""
    by_key = {t.key: t for t in tasks}
    if len(by_key) != len(tasks):
        raise ValueError("two tasks share a key")
    placed: dict[Hashable, None] = {}
    visiting: set[Hashable] = set()

    def place(task: Task) -> None:
        if task.key in placed:
            return
        if task.key in visiting:
            raise ValueError(f"task {task.key!r} depends on itself")
        visiting.add(task.key)
        for dep in task.after:
            if dep not in by_key:
                raise ValueError(f"task {task.key!r} waits for an unknown task {dep!r}")
            place(by_key[dep])
        visiting.discard(task.key)
        placed[task.key] = None

    for task in tasks:
        place(task)
    return [by_key[k] for k in placed]


def _quiet_dask() -> None:
    """Dask logs worker start-up and shutdown at INFO on stderr: not for the terminal."""
    for name in ("distributed", "distributed.nanny", "distributed.scheduler", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _check_address(scheduler: str) -> None:
    if not scheduler.startswith("tcp://") or ":" not in scheduler[len("tcp://") :]:
        raise SchedulerError(
            f"--scheduler {scheduler!r} is not supported; allowed: local, tcp://HOST:PORT"
        )


@contextlib.contextmanager
def executor(
    scheduler: str | None = None,
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
    worker_env: Mapping[str, str] | None = None,
) -> Iterator[Executor]:
    """The executor for ``--scheduler`` and ``--jobs`` (see the module docstring).

    ``log`` receives one line naming where tasks run (and the Dask dashboard's address
    when there is one); ``worker_env`` is set in a local cluster's worker processes.
    Raises :class:`SchedulerError` for an address that is malformed or does not answer
    within :data:`CONNECT_TIMEOUT_S` seconds."""
    log = log or (lambda line: None)
    if scheduler is None and jobs <= 1:
        yield Executor("this process", 1)
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SchedulerError(
            "--scheduler and --jobs > 1 need Dask distributed: pip install 'adamspec[cluster]'"
        ) from None
    _quiet_dask()
    if scheduler in (None, "local"):
        with (
            LocalCluster(
                n_workers=max(jobs, 1),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
                env=dict(worker_env or {}),
            ) as cluster,
            Client(cluster) as client,
        ):
            client.wait_for_workers(max(jobs, 1), timeout=120)
            found = Executor(f"a local Dask cluster of {jobs} worker processes", jobs, client)
            found.dashboard = client.dashboard_link
            log(f"tasks run on {found.description}; Dask dashboard {found.dashboard}")
            yield found
        return
    _check_address(scheduler)
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SchedulerError(
            f"--scheduler {scheduler}: cannot reach the Dask scheduler ({reason})"
        ) from None
    with client:
        workers = len(client.scheduler_info().get("workers", {}))
        if workers == 0:
            started = time.monotonic()
            while workers == 0 and time.monotonic() - started < WORKER_WAIT_S:
                time.sleep(0.2)
                workers = len(client.scheduler_info().get("workers", {}))
        if workers == 0:
            raise SchedulerError(
                f"--scheduler {scheduler}: the scheduler has no workers after {WORKER_WAIT_S} s"
            )
        found = Executor(f"the Dask cluster at {scheduler} ({workers} workers)", workers, client)
        found.dashboard = client.dashboard_link
        log(f"tasks run on {found.description}; Dask dashboard {found.dashboard}")
        yield found


__all__ = ["CONNECT_TIMEOUT_S", "Executor", "SchedulerError", "Task", "executor"]
