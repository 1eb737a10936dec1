"""Streaming video upscaling (`mgbp.video`): temporal overlap-add, containers, audio, frame folders, atomicity."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgbp import inference, models
from mgbp.cli import main
from mgbp.video import ColourDescription, apply_rotation, upscale_video
from mgbp.video_options import VideoOptions
from mgbp.video_windows import overlap_add_stream
from tiny_generators import NearestGenerator, TinyGenerator

av = pytest.importorskip("av")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BUNNY = SHARED / "data" / "video" / "bigbuckbunny.mp4"


# ------------------------------------------------------------------------------------ temporal overlap-add


def reference_overlap_add(values, length, stride, consumed):
    """Direct re-computation: list every window of the padded sequence, average with sin^2 weights.

    Window j (starting at padded frame a) outputs clip[consumed + k] + 1000 j for k < length - 2 consumed.
    The last window is moved back to end on the last frame; it only adds to frames that no regular window
    before it could still reach (frames at or after the start of the would-be next regular window).
    """
    padded = [values[0]] * consumed + list(values) + [values[-1]] * consumed
    total = len(padded)
    starts = list(range(0, total - length + 1, stride))
    tail_from = (starts[-1] + stride + consumed) if starts else 0
    tail = max(0, total - length) if not starts or starts[-1] + length < total else None
    produced = length - 2 * consumed
    weights = np.sin(np.pi * (np.arange(produced) + 0.5) / produced) ** 2
    sums, norms = np.zeros(total), np.zeros(total)
    windows = [(a, j, 0) for j, a in enumerate(starts)]
    if tail is not None:
        windows.append((tail, len(starts), tail_from))
    for a, j, first_allowed in windows:
        clip = (padded[a:a + length] + [padded[-1]] * length)[:length]
        for k in range(produced):
            index = a + consumed + k
            if index < total and index >= first_allowed:
                sums[index] += weights[k] * (clip[consumed + k] + 1000 * j)
                norms[index] += weights[k]
    return sums[consumed:total - consumed] / norms[consumed:total - consumed]


@pytest.mark.parametrize(("count", "length", "stride", "consumed"),
                         [(12, 5, 2, 0), (3, 5, 2, 0), (11, 4, 4, 0), (13, 7, 3, 1), (2, 7, 3, 1), (6, 1, 1, 0),
                          (20, 9, 5, 2)])
def test_overlap_add_matches_a_direct_loop(count, length, stride, consumed):
    values = [float(v) for v in np.random.default_rng(count).random(count)]
    calls = []

    def run_window(clip):
        assert clip.shape[0] == length
        calls.append(clip)
        return clip[consumed:length - consumed] + 1000 * (len(calls) - 1)

    frames = (torch.full((3, 1, 1), v, dtype=torch.float64) for v in values)
    out = [f[0, 0, 0].item() for f in overlap_add_stream(frames, run_window, length, stride, consumed)]
    assert np.allclose(out, reference_overlap_add(values, length, stride, consumed), atol=1e-9)


def test_overlap_add_is_an_average_and_streams():
    """Same output from every window -> the input comes back exactly; frames leave before the stream ends."""
    seen, emitted_at = [], []

    def frames():
        for i in range(30):
            seen.append(i)
            yield torch.full((1, 1, 1), float(i))

    out = []
    for frame in overlap_add_stream(frames(), lambda clip: clip, length=8, stride=5):
        out.append(frame.item())
        emitted_at.append(len(seen))
    assert np.allclose(out, np.arange(30), rtol=0, atol=1e-5)
    assert emitted_at[0] == 8  # the first frame is out after one window, not after the whole video


# ------------------------------------------------------------------------------------ real containers


def make_clip(path, frames=10, fps=25, size=(32, 48), audio=True, codec="mpeg4"):
    """A small moving-gradient clip with a 440 Hz sine on AAC, made with PyAV."""
    container = av.open(str(path), "w")
    video = container.add_stream(codec, rate=fps)
    video.height, video.width, video.pix_fmt = size[0], size[1], "yuv420p"
    sound = container.add_stream("aac", rate=48000) if audio else None
    if sound is not None:
        sound.layout = "mono"
    for i in range(frames):
        image = np.zeros((*size, 3), np.uint8)
        image[..., 0] = (np.arange(size[1]) * 5 + 12 * i) % 256
        image[..., 1] = (np.arange(size[0])[:, None] * 6) % 256
        image[..., 2] = 40 + 15 * i
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    if sound is not None:
        samples = int(48000 * frames / fps)
        wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)[None]
        for start in range(0, samples, 1024):
            chunk = av.AudioFrame.from_ndarray(wave[:, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, start
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    container.close()
    return path


def describe(path):
    """Frame count (decoded), frame rate, size, audio duration in seconds (None without audio)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        rate, size = video.average_rate, (video.codec_context.height, video.codec_context.width)
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_seconds = float(audio.duration * audio.time_base) if audio is not None else None
        colour = ColourDescription.of_stream(video.codec_context)  # as a player that honours the tags
        frames = [colour.convert(f, "rgb24", to_rgb=True).to_ndarray() for f in container.decode(video=0)]
    return frames, rate, size, audio_seconds


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "clip.mp4")


