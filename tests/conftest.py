"""Shared test set-up: one intra-op thread, and the skip policy.

The test tensors are tiny; with several OpenMP threads on a small shared machine, threads spin against each
other and a millisecond forward pass can take seconds. One thread keeps the suite fast and deterministic.

Skip policy (docs/DEVELOPING.md, "Tests"): a test may skip only because an optional thing is absent, and its
reason must start by naming that thing (`EXPLAINED_SKIPS`), e.g. "../shared is absent: no Set5". Any other skip
(a first-party import that broke, "not written yet", ...) fails the run, so a renamed symbol can never turn a
test into a silent skip. `pytest.importorskip` of an optional third-party module (`OPTIONAL_MODULES`) with its
default reason ("could not import 'av': ...") is explained too; of `mgbp` never.
"""

from __future__ import annotations

import re

import pytest
import torch

pytest_plugins = ["pytester"]  # tests/test_structure.py runs the skip policy on a throw-away suite

torch.set_num_threads(1)

# The optional things whose absence explains a skip; a skip reason must start with one of them.
EXPLAINED_SKIPS = (
    "../shared",  # the shared data, reference code and weights beside the repository
    "PyAV",  # video decoding/encoding (or one of its codecs)
    "matplotlib",  # figures
    "CUDA",
    "a browser",  # the web UI tests drive one with selenium
    "Ray",  # mgbp upscale --ray
    "ONNX Runtime",  # mgbp export checks
    "gradio",  # mgbp serve
    "torch.distributed",  # the DDP test needs a torch built with it
)
OPTIONAL_MODULES = ("av", "matplotlib", "ray", "onnx", "onnxruntime", "onnxscript", "gradio", "selenium")
_IMPORTORSKIP = re.compile(r"could not import '([\w.]+)'")

_UNEXPLAINED: list[tuple[str, str]] = []


def skip_reason(report) -> str:
    """The reason a skipped report gives, without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ").strip()


def is_explained_skip(reason: str) -> bool:
    """True when `reason` names an absent optional thing (see the module docstring)."""
    found = _IMPORTORSKIP.match(reason)
    if found:
        return found.group(1).split(".")[0] in OPTIONAL_MODULES
    return reason.startswith(EXPLAINED_SKIPS)


def _check(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = skip_reason(report)
        if not is_explained_skip(reason):
            _UNEXPLAINED.append((report.nodeid, reason))


def pytest_runtest_logreport(report) -> None:
    _check(report)


def pytest_collectreport(report) -> None:  # module-level skips (allow_module_level=True)
    _check(report)


def pytest_sessionfinish(session, exitstatus) -> None:
    if _UNEXPLAINED and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if not _UNEXPLAINED:
        return
    terminalreporter.section("skips that no absent optional thing explains (tests/conftest.py)", red=True)
    for nodeid, reason in _UNEXPLAINED:
        terminalreporter.line(f"{nodeid}: {reason}")
    terminalreporter.line(f"a skip reason must start with one of {', '.join(EXPLAINED_SKIPS)} "
                          f"(or be importorskip of {', '.join(OPTIONAL_MODULES)})")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A real (tiny, untrained) MGBPv2 x4 weight file, so `mgbp upscale -m FILE` runs end to end (the command-line
    tests; a module may define its own `weights`, as tests/test_ray.py does)."""
    from mgbp import models

    path = tmp_path_factory.mktemp("weights") / "tiny-x4.safetensors"
    torch.manual_seed(0)
    models.save_model(models.build_model("tiny"), path, {})
    return path


@pytest.fixture(scope="module")
def network(weights):
    """The network of `weights`, loaded as `-m FILE` loads it."""
    from mgbp import models

    return models.load_model(str(weights)).eval()
