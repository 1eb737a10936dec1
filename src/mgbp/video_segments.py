"""Time segments of a long video, upscaled apart and joined: the paper's "Video Inference" (Section IV, Fig. 6:
windows of T frames every `stride` frames, each output weighted by a temporal window and overlap-added) cut at
keyframes, so that the segments of one video can run in parallel (`mgbp.distributed`) and still give the frames
of one streaming pass of `mgbp.video.upscale_video`, bit for bit.

Why the frames are equal:
- `window_schedule` lists the windows of the single pass (`mgbp.video_windows.overlap_add_stream`): regular
  windows every `stride` frames of the stream padded with `consumed` copies of its first and last frames, then the last
  window moved back to end on the last frame, which only adds to frames no regular window can still reach;
- a segment [first, end) runs every window that adds to one of its frames, in the single pass's order, on the
  same LR frames (it decodes the context frames before and after it; the ends of the video are padded alike),
  with the same noise (`mgbp.video_windows.window_generator`: seeded per window) and accumulates them with the
  same `mgbp.video_windows.OverlapAdd`: each of its frames gets the same float operations in the same order;
- decoding from the keyframe before a segment's first context frame gives the pictures that decoding from the
  start gives (a keyframe starts a closed group of pictures); every expected timestamp must come out, else the
  segment fails with a message rather than shifting frames.

Joining: each segment is encoded once into its own file (the codec settings of the single pass; it starts on a
keyframe), then the segments' packets are copied one after another into the output with their timestamps (no
second encode), and the source's audio and subtitle packets are copied once, cut as a single pass cuts them
(`max_frames`). So the frame count and every frame's timestamp are those of the single pass. A lossy codec's
bytes differ (the encoder restarts at each segment: a keyframe there, its rate control afresh); the pictures
given to the encoder are the same, and a lossless encode (e.g. libx264 with --crf 0 and --pix-fmt yuv444p)
decodes to the single pass's frames exactly.
"""

from __future__ import annotations

import heapq
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import torch

from mgbp.errors import ImageReadError, MgbpError
from mgbp.video import ContainerSink, ContainerSource, DecodedFrame, FolderSink, FolderSource, apply_rotation
from mgbp.video_options import VideoOptions
from mgbp.video_windows import OverlapAdd, make_window_runner, window_geometry

DEFAULT_SEGMENT_FRAMES = 600  # frames per segment when not told: ~25 s of film, many windows per segment


# ----------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Window:
    """One window of the single pass."""

    index: int  # its rank in the single pass (regular windows 0..K-1, then the moved-back last one)
    start: int  # its first frame in the padded stream (frame 0 is repeated `consumed` times before the video)
    keep_from: int  # frames (of the video) before this get nothing from it: the moved-back last window's rule


@dataclass(frozen=True)
class Geometry:
    count: int  # frames of the video that the pass produces
    length: int  # frames per window
    stride: int
    consumed: int  # frames the model consumes at each end of a window

    @property
    def produced(self) -> int:
        return self.length - 2 * self.consumed


def window_schedule(geometry: Geometry) -> list[Window]:
    """The windows `mgbp.video_windows.overlap_add_stream` runs on a video of `geometry.count` frames, in its
    order."""
    count, length, stride, consumed = geometry.count, geometry.length, geometry.stride, geometry.consumed
    if count <= 0:
        return []
    padded = count + 2 * consumed
    windows = [Window(k, start, 0) for k, start in enumerate(range(0, padded - length + 1, stride))]
    covered = windows[-1].start + length - consumed if windows else 0  # padded frames produced so far
    if covered < padded - consumed:
        windows.append(Window(len(windows), max(0, padded - length), len(windows) * stride))
    return windows


def _output_frames(window: Window, geometry: Geometry) -> range:
    """The frames (of the video) a window adds to."""
    return range(max(window.start, window.keep_from), min(window.start + geometry.produced, geometry.count))


def _input_frames(window: Window, geometry: Geometry) -> range:
    """The frames (of the video) a window reads; the padding repeats the first and the last."""
    first = window.start - geometry.consumed
    return range(max(0, first), min(geometry.count, first + geometry.length))


@dataclass(frozen=True)
class Segment:
    """Frames [first, end) of a video, the windows that add to them, and the frames to decode for those."""

    number: int
    first: int
    end: int
    windows: tuple[Window, ...]
    read_from: int  # first frame to decode (context before `first`)
    read_to: int  # one past the last frame to decode (context after `end`)
    seek_frame: int  # the keyframe at or before `read_from` that decoding starts from


