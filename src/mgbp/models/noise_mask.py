"""Content-adaptive noise amplitude: Algorithm 1, line 1, with the noise shaped by the picture.

Algorithm 1 feeds x = [X, W N(0,1)]: the same amplitude everywhere. At W = 1 the generator then paints texture
over smooth regions too (skin, sky, defocused backgrounds: issue 14's "crackled" flats), because the noise is
there to be used. With a mask the input becomes

    x = [X, W m(X) N(0,1)],    m(X) = gain * ramp(s / flat) * (1 - (1 - busy_floor) * ramp((s - busy) / busy))

where s is the 7x7 local standard deviation of X's luminance (MATLAB `rgb2ycbcr` Y, grey levels 0..255; the
window of `mgbp.metrics.texture`, edge-replicated back to X's size) and ramp(t) = min(max(t, 0), 1). The
noise fades out where the input is flatter than `flat` grey levels (no grain to add), is full in textured
regions, and falls to `busy_floor` where the input is already busy (s >= 2 busy: detail the network reproduces,
where invented texture costs the most distortion). `gain` rescales W so that W = 1 stays the model's
perceptual end. W = 0 is untouched (m multiplies the noise, not X), and so is every W when no mask is set.
The mask is local (radius 3 output pixels), so tiles reproduce the whole image's output
(`MGBPv2._receptive_radius_hr` adds it).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from mgbp.color import YCBCR_MATRIX
from mgbp.errors import ConfigError
from mgbp.metrics.texture import WINDOW
from mgbp.models.config_sections import section_from_any, with_section
from mgbp.tracing import is_tracing


@dataclasses.dataclass(frozen=True)
class NoiseMask:
    """The parameters of m(X) (grey levels of Y on 0..255 for `flat` and `busy`)."""

    flat: float = 1.0
    busy: float = 10.0
    busy_floor: float = 0.5
    gain: float = 1.0

    def __post_init__(self):
        values = dataclasses.asdict(self)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()):
            raise ConfigError(f"noise_mask values must be finite numbers, got {values}")
        if self.flat < 0 or self.busy <= 0 or self.gain <= 0 or not 0 <= self.busy_floor <= 1:
            raise ConfigError(
                f"noise_mask needs flat >= 0, busy > 0, gain > 0 and busy_floor in [0, 1], got {values}"
            )

    @classmethod
    def from_any(cls, value) -> NoiseMask | None:
        """None, a NoiseMask, or its dict (as stored in a weight file's config) -> NoiseMask or None."""
        return section_from_any(cls, value, "noise_mask", convert=float)

    @property
    def radius(self) -> int:
        """Output pixels of X that reach one value of m (half the local-std window)."""
        return WINDOW // 2


def _ramp(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(0.0, 1.0)


def _local_std_about_centres(y: torch.Tensor, window: int) -> torch.Tensor:
    """Population std of every fully contained window of (N,1,H,W) y, from the differences to each window's
    centre pixel: var = mean((y - y_c)^2) - mean(y - y_c)^2. The differences are small where the picture is
    flat, so float32 keeps them (E[y^2] - E[y]^2 on grey levels near 100 would leave ~0.05 of round-off there),
    and nothing depends on the rest of the image, so a tile computes what the whole image does."""
    h, w = y.shape[-2] - window + 1, y.shape[-1] - window + 1
    half = window // 2
    centre = y[..., half : half + h, half : half + w]
    squares = torch.zeros_like(centre)
    for dy in range(window):
        for dx in range(window):
            d = y[..., dy : dy + h, dx : dx + w] - centre
            squares.addcmul_(d, d)  # in place: 49 passes, no new buffer each
    mean_difference = F.avg_pool2d(y, window, stride=1) - centre
    return (squares / window**2 - mean_difference * mean_difference).clamp_min(0.0).sqrt()


def _window_sum(t: torch.Tensor, window: int, dim: int) -> torch.Tensor:
    """Sums of `window` consecutive values along `dim` (only fully contained windows): shifted slices added in
    place, each a whole-tensor pass that runs on every thread (avg_pool2d on a one-channel map runs on one)."""
    length = t.shape[dim] - window + 1
    total = t.narrow(dim, 0, length).clone()
    for shift in range(1, window):
        total += t.narrow(dim, shift, length)
    return total


def _local_std_in_float64(y: torch.Tensor, window: int) -> torch.Tensor:
    """The same statistic as `_local_std_about_centres`, as E[y^2] - E[y]^2 over separable box sums in float64,
    where grey levels squared (< 2^16) keep 1e-11 of their variance. Each window's sum adds the same values in
    the same order wherever it lies, so a tile computes what the whole image does. Faster on a CPU than
    avg_pool2d (one thread for a one-channel map) and than the 49 passes (the mask as a whole:
    `benchmarks/bench_speed.py --only g --baseline fbf3485`).
    Eager mode only: ONNX graphs keep the float32 form (ONNX Runtime's CPU kernels are float32)."""
    def box_mean(t: torch.Tensor) -> torch.Tensor:
        return _window_sum(_window_sum(t, window, -2), window, -1).div_(window * window)

    y64 = y.double()
    mean = box_mean(y64)
    return (box_mean(y64 * y64) - mean * mean).clamp_min(0.0).sqrt().float()


def luminance_std(X: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) RGB in [0,1] -> (N,1,H,W) float32: the 7x7 local std of Y in grey levels, edges replicated."""
    # Y of MATLAB rgb2ycbcr in grey levels (its offset of 16 cancels in a standard deviation) as three scaled
    # planes added: a 3 -> 1 channel 1x1 convolution takes a slow oneDNN path on CPU (torch 2.13; the mask
    # before and after: `benchmarks/bench_speed.py --only g --baseline fbf3485`), and ONNX gets the same Mul/Add
    red, green, blue = X.float().unbind(1)
    r, g, b = YCBCR_MATRIX[0]
    y = (red * r + green * g).add_(blue, alpha=b).unsqueeze(1)
    s = _local_std_about_centres(y, WINDOW) if is_tracing() else _local_std_in_float64(y, WINDOW)
    half = WINDOW // 2
    return F.pad(s, (half, half, half, half), mode="replicate")


def noise_mask(X: torch.Tensor, mask: NoiseMask) -> torch.Tensor:
    """m(X) as (N,1,H,W) in X's dtype."""
    s = luminance_std(X)
    flat = torch.ones_like(s) if mask.flat == 0 else _ramp(s / mask.flat)
    busy = 1.0 - (1.0 - mask.busy_floor) * _ramp((s - mask.busy) / mask.busy)
    return (mask.gain * flat * busy).to(X.dtype)


def with_noise_mask(model, mask: NoiseMask | None):
    """An image MGBPv2 with the same weights under a config whose `noise_mask` is `mask` (None: removed)."""
    return with_section(model, "noise_mask", mask)
