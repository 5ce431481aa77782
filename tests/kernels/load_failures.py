"""A user kernel whose file cannot be imported: its compiled library is missing.

It says what it is doing on stderr first, as a build script would, then ctypes raises
OSError (the library file does not exist).
"""

from __future__ import annotations

import ctypes
import os
import sys

print("loading the AVX-512 Adam library", file=sys.stderr)
_LIB = ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), "libadam_missing.so"))


def step(param, grad, state, h):
    raise AssertionError("never reached: the file does not import")
