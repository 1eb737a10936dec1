"""`mgbp serve`'s handlers without a server (`mgbp.web.engine`, `mgbp.web.jobs`, the page's helpers): the page's
files equal `mgbp upscale`'s byte for byte, the preview equals the render, cancel, one job per device, errors."""

from __future__ import annotations

import io
import os
import pickle
import sys
import threading
import time
import zipfile
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from PIL import Image

from mgbp import models
from mgbp.cli import main
from mgbp.errors import ConfigError, ImageReadError, WeightFileError
from mgbp.inference import upscale_tensor
from mgbp.io import read_image, write_image
from mgbp.metrics import niqe
from mgbp.resize import imresize
from mgbp.tiling import default_overlap, run_model, tile_starts
from mgbp.web import app
from mgbp.web.engine import WEIGHT_FILE, Engine
from mgbp.web.jobs import DeviceQueue, Eta, Job, JobCancelled, format_duration
from tiny_generators import TinyGenerator


@pytest.fixture
def engine(tmp_path):
    engine = Engine("cpu", tmp_path / "work")
    yield engine
    engine.close()


def pixels(shape, dtype=np.uint8, seed=0):
    top = 255 if dtype == np.uint8 else 65535
    return np.random.default_rng(seed).integers(0, top + 1, shape, dtype=dtype)


def make_source(folder, kind):
    """A small test image of each kind `mgbp upscale` keeps: 8-bit RGB, 16-bit RGBA, grey, JPEG."""
    if kind == "rgba16":
        return write_image(folder / "in.png", pixels((11, 9, 3), np.uint16), bit_depth=16,
                           alpha=pixels((11, 9), np.uint16, seed=1))
    if kind == "grey":
        path = folder / "in.png"
        Image.fromarray(pixels((10, 13)), "L").save(path)
        return path
    path = folder / ("in.jpg" if kind == "jpeg" else "in.png")
    Image.fromarray(pixels((12, 10, 3))).save(path)
    return path


@pytest.mark.parametrize("kind", ["rgb", "rgba16", "grey", "jpeg"])
def test_page_file_equals_the_command_byte_for_byte(engine, tmp_path, kind):
    source = make_source(tmp_path, kind)
    result = engine.render([source], engine.model("mgbp-x4", 4), 0.5, progress=False)
    cli_output = tmp_path / "cli" / result.download.name
    assert main(["upscale", "-q", str(source), "-o", str(cli_output), "-m", "mgbp-x4", "-W", "0.5"]) == 0
    assert result.download.name == f"in_x4{source.suffix}"  # the command's name and format
    assert result.download.read_bytes() == cli_output.read_bytes()
    page, given = read_image(result.download), read_image(source)
    assert page.rgb.shape[:2] == (4 * given.rgb.shape[0], 4 * given.rgb.shape[1])
    assert page.bit_depth == given.bit_depth and (page.alpha is None) == (given.alpha is None)
    assert page.rgb.shape[2] == given.rgb.shape[2]  # grey stays grey


