"""Model presets: the configurations of Table I (MGBPv2 and MGBP-3D) plus small ones of our own.

Paper (`../shared/paper/mgbp-paper.txt`): Table I-a (MGBPv2: x2, x3 mu 32 / 2 levels / 192-128; x4 mu 4 /
4 levels / 192-128-64-32; x8 mu 2 / 5 levels / 192-128-64-32-16; x16 mu 2 / 6 levels / 256-192-128-92-48-9)
and Table I-b (MGBP-3D: x4 mu 6 / 4 levels / 192-128-64-32; x16 mu 2 / 6 levels / 256-192-128-92-48-9).

Channel lists are written as in Table I, which is lowest resolution first (see `mgbp.models.mgbpv2`). The
levels are always two apart in resolution (stride-2 Downscales), whatever the factor f: x3 still has 2 levels.
All Table I presets use the authors' layout: 'valid' 3x3 convolutions, one noise feature per level, biases,
plus a global residual on the bicubic input (our choice: it speeds up training, see
`../shared/reference/anchors.md`). 3D presets use 'same' temporal padding (T frames in, T out); pass
`temporal_padding="none"` for the paper's memory-saving training layout. `frames` is the clip length a 3D model
is trained on and run with (`mgbp.video`): the paper's 37 for the x16 preset, `mgbpv2.DEFAULT_CLIP_FRAMES` (5,
our trainer's default clip) otherwise; the trainer records its own `data.frames`.

A preset is data: a name, a one-line description, where it comes from and the config fields. Adding one is
adding one entry to `PRESETS`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from types import MappingProxyType

import torch

from mgbp.errors import ConfigError
from mgbp.models.mgbpv2 import MGBPv2, MGBPv2Config, count_parameters, macs_per_output_pixel


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str
    source: str
    config: MappingProxyType  # MGBPv2Config fields

    def make_config(self, **overrides) -> MGBPv2Config:
        known = {f.name for f in dataclasses.fields(MGBPv2Config)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown model option(s) for preset {self.name!r}: {', '.join(unknown)}")
        return MGBPv2Config(**{**self.config, **overrides})


def _preset(name: str, description: str, source: str, **config) -> tuple[str, Preset]:
    return name, Preset(name, description, source, MappingProxyType(config))


PRESETS: dict[str, Preset] = dict(
    [
        _preset("mgbpv2-x2", "MGBPv2 x2", "Table I-a", scale=2, mu=32, levels=2, channels=(192, 128)),
        _preset("mgbpv2-x3", "MGBPv2 x3", "Table I-a", scale=3, mu=32, levels=2, channels=(192, 128)),
        _preset("mgbpv2-x4", "MGBPv2 x4", "Table I-a", scale=4, mu=4, levels=4, channels=(192, 128, 64, 32)),
        _preset(
            "mgbpv2-x8", "MGBPv2 x8", "Table I-a", scale=8, mu=2, levels=5, channels=(192, 128, 64, 32, 16)
        ),
        _preset(
            "mgbpv2-x16",
            "MGBPv2 x16",
            "Table I-a",
            scale=16,
            mu=2,
            levels=6,
            channels=(256, 192, 128, 92, 48, 9),
        ),
        _preset(
            "mgbp3d-x4",
            "MGBP-3D x4 (video)",
            "Table I-b",
            dims=3,
            scale=4,
            mu=6,
            levels=4,
            channels=(192, 128, 64, 32),
        ),
        _preset(
            "mgbp3d-x16",
            "MGBP-3D x16 (video)",
            "Table I-b",
            dims=3,
            scale=16,
            mu=2,
            levels=6,
            channels=(256, 192, 128, 92, 48, 9),
            frames=37,  # the paper's training clips (Section III-A, trained without temporal padding)
        ),
        # Ours. fast-x4 is the configuration of the feasibility run of anchors.md (3.54 M parameters).
        _preset(
            "fast-x4",
            "small x4 for quick training and CPU use",
            "ours",
            scale=4,
            mu=2,
            levels=4,
            channels=(128, 96, 64, 32),
        ),
        _preset("tiny", "tiny x4 for tests", "ours", scale=4, mu=2, levels=3, channels=(12, 8, 4)),
        _preset(
            "tiny-3d",
            "tiny x2 video model for tests",
            "ours",
            dims=3,
            scale=2,
            mu=2,
            levels=3,
            channels=(8, 6, 4),
        ),
    ]
)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r} (choose from {', '.join(PRESETS)})") from None


def build_model(preset_name: str, device: torch.device | str | None = None, **overrides) -> MGBPv2:
    """A freshly initialised generator of a preset; `overrides` replace config fields (e.g. padding="same").

    `device="meta"` builds it without allocating weights (for counting parameters of the big presets).
    """
    config = get_preset(preset_name).make_config(**overrides)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = MGBPv2(config)
    model.preset = preset_name
    return model


@dataclasses.dataclass(frozen=True)
class PresetSummary:
    name: str
    family: str
    scale: int
    levels: int
    mu: int
    channels: tuple[int, ...]
    parameters: int
    macs_per_pixel: float
    source: str
    description: str


def summarize(preset_name: str) -> PresetSummary:
    """Parameter count (built on the meta device: no memory, no init) and MACs per output pixel."""
    preset = get_preset(preset_name)
    model = build_model(preset_name, device="meta")
    cfg = model.config
    return PresetSummary(
        name=preset.name,
        family=model.family,
        scale=cfg.scale,
        levels=cfg.levels,
        mu=cfg.mu,
        channels=cfg.channels,
        parameters=count_parameters(model),
        macs_per_pixel=macs_per_output_pixel(cfg),
        source=preset.source,
        description=preset.description,
    )
