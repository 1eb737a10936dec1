"""Joining a Ray cluster for `mgbp upscale --ray` (`mgbp.distributed`): Ray imported, or a one-line error
naming the extra; a wrong address refused in seconds, before any work; Ray's own logs and progress bars kept
off the terminal (the command shows its own). An execution detail of the paper's inference (Algorithm 1 on
many machines), not an equation of its own.
"""

from __future__ import annotations

import logging
import os
import socket

from mgbp.distributed.settings import first_line
from mgbp.errors import ConfigError, MgbpError
from mgbp.stderr import native_stderr_silenced

CONNECT_TIMEOUT_S = 5.0


def import_ray():
    """Ray and Ray Data, or a one-line MgbpError naming the extra to install."""
    try:
        import ray
        import ray.data  # the pipeline half of the extra
    except ImportError as exc:
        raise MgbpError(f"--ray needs Ray Data: pip install 'mgbp[ray]' ({exc})") from None
    return ray


def connect(address: str = "local") -> bool:
    """Join (or start, for "local") a Ray cluster, or raise a one-line MgbpError before any work. Returns True
    when this call started Ray (the caller may `ray.shutdown()`); a process already connected (a notebook, a
    test session) keeps its connection."""
    ray = import_ray()
    address = (address or "local").strip()
    if address not in ("local", "auto"):
        _check_reachable(address)
    _quiet_ray_data()
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    # Ray's C++ core logs at "error" level a caveat of every Ray Data actor pool (constructor arguments kept in
    # the object store), which is not an error of ours; RAY_BACKEND_LOG_LEVEL=info brings its logs back.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        if address == "local":
            with native_stderr_silenced():  # the core's start-up chatter (errors still raise, see below)
                ray.init(**quiet)
        elif address.startswith("ray://"):
            _import_ray_client()
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        hint = " (start one with `ray start --head`, or use --ray local)" if address == "auto" else ""
        raise MgbpError(f"cannot connect to the Ray cluster at {address!r}: {first_line(exc)}{hint}") from None
    return True


def _check_reachable(address: str) -> None:
    """A TCP connection to host:port, so that a wrong address fails in seconds, with one line."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray: expected local, auto, ray://HOST:PORT or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise MgbpError(f"cannot reach the Ray cluster at {address} ({first_line(exc)})") from None


def _import_ray_client() -> None:
    try:
        import grpc  # noqa: F401 - Ray Client speaks gRPC
    except ImportError:
        raise MgbpError("ray:// addresses need Ray Client: pip install 'ray[client]' (or run on the cluster "
                        "with --ray auto)") from None


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or execution logs on the terminal: the command shows its own progress."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its log file in the session folder keeps all
