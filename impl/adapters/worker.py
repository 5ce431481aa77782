"""Run an adapter in its own worker process, behind the same protocol.

Some frameworks fix global configuration per process (``KERAS_BACKEND``), and a
crashing kernel must not take the harness down. :class:`ProcessAdapter` starts
``python -m adamspec.impl.adapters.worker`` with the given environment and forwards
``set_state``/``get_state``/``step`` as pickled, length-prefixed messages: a small
serialization boundary carrying NumPy arrays bit for bit.

The messages travel on a pipe pair of their own (the child is told the descriptor
numbers), never on the child's stdin, stdout or stderr: its stdin is ``/dev/null`` and
its file descriptors 1 and 2 write to a capture file the parent reads. Whatever the code
under test prints -- Python ``print``, C ``printf``, a C++ logger or a CUDA runtime
writing straight to fd 1 or 2 -- lands in that file and cannot corrupt a message. Its
first lines are what :meth:`ProcessAdapter.output_tail` returns (the harness attaches them
to the case); the end of it is quoted when the worker dies; all of it (up to
:data:`LOG_LIMIT` bytes per call) is appended to the job's log when a job has one
(:data:`LOG_FILE_ENV`, set by :func:`adamspec.harness.console.quiet_console`), so framework
warnings printed in workers are counted there.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import importlib
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from adamspec.impl.adapters.base import (
    Adapter,
    AdapterInfo,
    KernelLoadError,
    State,
    Unsupported,
)
from adamspec.impl.adapters.repro import Program, StepToReproduce
from adamspec.impl.frameworks import FrameworkMissing
from adamspec.spec.precision import Precision

_HEADER = struct.Struct("<Q")

#: Framework log levels, set (as defaults) in every worker before a framework is imported:
#: TensorFlow/XLA C++ logs keep warnings and errors, gRPC and glog only errors. They filter
#: what is logged once a framework runs; TensorFlow's start-up lines ignore them and are
#: kept off the terminal by :func:`adamspec.harness.console.quiet_console` instead.
FRAMEWORK_LOG_ENV: dict[str, str] = {
    "TF_CPP_MIN_LOG_LEVEL": "1",
    "TF_CPP_MAX_VLOG_LEVEL": "0",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "1",
}

#: The job's log file (set by quiet_console): what workers print is appended to it.
LOG_FILE_ENV = "ADAMSPEC_LOG_FILE"
#: Bytes of one call's output copied to the job's log at most (a kernel printing on every
#: step of a long run must not fill the disk).
LOG_LIMIT = 1 << 20


def quiet_framework_logs() -> None:
    """Set :data:`FRAMEWORK_LOG_ENV` in this process unless the user set them already."""
    for key, value in FRAMEWORK_LOG_ENV.items():
        os.environ.setdefault(key, value)


def _to_job_log(data: bytes, more: int) -> None:
    """Append what a worker printed to the job's log, when there is one."""
    target = os.environ.get(LOG_FILE_ENV)
    if not target or not data:
        return
    tail = f"[... {more} more bytes not copied]\n".encode() if more > 0 else b""
    with open(target, "ab") as log:
        log.write(
            b"--- adapter worker ---\n" + data + (b"" if data.endswith(b"\n") else b"\n") + tail
        )


#: Lines of printed output an adapter keeps per case (the first ones: a log's first lines
#: say what went wrong first), and characters kept of each line.
OUTPUT_LINES = 20
LINE_CHARS = 300
#: Bytes of a capture file read back per call at most; more is counted, not read.
_READ_LIMIT = 1 << 16
#: Characters of the end of the output quoted when a worker dies.
_DEATH_TAIL = 2000

#: Build failures that leave a worker healthy: it is kept for the next configuration.
_WORKER_STAYS_HEALTHY = (Unsupported, FrameworkMissing, KernelLoadError)


# ------------------------------------------------------------------------ the message channel


