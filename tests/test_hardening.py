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
import torch
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
        image = np.full((*size, 3), (20 + 30 * index) % 256, np.uint8)
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
    save_png(tmp_path / ".frames.tmp-k3j4l5m6" / "00000000.png")  # and one that was killed
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


# ----------------------------------------------------------------------------- NaN / Inf in a model's output


class NaNCornerGenerator(NearestGenerator):
    """Nearest-neighbour upscaling whose first output pixel of every pass is NaN (as bad weights give)."""

    def forward(self, lr, noise_amp=0.0, noise=None):
        out = super().forward(lr, noise_amp, noise).clone()
        out[..., 0, 0] = math.nan
        return out


class HalfOverflowGenerator(NearestGenerator):
    """Nearest-neighbour upscaling through an activation of 512^2 times the pixel: exact in float32 (powers of
    two), but beyond float16's largest value (65504) for pixels above 0.25, which become inf (the fp16
    overflow of a GPU run, reproduced on the CPU)."""

    def __init__(self, scale: int = 2):
        super().__init__(scale)
        self.gain = torch.nn.Parameter(torch.tensor(512.0))

    def forward(self, lr, noise_amp=0.0, noise=None):
        activation = super().forward(lr, noise_amp, noise) * self.gain * self.gain
        return activation / self.gain / self.gain


def nearest_reference(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Independent nearest-neighbour upscale (numpy's repeat)."""
    array = lr.double().numpy().repeat(scale, axis=-2).repeat(scale, axis=-1)
    return torch.from_numpy(array)


def test_nan_in_one_tile_is_an_error_not_black_pixels():
    lr = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with pytest.raises(MgbpError, match="NaN"):
        inference.run_model(NaNCornerGenerator(2), lr, tile=24, overlap=4)
    with pytest.raises(MgbpError, match="NaN"):
        inference.upscale(np.zeros((9, 9, 3), np.uint8), model=NaNCornerGenerator(2))


def test_reduced_precision_overflow_is_rerun_in_float32():
    lr = torch.rand(1, 3, 30, 34, generator=torch.Generator().manual_seed(1))
    model = HalfOverflowGenerator(2).half()
    with torch.inference_mode():
        assert not torch.isfinite(model(lr.half())).all()  # the stand-in really overflows in float16
    with pytest.warns(UserWarning, match="float32"):
        out = inference.run_model(model, lr, tile=20, overlap=4)
    assert torch.equal(out.double(), nearest_reference(lr, 2))
    assert next(model.parameters()).dtype == torch.float16  # the caller's model is left as it was


def test_cli_fails_the_file_whose_output_has_nan(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inference, "resolve_model", lambda name, scale, **kw: NaNCornerGenerator(2))
    folder = tmp_path / "in"
    save_png(folder / "a.png")
    assert upscale_cli(folder, "-o", tmp_path / "out", "-m", "nan-test") == 1
    err = capsys.readouterr().err
    assert "a.png" in err and "NaN" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "a.png").exists()


def test_video_whose_output_has_nan_is_not_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inference, "resolve_model", lambda name, scale, **kw: NaNCornerGenerator(2))
    clip = make_clip(tmp_path / "clip.mp4")
    assert upscale_cli(clip, "-o", tmp_path / "out.mp4", "-m", "nan-test") == 1
    assert "NaN" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


# ----------------------------------------------------------------------------- weight files


