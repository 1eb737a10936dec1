"""The outputs users ask for (issue 16, section 3), each checked against an independent reference: Pillow
decoding the written file (and PyAV where Pillow cannot read 16 bits), PyAV probing a written video, the
network's own forward pass and a float64 MATLAB-bicubic resize for the expected pixels.

WebP (lossless, lossy) and TIFF (8, 16 bit), --quality, --ext; alpha into JPEG refused before any work;
--outscale and --size; video --preset, --encoder-option, --codec checked before any work, -q silencing the
encoder, --video-model for frame folders; reruns that never upscale their own outputs and skip existing ones;
`mgbp.upscale` on a read-only array without PyTorch's warning; `mgbp serve --device` checked.
"""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgbp import models
from mgbp.cli import main
from mgbp.commands.upscale import nearest_shipped_scale
from mgbp.errors import ConfigError
from mgbp.io import write_image
from mgbp.resize import imresize
from tiny_generators import NearestGenerator

REPO = Path(__file__).resolve().parents[1]


def upscale(*args, quiet=True) -> int:
    return main(["upscale", *(["-q"] if quiet else []), *map(str, args)])


def random_image(shape, seed=0, dtype=np.uint8):
    top = 255 if dtype == np.uint8 else 65535
    return np.random.default_rng(seed).integers(0, top + 1, shape, dtype=dtype)


def forward(network, pixels: np.ndarray) -> torch.Tensor:
    """The network on the whole float image (no tiling), clamped: (1, 3, fH, fW) float64."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        return network(x).clamp(0, 1).double()


def to_levels(planes: torch.Tensor, top: int = 255) -> np.ndarray:
    """(1, C, H, W) in [0, 1] -> HxWxC integers, rounded half up in float64 (MATLAB's uint8/uint16)."""
    return np.floor(planes[0].permute(1, 2, 0).numpy() * top + 0.5).astype(np.int64)


def pillow_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).astype(np.int64)


# --------------------------------------------------------------------------------------------- formats


def test_webp_lossless_by_default_and_lossy_with_a_quality(tmp_path, weights, network):
    rgb = random_image((10, 12, 3))
    Image.fromarray(rgb).save(tmp_path / "in.png")
    expected = to_levels(forward(network, rgb / 255.0))
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "lossless.webp", "-m", weights) == 0
    assert np.abs(pillow_pixels(tmp_path / "lossless.webp") - expected).max() <= 1
    errors, sizes = {}, {}
    for quality in (10, 90):
        target = tmp_path / f"q{quality}.webp"
        assert upscale(tmp_path / "in.png", "-o", target, "-m", weights, "--quality", quality) == 0
        with Image.open(target) as image:
            assert image.format == "WEBP" and image.size == (48, 40)
        errors[quality] = np.abs(pillow_pixels(target) - expected).mean()
        sizes[quality] = target.stat().st_size
    assert 1 < errors[90] < errors[10] and sizes[10] < sizes[90]  # lossy, and the quality reaches the encoder


def test_webp_keeps_alpha_and_stores_grey_as_rgb(tmp_path, weights, network):
    rgba = random_image((8, 9, 4), seed=1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "out.webp", "-m", weights) == 0
    out = pillow_pixels(tmp_path / "out.webp")
    alpha = imresize(torch.from_numpy(rgba[..., 3] / 255.0), scale=4).clamp(0, 1)
    assert out.shape == (32, 36, 4)
    assert np.abs(out[..., 3] - np.floor(alpha.numpy() * 255 + 0.5)).max() <= 1
    assert np.abs(out[..., :3] - to_levels(forward(network, rgba[..., :3] / 255.0))).max() <= 1
    grey = random_image((8, 9), seed=2)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    assert upscale(tmp_path / "grey.png", "-o", tmp_path / "grey.webp", "-m", weights) == 0
    out = pillow_pixels(tmp_path / "grey.webp")
    expected = forward(network, np.repeat(grey[..., None] / 255.0, 3, axis=2)).mean(dim=1, keepdim=True)
    assert out.shape == (32, 36, 3) and np.abs(out - to_levels(expected)).max() <= 1


