"""Exact tiled execution: the generator's forward pass (Algorithm 1, eq. 5) on inputs of any size, by overlapping
tiles whose blend equals the untiled output.

Tiling is an execution detail, not part of the method: `run_model` must give what one forward pass over the whole
image would give, only in less memory. It can because of the Cube-to-Cube property of back-projection (Section
III-A, Figure 5): every Downscale/Upscale pair of Algorithm 1 returns its residual on exactly the grid it
started from, so the whole network is finite convolutions on one fixed hierarchy of grids: equivariant to shifts
by whole cells of its lowest grid, and local (an output pixel sees only the input and noise within `border_lr`
LR pixels of it). A tile cut with that much context therefore reproduces the whole image's output over its kept
region (the "Tiling" paragraphs of the `mgbp.models.mgbpv2` and `mgbp.models.mgbpv1` docstrings say what each
family needs for that). The paper upscales large inputs by averaging overlapping patches (Section IV, "Video
Inference", Fig. 6: patches weighted by a window, then averaged). We do the same in space for every generator:

- the LR image is cut into tiles of equal size `tile` that share `overlap` LR pixels with their neighbours
  (the last tile of a row/column is moved inward, never shrunk, so all tiles have one shape and batch together);
- each tile carries its own context: it is cut from the image, so the model sees real pixels beyond the kept
  region and pads (zero / mirror, whatever the model does) only at the true image border, exactly as it does on
  the whole image. MGBPv2's bicubic upscale inside the model mirrors at the tile edge, which changes outputs
  within 2 LR pixels of it; the `border_lr` margin (never below 2) drops those pixels;
- each tile's output is weighted by a separable window that is 0 within `border_lr` LR pixels of an inner tile
  edge (where the output is not the whole-image output), then a linear ramp across the rest of the overlap, and
  1 elsewhere. Two facing ramps of the same length sum to exactly one; the output is still divided by the sum
  of the weights, so the moved-in last tile (larger overlap) is handled exactly too.

Two more things make tiles exact for the MGBP generators:

- grid alignment: MGBPv2's stride-2 grids make it equivariant only to shifts by whole cells of its lowest grid
  (2^(L-1) output pixels; an LR shift is f output pixels), and it pads its input to a valid size that depends
  on that size. Each tile tells the model where it lies (`placement`, for models whose capabilities say so)
  so that its grids line up with the whole image's; tiles are batched only with tiles padded alike.
  MGBPv1 (Figure 3) is equivariant to whole LR pixels already;
- noise (W > 0, Algorithm 1 line 1: x = [X, W N(0,1)]): ONE noise map is drawn for the whole image (from the
  `generator` given, else torch's RNG; or given as `noise`), and each tile gets the crop of it under its own
  region and context (`model.crop_noise`); where the model pads its input, it pads the noise with it, so a
  tile at a true image border sees what the whole image sees. Models without `draw_noise`/`crop_noise` draw
  their own noise per tile (a warning says so once): their tiled outputs at W > 0 differ from untiled ones.

With the same noise the tiled output equals the untiled one up to float rounding (tests check < 1/255). Tile size is
automatic (from free GPU memory, measured with a small probe tile; from a pixel budget on CPU) or given; on
out-of-memory the batch, then the tile, is halved and the image restarted. Peak device memory follows the tile
size; the full-size output lives on the input's device (CPU for numpy and PIL inputs). The geometric
self-ensemble (`dihedral_mean`, W = 0) is one more way of running the model: 8 tiled passes, each turned back.
The public API around this (numpy, PIL and tensors in and out, model and dtype resolution, W checks) is
`mgbp.inference`.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import torch

from mgbp.allocator import reuse_unless_opted_out
from mgbp.errors import ConfigError, MgbpError, NumericalError

# On CPU, tiles are sized so one forward pass produces at most this many output pixels (per frame), cut to fit
# the image (`balanced_tiles`). Measured with mgbp-x4, 960x540 -> 3840x2160, one thread (benchmarks/bench_speed.py
# section e; x86_64, 2 cores, torch 2.13): 1448^2 ran at the small-image rate per pixel with 1.4 GiB peak memory;
# 2048^2 (before) cost 2.4 GiB and no less time (its feature maps leave the cache), 1024^2 more overlap.
CPU_OUTPUT_PIXEL_BUDGET = 1448 * 1448
MIN_BORDER_LR = 2  # the bicubic upscale inside MGBPv2 reaches 2 LR pixels beyond the kept region
DEFAULT_RAMP_LR = 8  # LR pixels of linear cross-fade between tiles, beyond the two border margins
MIN_TILE_STRIDE = 8  # smallest tile advance; below it, tiles would be nearly all overlap
GPU_MEMORY_FRACTION = 0.7  # of the free memory, for activations of one batch of tiles
PROBE_SIZE = 64  # LR side of the probe tile that measures activation memory per pixel


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA (and other backends') out-of-memory errors, which we recover from with smaller tiles."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc)


def tile_starts(length: int, extent: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `extent` covering [0, length), neighbours sharing >= `overlap` pixels."""
    if extent >= length:
        return [0]
    stride = extent - overlap
    starts = list(range(0, length - extent, stride))
    starts.append(length - extent)  # the last tile moves inward instead of shrinking
    return starts