def saved_tiny(path: Path, edit=None, config_edit=None) -> Path:
    """A tiny MGBPv2 weight file; `edit(state)` changes its tensors, `config_edit(config)` its metadata."""
    import json

    from safetensors.torch import save_file

    from mgbp.models import build_model
    from mgbp.models.weights import model_metadata

    torch.manual_seed(0)
    model = build_model("tiny")
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    metadata = model_metadata(model)
    if edit is not None:
        edit(state)
    if config_edit is not None:
        config = json.loads(metadata["config"])
        config_edit(config)
        metadata["config"] = json.dumps(config)
    save_file(state, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_weights_with_nan_or_inf_are_refused_at_load(tmp_path, bad, capsys):
    from mgbp.errors import WeightFileError
    from mgbp.models import load_model

    def poison(state):
        key = min(k for k in state if k.endswith("weight"))
        state[key].view(-1)[3] = bad

    path = saved_tiny(tmp_path / "bad.safetensors", edit=poison)
    with pytest.raises(WeightFileError, match="NaN/Inf"):
        load_model(path)
    save_png(tmp_path / "x.png")
    assert upscale_cli(tmp_path / "x.png", "-o", tmp_path / "out.png", "-m", path) == 2
    err = capsys.readouterr().err
    assert "NaN/Inf" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out.png").exists()


def test_metadata_claiming_huge_channels_is_refused_before_building(tmp_path):
    """[100000, 100000, 4] channels would need 360 GB: the file's shapes are checked first, on a weightless
    copy, so the error names the mismatch instead of an allocation failing."""
    from mgbp.errors import WeightFileError
    from mgbp.models import load_model

    def huge(config):
        config["channels"] = [100000, 100000, 4]

    path = saved_tiny(tmp_path / "huge.safetensors", config_edit=huge)
    with pytest.raises(WeightFileError, match="100000"):
        load_model(path)


def hostile_pickle(path: Path) -> Path:
    """A .pt file whose unpickling would call os.system (never run: torch.load(weights_only=True))."""
    import os
    import pickle

    class Exploit:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    torch.save({"generator": Exploit()}, path, pickle_module=pickle)
    return path


def test_unsafe_pickle_refusals_do_not_advise_unpickling(tmp_path):
    from mgbp.errors import WeightFileError
    from mgbp.models import load_model
    from mgbp.train import load_checkpoint

    path = hostile_pickle(tmp_path / "hostile.pt")
    for load in (load_model, load_checkpoint):
        with pytest.raises(WeightFileError) as info:
            load(path)
        message = str(info.value)
        assert "weights_only" not in message and "posix.system" in message  # the reason, not torch's advice
        assert "\n" not in message and message.count(str(path)) == 1


def test_a_corrupt_checkpoint_on_resume_names_its_path_once(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {run_dir}\nmodel: {{preset: tiny}}\ndevice: cpu\n")
    code = main(["train", str(config), "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.count(str(run_dir / "last.pt")) == 1


# ----------------------------------------------------------------------------- output names, folders, temporaries


def test_inputs_differing_only_in_extension_each_get_their_own_output(tmp_path, tiny, capsys):
    folder = tmp_path / "in"
    for index, name in enumerate(("x.png", "x.tiff", "x.webp")):
        save_png(folder / name, seed=index)
    save_png(folder / "y.png", seed=9)
    assert upscale_cli(folder, "-o", tmp_path / "out", "-m", "tiny-test", "--suffix", "_x2") == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["x.png_x2.png", "x.tiff_x2.png", "x.webp_x2.png", "y_x2.png"]
    for name in ("x.png", "x.tiff", "x.webp"):  # each output is its own source through the model
        source = torch.from_numpy(np.asarray(Image.open(folder / name).convert("RGB")) / 255.0)
        with torch.no_grad():
            expected = tiny(source.permute(2, 0, 1)[None].float()).clamp(0, 1)[0].permute(1, 2, 0) * 255
        out = np.asarray(Image.open(tmp_path / "out" / f"{name}_x2.png")).astype(float)
        assert np.abs(out - expected.numpy()).max() <= 0.51
    assert "4 written" in capsys.readouterr().err
    # a rerun with --skip-existing skips all four (none is missing), and says so truthfully
    assert upscale_cli(folder, "-o", tmp_path / "out", "-m", "tiny-test", "--suffix", "_x2",
                       "--skip-existing") == 0
    assert "0 written, 4 skipped" in capsys.readouterr().err


def test_beside_the_inputs_collisions_are_kept_apart_too(tmp_path, tiny):
    for index, name in enumerate(("x.png", "x.bmp", "x.jpg")):
        save_png(tmp_path / name, seed=index)
    assert upscale_cli(tmp_path / "x.png", tmp_path / "x.bmp", tmp_path / "x.jpg", "-m", "tiny-test") == 0
    assert (tmp_path / "x.png_x2.png").is_file() and (tmp_path / "x.bmp_x2.png").is_file()
    assert (tmp_path / "x_x2.jpg").is_file()  # no collision (JPEG stays JPEG): its usual name


def test_same_name_from_two_folders_into_one_output_is_refused_before_any_work(tmp_path, tiny, capsys):
    save_png(tmp_path / "a" / "x.png")
    save_png(tmp_path / "b" / "x.png", seed=1)
    assert upscale_cli(tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", "-o", tmp_path / "out",
                       "-m", "tiny-test") == 2
    err = capsys.readouterr().err
    assert "same output" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_empty_input_folder_is_an_error(tmp_path, tiny, capsys):
    (tmp_path / "empty").mkdir()
    assert upscale_cli(tmp_path / "empty", "-o", tmp_path / "out", "-m", "tiny-test") == 1
    err = capsys.readouterr().err
    assert "empty" in err and "no images" in err and len(err.strip().splitlines()) == 1


def test_hidden_files_are_not_inputs_and_stale_temporaries_are_removed(tmp_path, tiny, capsys):
    folder = tmp_path / "in"
    save_png(folder / "a.png")
    save_png(folder / ".a.tmp-k2j4h5l6.png", seed=1)  # what a killed earlier run left beside its output
    save_png(folder / ".hidden" / "b.png", seed=2)
    out = tmp_path / "out"
    save_png(out / ".a.tmp-x8y7z6w5.png", seed=3)  # a killed run's temporary output
    (out / ".keep").write_text("not ours")
    assert upscale_cli(folder, "-o", out, "-m", "tiny-test") == 0
    assert sorted(p.name for p in out.iterdir()) == [".keep", "a.png"]
    assert "1 written, 0 skipped (existing), 0 failed" in capsys.readouterr().err


def test_sigterm_is_handled_like_ctrl_c(tmp_path, monkeypatch):
    """A scheduler's SIGTERM during a video ends the run as Ctrl-C does: exit 130, the temporary output gone."""
    import os
    import signal

    received = []

    def test_handler(*_):
        received.append("test")

    previous = signal.signal(signal.SIGTERM, test_handler)  # never the default action (kill pytest)
    try:
        class Terminated(TinyGenerator):
            calls = 0

            def forward(self, lr, noise_amp=0.0, noise=None):
                Terminated.calls += 1
                if Terminated.calls == 3:
                    os.kill(os.getpid(), signal.SIGTERM)
                return super().forward(lr, noise_amp, noise)

        model = Terminated(scale=2).eval()
        monkeypatch.setattr(inference, "resolve_model", lambda name, scale, **kw: model)
        clip = make_clip(tmp_path / "clip.mp4", times=tuple(range(12)))
        assert upscale_cli(clip, "-o", tmp_path / "out.mp4", "-m", "stand-in") == 130
        assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
        assert received == []  # the run's own handler got it, and put the test's back afterwards
        assert signal.getsignal(signal.SIGTERM) is test_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_hidden_files_in_a_frame_folder_are_not_frames(tmp_path, tiny):
    frames = tmp_path / "frames"
    for index in range(3):
        save_png(frames / f"{index:08d}.png", seed=index)
    save_png(frames / ".00000003.tmp-a1b2c3d4.png", shape=(9, 9, 3))  # another size: would fail the clip
    assert upscale_cli(frames, "-o", tmp_path / "big", "--to-frames", "-m", "tiny-test") == 0
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == [f"{i:08d}.png" for i in range(3)]


# ----------------------------------------------------------------------------- Python API: float pixels


@pytest.mark.parametrize("pixels", [
    np.full((5, 5, 3), 200.0),  # 0..255 data in a float64 array: would be clamped to white
    np.full((5, 5, 3), -0.25, np.float32),
    np.array([[[0.5, math.nan, 0.5]]], np.float32).repeat(4, 0).repeat(4, 1),  # NaN would spread
    np.array([[[0.5, math.inf, 0.5]]], np.float32).repeat(4, 0).repeat(4, 1),
])
def test_api_refuses_floats_outside_0_1_or_not_finite(pixels):
    with pytest.raises(MgbpError, match=r"\[0, 1\]"):
        inference.upscale(pixels, model=NearestGenerator(2))
    with pytest.raises(MgbpError, match=r"\[0, 1\]"):
        inference.upscale(torch.from_numpy(pixels).permute(2, 0, 1), model=NearestGenerator(2))


def test_api_float_in_0_1_is_upscaled():
    pixels = np.random.default_rng(0).random((5, 6, 3))
    out = inference.upscale(pixels, model=NearestGenerator(2))
    assert out.dtype == np.float64 and np.abs(out - pixels.repeat(2, 0).repeat(2, 1)).max() < 1e-6


def test_pil_float_image_in_0_1_comes_back_as_float_not_black():
    values = np.random.default_rng(1).random((5, 6)).astype(np.float32)
    out = inference.upscale(Image.fromarray(values, mode="F"), model=NearestGenerator(2))
    assert out.mode == "F" and out.size == (12, 10)
    assert np.abs(np.asarray(out) - values.repeat(2, 0).repeat(2, 1)).max() < 1e-6


def test_pil_float_image_outside_0_1_is_refused():
    values = np.full((5, 6), 128.0, np.float32)  # a 0..255 float image
    with pytest.raises(MgbpError, match=r"\[0, 1\]"):
        inference.upscale(Image.fromarray(values, mode="F"), model=NearestGenerator(2))
