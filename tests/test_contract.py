"""The generator contract in code (`mgbp.models.contract`, `mgbp.models.families`): every family and every
preset keeps it, a model that breaks it is refused in one line, and nothing in the package probes for it.

timm's habit: one test sweeps every registered preset (forward and backward at a tiny size); spandrel's: a
save/load round trip per family. A new preset or family is covered the day it is added.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mgbp.errors import ConfigError
from mgbp.inference import upscale
from mgbp.models import FAMILIES, PRESETS, build_model, load_model, save_model
from mgbp.models.contract import (
    Capabilities,
    ClipGenerator,
    Generator,
    PlacedTiles,
    TiledNoise,
    check_generator,
)
from mgbp.models.mgbpv1 import MGBPv1, MGBPv1Config
from mgbp.protocol import BicubicUpscaler
from mgbp.tiling import run_model
from tiny_generators import NearestGenerator, TinyGenerator

SOURCE = Path(__file__).resolve().parents[1] / "src" / "mgbp"


def tiny_mgbpv1() -> MGBPv1:
    config = MGBPv1Config(scale=2, features=8, growth_rate=4, bottleneck_factor=1, analysis_layers=1,
                          upscaling_layers=1, upscaling_pre_layers=0, downscaling_layers=1, synthesis_layers=1,
                          mu=1, recursion_depth=1)
    return MGBPv1(config)


# The smallest network of each family. A family added to FAMILIES without an entry here fails the first test.
TINY = {"mgbpv2": lambda: build_model("tiny"), "mgbp3d": lambda: build_model("tiny-3d"), "mgbpv1": tiny_mgbpv1}


def sample_input(model, n: int = 2, size=(5, 7)) -> torch.Tensor:
    frames = (2 * model.frames_consumed + 3,) if model.is_video else ()
    return torch.rand((n, 3, *frames, *size), generator=torch.Generator().manual_seed(1))


def test_every_family_has_a_tiny_network_here():
    assert set(TINY) == set(FAMILIES)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_keeps_the_protocols_it_declares(name):
    family = FAMILIES[name]
    torch.manual_seed(0)
    model = TINY[name]().eval()
    assert isinstance(model, Generator) and check_generator(model) is model
    assert isinstance(model, family.cls) and model.family == name and model.is_video == family.video
    assert model.capabilities == family.capabilities and isinstance(model.capabilities, Capabilities)
    if model.capabilities.whole_image_noise:
        assert isinstance(model, TiledNoise)
    if model.capabilities.placement:
        assert isinstance(model, PlacedTiles)
    if model.is_video:
        assert isinstance(model, ClipGenerator) and model.clip_length >= 2 * model.frames_consumed + 1
    dataclasses.asdict(model.config)  # a dataclass, JSON-ready for the weight file
    lr = sample_input(model)
    with torch.no_grad():
        out = model(lr, noise_amp=0.0)
        again = model(lr, noise_amp=0.0)
    frames = (lr.shape[2] - 2 * model.frames_consumed,) if model.is_video else ()
    assert out.shape == (2, 3, *frames, model.scale * 5, model.scale * 7) and torch.equal(out, again)
    if model.capabilities.whole_image_noise:  # one map drawn for the whole input is what forward takes
        noise = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            noisy = model(lr, noise_amp=0.5, noise=noise)
            assert torch.equal(noisy, model(lr, noise_amp=0.5, noise=noise)) and not torch.equal(noisy, out)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_save_load_round_trip_per_family(tmp_path, name):
    torch.manual_seed(0)
    model = TINY[name]().eval()
    loaded = load_model(save_model(model, tmp_path / f"{name}.safetensors"))
    assert type(loaded) is type(model) and loaded.family == name and loaded.config == model.config
    assert loaded.capabilities == model.capabilities
    lr = sample_input(model, n=1)
    with torch.no_grad():
        assert torch.equal(loaded(lr), model(lr))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_forward_and_backward_at_a_tiny_size(name):
    """The preset's topology (levels, mu, scale, 2D/3D, paddings, frames) with 2 channels per level."""
    preset = PRESETS[name]
    torch.manual_seed(0)
    model = build_model(name, channels=(2,) * preset.config["levels"]).train()
    assert isinstance(model, Generator) and check_generator(model) is model and model.preset == name
    lr = sample_input(model, n=1, size=(3, 4))
    out = model(lr, noise_amp=torch.tensor([0.5]))
    frames = (lr.shape[2] - 2 * model.frames_consumed,) if model.is_video else ()
    assert out.shape == (1, 3, *frames, 3 * model.scale, 4 * model.scale) and bool(out.isfinite().all())
    out.square().mean().backward()
    assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in model.parameters())