def _send(fd: int, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    for chunk in (_HEADER.pack(len(data)), data):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError("worker closed the connection")
        got += n
    return buffer


def _receive(fd: int) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return pickle.loads(_read_exact(fd, size))


def _error_message(exc: BaseException) -> tuple[str, str, str]:
    """How an exception crosses the channel: its class's module and name, and its text."""
    return type(exc).__module__, type(exc).__qualname__, str(exc)


def _rebuilt(module: str, name: str, message: str) -> Exception:
    """The parent's side of :func:`_error_message`: adamspec's own exceptions (Unsupported,
    KernelLoadError, TargetError, ...) come back as themselves; any other is a RuntimeError
    whose message starts with the original class's name."""
    if module.startswith("adamspec."):
        cls = getattr(importlib.import_module(module), name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                return cls(message)
            except Exception:  # a constructor with other arguments: fall through
                pass
    return RuntimeError(message if name == "RuntimeError" else f"{name}: {message}")


# ------------------------------------------------------------------------ what the child prints


class _Capture:
    """The file the child's fd 1 and 2 write to, and the first lines read back from it.

    Opened for appending, so the parent can empty it after each call (the child's next
    write starts at 0 again): a kernel that prints on every step of a long run never
    fills the disk, and reading it back costs what one call printed.
    """

    def __init__(self) -> None:
        fd, path = tempfile.mkstemp(prefix="adamspec-worker-", suffix=".out")
        os.unlink(path)  # it lives as long as a descriptor does
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        self.fd = fd
        self._lines: list[str] = []
        self._partial = b""
        self._more = 0  # bytes printed past the kept lines

    def collect(self) -> None:
        """Keep the first lines of what was printed since the last collect; empty the file."""
        if self.fd < 0:
            return
        size = os.fstat(self.fd).st_size
        if not size:
            return
        printed = os.pread(self.fd, min(size, max(LOG_LIMIT, _READ_LIMIT)), 0)
        _to_job_log(printed[:LOG_LIMIT], size - LOG_LIMIT)
        if len(self._lines) < OUTPUT_LINES:
            read = min(size, _READ_LIMIT)
            *lines, self._partial = (self._partial + printed[:read]).split(b"\n")
            for line in lines:
                if len(self._lines) < OUTPUT_LINES:
                    self._lines.append(_shown(line))
                else:
                    self._more += len(line) + 1
            self._partial = self._partial[: 4 * LINE_CHARS]
            self._more += size - read
        else:
            self._more += size
        os.ftruncate(self.fd, 0)

    def take(self) -> str:
        """The kept lines (and how much more there was) since the last take; resets them."""
        self.collect()
        lines = self._lines + ([_shown(self._partial)] if self._partial.strip() else [])
        if self._more:
            lines.append(f"[... {self._more} more bytes of output not kept]")
        self._lines, self._partial, self._more = [], b"", 0
        return "\n".join(lines)

    def end(self) -> str:
        """The last characters of what the child printed since the last collect."""
        if self.fd < 0:
            return ""
        size = os.fstat(self.fd).st_size
        start = max(0, size - _DEATH_TAIL)
        return os.pread(self.fd, size - start, start).decode(errors="replace").strip()

    def close(self) -> None:
        self.collect()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _shown(line: bytes) -> str:
    text = line.decode(errors="replace").rstrip("\r\n")
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…"


# ------------------------------------------------------------------------ a started worker


class _Hung(Exception):
    """A call that did not answer in time; the worker has been stopped."""


class _Died(Exception):
    """The worker exited during a call; the message is its exit status and last output."""


class _Worker:
    """A started worker process: its request and reply pipes and its capture file."""

    def __init__(self, extra_env: dict[str, str]) -> None:
        self.capture = _Capture()
        #: what the last :func:`call_in_worker` printed (a kernel's file executed by a probe)
        self.preamble = ""
        requests_in, self.requests = os.pipe()
        self.replies, replies_out = os.pipe()
        # unbuffered Python output: what a kernel printed before it crashed is in the file;
        # faulthandler adds the Python stack of a segfault to it
        env = {**os.environ, **extra_env, "PYTHONUNBUFFERED": "1"}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", "-m", __name__,
                 str(requests_in), str(replies_out)],
                stdin=subprocess.DEVNULL,
                stdout=self.capture.fd,
                stderr=self.capture.fd,
                pass_fds=(requests_in, replies_out),
                env=env,
            )  # fmt: skip
        finally:
            os.close(requests_in)
            os.close(replies_out)

    def call(self, verb: str, args: tuple, timeout: float | None) -> Any:
        """Send one request and return the reply's payload (an error reply is raised)."""
        try:
            _send(self.requests, (verb, args))
            if timeout is not None:
                ready, _, _ = select.select([self.replies], [], [], timeout)
                if not ready:  # a hung call: stop the worker
                    self.stop(kill=True)
                    raise _Hung(f"{verb} did not return within {timeout:g} s; worker stopped")
            status, payload = _receive(self.replies)
        except (BrokenPipeError, EOFError):
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # its channel closed but it lives on
                self.process.kill()
                self.process.wait()
            last = " | ".join(line for line in self.capture.end().splitlines() if line.strip())
            self.stop()
            raise _Died(f"worker died (exit {self.process.returncode}): {last}") from None
        finally:
            self.capture.collect()
        if status == "ok":
            return payload
        raise _rebuilt(*payload)

    def alive(self) -> bool:
        return self.requests >= 0 and self.process.poll() is None

    def stop(self, kill: bool = False) -> None:
        """End the process (asked to close, killed if it does not) and close the pipes; the
        capture stays readable until :meth:`close`."""
        if self.process.poll() is None and not kill:
            try:
                _send(self.requests, ("close", ()))
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for fd in (self.requests, self.replies):
            if fd >= 0:
                os.close(fd)
        self.requests = self.replies = -1

    def close(self) -> None:
        self.stop()
        self.capture.close()


