"""benchmarks/bench_forward.py: bad options are one line (exit 2); a tiny CPU run gives one JSON line per
(preset, precision, variant), a CUDA-only variant is reported as skipped with its reason, and the kernel profile
of the first variant names real operators (the convolutions of the network)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_forward.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_forward", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, words", [
    (["--preset", "mgbpv2-x5"], "unknown preset 'mgbpv2-x5'"),
    (["--lr-size", "96"], "--lr-size '96': expected WxH"),
    (["--lr-size", "0x10"], "sizes must be positive"),
])
def test_bad_options_are_one_line(bench, capsys, argv, words):
    assert bench.main(argv + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


def test_tiny_run_reports_every_variant(bench, capsys):
    argv = ["--preset", "tiny", "--lr-size", "12x10", "--device", "cpu", "--precision", "fp32", "bf16",
            "--variants", "plain", "nchw", "cuda-graph", "--profile-top", "5", "--warmup", "1", "--repeat", "2"]
    assert bench.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["precision"], r["variant"]) for r in lines] == [
        (p, v) for p in ("fp32", "bf16") for v in ("plain", "nchw", "cuda-graph")]
    for record in lines:
        if record["variant"] == "cuda-graph":
            assert record["skipped"] == "CUDA graphs need a CUDA device"
        else:
            assert record["hr"] == "48x40" and record["median_ms"] > 0 and record["params"] == 14651
    profiled = [r for r in lines if "profile" in r]
    assert [r["variant"] for r in profiled] == ["plain", "plain"]  # the first variant of each precision
    names = [entry["name"] for entry in profiled[0]["profile"]["top"]]
    assert len(names) == 5 and profiled[0]["profile"]["operator_calls"] > 50
    assert any("conv" in name for name in names)
