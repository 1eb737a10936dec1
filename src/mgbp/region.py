"""A region of the full render, computed alone: the generator's forward pass (Algorithm 1) on a crop that carries
its own context, with the crop of the whole image's noise map (line 1: x = [X, W N(0,1)]).

This is one tile of `mgbp.tiling.run_model`'s exact tiling, placed where the user looks: the crop extends
`border_lr` LR pixels beyond the region (the reach of the network, so the region's pixels see what they see in
the whole image), MGBPv2 is told where the crop lies (`placement`, so its stride-2 grids and border padding line
up with the whole image's), and the noise is the crop of the map drawn for the whole image from the same seed
(`model.draw_noise` / `crop_noise`). The region therefore equals the same region of `upscale_tensor` on the
whole image up to float rounding, at any W, for a fraction of the work: the live preview of `mgbp serve`.
Grey and alpha follow `upscale_tensor` (grey runs as RGB and comes back as the channel mean; alpha is upscaled
with MATLAB bicubic, whose 4 taps need 2 LR pixels of context, within `border_lr`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mgbp.errors import ConfigError
from mgbp.inference import check_noise_amplitude, seeded_generator
from mgbp.resize import imresize
from mgbp.tiling import crops_noise, model_border, model_device, model_scale, whole_image_noise


@dataclass(frozen=True)
class Region:
    """A rectangle of an image in pixels: rows [top, top + height), columns [left, left + width)."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width

    def scaled(self, factor: int) -> Region:
        """The same rectangle on an image `factor` times larger."""
        return Region(factor * self.top, factor * self.left, factor * self.height, factor * self.width)

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)

    @classmethod
    def centred(cls, y: float, x: float, size: int, height: int, width: int) -> Region:
        """A square of side `size` (clipped to the image) centred on (y, x), moved inward to fit the image."""
        h, w = min(int(size), height), min(int(size), width)
        top = min(max(round(y - h / 2), 0), height - h)
        left = min(max(round(x - w / 2), 0), width - w)
        return cls(top, left, h, w)


def draw_image_noise(model, planes: torch.Tensor, noise: float, seed: int | None):
    """The whole image's noise map exactly as `upscale_tensor(..., seed=seed)` draws it (None when W = 0 or the
    model draws its own noise); reusable across previews of one image while only W changes."""
    return whole_image_noise(model, _colour(planes), noise, generator=seeded_generator(seed))


def upscale_region(model, planes: torch.Tensor, region: Region, noise: float = 0.0, seed: int | None = 0,
                   noise_map=None) -> torch.Tensor:
    """The `region` (LR pixels) of `upscale_tensor(model, planes, noise=noise, seed=seed)`, computed from a crop:
    (1, C, f*height, f*width) clamped to [0, 1]. `planes`: (1, C, H, W) with C = 1..4 as `upscale_tensor` takes.
    `noise_map`: the whole image's map (`draw_image_noise`; drawn here when None and W > 0). Exact only for
    models that crop their noise (`mgbp.tiling.crops_noise`); others draw fresh noise for the crop at W > 0.
    """
    check_noise_amplitude(noise)
    if planes.dim() != 4 or planes.shape[0] != 1:
        raise ConfigError(f"upscale_region takes one image (1, C, H, W), got shape {tuple(planes.shape)}")
    height, width = planes.shape[-2:]
    if region.top < 0 or region.left < 0 or region.bottom > height or region.right > width \
            or region.height < 1 or region.width < 1:
        raise ConfigError(f"region {region} does not lie inside the {height}x{width} image")
    scale, border = model_scale(model), model_border(model, noise)
    context = Region(max(0, region.top - border), max(0, region.left - border), 0, 0)
    context = Region(context.top, context.left, min(height, region.bottom + border) - context.top,
                     min(width, region.right + border) - context.left)
    rows, cols = context.slices()
    colour = _colour(planes)
    if noise_map is None and crops_noise(model):
        noise_map = draw_image_noise(model, planes, noise, seed)
    out = _forward_crop(model, colour[..., rows, cols], noise, noise_map, context, (height, width))
    inner = Region(region.top - context.top, region.left - context.left, region.height, region.width).scaled(scale)
    out = out[..., inner.slices()[0], inner.slices()[1]].clamp(0.0, 1.0)
    if planes.shape[1] in (1, 2):  # grey: the channel mean, as upscale_tensor gives it back
        out = out.mean(dim=1, keepdim=True)
    if planes.shape[1] in (2, 4):
        alpha = imresize(planes[:, -1:, rows, cols].float(), scale=scale).clamp(0.0, 1.0)
        out = torch.cat([out, alpha[..., inner.slices()[0], inner.slices()[1]].to(out.dtype)], dim=1)
    return out


def _colour(planes: torch.Tensor) -> torch.Tensor:
    """The three colour planes the network sees: grey repeated, alpha dropped."""
    if planes.shape[1] not in (1, 2, 3, 4):
        raise ConfigError(f"images must have 1 to 4 channels, got {planes.shape[1]}")
    return planes[:, :1].expand(-1, 3, -1, -1) if planes.shape[1] in (1, 2) else planes[:, :3]


def _forward_crop(model, crop: torch.Tensor, noise: float, noise_map, context: Region, size) -> torch.Tensor:
    """One forward pass on the context crop, with its part of the noise map and, for MGBPv2, its placement."""
    extra = {}
    device, dtype = model_device(model)
    if noise_map is not None:
        rows, cols = context.slices()
        cropped = model.crop_noise(noise_map, rows, cols)
        extra["noise"] = cropped.to(device, dtype) if torch.is_tensor(cropped) else [
            level.to(device, dtype) for level in cropped]
    if model.capabilities.placement:
        extra["placement"] = (context.top, context.left, size[0], size[1])
    with torch.inference_mode():
        out = model(crop.to(device=device, dtype=dtype).contiguous(), noise_amp=noise, **extra)
    return out.float().cpu()
