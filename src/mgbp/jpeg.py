"""Baseline JPEG compression on tensors (ITU-T T.81 / JFIF, as the IJG's libjpeg codes it): the JPEG step of
the Real-ESRGAN degradation model (`mgbp.degradations`), batched, deterministic and with a quality per image.

What a libjpeg encoder followed by a libjpeg decoder does to an 8-bit RGB image at quality Q with 4:2:0 chroma
subsampling (Pillow's `save(..., "JPEG", quality=Q)`), step by step:
1. RGB -> YCbCr (JFIF, full range), libjpeg's 16-bit fixed-point arithmetic with its rounding (`jccolor.c`);
2. Cb and Cr averaged over 2x2 blocks with libjpeg's alternating rounding bias 1, 2 (`jcsample.c`);
3. each plane padded to whole 8x8 blocks by repeating its last row / column (`expand_right_edge`), level
   shifted by -128, 8x8 DCT-II (orthonormal, which is T.81's FDCT), each coefficient divided by its entry of
   the quantisation table and rounded half away from zero (`jcdctmgr.c`);
4. the tables: T.81 Annex K's luminance and chrominance tables scaled as `jpeg_set_quality` does: scale
   5000/Q below quality 50, 200 - 2Q from 50, entry (base * scale + 50) // 100 clamped to [1, 255] (baseline);
5. decoding: coefficients times the table, inverse DCT, +128, rounded and clamped to [0, 255];
6. Cb and Cr (the samples of the image, not of the padding) upsampled by libjpeg's "fancy" triangle filter (3/4, 1/4 per axis; `h2v2_fancy_upsample`,
   integer arithmetic with its rounding), then YCbCr -> RGB with libjpeg's fixed-point tables (`jdcolor.c`).
Entropy coding is lossless and therefore skipped. The DCTs here are exact (float) where libjpeg's default
`islow` ones are integer approximations, so a few pixels differ by one or two levels: against Pillow's own
encode/decode the result is above 40 dB PSNR (tests/test_jpeg.py), while the JPEG error itself is ~30 dB.
(Exception: images of at most 16 rows, a single row of MCUs, whose chroma libjpeg-turbo upsamples differently
near the top and bottom edges: some 30 dB there.)
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# T.81 Annex K, Table K.1 (luminance) and K.2 (chrominance), in natural (row-major) order.
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4

_SCALEBITS = 16  # libjpeg's fixed-point colour conversion
_ONE_HALF = 1 << (_SCALEBITS - 1)


def _fix(x: float) -> int:
    return int(x * (1 << _SCALEBITS) + 0.5)


def quality_scale(quality: torch.Tensor) -> torch.Tensor:
    """libjpeg's `jpeg_quality_scaling`: the percentage by which the base tables are scaled (integer)."""
    q = quality.to(torch.int64).clamp(1, 100)
    return torch.where(q < 50, torch.div(5000, q, rounding_mode="floor"), 200 - 2 * q)


def quantisation_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) tables (N, 8, 8) int64 for qualities (N,), as `jpeg_set_quality(force_baseline=TRUE)`."""
    scale = quality_scale(quality).view(-1, 1, 1)
    tables = []
    for base in (LUMA_TABLE, CHROMA_TABLE):
        base = torch.tensor(base, dtype=torch.int64, device=quality.device)
        tables.append(torch.div(base * scale + 50, 100, rounding_mode="floor").clamp(1, 255))  # tiny: int64
    return tables[0], tables[1]


@functools.lru_cache(maxsize=8)
def dct_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix D (D @ x transforms a column): T.81's FDCT is D X D^T."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=dtype)


# Sample arithmetic is done on float32 tensors holding integers, as 1x1 / 3x3 convolutions: exact, because
# every product and partial sum stays below 2**24 (libjpeg's constants are chosen so: the largest, Cb's and
# Cr's offset plus 0.5 * 255, is 2**24 - 1) and every divisor is a power of two; and far faster on a CPU than
# int64 arithmetic.
_RGB_TO_YCC = (
    (_fix(0.29900), _fix(0.58700), _fix(0.11400)),
    (-_fix(0.16874), -_fix(0.33126), _fix(0.5)),
    (_fix(0.5), -_fix(0.41869), -_fix(0.08131)),
)
_YCC_OFFSET = (_ONE_HALF, (128 << _SCALEBITS) + _ONE_HALF - 1, (128 << _SCALEBITS) + _ONE_HALF - 1)
# decoder: R, G, B offsets from (Cb - 128, Cr - 128), each rounded on its own (libjpeg's lookup tables)
_CBCR_TO_RGB = ((0, _fix(1.40200)), (-_fix(0.34414), -_fix(0.71414)), (_fix(1.77200), 0))


def _floor_shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """libjpeg's RIGHT_SHIFT (floor of x / 2**bits) on integers held in a float tensor: exact."""
    return torch.floor(x * (1.0 / (1 << bits)))