def tile_weights_1d(start: int, extent: int, length: int, scale: int, margin: int, overlap: int) -> torch.Tensor:
    """HR blending weights (float64, f*extent) of one tile along one axis; see the module docstring."""
    j = torch.arange(scale * extent, dtype=torch.float64)
    ramp_len = scale * (overlap - 2 * margin) + 1

    def ramp(distance):
        return ((distance - scale * margin + 1) / ramp_len).clamp(0.0, 1.0)

    weights = torch.ones_like(j)
    if start > 0:  # inner left edge: a neighbour covers what lies there
        weights = torch.minimum(weights, ramp(j))
    if start + extent < length:  # inner right edge
        weights = torch.minimum(weights, ramp(scale * extent - 1 - j))
    return weights


@dataclass
class TilePlan:
    """How one image is cut: tile extent and overlap in LR pixels, and how many tiles run per forward pass.

    `tile` is the tile's height, and its width too unless `tile_width` is set (the automatic CPU plan cuts
    rectangles that fit the image; tiles given by the user are square)."""

    tile: int
    overlap: int
    batch: int = 1
    tile_width: int | None = None

    def extent(self, height: int, width: int) -> tuple[int, int]:
        """(rows, columns) of every tile of an image of (height, width) LR pixels."""
        return min(self.tile, height), min(self.tile_width or self.tile, width)


def model_scale(model) -> int:
    return int(model.scale)


def model_border(model, noise_amp=None) -> int:
    """LR context that reaches an output pixel (at least MIN_BORDER_LR). With `noise_amp` the float 0, the
    model's `border_lr_without_noise` when it declares one (`QuietBorder`): W > 0 extensions need no context
    then (the shipped mgbp-x4: 11 LR pixels instead of 15, so `--tile 64` computes ~40% fewer tiles)."""
    border = model.border_lr
    if noise_amp is not None and _noise_is_off(noise_amp) and model.capabilities.quiet_border:
        border = model.border_lr_without_noise
    return max(int(border), MIN_BORDER_LR)


def min_tile(overlap: int) -> int:
    """Smallest useful tile: each tile must add at least MIN_TILE_STRIDE new pixels beyond the overlap."""
    return overlap + MIN_TILE_STRIDE


def default_overlap(model, noise_amp=None) -> int:
    return 2 * model_border(model, noise_amp) + DEFAULT_RAMP_LR


