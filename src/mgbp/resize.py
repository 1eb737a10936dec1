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

Integer upscales (f = 2, 3, 4, ...; the bicubic input of MGBPv2, the back-projection of `consistency`) take
a second path, `upscale_integer`, a fixed polyphase convolution. Output pixel f m + p (0-based) sits at LR
coordinate m + (p + 1/2)/f - 1/2, so its taps are LR pixels m-2 .. m+2 (one of them always weighs 0) with
weights that depend only on the phase p, never on the size. The input is padded by 2 LR pixels symmetrically
(MATLAB's mirror, edge repeated), convolved once with the f^2 separable 5x5 phase kernels (a 2D phase (p, q)
is the product of the row phase p and the column phase q), and the phases are interleaved (a permuted copy).
No size-dependent table and no Python arithmetic on sizes, so the same code traces and exports (ONNX) with
dynamic height and width. Against the per-axis gather it differs only by float rounding (< 1e-6 in float32
on [0, 1] images). Integer 1/f shrinks have a third form, `downscale_integer`: fixed taps over strided slices
of a symmetrically padded axis, size-free too; traced graphs take it (the per-axis tables need concrete sizes),
and so do eager axes longer than DENSE_MAX_LENGTH (faster than the gathers).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mgbp.errors import ConfigError
from mgbp.io import round_levels
from mgbp.tracing import is_tracing


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


# Axes up to this length are resized by one matrix product with the dense (out, in) weight matrix: 10x faster
# than the gathers for the training losses' downscales (16x3x96x96 by 1/2 and 1/4, forward and backward, one
# thread, torch 2.13), and the matrix of a 512-pixel axis is at most 2 MiB of float64.
DENSE_MAX_LENGTH = 512


@functools.lru_cache(maxsize=32)
def dense_weights(in_length: int, out_length: int, scale: float, antialias: bool = True) -> np.ndarray:
    """MATLAB's weights of one axis as an (out, in) float64 matrix, mirrored taps folded onto their pixels."""
    weights, indices = contributions(in_length, out_length, scale, antialias)
    matrix = np.zeros((out_length, in_length))
    rows = np.repeat(np.arange(out_length)[:, None], weights.shape[1], axis=1)
    np.add.at(matrix, (rows, indices), weights)
    matrix.setflags(write=False)
    return matrix


def resize_axis_dense(x: torch.Tensor, dim: int, out_length: int, scale: float, antialias: bool = True):
    """`resize_axis` as a matrix product (same weights, float rounding apart); for short axes."""
    dim = dim % x.dim()
    matrix = torch.tensor(dense_weights(x.shape[dim], out_length, float(scale), antialias), dtype=x.dtype,
                          device=x.device)  # a copy: the cached array is read-only
    if dim == x.dim() - 1:
        return torch.matmul(x, matrix.t())
    return torch.matmul(matrix, x.movedim(dim, -2)).movedim(-2, dim)


# ---- integer upscales: a fixed polyphase convolution -------------------------------------------------------

PHASE_TAPS = 5  # LR pixels m-2 .. m+2 around the output's LR pixel m
PHASE_PAD = PHASE_TAPS // 2


@functools.lru_cache(maxsize=64)
def phase_weights(factor: int) -> tuple[tuple[float, ...], ...]:
    """MATLAB's bicubic weights of an integer upscale by `factor`: one row of 5 taps per output phase.

    Output phase p lies at (p + 1/2)/f - 1/2 LR pixels from LR pixel m; tap t (t = -2..2) weighs
    cubic(that offset - t), renormalised to sum 1 as MATLAB does (it is 1 up to rounding anyway).
    """
    rows = []
    for p in range(factor):
        offset = (p + 0.5) / factor - 0.5
        w = cubic(np.array([offset - t for t in range(-PHASE_PAD, PHASE_PAD + 1)], dtype=np.float64))
        rows.append(tuple((w / w.sum()).tolist()))
    return tuple(rows)


