"""One image file in, one image file out: the generator's forward pass (Algorithm 1, through the exact tiling of
`mgbp.inference`) between `mgbp.io`'s reader and writer, as `mgbp upscale` does it.

This is the library's "upscale an image file" so that every front end (the command line, `mgbp serve`) writes
the same bytes for the same settings: the source's format where it can be written (PNG or JPEG, else PNG), its
bit depth (8 or 16), its alpha channel (upscaled with MATLAB bicubic), grey kept grey, ICC profile and EXIF kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mgbp.errors import ConfigError
from mgbp.io import WRITE_EXTENSIONS, LoadedImage, read_image, write_image


def output_extension(source: str | os.PathLike, ext: str = "auto") -> str:
    """The output's extension: `ext` ("png", "jpg"), or with "auto" the source's own when it can be written,
    else ".png"."""
    ext = ext.lower().lstrip(".")
    if ext != "auto":
        return "." + ext
    suffix = Path(source).suffix.lower()
    return suffix if suffix in WRITE_EXTENSIONS else ".png"


def output_name(source: str | os.PathLike, scale: int, ext: str = "auto") -> str:
    """NAME_x<scale>.EXT, the name `mgbp upscale` gives an output written beside its input."""
    return f"{Path(source).stem}_x{int(scale)}{output_extension(source, ext)}"


def image_planes(loaded: LoadedImage) -> torch.Tensor:
    """(1, C, H, W) float32: the colour planes (1 grey or 3 RGB) then the alpha plane, if any."""
    planes = [loaded.rgb] if loaded.alpha is None else [loaded.rgb, loaded.alpha[..., None]]
    return torch.from_numpy(np.concatenate(planes, axis=2)).permute(2, 0, 1)[None].float()


def write_planes(target: str | os.PathLike, planes: torch.Tensor, loaded: LoadedImage) -> Path:
    """Write an upscaled (1, C, H, W) in [0, 1] laid out as `image_planes` gives it, with the source's bit depth
    (8 for JPEG), alpha, ICC profile and EXIF. JPEG cannot hold alpha: ConfigError before anything is written."""
    target = Path(target)
    out = planes[0].permute(1, 2, 0).numpy()
    colour_channels = loaded.rgb.shape[2]
    alpha = out[..., colour_channels] if loaded.alpha is not None else None
    jpeg = target.suffix.lower() in (".jpg", ".jpeg")
    if jpeg and alpha is not None:
        raise ConfigError(f"{target.name}: the source has an alpha channel, which JPEG cannot store (use png)")
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_image(target, out[..., :colour_channels], bit_depth=8 if jpeg else loaded.bit_depth, alpha=alpha,
                       icc_profile=loaded.icc_profile, exif=loaded.exif)


def upscale_image_file(source: str | os.PathLike, target: str | os.PathLike, model, noise: float = 0.0,
                       seed: int | None = 0, tile: int | None = None, overlap: int | None = None,
                       progress: bool = False, consistent: bool = False, self_ensemble: bool = False,
                       allow_extrapolation: bool = False) -> Path:
    """Read `source` (alpha, 16-bit, grey, ICC, EXIF), upscale it with `model` (`mgbp.inference.upscale_tensor`:
    W = `noise` in [0, 1] unless `allow_extrapolation`, its noise seeded by `seed`, tiles, back-projection with
    `consistent`, `self_ensemble`) and write `target` atomically with the same metadata. Returns `target`."""
    from mgbp.inference import upscale_tensor

    if model.is_video:
        raise ConfigError("a video (3D) model upscales videos and frame folders, not single images")
    loaded = read_image(source)
    out = upscale_tensor(model, image_planes(loaded), noise=noise, tile=tile, overlap=overlap, progress=progress,
                         consistent=consistent, seed=seed, self_ensemble=self_ensemble,
                         allow_extrapolation=allow_extrapolation)
    return write_planes(target, out, loaded)
