"""benchmarks/bench_speed.py: bad options are one line (exit 2), the peers are the published sizes, and a tiny
run writes its JSON and Markdown. The peers' parameter counts are checked against the figures published with
them (../shared/reference/anchors.md: SRVGGNetCompact 1.21 M, EDSR-baseline 1.52 M)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_speed"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_speed", None)


@pytest.mark.parametrize("argv, words", [
    (["--presets", "mgbpv2-x5"], "unknown preset 'mgbpv2-x5'"),
    (["--models", "nope"], "unknown shipped model 'nope'"),
    (["--only", "a,z"], "unknown section 'z'"),
    (["--size-a", "96"], "--size-a must be WIDTHxHEIGHT"),
    (["--size-e", "0x10"], "--size-e must be WIDTHxHEIGHT"),
    (["--size-c", "big"], "--size-c must be an integer"),
    (["--tiles", "64,x"], "--tiles must be"),
    (["--rounds", "0"], "--rounds must be >= 1"),
])
def test_bad_options_are_one_line(bench, capsys, argv, words):
    assert bench.main(argv + ["--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench_speed: ") and words in err and "\n" not in err


def test_peers_have_their_published_sizes(bench):
    def count(model):
        return sum(p.numel() for p in model.parameters())

    assert abs(count(bench.SRVGGNetCompact(4)) - 1.21e6) < 0.01e6
    assert abs(count(bench.EDSRBaseline(4)) - 1.52e6) < 0.01e6
    for scale in (2, 3, 4, 8):
        x = torch.rand(1, 3, 6, 5)
        for cls in bench.PEERS.values():
            with torch.no_grad():
                assert cls(scale)(x).shape == (1, 3, 6 * scale, 5 * scale)


def test_a_tiny_run_writes_json_and_markdown(bench, tmp_path):
    out = tmp_path / "bench"
    assert bench.main(["--only", "c", "--models", "mgbp-x4", "--size-c", "32", "--rounds", "1", "--quiet",
                       "--out", str(out)]) == 0
    result = json.loads((out / "bench_speed.json").read_text())
    names = [item["name"] for item in result["items"]]
    assert "mgbp `mgbp-x4`" in names and "SPAN x4" in names and "EDSR-baseline x4" in names
    assert all(item["median_s"] > 0 for item in result["items"])
    assert any(r["other"] == "SPAN x4" for r in result["ratios"])
    markdown = (out / "bench_speed.md").read_text()
    assert "Machine:" in markdown and "| mgbp `mgbp-x4` |" in markdown


def test_section_g_times_the_model_free_pieces(bench, tmp_path):
    out = tmp_path / "bench"
    assert bench.main(["--only", "g", "--quick", "--rounds", "1", "--quiet", "--out", str(out)]) == 0
    result = json.loads((out / "bench_speed.json").read_text())
    names = [item["name"] for item in result["items"]]
    assert len(names) == 4 and any("noise mask" in n for n in names) and any("projection" in n for n in names)
    assert all(item["median_s"] > 0 for item in result["items"])
    assert "**g." in (out / "bench_speed.md").read_text()
