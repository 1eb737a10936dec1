"""`mgbp upscale --ray` on a local Ray instance (2 CPUs, one for the module): the same bytes, report lines, summary
and exit codes as one process; long videos cut into segments with the single pass's frames and timestamps; a
worker killed mid-job; a resumed run; the Ray Dataset entry point; one-line errors before any work.

The single-process command is the reference for everything here (it is tested against independent
re-computations in test_cli, test_io, test_video and test_inference).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from mgbp.cli import main
from mgbp.io import write_image
from mgbp.models import build_model, save_model

ray = pytest.importorskip("ray", reason="Ray (the optional extra mgbp[ray]) is not installed")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module: 2 CPUs, no dashboard."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Tiny MGBPv2 (x4) and MGBP-3D (x2, no temporal padding: windows lose 2 frames at each end) weight files:
    every Ray worker loads them from the path, as it would a shipped model."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    save_model(build_model("tiny").eval(), folder / "tiny.safetensors")
    save_model(build_model("tiny-3d", temporal_padding="none").eval(), folder / "tiny3d.safetensors")
    return folder


def upscale(*args) -> int:
    return main(["upscale", "-q", *map(str, args)])


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def report_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("mgbp upscale:"))


def make_images(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(3):  # same size: they may share a forward pass
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"rgb{i}.png")
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (17, 15), dtype=np.uint8)).save(folder / "sub" / "grey.png")
    write_image(folder / "deep16.png", rng.random((16, 18, 3)), bit_depth=16, alpha=rng.random((16, 18)))
    Image.fromarray(rng.integers(0, 256, (16, 18, 3), dtype=np.uint8)).save(folder / "photo.jpg", quality=90)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_images_match_one_process_and_a_rerun_finishes_the_job(cluster, weights, tmp_path, capsys):
    inputs = make_images(tmp_path / "in")
    model = weights / "tiny.safetensors"
    assert upscale(inputs, "-o", tmp_path / "one", "-m", model) == 1  # broken.png fails, the rest is written
    one = capsys.readouterr().err
    assert upscale(inputs, "-o", tmp_path / "ray", "-m", model, "--ray", "--ray-workers", "2",
                   "--ray-batch-size", "3") == 1
    on_ray = capsys.readouterr().err
    expected = files_of(tmp_path / "one")
    assert len(expected) == 6 and files_of(tmp_path / "ray") == expected  # byte for byte, hidden files none
    assert report_lines(on_ray) == report_lines(one)
    assert "1 failed" in one and "broken.png" in one and len(on_ray.strip().splitlines()) == 2

    # an interrupted run: two outputs missing, a killed attempt's temporary left behind
    (tmp_path / "ray" / "rgb1.png").unlink()
    (tmp_path / "ray" / "sub" / "grey.png").unlink()
    (tmp_path / "ray" / ".rgb1.tmp-deadbeef.png").write_bytes(b"partial")
    assert upscale(inputs, "-o", tmp_path / "ray", "-m", model, "--ray", "--ray-workers", "1",
                   "--skip-existing") == 1
    assert "2 written, 4 skipped (exists), 1 failed" in capsys.readouterr().err
    assert files_of(tmp_path / "ray") == expected


def make_clip(path: Path, frames: int = 30, size=(16, 24), keyint: int = 4) -> Path:
    """libx264 (B-frames, a keyframe every `keyint` frames) with AAC sound: frames that depend on their
    neighbours, so decoding a segment from the wrong place would show."""
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=25)
    video.height, video.width, video.pix_fmt = size[0], size[1], "yuv420p"
    video.options = {"keyint": str(keyint), "min-keyint": str(keyint), "scenecut": "0"}
    sound = container.add_stream("aac", rate=48000)
    sound.layout = "mono"
    rng = np.random.default_rng(1)
    for i in range(frames):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8) // 4
        image[..., 0] += ((np.arange(size[1]) * 5 + 12 * i) % 192).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    samples = 48000 * frames // 25
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)[None]
    for start in range(0, samples, 1024):
        chunk = av.AudioFrame.from_ndarray(wave[:, start:start + 1024], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 48000, start
        container.mux(sound.encode(chunk))
    container.mux(sound.encode(None))
    container.close()
    return path


def decoded(path: Path):
    """(every frame's timestamp in seconds and RGB pixels, the audio packets' timestamps and bytes)."""
    with av.open(str(path)) as container:
        frames = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        audio = [(p.pts, bytes(p)) for p in container.demux(container.streams.audio[0]) if p.size]
    return frames, audio


def test_long_videos_in_segments_give_the_single_pass_frames(cluster, weights, tmp_path, capsys):
    clip = make_clip(tmp_path / "clip.mp4")
    still = tmp_path / "stills"
    still.mkdir()
    rng = np.random.default_rng(2)
    for i in range(13):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(still / f"f{i}.png")
    # W > 0: every window's noise must be the single pass's too; crf 0 + yuv444p: a lossless encode
    common = [clip, still, "-m", weights / "tiny3d.safetensors", "-W", "0.5", "--seed", "3", "--crf", "0",
              "--pix-fmt", "yuv444p", "--max-frames", "27"]
    assert upscale(*common, "-o", tmp_path / "one") == 0
    assert upscale(*common, "-o", tmp_path / "ray", "--ray", "--ray-workers", "2", "--ray-segment-frames", "6") == 0
    assert "2 written, 0 skipped (exists), 0 failed" in capsys.readouterr().err
    frames, audio = decoded(tmp_path / "one" / "clip.mp4")
    got_frames, got_audio = decoded(tmp_path / "ray" / "clip.mp4")
    assert len(got_frames) == len(frames) == 27
    assert [t for t, _ in got_frames] == [t for t, _ in frames]  # every timestamp
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got_frames, frames))  # every pixel
    assert got_audio == audio and 0.9 * 27 / 25 < audio[-1][0] / 48000 + 1024 / 48000 < 27 / 25 + 0.05
    assert files_of(tmp_path / "ray" / "stills") == files_of(tmp_path / "one" / "stills")  # 13 PNG frames
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["clip.mp4", "stills"]  # no parts left


def test_a_worker_killed_mid_job_is_replaced_and_every_output_is_whole(cluster, weights, tmp_path):
    from mgbp.commands.upscale_jobs import Job
    from mgbp.distributed import ClusterOptions, ModelSpec, UpscaleSettings, iter_results

    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (64, 72, 3), dtype=np.uint8)).save(inputs / f"p{i}.png")
    model = weights / "tiny.safetensors"
    assert upscale(inputs, "-o", tmp_path / "one", "-m", model) == 0
    jobs = [Job(p, tmp_path / "ray" / p.name, "image") for p in sorted(inputs.iterdir())]
    results, killed = [], None
    for result in iter_results(jobs, ModelSpec(str(model)), UpscaleSettings(),
                               ClusterOptions(workers=2, batch_size=1)):
        results.append(result)
        if killed is None:  # the actor that wrote the first file is busy with the next: kill its process
            killed = result.worker
            os.kill(killed, signal.SIGKILL)
    assert sorted(r.status for r in results) == ["written"] * 6
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "one")  # whole, correct, no temporaries
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)


def test_a_ray_dataset_of_images(cluster, weights, tmp_path):
    from mgbp.distributed import ClusterOptions, ModelSpec, UpscaleSettings, upscale_dataset

    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(4)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (14, 16, 3), dtype=np.uint8)).save(inputs / f"d{i}.png")
    model = weights / "tiny.safetensors"
    assert upscale(inputs, "-o", tmp_path / "one", "-m", model) == 0
    dataset = ray.data.read_binary_files(str(inputs), include_paths=True)
    rows = upscale_dataset(dataset, str(tmp_path / "ray"), ModelSpec(str(model)), UpscaleSettings(),
                           ClusterOptions(workers=1), suffix="").take_all()
    assert sorted(Path(r["target"]).name for r in rows) == ["d0.png", "d1.png"]
    assert all(r["error"] == "" for r in rows)
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "one")


def test_same_size_images_share_one_forward_pass(weights, tmp_path, monkeypatch):
    """The actor's batching, in this process: one `upscale_tensor` call for three same-size images at W = 0,
    outputs equal to one process's; other sizes run alone."""
    from mgbp import inference
    from mgbp.distributed import ModelSpec, Upscaler, UpscaleSettings

    inputs = make_images(tmp_path / "in")
    model = weights / "tiny.safetensors"
    assert upscale(inputs, "-o", tmp_path / "one", "-m", model) == 1
    names = ["rgb0.png", "rgb1.png", "rgb2.png", "photo.jpg"]
    calls = []
    real = inference.upscale_tensor
    monkeypatch.setattr(inference, "upscale_tensor",
                        lambda m, x, *args, **kw: calls.append(x.shape[0]) or real(m, x, *args, **kw))
    upscaler = Upscaler(ModelSpec(str(model)), UpscaleSettings())
    batch = {"number": np.arange(4), "kind": np.array(["image"] * 4, dtype=object),
             "source": np.array([str(inputs / n) for n in names], dtype=object),
             "target": np.array([str(tmp_path / "ray" / n) for n in names], dtype=object),
             "segment": np.full(4, -1), "task": np.array([b""] * 4, dtype=object),
             "data": np.array([(inputs / n).read_bytes() for n in names], dtype=object),
             "error": np.array([""] * 4, dtype=object)}
    result = upscaler(batch)
    assert list(result["error"]) == [""] * 4 and sorted(calls) == [1, 3]
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_workers_write_the_output_options_as_one_process_does(weights, tmp_path, capsys):
    """--outscale, --ext webp/tiff and --quality reach the actor (`mgbp.image_files`, in this process): the same
    bytes as the command without --ray."""
    from mgbp.distributed import ModelSpec, Upscaler, UpscaleSettings

    inputs = make_images(tmp_path / "in")
    model = weights / "tiny.safetensors"
    names = ["rgb0.png", "deep16.png", "photo.jpg"]
    for ext, flags, settings in (("webp", ["--outscale", "3", "--quality", "80"], {"outscale": 3.0, "quality": 80}),
                                 ("tiff", ["--size", "40x30"], {"size": (40, 30)})):
        assert upscale(*[inputs / n for n in names], "-o", tmp_path / ext, "-m", model, "--ext", ext, *flags) == 0
        upscaler = Upscaler(ModelSpec(str(model)), UpscaleSettings(**settings))
        targets = [tmp_path / f"ray-{ext}" / (Path(n).stem + "." + ext) for n in names]
        batch = {"number": np.arange(3), "kind": np.array(["image"] * 3, dtype=object),
                 "source": np.array([str(inputs / n) for n in names], dtype=object),
                 "target": np.array([str(t) for t in targets], dtype=object),
                 "segment": np.full(3, -1), "task": np.array([b""] * 3, dtype=object),
                 "data": np.array([(inputs / n).read_bytes() for n in names], dtype=object),
                 "error": np.array([""] * 3, dtype=object)}
        assert list(upscaler(batch)["error"]) == [""] * 3
        assert files_of(tmp_path / f"ray-{ext}") == files_of(tmp_path / ext) and len(files_of(tmp_path / ext)) == 3


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("address", ["ray://127.0.0.1:{port}", "127.0.0.1:{port}", "not-an-address"])
def test_a_bad_address_is_one_line_before_any_work(address, weights, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    code = upscale(image, "-o", tmp_path / "out", "-m", weights / "tiny.safetensors", "--ray",
                   address.format(port=closed_port()))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and ("--ray" in err or "Ray cluster" in err)
    assert not (tmp_path / "out").exists()


def test_without_the_extra_ray_is_one_line(weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when the extra is not installed
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert upscale(image, "-o", tmp_path / "out", "--ray") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'mgbp[ray]'" in err
    assert upscale(image, "-o", tmp_path / "out", "--ray-workers", "2") == 2  # a Ray flag needs --ray
    assert "--ray-workers needs --ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