#: Started workers with no adapter, by environment and pool; stopped at exit.
_IDLE: dict[tuple, list[_Worker]] = {}


def _pool_key(extra_env: dict[str, str], pool: str) -> tuple:
    return (*sorted(extra_env.items()), pool)


def _take(key: tuple, extra_env: dict[str, str]) -> _Worker:
    pool = _IDLE.get(key, [])
    while pool:
        worker = pool.pop()
        if worker.alive():
            return worker
        worker.close()
    return _Worker(extra_env)


def _release(key: tuple, worker: _Worker) -> None:
    """Keep a healthy worker for the next adapter of the same environment (a Keras worker
    costs seconds of imports to start); stop any other."""
    try:
        if worker.alive() and worker.call("release", (), timeout=60) is None:
            worker.capture.take()  # what it printed while releasing belongs to no case
            _IDLE.setdefault(key, []).append(worker)
            return
    except Exception:  # a worker that cannot release is stopped instead
        pass
    worker.close()


@atexit.register
def stop_idle_workers() -> None:
    """Stop the idle workers (at exit, and when a job starts or ends)."""
    for pool in _IDLE.values():
        while pool:
            pool.pop().close()


def call_in_worker(
    function: str,
    *args: Any,
    env: dict[str, str] | None = None,
    pool: str = "",
    timeout_s: float | None = None,
) -> Any:
    """``function(*args)`` (``"module:name"``) run in a worker of environment ``env`` and
    pool ``pool`` (see :class:`ProcessAdapter`).

    An idle worker is used when there is one, and the worker is kept afterwards for the
    adapters that follow: what the call imported stays imported there. What it printed is
    the worker's preamble, shown with an adapter that then fails to load. adamspec's own
    exceptions come back as themselves.
    """
    extra = dict(env or {})
    key = _pool_key(extra, pool)
    worker = _take(key, extra)
    try:
        result = worker.call("call", (function, args), timeout_s)
    except _Hung as exc:
        raise TimeoutError(f"{function}: {exc}") from None
    except _Died as exc:
        raise RuntimeError(f"{function}: {exc}") from None
    finally:
        worker.preamble = worker.capture.take()
        if worker.alive():
            _IDLE.setdefault(key, []).append(worker)
    return result


# ------------------------------------------------------------------------ the proxy


