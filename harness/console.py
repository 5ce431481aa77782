"""What a person sees on the terminal during a long job: progress, and nothing else.

TensorFlow, XLA and oneDNN write their start-up lines straight to file descriptor 2 from
C++ (``cpu_feature_guard``, ``cuInit`` errors, "All log messages before
absl::InitializeLog() ..."). TensorFlow 2.21 prints them before its own log level is
read, so no ``TF_CPP_MIN_LOG_LEVEL`` (0 to 3, measured) silences them. During a job,
:func:`quiet_console` therefore points fd 2 of this process -- and with it of every worker
process started meanwhile, which inherit it -- at a log file in the output folder, and the
progress is written to a duplicate of the original terminal. The log levels of
:data:`adamspec.impl.adapters.worker.FRAMEWORK_LOG_ENV` still apply to what is logged
after start-up.

Progress is either a bar (``rich``: count, elapsed time, ETA; on a terminal) or plain lines
(off a terminal, or ``--progress plain``): the same :class:`Progress` interface either way.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from adamspec.impl.adapters.worker import FRAMEWORK_LOG_ENV, LOG_FILE_ENV, stop_idle_workers

#: The log file a job writes into its output folder.
LOG_NAME = "adamspec.log"

PROGRESS_MODES = ("auto", "bar", "plain")


@contextlib.contextmanager
def quiet_console(log_path: str | os.PathLike[str], append: bool = False) -> Iterator[TextIO]:
    """Send everything written to fd 2 (by this process and the workers it starts) to
    ``log_path``; yields a text stream on the original terminal for progress lines.

    Framework log levels (:data:`FRAMEWORK_LOG_ENV`) are set as defaults in the environment
    the workers inherit, and :data:`LOG_FILE_ENV` names the log so that adapter worker
    processes append their own captured output to it when they stop (idle ones at the end
    of the job; any left from before it are stopped first). Everything is restored on
    exit."""
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stop_idle_workers()  # started before this job: what they printed is not its log's
    sys.stdout.flush()
    sys.stderr.flush()
    saved_env = {k: os.environ.get(k) for k in (*FRAMEWORK_LOG_ENV, LOG_FILE_ENV)}
    for key, value in FRAMEWORK_LOG_ENV.items():
        os.environ.setdefault(key, value)
    os.environ[LOG_FILE_ENV] = str(path.resolve())
    if not append:
        path.write_bytes(b"")
    terminal_fd = os.dup(2)
    # every writer appends (fd 2, Python's sys.stderr, adapter workers): none overwrites
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    terminal = os.fdopen(terminal_fd, "w", buffering=1, encoding="utf-8", errors="replace")
    # sys.stderr too, where it is not fd 2 (pytest's capture, a notebook)
    saved_stderr, sys.stderr = sys.stderr, open(path, "a", buffering=1, encoding="utf-8")
    try:
        yield terminal
    finally:
        stop_idle_workers()  # their captured output goes to the log now, not at exit
        sys.stderr.close()
        sys.stderr = saved_stderr
        terminal.flush()
        os.dup2(terminal.fileno(), 2)
        terminal.close()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ----------------------------------------------------------------------- the log's count

#: absl/glog C++ lines: a severity letter, MMDD, then the time ("W0000 00:00:17...").
_NATIVE = re.compile(r"^([IWEF])\d{4} ")
#: Python's warnings module: "path:line: SomeWarning: message".
_PY_WARNING = re.compile(r":\d+: \w*Warning: ")
#: Python logging's default format ("WARNING:absl:...", "ERROR:tensorflow:...").
_PY_LOGGING = re.compile(r"^(WARNING|ERROR|CRITICAL):")
#: absl's notice that it has not been initialised yet: where the lines go, not a problem.
_ABSL_NOTICE = "All log messages before absl::InitializeLog() is called"


@dataclass(frozen=True)
class LogCount:
    """What frameworks wrote to a job's log."""

    path: Path
    warnings: int
    errors: int
    lines: int

    def sentence(self) -> str:
        if not self.lines:
            return f"framework log: empty ({self.path})"
        return (
            f"framework log: {self.warnings} warning{'s' * (self.warnings != 1)}, "
            f"{self.errors} error line{'s' * (self.errors != 1)}, {self.lines} lines "
            f"in {self.path}"
        )


def count_log(path: str | os.PathLike[str]) -> LogCount:
    """Warnings and error lines in a job's log (native absl/glog, Python warnings and
    logging); absl's not-yet-initialised notice is not counted as a warning."""
    warnings = errors = lines = 0
    with (
        contextlib.suppress(FileNotFoundError),
        open(path, encoding="utf-8", errors="replace") as f,
    ):
        for line in f:
            if not line.strip():
                continue
            lines += 1
            native = _NATIVE.match(line)
            level = native.group(1) if native else ""
            if _PY_LOGGING.match(line) and _ABSL_NOTICE not in line:
                level = "W" if line.startswith("WARNING") else "E"
            if level == "W" or _PY_WARNING.search(line):
                warnings += 1
            elif level in ("E", "F"):
                errors += 1
    return LogCount(Path(path), warnings, errors, lines)


# ----------------------------------------------------------------------- progress


class Progress:
    """A job's progress: ``start(total)``, then ``done(line)`` once per finished task,
    ``note(line)`` for anything else worth a line, ``stop()`` at the end."""

    def start(self, total: int, what: str = "") -> None:
        raise NotImplementedError

    def done(self, line: str) -> None:
        raise NotImplementedError

    def note(self, line: str) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class LineProgress(Progress):
    """Plain lines, each to ``write`` (a log, CI, a pipe: no control characters)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def start(self, total: int, what: str = "") -> None:
        pass

    def done(self, line: str) -> None:
        self.write(line)

    def note(self, line: str) -> None:
        self.write(line)

    def stop(self) -> None:
        pass


class BarProgress(Progress):
    """A ``rich`` bar with the count, elapsed time and ETA; finished tasks' lines above it."""

    def __init__(self, stream: TextIO, force_terminal: bool = False) -> None:
        from rich.console import Console

        self.console = Console(file=stream, force_terminal=force_terminal or None, highlight=False)
        self._bar = None
        self._task = None

    def start(self, total: int, what: str = "") -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            refresh_per_second=2,
        )
        self._bar.start()
        self._task = self._bar.add_task(what or "adamspec", total=total)

    def done(self, line: str) -> None:
        self.note(line)
        if self._bar is not None:
            self._bar.advance(self._task)

    def note(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def make_progress(mode: str, stream: TextIO) -> Progress:
    """``auto``: a bar when ``stream`` is a terminal, plain lines otherwise; ``bar`` and
    ``plain`` force one."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f"--progress={mode!r} is unknown; allowed: {', '.join(PROGRESS_MODES)}")
    if mode == "bar" or (mode == "auto" and stream.isatty()):
        return BarProgress(stream, force_terminal=mode == "bar")
    return LineProgress(lambda line: print(line, file=stream, flush=True))


def as_progress(progress: Callable[[str], None] | Progress | None) -> Progress:
    """A :class:`Progress` from what a caller passed: one, a line callable, or None (plain
    lines on stderr)."""
    if isinstance(progress, Progress):
        return progress
    if progress is None:
        return LineProgress(lambda line: print(line, file=sys.stderr, flush=True))
    return LineProgress(progress)
