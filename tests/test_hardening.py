"""Hardening (issue 12, section 1): no data loss, no silent wrong results, one-line errors.

Each test reproduces a case a hostile or careless user found, and checks the safe outcome: nothing deleted
that mgbp did not write, bad values refused before any work, NaN/Inf never written as black pixels, every
input its own output, temporary files never left behind nor read as inputs.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgbp import inference
from mgbp.cli import main
from mgbp.errors import MgbpError
from tiny_generators import NearestGenerator, TinyGenerator


def upscale_cli(*args) -> int:
    return main(["upscale", "-q", *map(str, args)])


def save_png(path: Path, shape=(6, 7, 3), seed=0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def tiny(monkeypatch):
    """`-m tiny-test` gets the x2 stand-in generator (no weights needed)."""
    model = TinyGenerator(scale=2, seed=2).eval()
    real = inference.resolve_model
    monkeypatch.setattr(inference, "resolve_model",
                        lambda name, scale, **kw: model if name == "tiny-test" else real(name, scale, **kw))
    return model


def make_clip(path: Path, times=(0, 1, 2, 3, 4, 5), time_base=Fraction(1, 25), size=(16, 24)) -> Path:
    """A small mpeg4 clip whose frames are shown at `times` (in units of `time_base`): constant or variable
    frame rate. Frame i has a flat colour that encodes i, so frames can be told apart after decoding."""
    av = pytest.importorskip("av", reason="PyAV (optional: video support) is not installed")
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.height, stream.width, stream.pix_fmt = size[0], size[1], "yuv420p"
    stream.codec_context.time_base = time_base
    stream.time_base = time_base
    for index, pts in enumerate(times):
        image = np.full((*size, 3), 20 + 30 * index, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    return path


# ----------------------------------------------------------------------------- frame folders delete nothing


def test_frames_output_into_the_inputs_folder_is_refused_and_deletes_nothing(tmp_path, tiny, monkeypatch, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    clip = make_clip(folder / "clip.mp4")
    (folder / "notes.txt").write_text("mine")
    before = sorted(p.name for p in folder.iterdir())
    assert upscale_cli(clip, "-o", folder, "--to-frames", "--overwrite", "-m", "tiny-test") == 2
    err = capsys.readouterr().err
    assert "contain" in err and len(err.strip().splitlines()) == 1
    monkeypatch.chdir(folder)  # `-o .` from inside the folder
    assert upscale_cli("clip.mp4", "-o", ".", "--to-frames", "--overwrite", "-m", "tiny-test") == 2
    assert sorted(p.name for p in folder.iterdir()) == before
    assert (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temporary folder left beside it


def test_frames_output_into_a_folder_of_other_files_is_refused(tmp_path, tiny, capsys):
    clip = make_clip(tmp_path / "clip.mp4")
    target = tmp_path / "photos"
    save_png(target / "holiday.png")
    assert upscale_cli(clip, "-o", target, "--to-frames", "--overwrite", "-m", "tiny-test") == 2
    assert "holiday.png" in capsys.readouterr().err
    assert sorted(p.name for p in target.iterdir()) == ["holiday.png"]


def test_frames_output_replaces_only_the_frames_of_an_earlier_run(tmp_path, tiny):
    clip = make_clip(tmp_path / "clip.mp4")  # 6 frames
    target = tmp_path / "frames"
    for index in range(9):  # an earlier, longer run
        save_png(target / f"{index:08d}.png", seed=index)
    assert upscale_cli(clip, "-o", target, "--to-frames", "--overwrite", "-m", "tiny-test") == 0
    assert sorted(p.name for p in target.iterdir()) == [f"{i:08d}.png" for i in range(6)]
    assert Image.open(target / "00000000.png").size == (48, 32)  # the new frames, upscaled x2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "frames"]


def test_frame_folder_written_over_itself_is_refused(tmp_path, tiny):
    frames = tmp_path / "frames"
    for index in range(3):
        save_png(frames / f"{index:08d}.png", seed=index)
    before = {p.name: p.read_bytes() for p in frames.iterdir()}
    assert upscale_cli(frames, "-o", frames, "--to-frames", "--overwrite", "-m", "tiny-test") == 2
    assert {p.name: p.read_bytes() for p in frames.iterdir()} == before


# ----------------------------------------------------------------------------- noise amplitude W


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.5", "1.5"])
def test_noise_amplitude_outside_0_1_is_refused_before_any_work(tmp_path, tiny, value, capsys):
    source = save_png(tmp_path / "x.png")
    assert upscale_cli(source, "-o", tmp_path / "out.png", "-m", "tiny-test", f"--noise={value}") == 2
    err = capsys.readouterr().err
    assert "-W" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


def test_allow_extrapolation_permits_w_above_1_only(tmp_path, tiny):
    source = save_png(tmp_path / "x.png")
    assert upscale_cli(source, "-o", tmp_path / "a.png", "-m", "tiny-test", "-W", "1.5",
                       "--allow-extrapolation") == 0
    for value in ("nan", "inf", "-0.1"):
        assert upscale_cli(source, "-o", tmp_path / "b.png", "-m", "tiny-test", f"--noise={value}",
                           "--allow-extrapolation") == 2
    assert not (tmp_path / "b.png").exists()


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.1, 1.01])
def test_api_refuses_a_bad_noise_amplitude(value):
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(MgbpError, match="noise"):
        inference.upscale(image, model=NearestGenerator(2), noise=value)


def test_api_allows_extrapolation_when_asked():
    image = np.full((4, 4, 3), 100, np.uint8)
    out = inference.upscale(image, model=NearestGenerator(2), noise=2.0, allow_extrapolation=True)
    assert np.array_equal(out, np.full((8, 8, 3), 100, np.uint8))
