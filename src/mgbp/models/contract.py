"""The generator contract: what the rest of the package may ask of a generator (Algorithm 1's G, Figure 3's
MGBPv1, the bicubic baseline of Table II, or a stand-in), in code.

Every generator satisfies `Generator` and declares its `Capabilities`, the way spandrel's model descriptor
declares scale, half-precision support, size requirements and tiling support: callers read the declaration and
never probe with `getattr(model, name, default)`. A capability comes with a protocol that says what it needs:

- `Generator` (all): `scale`, `is_video`, `family`, `noise_channels`, `config` (a dataclass, JSON-serialisable
  with `dataclasses.asdict`), `border_lr` (LR pixels of context that reach an output pixel: tiles overlap that
  much), `capabilities`, and `forward(lr, noise_amp=0.0, noise=None)`: (N,3,h,w) or clips (N,3,T,h,w) in [0,1]
  -> (N,3,f h,f w) or (N,3,T',f h,f w), not clamped; `noise_amp` W a float or an (N,) tensor; `noise` an
  explicit noise map (or list of maps) for reproducibility; W = 0 is deterministic.
- `TiledNoise` (`capabilities.whole_image_noise`): `draw_noise(lr_shape, generator=None, device=None)` draws
  one noise map for a whole image and `crop_noise(noise, rows, cols)` cuts a tile's part of it, so that tiled
  inference equals the untiled pass at W > 0 too (`mgbp.tiling.run_model`).
- `PlacedTiles` (`capabilities.placement`): `tile_padding(size_hr, placement)` and `forward(..., placement=(top,
  left, H, W))`: a tile is padded so that its grids line up with the whole image's (MGBPv2's stride-2 grids).
- `QuietBorder` (`capabilities.quiet_border`): `border_lr_without_noise`, the LR context that reaches an output
  pixel when W is 0 (no larger than `border_lr`): MGBPv2's W > 0 extensions (noise mask, a noise-only output
  projection) add context only where there is noise, so tiles of a W = 0 call may overlap less.
- `ClipGenerator` (`is_video`): `clip_length` (frames per temporal window, the training clip length),
  `frames_consumed` (frames lost at each end of a clip: T' = T - 2 frames_consumed) and `border_frames`
  (frames of temporal context that reach an output frame).

Sizes: every family takes any H, W >= 1 (MGBPv2 pads to a valid size itself, MGBPv1 mirrors); a clip needs at
least 2 * frames_consumed + 1 frames. `check_generator` refuses, in one line, a model that breaks the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from mgbp.errors import ConfigError


@dataclass(frozen=True)
class Capabilities:
    """What a generator family supports, declared by the family."""

    whole_image_noise: bool  # TiledNoise: tiles take crops of one noise map, so tiling is exact at W > 0
    placement: bool  # PlacedTiles: tiles are padded so that the model's grids line up with the image's
    half: bool = True  # runs in float16 (on a GPU)
    bf16: bool = True  # runs in bfloat16
    quiet_border: bool = False  # QuietBorder: a W = 0 call needs less tile context than `border_lr`


@runtime_checkable
class Generator(Protocol):
    """What every generator has (module docstring)."""

    scale: int
    is_video: bool
    family: str
    noise_channels: int
    config: Any
    border_lr: int
    capabilities: Capabilities

    def forward(self, lr: torch.Tensor, noise_amp: float | torch.Tensor = 0.0, noise=None) -> torch.Tensor: ...


@runtime_checkable
class TiledNoise(Protocol):
    """What exact tiling at W > 0 needs: one noise map per image, cropped per tile."""

    def draw_noise(self, lr_shape, generator: torch.Generator | None = None, device=None): ...

    def crop_noise(self, noise, rows: slice, cols: slice): ...


@runtime_checkable
class PlacedTiles(Protocol):
    """What grid-aligned tiles need: the padding of a placed tile, and `forward(..., placement=)`."""

    def tile_padding(self, size_hr: tuple[int, int], placement=None) -> tuple[int, int, int, int]: ...


@runtime_checkable
class QuietBorder(Protocol):
    """What tiling a W = 0 call with less overlap needs: the context that reaches an output pixel without noise."""

    border_lr_without_noise: int


@runtime_checkable
class ClipGenerator(Protocol):
    """What video inference needs of a generator of clips."""

    clip_length: int
    frames_consumed: int
    border_frames: int


def missing_members(model, protocol: type) -> list[str]:
    """The members of `protocol` that `model` lacks."""
    members = [name for name in vars(protocol) if not name.startswith("_")]
    members += list(getattr(protocol, "__annotations__", {}))
    return sorted({name for name in members if not hasattr(model, name)})


def check_generator(model):
    """`model` itself when it keeps the contract (every protocol its declaration calls for), else a one-line
    ConfigError that names what is missing."""
    name = type(model).__name__
    missing = missing_members(model, Generator)
    if not missing:
        declared = model.capabilities
        if not isinstance(declared, Capabilities):
            raise ConfigError(f"{name}.capabilities must be an mgbp.models.contract.Capabilities")
        for wanted, protocol in ((declared.whole_image_noise, TiledNoise), (declared.placement, PlacedTiles),
                                 (declared.quiet_border, QuietBorder), (model.is_video, ClipGenerator)):
            missing += missing_members(model, protocol) if wanted else []
    if missing:
        raise ConfigError(f"{name} is not a generator: it lacks {', '.join(missing)} (mgbp.models.contract)")
    return model
