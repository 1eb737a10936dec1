"""MATLAB-compatible bicubic resize: the degradation S_f of the paper (eqs. 1, 3, 9, 11, 13).

Every scale operator in MGBP is MATLAB's `imresize(x, scale, 'bicubic')`: the LR inputs of the benchmarks,
the downscales S_k of the fidelity and cycle losses (eq. 9, eq. 11), the multiscale inputs of the
discriminator (eq. 13) and the bicubic upscale that feeds MGBPv2 (Algorithm 1). Reproducing it exactly is
what makes our PSNR figures comparable with published ones.

MATLAB's algorithm, per axis (`contributions` in imresize.m):
- cubic kernel with a = -0.5 (Keys), support [-2, 2];
- when shrinking by s < 1 the kernel is stretched to s*h(s*x) (antialiasing), support 4/s;
- output pixel i (1-based) sits at input coordinate u = i/s + (1 - 1/s)/2;
- taps outside the image are mirrored symmetrically (edge pixel repeated), weights renormalised to sum 1;
- output length ceil(in * s) when a scale is given; the scale used in the weights is the one given,
  not out/in (they differ when in * s is not an integer);
- the two axes are processed in order of increasing scale (the strongest shrink first), rows first on a tie.

Here the per-axis weights are a (out, taps) table of weights and source indices, computed once per
(length, size, scale) and cached; the resize is a sum over the few taps of `index_select`s, so it is
vectorised, differentiable, works on any leading dims ((N,C,H,W) images, (N,C,T,H,W) clips), any float
dtype and any device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from mgbp.errors import ConfigError


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@functools.lru_cache(maxsize=256)
def contributions(in_length: int, out_length: int, scale: float, antialias: bool = True):
    """Weights (out, taps) float64 and 0-based source indices (out, taps) int64 of one axis."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    distance = u[:, None] - indices
    if scale < 1 and antialias:
        weights = scale * cubic(scale * distance)
    else:
        weights = cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric boundary: the sequence 1..n, n..1 repeated (edge pixels repeated, as MATLAB does).
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    # Drop tap columns that are zero for every output pixel (as MATLAB does): fewer index_selects.
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


@functools.lru_cache(maxsize=256)
def _torch_contributions(in_length, out_length, scale, antialias, device, dtype):
    weights, indices = contributions(in_length, out_length, scale, antialias)
    w = torch.as_tensor(weights, dtype=dtype, device=device)
    i = torch.as_tensor(indices, dtype=torch.long, device=device)
    # Column-major views: one (out,) vector per tap.
    return w.t().contiguous(), i.t().contiguous()


def resize_axis(x: torch.Tensor, dim: int, out_length: int, scale: float, antialias: bool = True):
    """Resize one axis of `x` with MATLAB's bicubic weights; differentiable in `x`."""
    dim = dim % x.dim()
    in_length = x.shape[dim]
    weights, indices = _torch_contributions(in_length, out_length, float(scale), antialias,
                                            x.device, x.dtype)
    shape = [1] * x.dim()
    shape[dim] = out_length
    out = None
    for tap in range(weights.shape[0]):  # a handful of taps (6 for upscaling), never pixels
        term = x.index_select(dim, indices[tap]) * weights[tap].view(shape)
        out = term if out is None else out + term
    return out


def output_size(in_size: Sequence[int], scale: Sequence[float]) -> tuple[int, ...]:
    """MATLAB's output size for a scale: ceil(in * scale), with a guard against float error."""
    return tuple(math.ceil(round(n * s, 9)) for n, s in zip(in_size, scale))


def _normalise_request(in_hw, scale, size):
    if (scale is None) == (size is None):
        raise ConfigError("imresize needs exactly one of scale or size")
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"imresize size must be two positive integers, got {size}")
        scales = tuple(o / i for o, i in zip(size, in_hw))
        return size, scales
    scales = (scale, scale) if isinstance(scale, (int, float)) else tuple(float(v) for v in scale)
    if len(scales) != 2 or min(scales) <= 0 or not all(math.isfinite(s) for s in scales):
        raise ConfigError(f"imresize scale must be positive and finite, got {scale}")
    scales = tuple(float(s) for s in scales)
    return output_size(in_hw, scales), scales


def imresize(x: torch.Tensor, scale=None, size=None, antialias: bool = True) -> torch.Tensor:
    """MATLAB `imresize(x, scale, 'bicubic')` on the last two dims (H, W) of a float tensor.

    `scale`: a positive number or an (sy, sx) pair; `size`: an int or (H, W). Values are not clamped
    or rounded (do that at the end, as MATLAB does for uint8 output, with `to_uint8_range`).
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ConfigError("imresize expects a floating-point tensor")
    if x.dim() < 2 or min(x.shape[-2:]) < 1:
        raise ConfigError(f"imresize expects (..., H, W) with H, W >= 1, got {tuple(x.shape)}")
    in_hw = tuple(x.shape[-2:])
    out_hw, scales = _normalise_request(in_hw, scale, size)
    # MATLAB resizes the axis with the smallest scale first (stable sort: rows first on a tie).
    order = sorted(range(2), key=lambda k: scales[k])
    for k in order:
        if out_hw[k] == in_hw[k] and scales[k] == 1.0:
            continue
        x = resize_axis(x, x.dim() - 2 + k, out_hw[k], scales[k], antialias)
    return x


def imresize_uint8(image: np.ndarray, scale=None, size=None) -> np.ndarray:
    """MATLAB's `imresize` on a uint8 HxW or HxWxC array: float64 resize, then round and clip to uint8."""
    if image.dtype != np.uint8:
        raise ConfigError(f"imresize_uint8 expects uint8, got {image.dtype}")
    tensor = torch.from_numpy(image.astype(np.float64))  # a fresh writable copy (inputs may be read-only)
    if image.ndim == 3:
        tensor = tensor.permute(2, 0, 1)
    out = imresize(tensor, scale=scale, size=size)
    if image.ndim == 3:
        out = out.permute(1, 2, 0)
    return to_uint8_range(out).numpy().astype(np.uint8)


def to_uint8_range(x: torch.Tensor) -> torch.Tensor:
    """Round half away from zero and clip to [0, 255], as MATLAB's conversion to uint8 does."""
    return torch.clamp(torch.sign(x) * torch.floor(torch.abs(x) + 0.5), 0, 255)


def modcrop(image, factor: int):
    """Crop H and W (the first two axes of an HxW[xC] array) down to multiples of `factor`."""
    h, w = image.shape[0], image.shape[1]
    return image[: h - h % factor, : w - w % factor]
