"""Freed host memory kept for the next step (glibc ``mallopt``), so big arrays cost no page
faults.

Every training step allocates and frees the same large arrays (a convolution's output
rows, megabytes at a CNN's batch sizes). glibc gives allocations above its mmap threshold
fresh pages from the kernel and returns freed memory at the top of its heap, so each step
touches new pages, a thousand page faults a step. Raising both thresholds keeps freed memory in
the process for the next allocation. It is process-wide and set once, when the first
NumPy-backed engine is made; the cost is that the process's resident memory stays near
its peak. ``HANDPROP_KEEP_FREED_MEMORY=0`` leaves malloc as it is. Other C libraries and
operating systems are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: glibc's largest mmap threshold on 64-bit systems; bigger blocks are still mapped.
MMAP_THRESHOLD = 32 << 20
#: Free memory at the heap's top kept before any is returned to the system.
TRIM_THRESHOLD = 1 << 30
OPT_OUT = "HANDPROP_KEEP_FREED_MEMORY"

_state: dict = {}


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they are set
    (now or before), False where this is not glibc or ``HANDPROP_KEEP_FREED_MEMORY=0``."""
    if "set" in _state:
        return _state["set"]
    done = False
    if os.environ.get(OPT_OUT, "1").strip() != "0" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            # mallopt answers 1 on success; musl and others have no mallopt (AttributeError).
            done = (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                    and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
        except (OSError, AttributeError):
            done = False
    _state["set"] = done
    return done
