"""Flat-region texture: how much texture a method paints where the ground truth is smooth.

The perception end of the trajectory (W = 1, Section VI-A, Fig. 14) should add texture where the scene has
texture, not over skin, sky or defocused backgrounds. NIQE does not see the difference (it scores naturalness
of the whole image), so we measure it directly: in the pixels where the ground truth's luminance is flat -
its 7x7 local standard deviation is below 2 grey levels (MATLAB `rgb2ycbcr` Y on 0..255) - the mean 7x7 local
standard deviation of the output's luminance. A perfect method gives the ground truth's own value (its residual
grain, about 1.2-1.3 on Set14); a blurry one less; one that paints texture over smooth areas more.

Definitions (chosen to be simple to re-compute): Y of the uint8-rounded images in float64; local standard
deviation = the population standard deviation (ddof = 0) of each fully contained 7x7 window, assigned to the
window's centre ('valid' windows: no padding); `crop` border pixels are shaved first, as the protocol's other
scores do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mgbp.color import rgb_to_y
from mgbp.errors import ConfigError

FLAT_THRESHOLD = 2.0  # grey levels (0..255) of the ground truth's local standard deviation
WINDOW = 7


def local_std(y: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """Population standard deviation of every fully contained `window` x `window` patch of (N,1,H,W) float64."""
    y = y - y.mean(dim=(-2, -1), keepdim=True)  # centred: E[y^2] - E[y]^2 then cancels far less
    mean = F.avg_pool2d(y, window, stride=1)
    mean_square = F.avg_pool2d(y * y, window, stride=1)
    return (mean_square - mean * mean).clamp_min(0.0).sqrt()


def _luma_255(x: torch.Tensor, crop: int) -> torch.Tensor:
    y = rgb_to_y(x.to(torch.float64)) * 255.0
    return y[..., crop:y.shape[-2] - crop, crop:y.shape[-1] - crop] if crop else y


def flat_region_texture(output: torch.Tensor, reference: torch.Tensor, crop: int = 0,
                        threshold: float = FLAT_THRESHOLD, window: int = WINDOW) -> torch.Tensor:
    """Per image (N,): mean local std of the output's Y over the pixels where the reference's local std of Y is
    below `threshold`; NaN for an image without flat pixels. Inputs (N,3,H,W) in [0,1]."""
    if output.shape != reference.shape or output.dim() != 4 or output.shape[1] != 3:
        raise ConfigError(f"flat_region_texture needs two (N,3,H,W) images of one shape, got "
                          f"{tuple(output.shape)} and {tuple(reference.shape)}")
    flat = local_std(_luma_255(reference, crop), window) < threshold
    texture = local_std(_luma_255(output, crop), window)
    count = flat.sum(dim=(1, 2, 3))
    total = torch.where(flat, texture, torch.zeros_like(texture)).sum(dim=(1, 2, 3))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