def plan_segments(geometry: Geometry, keyframes: list[int], segment_frames: int) -> list[Segment]:
    """Cut the video at keyframes into segments of about `segment_frames` frames (at least that many, except
    the last); each with its windows and context. `keyframes`: frames where decoding can start (0 first)."""
    keyframes = sorted(k for k in set(keyframes) if 0 <= k < geometry.count) or [0]
    if keyframes[0] != 0:
        keyframes.insert(0, 0)
    starts = [0]
    for key in keyframes:
        if key >= starts[-1] + max(1, segment_frames):
            starts.append(key)
    ends = starts[1:] + [geometry.count]
    windows = window_schedule(geometry)
    segments = []
    for number, (first, end) in enumerate(zip(starts, ends)):
        mine = tuple(w for w in windows if _overlaps(_output_frames(w, geometry), first, end))
        read_from = min(_input_frames(w, geometry).start for w in mine)
        read_to = max(_input_frames(w, geometry).stop for w in mine)
        seek = max(k for k in keyframes if k <= read_from)
        segments.append(Segment(number, first, end, mine, read_from, read_to, seek))
    return segments


def _overlaps(frames: range, first: int, end: int) -> bool:
    return max(frames.start, first) < min(frames.stop, end)


# ----------------------------------------------------------------------------------------------- the pass


def segment_frames_out(frames: Iterator[tuple[int, torch.Tensor]], segment: Segment, geometry: Geometry,
                       runner_for: Callable[[int], Callable[[torch.Tensor], torch.Tensor]]
                       ) -> Iterator[tuple[int, torch.Tensor]]:
    """(index, upscaled frame) for the segment's frames, in order, from its LR frames `frames` ((index, (3,h,w))
    for read_from..read_to-1 in order). `runner_for(window index)` maps a (T,3,h,w) clip to its middle frames
    upscaled (`mgbp.video_windows.make_window_runner`). Mirrors `mgbp.video_windows.overlap_add_stream` window
    by window."""
    consumed, last = geometry.consumed, geometry.count - 1
    blend = OverlapAdd(first_out=segment.first + consumed)  # padded numbering, as in the single pass
    buffer: dict[int, torch.Tensor] = {}
    source = iter(frames)

    def frame(index: int) -> torch.Tensor:
        while index not in buffer:
            got, value = next(source)
            buffer[got] = value
        return buffer[index]

    def finished(before: int) -> Iterator[tuple[int, torch.Tensor]]:
        for out in blend.pop(before=min(before, segment.end) + consumed):
            yield blend.next_out - consumed, out  # `pop` counts the frame after handing it out

    for position, window in enumerate(segment.windows):
        if window.keep_from > 0:  # the moved-back last window: the single pass has emitted what lies before
            yield from finished(window.keep_from)
        padded = range(window.start, window.start + geometry.length)
        clip = torch.stack([frame(min(max(q - consumed, 0), last)) for q in padded])
        blend.add(window.start + consumed, runner_for(window.index)(clip))
        following = segment.windows[position + 1] if position + 1 < len(segment.windows) else None
        if following is not None:
            for index in [i for i in buffer if i < _input_frames(following, geometry).start]:
                del buffer[index]  # memory holds one window of LR frames, as in the single pass
        yield from finished(window.start + geometry.stride if following is not None else segment.end)


# ----------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class VideoProbe:
    """What the planner needs of a video, read from its packet index (no decoding)."""

    count: int  # frames the single pass produces (`max_frames` applied)
    total_hint: int | None  # the frame count the single pass believes before decoding (`ContainerSource.total`)
    keyframes: tuple[int, ...]  # frames (display order) that decoding can start from
    pts: tuple[int, ...] | None  # display-ordered timestamps of the frames (None for a frame folder)
    splittable: bool  # False when timestamps are missing or repeated: run the video whole


def probe_video(path: Path, options: VideoOptions) -> VideoProbe:
    """Frame count, keyframes and timestamps of a video file (demuxed, not decoded) or a frame folder. Raises
    what `mgbp.video.upscale_video` raises for an input it cannot open."""
    if path.is_dir():
        source = FolderSource(path, options.fps, options.max_frames)
        count = len(source.files)
        return VideoProbe(count, source.total, tuple(range(count)), None, True)
    import av

    source = ContainerSource(path, options.max_frames)
    stamps, keys, splittable = [], set(), True
    try:
        for packet in source.container.demux(source.video):
            if packet.size == 0:  # the demuxer's flush packets
                continue
            if packet.pts is None:
                splittable = False
                continue
            stamps.append(packet.pts)
            if packet.is_keyframe:
                keys.add(packet.pts)
    except av.FFmpegError as exc:
        raise ImageReadError(f"{path}: cannot decode video ({str(exc).splitlines()[0]})") from None
    finally:
        source.close()
    ordered = sorted(stamps)
    splittable = splittable and len(set(ordered)) == len(ordered)
    count = len(ordered) if options.max_frames is None else min(len(ordered), options.max_frames)
    keyframes = tuple(i for i, stamp in enumerate(ordered[:count]) if stamp in keys)
    return VideoProbe(count, source.total, keyframes, tuple(ordered[:count]), splittable)


