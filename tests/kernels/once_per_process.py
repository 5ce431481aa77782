"""A user kernel whose file can be executed only once per process.

Importing it registers a custom operator in a process-wide registry that refuses a second
registration, as ``torch.library`` or a CUDA extension loader does: executing the file
again in the same process raises. The arithmetic is ``user_kernels.adam``.
"""

from __future__ import annotations

import builtins
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from user_kernels import adam

#: The process-wide registry (on builtins, so it outlives this module's execution).
REGISTRY_NAME = "_adamspec_test_custom_ops"
_ops = builtins.__dict__.setdefault(REGISTRY_NAME, set())
if "toy::adam" in _ops:
    raise RuntimeError("toy::adam is already registered in this process")
_ops.add("toy::adam")


def registered_adam(param, grad, state, h):
    return adam(param, grad, state, h)
