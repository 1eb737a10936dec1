"""NIQE: the validation metric of eq. 14 (Section IV-C) and half of the PIRM perceptual index (Fig. 11, 14, Table V).

The paper selects perceptual models by V = E[NIQE(Y_{W=1})] (eq. 14) and places its outputs on the
perception-distortion plane with the PIRM-2018 perceptual index, whose second half is NIQE (Mittal,
Soundararajan, Bovik, "Making a completely blind image quality analyzer", IEEE SPL 2013). This is a
re-implementation of LIVE's MATLAB `niqe_release` (`computequality.m`, `computefeature.m`,
`estimateaggdparam.m`) with the published pristine model, vectorised over blocks:

1. the image becomes one grey channel on [0, 255] (by default the rounded Y of MATLAB `rgb2ycbcr`, as the
   PIRM-2018 scripts feed it; see `_grey_255`) and is cropped to a multiple of the 96x96 block;
2. at each of two scales (the second from MATLAB `imresize(im, 0.5)`, bicubic, antialiased, not rounded)
   the MSCN coefficients are (im - mu) / (sigma + 1), with mu and sigma the local mean and deviation under the
   normalised 7x7 Gaussian window (sigma 7/6), filtered with `imfilter(..., 'replicate')`;
3. each block (96x96, then 48x48 at the second scale, no overlap) gives 18 features: an asymmetric
   generalised Gaussian (AGGD) fit of its MSCN values -> (alpha, (beta_l + beta_r) / 2), and AGGD fits of the
   products of the MSCN block with itself circularly shifted by (0, 1), (1, 0), (1, 1), (1, -1) (MATLAB
   `circshift` inside the block) -> (alpha, mean, beta_l, beta_r) each;
4. the 36-dimensional block features give a Gaussian (nanmean; covariance over the blocks free of NaN, as
   `nancov`), and NIQE = sqrt(d' pinv((C_pristine + C_image) / 2) d) with d = mu_pristine - mu_image.

The AGGD shape alpha is the grid value in 0.2:0.001:10 that best matches the moment ratio, as the original
does; every block of a batch of images is fitted at once on (blocks, pixels) tensors.

Deviation: the original's covariance of a single block is MATLAB's variance of a vector (a scalar); here an
image with a single NaN-free block gets a zero covariance. Images with no NaN-free block get NaN (MATLAB's
`pinv` stops with an error there).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import gamma as gamma_function

from mgbp.color import rgb_to_gray, rgb_to_y
from mgbp.errors import ConfigError
from mgbp.io import round_levels
from mgbp.resize import imresize

BLOCK_SIZE = 96
PAIR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # computefeature.m's circshift offsets (rows, cols)
PARAMS_RESOURCE = "niqe_pris_params.npz"
# |im - mu| (grey levels, [0, 255]) at or below this is rounding noise of the local mean: see `mscn`.
# Rounding noise is ~1e-13; a real deviation of an 8-bit image is at least ~1e-4 (smallest weight x 1 level).
FLAT_TOLERANCE = 1e-9


@functools.lru_cache(maxsize=1)
def pristine_model() -> dict[str, np.ndarray]:
    """The published NIQE pristine model (float64): mu_pris_param (36,), cov_pris_param (36, 36), window (7, 7)."""
    with resources.files("mgbp").joinpath("assets").joinpath(PARAMS_RESOURCE).open("rb") as handle:
        data = np.load(handle)
        return {
            "mu": np.asarray(data["mu_pris_param"], dtype=np.float64).reshape(-1),
            "cov": np.asarray(data["cov_pris_param"], dtype=np.float64),
            "window": np.asarray(data["gaussian_window"], dtype=np.float64),
        }


@functools.lru_cache(maxsize=1)
def _aggd_tables() -> tuple[np.ndarray, ...]:
    """The shape grid 0.2:0.001:10 with, per shape, the moment ratio and the two gamma factors (float64)."""
    shapes = np.arange(200, 10001, dtype=np.float64) / 1000.0
    g1, g2, g3 = gamma_function(1.0 / shapes), gamma_function(2.0 / shapes), gamma_function(3.0 / shapes)
    ratio = g2 * g2 / (g1 * g3)  # r_gam of estimateaggdparam.m
    scale_factor = np.sqrt(g1 / g3)  # std -> beta
    mean_factor = g2 / g1  # (beta_r - beta_l) -> mean of the AGGD
    return shapes, ratio, scale_factor, mean_factor


def _tables_on(like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(torch.as_tensor(t, dtype=torch.float64, device=like.device) for t in _aggd_tables())


def nearest_ratio_index(ratio: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MATLAB's [~, i] = min((ratio - target).^2) for each target (B,), with `ratio` strictly increasing.

    The minimiser is one of the two table entries around the target, so a binary search replaces the
    (B, 9801) scan; on a tie the lower index wins (MATLAB's first minimum); a NaN target gives index 0, as
    MATLAB's min over an all-NaN vector does.
    """
    last = ratio.numel() - 1
    above = torch.searchsorted(ratio, target.contiguous()).clamp(max=last)
    below = (above - 1).clamp(min=0)
    closer_above = (ratio[above] - target) ** 2 < (ratio[below] - target) ** 2
    index = torch.where(closer_above, above, below)
    return torch.where(torch.isnan(target), torch.zeros_like(index), index)


