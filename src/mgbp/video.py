"""Streaming video upscaling with PyAV: decode, run the temporal windows of `mgbp.video_windows`, encode.

Frames are decoded one at a time and go through `mgbp.video_windows.overlap_add_stream` (the paper's overlapping
windows, Section IV); each finished frame is encoded at once, so memory holds at most one window of LR and HR
frames whatever the video's length.

Audio and subtitle streams are re-muxed packet by packet (never re-encoded), frame timestamps are kept, so the
frame rate, the frame count and the audio sync are preserved; rotation metadata is applied to the pixels
(the output is upright without it). The output is written under a temporary name and renamed at the end.

Colour: YUV is converted to RGB with the source's own matrix and range (an untagged source gets what players
assume: BT.709 from 720 lines up, BT.601 below; limited range unless the pixel format is a full-range `yuvj`
one), and the output is converted back with the same matrix and range and tagged with them, the source's
primaries and transfer function copied; so the colours a player shows do not shift. Frames stay 8-bit RGB in
between (the network's input).

Encoding: any video encoder of PyAV's FFmpeg (`--codec`, hardware ones such as h264_nvenc where the build and the
machine have them), opened with --crf, --preset and any --encoder-option (`encoder_options`); `check_encoder`
opens it once before any work, so that a missing encoder, GPU or a wrong option value is one line, not a
failure after the first window.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from mgbp.errors import ConfigError, ImageReadError, MgbpError, NumericalError
from mgbp.stderr import native_stderr_silenced
from mgbp.video_options import VideoOptions
from mgbp.video_windows import make_window_runner, overlap_add_stream, window_geometry

COPIED_STREAM_TYPES = ("audio", "subtitle")
CRF_CODECS = ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1")
FRAME_NAME = re.compile(r"\d{8}\.png")  # the frames FolderSink writes



def encoder_options(codec: str, options: VideoOptions) -> dict[str, str]:
    """The options the encoder `codec` is opened with: --crf (for the encoders that take one), --preset, then
    each --encoder-option as given (a later one wins). Names the encoder does not know are ignored by FFmpeg;
    wrong values fail when the encoder opens (`check_encoder` does that before any work)."""
    opened = {"crf": str(options.crf)} if options.crf is not None and codec in CRF_CODECS else {}
    if options.preset is not None:
        opened["preset"] = str(options.preset)
    opened.update({str(key): str(value) for key, value in options.encoder_options.items()})
    if not options.encoder_log and codec == "libx265":  # x265 prints to stderr itself, whatever libav's level
        opened["x265-params"] = ":".join(filter(None, [opened.get("x265-params"), "log-level=error"]))
    return opened


def silence_encoder_logs() -> None:
    """`mgbp upscale -q`: libav's log off (PyAV's level None) and SVT-AV1's own log at errors only."""
    os.environ.setdefault("SVT_LOG", "1")
    try:
        import av.logging
    except ImportError:  # PyAV is optional: without it there is no encoder to silence
        return
    av.logging.set_level(None)


ENCODER_PROBE_SIZE = 256  # pixels on a side of the frame size an encoder is opened with before any work


def check_encoder(codec: str, options: VideoOptions) -> None:
    """Before any work: `codec` must be a video encoder of this PyAV build's FFmpeg that opens here with the
    pixel format and options asked for (a hardware encoder such as h264_nvenc fails here without its GPU and
    driver; a wrong --preset value too). ConfigError in one line otherwise."""
    av = _import_av()
    if codec not in av.codecs_available:
        hardware = [name for name in HARDWARE_ENCODERS if name in av.codecs_available]
        raise ConfigError(f"--codec {codec}: this PyAV build's FFmpeg has no such encoder"
                          + (f" (hardware encoders it has: {', '.join(hardware)})" if hardware else ""))
    try:
        found = av.Codec(codec, "w")
    except (av.FFmpegError, ValueError):  # a decoder only
        raise ConfigError(f"--codec {codec}: FFmpeg can decode it but has no encoder of that name") from None
    if found.type != "video":
        raise ConfigError(f"--codec {codec}: an encoder of {found.type}, not of video")
    opened = encoder_options(codec, options)
    try:
        with native_stderr_silenced():  # x264 prints its own complaint, x265 its summary: ours is the one line
            _open_encoder(av, found, options.pix_fmt, opened)
    except (av.FFmpegError, ValueError, OSError) as exc:
        given = ", ".join(f"{k}={v}" for k, v in opened.items()) or "no options"
        hint = "; a hardware encoder needs its GPU and driver on this machine" if codec in HARDWARE_ENCODERS else ""
        raise ConfigError(f"--codec {codec} cannot encode {options.pix_fmt} here ({given}): "
                          f"{str(exc).splitlines()[0]}{hint}") from None