def test_tiff_8_bit(tmp_path, weights, network):
    rgb = random_image((9, 10, 3), seed=3)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "out.tiff", "-m", weights) == 0
    with Image.open(tmp_path / "out.tiff") as image:
        assert image.format == "TIFF" and image.mode == "RGB"
    assert np.abs(pillow_pixels(tmp_path / "out.tiff") - to_levels(forward(network, rgb / 255.0))).max() <= 1


def test_tiff_16_bit_keeps_16_bits(tmp_path, weights, network):
    """A 16-bit PNG becomes a 16-bit TIFF: Pillow reads its high bytes, PyAV (FFmpeg's TIFF decoder) all 16 bits;
    grey stays grey."""
    deep = random_image((9, 11, 3), seed=4, dtype=np.uint16)
    write_image(tmp_path / "deep.png", deep, bit_depth=16)
    assert upscale(tmp_path / "deep.png", "-o", tmp_path / "out.tif", "-m", weights) == 0
    expected = to_levels(forward(network, deep / 65535.0), 65535)
    high = pillow_pixels(tmp_path / "out.tif")  # Pillow has no 16-bit RGB mode: the high byte of each sample
    assert high.shape == (36, 44, 3) and np.abs(high - (expected >> 8)).max() <= 1
    grey = random_image((7, 8), seed=5, dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")  # Pillow's I;16 PNG
    assert upscale(tmp_path / "grey16.png", "-o", tmp_path / "grey.tiff", "-m", weights) == 0
    with Image.open(tmp_path / "grey.tiff") as image:
        assert image.mode == "I;16"
        out = np.asarray(image).astype(np.int64)
    grey_expected = forward(network, np.repeat(grey[..., None] / 65535.0, 3, axis=2)).mean(dim=1, keepdim=True)
    assert np.abs(out - to_levels(grey_expected, 65535)[..., 0]).max() <= 1
    av = pytest.importorskip("av", reason="PyAV (optional: video support) is not installed")
    with av.open(str(tmp_path / "out.tif")) as container:
        frame = next(container.decode(video=0))
        full = frame.to_ndarray(format="rgb48le").astype(np.int64)
    assert np.abs(full - expected).max() <= 1


def test_jpeg_quality_is_the_encoders(tmp_path, weights, network):
    """--quality Q writes what Pillow's JPEG encoder writes at Q (the pixels decode alike, not like another
    quality's); default 95."""
    rgb = random_image((10, 10, 3), seed=6)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    expected = np.clip(to_levels(forward(network, rgb / 255.0)), 0, 255).astype(np.uint8)
    references = {}
    for quality in (95, 30):
        buffer = BytesIO()
        Image.fromarray(expected).save(buffer, format="JPEG", quality=quality)
        references[quality] = np.asarray(Image.open(buffer)).astype(np.int64)
    for quality, other, flags in ((95, 30, ()), (30, 95, ("--quality", 30))):
        target = tmp_path / f"q{quality}.jpg"
        assert upscale(tmp_path / "in.png", "-o", target, "-m", weights, *flags) == 0
        decoded = pillow_pixels(target)
        assert np.abs(decoded - references[quality]).mean() < 0.5
        assert np.abs(decoded - references[other]).mean() > 2


def test_auto_keeps_webp_and_tiff_inputs_as_they_are(tmp_path, weights):
    rgb = random_image((6, 7, 3), seed=7)
    for name in ("a.webp", "b.tiff", "c.tif", "d.bmp"):
        Image.fromarray(rgb).save(tmp_path / name)
    assert upscale(tmp_path / "a.webp", tmp_path / "b.tiff", tmp_path / "c.tif", tmp_path / "d.bmp",
                   "-o", tmp_path / "out", "-m", weights) == 0
    formats = {}
    for path in sorted((tmp_path / "out").iterdir()):
        with Image.open(path) as image:
            formats[path.name] = image.format
    assert formats == {"a.webp": "WEBP", "b.tiff": "TIFF", "c.tif": "TIFF", "d.png": "PNG"}


@pytest.mark.parametrize("flags, words", [
    (("--ext", "gif"), "--ext"),
    (("--quality", "0"), "--quality"),
    (("--quality", "101"), "--quality"),
    (("--ext", "png", "--quality", "80"), "lossless"),
    (("--outscale", "0"), "--outscale"),
    (("--outscale", "nan"), "--outscale"),
    (("--size", "12"), "WIDTHxHEIGHT"),
    (("--size", "0x10"), "--size"),
    (("--encoder-option", "crf"), "KEY=VALUE"),
])
def test_bad_output_options_are_one_line_and_nothing_is_written(tmp_path, weights, capsys, flags, words):
    Image.fromarray(random_image((5, 6, 3))).save(tmp_path / "in.png")
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "out", "-m", weights, *flags) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_alpha_into_jpeg_is_refused_before_any_work(tmp_path, weights, capsys):
    """A folder with one RGBA image and --ext jpg: the run ends before anything is upscaled or written."""
    (tmp_path / "in").mkdir()
    Image.fromarray(random_image((6, 6, 3))).save(tmp_path / "in" / "a.png")
    Image.fromarray(random_image((6, 6, 4), seed=1), "RGBA").save(tmp_path / "in" / "b.png")
    assert upscale(tmp_path / "in", "-o", tmp_path / "out", "-m", weights, "--ext", "jpg") == 2
    err = capsys.readouterr().err
    assert "b.png" in err and "alpha" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert upscale(tmp_path / "in", "-o", tmp_path / "out", "-m", weights, "--ext", "webp") == 0


