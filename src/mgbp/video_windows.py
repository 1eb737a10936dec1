"""The paper's "Video Inference" (Section IV, Fig. 6): overlapping temporal windows, weighted and averaged.

The paper cuts the stream into overlapping spatio-temporal patches of the training clip length, separated by 5
frames, multiplies each output by a window and averages. Here, frames are decoded one at a time into a buffer of
the last T frames (T = the MGBP-3D clip length; 1 for a per-frame 2D model); every `stride` frames the buffer
runs through the model (spatially tiled by `mgbp.tiling.run_model`) and its T output frames are added, times
the temporal window, to per-frame accumulators together with the window weights. A frame is finished, divided by
its weight sum and encoded as soon as no later window can reach it, so memory holds at most T LR and T HR frames
whatever the video's length. The last window is moved back to end on the last frame (as the spatial tiles are).

Window choice: the paper names a "Hadamard window" (each output is multiplied element-wise, a Hadamard product,
by window weights) without giving its shape. We use a Hann window sampled at half-integer points,
w_k = sin^2(pi (k + 1/2) / T): smooth, largest in the middle of the clip where a fully 3D network without
temporal padding sees the most context, and never zero, so the first and last frames of the video (seen by one
window only) keep a valid weight. Because every frame is divided by its own weight sum, any positive window
gives a proper weighted average; with stride <= T/2 the window's decay toward clip ends hides clip borders.
The default stride is therefore half the frames a window produces, at most the paper's 5: 5 for the paper's
37-frame clips, 2 for our 5-frame video model (shipped mgbp-x4-video on Vid4-city: 26.28 dB against 26.20 for
back-to-back windows, at 2.5 times the work; `scripts/eval_video.py --stride 5`).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import torch

from mgbp.errors import ConfigError
from mgbp.video_options import VideoOptions

PAPER_STRIDE = 5  # frames between windows in the paper's video inference


def temporal_window(length: int) -> torch.Tensor:
    """Hann window at half-integer points, sin^2(pi (k + 1/2) / T): positive, symmetric (float64, (T,))."""
    k = torch.arange(length, dtype=torch.float64)
    return torch.sin(math.pi * (k + 0.5) / length) ** 2


def default_stride(produced: int) -> int:
    """Frames between windows when none is given: half of the `produced` frames of a window (so that every
    frame is covered twice and the window's decay hides clip borders), at most PAPER_STRIDE, at least 1."""
    return min(PAPER_STRIDE, max(1, produced // 2))


def window_stride(requested: int | None, produced: int) -> int:
    """The stride to run: the requested one (None: `default_stride`), never more than the frames a window
    produces (a larger one would leave frames no window covers)."""
    return min(default_stride(produced) if requested is None else requested, produced)


def model_clip_length(model) -> int:
    """Frames per window: a clip generator's training clip length (`clip_length`, MGBP-3D's `config.frames`);
    1 for an image generator, run frame by frame."""
    return int(model.clip_length) if model.is_video else 1


def frames_consumed(model) -> int:
    """Frames a clip generator loses at each end of a window (0 with temporal padding, and for image models)."""
    return int(model.frames_consumed) if model.is_video else 0


def window_geometry(model, options: VideoOptions, total: int | None) -> tuple[int, int, int]:
    """(frames per window, stride, frames the model consumes at each end) for a video of `total` frames (None:
    unknown). A clip shorter than the model's window gets one window of its own length, no padding."""
    consumed = frames_consumed(model)
    length = options.window or model_clip_length(model)
    if total and not options.window:
        length = min(length, total + 2 * consumed)
    if length - 2 * consumed < 1:
        raise ConfigError(f"a window of {length} frames is too short: the model consumes {consumed} at each end")
    return length, window_stride(options.stride, length - 2 * consumed), consumed


class OverlapAdd:
    """Per-frame accumulators of window-weighted outputs; frames leave in order once final."""

    def __init__(self, first_out: int = 0):
        self.sums: dict[int, torch.Tensor] = {}
        self.weights: dict[int, float] = {}
        self.next_out = first_out  # frames below this were already handed out (or are padding)

    def add(self, first: int, frames: torch.Tensor) -> None:
        window = temporal_window(len(frames))
        for k, frame in enumerate(frames):
            index = first + k
            if index < self.next_out:  # the moved-back last window overlaps frames already finished
                continue
            if index in self.sums:
                self.sums[index] += float(window[k]) * frame
                self.weights[index] += float(window[k])
            else:
                self.sums[index], self.weights[index] = float(window[k]) * frame, float(window[k])

    def pop(self, before: int) -> Iterator[torch.Tensor]:
        while self.next_out < before:
            index = self.next_out
            yield self.sums.pop(index) / self.weights.pop(index)
            self.next_out += 1


def overlap_add_stream(frames: Iterable[torch.Tensor], run_window: Callable[[torch.Tensor], torch.Tensor],
                       length: int, stride: int, consumed: int = 0) -> Iterator[torch.Tensor]:
    """(3,h,w) LR frames -> upscaled frames, in order: windows of `length` every `stride` frames, overlap-add.

    `run_window` maps a (T,3,h,w) clip to (T - 2 consumed, 3, H, W), the clip's middle frames (a 3D model
    without temporal padding loses `consumed` frames at each end). The stream is extended by `consumed` copies
    of its first and last frames so every frame is produced; a video shorter than a window is padded by
    repeating its last frame (the padding's outputs are dropped).
    """
    if not 1 <= stride <= length - 2 * consumed:
        raise ConfigError(f"the window stride must be between 1 and the frames a window produces "
                          f"({length - 2 * consumed}), got {stride}")
    buffer: deque[torch.Tensor] = deque(maxlen=length)
    blend = OverlapAdd(first_out=consumed)
    count = next_start = covered = 0  # in the padded stream
    for frame in _pad_ends(frames, consumed):
        buffer.append(frame)
        count += 1
        if count == next_start + length:
            blend.add(next_start + consumed, run_window(torch.stack(tuple(buffer))))
            covered, next_start = count - consumed, next_start + stride
            yield from blend.pop(before=next_start + consumed)
    if count <= 2 * consumed:
        return
    if covered < count - consumed:  # the tail: one more window, ending on the last frame
        clip = list(buffer) + [buffer[-1]] * (length - len(buffer))
        blend.add(max(0, count - length) + consumed, run_window(torch.stack(clip)))
    yield from blend.pop(before=count - consumed)


def _pad_ends(frames: Iterable[torch.Tensor], copies: int) -> Iterator[torch.Tensor]:
    """The frames, with the first and the last repeated `copies` more times."""
    last = None
    for index, frame in enumerate(frames):
        for _ in range(copies if index == 0 else 0):
            yield frame
        yield frame
        last = frame
    for _ in range(copies if last is not None else 0):
        yield last


def window_generator(seed: int | None, index: int) -> torch.Generator | None:
    """The noise generator of window `index` of a video seeded with `seed` (None: torch's RNG): seeded from a
    hash of both, so any window's noise is drawn without drawing the windows before it."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"mgbp-window:{int(seed)}:{int(index)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def make_window_runner(model, options: VideoOptions,
                       first_window: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """(T,3,h,w) clip -> (T,3,H,W): one (1,3,T,h,w) call for a 3D model, a batch of frames for a 2D one.

    At W > 0 each window gets one noise map (cropped per spatial tile by `run_model`), drawn from a generator
    seeded with (`options.seed`, the window's index): a seed reproduces the video, and a worker that starts at
    window `first_window` (`mgbp.video_segments`: a time segment of a long video) draws what a single pass does.
    """
    from mgbp.backprojection import back_project
    from mgbp.tiling import run_model

    windows = itertools.count(first_window)

    def run(clip: torch.Tensor) -> torch.Tensor:
        generator = window_generator(options.seed, next(windows))
        if model.is_video:
            out = run_model(model, clip.permute(1, 0, 2, 3)[None], noise_amp=options.noise, tile=options.tile,
                            overlap=options.overlap, generator=generator,
                            self_ensemble=options.self_ensemble)[0].permute(1, 0, 2, 3)
        else:
            out = run_model(model, clip, noise_amp=options.noise, tile=options.tile, overlap=options.overlap,
                            generator=generator, self_ensemble=options.self_ensemble)
        if options.consistent:
            middle = clip[(clip.shape[0] - out.shape[0]) // 2:][: out.shape[0]]
            out = back_project(middle, out, int(model.scale), options.consistent_steps)
        return out.clamp(0.0, 1.0)

    return run