def _open_encoder(av, codec, pix_fmt: str, opened: dict[str, str]) -> None:
    """Open `codec` on a small frame size, then free it at once (never two encoders of one library alive)."""
    context = av.CodecContext.create(codec, "w")
    context.width = context.height = ENCODER_PROBE_SIZE
    context.time_base, context.framerate = Fraction(1, 25), Fraction(25)
    context.pix_fmt = pix_fmt
    context.options = opened
    try:
        context.open()
    finally:
        del context  # the last reference: FFmpeg frees the encoder here, inside the silenced block


HARDWARE_ENCODERS = ("h264_nvenc", "hevc_nvenc", "av1_nvenc", "h264_qsv", "hevc_qsv", "av1_qsv", "h264_vaapi",
                     "hevc_vaapi", "h264_amf", "hevc_amf", "av1_amf", "h264_videotoolbox", "hevc_videotoolbox")


# ----------------------------------------------------------------------------------------------- decoding


def _import_av():
    try:
        import av
    except ImportError as exc:  # only video needs PyAV; images work without it
        raise ConfigError("video needs PyAV: pip install av") from exc
    return av


def apply_rotation(rgb: np.ndarray, degrees_ccw: float) -> np.ndarray:
    """Turn a decoded frame upright: the display matrix rotates it `degrees_ccw` counterclockwise."""
    quarter_turns = round((degrees_ccw or 0) / 90.0) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=quarter_turns)) if quarter_turns else rgb


# AVColorSpace code -> the swscale matrix (SWS_CS_*) that converts it; the two BT.601 tags share a matrix
SWSCALE_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
BT709, BT601, UNSPECIFIED = 1, 6, 2  # AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic codes
LIMITED_RANGE, FULL_RANGE = 1, 2  # AVColorRange
HD_LINES = 720  # players assume BT.709 for untagged video of at least this height, BT.601 below


@dataclass(frozen=True)
class ColourDescription:
    """How a stream's YUV maps to RGB (matrix, range) and what it says of its colours (primaries, transfer)."""
    matrix: int = BT601  # AVColorSpace
    range: int = LIMITED_RANGE  # AVColorRange
    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED

    @classmethod
    def of_stream(cls, codec_context) -> ColourDescription:
        """The stream's tags, with what players assume where a tag is missing."""
        matrix = codec_context.colorspace
        if matrix not in SWSCALE_MATRIX:
            matrix = BT709 if (codec_context.height or 0) >= HD_LINES else BT601
        full = (codec_context.pix_fmt or "").startswith("yuvj")
        range_ = codec_context.color_range if codec_context.color_range in (LIMITED_RANGE, FULL_RANGE) else (
            FULL_RANGE if full else LIMITED_RANGE)
        return cls(int(matrix), int(range_), int(codec_context.color_primaries or UNSPECIFIED),
                   int(codec_context.color_trc or UNSPECIFIED))

    def tag(self, codec_context) -> None:
        codec_context.colorspace, codec_context.color_range = self.matrix, self.range
        codec_context.color_primaries, codec_context.color_trc = self.primaries, self.transfer

    def convert(self, frame, format_name: str, to_rgb: bool, reformatter=None):
        """`frame` to `format_name` with this matrix and range (from YUV if `to_rgb`, else to YUV). Pass one
        `av.video.reformatter.VideoReformatter` per stream: it keeps swscale's context between frames."""
        from av.video.reformatter import Interpolation, VideoReformatter

        reformatter = reformatter or VideoReformatter()
        ends = ("src", "dst") if to_rgb else ("dst", "src")
        matrix = {f"{ends[0]}_colorspace": SWSCALE_MATRIX[self.matrix]}
        ranges = {f"{ends[0]}_color_range": self.range, f"{ends[1]}_color_range": FULL_RANGE}  # RGB: full
        exact = Interpolation.BILINEAR | Interpolation.ACCURATE_RND  # default rounding: up to 1.5 levels off
        try:
            return reformatter.reformat(frame, format=format_name, interpolation=exact, **matrix, **ranges)
        except TypeError:  # PyAV without colour-range arguments: the matrix alone
            return reformatter.reformat(frame, format=format_name, interpolation=exact, **matrix)


