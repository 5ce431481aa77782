"""The worker a user kernel runs in: a message channel that what the kernel prints cannot
corrupt, the printed lines kept per case, and a kernel file executed once per process.

The kernels are in tests/kernels/: ``printing_kernel.py`` writes to fd 1 and fd 2 from C
(compiled at import with the C compiler here, called through ctypes) and from Python on
every step; ``load_failures.py`` raises on import (its library is missing).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from adamspec.harness.engine import record_trace
from adamspec.harness.problems import suite
from adamspec.impl.adapters import KernelLoadError, State, make_adapter
from adamspec.impl.adapters.kernel_protocol import (
    KernelState,
    kernel_hyper,
    load_target,
    register_target,
)
from adamspec.impl.adapters.worker import LINE_CHARS, OUTPUT_LINES
from adamspec.spec.catalog import entry

KERNELS = Path(__file__).resolve().parent / "kernels"
PRINTING = f"{KERNELS / 'printing_kernel.py'}:printing_adam"
FAILING = f"{KERNELS / 'load_failures.py'}:step"

#: What printing_kernel.py writes on each step t, one line each (C's printf is
#: block-buffered: it reaches the file when the worker flushes C stdio after the call).
PRINTED = ("C write(1): step {t}", "C write(2): step {t}", "C printf: step {t}",
           "C fprintf(stderr): step {t}", "os.write(1): step {t}", "os.write(2): step {t}",
           "print: step {t}")  # fmt: skip


@pytest.fixture(scope="module")
def c_compiler() -> None:
    assert shutil.which("cc") or shutil.which("gcc"), "the printing kernel needs a C compiler"


def _state(params: list[np.ndarray]) -> State:
    zeros = [np.zeros_like(p) for p in params]
    return State(params, zeros, [z.copy() for z in zeros], None, 0)


def _adam(param: np.ndarray, grad: np.ndarray, hyper) -> np.ndarray:
    """user_kernels.adam's first step, run here."""
    adam = load_target(f"{KERNELS / 'user_kernels.py'}:adam")
    zeros = np.zeros_like(param)
    return adam(param, grad, KernelState(zeros, zeros.copy(), None, 0), kernel_hyper(hyper, 1))[0]


def test_output_on_fd_1_and_2_leaves_the_channel_intact_and_is_kept_per_call(c_compiler):
    name = register_target(PRINTING, "paper.algorithm1")
    hyper = entry("paper.algorithm1").hyper()
    param = np.array([1.0, -2.0, 3.0], np.float32)
    grad = np.array([0.5, 0.25, -1.0], np.float32)
    with make_adapter(name, hyper, "float32", [(3,)]) as adapter:
        adapter.set_state(_state([param]))
        adapter.output_tail()  # what it printed while it was built and set
        adapter.step([grad])
        after = adapter.get_state()
        first = adapter.output_tail().splitlines()
        assert adapter.output_tail() == ""  # nothing new since the last call
        for _ in range(3):
            adapter.step([grad])
        three = adapter.output_tail().splitlines()
    # the step's bits crossed the channel whole
    np.testing.assert_array_equal(after.params[0], _adam(param, grad, hyper))
    assert {line.format(t=1) for line in PRINTED} <= set(first), first
    assert len(first) == len(PRINTED) + 1  # and the line of eight 0xff bytes
    # three steps print more than the lines kept: the first ones, and how much more there was
    assert len(three) == OUTPUT_LINES + 1 and three[0] == "\ufffd" * 8, three
    assert {line.format(t=2) for line in PRINTED} <= set(three)
    assert 0 < sum("step 4" in line for line in three) < len(PRINTED)  # cut in step 4
    assert three[-1].startswith("[... ") and three[-1].endswith(" more bytes of output not kept]")
    assert all(len(line) <= LINE_CHARS for line in three)


def test_a_worker_that_dies_says_so_with_the_end_of_what_it_printed():
    name = register_target(f"{KERNELS / 'user_kernels.py'}:segfaults_at_step_2", "paper.algorithm1")
    hyper = entry("paper.algorithm1").hyper()
    param = np.ones(2, np.float32)
    with make_adapter(name, hyper, "float32", [(2,)]) as adapter:
        adapter.set_state(_state([param]))
        adapter.step([param])
        with pytest.raises(RuntimeError) as died:
            adapter.step([param])
    # faulthandler's report of the segfault, with the kernel's line, is the worker's last output
    assert "worker died (exit -11): Fatal Python error: Segmentation fault" in str(died.value)
    assert "user_kernels.py" in str(died.value)


def test_a_kernel_file_is_executed_once_per_process(capfd):
    with pytest.raises(KernelLoadError) as first:
        load_target(FAILING)
    with pytest.raises(KernelLoadError) as second:
        load_target(FAILING)
    assert str(first.value) == str(second.value)
    # the second load raised what the first execution raised: the file ran once
    assert capfd.readouterr().err.count("loading the AVX-512 Adam library") == 1


#: The full reason load_failures.py does not load, as detail says it.
LOAD_FAILURE = (
    f"cannot load the kernel: importing '{KERNELS / 'load_failures.py'}' raised OSError: "
    f"{KERNELS / 'libadam_missing.so'}: cannot open shared object file: No such file or "
    "directory (at kernels/load_failures.py:14, raised in ctypes/__init__.py:"
)


@pytest.mark.parametrize("in_process", [False, True], ids=["worker", "in-process"])
def test_a_kernel_that_cannot_be_loaded_is_an_error_with_the_full_reason(in_process):
    # a distinct TARGET per mode (registrations are by TARGET): the path relative to here
    target = FAILING if not in_process else f"{os.path.relpath(KERNELS)}/load_failures.py:step"
    name = register_target(target, "paper.algorithm1", in_process=in_process)
    trace = record_trace(name, suite("quick")[0], "float32", 0)
    assert (trace.status, trace.steps) == ("error", [])
    assert trace.detail.startswith(LOAD_FAILURE), trace.detail
    # in a worker, what loading printed (on stderr, before it raised) comes with the error
    printed = "" if in_process else "loading the AVX-512 Adam library"
    assert trace.kernel_output == printed
