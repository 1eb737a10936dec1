"""Jobs of `mgbp serve`: one at a time per device, cancellable between two forward passes, with an ETA.

The generator's forward pass (Algorithm 1) is the unit of work: `mgbp.tiling.run_model` calls it once per
batch of tiles, `mgbp.video` once per window of frames. A forward pre-hook (a public PyTorch hook, registered
for the duration of one job) is therefore where a job is cancelled (the hook raises `JobCancelled`, the tiling
and video code clean up as for any error) and where its progress is sampled for the ETA. The device lock makes
"one job per device" hold even when the web framework has already dropped a cancelled request and starts the
next one while the cancelled job finishes its current tile.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from mgbp.errors import MgbpError


class JobCancelled(MgbpError):
    """The user cancelled the job."""


class Job:
    """One request's work: a cancel flag, and a callback run before every forward pass (progress, ETA)."""

    def __init__(self, on_step: Callable[[], None] | None = None):
        self._cancelled = threading.Event()
        self.on_step = on_step

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise JobCancelled if the job was cancelled."""
        if self._cancelled.is_set():
            raise JobCancelled("cancelled")

    def step(self) -> None:
        """Called before each forward pass: stop here if cancelled, else report progress."""
        self.check()
        if self.on_step is not None:
            self.on_step()


class DeviceQueue:
    """Runs jobs on one device, one at a time (first come, first served by the lock's waiters)."""

    def __init__(self, device: str):
        self.device = device
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}  # the latest job of each session, for its cancel button
        self._jobs_lock = threading.Lock()

    @contextlib.contextmanager
    def run(self, model, job: Job | None = None, session: str | None = None) -> Iterator[Job]:
        """Hold the device while the block runs `model`; `job.step()` runs before each of its forward passes."""
        job = job or Job()
        if session is not None:
            with self._jobs_lock:
                self._jobs[session] = job
        try:
            with self._lock:
                job.check()  # cancelled while waiting for the device
                handle = model.register_forward_pre_hook(lambda module, args: job.step())
                try:
                    yield job
                finally:
                    handle.remove()
        finally:
            if session is not None:
                with self._jobs_lock:
                    if self._jobs.get(session) is job:
                        del self._jobs[session]

    def cancel(self, session: str) -> bool:
        """Cancel the running or waiting job of `session`; False when it has none."""
        with self._jobs_lock:
            job = self._jobs.get(session)
        if job is None:
            return False
        job.cancel()
        return True


class Eta:
    """Time left for a count of `done` out of `total` units, from the rate since the count was first seen."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._start: tuple[float, float] | None = None  # (time, done) of the first sample
        self._total = None

    def text(self, done: float, total: float | None) -> str:
        """'about M:SS left' once the rate is known, else ''. A new total restarts the estimate."""
        now = self.clock()
        if total != self._total or self._start is None or done < self._start[1]:
            self._start, self._total = (now, done), total
            return ""
        start_time, start_done = self._start
        if not total or done <= start_done or now <= start_time:
            return ""
        seconds = (total - done) * (now - start_time) / (done - start_done)
        return f"about {format_duration(seconds)} left"


def format_duration(seconds: float) -> str:
    """H:MM:SS or M:SS, rounded up to the second."""
    whole = int(-(-max(seconds, 0.0) // 1))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
