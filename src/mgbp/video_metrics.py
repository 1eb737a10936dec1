"""Video evaluation: per-frame fidelity and temporal flicker of an upscaled clip (the video results of Section IV,
"Video Inference", and the MGBP-3D target of issue 6).

Protocol, frame by frame as `mgbp.protocol` does for images: HR frame -> modcrop(f) -> LR = MATLAB bicubic 1/f
on uint8 -> method -> round to uint8 -> PSNR-Y and SSIM-Y with `f` border pixels ignored, averaged over frames
(the usual Vid4 convention: the mean of per-frame PSNRs, not the PSNR of the mean MSE).

Temporal flicker (no equation in the paper; defined here so that per-frame 2D models and 3D models can be
compared): with Y the MATLAB `rgb2ycbcr` luma on [0, 255], borders cropped,

    flicker = mean over t >= 1 and pixels of |(Y_out[t] - Y_out[t-1]) - (Y_gt[t] - Y_gt[t-1])|,

the mean absolute error of the output's temporal differences against the ground truth's. It is 0 for a perfect
output, ignores errors that are constant in time (a fixed offset, a static blur), and grows with frame-to-frame
changes the ground truth does not have.

Methods: bicubic and 2D generators run frame by frame (`mgbp.protocol.upscale_uint8`, spatially tiled); a 3D
generator runs over the whole clip through `mgbp.video`'s windowed overlap-add (the paper's Fig. 6 scheme).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from mgbp.color import rgb_to_y
from mgbp.errors import ConfigError, ImageReadError

PEAK = 255.0


# ------------------------------------------------------------------------------------------------- clips


def load_clip(folder: Path, max_frames: int | None = None) -> list[np.ndarray]:
    """The frames of a folder (sorted by name) as uint8 HxWx3 arrays; at most `max_frames` of them."""
    from mgbp.io import read_image
    from mgbp.protocol import list_images

    paths = list_images(Path(folder))
    if max_frames is not None:
        if max_frames < 1:
            raise ConfigError(f"--max-frames must be at least 1, got {max_frames}")
        paths = paths[:max_frames]
    frames = [read_image(p).rgb_uint8() for p in paths]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ImageReadError(f"{folder}: the frames differ in size ({sorted(shapes)})")
    return frames


def center_crop(frames: Sequence[np.ndarray], height: int, width: int) -> list[np.ndarray]:
    """The same centred height x width window of every frame (a frame smaller than that is kept whole)."""
    h, w = frames[0].shape[:2]
    height, width = min(height, h), min(width, w)
    top, left = (h - height) // 2, (w - width) // 2
    return [f[top:top + height, left:left + width] for f in frames]


def protocol_clip(hr_frames: Sequence[np.ndarray], scale: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(modcropped HR frames, MATLAB-bicubic LR frames), the image protocol applied to each frame."""
    from mgbp.protocol import protocol_pair

    pairs = [protocol_pair(f, scale, source=f"frame {k}") for k, f in enumerate(hr_frames)]
    return [hr for hr, _ in pairs], [lr for _, lr in pairs]