def test_an_output_too_wide_for_webp_is_refused_before_any_work(tmp_path, weights, capsys):
    Image.fromarray(random_image((2, 4100, 3))).save(tmp_path / "strip.png")  # x4: 16400 > WebP's 16383
    assert upscale(tmp_path / "strip.png", "-o", tmp_path / "out", "-m", weights, "--ext", "webp") == 2
    err = capsys.readouterr().err
    assert "16400x8" in err and "16383" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="WEBP"):  # the writer itself refuses too, before writing
        write_image(tmp_path / "wide.webp", np.zeros((1, 16384, 3), np.uint8))
    assert not (tmp_path / "wide.webp").exists()


# --------------------------------------------------------------------------------------------- output size


def test_outscale_resizes_the_models_output_with_matlab_bicubic(tmp_path, weights, network, capsys):
    rgb = random_image((11, 9, 3), seed=8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    assert upscale(tmp_path / "photo.png", "-m", weights, "--outscale", 3.5, quiet=False) == 0
    assert "x4 model runs" in capsys.readouterr().err
    out = pillow_pixels(tmp_path / "photo_x3.5.png")
    size = (39, 32)  # round(3.5 * 11) = 38.5 -> 39, round(3.5 * 9) = 31.5 -> 32
    expected = to_levels(imresize(forward(network, rgb / 255.0), size=size).clamp(0, 1))
    assert out.shape == (*size, 3)
    assert np.abs(out - expected).max() <= 1 and np.mean(out == expected) > 0.99
    # the model's own scale: no resize at all, the same file as without --outscale
    assert upscale(tmp_path / "photo.png", "-o", tmp_path / "x4.png", "-m", weights, "--outscale", 4) == 0
    assert upscale(tmp_path / "photo.png", "-o", tmp_path / "plain.png", "-m", weights) == 0
    assert (tmp_path / "x4.png").read_bytes() == (tmp_path / "plain.png").read_bytes()


def test_outscale_runs_the_nearest_shipped_scale(tmp_path, capsys):
    from mgbp.models import SHIPPED

    scales = sorted({entry.scale for entry in SHIPPED.values() if not entry.video})
    for factor in (1.0, 2.9, 3.0, 5.9, 6.0, 11.0):
        by_hand = min(scales, key=lambda s: (abs(s - factor), -s))  # the nearest; a tie goes to the larger
        assert nearest_shipped_scale(factor) == by_hand
    if {2, 3, 4} <= set(scales):  # ties go to the larger model, whose output then shrinks
        assert nearest_shipped_scale(3.5) == 4 and nearest_shipped_scale(2.5) == 3
        assert nearest_shipped_scale(3.0) == 3 and nearest_shipped_scale(2.4) == 2
    Image.fromarray(random_image((6, 5, 3))).save(tmp_path / "in.png")
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "out.png", "--outscale", 2.5, quiet=False) == 0
    assert f"the x{nearest_shipped_scale(2.5)} model runs" in capsys.readouterr().err
    assert Image.open(tmp_path / "out.png").size == (13, 15)  # 2.5 * 5 = 12.5 -> 13, 2.5 * 6 = 15