@pytest.fixture
def tiny(monkeypatch):
    """`mgbp upscale -m tiny-test` gets the x2 stand-in generator (no weights needed)."""
    model = TinyGenerator(scale=2, seed=2).eval()
    real = inference.resolve_model
    monkeypatch.setattr(inference, "resolve_model",
                        lambda name, scale, **kw: model if name == "tiny-test" else real(name, scale, **kw))
    return model


def test_clip_with_audio_keeps_frames_rate_and_sound(clip, tmp_path, tiny):
    target = tmp_path / "out" / "clip_x2.mp4"
    assert main(["upscale", "-q", str(clip), "-o", str(target), "-m", "tiny-test"]) == 0
    source_frames, rate, size, audio = describe(clip)
    frames, out_rate, out_size, out_audio = describe(target)
    assert len(frames) == len(source_frames) == 10 and out_rate == rate == 25
    assert out_size == (2 * size[0], 2 * size[1])
    assert out_audio is not None and abs(out_audio - audio) <= 1 / 25
    # frame i of the output is the model applied to frame i of the input (codec loss aside), in order
    errors = np.zeros((3, 3))
    for i in range(3):
        x = torch.from_numpy(source_frames[i + 3]).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            expected = (tiny(x).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255)
        for j in range(3):
            errors[i, j] = np.abs(frames[j + 3].astype(float) - expected).mean()
    assert np.all(np.diag(errors) < 4) and np.all(np.diag(errors) <= errors.min(axis=1))
    assert not list(target.parent.glob("*.tmp*"))


def test_max_frames_cuts_audio_with_the_video(clip, tmp_path, tiny):
    target = tmp_path / "cut.mov"
    assert main(["upscale", "-q", str(clip), "-o", str(target), "-m", "tiny-test", "--max-frames", "6"]) == 0
    frames, rate, _, audio = describe(target)
    assert len(frames) == 6 and rate == 25
    assert audio is not None and abs(audio - 6 / 25) <= 1 / 25


def test_video_model_windows(clip, tmp_path):
    """A 3D model (window 4, stride 2) on a 10-frame clip: frame count, rate and audio kept."""
    model = TinyGenerator(scale=2, clip_length=4).eval()
    target = upscale_video(clip, tmp_path / "v.mp4", model, VideoOptions(stride=2, progress=False))
    frames, rate, size, audio = describe(target)
    assert len(frames) == 10 and rate == 25 and size == (64, 96) and abs(audio - 0.4) <= 1 / 25


def test_frame_folders_in_and_out(clip, tmp_path, tiny):
    folder = tmp_path / "frames"
    assert main(["upscale", "-q", str(clip), "-o", str(folder), "-m", "tiny-test", "--to-frames"]) == 0
    written = sorted(folder.glob("*.png"))
    assert len(written) == 10
    back = tmp_path / "from_frames.mp4"
    assert main(["upscale", "-q", str(folder), "-o", str(back), "-m", "tiny-test", "--fps", "10"]) == 0
    frames, rate, size, audio = describe(back)
    assert len(frames) == 10 and rate == 10 and size == (128, 192) and audio is None


def test_interrupted_run_leaves_no_output(clip, tmp_path):
    class Interrupted(TinyGenerator):
        calls = 0

        def forward(self, lr, noise_amp=0.0, noise=None):
            Interrupted.calls += 1
            if Interrupted.calls == 4:
                raise KeyboardInterrupt
            return super().forward(lr, noise_amp, noise)

    target = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        upscale_video(clip, target, Interrupted().eval(), VideoOptions(progress=False))
    assert list(tmp_path.iterdir()) == [clip]