def stack_uint8(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 frames -> float64 (T,3,H,W) in [0,1] (float64 holds k/255 exactly for the metrics)."""
    array = np.stack([np.asarray(f) for f in frames])
    return torch.from_numpy(array).permute(0, 3, 1, 2).to(torch.float64) / PEAK


# ------------------------------------------------------------------------------------------------- metrics


def luma_255(clip: torch.Tensor, crop: int) -> torch.Tensor:
    """(T,3,H,W) RGB in [0,1] -> float64 (T,H',W') Y of MATLAB rgb2ycbcr on [0,255], `crop` pixels shaved."""
    y = rgb_to_y(clip.to(torch.float64))[:, 0] * PEAK
    return y[:, crop:y.shape[1] - crop, crop:y.shape[2] - crop] if crop else y


def _check_clips(output: torch.Tensor, reference: torch.Tensor) -> None:
    if output.dim() != 4 or output.shape[1] != 3 or output.shape != reference.shape:
        raise ConfigError(f"clips must both be (T,3,H,W) of the same shape, got {tuple(output.shape)} and "
                          f"{tuple(reference.shape)}")


def temporal_flicker(output: torch.Tensor, reference: torch.Tensor, crop: int = 0) -> float:
    """Mean |(Y_out[t] - Y_out[t-1]) - (Y_gt[t] - Y_gt[t-1])| over t >= 1 and pixels (Y on [0,255])."""
    _check_clips(output, reference)
    if output.shape[0] < 2:
        raise ConfigError("temporal flicker needs at least 2 frames")
    error = luma_255(output, crop) - luma_255(reference, crop)
    # the difference of temporal differences is the temporal difference of the error: a constant error cancels
    return float(error.diff(dim=0).abs().mean())


def per_frame_scores(output: torch.Tensor, reference: torch.Tensor, crop: int) -> dict[str, list[float]]:
    """PSNR-Y and SSIM-Y of each frame, `crop` border pixels ignored (`mgbp.metrics`)."""
    from mgbp.metrics import psnr, ssim

    _check_clips(output, reference)
    return {"psnr_y": psnr(output, reference, crop=crop, y_channel=True).tolist(),
            "ssim_y": ssim(output, reference, crop=crop, y_channel=True).tolist()}


def clip_scores(output: torch.Tensor, reference: torch.Tensor, crop: int) -> dict:
    """Frame-averaged PSNR-Y and SSIM-Y, temporal flicker (None for a single frame), and the per-frame lists."""
    frames = per_frame_scores(output, reference, crop)
    return {
        "frames": int(output.shape[0]),
        "psnr_y": float(np.mean(frames["psnr_y"])),
        "ssim_y": float(np.mean(frames["ssim_y"])),
        "flicker": temporal_flicker(output, reference, crop) if output.shape[0] > 1 else None,
        "per_frame": frames,
    }


# ------------------------------------------------------------------------------------------------- methods


def upscale_per_frame(model: torch.nn.Module, lr_frames: Sequence[np.ndarray], seed: int = 0,
                      tile: int | None = None, progress: Callable | None = None,
                      self_ensemble: bool = False) -> list[np.ndarray]:
    """Bicubic or a 2D generator applied to each uint8 LR frame, outputs rounded to uint8 (at W = 0);
    `self_ensemble`: each frame as the mean over the 8 flips/rotations."""
    from mgbp.protocol import upscale_uint8

    outputs = []
    for frame in lr_frames:
        outputs.append(upscale_uint8(model, frame, noise_amp=0.0, seed=seed, tile=tile,
                                     self_ensemble=self_ensemble))
        if progress is not None:
            progress()
    return outputs


def upscale_clip_3d(model: torch.nn.Module, lr_frames: Sequence[np.ndarray], window: int | None = None,
                    stride: int | None = None, tile: int | None = None, progress: Callable | None = None,
                    self_ensemble: bool = False) -> list[np.ndarray]:
    """A 3D generator over the whole clip: `mgbp.video`'s windows of the model's clip length (or `window`),
    every `stride` frames (None: `mgbp.video_windows.default_stride`; see `window_stride`), overlap-added with
    its temporal window; outputs
    rounded to uint8 (at W = 0).
    `self_ensemble`: each window as the mean over the 8 spatial flips/rotations."""
    from mgbp.protocol import from_uint8, to_uint8
    from mgbp.video_options import VideoOptions
    from mgbp.video_windows import (
        frames_consumed,
        make_window_runner,
        model_clip_length,
        overlap_add_stream,
        window_stride,
    )

    consumed = frames_consumed(model)
    length = window or min(model_clip_length(model), len(lr_frames) + 2 * consumed)
    if length - 2 * consumed < 1:
        raise ConfigError(f"a window of {length} frames is too short: the model consumes {consumed} at each end")
    stride = window_stride(stride, length - 2 * consumed)
    options = VideoOptions(window=length, stride=stride, tile=tile, noise=0.0, seed=0, progress=False,
                           self_ensemble=self_ensemble)
    frames = (from_uint8(f)[0] for f in lr_frames)
    outputs = []
    with torch.no_grad():
        for frame in overlap_add_stream(frames, make_window_runner(model, options), length, stride, consumed):
            outputs.append(to_uint8(frame[None]))
            if progress is not None:
                progress()
    return outputs