def test_size_fits_inside_and_keeps_the_aspect(tmp_path, weights, network):
    rgb = random_image((5, 7, 3), seed=9)
    Image.fromarray(rgb).save(tmp_path / "wide.png")
    assert upscale(tmp_path / "wide.png", "-m", weights, "--size", "20x12") == 0
    out = pillow_pixels(tmp_path / "wide_20x12.png")
    size = (12, 17)  # min(20 / 7, 12 / 5) = 2.4: height 12 binds, width round(16.8) = 17
    expected = to_levels(imresize(forward(network, rgb / 255.0), size=size).clamp(0, 1))
    assert out.shape == (*size, 3) and np.abs(out - expected).max() <= 1


def test_size_and_outscale_refuse_videos_before_any_work(tmp_path, weights, capsys):
    av = pytest.importorskip("av", reason="PyAV (optional: video support) is not installed")
    clip = make_clip(av, tmp_path / "clip.mp4")
    assert upscale(clip, "-o", tmp_path / "out.mp4", "-m", weights, "--outscale", "3") == 2
    err = capsys.readouterr().err
    assert "videos" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out.mp4").exists()


# --------------------------------------------------------------------------------------------- video


def make_clip(av, path: Path, frames: int = 6, size=(16, 24)) -> Path:
    """One texture, a little brighter each frame (no scene cut for an encoder to see)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.height, stream.width, stream.pix_fmt = size[0], size[1], "yuv420p"
    texture = random_image((*size, 3), seed=11) // 2
    for index in range(frames):
        image = (texture + 2 * index).astype(np.uint8)
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode(None))
    container.close()
    return path


class CountingGenerator(NearestGenerator):
    """Nearest-neighbour x2 that counts its forward passes (none may run when a run is refused)."""

    calls = 0

    def forward(self, lr, noise_amp=0.0, noise=None):
        self.calls += 1
        return super().forward(lr, noise_amp, noise)


@pytest.fixture
def counting(monkeypatch):
    from mgbp import inference

    model = CountingGenerator(2).eval()
    real = inference.resolve_model
    monkeypatch.setattr(inference, "resolve_model",
                        lambda name, scale, **kw: model if name == "counting" else real(name, scale, **kw))
    return model


def keyframes(av, path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) if packet.is_keyframe and packet.size)


def test_preset_and_encoder_options_reach_the_encoder(tmp_path, counting):
    av = pytest.importorskip("av", reason="PyAV (optional: video support) is not installed")
    if "libx264" not in av.codecs_available:
        pytest.skip("PyAV build without libx264")
    clip = make_clip(av, tmp_path / "clip.mp4", frames=8)
    assert upscale(clip, "-o", tmp_path / "plain.mp4", "-m", "counting") == 0
    assert upscale(clip, "-o", tmp_path / "tuned.mp4", "-m", "counting", "--preset", "ultrafast",
                   "--encoder-option", "g=2", "--encoder-option", "bf=0") == 0
    assert keyframes(av, tmp_path / "plain.mp4") == 1  # x264's default GOP (250) holds all 8 frames
    assert keyframes(av, tmp_path / "tuned.mp4") == 4  # g=2: a keyframe every other frame
    # x264 records its settings in the stream: the ultrafast preset turns CABAC off
    assert b"cabac=1" in (tmp_path / "plain.mp4").read_bytes()
    assert b"cabac=0" in (tmp_path / "tuned.mp4").read_bytes()


def test_an_encoder_that_cannot_run_is_refused_before_any_work(tmp_path, counting, capsys):
    av = pytest.importorskip("av", reason="PyAV (optional: video support) is not installed")
    clip = make_clip(av, tmp_path / "clip.mp4")
    for flags in (("--codec", "no-such-encoder"), ("--codec", "aac"), ("--preset", "warp-speed")):
        if flags[-1] == "warp-speed" and "libx264" not in av.codecs_available:
            continue
        assert upscale(clip, "-o", tmp_path / "out.mp4", "-m", "counting", *flags) == 2
        err = capsys.readouterr().err
        assert "--codec" in err and len(err.strip().splitlines()) == 1
    assert counting.calls == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_hardware_encoder_runs_or_is_one_line_before_any_work(tmp_path, counting, capsys):
    """h264_nvenc: encodes where this build and machine have NVENC, else one line before the model runs."""
    av = pytest.importorskip("av", reason="PyAV (optional: video support) is not installed")
    clip = make_clip(av, tmp_path / "clip.mp4")
    code = upscale(clip, "-o", tmp_path / "out.mp4", "-m", "counting", "--codec", "h264_nvenc")
    err = capsys.readouterr().err
    if code == 2:
        assert "h264_nvenc" in err and len(err.strip().splitlines()) == 1
        assert counting.calls == 0 and not (tmp_path / "out.mp4").exists()
    else:
        assert code == 0
        with av.open(str(tmp_path / "out.mp4")) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.streams.video[0].frames == 6


def test_quiet_silences_the_encoders_own_log(tmp_path, counting, capfd):
    av = pytest.importorskip("av", reason="PyAV (optional: video support) is not installed")
    if "libx265" not in av.codecs_available:
        pytest.skip("PyAV build without libx265")
    clip = make_clip(av, tmp_path / "clip.mp4", size=(64, 96))  # x265 may corrupt its heap on tiny frames
    assert upscale(clip, "-o", tmp_path / "loud.mkv", "-m", "counting", "--codec", "libx265", quiet=False) == 0
    assert "x265 [info]" in capfd.readouterr().err  # x265 prints on its own unless told not to
    assert upscale(clip, "-o", tmp_path / "quiet.mkv", "-m", "counting", "--codec", "libx265") == 0
    err = capfd.readouterr().err
    assert "x265" not in err and err.strip().splitlines() == ["mgbp upscale: 1 written, 0 skipped (exists), 0 failed"]
    with av.open(str(tmp_path / "quiet.mkv")) as container:
        assert container.streams.video[0].codec_context.name == "hevc"


@pytest.fixture(scope="module")
def video_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny3d.safetensors"
    torch.manual_seed(0)
    models.save_model(models.build_model("tiny-3d", temporal_padding="none").eval(), path)
    return path


def test_a_frame_folder_can_choose_the_video_model(tmp_path, video_weights, capsys):
    """--video-model: a frame folder runs the 3D model (its output equals the 3D model's run through
    `mgbp.video`, and differs from the image model's, which is the default and is said)."""
    from mgbp.video import upscale_video
    from mgbp.video_options import VideoOptions

    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(6):
        Image.fromarray(random_image((12, 14, 3), seed=index)).save(frames / f"{index:04d}.png")
    assert upscale(frames, "-o", tmp_path / "by3d", "--to-frames", "--video-model", video_weights) == 0
    assert "image model" not in capsys.readouterr().err
    model = models.load_model(str(video_weights)).eval()
    upscale_video(frames, tmp_path / "reference", model, VideoOptions(seed=0, progress=False), to_frames=True)
    names = sorted(p.name for p in (tmp_path / "reference").iterdir())
    assert sorted(p.name for p in (tmp_path / "by3d").iterdir()) == names and len(names) == 6
    for name in names:
        assert np.array_equal(pillow_pixels(tmp_path / "by3d" / name), pillow_pixels(tmp_path / "reference" / name))
    assert upscale(frames, "-o", tmp_path / "by2d", "--to-frames", "-s", 2, quiet=False) == 0
    assert "frames upscaled one by one by the image model" in capsys.readouterr().err
    assert not np.array_equal(pillow_pixels(tmp_path / "by2d" / names[2]), pillow_pixels(tmp_path / "by3d" / names[2]))


def test_video_model_must_be_a_video_model_of_the_same_scale(tmp_path, weights, video_weights, capsys):
    Image.fromarray(random_image((5, 6, 3))).save(tmp_path / "in.png")
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "out", "--video-model", weights) == 2
    assert "image model" in capsys.readouterr().err
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "out", "-m", weights, "--video-model", video_weights) == 2
    err = capsys.readouterr().err
    assert "x2" in err and "x4" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "out", "--video-model", video_weights, "--ray") == 2
    assert "--ray" in capsys.readouterr().err and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------- reruns


