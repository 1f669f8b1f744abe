"""Keep freed heap memory in the process instead of returning it to the OS (glibc only).

Every training step allocates and frees tensors of [positions x items], tens of MB each
on Beauty. glibc serves requests that large with a fresh ``mmap`` and hands them back with
``munmap`` on free, so each step page-faults its largest tensors in again, zero-filled by
the kernel: a log-softmax over Beauty's logits took 32 ms on fresh pages and 8 ms on reused
ones on the development machine, and a whole SVI step 20-25% longer. Serving everything
from the heap and never trimming it makes the next step reuse the same pages, as jemalloc
or tcmalloc would. The cost: freed memory is not returned to the OS until the process ends,
and tensors of many sizes fragment the heap, which raises the peak: by about 70 MB on Beauty,
by 1.6 GB (sampled softmax) to 4.4 GB (full) at 10^6 items (docs/performance.md).

The same goes for oneDNN, which runs the bfloat16 matmuls of mixed precision on the CPU: it
keeps a compiled primitive for each matmul shape it has seen, up to 1,024, and dynamic
padding brings new shapes all the time. Two mixed-precision epochs on Beauty peaked at
2,560 MB with that default and at 1,849 MB with 64 primitives, in the same time.

The command line applies both settings (:func:`configure_process_memory`) for every command;
Python users call it once at the start of a program. ``SIGMA_PYRO_MALLOC=system`` leaves
glibc's defaults alone, and a ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` already set is kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1
_ONEDNN_CACHE = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
_applied = False


def configure_process_memory() -> None:
    """Keep freed heap memory for reuse and bound oneDNN's primitive cache. Call it before
    the first tensor operation: oneDNN reads its setting once."""
    retain_freed_memory()
    os.environ.setdefault(*_ONEDNN_CACHE)


def retain_freed_memory() -> bool:
    """Serve large allocations from the heap and keep it; True when the setting is on.

    Does nothing (and returns False) off glibc, or when ``SIGMA_PYRO_MALLOC=system``."""
    global _applied
    if _applied:
        return True
    if os.environ.get("SIGMA_PYRO_MALLOC", "").lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # With mmap off, glibc still falls back to it when the heap cannot grow.
        _applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
        )
    except (OSError, AttributeError):
        return False
    return _applied