@dataclass
class DecodedFrame:
    rgb: torch.Tensor  # (3,h,w) float32 in [0,1]
    pts: int | None
    time_base: Fraction | None


def _middle(packet) -> float:
    """Seconds at the middle of a packet (its start when it has no duration)."""
    if packet.pts is None:
        return -math.inf
    return float((packet.pts + (packet.duration or 0) / 2) * packet.time_base)


def _frame_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


class ContainerSource:
    """Video frames of a media file, plus the packets of its audio/subtitle streams for re-muxing."""

    def __init__(self, path: Path, max_frames: int | None):
        av = _import_av()
        try:
            self.container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise ImageReadError(f"{path}: cannot open video ({str(exc).splitlines()[0]})") from None
        if not self.container.streams.video:
            self.container.close()
            raise ImageReadError(f"{path}: no video stream")
        self.path, self.max_frames = path, max_frames
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.copied = [s for s in self.container.streams if s.type in COPIED_STREAM_TYPES]
        self.rate = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        self.time_base = self.video.time_base  # the frames' own clock: variable frame rates keep their times
        self.colour = ColourDescription.of_stream(self.video.codec_context)
        self.reformatter = av.video.reformatter.VideoReformatter()
        total = self.video.frames or None
        self.total = min(total, max_frames) if total and max_frames else (total or max_frames)
        self.end_time: float | None = None  # seconds; set when max_frames cuts the video
        self.queue: deque = deque()  # copied packets waiting for the video to pass their time

    def frames(self, mux_packet: Callable) -> Iterator[DecodedFrame]:
        """Decode video frames; hand audio/subtitle packets (those before the cut, if any) to `mux_packet`.

        Copied packets wait in a queue until a decoded video frame passes their time: the decoder holds a
        few packets back, so only then do we know whether `max_frames` cuts the video before them.
        """
        av = _import_av()
        count, passed_cut = 0, set()
        try:
            for packet in self.container.demux(self.video, *self.copied):
                if packet.stream.type != "video":
                    if packet.dts is not None:  # the demuxer's flush packets carry no data
                        self.queue.append(packet)
                    if self.end_time is not None and _middle(packet) >= self.end_time:
                        passed_cut.add(packet.stream.index)
                    if self.end_time is not None and len(passed_cut) >= len(self.copied):
                        break
                    continue
                if self.end_time is not None:
                    if not self.copied:
                        break
                    continue
                for frame in packet.decode():
                    rgb = self.colour.convert(frame, "rgb24", True, self.reformatter).to_ndarray()
                    rgb = apply_rotation(rgb, getattr(frame, "rotation", 0))
                    yield DecodedFrame(_frame_tensor(rgb), frame.pts, frame.time_base)
                    self._release(mux_packet, before=float(frame.pts * frame.time_base) if frame.pts else 0.0)
                    count += 1
                    if self.max_frames is not None and count >= self.max_frames:
                        self.end_time = self._time_after(frame)
                        break
        except av.FFmpegError as exc:
            raise ImageReadError(f"{self.path}: cannot decode video ({str(exc).splitlines()[0]})") from None
        self._release(mux_packet, before=math.inf if self.end_time is None else self.end_time, drop_rest=True)

    def _release(self, mux_packet: Callable, before: float, drop_rest: bool = False) -> None:
        """Mux queued packets whose middle lies before `before` (the cut is then within half a packet)."""
        kept = deque()
        while self.queue:
            packet = self.queue.popleft()
            if _middle(packet) < before:
                mux_packet(packet)
            elif not drop_rest:
                kept.append(packet)
        self.queue = kept

    def _time_after(self, frame) -> float:
        start = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
        return start + 1.0 / float(self.rate)

    def close(self) -> None:
        self.container.close()