class AggdFit(NamedTuple):
    """Asymmetric generalised Gaussian parameters per row: shape, left and right scales, mean (eq. 8 of NIQE)."""

    alpha: torch.Tensor
    beta_l: torch.Tensor
    beta_r: torch.Tensor
    mean: torch.Tensor


def fit_aggd(values: torch.Tensor) -> AggdFit:
    """estimateaggdparam.m on each row of `values` (B, M); every field of the result is (B,).

    A side with no values (no negative or no positive sample) has a NaN deviation, as MATLAB's mean of an
    empty set; the shape search then sees NaN everywhere and MATLAB's `min` returns the first grid value.
    """
    shapes, ratio, scale_factor, mean_factor = _tables_on(values)
    negative, positive = values < 0, values > 0
    squares = values * values
    # sum / count, with 0 / 0 = NaN for an empty side, as mean([]) in MATLAB.
    left_std = torch.sqrt((squares * negative).sum(1) / negative.sum(1))
    right_std = torch.sqrt((squares * positive).sum(1) / positive.sum(1))
    gamma_hat = left_std / right_std
    r_hat = values.abs().mean(1) ** 2 / squares.mean(1)
    r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    index = nearest_ratio_index(ratio, r_hat_norm)
    beta_l, beta_r = left_std * scale_factor[index], right_std * scale_factor[index]
    return AggdFit(shapes[index], beta_l, beta_r, (beta_r - beta_l) * mean_factor[index])


def _block_features(mscn_blocks: torch.Tensor) -> torch.Tensor:
    """computefeature.m on every block at once: (B, b, b) MSCN blocks -> (B, 18)."""
    own = fit_aggd(mscn_blocks.flatten(1))
    features = [own.alpha, (own.beta_l + own.beta_r) / 2]
    for shift in PAIR_SHIFTS:
        # circshift of the block by (rows, cols): torch.roll has the same sign convention.
        products = mscn_blocks * torch.roll(mscn_blocks, shifts=shift, dims=(1, 2))
        pair = fit_aggd(products.flatten(1))
        features += [pair.alpha, pair.mean, pair.beta_l, pair.beta_r]
    return torch.stack(features, dim=1)