def rgb_to_ycc(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float32 integer RGB 0..255 -> YCbCr 0..255, libjpeg's `rgb_ycc_convert` bit for bit."""
    weight = torch.tensor(_RGB_TO_YCC, dtype=rgb.dtype, device=rgb.device).view(3, 3, 1, 1)
    bias = torch.tensor(_YCC_OFFSET, dtype=rgb.dtype, device=rgb.device)
    return _floor_shift(F.conv2d(rgb, weight, bias), _SCALEBITS)


def ycc_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float32 integer YCbCr -> RGB 0..255, libjpeg's `ycc_rgb_convert` (its tables, inlined)."""
    weight = torch.tensor(_CBCR_TO_RGB, dtype=ycc.dtype, device=ycc.device).view(3, 2, 1, 1)
    bias = torch.full((3,), float(_ONE_HALF), dtype=ycc.dtype, device=ycc.device)
    offsets = _floor_shift(F.conv2d(ycc[:, 1:] - 128.0, weight, bias), _SCALEBITS)
    return (ycc[:, :1] + offsets).clamp(0, 255)


def downsample_2x2(plane: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) integers, H and W even -> (N, 1, H/2, W/2): libjpeg's `h2v2_downsample` (the 2x2 sum plus
    a bias alternating 1, 2 along the row, shifted right by 2)."""
    total = F.avg_pool2d(plane, 2) * 4.0  # exact: a sum of four integers <= 1020
    bias = 1.0 + torch.arange(total.shape[-1], device=plane.device, dtype=plane.dtype) % 2
    return torch.floor((total + bias) * 0.25)


@functools.lru_cache(maxsize=8)
def _fancy_kernels(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(4, 1, 3, 3): output phase (row a, column b) of the triangle filter, 16x its weights."""
    taps = torch.tensor([[1.0, 3.0, 0.0], [0.0, 3.0, 1.0]], dtype=torch.float64)  # even, odd output
    kernels = torch.stack([torch.outer(taps[a], taps[b]) for a in range(2) for b in range(2)])
    return kernels[:, None].to(device=device, dtype=dtype)


def fancy_upsample_2x2(plane: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) integers -> (N, 1, 2h, 2w): libjpeg's `h2v2_fancy_upsample`, the triangle filter
    (3/4 nearer, 1/4 farther per axis; edges repeated) with its rounding: +8 for even output columns, +7 for
    odd ones, then a shift by 4."""
    phases = F.conv2d(F.pad(plane, (1, 1, 1, 1), mode="replicate"), _fancy_kernels(plane.device, plane.dtype))
    bias = torch.tensor([8.0, 7.0, 8.0, 7.0], dtype=plane.dtype, device=plane.device).view(1, 4, 1, 1)
    return F.pixel_shuffle(torch.floor((phases + bias) * (1.0 / 16)), 2)


def _blocks(plane: torch.Tensor) -> torch.Tensor:
    n, _, h, w = plane.shape
    return plane.view(n, h // 8, 8, w // 8, 8).transpose(2, 3)  # (N, H/8, W/8, 8, 8)


def _unblocks(blocks: torch.Tensor) -> torch.Tensor:
    n, bh, bw = blocks.shape[:3]
    return blocks.transpose(2, 3).reshape(n, 1, bh * 8, bw * 8)


def code_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """One component through FDCT, quantisation, dequantisation and IDCT: (N, 1, H, W) samples 0..255
    (integers in a float32 tensor; H, W multiples of 8) and (N, 8, 8) tables -> decoded samples, likewise.
    (The float DCT's error, ~1e-5 of a level, is far below that of libjpeg's integer DCT.)"""
    d = dct_matrix(plane.device, plane.dtype)
    coefficients = d @ _blocks(plane - 128.0) @ d.T
    q = table.to(plane.dtype)[:, None, None]
    levels = torch.sign(coefficients) * torch.floor(coefficients.abs() / q + 0.5)  # half away from zero
    decoded = d.T @ (levels * q) @ d
    return _unblocks(torch.floor(decoded + 128.5).clamp(0, 255))


def jpeg_compress(x: torch.Tensor, quality) -> torch.Tensor:
    """JPEG-compress and decode RGB images (N, 3, H, W) in [0, 1] at `quality` (an int, or (N,) per image,
    1..100), 4:2:0: returns (N, 3, H, W) in [0, 1] on 8-bit levels, in x's dtype and device. Deterministic."""
    n, c, h, w = x.shape
    if c != 3:
        raise ValueError(f"jpeg_compress expects RGB (N, 3, H, W), got {tuple(x.shape)}")
    quality = torch.as_tensor(quality, device=x.device).expand(n)
    luma_table, chroma_table = quantisation_tables(quality)
    rgb = torch.floor(x.detach().float().clamp(0, 1) * 255.0 + 0.5)
    # The MCU of 4:2:0 is 16x16: pad the image (libjpeg repeats the last row / column), so chroma has
    # whole blocks too.
    if h % 16 or w % 16:
        rgb = F.pad(rgb, (0, -w % 16, 0, -h % 16), mode="replicate")
    ycc = rgb_to_ycc(rgb)
    y = code_plane(ycc[:, 0:1], luma_table)
    # the decoder upsamples the chroma samples of the image only (ceil(h/2) x ceil(w/2)), repeating their edge
    ch, cw = (h + 1) // 2, (w + 1) // 2
    cb = fancy_upsample_2x2(code_plane(downsample_2x2(ycc[:, 1:2]), chroma_table)[..., :ch, :cw])
    cr = fancy_upsample_2x2(code_plane(downsample_2x2(ycc[:, 2:3]), chroma_table)[..., :ch, :cw])
    out = ycc_to_rgb(torch.cat([y[..., :h, :w], cb[..., :h, :w], cr[..., :h, :w]], 1))
    return (out / 255.0).to(x.dtype).contiguous()
