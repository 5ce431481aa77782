"""Run an adapter in its own worker process, behind the same protocol.

Some frameworks fix global configuration per process (``KERAS_BACKEND``), and a
crashing kernel must not take the harness down. :class:`ProcessAdapter` starts
``python -m impl.adapters.worker`` with the given environment and forwards
``set_state``/``get_state``/``step`` as pickled, length-prefixed messages over
the child's stdin/stdout: a small serialization boundary carrying NumPy arrays
bit for bit.
"""

from __future__ import annotations

import atexit
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
from typing import Any, BinaryIO

from adamspec.impl.adapters.base import Adapter, AdapterInfo, State, Unsupported
from adamspec.impl.adapters.repro import Program, StepToReproduce
from adamspec.impl.frameworks import FrameworkMissing

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

#: The job's log file (set by quiet_console): a worker's captured stderr is appended to it.
LOG_FILE_ENV = "ADAMSPEC_LOG_FILE"


def quiet_framework_logs() -> None:
    """Set :data:`FRAMEWORK_LOG_ENV` in this process unless the user set them already."""
    for key, value in FRAMEWORK_LOG_ENV.items():
        os.environ.setdefault(key, value)


def _send(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("worker closed the connection")
    (size,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(size))


class ProcessAdapter(Adapter):
    """Proxy to an adapter class running in a child process.

    options: ``target`` ("module:Class" of the real adapter), ``env`` (extra
    environment for the child), ``inner`` (the real adapter's options) and
    ``timeout_s`` (per call: a call that does not answer in time kills the worker and
    raises TimeoutError).
    """

    framework = ""
    dtypes = ("float64", "float32", "float16", "bfloat16")
    sparse = True

    def _build(self) -> None:
        extra = self.options.get("env", {})
        self._key = tuple(sorted(extra.items()))
        self._process = _take_idle(self._key) or _start(extra)
        self._finalizer = weakref.finalize(self, _stop, self._process)
        try:
            self.version = self._call(
                "build",
                self.options["target"],
                (self.name, self.documented, self.hyper, self.dtype, self.shapes,
                 self.options.get("inner", {})),
            )  # fmt: skip
        except (Unsupported, FrameworkMissing):
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
        timeout = self.options.get("timeout_s")
        try:
            _send(self._process.stdin, (verb, args))
            if timeout is not None and verb in ("step", "build", "set_state", "get_state"):
                ready, _, _ = select.select([self._process.stdout], [], [], timeout)
                if not ready:  # a hung kernel: stop it; this adapter is finished
                    self._finalizer.detach()
                    self._process.kill()
                    _stop(self._process)
                    raise TimeoutError(
                        f"{self.name}: {verb} did not return within {timeout:g} s; worker stopped"
                    )
            status, payload = _receive(self._process.stdout)
        except (BrokenPipeError, EOFError):
            self._process.wait(timeout=10)
            tail = _stderr_tail(self._process)
            raise RuntimeError(
                f"{self.name}: worker died (exit {self._process.returncode}): {tail}"
            ) from None
        if status == "ok":
            return payload
        kind, message = payload
        raise {"Unsupported": Unsupported, "FrameworkMissing": FrameworkMissing}.get(
            kind, RuntimeError
        )(message)

    def set_state(self, state: State) -> None:
        self._call("set_state", state)

    def get_state(self) -> State:
        return self._call("get_state")

    def step(self, grads: Sequence[Any]) -> None:
        self._call("step", list(grads))

    def close(self) -> None:
        """Release the inner adapter; a healthy worker is kept for the next adapter of the
        same environment (a Keras worker costs seconds of imports to start)."""
        if not self._finalizer.alive:
            return
        self._finalizer.detach()
        try:
            if self._process.poll() is None and self._call("release") is None:
                _IDLE.setdefault(self._key, []).append(self._process)
                return
        except Exception:  # a worker that cannot release is stopped instead
            pass
        _stop(self._process)


#: Started workers with no adapter, by environment; stopped at exit.
_IDLE: dict[tuple, list[subprocess.Popen]] = {}


def _start(extra_env: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, **extra_env}
    # stderr goes to a file: framework chatter must never fill a pipe and block the child
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "adamspec.impl.adapters.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def _take_idle(key: tuple) -> subprocess.Popen | None:
    pool = _IDLE.get(key, [])
    while pool:
        process = pool.pop()
        if process.poll() is None:
            return process
        _stop(process)
    return None


def _stderr_tail(process: subprocess.Popen) -> str:
    log = getattr(process, "log", None)
    if log is None or log.closed:
        return ""
    log.seek(0)
    return log.read().decode(errors="replace")[-2000:]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            _send(process.stdin, ("close", ()))
            process.wait(timeout=10)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
    _keep_log(process)
    for stream in (process.stdin, process.stdout, getattr(process, "log", None)):
        if stream:
            stream.close()


def _keep_log(process: subprocess.Popen) -> None:
    """Append what a finished worker wrote to stderr to the job's log, when there is one."""
    target, log = os.environ.get(LOG_FILE_ENV), getattr(process, "log", None)
    if not target or log is None or log.closed:
        return
    log.seek(0)
    text = log.read()
    if text:
        with open(target, "ab") as f:
            f.write(f"--- adapter worker {process.pid} ---\n".encode() + text)


@atexit.register
def stop_idle_workers() -> None:
    """Stop the idle workers (at exit, and when a job ends so their output reaches its log)."""
    for pool in _IDLE.values():
        while pool:
            _stop(pool.pop())


def _serve() -> None:
    """The worker loop: build the real adapter, then answer requests until "close"."""
    import importlib

    quiet_framework_logs()  # before the adapter below imports its framework
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # framework chatter must not corrupt the message stream
    adapter: Adapter | None = None
    while True:
        try:
            verb, args = _receive(stdin)
        except EOFError:
            return
        try:
            if verb == "build":
                module, _, cls = args[0].partition(":")
                adapter = getattr(importlib.import_module(module), cls)(*args[1])
                result: Any = adapter.version
            elif verb in ("close", "release"):
                if adapter is not None:
                    adapter.close()
                adapter = None
                _send(stdout, ("ok", None))
                if verb == "close":
                    return
                continue
            else:
                result = getattr(adapter, verb)(*args)
            _send(stdout, ("ok", result))
        except Exception as exc:  # every failure goes back as data; the loop goes on
            _send(stdout, ("error", (type(exc).__name__, str(exc))))


if __name__ == "__main__":
    _serve()
