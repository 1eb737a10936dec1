"""`mgbp.allocator.reuse_freed_memory`: after it, a large buffer freed and allocated again is served from memory
the process already has (few page faults) instead of fresh zero-filled pages from the kernel. Run in a child
process: the setting is per process, and the test process keeps its own."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import resource, sys
import torch
from mgbp.allocator import reuse_freed_memory
if sys.argv[1] == "tuned" and not (reuse_freed_memory() and reuse_freed_memory()):  # idempotent
    print("not applied")
    sys.exit()
def faults_of_a_64_mib_buffer():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)  # 64 MiB, touched, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_64_mib_buffer()
print(min(faults_of_a_64_mib_buffer() for _ in range(3)))
"""


def faults(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1] if out.stdout.split() else ""


def test_freed_buffers_are_reused_without_page_faults():
    if not sys.platform.startswith("linux"):  # glibc's mallopt: elsewhere the call says it did nothing
        assert faults("tuned") == "applied"  # the last word of "not applied"
        return
    pages = 64 * 2**20 // 4096
    assert int(faults("default")) > pages // 2  # malloc returned the block: every page faulted in again
    assert int(faults("tuned")) < pages // 20  # kept in the heap and reused
