"""Full-reference fidelity metrics: PSNR, SSIM (Section V-A, Tables II-IV) and RMSE (Fig. 11, 12, 14, Table V).

Conventions of the SR literature, as in `../shared/data/README.md`:
- PSNR and SSIM on the Y channel of MATLAB `rgb2ycbcr` on the [0, 255] scale (Y = 16 + (65.481 R + 128.553 G +
  24.966 B) / 255 with RGB in [0, 1]), computed in float from the (already uint8-rounded) RGB and not rounded
  again, ignoring `crop` pixels at every border; `y_channel=False` gives the RGB variants (PSNR from the MSE
  over all three channels, SSIM averaged over the three channels).
- SSIM as Wang et al.'s `ssim_index.m`: 11x11 Gaussian window (sigma 1.5, normalised), K1 = 0.01, K2 = 0.03,
  L = 255, local statistics by 'valid' filtering (no padding), the mean of the SSIM map.
- RMSE on the [0, 255] scale. The PIRM-2018 scripts (`convert_shave_image`) measure it on the uint8 Y
  channel with a border shave: `rmse(a, b, crop=4, y_channel=True, round_y=True)`; note that they report a
  set's RMSE as sqrt(mean of per-image MSE), i.e. `rmse(...).square().mean().sqrt()`.

Every metric takes batched tensors (N, 3, H, W) (or (N, 1, H, W) for a single channel, used as it is) with
values in [0, 1], computes in float64 and returns a float64 tensor (N,) of per-image values.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from mgbp.color import rgb_to_y
from mgbp.errors import ConfigError
from mgbp.io import round_levels

PEAK = 255.0
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(name: str, a: torch.Tensor, b: torch.Tensor, crop: int, min_size: int) -> None:
    for label, x in (("first", a), ("second", b)):
        if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 4 or x.shape[1] not in (1, 3):
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ConfigError(f"{name}: the {label} image must be a float tensor (N, 3|1, H, W), got {shape}")
    if a.shape != b.shape:
        raise ConfigError(f"{name}: the images differ in shape, {tuple(a.shape)} vs {tuple(b.shape)}")
    if not isinstance(crop, int) or crop < 0:
        raise ConfigError(f"{name}: crop must be a non-negative integer, got {crop!r}")
    h, w = a.shape[-2] - 2 * crop, a.shape[-1] - 2 * crop
    if min(h, w) < min_size:
        raise ConfigError(
            f"{name}: a {a.shape[-2]}x{a.shape[-1]} image cropped by {crop} leaves {max(h, 0)}x{max(w, 0)} "
            f"pixels, fewer than the {min_size}x{min_size} it needs"
        )


def _to_255(x: torch.Tensor, crop: int, y_channel: bool, round_y: bool = False) -> torch.Tensor:
    """float64 on the [0, 255] scale, Y only (N, 1, H, W) or all channels, borders cropped."""
    x = x.to(torch.float64)
    if y_channel and x.shape[1] == 3:
        x = rgb_to_y(x) * PEAK
        if round_y:  # MATLAB rgb2ycbcr on a uint8 image returns uint8
            x = round_levels(x)
    else:
        x = x * PEAK
    if crop:
        x = x[..., crop:-crop, crop:-crop]
    return x


def mse(a: torch.Tensor, b: torch.Tensor, crop: int = 0, y_channel: bool = True) -> torch.Tensor:
    """Mean squared error per image on the [0, 255] scale (Y or all channels), float64 (N,)."""
    _check_pair("mse", a, b, crop, 1)
    diff = _to_255(a, crop, y_channel) - _to_255(b, crop, y_channel)
    return diff.square().mean(dim=(1, 2, 3))


def psnr(a: torch.Tensor, b: torch.Tensor, crop: int = 0, y_channel: bool = True) -> torch.Tensor:
    """PSNR in dB per image, 10 log10(255^2 / MSE), float64 (N,); +inf for identical images."""
    _check_pair("psnr", a, b, crop, 1)
    error = mse(a, b, crop=crop, y_channel=y_channel)
    return 10.0 * torch.log10(PEAK**2 / error)  # MSE 0 gives +inf, as intended


def rmse(
    a: torch.Tensor, b: torch.Tensor, crop: int = 0, y_channel: bool = False, round_y: bool = False
) -> torch.Tensor:
    """Root mean squared error per image on the [0, 255] scale, float64 (N,); RGB unless `y_channel`.

    `round_y` rounds Y to integers as MATLAB's rgb2ycbcr of a uint8 image does (the PIRM-2018 scripts).
    """
    _check_pair("rmse", a, b, crop, 1)
    diff = _to_255(a, crop, y_channel, round_y) - _to_255(b, crop, y_channel, round_y)
    return diff.square().mean(dim=(1, 2, 3)).sqrt()


@functools.lru_cache(maxsize=8)
def gaussian_profile(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian whose outer product is MATLAB fspecial('gaussian', size, sigma)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    profile = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return profile / profile.sum()


def _valid_filter_1d(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """Correlate along `dim` with `taps`, 'valid' part only: a sum of len(taps) shifted slices.

    Faster than conv2d for float64 on CPU (no fast kernel there), and the same on every device.
    """
    length = x.shape[dim] - len(taps) + 1
    out = x.narrow(dim, 0, length) * taps[0]
    for k in range(1, len(taps)):  # 11 taps, never pixels
        out.add_(x.narrow(dim, k, length), alpha=taps[k])  # in place: no temporary per tap
    return out


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM map of float64 images (N, C, H, W) on [0, 255], 'valid' size (N, C, H - 10, W - 10)."""
    # The normalised 2-D Gaussian is the outer product of a normalised 1-D one: filter rows, then columns.
    profile = gaussian_profile().tolist()
    # The five local statistics of every channel as one stack, filtered at once.
    planes = torch.stack([x, y, x * x, y * y, x * y], dim=0)
    filtered = _valid_filter_1d(_valid_filter_1d(planes, profile, dim=-2), profile, dim=-1)
    mu_x, mu_y, xx, yy, xy = filtered.unbind(dim=0)

    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    var_x, var_y, cov_xy = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim(a: torch.Tensor, b: torch.Tensor, crop: int = 0, y_channel: bool = True) -> torch.Tensor:
    """Mean SSIM per image (Y, or averaged over the RGB channels), float64 (N,)."""
    _check_pair("ssim", a, b, crop, SSIM_WINDOW_SIZE)
    x, y = _to_255(a, crop, y_channel), _to_255(b, crop, y_channel)
    return ssim_map(x, y).mean(dim=(2, 3)).mean(dim=1)


