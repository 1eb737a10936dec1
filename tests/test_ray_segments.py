"""Time segments of a video (`mgbp.video_segments`), without Ray: the windows of the single pass, segments that
reproduce its frames bit for bit, and segment files joined into a video equal to the single pass."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mgbp.video_segments import Geometry, plan_segments, segment_frames_out, window_schedule
from mgbp.video_windows import overlap_add_stream

CASES = [(12, 5, 2, 0), (3, 5, 2, 0), (11, 4, 4, 0), (13, 7, 3, 1), (2, 7, 3, 1), (6, 1, 1, 0), (20, 9, 5, 2),
         (10, 4, 4, 0), (23, 5, 2, 1), (1, 3, 1, 1)]


def single_pass(values, length, stride, consumed):
    """`overlap_add_stream` on scalar frames; window j adds 1000 j, so a frame shows which windows reached it."""
    calls = []

    def run_window(clip):
        calls.append(clip[:, 0, 0, 0].tolist())
        return clip[consumed:length - consumed] + 1000.0 * (len(calls) - 1)

    frames = (torch.full((3, 1, 1), v, dtype=torch.float64) for v in values)
    out = [f[0, 0, 0].item() for f in overlap_add_stream(frames, run_window, length, stride, consumed)]
    return out, calls


def segmented(values, geometry, starts_every):
    """The segments of `plan_segments` (keyframes at every frame), each run on its own, joined."""
    out, clips = {}, {}
    for segment in plan_segments(geometry, list(range(geometry.count)), starts_every):
        lr = ((i, torch.full((3, 1, 1), values[i], dtype=torch.float64))
              for i in range(segment.read_from, segment.read_to))

        def runner_for(index, produced=geometry.produced, consumed=geometry.consumed):
            def run(clip):
                clips[index] = clip[:, 0, 0, 0].tolist()
                return clip[consumed:consumed + produced] + 1000.0 * index
            return run

        for index, frame in segment_frames_out(lr, segment, geometry, runner_for):
            assert index not in out and segment.first <= index < segment.end
            out[index] = frame[0, 0, 0].item()
    return [out[i] for i in range(geometry.count)], [clips[i] for i in sorted(clips)]


@pytest.mark.parametrize(("count", "length", "stride", "consumed"), CASES)
def test_schedule_lists_the_windows_of_the_single_pass(count, length, stride, consumed):
    values = [float(v) for v in np.random.default_rng(count).random(count)]
    _, calls = single_pass(values, length, stride, consumed)
    windows = window_schedule(Geometry(count, length, stride, consumed))
    assert [w.index for w in windows] == list(range(len(calls)))
    padded = [values[0]] * consumed + values + [values[-1]] * consumed
    for window, clip in zip(windows, calls):  # each window reads the frames the single pass gives it
        assert clip == (padded[window.start:window.start + length] + [padded[-1]] * length)[:length]


@pytest.mark.parametrize(("count", "length", "stride", "consumed"), CASES)
def test_segments_give_the_single_pass_frames_bit_for_bit(count, length, stride, consumed):
    values = [float(v) for v in np.random.default_rng(count + 7).random(count)]
    expected, calls = single_pass(values, length, stride, consumed)
    geometry = Geometry(count, length, stride, consumed)
    for every in sorted({1, 2, 3, max(1, count // 2), count}):
        got, clips = segmented(values, geometry, every)
        assert got == expected, every  # exact: same windows, same clips, same order of additions
        assert clips == calls


def test_segments_start_at_keyframes_and_decode_from_one_before_their_context():
    geometry = Geometry(40, 7, 3, 1)
    keyframes = [0, 9, 18, 27, 36]
    segments = plan_segments(geometry, keyframes, 10)
    assert [s.first for s in segments] == [0, 18, 36]  # the first keyframe at least 10 frames on
    assert [s.end for s in segments] == [18, 36, 40]
    for segment in segments:
        assert segment.seek_frame in keyframes and segment.seek_frame <= segment.read_from <= segment.first
        assert segment.end <= segment.read_to <= geometry.count
    assert len(plan_segments(geometry, keyframes, 1000)) == 1
    assert list(itertools.chain(*[range(s.first, s.end) for s in segments])) == list(range(40))


def make_clip(path, frames=19, size=(12, 16)):
    """mpeg4 with a keyframe every 3 frames and no sound: many places to cut."""
    av = pytest.importorskip("av", reason="PyAV (optional: video support) is not installed")
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.height, stream.width, stream.pix_fmt = size[0], size[1], "yuv420p"
    stream.codec_context.gop_size = 3
    rng = np.random.default_rng(7)
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8), format="rgb24")
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    return path


def test_a_rerun_reuses_finished_segments_and_the_join_equals_the_single_pass(tmp_path):
    """The segment path without Ray: plan, run one segment, plan again (it is not redone), run the rest, join;
    the decoded video equals `upscale_video`'s (lossless encode, W > 0) frame for frame, timestamp for timestamp."""
    import pickle
    from dataclasses import replace

    import av

    from mgbp.distributed import ClusterOptions, UpscaleSettings, pipeline
    from mgbp.models import build_model
    from mgbp.video import upscale_video
    from mgbp.video_segments import upscale_segment

    clip = make_clip(tmp_path / "clip.mkv")
    model = build_model("tiny-3d", temporal_padding="none").eval()
    settings = UpscaleSettings(noise=0.5, seed=1, crf=0, pix_fmt="yuv444p")
    options = settings.video_options()
    upscale_video(clip, tmp_path / "one.mkv", model, options)

    class Job:
        source, target, kind = clip, tmp_path / "out" / "clip.mkv", "video"

    cluster = ClusterOptions(segment_frames=5)
    first = pipeline._plan([Job()], model, settings, cluster)
    assert len(first.rows) >= 3 and {row["kind"] for row in first.rows} == {"segment"}
    upscale_segment(pickle.loads(first.rows[0]["task"]), model, options)
    again = pipeline._plan([Job()], model, replace(settings, skip_existing=True), cluster)  # the rerun
    assert [row["segment"] for row in again.rows] == [row["segment"] for row in first.rows[1:]]
    for row in again.rows:
        upscale_segment(pickle.loads(row["task"]), model, options)
    result = pipeline._finish_video(again.videos[0])
    assert result.status == "written", result.message

    def frames(path):
        with av.open(str(path)) as container:
            return [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]

    expected, got = frames(tmp_path / "one.mkv"), frames(Job.target)
    assert len(got) == len(expected) == 19 and [t for t, _ in got] == [t for t, _ in expected]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected))
    assert [p.name for p in Job.target.parent.iterdir()] == ["clip.mkv"]  # the parts folder is gone
