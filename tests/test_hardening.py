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

from mgbp import inference, tiling
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
        tiling.run_model(NaNCornerGenerator(2), lr, tile=24, overlap=4)
    with pytest.raises(MgbpError, match="NaN"):
        inference.upscale(np.zeros((9, 9, 3), np.uint8), model=NaNCornerGenerator(2))


def test_reduced_precision_overflow_is_rerun_in_float32():
    lr = torch.rand(1, 3, 30, 34, generator=torch.Generator().manual_seed(1))
    model = HalfOverflowGenerator(2).half()
    with torch.inference_mode():
        assert not torch.isfinite(model(lr.half())).all()  # the stand-in really overflows in float16
    with pytest.warns(UserWarning, match="float32"):
        out = tiling.run_model(model, lr, tile=20, overlap=4)
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
    from mgbp.train_state import load_checkpoint

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
    assert upscale_cli(folder, "-o", tmp_path / "out", "-m", "tiny-test", "--suffix", "_x2", "--ext", "png") == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["x.png_x2.png", "x.tiff_x2.png", "x.webp_x2.png", "y_x2.png"]
    for name in ("x.png", "x.tiff", "x.webp"):  # each output is its own source through the model
        source = torch.from_numpy(np.asarray(Image.open(folder / name).convert("RGB")) / 255.0)
        with torch.no_grad():
            expected = tiny(source.permute(2, 0, 1)[None].float()).clamp(0, 1)[0].permute(1, 2, 0) * 255
        out = np.asarray(Image.open(tmp_path / "out" / f"{name}_x2.png")).astype(float)
        assert np.abs(out - expected.numpy()).max() <= 0.51
    assert "4 written" in capsys.readouterr().err
    # a rerun skips all four (none is missing), and says so truthfully
    assert upscale_cli(folder, "-o", tmp_path / "out", "-m", "tiny-test", "--suffix", "_x2", "--ext", "png") == 0
    assert "0 written, 4 skipped (exists), 0 failed" in capsys.readouterr().err


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
    assert "1 written, 0 skipped (exists), 0 failed" in capsys.readouterr().err


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


# ----------------------------------------------------------------------------- memory, animated images