def read_container_frames(path: Path, segment: Segment, pts: tuple[int, ...],
                          pts_offset: int) -> Iterator[tuple[int, DecodedFrame]]:
    """Frames read_from..read_to-1 of a video file, decoded from the keyframe `segment.seek_frame` on and
    converted to RGB exactly as `mgbp.video.ContainerSource` converts them. `pts`: the timestamps of frames
    pts_offset, pts_offset + 1, ... (display order), which tell each decoded picture's place."""
    import av

    source = ContainerSource(path, None)
    index_of = {stamp: pts_offset + i for i, stamp in enumerate(pts)}
    expected = segment.read_from
    try:
        if segment.seek_frame > 0:
            source.container.seek(pts[segment.seek_frame - pts_offset], backward=True, any_frame=False,
                                  stream=source.video)
        for packet in source.container.demux(source.video):
            for frame in packet.decode():
                index = index_of.get(frame.pts)
                if index is None or index < expected:
                    continue
                if index != expected:
                    raise MgbpError(f"{path}: frame {expected} did not decode after seeking to keyframe "
                                    f"{segment.seek_frame}; cannot cut this video into segments")
                rgb = source.colour.convert(frame, "rgb24", True, source.reformatter).to_ndarray()
                rgb = apply_rotation(rgb, getattr(frame, "rotation", 0))
                tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
                yield index, DecodedFrame(tensor, frame.pts, frame.time_base)
                expected += 1
                if expected >= segment.read_to:
                    return
    except av.FFmpegError as exc:
        raise ImageReadError(f"{path}: cannot decode video ({str(exc).splitlines()[0]})") from None
    finally:
        source.close()
    if expected < segment.read_to:
        raise MgbpError(f"{path}: the video ended at frame {expected}, before frame {segment.read_to - 1}")


def read_folder_frames(path: Path, options: VideoOptions, segment: Segment) -> Iterator[tuple[int, DecodedFrame]]:
    """Frames read_from..read_to-1 of a frame folder, as `mgbp.video.FolderSource` reads them."""
    source = FolderSource(path, options.fps, options.max_frames)
    source.files = source.files[segment.read_from:segment.read_to]
    for offset, decoded in enumerate(source.frames(lambda packet: None)):
        index = segment.read_from + offset
        yield index, DecodedFrame(decoded.rgb, index, decoded.time_base)


# ----------------------------------------------------------------------------------------------- a segment


@dataclass(frozen=True)
class SegmentJob:
    """Everything a worker needs to upscale one segment into its part file (or part folder of frames)."""

    source: str
    part: str  # the segment's output: a file with the target's extension, or a folder of frames
    to_folder: bool
    container_format: str | None
    geometry: Geometry
    segment: Segment
    pts: tuple[int, ...] | None = field(default=None, repr=False)  # timestamps of frames pts_offset...
    pts_offset: int = 0  # ... i.e. from the segment's seek frame to its last frame read (None: a frame folder)


def upscale_segment(job: SegmentJob, model, options: VideoOptions) -> int:
    """Upscale one segment into `job.part`, atomically (a temporary name, then a rename). Returns its frame
    count."""
    from mgbp.video import _remove, _temporary_path  # the single pass's hidden temporary names

    source, part = Path(job.source), Path(job.part)
    lr = (read_folder_frames(source, options, job.segment) if source.is_dir()
          else read_container_frames(source, job.segment, job.pts, job.pts_offset))
    decoded: dict[int, DecodedFrame] = {}

    def tensors():
        for index, item in lr:
            decoded[index] = item
            yield index, item.rgb

    def runner_for(window_index: int):
        return make_window_runner(model, options, first_window=window_index)

    temporary = _temporary_path(part, folder=job.to_folder)
    sink, written = None, 0
    try:
        for index, frame in segment_frames_out(tensors(), job.segment, job.geometry, runner_for):
            if sink is None:
                sink = _segment_sink(job, temporary, options, model, frame)
            sink.write(frame, decoded[index])
            for old in [i for i in decoded if i <= index]:
                del decoded[old]
            written += 1
        if sink is None:
            raise MgbpError(f"{source}: segment {job.segment.number} has no frames")
        sink.close()
        os.replace(temporary, part)
    except BaseException:
        if sink is not None:
            sink.abort()
        _remove(temporary)
        raise
    return written