def uint8_to_tensor(image: np.ndarray) -> torch.Tensor:
    """A uint8 HxW (grey) or HxWx3 array -> float64 tensor (1, 3, H, W) in [0, 1]; grey becomes RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ConfigError(f"expected a uint8 image array, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # grey -> RGB, as the protocol asks
    if image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"expected an HxW or HxWx3 uint8 image, got shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).to(torch.float64).permute(2, 0, 1)[None] / PEAK


def compare_uint8(reference: np.ndarray, test: np.ndarray, crop: int = 0) -> dict[str, float]:
    """PSNR/SSIM on Y and RGB and RMSE (RGB) of two uint8 images (HxW or HxWx3), as plain floats."""
    a, b = uint8_to_tensor(reference), uint8_to_tensor(test)
    return {
        "psnr_y": float(psnr(a, b, crop=crop)[0]),
        "ssim_y": float(ssim(a, b, crop=crop)[0]),
        "psnr_rgb": float(psnr(a, b, crop=crop, y_channel=False)[0]),
        "ssim_rgb": float(ssim(a, b, crop=crop, y_channel=False)[0]),
        "rmse": float(rmse(a, b, crop=crop)[0]),
    }


__all__ = ["compare_uint8", "gaussian_profile", "mse", "psnr", "rmse", "ssim", "ssim_map", "uint8_to_tensor"]