def _local_filter(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """imfilter(image, window, 'replicate') for (N, 1, H, W) and an odd square window (correlation).

    A sum of the 49 shifted copies of the padded image, weighted in place: faster than conv2d in float64 on
    CPU, and the same arithmetic on every device.
    """
    size = window.shape[-1]
    half = size // 2
    padded = F.pad(image, (half, half, half, half), mode="replicate")
    h, w = image.shape[-2:]
    weights = window.tolist()
    out = torch.zeros_like(image)
    for dy in range(size):  # 7 x 7 window taps, never pixels
        for dx in range(size):
            out.add_(padded[..., dy : dy + h, dx : dx + w], alpha=weights[dy][dx])
    return out


def mscn(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients (im - mu) / (sigma + 1) of (N, 1, H, W) on [0, 255].

    In a flat neighbourhood im - mu is exactly 0, but the filter's rounding leaves +-1e-14 whose sign depends
    on the summation order (CPU, GPU, MATLAB's imfilter all differ). The AGGD fit counts every nonzero value
    on one side, so that sign alone moves NIQE by ~4e-4 on baboon; deviations below FLAT_TOLERANCE are
    therefore set to the exact 0 (which is what reproduces MATLAB's 5.72957338).
    """
    mu = _local_filter(image, window)
    sigma = torch.sqrt((_local_filter(image * image, window) - mu * mu).abs())
    deviation = image - mu
    deviation = torch.where(deviation.abs() <= FLAT_TOLERANCE, torch.zeros_like(deviation), deviation)
    return deviation / (sigma + 1)


def _to_blocks(image: torch.Tensor, block: int) -> torch.Tensor:
    """(N, 1, H, W) with H, W multiples of `block` -> (N, blocks, block, block), non-overlapping."""
    n, _, h, w = image.shape
    tiles = image.reshape(n, h // block, block, w // block, block).permute(0, 1, 3, 2, 4)
    return tiles.reshape(n, -1, block, block)


def niqe_features(grey: torch.Tensor) -> torch.Tensor:
    """Block features (N, blocks, 36) of grey images (N, 1, H, W) on [0, 255], H, W multiples of 96."""
    window = torch.as_tensor(pristine_model()["window"], dtype=torch.float64, device=grey.device)
    image = grey.to(torch.float64)
    per_scale = []
    for scale in (1, 2):
        block = BLOCK_SIZE // scale
        blocks = _to_blocks(mscn(image, window), block)
        n, count = blocks.shape[:2]
        per_scale.append(_block_features(blocks.reshape(n * count, block, block)).reshape(n, count, 18))
        if scale == 1:
            image = imresize(image, scale=0.5)
    return torch.cat(per_scale, dim=2)


def _nan_gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nanmean (column-wise) and nancov (rows with any NaN dropped, n-1 normalisation) of (N, B, D)."""
    finite = ~torch.isnan(features)
    mean = torch.where(finite, features, 0).sum(1) / finite.sum(1)
    complete = finite.all(dim=2, keepdim=True).to(features.dtype)  # (N, B, 1)
    rows = complete.sum(1)  # (N, 1)
    clean = torch.where(complete.bool(), features, 0)
    complete_mean = clean.sum(1) / rows.clamp(min=1)
    centred = (clean - complete_mean[:, None, :]) * complete
    cov = centred.transpose(1, 2) @ centred / (rows - 1).clamp(min=1)[:, :, None]
    cov = torch.where((rows > 0)[:, :, None], cov, torch.nan)
    return mean, cov


def niqe_distance(features: torch.Tensor) -> torch.Tensor:
    """NIQE (N,) from block features (N, B, 36): Mahalanobis-like distance to the pristine Gaussian."""
    model = pristine_model()
    mu_pris = torch.as_tensor(model["mu"], dtype=torch.float64, device=features.device)
    cov_pris = torch.as_tensor(model["cov"], dtype=torch.float64, device=features.device)
    mu_dist, cov_dist = _nan_gaussian(features)
    unusable = torch.isnan(cov_dist).any(dim=2).any(dim=1) | torch.isnan(mu_dist).any(dim=1)
    # pinv would fail on NaN; give those images a dummy matrix and NaN scores.
    cov_dist = torch.where(unusable[:, None, None], 0, cov_dist)
    mu_dist = torch.where(unusable[:, None], 0, mu_dist)
    inverse = torch.linalg.pinv((cov_pris + cov_dist) / 2)  # MATLAB's tolerance: max(m, n) * eps * s_max
    d = (mu_pris - mu_dist)[:, None, :]
    quality = torch.sqrt((d @ inverse @ d.transpose(1, 2)).reshape(-1))
    return torch.where(unusable, torch.nan, quality)


LUMINANCES = ("y", "gray")


def _grey_255(x: torch.Tensor, luminance: str) -> torch.Tensor:
    """(N, 3|1, H, W) in [0, 1] -> (N, 1, H, W) float64 grey levels on [0, 255], rounded as a uint8 image.

    "y": the Y of MATLAB `rgb2ycbcr` on uint8 (rounded), what the PIRM-2018 scripts feed to niqe_release and
    what the check value 5.7296 on baboon is measured on. "gray": MATLAB `rgb2gray` on uint8 (rounded), what
    niqe_release does itself when handed an RGB image. One channel is taken as the grey image, unrounded.
    """
    x = x.to(torch.float64)
    if x.shape[1] == 1:
        return x * 255.0
    convert = rgb_to_y if luminance == "y" else rgb_to_gray
    return round_levels(convert(x) * 255.0)


def niqe(x: torch.Tensor, luminance: str = "y") -> torch.Tensor:
    """NIQE of each image of x (N, 3, H, W) RGB or (N, 1, H, W) grey in [0, 1]: float64 (N,), lower is better.

    The image is cropped to a multiple of 96 pixels (bottom and right), as niqe_release does; it needs at
    least 96x96 pixels. `luminance` picks the grey conversion of RGB input ("y" or "gray", see `_grey_255`).
    """
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 4 or x.shape[1] not in (1, 3):
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ConfigError(f"niqe expects a float tensor (N, 3, H, W) or (N, 1, H, W), got {shape}")
    if luminance not in LUMINANCES:
        raise ConfigError(f"niqe luminance must be one of {LUMINANCES}, got {luminance!r}")
    h, w = x.shape[-2:]
    if h < BLOCK_SIZE or w < BLOCK_SIZE:
        raise ConfigError(f"niqe needs images of at least {BLOCK_SIZE}x{BLOCK_SIZE} pixels, got {h}x{w}")
    grey = _grey_255(x, luminance)[..., : h - h % BLOCK_SIZE, : w - w % BLOCK_SIZE]
    return niqe_distance(niqe_features(grey))