class FolderSource:
    """A folder of frames (sorted by name, numbers compared as numbers) played at `fps`."""

    def __init__(self, path: Path, fps: float, max_frames: int | None):
        from mgbp.io import list_frames

        files = list_frames(path)  # frame order; hidden files (a killed run's temporaries) left out
        if not files:
            raise ImageReadError(f"{path}: no image frames in the folder")
        self.files = files[:max_frames] if max_frames else files
        self.rate = Fraction(fps).limit_denominator(1001)
        self.total, self.copied, self.end_time = len(self.files), [], None
        self.colour = None  # RGB images: the sink picks the matrix for the output size

    def frames(self, mux_packet: Callable) -> Iterator[DecodedFrame]:
        from mgbp.io import read_image

        for index, file in enumerate(self.files):
            rgb = read_image(file).rgb
            rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb
            yield DecodedFrame(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1), index, 1 / self.rate)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------- encoding


def _to_uint8(frame: torch.Tensor) -> np.ndarray:
    """(3,H,W) in [0,1] -> HxWx3 uint8 with the package's one rounding rule (`mgbp.io.quantise`)."""
    from mgbp.io import quantise

    return quantise(frame.permute(1, 2, 0))


MPEG4_MAX_TIME_BASE_DENOMINATOR = 65535  # MPEG-4 Part 2's vop_time_increment_resolution is 16 bits


def encoder_time_base(codec: str, source_time_base: Fraction | None) -> Fraction | None:
    """The encoder's clock: the source stream's time base, so that every frame keeps its presentation time
    exactly (a variable-frame-rate clip's irregular times included). MPEG-4 Part 2 cannot count finer than
    1/65535 s; its clock is then 1/65535 s, where only frames closer than 15 us could share a time."""
    if source_time_base is None or source_time_base <= 0:
        return None
    if codec == "mpeg4" and source_time_base.denominator > MPEG4_MAX_TIME_BASE_DENOMINATOR:
        return Fraction(1, MPEG4_MAX_TIME_BASE_DENOMINATOR)
    return Fraction(source_time_base)


