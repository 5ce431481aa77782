"""A user kernel that prints on every step from C and from Python, to fd 1 and fd 2.

Its C part is compiled when the file is imported, with the C compiler here (``cc``), and
called through ctypes, like a C++ or CUDA optimizer's log line. The first thing it writes
to fd 1 on each step is eight 0xff bytes: on a message channel that shared the kernel's
stdout they would read as a length prefix of 2^64 - 1 bytes. The arithmetic is
``user_kernels.adam`` (conforms to paper.algorithm1).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from user_kernels import adam

_SOURCE = r"""
#include <stdio.h>
#include <unistd.h>

void chatter(int step) {
    char line[64];
    int n;
    write(1, "\xff\xff\xff\xff\xff\xff\xff\xff\n", 9);
    n = snprintf(line, sizeof line, "C write(1): step %d\n", step);
    write(1, line, n);
    n = snprintf(line, sizeof line, "C write(2): step %d\n", step);
    write(2, line, n);
    printf("C printf: step %d\n", step);  /* block-buffered: a file is not a terminal */
    fprintf(stderr, "C fprintf(stderr): step %d\n", step);
}
"""


def _build() -> ctypes.CDLL:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH to build the printing kernel")
    folder = tempfile.mkdtemp(prefix="adamspec-printing-kernel-")
    atexit.register(shutil.rmtree, folder, True)
    source, library = os.path.join(folder, "chatter.c"), os.path.join(folder, "chatter.so")
    with open(source, "w") as f:
        f.write(_SOURCE)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", library, source], check=True)
    lib = ctypes.CDLL(library)
    lib.chatter.argtypes = [ctypes.c_int]
    return lib


_LIB = _build()


def printing_adam(param, grad, state, h):
    t = state.step + 1
    _LIB.chatter(t)
    os.write(1, f"os.write(1): step {t}\n".encode())
    os.write(2, f"os.write(2): step {t}\n".encode())
    print(f"print: step {t}")
    return adam(param, grad, state, h)
