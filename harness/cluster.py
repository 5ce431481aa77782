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
import contextvars
import logging
import os
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: How long to wait for a ``tcp://`` scheduler to answer before calling it unreachable
#: (``ADAMSPEC_CONNECT_TIMEOUT_S`` overrides it: a slow network, or a test).
CONNECT_TIMEOUT_S = float(os.environ.get("ADAMSPEC_CONNECT_TIMEOUT_S", 10))
#: How long a reachable scheduler may take to have its first worker (workers started with
#: it need some seconds to import and register on a loaded machine).
WORKER_WAIT_S = 60
#: Times a task is retried after raising (a task that raises is a harness bug: tasks turn
#: an implementation's failure into a row); a task whose worker died is rerun by the
#: scheduler itself (``distributed.scheduler.allowed-failures``, 3 by default).
RETRIES = 1


#: Tasks of a mapping (:meth:`Executor.map_ordered`) in flight at once per worker: enough
#: to keep every worker busy while results come back, few enough that the caller holds only
#: a few tasks' arguments at a time (a big tensor's chunks are made as they are sent).
IN_FLIGHT_PER_WORKER = 2


class SchedulerError(ValueError):
    """A ``--scheduler`` that cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class Failed:
    """The result of a task that raised (or whose worker kept dying, or that waited for a
    failed task): ``error`` says why. :meth:`Executor.run` yields it in place of a result, so
    one failed task never loses the others."""

    error: BaseException

    def __str__(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


@dataclass(frozen=True)
class Task:
    """One unit of work: ``function(*args, *results of dependencies)``.

    ``key`` names it in the graph and in the results; ``after`` lists the keys whose
    results are appended to ``args``, in that order. ``function`` must be importable by
    name on a worker (a module-level function of an installed package). A task with
    ``here`` runs in this process even on a cluster (a user's kernel runs where it was
    loaded: its host, its GPU); it may wait only for tasks that run here too, and what it
    maps with :func:`map_ordered` runs on the cluster.
    """

    key: Hashable
    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    after: tuple[Hashable, ...] = ()
    here: bool = False


#: The executor that :func:`map_ordered` uses: set while an :class:`Executor` runs tasks in
#: this process (on a cluster: its ``here`` tasks), unset elsewhere (on a Dask worker).
_MAPPER: contextvars.ContextVar[Executor | None] = contextvars.ContextVar("mapper", default=None)


@contextlib.contextmanager
def mapping_on(ex: Executor) -> Iterator[None]:
    """In this block, :func:`map_ordered` sends its calls to ``ex``."""
    token = _MAPPER.set(ex)
    try:
        yield
    finally:
        _MAPPER.reset(token)


def map_ordered(function: Callable[..., Any], argses: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
    """``function(*args)`` for each of ``argses``, in order: on the cluster when called from
    a task this process runs for a cluster executor, else right here, one after another.
    ``argses`` is consumed lazily, at most :data:`IN_FLIGHT_PER_WORKER` per worker ahead."""
    ex = _MAPPER.get()
    if ex is None or ex.client is None:
        for args in argses:
            yield function(*args)
        return
    yield from ex.map_ordered(function, argses)


@dataclass
class Executor:
    """Runs task graphs; see :func:`executor`. ``workers`` is the number of processes
    tasks can run in at once; ``description`` says where (for the job's log)."""

    description: str
    workers: int
    client: Any = None  # a distributed.Client, or None for this process

    def run(
        self, tasks: Sequence[Task], done: Mapping[Hashable, Any] | None = None
    ) -> Iterator[tuple[Hashable, Any]]:
        """Yield ``(key, result)`` for every task as it finishes (dependencies first); a
        task that raised (after :data:`RETRIES`) yields :class:`Failed`, and so do the tasks
        that wait for it.

        ``done`` holds results of tasks finished earlier (a resumed run's checkpoint): tasks
        may wait for them, and they are not run or yielded again.

        Raises :class:`ValueError` for an unknown dependency or a cycle."""
        known = dict(done or {})
        order = _topological(tasks, set(known))
        here = [t for t in order if t.here or self.client is None]
        there = [t for t in order if not (t.here or self.client is None)]
        remote = {t.key for t in there}
        for task in here:
            if remote.intersection(task.after):
                raise ValueError(f"task {task.key!r} runs here but waits for a cluster task")
        pending = self._submit(there, known)
        try:
            results = dict(known)
            for task in here:
                with mapping_on(self):  # what the task maps runs on the cluster
                    results[task.key] = _call(task, [results[k] for k in task.after])
                yield task.key, results[task.key]
                yield from _collect(pending, block=False)
            yield from _collect(pending, block=True)
        finally:
            for future in pending.values():
                future.release()

    def _submit(self, order: list[Task], known: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        futures: dict[Hashable, Any] = {}
        prefix = uuid.uuid4().hex[:8]  # keys of one graph: never those of an earlier one
        for n, task in enumerate(order):
            futures[task.key] = self.client.submit(
                task.function,
                *task.args,
                *(futures[k] if k in futures else known[k] for k in task.after),
                key=f"adamspec-{prefix}-{n}",
                pure=False,
                retries=RETRIES,
            )
        return futures

    def map_ordered(
        self, function: Callable[..., Any], argses: Iterable[tuple[Any, ...]]
    ) -> Iterator[Any]:
        """``function(*args)`` on the cluster for each of ``argses``, results in order,
        with at most :data:`IN_FLIGHT_PER_WORKER` tasks per worker in flight."""
        from collections import deque

        window = max(1, IN_FLIGHT_PER_WORKER * self.workers)
        in_flight: deque[Any] = deque()
        for args in argses:
            # the arguments go straight to a worker (a chunk is megabytes: through the
            # scheduler, inside the task, they would cross the network twice)
            (sent,) = self.client.scatter([args], direct=True, hash=False)
            in_flight.append(self.client.submit(_apply, function, sent, pure=False,
                                                retries=RETRIES))  # fmt: skip
            if len(in_flight) >= window:
                yield _result(in_flight.popleft())
        while in_flight:
            yield _result(in_flight.popleft())


def _collect(pending: dict[Hashable, Any], block: bool) -> Iterator[tuple[Hashable, Any]]:
    """Finished cluster tasks, each yielded once and removed from ``pending`` (all of them,
    waiting, when ``block``)."""
    from distributed import wait

    while pending:
        ready = [k for k, f in pending.items() if f.done()]
        if not ready:
            if not block:
                return
            wait(list(pending.values()), return_when="FIRST_COMPLETED")
            continue
        for key in ready:
            future = pending.pop(key)
            try:
                result = future.result()
            except Exception as exc:  # the task raised, or its worker kept dying
                result = Failed(exc)
            finally:
                future.release()
            yield key, result


def _call(task: Task, inputs: list[Any]) -> Any:
    """A task's result in this process; :class:`Failed` if it or a task it waits for failed."""
    failed = next((x for x in inputs if isinstance(x, Failed)), None)
    if failed is not None:
        return failed
    try:
        return task.function(*task.args, *inputs)
    except Exception as exc:
        return Failed(exc)


def _apply(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return function(*args)


def _result(future: Any) -> Any:
    try:
        return future.result()
    finally:
        future.release()


def _topological(tasks: Sequence[Task], finished: set[Hashable] | None = None) -> list[Task]:
    """``tasks`` in an order where every task follows its dependencies (stable otherwise);
    dependencies in ``finished`` are already met."""
    finished = finished or set()
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
            if dep in finished:
                continue
            if dep not in by_key:
                raise ValueError(f"task {task.key!r} waits for an unknown task {dep!r}")
            place(by_key[dep])
        visiting.discard(task.key)
        placed[task.key] = None

    for task in tasks:
        place(task)
    return [by_key[k] for k in placed]


def heap_for_big_temporaries() -> None:
    """Let this process's malloc keep freed memory for reuse (glibc; elsewhere nothing).

    A Dask nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_=65536``, which hands every
    freed block above 64 KiB back to the system: each of the oracle's array temporaries
    (hundreds of KiB per chunk) is then mapped and faulted in anew, and verification ran
    3x slower on a worker than here (measured: 0.85 s against 0.32 s per task of 2^20
    coordinates). Setting the thresholds undoes that for workers however they were started.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return
    if mallopt is not None:
        mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: glibc's largest, 32 MiB
        mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MiB of freed heap


def _quiet_dask() -> None:
    """Dask logs start-up at INFO and a closing cluster's broken connections at ERROR, with
    tracebacks: not for the terminal (a task that fails reaches the caller as :class:`Failed`)."""
    for name in ("distributed", "distributed.nanny", "distributed.scheduler", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _dashboard(client: Any) -> str:
    """Where the Dask dashboard is, or why there is none (it needs bokeh, which adamspec
    does not pull in: the dashboard is for watching a cluster, not for its results)."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        if client.cluster is not None:  # a local cluster: its dashboard is ours to serve
            return "no Dask dashboard (pip install 'bokeh>=3.1' for one)"
    return f"Dask dashboard {client.dashboard_link}"


def check_address(scheduler: str) -> None:
    """Raise :class:`SchedulerError` unless ``scheduler`` is ``tcp://HOST:PORT``."""
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
                silence_logs=logging.CRITICAL,  # a closing cluster's comm errors
                env=dict(worker_env or {}),
            ) as cluster,
            Client(cluster) as client,
        ):
            client.wait_for_workers(max(jobs, 1), timeout=120)
            client.register_worker_callbacks(heap_for_big_temporaries)
            found = Executor(f"a local Dask cluster of {jobs} worker processes", jobs, client)
            log(f"tasks run on {found.description}; {_dashboard(client)}")
            yield found
        return
    check_address(scheduler)
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SchedulerError(
            f"--scheduler {scheduler}: cannot reach the Dask scheduler ({reason})"
        ) from None
    with client:
        client.register_worker_callbacks(heap_for_big_temporaries)
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
        log(f"tasks run on {found.description}; {_dashboard(client)}")
        yield found


__all__ = [
    "CONNECT_TIMEOUT_S",
    "Executor",
    "Failed",
    "SchedulerError",
    "Task",
    "check_address",
    "executor",
    "map_ordered",
    "mapping_on",
]
