"""The `mgbp` entry point: version, unknown commands, and a reader that leaves early (`| head`)."""

from __future__ import annotations

import os
import subprocess
import sys

import mgbp
from mgbp.cli import main


def test_version_flag_prints_the_package_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert capsys.readouterr().out.strip() == f"mgbp {mgbp.__version__}"


def test_unknown_command_is_one_line_and_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'frobnicate'" in err


def test_closed_pipe_ends_quietly_without_a_traceback(monkeypatch, capsys):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head`) is gone before anything is written
    broken = os.fdopen(write_end, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", broken)
    assert main(["models"]) == 141
    assert "Traceback" not in capsys.readouterr().err


def test_models_listing_through_a_real_pipe_has_no_traceback():
    """The same through a real shell pipeline, as a user types it."""
    result = subprocess.run(f"{sys.executable} -m mgbp.cli models --json | head -c 1", shell=True, check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout == "{"
    assert "Traceback" not in result.stderr
