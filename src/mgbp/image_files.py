"""One image file in, one image file out: the generator's forward pass (Algorithm 1, through the exact tiling of
`mgbp.tiling`) between `mgbp.io`'s reader and writer.

The one owner of "upscale an image file", so that every front end (`mgbp upscale`, `mgbp serve`, the Ray workers
of `mgbp upscale --ray`) writes the same bytes for the same settings. In order:
- `read_source`: the header first (`mgbp.io.peek_image`): an image whose estimated memory exceeds the limit is
  refused before it is decoded, an animated one warns that only its first frame is upscaled; then the pixels,
  with alpha, bit depth (8 or 16), grey, ICC profile and EXIF;
- `upscale_planes`: `mgbp.inference.upscale_tensor` with the `InferenceOptions` (W checked, NaN/Inf refused by
  `run_model`, alpha upscaled with MATLAB bicubic, grey kept grey);
- `write_planes`: an optional resize of the output to another factor or size (`OutputOptions`: MATLAB bicubic,
  `mgbp.resize.imresize`, as Real-ESRGAN's `--outscale`), then `mgbp.io.write_image`, atomically: the format
  from the target's extension (PNG, JPEG, WebP, TIFF), the source's bit depth where the format holds it, its
  alpha (JPEG cannot: refused), ICC profile and EXIF.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgbp.errors import ConfigError, MgbpError
from mgbp.inference import InferenceOptions
from mgbp.io import (
    WRITE_EXTENSIONS,
    ImageHeader,
    LoadedImage,
    check_size_fits,
    holds_alpha,
    peek_image,
    read_image,
    write_format,
    write_image,
    written_bit_depth,
)


@dataclass(frozen=True)
class OutputOptions:
    """What the written file looks like beyond the pixels the model gives: `quality` (1-100) of JPEG (default 95)
    and WebP (default lossless) outputs, and the output size: `outscale` F (any factor > 0: each side
    round(F x the input's), resized from the model's output with MATLAB bicubic) or `size` (width, height): the
    largest size with the input's aspect ratio that fits inside it. Neither: the model's own scale."""

    quality: int | None = None
    outscale: float | None = None
    size: tuple[int, int] | None = None

    def check(self) -> None:
        """ConfigError, before any work, for a value no output could have."""
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be from 1 to 100, got {self.quality}")
        if self.outscale is not None and self.size is not None:
            raise ConfigError("--outscale and --size both set the output size: give one of them")
        if self.outscale is not None and not (math.isfinite(self.outscale) and self.outscale > 0):
            raise ConfigError(f"--outscale must be a number > 0, got {self.outscale}")
        if self.size is not None and min(self.size) < 1:
            raise ConfigError(f"--size must be WIDTHxHEIGHT with both at least 1, got {self.size[0]}x{self.size[1]}")

    @property
    def resizes(self) -> bool:
        return self.outscale is not None or self.size is not None

    def factor(self, height: int, width: int, scale: int) -> float:
        """The output's size over the input's (the model's `scale` when nothing else is asked)."""
        if self.size is not None:
            return min(self.size[0] / width, self.size[1] / height)
        return float(self.outscale) if self.outscale is not None else float(scale)

    def output_size(self, height: int, width: int, scale: int) -> tuple[int, int]:
        """(height, width) of the output of a `height` x `width` input: each side rounded half up, at least 1;
        with `size`, the side that binds is exactly the box's."""
        if self.size is not None:
            box_width, box_height = self.size
            if box_width * height <= box_height * width:  # the width binds
                return min(box_height, max(1, _round_half_up(height * box_width / width))), box_width
            return box_height, min(box_width, max(1, _round_half_up(width * box_height / height)))
        factor = self.factor(height, width, scale)
        return max(1, _round_half_up(height * factor)), max(1, _round_half_up(width * factor))


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5 + 1e-9)  # 1e-9: 3.5 * 11 = 38.5 must not come out as 38.49999


def parse_size(text: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" (e.g. 1920x1080) -> (width, height); ConfigError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if match is None:
        raise ConfigError(f"--size must be WIDTHxHEIGHT, e.g. 1920x1080, got {text!r}")
    return int(match.group(1)), int(match.group(2))


# ---------------------------------------------------------------------------------------------------- names


def output_extension(source: str | os.PathLike, ext: str = "auto") -> str:
    """The output's extension: `ext` ("png", "jpg", "webp", "tiff", ...), or with "auto" the source's own when it
    can be written, else ".png"."""
    ext = ext.lower().lstrip(".")
    if ext != "auto":
        return "." + ext
    suffix = Path(source).suffix.lower()
    return suffix if suffix in WRITE_EXTENSIONS else ".png"


def output_name(source: str | os.PathLike, scale: int, ext: str = "auto") -> str:
    """NAME_x<scale>.EXT, the name `mgbp upscale` gives an output written beside its input."""
    return f"{Path(source).stem}_x{int(scale)}{output_extension(source, ext)}"


# ---------------------------------------------------------------------------------------------------- reading

# Host memory per output sample (colour planes plus alpha) of `upscale_image_file`: the float32 accumulator,
# its normalised and clamped copies, and the writer's float64 rounding. Measured at 36.9 (8-bit) and 36.1
# (16-bit) bytes on 8192x8192 RGB outputs by `benchmarks/bench_image_memory.py --lr-size 2048 --bit-depth 8|16`
# (x86_64, 2 cores, torch 2.13 CPU), rounded up. The tiles' activations are bounded by the tile size and not
# counted.
BYTES_PER_OUTPUT_SAMPLE = {8: 40, 16: 40}
BYTES_PER_INPUT_SAMPLE = 16  # the decoded samples and their float copies


def image_memory_bytes(header: ImageHeader, scale: float) -> int:
    """Estimated host memory to upscale an image with this header by `scale` (the larger of the model's scale
    and the output's factor): the model runs on 3 colour planes whatever the source (grey is repeated), plus
    alpha."""
    planes = 3 + (header.planes in (2, 4))
    pixels = header.width * header.height
    per_pixel = scale * scale * BYTES_PER_OUTPUT_SAMPLE[header.bit_depth] + BYTES_PER_INPUT_SAMPLE
    return int(pixels * planes * per_pixel)


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux's MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_image_memory(header: ImageHeader, scale: float, max_memory_gib: float | None) -> None:
    """MgbpError (that file fails, a run goes on) when the estimate exceeds `max_memory_gib` (--max-memory), or
    by default the memory available now."""
    limit = max_memory_gib * 2**30 if max_memory_gib is not None else available_memory_bytes()
    needed = image_memory_bytes(header, scale)
    if limit is None or needed <= limit:
        return
    where = "allowed by --max-memory" if max_memory_gib is not None else "available (--max-memory sets the limit)"
    raise MgbpError(f"{header.width}x{header.height} at x{scale:g} needs about {needed / 2**30:.1f} GiB of memory, "
                    f"more than the {limit / 2**30:.1f} GiB {where}")


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def read_source(source: str | os.PathLike, scale: int, output: OutputOptions | None = None,
                max_memory: float | None = None, warn: Callable[[str], None] | None = None) -> LoadedImage:
    """Decode `source` once its header says it fits in memory (`check_image_memory` at the model's `scale` or the
    output's factor, whichever is larger); `warn` (default `warnings.warn`) hears that an animated image is
    upscaled from its first frame only. ImageReadError / MgbpError before anything is decoded."""
    header = peek_image(source)
    factor = (output or OutputOptions()).factor(header.height, header.width, scale)
    check_image_memory(header, max(scale, factor), max_memory)
    if header.frames > 1:
        (warn or _warn)(f"{source} has {header.frames} frames (animated): only the first frame is upscaled")
    return read_image(source)


def check_target_fits(source: str | os.PathLike, target: str | os.PathLike, scale: int,
                      output: OutputOptions | None = None) -> None:
    """ConfigError when `target`'s format cannot store what `source` becomes: an alpha channel in JPEG, a side
    beyond WebP's or JPEG's limit (`mgbp.io.check_size_fits`). From the header alone, for a command to ask of
    every input before any work; an unreadable source passes (its own job reports it)."""
    try:
        header = peek_image(source)
    except MgbpError:
        return
    if header.planes in (2, 4) and not holds_alpha(target):
        raise ConfigError(f"{source} has an alpha channel, which JPEG cannot store: use --ext png, webp or tiff "
                          f"(or --ext auto)")
    check_size_fits(target, *(output or OutputOptions()).output_size(header.height, header.width, scale))


def image_planes(loaded: LoadedImage) -> torch.Tensor:
    """(1, C, H, W) float32: the colour planes (1 grey or 3 RGB) then the alpha plane, if any."""
    planes = [loaded.rgb] if loaded.alpha is None else [loaded.rgb, loaded.alpha[..., None]]
    return torch.from_numpy(np.concatenate(planes, axis=2)).permute(2, 0, 1)[None].float()


# ---------------------------------------------------------------------------------------------------- upscaling


def upscale_planes(model, planes: torch.Tensor, options: InferenceOptions | None = None) -> torch.Tensor:
    """(N, C, H, W) planes as `image_planes` lays them out (same-size images may share a pass) -> upscaled by
    the model, clamped to [0, 1]. An image model only: a video (3D) model is a ConfigError."""
    from mgbp.inference import upscale_tensor

    if model.is_video:
        raise ConfigError("a video (3D) model upscales videos and frame folders, not single images")
    return upscale_tensor(model, planes, options or InferenceOptions())


# ---------------------------------------------------------------------------------------------------- writing


def resize_output(planes: torch.Tensor, lr_size: tuple[int, int], scale: int, output: OutputOptions) -> torch.Tensor:
    """The model's output (1, C, f h, f w) resized to `output`'s size for an `lr_size` (h, w) input, with MATLAB
    bicubic (alpha too), clamped; unchanged when that is the model's own size."""
    size = output.output_size(*lr_size, scale)
    if size == tuple(planes.shape[-2:]):
        return planes
    from mgbp.resize import imresize

    return imresize(planes, size=size).clamp(0.0, 1.0)


def write_planes(target: str | os.PathLike, planes: torch.Tensor, loaded: LoadedImage,
                 output: OutputOptions | None = None, scale: int | None = None) -> Path:
    """Write an upscaled (1, C, H, W) in [0, 1] laid out as `image_planes` gives it: resized first when `output`
    asks for another size (`scale`: the model's, needed then), with the source's bit depth where the format
    holds it (`mgbp.io.written_bit_depth`), its alpha, ICC profile and EXIF. JPEG cannot hold alpha:
    ConfigError before anything is written."""
    target, output = Path(target), output or OutputOptions()
    write_format(target)  # an extension we cannot write: refused before any resize
    colour_channels = loaded.rgb.shape[2]
    if loaded.alpha is not None and not holds_alpha(target):
        raise ConfigError(f"{target.name}: the source has an alpha channel, which JPEG cannot store "
                          f"(use png, webp or tiff)")
    if output.resizes:
        if scale is None:
            raise ConfigError("write_planes needs the model's scale to resize its output")
        planes = resize_output(planes, loaded.rgb.shape[:2], scale, output)
    out = planes[0].permute(1, 2, 0).numpy()
    alpha = out[..., colour_channels] if loaded.alpha is not None else None
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_image(target, out[..., :colour_channels], bit_depth=written_bit_depth(target, loaded.bit_depth),
                       alpha=alpha, icc_profile=loaded.icc_profile, exif=loaded.exif, quality=output.quality)


def upscale_image_file(source: str | os.PathLike, target: str | os.PathLike, model,
                       options: InferenceOptions | None = None, output: OutputOptions | None = None,
                       max_memory: float | None = None, warn: Callable[[str], None] | None = None) -> Path:
    """Read `source` (`read_source`: memory checked from the header first, `max_memory` GiB or the memory
    available), upscale it with `model` (`upscale_planes` with `options`) and write `target` atomically
    (`write_planes` with `output`). Returns `target`."""
    if model.is_video:
        raise ConfigError("a video (3D) model upscales videos and frame folders, not single images")
    scale, output = int(model.scale), output or OutputOptions()
    loaded = read_source(source, scale, output, max_memory, warn)
    out = upscale_planes(model, image_planes(loaded), options)
    return write_planes(target, out, loaded, output, scale)