class ContainerSink:
    """Encodes frames (keeping their timestamps) and re-muxes copied streams into a media file."""

    def __init__(self, path: Path, source, options: VideoOptions, size: tuple[int, int], format_name: str | None):
        av = _import_av()
        codec = options.codec or default_codec(path, av.codecs_available)
        height, width = size
        if options.pix_fmt in ("yuv420p", "nv12", "yuv420p10le") and (height % 2 or width % 2):
            raise ConfigError(f"{options.pix_fmt} needs even sizes, the output is {width}x{height}; "
                              "use --pix-fmt yuv444p")
        self.container = av.open(str(path), "w", format=format_name)
        try:
            self.stream = self.container.add_stream(codec, rate=source.rate)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, options.pix_fmt
            clock = encoder_time_base(codec, getattr(source, "time_base", None))
            if clock is not None:  # else 1 / rate: a variable-rate source's times would round onto each other
                self.stream.codec_context.time_base = self.stream.time_base = clock
        except (av.FFmpegError, ValueError) as exc:
            self.container.close()
            raise ConfigError(f"cannot encode {options.pix_fmt} with codec {codec!r} "
                              f"({str(exc).splitlines()[0]})") from None
        self.colour = source.colour or ColourDescription(matrix=BT709 if height >= HD_LINES else BT601)
        self.yuv = not options.pix_fmt.startswith(("gbr", "rgb", "bgr"))  # RGB outputs need no matrix
        self.reformatter = av.video.reformatter.VideoReformatter()
        if self.yuv:
            self.colour.tag(self.stream.codec_context)
        self.stream.options = encoder_options(codec, options)
        self.copied = {}
        for stream in source.copied:
            try:
                self.copied[stream.index] = self._template_stream(stream)
            except (av.FFmpegError, ValueError) as exc:  # e.g. a subtitle format this container cannot hold
                warnings.warn(f"dropping {stream.type} stream #{stream.index} ({stream.codec_context.name}): "
                              f"{str(exc).splitlines()[0]}", stacklevel=2)

    def _template_stream(self, stream):
        adder = getattr(self.container, "add_stream_from_template", None)  # PyAV >= 13
        return adder(stream) if adder is not None else self.container.add_stream(template=stream)

    def mux_packet(self, packet) -> None:
        if packet.stream.index in self.copied:
            packet.stream = self.copied[packet.stream.index]
            self.container.mux(packet)

    def write(self, frame: torch.Tensor, decoded: DecodedFrame) -> None:
        av = _import_av()
        video_frame = av.VideoFrame.from_ndarray(_to_uint8(frame), format="rgb24")
        if self.yuv:
            video_frame = self.colour.convert(video_frame, self.stream.pix_fmt, False, self.reformatter)
        if decoded.pts is not None and decoded.time_base is not None:
            video_frame.pts, video_frame.time_base = decoded.pts, decoded.time_base
        self.container.mux(self.stream.encode(video_frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))  # flush the encoder's delayed frames
        self.container.close()

    def abort(self) -> None:
        self.container.close()


class FolderSink:
    """Writes frames as numbered PNGs (`00000000.png`, ...) into a folder."""

    def __init__(self, path: Path):
        self.path, self.index = path, 0

    def mux_packet(self, packet) -> None:  # a frame folder has no audio
        pass

    def write(self, frame: torch.Tensor, decoded: DecodedFrame) -> None:
        from mgbp.io import write_image

        write_image(self.path / f"{self.index:08d}.png", _to_uint8(frame))
        self.index += 1

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------- the command


def upscale_video(source_path, target_path, model, options: VideoOptions | None = None,
                  to_frames: bool = False) -> Path:
    """Upscale a video file or a folder of frames into a video file or (`to_frames`) a folder of PNG frames."""
    options = options or VideoOptions()
    from mgbp.backprojection import check_steps
    from mgbp.inference import check_noise_amplitude

    check_noise_amplitude(options.noise, options.allow_extrapolation)
    check_steps(options.consistent, options.consistent_steps)  # before the target is created
    source_path, target_path = Path(source_path), Path(target_path)
    to_folder = to_frames or not target_path.suffix
    if to_folder:
        check_frames_target(source_path, target_path)
    source = (FolderSource(source_path, options.fps, options.max_frames) if source_path.is_dir()
              else ContainerSource(source_path, options.max_frames))
    try:
        length, stride, consumed = window_geometry(model, options, source.total)
    except ConfigError:
        source.close()
        raise
    target_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_path(target_path, folder=to_folder)
    sink = None
    try:
        pending: deque[DecodedFrame] = deque()  # timestamps of frames in flight, in order
        early_packets = []  # audio that comes before the first video frame, while the encoder does not exist

        def mux(packet):
            early_packets.append(packet) if sink is None else sink.mux_packet(packet)

        decoded = source.frames(mux)
        first = next(decoded, None)
        if first is None:
            raise ImageReadError(f"{source_path}: no video frames")
        if to_folder:
            sink = FolderSink(temporary)
        else:  # the encoder needs the output size: the first (upright) frame's times the scale
            size = (int(model.scale) * first.rgb.shape[1], int(model.scale) * first.rgb.shape[2])
            sink = ContainerSink(temporary, source, options, size, _format_for(target_path))
        for packet in early_packets:
            sink.mux_packet(packet)

        def lr_frames():
            for item in _chain_first(first, decoded):
                pending.append(item)
                yield item.rgb

        bar = _frame_bar(source.total, options.progress)
        for index, frame in enumerate(overlap_add_stream(lr_frames(), make_window_runner(model, options),
                                                         length, stride, consumed)):
            if not bool(torch.isfinite(frame).all()):  # never encoded as black (run_model checks each tile too)
                raise NumericalError(f"{source_path}: output frame {index} has NaN/Inf values; nothing was written")
            sink.write(frame, pending.popleft())
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        sink.close()
        source.close()
        _publish(temporary, target_path)
    except BaseException as exc:
        if sink is not None:
            sink.abort()
        source.close()
        _remove(temporary)
        av = sys.modules.get("av")
        if av is not None and isinstance(exc, av.FFmpegError):  # e.g. an encoder refusing an option
            raise MgbpError(f"{source_path}: {str(exc).splitlines()[0]}") from None
        raise
    return target_path


