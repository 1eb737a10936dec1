"""`mgbp.allocator.reuse_freed_memory`: what it asks of the C allocator, and when it declines.

The effect it buys (fewer page faults, tiles at the small-image rate) is a speed property: it depends on the
kernel and sandbox and is measured by `benchmarks/bench_speed.py` section e, not asserted here (CI's machine
faulted every page in again even with the setting applied, while this one reused the block). What a test can
check on any machine is the contract: glibc's mallopt is called with M_MMAP_MAX=0 and a maximal
M_TRIM_THRESHOLD, once per process, by the first inference call unless MGBP_SYSTEM_MALLOC=1, and the call
reports False where there is no glibc."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mgbp import allocator
from mgbp.models import build_model
from mgbp.tiling import run_model


class FakeLibc:
    """Records mallopt calls; answers with `result` (glibc returns 1 on success, 0 on failure)."""

    def __init__(self, result: int = 1):
        self.calls: list[tuple[int, int]] = []
        self.result = result
        fake = self

        class Mallopt:
            argtypes = None

            def __call__(self, param, value):
                fake.calls.append((param, value))
                return fake.result

        self.mallopt = Mallopt()


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    return monkeypatch


def test_asks_malloc_for_heap_blocks_kept_after_free_once_per_process(fresh):
    libc = FakeLibc()
    fresh.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    assert allocator.reuse_freed_memory() is True
    assert allocator.reuse_freed_memory() is True  # idempotent: the second call asks nothing more
    # malloc.h: M_MMAP_MAX is -4 (0 = never serve a block by mmap), M_TRIM_THRESHOLD is -1 (never trim)
    assert libc.calls == [(-4, 0), (-1, 2**31 - 1)]


def test_reports_false_when_malloc_refuses(fresh):
    libc = FakeLibc(result=0)
    fresh.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    assert allocator.reuse_freed_memory() is False


def test_reports_false_without_glibc(fresh):
    class NoMallopt:  # musl's libc has no mallopt symbol
        def __getattr__(self, name):
            raise AttributeError(name)

    fresh.setattr(allocator.ctypes, "CDLL", lambda name: NoMallopt())
    assert allocator.reuse_freed_memory() is False


def test_reports_false_off_linux(fresh):
    fresh.setattr(allocator.sys, "platform", "darwin")
    assert allocator.reuse_freed_memory() is False


def test_applies_for_real_in_a_child_process():
    """With the real libc the call succeeds on Linux (glibc) and declines elsewhere (a child: per process)."""
    code = "from mgbp.allocator import reuse_freed_memory as r; print(r() and r())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(sys.platform.startswith("linux"))


def _tiny_call() -> None:
    with torch.no_grad():
        run_model(build_model("tiny").eval(), torch.rand(1, 3, 16, 16))


def test_an_inference_call_sets_it_as_the_command_line_does(fresh):
    """mgbp.upscale, the video path, the web app and the Ray workers all run through run_model."""
    libc = FakeLibc()
    fresh.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    fresh.delenv(allocator.SYSTEM_MALLOC_VARIABLE, raising=False)
    _tiny_call()
    _tiny_call()
    assert libc.calls == [(-4, 0), (-1, 2**31 - 1)]


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_the_environment_keeps_the_system_malloc_for_library_callers(fresh, value):
    libc = FakeLibc()
    fresh.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    fresh.setenv(allocator.SYSTEM_MALLOC_VARIABLE, value)
    _tiny_call()
    assert libc.calls == [] and allocator._applied is False


def test_other_values_of_the_variable_do_not_opt_out(fresh):
    libc = FakeLibc()
    fresh.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    fresh.setenv(allocator.SYSTEM_MALLOC_VARIABLE, "0")
    assert allocator.reuse_unless_opted_out() is True
    assert libc.calls == [(-4, 0), (-1, 2**31 - 1)]