def test_many_images_come_as_a_zip_of_single_renders(engine, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = make_source(tmp_path / "a", "rgb"), make_source(tmp_path / "b", "grey")
    model = engine.model("auto", 4)
    result = engine.render([first, second], model, 0.0, progress=False)
    with zipfile.ZipFile(result.download) as archive:
        assert archive.namelist() == ["in_x4.png", "in_x4-2.png"]
        inside = [archive.read(name) for name in archive.namelist()]
    singles = [engine.render([path], model, 0.0, progress=False).download.read_bytes() for path in (first, second)]
    assert inside == singles


def test_preview_equals_the_downloaded_file_on_its_region(engine, tmp_path):
    source = write_image(tmp_path / "in.png", pixels((40, 44, 3), seed=3))
    model = engine.model("mgbp-x4", 4)
    preview = engine.preview(source, model, 0.8, point=(12.0, 30.0))
    region = preview.region
    assert (region.height, region.width) == (40, 44) or region.top >= 0
    downloaded = np.asarray(Image.open(engine.render([source], model, 0.8, progress=False).download))
    rows, cols = region.scaled(4).slices()
    difference = np.abs(preview.after.astype(int) - downloaded[rows, cols].astype(int))
    assert preview.exact and difference.max() <= 1 and (difference == 0).mean() > 0.999  # float rounding only
    bicubic = imresize(torch.from_numpy(read_image(source).rgb).permute(2, 0, 1)[None], scale=4).clamp(0, 1)
    expected = (bicubic[0].permute(1, 2, 0).numpy()[rows, cols] * 255).round()
    assert np.abs(preview.before.astype(float) - expected).max() <= 1


def test_preview_region_follows_the_click(engine, tmp_path):
    source = write_image(tmp_path / "big.png", pixels((100, 120, 3)))
    model = engine.model("mgbp-x4", 4)
    preview = engine.preview(source, model, 0.0, point=(90.0, 5.0))
    assert (preview.region.top, preview.region.left, preview.region.height) == (36, 0, 64)
    assert preview.after.shape == (256, 256, 3)
    view, region = engine.source_view(source, (90.0, 5.0))
    assert region == preview.region and view.shape == (100, 120, 3)
    assert tuple(view[region.top, region.left + 10]) == (255, 64, 0)  # the outline is drawn


def test_niqe_curve_marks_the_current_w(engine, tmp_path):
    source = write_image(tmp_path / "in.png", pixels((30, 32, 3), seed=4))
    model = engine.model("mgbp-x4", 4)
    curve = engine.curve(source, model, 0.3, amplitudes=(0.0, 0.5, 1.0))
    assert curve.amplitudes == [0.0, 0.5, 1.0] and len(curve.niqe) == 3 and np.isfinite(curve.niqe).all()
    full = upscale_tensor(model, torch.from_numpy(read_image(source).rgb).permute(2, 0, 1)[None], noise=0.3, seed=0)
    assert curve.current[0] == 0.3 and abs(curve.current[1] - float(niqe(full)[0])) < 1e-3
    assert curve.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_too_small_for_niqe(engine, tmp_path):
    source = write_image(tmp_path / "in.png", pixels((20, 30, 3)))
    with pytest.raises(ConfigError, match="too small for NIQE"):
        engine.curve(source, engine.model("mgbp-x4", 4), 0.0)


# ----------------------------------------------------------------------------------------------- models


def test_weight_files_are_read_as_the_command_reads_them(engine, tmp_path):
    path = tmp_path / "tiny.safetensors"
    torch.manual_seed(0)
    models.save_model(models.build_model("tiny"), path, {})
    model = engine.model(WEIGHT_FILE, None, path)
    assert model.scale == 4 and model.family == "mgbpv2"
    with pytest.raises(ConfigError, match="x4, not x2"):
        engine.model(WEIGHT_FILE, 2, path)
    (tmp_path / "junk.model").write_bytes(b"not weights at all")
    with pytest.raises(WeightFileError):
        engine.model(WEIGHT_FILE, None, tmp_path / "junk.model")
    with pytest.raises(ConfigError, match="upload a weight file"):
        engine.model(WEIGHT_FILE, None, None)
    with pytest.raises(ConfigError, match="unknown model"):
        engine.model("no-such-model", 4)


class _Payload:
    """A pickle that would create a file when unpickled (what a hostile .model could do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_with_code_is_refused_and_never_run(engine, tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.model"
    hostile.write_bytes(pickle.dumps({"weight": _Payload(marker)}, protocol=2))
    with pytest.raises(WeightFileError):
        engine.model(WEIGHT_FILE, None, hostile)
    assert not marker.exists()


def test_auto_picks_the_shipped_model_of_the_scale(engine):
    assert engine.model("auto", 2).scale == 2
    assert engine.model("auto", None, video=True).is_video


# ----------------------------------------------------------------------------------------------- jobs


class CountingGenerator(TinyGenerator):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def forward(self, lr, noise_amp=0.0, noise=None):
        self.calls += 1
        return super().forward(lr, noise_amp, noise)


def test_cancel_stops_between_two_forward_passes():
    model = CountingGenerator(scale=2).eval()
    queue = DeviceQueue("cpu")
    job = Job()
    steps = []

    def on_step():
        steps.append(model.calls)
        if len(steps) == 2:
            job.cancel()

    job.on_step = on_step
    lr = torch.rand(1, 3, 40, 40)
    tiles = len(tile_starts(40, 24, default_overlap(model))) ** 2
    assert tiles >= 4
    with pytest.raises(JobCancelled), queue.run(model, job=job):
        run_model(model, lr, tile=24)
    assert model.calls == 2 and steps == [0, 1]
    assert not model._forward_pre_hooks  # the hook goes with the job
    run_model(model, lr, tile=24)  # and the model runs normally afterwards
    assert model.calls == 2 + tiles


def test_a_cancelled_render_leaves_no_files(engine, tmp_path):
    source = make_source(tmp_path, "rgb")
    job = Job()
    with pytest.raises(JobCancelled):
        engine.render([source], engine.model("mgbp-x4", 4), 0.0, job=job, progress=False,
                      on_image=lambda *_: job.cancel())
    assert list(engine.jobs_root.iterdir()) == []


def test_one_job_per_device_and_cancel_while_waiting():
    queue = DeviceQueue("cpu")
    model = TinyGenerator().eval()
    spans, errors = [], []

    def work(session):
        try:
            with queue.run(model, session=session):
                start = time.monotonic()
                time.sleep(0.2)
                spans.append((start, time.monotonic()))
        except JobCancelled as exc:
            errors.append((session, str(exc)))

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    assert queue.cancel("c")  # waiting for the device: never starts
    for thread in threads:
        thread.join()
    spans.sort()
    assert len(spans) == 2 and spans[0][1] <= spans[1][0]  # one after the other
    assert errors == [("c", "cancelled")]
    assert not queue.cancel("a")  # finished jobs are forgotten


def test_eta_from_the_rate_so_far():
    now = [100.0]
    eta = Eta(clock=lambda: now[0])
    assert eta.text(0, 40) == ""
    now[0] = 104.0
    assert eta.text(10, 40) == "about 0:12 left"  # 10 frames in 4 s, 30 to go
    now[0] = 105.0
    assert eta.text(0, 7) == ""  # a new bar restarts the estimate
    assert format_duration(3725.2) == "1:02:06" and format_duration(59.0) == "0:59"


def test_eta_reaches_the_progress_bar():
    now = [0.0]
    level = SimpleNamespace(index=0, length=20, unit="frames")
    on_step = app.eta_reporter(SimpleNamespace(iterables=[level]), clock=lambda: now[0])
    on_step()
    now[0], level.index = 2.0, 5
    on_step()
    assert level.unit == "frames (about 0:06 left)"
    on_step()  # again: the base unit is kept, not repeated
    assert level.unit.count("frames") == 1


# ----------------------------------------------------------------------------------------------- videos


def make_clip(path, frames=6, size=(16, 24)):
    """A tiny clip with a sine on AAC (PyAV)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.height, video.width, video.pix_fmt = size[0], size[1], "yuv420p"
        sound = container.add_stream("aac", rate=48000)
        sound.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), (20 * i) % 256, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = 48000 * frames // 25
        wave = (0.3 * np.sin(np.arange(samples) / 10)).astype(np.float32)[None]
        for start in range(0, samples, 1024):
            chunk = av.AudioFrame.from_ndarray(wave[:, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, start
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    return path


def test_video_keeps_its_frames_and_audio(engine, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    target = engine.render_video(clip, TinyGenerator(scale=2).eval(), 0.0, crf=23, progress=False)
    assert target.name == "clip_x2.mp4"
    with av.open(str(target)) as container:
        assert container.streams.audio, "the audio stream is kept"
        frames = list(container.decode(video=0))
    assert len(frames) == 6 and (frames[0].height, frames[0].width) == (32, 48)
    with pytest.raises(ConfigError, match="CRF"):
        engine.render_video(clip, TinyGenerator(scale=2).eval(), 0.0, crf=99)


# ----------------------------------------------------------------------------------------------- errors and files


def test_a_bad_upload_is_one_readable_line(engine, tmp_path):
    upload = engine.work_root / "gradio" / "0123abcd" / "holiday.png"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"<script>alert(1)</script> not a png")
    with pytest.raises(ImageReadError) as caught:
        engine.render([upload], engine.model("mgbp-x4", 4), 0.0, progress=False)
    message = app.readable(caught.value, engine)
    assert message.startswith("holiday.png: cannot read image") and "\n" not in message
    assert str(engine.work_root) not in message and "gradio" not in message
    assert list(engine.jobs_root.iterdir()) == []
    assert app.readable(ConfigError("<b>x</b>"), engine) == "&lt;b&gt;x&lt;/b&gt;"  # shown as text, not HTML


def test_old_job_folders_are_removed(engine):
    old = engine.new_job_dir()
    (old / "x_x4.png").write_bytes(b"...")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    fresh = engine.new_job_dir()
    assert not old.exists() and fresh.exists()
    engine.close()
    assert not engine.work_root.exists()


def test_only_loopback_is_quiet():
    assert app.exposure_warning("127.0.0.1") is None and app.exposure_warning("localhost") is None
    assert "warning" in app.exposure_warning("0.0.0.0")


def test_serve_warns_when_open_to_the_network(monkeypatch, capsys):
    closed = []
    fake = SimpleNamespace(url="http://0.0.0.0:7861/", engine=SimpleNamespace(device="cpu"),
                           close=lambda: closed.append(True))
    monkeypatch.setattr(app, "start", lambda *args, **kwargs: fake)
    monkeypatch.setattr(app.time, "sleep", lambda seconds: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["serve", "--host", "0.0.0.0", "--port", "7861"]) == 0
    err = capsys.readouterr().err
    assert "warning: listening on 0.0.0.0" in err and "http://0.0.0.0:7861/" in err and closed == [True]


def test_missing_web_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "mgbp serve: error: mgbp serve needs the web extra: pip install 'mgbp[web]'"


def test_bad_server_options(monkeypatch):
    with pytest.raises(ConfigError, match="max-upload-mb"):
        app.start(max_upload_mb=0)
    with pytest.raises(ConfigError, match="port"):
        app.start(port=70000)


def test_display_copies_are_8_bit(tmp_path):
    from mgbp.web.engine import to_display, write_display_png

    planes = torch.tensor([[[[0.0, 0.5]], [[1.0, 0.25]]]])  # grey + alpha, 1x2
    assert to_display(planes).tolist() == [[[0, 0, 0, 255], [128, 128, 128, 64]]]
    written = Image.open(io.BytesIO(write_display_png(tmp_path / "d.png", planes).read_bytes()))
    assert written.mode == "RGBA" and written.size == (2, 1)