def test_bad_video_is_one_line(tmp_path, tiny, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real movie")
    assert main(["upscale", "-q", str(broken), "-o", str(tmp_path / "o.mp4"), "-m", "tiny-test"]) == 1
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "Traceback" not in err and not (tmp_path / "o.mp4").exists()


def test_rotation_turns_frames_upright():
    frame = np.arange(6).reshape(2, 3)[..., None]
    # display matrix "rotate 90 degrees counterclockwise": the top row becomes the left column, read upward
    assert apply_rotation(frame, 90)[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    assert apply_rotation(frame, -90)[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert apply_rotation(frame, 0) is frame


@pytest.mark.skipif(not BUNNY.is_file(), reason=f"../shared is absent: no {BUNNY}")
def test_big_buck_bunny_first_frames(tmp_path):
    """Real H.264 + AAC, 1280x720 at 25 fps: 5 frames through a nearest-neighbour x2 stand-in."""
    target = upscale_video(BUNNY, tmp_path / "bunny_x2.mp4", NearestGenerator(scale=2),
                           VideoOptions(max_frames=5, progress=False))
    frames, rate, size, audio = describe(target)
    with av.open(str(BUNNY)) as source:
        source_rate = source.streams.video[0].average_rate
    assert len(frames) == 5 and rate == source_rate == Fraction(25) and size == (1440, 2560)
    assert audio is not None and abs(audio - 5 / 25) <= 1 / 25


def test_rotation_metadata_is_applied_to_the_pixels(tmp_path):
    """A clip whose display matrix says 'rotate 90 degrees counterclockwise' comes out upright, unrotated."""
    container = av.open(str(tmp_path / "turned.mp4"), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
    stream.set_display_rotation(90)
    for i in range(3):
        image = np.zeros((32, 48, 3), np.uint8)
        image[:8, :8] = 255  # a marker in the stored frame's top-left corner
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    target = upscale_video(tmp_path / "turned.mp4", tmp_path / "upright.mp4", NearestGenerator(scale=2),
                           VideoOptions(progress=False))
    with av.open(str(target)) as result:
        frame = next(result.decode(video=0))
        assert frame.rotation == 0
        pixels = frame.to_ndarray(format="rgb24")[..., 0]
    assert pixels.shape == (96, 64)  # portrait now
    rows, cols = np.nonzero(pixels > 128)
    # turned 90 degrees counterclockwise, the top-left corner lands bottom-left
    assert rows.min() >= 96 - 18 and cols.max() < 18


def test_real_mgbp3d_on_a_clip(tmp_path):
    """The MGBP-3D of the model issue (tiny-3d preset, untrained) through the whole pipeline."""
    model = models.build_model("tiny-3d").eval()
    source = make_clip(tmp_path / "c.mp4", frames=7, size=(16, 24))
    target = upscale_video(source, tmp_path / "c3d.mp4", model, VideoOptions(window=4, stride=2, progress=False))
    frames, rate, size, audio = describe(target)
    assert len(frames) == 7 and rate == 25 and size == (32, 48) and abs(audio - 7 / 25) <= 1 / 25


def test_a_saved_3d_models_clip_length_sets_the_window(tmp_path):
    """config.frames survives save/load and becomes the temporal window; the trainer records data.frames."""
    from mgbp.train import build_generator
    from mgbp.video_windows import model_clip_length

    trained = build_generator({"preset": "tiny-3d", "overrides": {}}, frames=6)
    assert trained.config.frames == 6
    assert build_generator({"preset": "tiny", "overrides": {}}, frames=6).config.frames is None  # 2D: no clip
    loaded = models.load_model(models.save_model(trained.eval(), tmp_path / "m.safetensors"))
    assert model_clip_length(loaded) == 6
    windows = []
    forward = loaded.forward
    loaded.forward = lambda lr, *args, **kwargs: windows.append(lr.shape[2]) or forward(lr, *args, **kwargs)
    source = make_clip(tmp_path / "c.mp4", frames=9, size=(16, 24))
    target = upscale_video(source, tmp_path / "out.mp4", loaded, VideoOptions(stride=3, progress=False))
    assert windows and set(windows) == {6} and len(describe(target)[0]) == 9


def test_seeded_noise_reproduces_a_video(tmp_path):
    """W > 0 with a seed: the same frames twice; another seed, other frames (MGBP-3D with a strong residual)."""
    from PIL import Image

    torch.manual_seed(0)
    model = models.build_model("tiny-3d", frames=4).eval()
    with torch.no_grad():
        model.synthesis.weight.mul_(100.0)
    source = make_clip(tmp_path / "c.mp4", frames=6, size=(16, 24), audio=False)

    def frames(name, seed):
        folder = upscale_video(source, tmp_path / name, model, VideoOptions(stride=2, noise=0.7, seed=seed,
                                                                             progress=False), to_frames=True)
        return np.stack([np.asarray(Image.open(p)) for p in sorted(Path(folder).iterdir())]).astype(int)

    first = frames("a", 3)
    assert first.shape[0] == 6 and np.array_equal(first, frames("b", 3))
    assert np.abs(frames("c", 4) - first).max() > 5


# ------------------------------------------------------------------------------------ colour and subtitles


def test_untagged_streams_get_what_players_assume():
    from types import SimpleNamespace

    def context(height, pix_fmt="yuv420p", colorspace=2, color_range=0):
        return SimpleNamespace(height=height, pix_fmt=pix_fmt, colorspace=colorspace, color_range=color_range,
                               color_primaries=2, color_trc=2)

    assert (ColourDescription.of_stream(context(576)).matrix, ColourDescription.of_stream(context(576)).range) == (6, 1)
    assert ColourDescription.of_stream(context(720)).matrix == 1
    assert ColourDescription.of_stream(context(360, pix_fmt="yuvj420p")).range == 2
    assert ColourDescription.of_stream(context(360, colorspace=9, color_range=2)).matrix == 9  # BT.2020 kept


BT709_FULL_BLOCKS = [(81, 90, 240), (145, 54, 34), (41, 240, 110), (210, 16, 146)]  # (Y, U, V), full range


def bt709_full_to_rgb(y, u, v):
    """Float64 BT.709 full-range YUV -> RGB (ITU-R BT.709 coefficients Kr = 0.2126, Kb = 0.0722)."""
    y, u, v = (np.asarray(c, np.float64) for c in (y, u, v))
    r = y + 1.5748 * (v - 128)
    g = y - 0.187324 * (u - 128) - 0.468124 * (v - 128)
    b = y + 1.8556 * (u - 128)
    return np.stack([r, g, b], -1).clip(0, 255)


def yuv_planes(frame):
    """(Y, U, V) planes of a decoded yuv420p frame, as numpy arrays."""
    height = frame.height
    packed = frame.to_ndarray()  # yuv420p: Y rows, then U and V rows of half width
    y = packed[:height]
    chroma = packed[height:].reshape(2, height // 2, frame.width // 2)
    return y, chroma[0], chroma[1]


def make_tagged_clip(path, frames=3):
    """A lossless x264 clip of four flat 16x16 blocks given in YUV, tagged BT.709 full range."""
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=25)
    video.height, video.width, video.pix_fmt = 32, 32, "yuv420p"
    video.options = {"qp": "0"}
    context = video.codec_context
    context.colorspace, context.color_range, context.color_primaries, context.color_trc = 1, 2, 1, 1
    planes = [np.zeros((32, 32), np.uint8), np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)]
    for k, (y, u, v) in enumerate(BT709_FULL_BLOCKS):
        row, col = divmod(k, 2)
        planes[0][16 * row:16 * row + 16, 16 * col:16 * col + 16] = y
        planes[1][8 * row:8 * row + 8, 8 * col:8 * col + 8] = u
        planes[2][8 * row:8 * row + 8, 8 * col:8 * col + 8] = v
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.concatenate([planes[0], planes[1].reshape(8, 32),
                                                           planes[2].reshape(8, 32)]), format="yuv420p")
        frame.color_range, frame.pts = 2, i
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    container.close()
    expected = np.zeros((32, 32, 3))
    for k, yuv in enumerate(BT709_FULL_BLOCKS):
        row, col = divmod(k, 2)
        expected[16 * row:16 * row + 16, 16 * col:16 * col + 16] = bt709_full_to_rgb(*yuv)
    return expected


def block_interiors(image, block, margin):
    mask = np.zeros(image.shape[:2], bool)
    for row in range(0, image.shape[0], block):
        for col in range(0, image.shape[1], block):
            mask[row + margin:row + block - margin, col + margin:col + block - margin] = True
    return image[mask]


def test_colours_of_a_tagged_full_range_clip_do_not_shift(tmp_path, monkeypatch):
    """BT.709 full range in: decoded with that matrix and range, re-encoded with them and tagged the same."""
    if "libx264" not in av.codecs_available:
        pytest.skip("PyAV without libx264 (this test needs its lossless qp 0)")
    from mgbp.video import ContainerSource

    source = tmp_path / "tagged.mp4"
    expected = make_tagged_clip(source)
    decoder = ContainerSource(source, max_frames=None)
    first = next(decoder.frames(lambda packet: None))
    decoder.close()
    decoded = first.rgb.permute(1, 2, 0).numpy() * 255
    assert np.abs(block_interiors(decoded, 16, 2) - block_interiors(expected, 16, 2)).max() <= 1.0

    model = NearestGenerator(scale=2)
    real = inference.resolve_model
    monkeypatch.setattr(inference, "resolve_model",
                        lambda name, scale, **kw: model if name == "nearest-test" else real(name, scale, **kw))
    target = tmp_path / "tagged_x2.mp4"
    assert main(["upscale", "-q", str(source), "-o", str(target), "-m", "nearest-test", "--crf", "0"]) == 0
    with av.open(str(target)) as container:
        context = container.streams.video[0].codec_context
        assert (context.colorspace, context.color_range, context.color_primaries, context.color_trc) == (1, 2, 1, 1)
        frame = next(container.decode(video=0))
        y, u, v = yuv_planes(frame)
    shown = bt709_full_to_rgb(y, np.repeat(np.repeat(u, 2, 0), 2, 1), np.repeat(np.repeat(v, 2, 0), 2, 1))
    wanted = expected.repeat(2, 0).repeat(2, 1)
    assert np.abs(block_interiors(shown, 32, 4) - block_interiors(wanted, 32, 4)).max() <= 2.5


def test_subtitles_are_copied_with_their_times(clip, tmp_path, tiny):
    """An .srt track muxed into an mkv beside video and audio comes out unchanged (text and times)."""
    subtitles = tmp_path / "lines.srt"
    subtitles.write_text("1\n00:00:00,080 --> 00:00:00,160\nfirst line\n\n"
                         "2\n00:00:00,240 --> 00:00:00,360\nsecond line\n\n")
    source = tmp_path / "with_subs.mkv"
    with av.open(str(clip)) as video_in, av.open(str(subtitles)) as text_in, av.open(str(source), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in video_in.streams}
        text_stream = out.add_stream_from_template(text_in.streams[0])
        for packet in video_in.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        for packet in text_in.demux():
            if packet.dts is not None:
                packet.stream = text_stream
                out.mux(packet)

    def subtitle_packets(path):
        with av.open(str(path)) as container:
            stream = container.streams.subtitles[0]
            return [(float(p.pts * p.time_base), float(p.duration * p.time_base), bytes(p))
                    for p in container.demux(stream) if p.dts is not None]

    target = tmp_path / "with_subs_x2.mkv"
    assert main(["upscale", "-q", str(source), "-o", str(target), "-m", "tiny-test"]) == 0
    source_lines, target_lines = subtitle_packets(source), subtitle_packets(target)
    assert [text for *_, text in source_lines] == [b"first line", b"second line"]
    # the muxer may shift every stream by the same offset; the lines keep their times and durations
    assert [text for *_, text in target_lines] == [text for *_, text in source_lines]
    assert np.allclose([t[:2] for t in target_lines], [t[:2] for t in source_lines], atol=1e-3)
    assert np.allclose([t[1] for t in target_lines], [0.08, 0.12], atol=1e-3)
    with av.open(str(target)) as container:  # Matroska keeps no per-stream duration: count what is there
        assert container.streams.video[0].average_rate == 25 and len(container.streams.audio) == 1
        assert sum(1 for _ in container.decode(video=0)) == 10


def test_window_runner_bounds_the_back_projection_as_asked():
    """Video windows honour --consistent-steps: one step is eqs. 4-5 applied once to the window's frames, not the
    converged projection."""
    from mgbp.backprojection import back_project
    from mgbp.tiling import run_model
    from mgbp.video_windows import make_window_runner

    model = TinyGenerator(scale=2, seed=3).eval()
    clip = 0.2 + 0.6 * torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        one = make_window_runner(model, VideoOptions(consistent=True, consistent_steps=1, progress=False))(clip)
        full = make_window_runner(model, VideoOptions(consistent=True, progress=False))(clip)
        expected = back_project(clip, run_model(model, clip), 2, steps=1).clamp(0.0, 1.0)
    assert torch.allclose(one, expected, atol=1e-6) and (one - full).abs().max() > 1e-3


@pytest.mark.parametrize("options", [VideoOptions(consistent=True, consistent_steps=0),
                                     VideoOptions(consistent_steps=1)])
def test_bad_back_projection_steps_are_refused_before_the_target_exists(tmp_path, options):
    from mgbp.errors import ConfigError

    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(frames / f"{k:03d}.png")
    target = tmp_path / "out.mp4"
    with pytest.raises(ConfigError, match="--consistent-steps"):
        upscale_video(frames, target, TinyGenerator(scale=2, seed=1).eval(), options)
    assert not target.exists()
