"""`mgbp.stderr.native_stderr_silenced`: what a native library writes to file descriptor 2 inside the block is
dropped; Python's own stderr before it and file descriptor 2 after it still reach the terminal."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import os, sys
from mgbp.stderr import native_stderr_silenced
sys.stderr.write("before ")  # buffered by Python: flushed before the descriptor is redirected
with native_stderr_silenced():
    os.write(2, b"native chatter ")  # as x264 or Ray's C++ core write: straight to the descriptor
os.write(2, b"after")
"""


def test_only_the_block_is_silenced():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    assert out.stderr == "before after"


AFTER_AN_ERROR = """
import os
from mgbp.stderr import native_stderr_silenced
try:
    with native_stderr_silenced():
        os.write(2, b"native chatter ")
        raise KeyError
except KeyError:
    pass
os.write(2, b"restored")
"""


def test_descriptor_restored_after_an_exception():
    out = subprocess.run([sys.executable, "-c", AFTER_AN_ERROR], capture_output=True, text=True, check=True)
    assert out.stderr == "restored"