def declared_huge_png(path: Path, side: int = 13000) -> Path:
    """A valid grey PNG of side x side zeros: about 0.5 MB on disk, 169 M pixels once decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, parts = zlib.compressobj(9), bytes(side + 1), []  # filter byte 0, then zeros
    for _ in range(side):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


def test_an_image_too_big_for_memory_is_refused_before_decoding_and_the_folder_goes_on(tmp_path, tiny, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    huge = declared_huge_png(folder / "huge.png")
    assert huge.stat().st_size < 2_000_000
    save_png(folder / "small.png")
    assert upscale_cli(folder, "-o", tmp_path / "out", "-m", "tiny-test", "--max-memory", "2") == 1
    err = capsys.readouterr().err
    assert "huge.png" in err and "--max-memory" in err and "GiB" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small.png"]
    assert "1 written, 0 skipped (exists), 1 failed" in err


def test_the_memory_estimate_lets_ordinary_images_through(tmp_path, tiny):
    source = save_png(tmp_path / "x.png", shape=(40, 50, 3))
    assert upscale_cli(source, "-o", tmp_path / "out.png", "-m", "tiny-test", "--max-memory", "0.5") == 0
    assert upscale_cli(source, "-o", tmp_path / "o.png", "-m", "tiny-test", "--max-memory", "0") == 2


def test_a_memory_error_fails_one_file_not_the_run(tmp_path, tiny, monkeypatch, capsys):
    from mgbp.commands import upscale as command

    real = command.upscale_image_file

    def short_of_memory(source, target, model, *args, **kwargs):
        if source.name == "a.png":
            raise MemoryError
        return real(source, target, model, *args, **kwargs)

    monkeypatch.setattr(command, "upscale_image_file", short_of_memory)
    for index, name in enumerate(("a.png", "b.png")):
        save_png(tmp_path / "in" / name, seed=index)
    assert upscale_cli(tmp_path / "in", "-o", tmp_path / "out", "-m", "tiny-test") == 1
    err = capsys.readouterr().err
    assert "a.png" in err and "memory" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.png"]


def test_an_animated_gif_warns_that_only_its_first_frame_is_upscaled(tmp_path, tiny, capsys):
    frames = [Image.fromarray(np.full((6, 8, 3), 60 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert upscale_cli(tmp_path / "anim.gif", "-o", tmp_path / "out.png", "-m", "tiny-test") == 0
    err = capsys.readouterr().err
    assert "anim.gif" in err and "3 frames" in err and "first" in err
    assert Image.open(tmp_path / "out.png").size == (16, 12)


@pytest.mark.parametrize(("avx512_bf16", "amx", "emulated"), [(False, False, True), (True, False, False),
                                                              (False, True, False)])
def test_bf16_without_avx512_bf16_or_amx_warns_that_it_is_emulated(tmp_path, tiny, monkeypatch, capsys,
                                                                  avx512_bf16, amx, emulated):
    """bfloat16 on a CPU that cannot compute in it natively is slower than float32: the user is told, once, and
    the run still happens (they asked for it)."""
    from mgbp.device import bf16_is_emulated

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert bf16_is_emulated("cpu") is emulated and bf16_is_emulated("meta") is False
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(tmp_path / "in.png")
    assert upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "-m", "tiny-test", "--bf16") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "emulated" in line]
    assert len(warnings) == (1 if emulated else 0)
    assert (tmp_path / "out.png").exists()
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert bf16_is_emulated("cpu") is False  # a torch without the probes: no claim


# ----------------------------------------------------------------------------- variable frame rate


def presentation_times(path: Path) -> tuple[list[float], list[float]]:
    """Seconds at which each decoded frame is shown, and each frame's mean level (frame i was made at
    (20 + 30 i) % 256, so the order of the frames can be checked)."""
    import av

    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        return ([float(f.pts * f.time_base) for f in frames],
                [float(f.to_ndarray(format="rgb24").mean()) for f in frames])


@pytest.mark.parametrize("times, time_base", [
    ((0, 1, 2, 3, 50, 57, 58), Fraction(1, 25)),  # a pause of two seconds
    ((0, 33, 70, 100, 1995, 2280, 2290, 2291), Fraction(1, 1000)),  # irregular, down to 1 ms apart
], ids=["pause", "irregular"])
def test_variable_frame_rate_keeps_every_presentation_time(tmp_path, times, time_base, monkeypatch):
    monkeypatch.setattr(inference, "resolve_model", lambda name, scale, **kw: NearestGenerator(2))
    clip = make_clip(tmp_path / "vfr.mp4", times=times, time_base=time_base)
    source_times, source_levels = presentation_times(clip)
    assert len(source_times) == len(times) and source_times == sorted(set(source_times))
    assert upscale_cli(clip, "-o", tmp_path / "out.mp4", "-m", "nearest") == 0
    out_times, out_levels = presentation_times(tmp_path / "out.mp4")
    assert len(out_times) == len(source_times)
    assert np.abs(np.array(out_times) - np.array(source_times)).max() < 1e-3
    assert np.abs(np.array(out_levels) - np.array(source_levels)).max() < 10  # the same frames (30 apart), in order


# ----------------------------------------------------------------------------- one-line errors: train, eval, devices


def tiny_train_config(tmp_path: Path, **extra) -> Path:
    """A config that would train the tiny preset for a few steps on two small images."""
    import yaml

    for index in range(2):
        save_png(tmp_path / "train" / f"t{index}.png", shape=(40, 44, 3), seed=index)
    config = {"model": {"preset": "tiny"}, "output_dir": str(tmp_path / "run"), "steps": 2, "device": "cpu",
              "cpu_threads": 1, "data": {"train": [str(tmp_path / "train")], "patch": 6, "batch": 2, "workers": 0},
              "val": {"folder": None}}
    for key, value in extra.items():
        config.setdefault(key, {}).update(value) if isinstance(value, dict) else config.update({key: value})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1e-4", "optim.lr"), ("optim.lr=.nan", "optim.lr"), ("val.every=0", "val.every"),
    ("optim.step_every=0", "optim.step_every"), ("data.patch=big", "data.patch"),
    ("data.workers=-1", "data.workers"), ("device=meta", "device meta"), ("optim.betas=[0.9]", "optim.betas"),
    ("loss.gan=-1", "loss.gan"), ("loss.texture_log_w1=abc", "loss.texture_log_w1"), ("loss.l1=abc", "loss.l1"),
    ("loss.texture_flat_w1=-2", "loss.texture_flat_w1"), ("loss.texture_flat_margin=abc", "loss.texture_flat_margin"),
])
def test_train_refuses_bad_values_in_one_line(tmp_path, override, key, capsys):
    assert main(["train", str(tiny_train_config(tmp_path)), override, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert key in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("device", ["meta", "cuda:7", "nonsense"])
def test_upscale_refuses_an_unusable_device_in_one_line(tmp_path, device, capsys):
    source = save_png(tmp_path / "x.png")
    weights = saved_tiny(tmp_path / "tiny.safetensors")
    assert upscale_cli(source, "-o", tmp_path / "out.png", "-m", weights, "--device", device) == 2
    err = capsys.readouterr().err
    assert f"--device {device}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


def test_eval_checks_its_output_files_before_the_evaluation(tmp_path, monkeypatch, capsys):
    from mgbp.commands import eval as eval_command

    ran = []
    monkeypatch.setattr(eval_command, "evaluate", lambda *a, **k: ran.append(1))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    for option in ("--json", "--csv", "--markdown"):
        assert main(["eval", "--quiet", option, str(blocker / "results.out")]) == 2
        err = capsys.readouterr().err
        assert option in err and len(err.strip().splitlines()) == 1
    assert ran == []  # refused before any work
    assert not list(tmp_path.glob(".mgbp-write-check-*"))


def test_resume_after_a_kill_logs_every_step_once(tmp_path, monkeypatch):
    """A run killed after its checkpoint at step 10 had logged steps 15 and 20; --resume runs them again and
    must not log them twice (train.csv, log.jsonl)."""
    import csv
    import json
    import shutil

    from mgbp import train

    config = tiny_train_config(tmp_path, steps=20, log_every=5, checkpoint_every=10)
    run_dir = tmp_path / "run"
    real_save = train.atomic_torch_save

    def save_and_keep_step_10(state, path):
        real_save(state, path)
        if state["step"] == 10:
            shutil.copy(path, tmp_path / "step10.pt")

    monkeypatch.setattr(train, "atomic_torch_save", save_and_keep_step_10)
    assert main(["train", str(config), "--quiet"]) == 0
    shutil.copy(tmp_path / "step10.pt", run_dir / "last.pt")  # as if killed after logging step 20
    assert main(["train", str(config), "--quiet", "--resume"]) == 0
    with (run_dir / "train.csv").open(newline="") as fh:
        steps = [int(row["step"]) for row in csv.DictReader(fh)]
    assert steps == [5, 10, 15, 20]
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [5, 10, 15, 20]


@pytest.mark.parametrize("device", ["meta", "nonsense"])
def test_api_refuses_an_unusable_device(device):
    with pytest.raises(MgbpError, match=f"device {device}"):
        inference.upscale(np.zeros((4, 4, 3), np.uint8), model=NearestGenerator(2), device=device)
