"""Large CPU buffers kept for reuse by the C allocator (a process setting for the command-line tools).

Not a paper equation: an execution detail of running the generators (Algorithm 1, Figure 3) on big images. glibc's
malloc serves blocks above 32 MiB with mmap and returns them to the system on free; the next forward pass of a
tile then faults every page in again, zero-filled by the kernel. For `mgbp upscale` of a 4K output on this 2-core
Xeon that system time equalled the convolutions' own time (mgbp-x4, one thread, torch 2.13: 6.8 s of system time
in 13.4 s, `benchmarks/bench_speed.py` section e). `reuse_freed_memory` tells malloc to take every block from its
heap and keep freed memory there for the next tile: the same work then runs at the small-image rate per pixel.
The cost: memory freed after the largest tile is not given back to the system until the process ends, which is
what a command that upscales one image after another wants. Library calls (`mgbp.upscale`) never change it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_applied = False


def reuse_freed_memory() -> bool:
    """Serve large blocks from the heap and keep freed memory for reuse (glibc only); True when applied."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