def phase_kernel(fy: int, fx: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (fy fx, 1, ky, kx) kernel: channel p fx + q holds phase p of the rows times phase q of the columns.

    An axis with factor 1 gets the single tap 1 (no padding, no work along it). Built on every call from
    cached Python floats; `reusable_phase_kernel` keeps one tensor per device and dtype outside traces (a tensor
    made while tracing, export or compile, is a fake one and must not outlive the trace).
    """
    rows = torch.tensor(phase_weights(fy) if fy > 1 else ((1.0,),), dtype=torch.float64)
    cols = torch.tensor(phase_weights(fx) if fx > 1 else ((1.0,),), dtype=torch.float64)
    kernel = (rows[:, None, :, None] * cols[None, :, None, :]).reshape(fy * fx, 1, rows.shape[1], cols.shape[1])
    return kernel.to(device=device, dtype=dtype)


def reusable_phase_kernel(fy: int, fx: int, like: torch.Tensor) -> torch.Tensor:
    """`phase_kernel(fy, fx)` on `like`'s device and dtype, made once per (device, dtype) and then reused.

    Why: built per call, the kernel is a pageable host-to-device copy on every forward on a GPU, which blocks
    the host and cannot be recorded in a CUDA graph (torch refuses such a copy while capturing). While tracing
    (export, compile, fake tensors) it is built fresh as before: a tensor made there must not outlive the trace.
    """
    if is_tracing() or type(like) is not torch.Tensor:  # fake/functional tensors of a trace: a subclass
        return phase_kernel(fy, fx, like.device, like.dtype)
    return _cached_phase_kernel(fy, fx, like.device, like.dtype)


@functools.lru_cache(maxsize=32)
def _cached_phase_kernel(fy: int, fx: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False):  # an inference tensor could not be saved for a later backward pass
        return phase_kernel(fy, fx, device, dtype)


def symmetric_pad2(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Pad `dim` with 2 mirrored pixels per side, edge repeated (MATLAB's 'symmetric': -1 -> 0, -2 -> 1).

    Built from slices, flips and concatenation only (it traces with a symbolic length); a length-1 axis
    repeats its pixel, as MATLAB's mirror does.
    """
    def cut(t, start, stop):  # t[..., start:stop, ...] along `dim`
        return t[(slice(None),) * dim + (slice(start, stop),)]

    # Edge-replicated by one: (x0, x0, x1, ..., x_{n-1}, x_{n-1}), n + 2 >= 3 pixels, so the outer taps
    # x1 (position 2) and x_{n-2} (position -3) are fixed-length slices of it, also when n = 1 (all x0).
    edged = torch.cat([cut(x, 0, 1), x, cut(x, -1, None)], dim)
    return torch.cat([cut(edged, 2, 3), edged, cut(edged, -3, -2)], dim)


def upscale_integer(x: torch.Tensor, factor: int | tuple[int, int],
                    kernel: torch.Tensor | None = None) -> torch.Tensor:
    """MATLAB `imresize(x, f, 'bicubic')` for integer f >= 1 on the last two dims, as a polyphase convolution.

    Equal to `imresize(x, scale=f)` up to float rounding; `factor` may be an (fy, fx) pair of integers. Both
    axes at once: one convolution of the padded input with the fy fx separable phase kernels (5x5 taps), then
    the phases are interleaved (a permuted copy). Any leading dims ((N,C,H,W), (N,C,T,H,W)), float dtype and
    device; differentiable; traceable with dynamic H and W (nothing here depends on the size). `kernel`: the
    `phase_kernel(fy, fx)` a caller keeps (a module buffer), else it is built here.
    """
    fy, fx = (factor, factor) if isinstance(factor, int) else (int(factor[0]), int(factor[1]))
    if min(fy, fx) < 1:
        raise ConfigError(f"upscale_integer needs factors >= 1, got {factor}")
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    planes = x.reshape(-1, 1, h, w)  # every channel (and frame) is one plane
    if fy > 1:
        planes = symmetric_pad2(planes, 2)
    if fx > 1:
        planes = symmetric_pad2(planes, 3)
    kernel = reusable_phase_kernel(fy, fx, x) if kernel is None else kernel
    phases = F.conv2d(planes, kernel.to(device=x.device, dtype=x.dtype))  # (B, fy fx, h, w)
    # the phases interleaved: channel p fx + q -> row fy i + p, column fx j + q. As a permuted copy rather than
    # F.pixel_shuffle, which is slower on CPU (torch 2.13; `benchmarks/bench_speed.py --only g --baseline fbf3485`)
    out = phases.reshape(-1, fy, fx, h, w).permute(0, 3, 1, 4, 2)
    return out.reshape(*lead, h * fy, w * fx)


# ---- integer downscales: fixed taps over strided slices of a mirrored axis ------------------------------------


@functools.lru_cache(maxsize=64)
def downscale_taps(factor: int) -> tuple[int, tuple[float, ...]]:
    """MATLAB's antialiased bicubic weights of `imresize(x, 1/f)` for integer f: (first tap, weights).

    LR pixel i sits at HR coordinate f i + (f - 1)/2, the same phase for every i, so one row of taps serves
    all: HR pixel f i + t (t = first, first + 1, ...) weighs cubic(d / f) / f with d = (f - 1)/2 - t, over
    |d| < 2f, renormalised to sum 1 as MATLAB does.
    """
    centre = (factor - 1) / 2
    taps = np.arange(math.floor(centre - 2 * factor), math.ceil(centre + 2 * factor) + 1)
    taps = taps[np.abs(centre - taps) < 2 * factor]  # the support's ends weigh 0 (zeros inside stay in place)
    weights = cubic((centre - taps) / factor) / factor
    return int(taps[0]), tuple((weights / weights.sum()).tolist())


def symmetric_indices(length, before: int, after: int, device=None) -> torch.Tensor:
    """Indices of an axis of `length` pixels padded by `before`/`after` mirrored pixels, edge repeated (MATLAB's
    'symmetric', any pad width: the mirror repeats with period 2 length). Tensor ops only, so a traced symbolic
    `length` stays symbolic (ONNX: Range, Mod, Where)."""
    positions = torch.arange(-before, length + after, device=device)
    folded = torch.remainder(positions, 2 * length)
    return torch.where(folded < length, folded, 2 * length - 1 - folded)


def downscale_integer(x: torch.Tensor, factor: int) -> torch.Tensor:
    """MATLAB `imresize(x, 1/f, 'bicubic')` (antialiased) for integer f >= 1 on the last two dims, H and W
    multiples of f: `shrink_axis_integer` along the rows, then along the columns.

    Equal to `imresize(x, scale=1/f)` up to float rounding; nothing depends on the size beyond the pad's index
    arithmetic and size-free slices, so it traces and exports with dynamic H and W. Any leading dims, float
    dtype and device; differentiable.
    """
    f = int(factor)
    if f < 1:
        raise ConfigError(f"downscale_integer needs a factor >= 1, got {factor}")
    if f == 1:
        return x
    return shrink_axis_integer(shrink_axis_integer(x, -2, f), -1, f)


def shrink_axis_integer(x: torch.Tensor, dim: int, factor: int) -> torch.Tensor:
    """MATLAB `imresize`'s antialiased 1/f along `dim` for integer f >= 2 and a length that is a multiple of f:
    the axis mirrored once (one gather), then `downscale_taps(f)` applied as strided views of it, each tap one
    in-place multiply-add over the output. Used for traced graphs (`downscale_integer`) and for eager long axes
    (`imresize` above DENSE_MAX_LENGTH): a 1024^2 RGB image shrunk by 4 in 12.5 ms against 37 ms for the per-tap
    gathers of `resize_axis`, which copy every tap first (`benchmarks/bench_speed.py --only g`; 2 threads, torch
    2.13). Differentiable; float rounding apart, the same sums as `resize_axis`."""
    dim = dim % x.dim()
    if dim == x.dim() - 1 and x.dim() > 1:  # taps strided along rows read whole rows; along columns, single values
        swapped = shrink_axis_integer(x.transpose(-1, -2).contiguous(), x.dim() - 2, factor)
        return swapped.transpose(-1, -2).contiguous()
    f = int(factor)
    first, weights = downscale_taps(f)
    padded = x.index_select(dim, symmetric_indices(x.shape[dim], -first, first + len(weights) - f, x.device))
    out = None
    for offset, weight in enumerate(weights):
        # tap `offset` of LR pixel i is padded pixel f i + offset; the padded axis has f (n - 1) + len(weights)
        # pixels, so a slice ending len(weights) - 1 - offset before its end holds the n taps (no size arithmetic)
        stop = offset - len(weights) + 1
        tap = padded[(slice(None),) * dim + (slice(offset, stop if stop < 0 else None, f),)]
        out = tap * weight if out is None else out.add_(tap, alpha=weight)
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
    scales = _requested_scales(scale)
    return output_size(in_hw, scales), scales


def _requested_scales(scale) -> tuple[float, float]:
    """A scale argument (number or (sy, sx)) as two positive finite floats."""
    scales = (scale, scale) if isinstance(scale, (int, float)) else tuple(float(v) for v in scale)
    if len(scales) != 2 or min(scales) <= 0 or not all(math.isfinite(s) for s in scales):
        raise ConfigError(f"imresize scale must be positive and finite, got {scale}")
    return tuple(float(s) for s in scales)


def _integer_factors(scales: tuple[float, float]) -> tuple[int, int] | None:
    """(fy, fx) when both scales are whole numbers >= 1 and one is >= 2 (the polyphase path), else None."""
    if all(s >= 1 and s.is_integer() for s in scales) and max(scales) >= 2:
        return int(scales[0]), int(scales[1])
    return None


def _integer_shrink(scales: tuple[float, float]) -> int | None:
    """f when both scales are 1/f for one whole f >= 2 (`downscale_integer`'s case when H, W are multiples of f)."""
    f = round(1.0 / scales[0])
    if f >= 2 and all(abs(s * f - 1.0) < 1e-9 for s in scales):
        return f
    return None


def imresize(x: torch.Tensor, scale=None, size=None, antialias: bool = True) -> torch.Tensor:
    """MATLAB `imresize(x, scale, 'bicubic')` on the last two dims (H, W) of a float tensor.

    `scale`: a positive number or an (sy, sx) pair; `size`: an int or (H, W). Values are not clamped
    or rounded (do that at the end, as MATLAB does for uint8 output, with `mgbp.io.round_levels`).
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ConfigError("imresize expects a floating-point tensor")
    if x.dim() < 2 or min(x.shape[-2:]) < 1:
        raise ConfigError(f"imresize expects (..., H, W) with H, W >= 1, got {tuple(x.shape)}")
    if size is None and scale is not None:
        factors = _integer_factors(_requested_scales(scale))
        if factors is not None:  # the size-independent polyphase path (no arithmetic on traced sizes)
            return upscale_integer(x, factors)
        shrink = _integer_shrink(_requested_scales(scale))
        if shrink is not None and antialias and is_tracing():  # size-free strided taps: the tables need sizes
            return downscale_integer(x, shrink)
    in_hw = tuple(x.shape[-2:])
    out_hw, scales = _normalise_request(in_hw, scale, size)
    factors = _integer_factors(scales)
    if factors is not None:
        return upscale_integer(x, factors)
    # MATLAB resizes the axis with the smallest scale first (stable sort: rows first on a tie).
    order = sorted(range(2), key=lambda k: scales[k])
    for k in order:
        if out_hw[k] == in_hw[k] and scales[k] == 1.0:
            continue
        dim = x.dim() - 2 + k
        if in_hw[k] <= DENSE_MAX_LENGTH:
            x = resize_axis_dense(x, dim, out_hw[k], scales[k], antialias)
        elif antialias and _integer_shrink((scales[k], scales[k])) and in_hw[k] % out_hw[k] == 0:
            x = shrink_axis_integer(x, dim, in_hw[k] // out_hw[k])
        else:
            x = resize_axis(x, dim, out_hw[k], scales[k], antialias)
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
    return round_levels(out).numpy().astype(np.uint8)


def modcrop(image, factor: int):
    """Crop H and W (the first two axes of an HxW[xC] array) down to multiples of `factor`."""
    h, w = image.shape[0], image.shape[1]
    return image[: h - h % factor, : w - w % factor]
