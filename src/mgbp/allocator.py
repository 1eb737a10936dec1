"""Large CPU buffers kept for reuse by the C allocator (a process setting, made by every inference call).

Not a paper equation: an execution detail of running the generators (Algorithm 1, Figure 3). glibc's malloc serves
large blocks with mmap and returns them to the system on free (blocks above 32 MiB always; smaller ones once the
heap's free top passes its trim threshold); the next forward pass then faults every page in again, zero-filled by
the kernel. For `mgbp upscale` of a 4K output on this 2-core Xeon that system time equalled the convolutions' own
time (mgbp-x4, one thread, torch 2.13: 6.8 s of system time in 13.4 s, `benchmarks/bench_speed.py` section e),
and `mgbp.upscale` of mgbp-x4 on a 128x128 image took 0.156 s without the setting against 82.8 ms with it (two
consecutive runs of section c, `--malloc system` and the default; SPAN in the same runs: 0.120 s and 92.3 ms).
`reuse_freed_memory` tells malloc to take every block from its heap and keep freed
memory there for the next call: the same work then runs at the small-image rate per pixel.

The cost: memory freed after the largest image is not given back to the system until the process ends (as ONNX
Runtime's CPU arena and PyTorch's CUDA caching allocator keep theirs). `mgbp upscale` and `mgbp train` set it at
start, and the library's inference entry (`mgbp.tiling.run_model`, under `mgbp.upscale`, the video path, the web
app and the Ray workers) sets it at its first call through `reuse_unless_opted_out`, unless the environment
variable MGBP_SYSTEM_MALLOC=1 asks to leave malloc as the process has it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

SYSTEM_MALLOC_VARIABLE = "MGBP_SYSTEM_MALLOC"
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


def reuse_unless_opted_out() -> bool:
    """`reuse_freed_memory()` for an inference call, unless MGBP_SYSTEM_MALLOC is set to 1 (or true / yes)."""
    if os.environ.get(SYSTEM_MALLOC_VARIABLE, "").strip().lower() in ("1", "true", "yes"):
        return False
    return reuse_freed_memory()
