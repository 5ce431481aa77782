"""The console of long jobs: framework chatter in the job's log, progress on the terminal."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adamspec.harness.console import (
    BarProgress,
    LineProgress,
    count_log,
    make_progress,
    quiet_console,
)
from adamspec.impl.adapters.worker import FRAMEWORK_LOG_ENV, LOG_FILE_ENV

ROOT = Path(__file__).resolve().parents[1]

#: Lines TensorFlow 2.21 prints at start-up on this CPU-only machine (measured), whatever
#: TF_CPP_MIN_LOG_LEVEL says.
TF_STARTUP = re.compile(r"absl::InitializeLog|oneDNN|cuda_drivers|cudart_stub|cuInit|cpu_feature")


def test_count_log_counts_warnings_and_errors(tmp_path):
    log = tmp_path / "adamspec.log"
    log.write_text(
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796209257.046134   30651 port.cc:153] oneDNN custom operations are on.\n"
        "W0000 00:00:1796209257.1   30651 x.cc:1] a native warning\n"
        "E0000 00:00:1796209262.188320   30651 cuda_platform.cc:52] failed call to cuInit\n"
        "/x/keras/optimizer.py:12: UserWarning: something\n"
        "  warnings.warn(\n"
        "WARNING:absl:python-side warning\n"
        "\n"
    )
    count = count_log(log)
    assert (count.warnings, count.errors, count.lines) == (3, 1, 7)
    assert "3 warnings, 1 error line, 7 lines" in count.sentence()
    assert count_log(tmp_path / "missing.log").sentence().startswith("framework log: empty")


def test_quiet_console_sends_fd2_of_the_job_and_its_children_to_the_log(tmp_path, capfd):
    log = tmp_path / "out" / "adamspec.log"
    before = {k: os.environ.get(k) for k in (*FRAMEWORK_LOG_ENV, LOG_FILE_ENV)}
    with quiet_console(log) as terminal:
        print("python stderr", file=sys.stderr, flush=True)
        os.write(2, b"native stderr\n")
        child = (
            "import os; os.write(2, (os.environ['TF_CPP_MIN_LOG_LEVEL'] + ' child\\n').encode())"
        )
        subprocess.run([sys.executable, "-c", child], check=True)
        print("progress line", file=terminal)
    _, err = capfd.readouterr()
    assert "progress line" in err
    assert "stderr" not in err and "child" not in err
    assert log.read_text().splitlines() == ["python stderr", "native stderr", "1 child"]
    # everything is restored: the environment, and fd 2
    assert {k: os.environ.get(k) for k in before} == before
    print("after", file=sys.stderr, flush=True)
    assert "after" in capfd.readouterr().err


def test_plain_progress_is_one_line_per_task():
    lines: list[str] = []
    progress = LineProgress(lines.append)
    progress.start(2, "job")
    progress.done("[1/2] a")
    progress.note("note")
    progress.done("[2/2] b")
    progress.stop()
    assert lines == ["[1/2] a", "note", "[2/2] b"]
    assert isinstance(make_progress("auto", io.StringIO()), LineProgress)  # not a terminal


def test_bar_progress_shows_count_and_eta_and_keeps_the_lines():
    stream = io.StringIO()
    progress = make_progress("bar", stream)
    assert isinstance(progress, BarProgress)
    progress.start(2, "job")
    progress.done("[1/2] first")
    progress.done("[2/2] second")
    progress.stop()
    text = stream.getvalue()
    assert "[1/2] first" in text and "[2/2] second" in text
    assert "2/2" in text and "ETA" in text and "elapsed" in text


def test_unknown_progress_mode_is_refused():
    with pytest.raises(ValueError, match="--progress='fancy' is unknown; allowed: auto, bar"):
        make_progress("fancy", io.StringIO())


@pytest.mark.needs("tensorflow")
def test_a_run_with_tensorflow_keeps_its_start_up_lines_in_the_log(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in FRAMEWORK_LOG_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "adamspec.harness.cli", "run", "--suite", "discriminating",
         "--impl", "tf.raw.ResourceApplyAdam", "--impl", "keras.Adam[tensorflow]",
         "--jobs", "2", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for stream in (done.stdout, done.stderr):
        assert not TF_STARTUP.search(stream), stream
    log = (out / "adamspec.log").read_text()
    assert TF_STARTUP.search(log)  # TensorFlow did start, in the pool worker and the Keras one
    assert "--- adapter worker" in log
    assert re.search(r"framework log: \d+ warnings?, \d+ error lines?, \d+ lines in ", done.stdout)
