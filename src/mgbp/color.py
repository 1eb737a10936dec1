"""MATLAB `rgb2ycbcr` / `ycbcr2rgb` and luminance: the Y channel on which every PSNR/SSIM of the paper is measured.

The PSNR/SSIM of the paper's Tables II-IV (Section V-A) follow the SR literature's protocol
(`../shared/data/README.md`): they are measured on the luma of MATLAB's `rgb2ycbcr` (ITU-R BT.601, studio
swing). For RGB in [0, 1]:

    Y  = (16  +  65.481 R + 128.553 G +  24.966 B) / 255
    Cb = (128 -  37.797 R -  74.203 G + 112.000 B) / 255
    Cr = (128 + 112.000 R -  93.786 G -  18.214 B) / 255

so Y lies in [16/255, 235/255] and Cb, Cr in [16/255, 240/255], on the same [0, 1] scale as the input.
`rgb_to_gray` is MATLAB's `rgb2gray` (the luminance row of the NTSC YIQ transform), used by LIVE's NIQE.

All functions work on float tensors with the colour channel on axis `dim` (1 for (N, 3, H, W) images and
(N, 3, T, H, W) clips), compute in the input's dtype and device, and are differentiable.
"""

from __future__ import annotations

import torch

from mgbp.errors import ConfigError

# MATLAB rgb2ycbcr: rows Y, Cb, Cr; columns R, G, B; applied to RGB in [0, 1] and giving values on [0, 255].
YCBCR_MATRIX = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
YCBCR_OFFSET = (16.0, 128.0, 128.0)

# MATLAB rgb2gray: the luminance row of the inverse of the NTSC YIQ -> RGB matrix, as rgb2gray.m derives it
# (0.298936..., 0.587043..., 0.114020...).
_YIQ_TO_RGB = ((1.0, 0.956, 0.621), (1.0, -0.272, -0.647), (1.0, -1.106, 1.703))
GRAY_COEFFICIENTS = tuple(torch.linalg.inv(torch.tensor(_YIQ_TO_RGB, dtype=torch.float64))[0].tolist())


def _check_rgb(x: torch.Tensor, dim: int, what: str) -> int:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ConfigError(f"{what} expects a floating-point tensor")
    if x.dim() == 0 or not -x.dim() <= dim < x.dim() or x.shape[dim] != 3:
        raise ConfigError(f"{what} expects 3 colour channels on axis {dim}, got shape {tuple(x.shape)}")
    return dim % x.dim()


def _apply_matrix(x: torch.Tensor, matrix, offset, dim: int) -> torch.Tensor:
    """out_c = offset_c + sum_k matrix[c][k] * x_k along `dim` (the matrix is 3x3, never pixels)."""
    m = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
    b = torch.as_tensor(offset, dtype=x.dtype, device=x.device)
    moved = x.movedim(dim, -1)  # (..., 3)
    out = moved @ m.t() + b
    return out.movedim(-1, dim)


def rgb_to_ycbcr(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """MATLAB `rgb2ycbcr` for RGB in [0, 1]: YCbCr on the same [0, 1] scale (not rounded)."""
    dim = _check_rgb(x, dim, "rgb_to_ycbcr")
    matrix = [[v / 255.0 for v in row] for row in YCBCR_MATRIX]
    offset = [v / 255.0 for v in YCBCR_OFFSET]
    return _apply_matrix(x, matrix, offset, dim)


def ycbcr_to_rgb(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Inverse of `rgb_to_ycbcr` (MATLAB `ycbcr2rgb`), not clamped."""
    dim = _check_rgb(x, dim, "ycbcr_to_rgb")
    # Invert in float64 whatever the input dtype, so float32 round trips lose nothing to the inversion.
    forward = torch.tensor(YCBCR_MATRIX, dtype=torch.float64) / 255.0
    inverse = torch.linalg.inv(forward)
    offset = -(inverse @ (torch.tensor(YCBCR_OFFSET, dtype=torch.float64) / 255.0))
    return _apply_matrix(x, inverse.tolist(), offset.tolist(), dim)


def rgb_to_y(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Luma Y of MATLAB `rgb2ycbcr` in [16/255, 235/255]; the channel axis is kept with length 1."""
    dim = _check_rgb(x, dim, "rgb_to_y")
    row = [v / 255.0 for v in YCBCR_MATRIX[0]]
    return _apply_matrix(x, [row], [YCBCR_OFFSET[0] / 255.0], dim)


def rgb_to_gray(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """MATLAB `rgb2gray` (0.2989 R + 0.5870 G + 0.1140 B, no offset); the channel axis is kept with length 1."""
    dim = _check_rgb(x, dim, "rgb_to_gray")
    return _apply_matrix(x, [list(GRAY_COEFFICIENTS)], [0.0], dim)