def _chain_first(first, rest):
    yield first
    yield from rest


def default_codec(target: Path, available) -> str:
    """The encoder when none is asked for: raw video for a .y4m file (the only kind YUV4MPEG holds), else libx264
    (mpeg4 where PyAV's FFmpeg lacks it)."""
    if Path(target).suffix.lower() == ".y4m":
        return "rawvideo"
    return "libx264" if "libx264" in available else "mpeg4"


def _format_for(target: Path) -> str | None:
    """Container format from the final name (the temporary name keeps the extension, this is belt and braces)."""
    return {".mkv": "matroska", ".m4v": "mp4", ".ts": "mpegts"}.get(target.suffix.lower())


def _temporary_path(target: Path, folder: bool) -> Path:
    """A fresh hidden `.NAME.tmp-*` file or folder beside `target` (absolute: `-o .` has no name of its own),
    never inside it; `mgbp upscale` removes such leftovers of a killed run on its next start."""
    target = target.resolve()
    if folder:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    handle, name = tempfile.mkstemp(prefix=f".{target.stem}.tmp-", suffix=target.suffix, dir=target.parent)
    os.close(handle)
    return Path(name)


def is_frame_file(path: Path) -> bool:
    """A frame as `FolderSink` names it (`00000012.png`): what a frame-folder output may hold and replace."""
    return FRAME_NAME.fullmatch(path.name) is not None and path.is_file()


def check_frames_target(source: Path, target: Path) -> None:
    """Refuse (ConfigError, before any work) a frame-folder output that would hold the input or that holds
    anything but the frames of an earlier run: publishing replaces frames, and must never touch other files."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ConfigError(f"{target}: exists and is not a folder (frames are written into a folder)")
    where, what = target.resolve(), source.resolve()
    if where == what or where in what.parents:
        raise ConfigError(f"{target}: the frame folder would contain the input {source}; choose another -o")
    foreign = sorted(p.name for p in target.iterdir() if not is_frame_file(p))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 3 else "")
        raise ConfigError(f"{target}: holds files that are not frames of an earlier run ({shown}); "
                          f"choose a new or empty folder")


def _publish(temporary: Path, target: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    # mkstemp/mkdtemp make private files; give the output the permissions a plain new file would have
    os.chmod(temporary, (0o777 if temporary.is_dir() else 0o666) & ~umask)
    if temporary.is_dir() and target.is_dir():  # --overwrite of a frame folder: its frames only
        _replace_frames(temporary, target)
        return
    os.replace(temporary, target)


def _replace_frames(temporary: Path, target: Path) -> None:
    """Move the new frames into `target`, then drop the earlier run's frames beyond the new count; nothing
    else is touched (`check_frames_target` made sure there is nothing else)."""
    written = set()
    for frame in sorted(temporary.iterdir()):
        os.replace(frame, target / frame.name)
        written.add(frame.name)
    for old in target.iterdir():
        if is_frame_file(old) and old.name not in written:
            old.unlink()
    temporary.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _frame_bar(total: int | None, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="frames", unit="frame")