def test_a_rerun_in_the_same_folder_skips_and_never_upscales_its_own_outputs(tmp_path, weights, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, name in enumerate(("a.png", "b.jpg")):
        Image.fromarray(random_image((5, 6, 3), seed=index)).save(photos / name)
    assert upscale(photos / "*", "-m", weights, quiet=False) == 0
    first = sorted(p.name for p in photos.iterdir())
    assert first == ["a.png", "a_x4.png", "b.jpg", "b_x4.jpg"]
    capsys.readouterr()
    assert upscale(photos / "*", "-m", weights, quiet=False) == 0  # the identical command again
    err = capsys.readouterr().err
    assert sorted(p.name for p in photos.iterdir()) == first  # no a_x4_x4.png
    assert "a_x4.png: skipped (exists)" in err and "b_x4.jpg: skipped (exists)" in err
    assert "0 written, 2 skipped (exists), 0 failed" in err
    # a folder written into itself (-o the same folder, a suffix) is the same
    assert upscale(photos, "-o", photos, "--suffix", "_big", "-m", weights) == 0
    assert upscale(photos, "-o", photos, "--suffix", "_big", "-m", weights) == 0
    assert not [p for p in photos.iterdir() if "_big_big" in p.name or "_x4_big" in p.name]


def test_our_marker_tells_an_earlier_output_whose_source_is_gone(tmp_path, weights):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(random_image((5, 6, 3))).save(photos / "a.png")
    Image.fromarray(random_image((5, 6, 3), seed=1)).save(photos / "holiday_x2.png")  # a user's own file
    assert upscale(photos / "a.png", "-m", weights) == 0
    (photos / "a.png").unlink()  # only our output is left of it
    with Image.open(photos / "a_x4.png") as image:
        assert image.info.get("Software") == "mgbp"  # the PNG tEXt chunk, as Pillow reads it
    assert upscale(photos / "*.png", "-m", weights) == 0
    assert sorted(p.name for p in photos.iterdir()) == ["a_x4.png", "holiday_x2.png", "holiday_x2_x4.png"]
    assert upscale(photos / "a_x4.png", "-m", weights) == 0  # named on the command line: upscaled
    assert (photos / "a_x4_x4.png").is_file()


# --------------------------------------------------------------------------------------------- Python API, serve


def test_read_only_arrays_upscale_without_pytorchs_warning(tmp_path):
    """np.asarray(Image.open(p)) is read-only; torch.from_numpy warns once per process on such arrays, so the
    check runs in a fresh interpreter with every warning an error."""
    write_image(tmp_path / "rgb.png", random_image((6, 7, 3)))
    write_image(tmp_path / "deep.png", random_image((6, 7, 3), dtype=np.uint16), bit_depth=16)
    Image.fromarray(random_image((6, 7))).save(tmp_path / "grey.png")
    script = f"""
import sys, warnings
warnings.simplefilter("error")
sys.path.insert(0, {str(REPO / "tests")!r})
import numpy as np
from PIL import Image
import mgbp
from mgbp.io import read_image, to_tensor
from tiny_generators import NearestGenerator
folder = {str(tmp_path)!r}
arrays = [np.asarray(Image.open(folder + "/rgb.png")), np.asarray(Image.open(folder + "/grey.png")),
          read_image(folder + "/deep.png").rgb]
arrays += [arrays[0].astype(np.float32) / 255, arrays[0].astype(np.uint16) * 257]
for array in arrays:
    array.flags.writeable = False
    out = mgbp.upscale(array, model=NearestGenerator(2))
    assert out.shape[:2] == (12, 14), out.shape
    to_tensor(array)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_serve_device_is_checked_before_the_server_starts(tmp_path):
    from mgbp.web.engine import Engine

    for device in ("meta", "not-a-device", "cuda:99"):
        with pytest.raises(ConfigError, match="--device"):
            Engine(device, tmp_path / "work")
    assert not (tmp_path / "work").exists()
    assert Engine("cpu", tmp_path / "ok").device == "cpu"


def test_serve_with_a_bad_device_is_one_line(capsys):
    pytest.importorskip("gradio", reason="gradio (optional: mgbp serve) is not installed")
    assert main(["serve", "--device", "meta", "--port", "7869"]) == 2
    err = capsys.readouterr().err
    assert "meta" in err and len(err.strip().splitlines()) == 1

