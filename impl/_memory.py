"""Zeroed state arrays for large tensors, on transparent huge pages where the OS has them.

The compiled step streams seven arrays (param, grad, m and v read; param, m and v
written). On 4 KiB pages the hardware prefetchers stop at every page boundary, and
the step, which is close to arithmetic-bound, loses the overlap: for 16M float32
params the ``torch.Adam`` step measured 26.5 ms with every array on 4 KiB pages and
about 21 ms with only m and v on 2 MiB pages (2 threads; ``adamspec bench impl
--pages``). NumPy asks for huge pages on large allocations too, but its buffers come
from ``malloc``, and on the machines we measured they stayed on 4 KiB pages.

The state is ours to allocate, so large state arrays get their own anonymous
mapping with ``MADV_HUGEPAGE``: zero-filled by the kernel, page-aligned, and freed
with the array. The user's params and grads are left as they are.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

#: Below this size a mapping of its own is not worth it (and a huge page is 2 MiB).
HUGE_PAGE_MIN_BYTES = 4 << 20


def zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.zeros(shape, dtype)``, on an anonymous mapping advised for huge pages when
    the array is at least :data:`HUGE_PAGE_MIN_BYTES` and the platform supports it."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_PAGE_MIN_BYTES or advice is None:
        return np.zeros(shape, dtype=dtype)
    try:
        buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buffer.madvise(advice)
    except (OSError, ValueError):  # no such mapping or advice here: ordinary memory
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def mapping_fields(array: np.ndarray) -> dict[str, str] | None:
    """The kernel's fields (``Rss``, ``AnonHugePages``, ``VmFlags``...) for the memory
    mapping holding ``array``, from ``/proc/self/smaps``; None where that is not known."""
    address = array.__array_interface__["data"][0]
    fields: dict[str, str] | None = None
    try:
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                field, _, rest = line.partition(" ")
                if "-" in field and not field.endswith(":"):  # a mapping's header line
                    if fields is not None:
                        return fields
                    start, _, end = field.partition("-")
                    if int(start, 16) <= address < int(end, 16):
                        fields = {}
                elif fields is not None:
                    fields[field.rstrip(":")] = rest.strip()
    except (OSError, ValueError):
        return None
    return fields


def huge_page_fraction(array: np.ndarray) -> float | None:
    """The fraction of the mapping holding ``array`` that is on transparent huge pages
    (``AnonHugePages / Rss``); None where that is not known."""
    fields = mapping_fields(array)
    try:
        rss = int(fields["Rss"].split()[0])
        return int(fields["AnonHugePages"].split()[0]) / rss if rss else None
    except (TypeError, KeyError, ValueError, IndexError):
        return None
