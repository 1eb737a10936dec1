"""Tiny stand-in generators for the inference and video tests (the real MGBP models are far too slow here).

They keep the generator contract (`mgbp.models.contract`: `scale`, `is_video`, `border_lr`, `capabilities`,
`forward(lr, noise_amp, noise)`, and the clip members for 3D): MATLAB bicubic upscale plus small random conv nets
before and after it, so that tile borders really change the output (zero padding, the bicubic's mirrored edge)
unless the tiling is right. They draw their own noise in every tile and know no placement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mgbp.models.contract import Capabilities
from mgbp.resize import imresize


@dataclass
class TinyConfig:
    scale: int = 2
    clip_length: int = 1


class TinyGenerator(nn.Module):
    """Bicubic upscale + residual conv nets at LR and HR; 3D variant mixes neighbouring frames."""

    family = "tiny"
    noise_channels = 1
    capabilities = Capabilities(whole_image_noise=False, placement=False)

    def __init__(self, scale: int = 2, seed: int = 0, clip_length: int = 1):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.scale, self.is_video, self.clip_length = scale, clip_length > 1, clip_length
        self.frames_consumed, self.border_frames = 0, 1  # 3D: each frame mixes in its two neighbours
        self.config = TinyConfig(scale, clip_length)
        # Receptive field: 2 LR pixels (LR convs) + 2 (bicubic) + 2 HR pixels (HR convs) -> 5 LR pixels.
        self.border_lr = 5
        self.lr_net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.hr_net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        for param in self.parameters():
            param.data = 0.3 * torch.randn(param.shape, generator=generator)

    def frame_forward(self, lr, noise_amp=0.0):
        up = imresize(lr + 0.1 * self.lr_net(lr), scale=self.scale)
        out = up + 0.1 * self.hr_net(up)
        amp = torch.as_tensor(noise_amp, dtype=out.dtype, device=out.device).reshape(-1, 1, 1, 1)
        if float(amp.abs().max()) > 0:
            out = out + amp * 0.01 * torch.randn_like(out[:, :1])
        return out

    def forward(self, lr, noise_amp=0.0, noise=None):
        if lr.dim() == 4:
            return self.frame_forward(lr, noise_amp)
        n, c, t, h, w = lr.shape
        frames = self.frame_forward(lr.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w))
        frames = frames.reshape(n, t, c, *frames.shape[-2:]).permute(0, 2, 1, 3, 4)
        # temporal mixing with zero-padded neighbours: the clip borders differ from the middle, as in MGBP-3D
        padded = torch.nn.functional.pad(frames, (0, 0, 0, 0, 1, 1))
        return 0.8 * frames + 0.1 * (padded[:, :, :-2] + padded[:, :, 2:])


class OomGenerator(TinyGenerator):
    """Raises the CUDA out-of-memory error message when asked for more than `max_pixels` LR pixels per pass."""

    def __init__(self, max_pixels: int, **kwargs):
        super().__init__(**kwargs)
        self.max_pixels, self.calls = max_pixels, []

    def forward(self, lr, noise_amp=0.0, noise=None):
        pixels = lr.shape[0] * lr.shape[-1] * lr.shape[-2]
        self.calls.append(tuple(lr.shape))
        if pixels > self.max_pixels:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return super().forward(lr, noise_amp, noise)


class NearestGenerator(torch.nn.Module):
    """The cheapest stand-in: nearest-neighbour upscaling (for container tests on real HD video)."""

    family, noise_channels, is_video, border_lr, border_frames = "nearest", 0, False, 0, 0
    capabilities = Capabilities(whole_image_noise=False, placement=False)

    def __init__(self, scale: int = 2):
        super().__init__()
        self.scale, self.config = scale, TinyConfig(scale, 1)

    def forward(self, lr, noise_amp=0.0, noise=None):
        return lr.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)