def model_device(model) -> tuple[torch.device, torch.dtype]:
    """Where a module's parameters live (CPU float32 for a module without parameters)."""
    param = next(iter(model.parameters()), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def _forward(model, lr: torch.Tensor, noise_amp, noise=None, placement=None) -> torch.Tensor:
    device, dtype = model_device(model)
    extra = {}
    if noise is not None:
        extra["noise"] = _map_noise(noise, lambda t: t.to(device=device, dtype=dtype))
    if placement is not None:
        extra["placement"] = placement
    with torch.inference_mode():
        out = model(lr.to(device=device, dtype=dtype), noise_amp=noise_amp, **extra)
    return out.float()


# ---------------------------------------------------------------------------------------------------------------
# One noise map per image. A model's noise is a tensor (MGBPv2) or a list of per-level tensors (MGBPv1).


def _map_noise(noise, function):
    """Apply `function` to a noise tensor or to every map of a list of them."""
    return function(noise) if torch.is_tensor(noise) else [function(m) for m in noise]


def _cat_noise(pieces: list):
    """Concatenate per-tile noise crops along the batch dimension."""
    if torch.is_tensor(pieces[0]):
        return torch.cat(pieces)
    return [torch.cat(level) for level in zip(*pieces)]


def crops_noise(model) -> bool:
    """True for models whose noise can be drawn for a whole image and cropped per tile (their declaration)."""
    return model.capabilities.whole_image_noise


def _noise_is_off(noise_amp) -> bool:
    return not torch.is_tensor(noise_amp) and float(noise_amp) == 0.0


def whole_image_noise(model, lr: torch.Tensor, noise_amp, noise=None, generator: torch.Generator | None = None):
    """The standard-normal noise of the whole input (None when the model draws its own, or when W is 0).

    Drawn on the CPU in float32 (from `generator`, else torch's RNG), so a seed gives the same noise on every
    device; an explicit `noise` is checked against the shape the model expects.
    """
    if not crops_noise(model):
        if noise is not None:
            raise ConfigError(f"{model.family} models cannot take a whole-image "
                              f"noise map for tiled inference")
        return None
    if noise is None:
        return None if _noise_is_off(noise_amp) else model.draw_noise(lr.shape, generator=generator, device="cpu")
    expected = model.draw_noise(lr.shape, device="meta")  # shapes only, nothing allocated
    given = [noise] if torch.is_tensor(noise) else list(noise)
    wanted = [expected] if torch.is_tensor(expected) else expected
    if len(given) < len(wanted) or any(tuple(g.shape) != tuple(w.shape) for g, w in zip(given, wanted)):
        raise ConfigError(f"noise must have shape(s) {[tuple(w.shape) for w in wanted]}, "
                          f"got {[tuple(g.shape) for g in given]}")
    return noise if torch.is_tensor(noise) else given[: len(wanted)]


_WARNED_INDEPENDENT_NOISE: set[str] = set()


def _warn_independent_noise(model) -> None:
    family = str(model.family)
    if family not in _WARNED_INDEPENDENT_NOISE:
        _WARNED_INDEPENDENT_NOISE.add(family)
        warnings.warn(f"{family} models draw their own noise in every tile: at W > 0 the tiled output differs "
                      f"from the untiled one (use a larger tile or W = 0 for exact results)", stacklevel=3)


def _frames(lr: torch.Tensor) -> int:
    return lr.shape[2] if lr.dim() == 5 else 1


def auto_plan(model, lr: torch.Tensor, tile: int | None, overlap: int, noise_amp) -> TilePlan:
    """Tile extent and batch size: given, or from a pixel budget (CPU) or measured GPU memory (CUDA)."""
    height, width = lr.shape[-2:]
    device, _ = model_device(model)
    if device.type != "cuda":
        if tile:
            return TilePlan(tile=tile, overlap=overlap, batch=1)
        lr_budget = CPU_OUTPUT_PIXEL_BUDGET // (model_scale(model) ** 2 * _frames(lr))
        rows, cols = balanced_tiles(height, width, lr_budget, overlap)
        return TilePlan(tile=rows, overlap=overlap, batch=1, tile_width=cols)
    lr_budget = _gpu_pixel_budget(model, lr, noise_amp)
    side = tile or max(min(math.isqrt(lr_budget), max(height, width)), min_tile(overlap))
    tile_pixels = min(side, height) * min(side, width)
    return TilePlan(tile=side, overlap=overlap, batch=max(1, lr_budget // tile_pixels))


def balanced_tiles(height: int, width: int, lr_budget: int, overlap: int) -> tuple[int, int]:
    """(rows, columns) of equal tiles of at most `lr_budget` pixels that cover the image with the fewest pixels
    computed. A square tile of the budget's side can waste much of the image's work: its last row or column is
    moved inward, never shrunk, so 540 rows in 512-row tiles compute 1024 rows. Here n tiles along an axis of
    length L get the extent ceil((L + (n - 1) overlap) / n), and (n_rows, n_cols) minimise the pixels computed
    (a few hundred pixels per tile stand for its fixed costs)."""
    per_tile_cost = 256
    smallest = min_tile(overlap)

    def extent(length: int, count: int) -> int:
        return min(length, max(smallest, -(-(length + (count - 1) * overlap) // count)))

    best = None
    for n_rows in range(1, max(1, height // MIN_TILE_STRIDE) + 1):
        rows = extent(height, n_rows)
        if rows * min(width, smallest) > lr_budget and n_rows < height // MIN_TILE_STRIDE:
            continue
        for n_cols in range(1, max(1, width // MIN_TILE_STRIDE) + 1):
            cols = extent(width, n_cols)
            if rows * cols > lr_budget:
                continue
            count = len(tile_starts(height, rows, overlap)) * len(tile_starts(width, cols, overlap))
            cost = count * (rows * cols + per_tile_cost)
            if best is None or cost < best[0]:
                best = (cost, rows, cols)
            break  # more columns only cost more once the tile fits
    if best is None:  # the budget is below the smallest useful tile: the smallest tile
        return min(height, smallest), min(width, smallest)
    return best[1], best[2]


_BYTES_PER_PIXEL: dict[tuple, float] = {}  # (model id, channels/frames, device, dtype) -> probe measurement


def _gpu_pixel_budget(model, lr: torch.Tensor, noise_amp) -> int:
    """LR pixels (per clip) one forward pass may hold: free memory over the peak memory per pixel of a probe.

    The probe (one PROBE_SIZE tile) runs once per model and input layout; a small tile overestimates the
    memory per pixel (fixed costs, padding to the model's grid), which errs on the safe side.
    """
    device, dtype = model_device(model)
    key = (id(model), tuple(lr.shape[1:-2]), str(device), dtype)
    if key not in _BYTES_PER_PIXEL:
        probe = lr[:1, ..., : min(PROBE_SIZE, lr.shape[-2]), : min(PROBE_SIZE, lr.shape[-1])]
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _forward(model, probe, noise_amp if isinstance(noise_amp, (int, float)) else noise_amp[:1])
        peak = torch.cuda.max_memory_allocated(device) - before
        _BYTES_PER_PIXEL[key] = max(peak, 1) / (probe.shape[-2] * probe.shape[-1])
    return max(int(GPU_MEMORY_FRACTION * available_gpu_memory(device) / _BYTES_PER_PIXEL[key]), 1)


def available_gpu_memory(device: torch.device) -> int:
    """Bytes this process may still allocate: the device's free memory plus PyTorch's cache, within the cap
    of `torch.cuda.set_per_process_memory_fraction` (what `mgbp upscale --max-gpu-memory` sets)."""
    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    free += torch.cuda.memory_reserved(device) - allocated  # PyTorch's own cache
    get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # newer PyTorch only
    fraction = get_fraction(device) if get_fraction is not None else 1.0
    return max(0, min(free, int(fraction * total) - allocated))


def run_model(model, lr: torch.Tensor, noise_amp=0.0, tile: int | None = None, overlap: int | None = None,
              batch: int | None = None, progress: bool = False, out_device=None, noise=None,
              generator: torch.Generator | None = None, self_ensemble: bool = False) -> torch.Tensor:
    """Tiled forward pass: (N,3,h,w) or (N,3,T,h,w) float in [0,1] -> float32 output, not clamped.

    `tile`: LR tile side (None: automatic); `overlap`: LR pixels shared by neighbouring tiles (None:
    2*border_lr + 8). `noise_amp` is passed to the model (float or (N,) tensor). For W > 0 one standard-normal
    noise map is drawn for the whole input (from `generator`, else torch's RNG) or taken from `noise` (the
    model's noise for the whole input: MGBPv2 (N, noise_channels, [T,] f h, f w), MGBPv1 its per-level list),
    and every tile gets its crop, so tiled = untiled with that noise; models without `crop_noise` draw their
    own noise per tile (with a warning). The output lives on `out_device` (default: lr's).
    Out of memory (CUDA's error, or a RuntimeError saying so): the batch, then the tile, is halved and the
    image restarted with the same noise; MgbpError when even the smallest useful tile does not fit.
    `self_ensemble` (W = 0 only): the mean of the outputs for the 8 flips/rotations of the input, each turned
    back (`dihedral_mean`); 8 times the work.
    """
    if lr.dim() not in (4, 5):
        raise ConfigError(f"run_model expects (N,C,H,W) or (N,C,T,H,W), got shape {tuple(lr.shape)}")
    if self_ensemble:
        check_self_ensemble(noise_amp)
        return dihedral_mean(lambda x: run_model(model, x, 0.0, tile, overlap, batch, progress, out_device), lr)
    overlap = default_overlap(model, noise_amp) if overlap is None else int(overlap)
    if overlap < 0 or (tile is not None and tile <= overlap):
        raise ConfigError(f"tile size ({tile}) must exceed the tile overlap ({overlap}), which must be >= 0")
    border = model_border(model, noise_amp)
    if overlap < 2 * border:
        warnings.warn(f"tile overlap {overlap} is below twice the model's border ({border} LR "
                      f"pixels): tile edges may show", stacklevel=2)
    reuse_unless_opted_out()  # large buffers kept by malloc, not faulted in again per call (mgbp.allocator)
    plan = auto_plan(model, lr, tile, overlap, noise_amp)
    if batch is not None:
        plan.batch = max(1, int(batch))
    out_device = lr.device if out_device is None else torch.device(out_device)
    noise = whole_image_noise(model, lr, noise_amp, noise, generator)
    while True:
        try:
            return _run_tiles(model, lr, noise_amp, noise, plan, progress, out_device)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            reason = str(exc).splitlines()[0][:120]
        # outside the except block: the traceback, and the tiles it holds on the device, are gone
        _shrink_after_oom(plan, lr, reason)


def check_self_ensemble(noise_amp) -> None:
    """The self-ensemble is for the fidelity end: averaging 8 noisy outputs would wash out their texture."""
    if not _noise_is_off(noise_amp):
        raise ConfigError("the self-ensemble averages 8 outputs, which would wash out the noise texture: "
                          "use it at W = 0 (--noise 0)")


def dihedral_transforms() -> list[tuple[int, bool]]:
    """The 8 symmetries of the square as (quarter turns, mirror first): identity, 3 rotations, 4 reflections."""
    return [(turns, mirror) for mirror in (False, True) for turns in range(4)]


def dihedral_mean(run, lr: torch.Tensor) -> torch.Tensor:
    """Geometric self-ensemble: the mean over the 8 flips/rotations g of the last two (spatial) axes of
    g^-1(run(g(lr))). A model trained with these augmentations answers each g slightly differently; the mean
    cancels part of the error (the "+" models of EDSR, Lim et al. 2017). Exact for an equivariant `run`."""
    total = None
    for turns, mirror in dihedral_transforms():
        x = lr.flip(-1) if mirror else lr
        y = torch.rot90(run(torch.rot90(x, turns, (-2, -1))), -turns, (-2, -1))
        y = y.flip(-1) if mirror else y
        total = y if total is None else total.add_(y)  # y is a fresh tensor: summing in place saves a copy
    return total / 8


def _shrink_after_oom(plan: TilePlan, lr: torch.Tensor, reason: str) -> None:
    """Halve the batch, else the tile; give up (MgbpError) when a tile would be mostly overlap."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if plan.batch > 1:
        plan.batch //= 2
        return
    current = max(plan.extent(*lr.shape[-2:]))
    if current <= min_tile(plan.overlap):
        raise MgbpError(f"out of memory even with {current}-pixel tiles; try --device cpu, --half or --bf16 "
                        f"({reason})")
    plan.tile, plan.tile_width = max(current // 2, min_tile(plan.overlap)), None


def _tile_batches(model, jobs: list, rows, cols, extent: tuple[int, int], size: tuple[int, int], batch: int):
    """Chunks of at most `batch` jobs (n, i, j); for models placed per tile, only tiles padded alike together."""
    if not model.capabilities.placement:
        return [jobs[k:k + batch] for k in range(0, len(jobs), batch)]
    (ext_h, ext_w), (height, width), scale = extent, size, model_scale(model)
    groups: dict[tuple, list] = {}
    for job in jobs:
        placement = (rows[job[1]], cols[job[2]], height, width)
        groups.setdefault(model.tile_padding((scale * ext_h, scale * ext_w), placement), []).append(job)
    return [group[k:k + batch] for group in groups.values() for k in range(0, len(group), batch)]


def _run_tiles(model, lr, noise_amp, noise, plan: TilePlan, progress: bool, out_device) -> torch.Tensor:
    scale = model_scale(model)
    height, width = lr.shape[-2:]
    ext_h, ext_w = plan.extent(height, width)
    margin = min(model_border(model, noise_amp), plan.overlap // 2)
    rows, cols = tile_starts(height, ext_h, plan.overlap), tile_starts(width, ext_w, plan.overlap)
    wy = [tile_weights_1d(y, ext_h, height, scale, margin, plan.overlap) for y in rows]
    wx = [tile_weights_1d(x, ext_w, width, scale, margin, plan.overlap) for x in cols]
    jobs = [(n, i, j) for n in range(lr.shape[0]) for i in range(len(rows)) for j in range(len(cols))]
    placed = model.capabilities.placement
    if noise is None and not _noise_is_off(noise_amp) and len(jobs) > lr.shape[0]:
        _warn_independent_noise(model)
    out = None
    bar = _tile_bar(len(jobs), progress)
    try:
        for chunk in _tile_batches(model, jobs, rows, cols, (ext_h, ext_w), (height, width), plan.batch):
            regions = [(n, slice(rows[i], rows[i] + ext_h), slice(cols[j], cols[j] + ext_w)) for n, i, j in chunk]
            tiles = torch.cat([lr[n:n + 1, ..., r, c] for n, r, c in regions])
            amp = noise_amp if not torch.is_tensor(noise_amp) else noise_amp[[n for n, _, _ in chunk]]
            tile_noise = None if noise is None else _cat_noise(
                [model.crop_noise(_map_noise(noise, lambda t, n=n: t[n:n + 1]), r, c) for n, r, c in regions])
            # a chunk shares its padding (see _tile_batches), so its first tile's placement serves them all
            placement = (rows[chunk[0][1]], cols[chunk[0][2]], height, width) if placed else None
            where = f"LR ({rows[chunk[0][1]]}, {cols[chunk[0][2]]})"
            result = _finite_forward(model, tiles, amp, tile_noise, placement, where).to(out_device)
            if (ext_h, ext_w) == (height, width) and len(chunk) == len(jobs):
                # one tile is each whole image, all in this pass: its weights are 1 and the blend below would
                # return it unchanged (x * 1 + 0, then / 1), so it is the output as it is
                return result.float()
            if out is None:
                out = result.new_zeros((lr.shape[0], *result.shape[1:-2], scale * height, scale * width))
            for k, (n, i, j) in enumerate(chunk):
                weight = (wy[i][:, None] * wx[j][None, :]).to(device=out_device, dtype=result.dtype)
                ys, xs = scale * rows[i], scale * cols[j]
                out[n, ..., ys:ys + scale * ext_h, xs:xs + scale * ext_w] += result[k] * weight
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return out / _weight_sum(wy, rows, ext_h, height, scale, out_device)[:, None] \
        / _weight_sum(wx, cols, ext_w, width, scale, out_device)[None, :]


REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def _finite_forward(model, tiles, amp, noise, placement, where: str) -> torch.Tensor:
    """`_forward`, checked: a NaN/Inf anywhere in the output is never averaged in (it would be written as black
    pixels). A model in float16/bfloat16 reruns the piece in float32 (an overflow of the reduced range, most
    likely); a float32 model, or a float32 rerun that is not finite either, is a NumericalError."""
    result = _forward(model, tiles, amp, noise, placement)
    if all_finite(result):
        return result
    _, dtype = model_device(model)
    if dtype in REDUCED_PRECISION:
        result = _forward(copy.deepcopy(model).float(), tiles, amp, noise, placement)
        if all_finite(result):
            warnings.warn(f"the tile at {where} overflowed in {str(dtype).replace('torch.', '')}: it was rerun "
                          f"in float32", stacklevel=3)
            return result
    again = " (in float32 too)" if dtype in REDUCED_PRECISION else ""
    raise NumericalError(f"the model's output has NaN/Inf values in the tile at {where}{again}: bad weights or "
                         f"a numeric overflow; nothing was written")


def all_finite(t: torch.Tensor) -> bool:
    """No NaN/Inf in `t`, in one reading pass when it is so: a NaN or an infinity anywhere makes the float32 sum
    NaN or infinite, whatever the order of the additions. Only a sum that overflowed (or a tensor that does hold
    a NaN/Inf) takes the element-wise test, which has four passes over the tensor."""
    return bool(torch.isfinite(t.sum(dtype=torch.float32))) or bool(torch.isfinite(t).all())


def _weight_sum(weights, starts, extent, length, scale, device) -> torch.Tensor:
    """Sum of the 1D tile weights along one axis; the 2D sum is the outer product of the two (a grid)."""
    total = torch.zeros(scale * length, dtype=torch.float64)
    for start, weight in zip(starts, weights):
        total[scale * start:scale * (start + extent)] += weight
    return total.to(device=device, dtype=torch.float32)


def _tile_bar(total: int, progress: bool):
    if not progress or total < 4:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="tiles", unit="tile", leave=False)