class ProcessAdapter(Adapter):
    """Proxy to an adapter class running in a child process.

    options: ``target`` ("module:Class" of the real adapter), ``env`` (extra
    environment for the child), ``inner`` (the real adapter's options), ``timeout_s``
    (per call: a call that does not answer in time kills the worker and raises
    TimeoutError) and ``pool`` (a name: a worker is reused only by adapters of the same
    environment and pool; a user kernel's pool is its path, so two kernels never share a
    process).

    An exception raised while building carries what the child printed meanwhile as its
    ``kernel_output`` attribute (there is no adapter to ask :meth:`output_tail`); a
    KernelLoadError's starts with the worker's preamble (what loading the kernel printed,
    e.g. a compiler's errors, when a probe loaded it).
    """

    framework = ""
    dtypes = ("float64", "float32", "float16", "bfloat16")
    sparse = True

    def check_precision(self, precision: Precision) -> None:
        """Any: the adapter in the worker says which precisions it runs."""

    def _build(self) -> None:
        extra = self.options.get("env", {})
        self._key = _pool_key(extra, self.options.get("pool", ""))
        self._worker = _take(self._key, extra)
        self._finalizer = weakref.finalize(self, self._worker.close)
        try:
            self.version = self._call(
                "build",
                self.options["target"],
                (self.name, self.documented, self.hyper, self.precision.name, self.shapes,
                 self.options.get("inner", {})),
            )  # fmt: skip
        except Exception as exc:
            printed = self.output_tail().splitlines()
            if isinstance(exc, KernelLoadError):
                printed = self._worker.preamble.splitlines() + printed
            exc.kernel_output = "\n".join(printed[:OUTPUT_LINES])  # type: ignore[attr-defined]
            if isinstance(exc, _WORKER_STAYS_HEALTHY):
                self.close()  # the worker itself is fine: keep it for the next configuration
            raise

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """The proxied adapter's program, in the environment the worker runs it in."""
        info, options = step.info, step.info.options
        proxied = AdapterInfo(
            info.name, info.framework, info.documented, options["target"], options.get("inner", {})
        )
        environment = {**step.environment, **options.get("env", {})}
        return proxied.load().reproduction_program(
            replace(step, info=proxied, environment=environment)
        )

    def _call(self, verb: str, *args: Any) -> Any:
        try:
            return self._worker.call(verb, args, self.options.get("timeout_s"))
        except _Hung as exc:  # the worker is stopped: this adapter is finished
            raise TimeoutError(f"{self.name}: {exc}") from None
        except _Died as exc:
            raise RuntimeError(f"{self.name}: {exc}") from None

    def set_state(self, state: State) -> None:
        self._call("set_state", state)

    def get_state(self) -> State:
        return self._call("get_state")

    def step(self, grads: Sequence[Any]) -> None:
        self._call("step", list(grads))

    def output_tail(self) -> str:
        """The first lines the worker printed (fd 1 and 2) since the last call of this."""
        return self._worker.capture.take()

    def close(self) -> None:
        """Release the inner adapter; a healthy worker is kept for the next adapter."""
        if not self._finalizer.alive:
            return
        self._finalizer.detach()
        _release(self._key, self._worker)


# ------------------------------------------------------------------------ the child


def _serve(requests: int, replies: int) -> None:
    """The worker loop: build the real adapter, then answer requests until "close"."""
    quiet_framework_logs()  # before the adapter below imports its framework
    adapter: Adapter | None = None
    while True:
        try:
            verb, args = _receive(requests)
        except EOFError:
            return
        try:
            if verb == "build":
                module, _, cls = args[0].partition(":")
                adapter = getattr(importlib.import_module(module), cls)(*args[1])
                result: Any = adapter.version
            elif verb == "call":
                module, _, name = args[0].partition(":")
                result = getattr(importlib.import_module(module), name)(*args[1])
            elif verb in ("close", "release"):
                if adapter is not None:
                    adapter.close()
                adapter, result = None, None
            else:
                result = getattr(adapter, verb)(*args)
            reply: Any = ("ok", result)
        except Exception as exc:  # every failure goes back as data; the loop goes on
            reply = ("error", _error_message(exc))
        _flush_output()
        try:
            _send(replies, reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # nothing written yet
            _send(replies, ("error", _error_message(exc)))
        if verb == "close":
            return


def _flush_output() -> None:
    """Flush Python's and C stdio's buffers, so what a call printed is in the capture file
    before its reply (a C ``printf`` to a file is block-buffered until then)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a kernel may have replaced or closed them
            pass
    libc = _libc()
    if libc is not None:
        libc.fflush(None)


@functools.cache
def _libc() -> Any:
    """The process's C library (None where there is none to load, e.g. not POSIX)."""
    import ctypes

    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
