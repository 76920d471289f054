"""glibc's malloc told to keep freed memory for reuse, when a model runs on CPU.

Each minibatch of a PPO step allocates its activations, logits and gradients (hundreds of MB
in all), frees them, and allocates the same sizes again. With glibc's defaults the heap top is
given back to the kernel whenever more than twice the dynamic mmap threshold (at most 64 MiB)
of it is free, so every minibatch faults the same memory in again, zero-filled page by page.
``keep_freed_memory`` fixes the thresholds once per process: allocations up to 32 MiB (the
largest mmap threshold glibc accepts on 64-bit) come from the heap, and up to 1 GiB of free
heap stays mapped. What it saves on W1 is in docs/performance.md.

The setting is process-wide, so no library call makes it: the CLI calls
``enable_cpu_fast_paths()`` once when it starts; a Python user may call it too. Nothing
changes where the C library is not glibc, or where the user chose for themselves
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, or malloc tunables in
``GLIBC_TUNABLES``): their settings win.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger("rewardtune")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30

_applied: bool | None = None  # the outcome of the first call; later calls return it


def user_chose_malloc_settings(environ=os.environ) -> bool:
    """Whether the environment already sets glibc's malloc thresholds."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    return (
        "MALLOC_MMAP_THRESHOLD_" in environ
        or "MALLOC_TRIM_THRESHOLD_" in environ
        or "glibc.malloc." in tunables
    )


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (module docstring) unless the user did or the C
    library is another; returns whether they are set. Once per process."""
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def enable_cpu_fast_paths() -> bool:
    """The process-wide CPU speed setting the ``rewardtune`` command makes when it starts:
    glibc's malloc keeps freed memory (``keep_freed_memory``). Returns whether it is set.
    (The other CPU fast path, oneDNN linears, is per model: ``model.cpu_linear``.)"""
    return keep_freed_memory()


def _set_thresholds() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if user_chose_malloc_settings():
        log.debug("malloc thresholds left as the environment sets them")
        return False
    libc = ctypes.CDLL("libc.so.6")
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return all([libc.mallopt(name, value) == 1 for name, value in settings])  # both, always
