"""Native libraries' own messages on file descriptor 2, silenced while they run.

Not a paper equation: a command-line detail. FFmpeg's encoders (x264, x265) and Ray's C++ core write straight to
the process's file descriptor 2, below Python's `sys.stderr`, so redirecting `sys.stderr` does not hide them. A
failure still reaches the user as the one-line error the caller raises; only the libraries' chatter is dropped.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration of the block, then restore it."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