def _segment_sink(job: SegmentJob, temporary: Path, options: VideoOptions, model, frame: torch.Tensor):
    if job.to_folder:
        sink = FolderSink(temporary)
        sink.index = job.segment.first  # frames keep their numbers in the whole video
        return sink
    source = Path(job.source)
    if source.is_dir():
        rate, colour = FolderSource(source, options.fps, options.max_frames).rate, None
    else:
        opened = ContainerSource(source, None)
        rate, colour = opened.rate, opened.colour
        opened.close()
    video_only = SimpleNamespace(rate=rate, colour=colour, copied=[])  # audio is copied once, when joining
    return ContainerSink(temporary, video_only, options, tuple(frame.shape[-2:]), job.container_format)


# ----------------------------------------------------------------------------------------------- joining


def end_time(path: Path, probe: VideoProbe, options: VideoOptions) -> float | None:
    """Seconds where `max_frames` cuts the copied streams, as `mgbp.video.ContainerSource` cuts them (None: no
    cut): the start of the last frame kept plus one frame period."""
    if options.max_frames is None or probe.pts is None or probe.count < options.max_frames:
        return None
    source = ContainerSource(path, None)
    time_base, rate = source.video.time_base, source.rate
    source.close()
    return float(probe.pts[probe.count - 1] * time_base) + 1.0 / float(rate)


def join_frame_folders(parts: list[Path], source: Path, target: Path) -> None:
    """Move the frames of every part folder into one hidden folder beside `target`, then publish it as the
    single pass does (`mgbp.video.check_frames_target` rules: only frames of an earlier run are replaced)."""
    from mgbp.video import _publish, _remove, _temporary_path, check_frames_target

    check_frames_target(source, target)
    temporary = _temporary_path(target, folder=True)
    try:
        for part in parts:
            for frame in sorted(part.iterdir()):
                os.replace(frame, temporary / frame.name)
        _publish(temporary, target)
    except BaseException:
        _remove(temporary)
        raise


def join_video_files(parts: list[Path], source: Path, target: Path, cut: float | None) -> None:
    """Copy the parts' video packets, one part after another, and the source's audio/subtitle packets (before
    `cut` seconds, if given) into `target` (written under a hidden temporary name, then renamed)."""
    import av

    from mgbp.video import COPIED_STREAM_TYPES, _format_for, _middle, _publish, _remove, _temporary_path

    _check_same_codec_headers(parts)
    temporary = _temporary_path(target, folder=False)
    opened = [av.open(str(part)) for part in parts]
    original = None if source.is_dir() else av.open(str(source))
    output = av.open(str(temporary), "w", format=_format_for(target))
    try:
        video = _add_stream_from(output, opened[0].streams.video[0])
        copied = {}
        for stream in original.streams if original is not None else []:
            if stream.type not in COPIED_STREAM_TYPES:
                continue
            try:
                copied[stream.index] = _add_stream_from(output, stream)
            except (av.FFmpegError, ValueError) as exc:  # as the single pass: a stream this container cannot hold
                warnings.warn(f"dropping {stream.type} stream #{stream.index} ({stream.codec_context.name}): "
                              f"{str(exc).splitlines()[0]}", stacklevel=2)

        def video_packets():
            for container in opened:
                for packet in container.demux(container.streams.video[0]):
                    if packet.dts is not None:
                        yield packet

        def copied_packets():
            if not copied:
                return
            wanted = [original.streams[i] for i in copied]
            for packet in original.demux(*wanted):
                if packet.dts is not None and (cut is None or _middle(packet) < cut):
                    yield packet

        for packet in heapq.merge(video_packets(), copied_packets(), key=_decode_time):
            packet.stream = video if packet.stream.type == "video" else copied[packet.stream.index]
            output.mux(packet)
        output.close()
        _publish(temporary, target)
    except BaseException:
        output.close()
        _remove(temporary)
        raise
    finally:
        for container in opened:
            container.close()
        if original is not None:
            original.close()


def _add_stream_from(output, stream):
    adder = getattr(output, "add_stream_from_template", None)  # PyAV >= 13
    return adder(stream) if adder is not None else output.add_stream(template=stream)


def _decode_time(packet) -> Fraction:
    return packet.dts * packet.time_base


def _check_same_codec_headers(parts: list[Path]) -> None:
    """Packets of one part are decodable with another's headers only if they are the same (same settings)."""
    import av

    headers = []
    for part in parts:
        with av.open(str(part)) as container:
            headers.append(bytes(container.streams.video[0].codec_context.extradata or b""))
    if len(set(headers)) > 1:
        raise MgbpError(f"{parts[0].parent}: the segments were encoded with different codec headers; "
                        "they cannot be joined without re-encoding")


def remove_parts(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def geometry_for(model, options: VideoOptions, probe: VideoProbe) -> Geometry:
    """The single pass's window geometry for this video (`mgbp.video_windows.window_geometry`)."""
    length, stride, consumed = window_geometry(model, options, probe.total_hint)
    return Geometry(probe.count, length, stride, consumed)