@pytest.mark.parametrize("make", [lambda: BicubicUpscaler(3), lambda: TinyGenerator(), lambda: NearestGenerator(),
                                  lambda: TinyGenerator(clip_length=3)])
def test_the_baseline_and_the_test_stand_ins_keep_the_contract(make):
    model = make()
    assert check_generator(model) is model


class Incomplete(torch.nn.Module):
    """Upscales, but says nothing of itself."""

    scale = 2

    def forward(self, lr, noise_amp=0.0, noise=None):
        return lr.repeat_interleave(2, -1).repeat_interleave(2, -2)


class ClaimsTiledNoise(NearestGenerator):
    """Declares whole-image noise without the draw_noise / crop_noise it needs."""

    capabilities = Capabilities(whole_image_noise=True, placement=False)


class ClaimsQuietBorder(NearestGenerator):
    """Declares a smaller W = 0 border without saying what it is."""

    capabilities = Capabilities(whole_image_noise=False, placement=False, quiet_border=True)


def test_a_model_that_breaks_the_contract_is_refused_in_one_line():
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"^Incomplete is not a generator: it lacks border_lr, capabilities, "
                                          r"config, family, is_video, noise_channels \(mgbp.models.contract\)$"):
        upscale(image, model=Incomplete())
    with pytest.raises(ConfigError, match="ClaimsTiledNoise is not a generator: it lacks crop_noise, draw_noise"):
        upscale(image, model=ClaimsTiledNoise())
    with pytest.raises(ConfigError, match="ClaimsQuietBorder is not a generator: it lacks border_lr_without_noise"):
        upscale(image, model=ClaimsQuietBorder())


def test_a_reduced_precision_the_family_does_not_declare_is_refused(monkeypatch):
    model = NearestGenerator()
    monkeypatch.setattr(model, "capabilities", Capabilities(whole_image_noise=False, placement=False, half=False))
    with pytest.raises(ConfigError, match="nearest models do not run in float16"):
        upscale(np.zeros((4, 4, 3), np.uint8), model=model, dtype="half")
    assert upscale(np.zeros((4, 4, 3), np.uint8), model=model, dtype="bf16").shape == (8, 8, 3)


def test_tiling_follows_the_declaration_not_the_attributes():
    """A model that has draw_noise/crop_noise but does not declare whole-image noise gets no noise map: the
    declaration, not the presence of a method, decides."""
    model = build_model("tiny").eval()
    undeclared = build_model("tiny").eval()
    undeclared.load_state_dict(model.state_dict())
    undeclared.capabilities = Capabilities(whole_image_noise=False, placement=True)
    lr = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    noise = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(4))
    assert run_model(model, lr, 0.5, noise=noise).shape == (1, 3, 48, 48)
    with pytest.raises(ConfigError, match="mgbpv2 models cannot take a whole-image noise map"):
        run_model(undeclared, lr, 0.5, noise=noise)


CONTRACT_MEMBERS = {"scale", "is_video", "family", "noise_channels", "config", "border_lr", "capabilities",
                    "draw_noise", "crop_noise", "tile_padding", "supports_placement", "clip_length",
                    "frames_consumed", "border_frames", "border_lr_without_noise", "preset", "frames", "num_frames",
                    "temporal_size"}


def test_nothing_in_the_package_probes_the_contract_with_getattr_or_hasattr():
    """getattr(model, "border_lr", 2) hides a model that breaks the contract behind a silent default."""
    probes = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant) and node.args[1].value in CONTRACT_MEMBERS):
                probes.append(f"{path.relative_to(SOURCE)}:{node.lineno} {node.func.id}(..., {node.args[1].value!r})")
    assert not probes, f"read the contract (mgbp.models.contract), do not probe it: {probes}"
