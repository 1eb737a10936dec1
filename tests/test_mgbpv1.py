"""Tests of MGBPv1 (`mgbp.models.mgbpv1`): the authors' PIRM-2018 weights and reference outputs, the generator
interface, and clear errors on wrong weight files.

Independent references: the authors' released `.model` files and the outputs of their original code
(`../shared/reference/pirm2018`), the published parameter count (281,084, Table V), and MATLAB bicubic
(`mgbp.resize.imresize`) for the classic upscaler's initialisation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mgbp.errors import ConfigError, WeightFileError
from mgbp.models import weights
from mgbp.models.mgbpv1 import (
    ClassicUpscale,
    MGBPv1,
    MGBPv1Config,
    from_authors_state_dict,
    is_authors_state_dict,
    load_authors_file,
    reflect_pad,
)
from mgbp.resize import imresize

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PIRM = SHARED / "reference" / "pirm2018"
needs_pirm = pytest.mark.skipif(
    not (PIRM / "BOE-R3.model").is_file(), reason=f"../shared is absent: no authors' PIRM-2018 weights under {PIRM}"
)

PIRM_TENSORS = 68
PIRM_PARAMETERS = 281_084


def tiny_config(**overrides) -> MGBPv1Config:
    """A few-thousand-parameter MGBPv1 that runs in milliseconds."""
    base = dict(  # noqa: C408 (keyword form reads like the config)
        features=6,
        growth_rate=4,
        bottleneck_factor=2,
        analysis_layers=2,
        upscaling_layers=2,
        upscaling_pre_layers=1,
        downscaling_layers=2,
        synthesis_layers=2,
    )
    base.update(overrides)
    return MGBPv1Config(**base)


def tiny_model(seed: int = 0, **overrides) -> MGBPv1:
    torch.manual_seed(seed)
    model = MGBPv1(tiny_config(**overrides))
    # Non-zero activation biases so that every path carries signal (they start at zero).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.bias"):
                p.uniform_(-0.1, 0.1)
    return model


def count(model_or_sd) -> int:
    tensors = model_or_sd.values() if isinstance(model_or_sd, dict) else model_or_sd.parameters()
    return sum(t.numel() for t in tensors)


# ---- the authors' weights -------------------------------------------------------------------------------


def test_default_config_has_the_published_parameter_count():
    model = MGBPv1()
    assert count(model) == PIRM_PARAMETERS
    assert len(model.state_dict()) == PIRM_TENSORS


@needs_pirm
@pytest.mark.parametrize("region", ["R1", "R2", "R3"])
def test_authors_files_load_strictly(region):
    path = PIRM / f"BOE-{region}.model"
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    assert is_authors_state_dict(state_dict)
    assert len(state_dict) == PIRM_TENSORS and count(dict(state_dict)) == PIRM_PARAMETERS
    model = load_authors_file(path)
    assert count(model) == PIRM_PARAMETERS
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, state_dict[key]), key


@pytest.fixture(scope="module")
def boe_r3():
    if not (PIRM / "BOE-R3.model").is_file():
        pytest.skip(f"../shared is absent: no authors' PIRM-2018 weights under {PIRM}")
    return load_authors_file(PIRM / "BOE-R3.model")


@needs_pirm
@pytest.mark.parametrize("noise_amp", [0.0, 1.0])
@pytest.mark.parametrize("name", ["comic", "face"])
def test_reproduces_authors_reference_outputs(boe_r3, name, noise_amp):
    ref = np.load(PIRM / f"reference_R3_W{int(noise_amp)}.npz")
    assert float(ref["noise_amp"]) == noise_amp
    lr = torch.from_numpy(ref[f"{name}/lr"]).permute(2, 0, 1)[None].float() / 255.0
    noise = [torch.from_numpy(ref[k]) for k in sorted(ref.files) if k.startswith(f"{name}/noise")]
    assert [tuple(n.shape) for n in noise] == boe_r3.noise_shapes(lr.shape)
    with torch.no_grad():
        out = boe_r3(lr, noise_amp=noise_amp, noise=noise if noise_amp else None)
    out = out.clamp(0, 1)[0].permute(1, 2, 0).numpy()
    expected = ref[f"{name}/out"]
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() <= 1e-4


# ---- wrong weight files ---------------------------------------------------------------------------------


def test_missing_unexpected_and_misshaped_keys_are_named():
    good = MGBPv1().state_dict()
    assert is_authors_state_dict(good)
    from_authors_state_dict(good)  # the reference case loads

    missing = dict(good)
    del missing["Synthesis.conv4.bias"]
    with pytest.raises(WeightFileError, match=r"missing: Synthesis\.conv4\.bias"):
        from_authors_state_dict(missing)

    unexpected = dict(good, **{"Extra.weight": torch.zeros(1)})
    with pytest.raises(WeightFileError, match=r"unexpected: Extra\.weight"):
        from_authors_state_dict(unexpected)
    assert isinstance(from_authors_state_dict(unexpected, strict=False), MGBPv1)

    misshaped = dict(good, **{"Upscaling.conv_up.weight": torch.zeros(96, 48, 3, 3)})
    with pytest.raises(WeightFileError, match=r"mis-shaped: Upscaling\.conv_up\.weight"):
        from_authors_state_dict(misshaped, strict=False)

    with pytest.raises(WeightFileError):
        from_authors_state_dict([1, 2, 3])
    assert not is_authors_state_dict({"conv.weight": torch.zeros(1)})


def test_bad_files_give_weight_file_errors(tmp_path):
    with pytest.raises(WeightFileError, match="not found"):
        load_authors_file(tmp_path / "absent.model")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightFileError, match="cannot read"):
        load_authors_file(garbage)
    other = tmp_path / "other.model"
    torch.save({"conv.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightFileError, match="not an authors'"):
        load_authors_file(other)
    truncated = tmp_path / "truncated.model"
    torch.save(MGBPv1().state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(WeightFileError):
        load_authors_file(truncated)


# ---- generator interface --------------------------------------------------------------------------------


def test_interface_attributes_and_config_round_trip():
    model = tiny_model()
    assert model.family == "mgbpv1" and model.is_video is False
    assert model.scale == 4 and model.noise_channels == 1 and model.border_lr >= model.scale
    config = dataclasses.asdict(model.config)
    rebuilt = MGBPv1.from_config(config)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    with pytest.raises(ConfigError, match="unknown"):
        MGBPv1.from_config(dict(config, colour=True))
    with pytest.raises(ConfigError, match="power of two"):
        MGBPv1Config(scale=3)


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("size", [(7, 9), (8, 6), (1, 3)])
def test_output_shapes(scale, pad, size):
    model = tiny_model(scale=scale)
    lr = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(lr, noise_amp=0.5, pad=pad)
    assert out.shape == (2, 3, size[0] * scale, size[1] * scale)
    assert len(model.noise_shapes(lr.shape, pad)) == model.levels + 1


def test_w0_is_deterministic_and_ignores_noise():
    model = tiny_model()
    lr = torch.rand(1, 3, 10, 12)
    noise = [torch.randn(s) for s in model.noise_shapes(lr.shape)]
    with torch.no_grad():
        first = model(lr)
        torch.manual_seed(123)
        second = model(lr, noise_amp=0.0)
        with_maps = model(lr, noise_amp=0.0, noise=noise)
    assert torch.equal(first, second)
    assert torch.equal(first, with_maps)


def test_noise_varies_output_and_explicit_maps_reproduce_it():
    model = tiny_model()
    lr = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(lr, noise_amp=1.0)
        torch.manual_seed(2)
        b = model(lr, noise_amp=1.0)
        clean = model(lr)
        # The implicit draw follows the authors' order: level 0 map first, then level 1, ...
        torch.manual_seed(1)
        maps = [torch.randn(s) for s in model.noise_shapes(lr.shape)]
        replay = model(lr, noise_amp=1.0, noise=maps)
        replay_without_unused = model(lr, noise_amp=1.0, noise=maps[:-1])
    assert (a - b).abs().max() > 1e-4
    assert (a - clean).abs().max() > 1e-4
    assert torch.allclose(a, replay, atol=0, rtol=0)
    assert torch.equal(replay, replay_without_unused)


def test_per_sample_noise_amplitude():
    model = tiny_model()
    lr = torch.rand(2, 3, 8, 8)
    maps = [torch.randn(s) for s in model.noise_shapes(lr.shape)]
    with torch.no_grad():
        mixed = model(lr, noise_amp=torch.tensor([0.0, 1.0]), noise=maps)
        clean = model(lr[:1])
        noisy = model(lr[1:], noise_amp=1.0, noise=[m[1:] for m in maps])
    assert torch.allclose(mixed[:1], clean, atol=1e-6)
    assert torch.allclose(mixed[1:], noisy, atol=1e-6)


def test_wrong_noise_or_input_raises_config_error():
    model = tiny_model()
    lr = torch.rand(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="noise map 1"):
        model(lr, noise_amp=1.0, noise=[torch.randn(1, 1, 16, 16), torch.randn(1, 1, 5, 5)])
    with pytest.raises(ConfigError, match="needs 2 noise maps"):
        model(lr, noise_amp=1.0, noise=[torch.randn(1, 1, 16, 16)])
    with pytest.raises(ConfigError, match="expects"):
        model(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize(
    "layout",
    [{}, {"upscaling_layers": 3, "upscaling_pre_layers": 0, "downscaling_pre_layers": 1, "leak": 0.2}],
    ids=["pirm-layout", "post_up-pre_down-leaky"],
)
def test_gradients_reach_every_parameter(layout):
    model = tiny_model(**layout)
    names = {name.split(".")[1] for name, _ in model.named_parameters() if name.count(".") > 1}
    assert ("post_up" in names and "pre_down" in names) == bool(layout)
    lr = torch.rand(1, 3, 9, 10)
    out = model(lr, noise_amp=0.3)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_classic_upscale_initialises_to_matlab_bicubic():
    x = torch.rand(1, 3, 9, 11, dtype=torch.float64)
    up = ClassicUpscale(3).double()
    with torch.no_grad():
        ours = up(x, replicate_border=True)
    matlab = imresize(x, 2)
    # Interior identical; only the outermost HR ring differs (one replicated pixel instead of MATLAB's mirror).
    assert ours.shape == matlab.shape
    assert torch.allclose(ours[..., 1:-1, 1:-1], matlab[..., 1:-1, 1:-1], atol=1e-12)
    assert torch.allclose(up.weight.sum(dim=(-1, -2)), torch.ones(3, 1, dtype=torch.float64))


@pytest.mark.parametrize("size", [(9, 11), (4, 6), (1, 2)])
def test_reflect_pad_matches_torch_and_extends_to_tiny_images(size):
    x = torch.rand(2, 3, *size)
    ours = reflect_pad(x, 4)
    assert ours.shape == (2, 3, size[0] + 8, size[1] + 8)
    if min(size) > 4:
        assert torch.equal(ours, torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect"))
    # Direct construction: index i - 4 into the endless mirror sequence x0, x1, .., x_{n-1}, x_{n-2}, .., x1.
    for axis, other in ((2, 3), (3, 2)):
        n = x.shape[axis]
        mirror = (list(range(n)) + list(range(n - 2, 0, -1))) if n > 1 else [0]
        expected = torch.tensor([mirror[(i - 4) % len(mirror)] for i in range(n + 8)])
        centre = ours.narrow(other, 4, x.shape[other])
        assert torch.equal(centre, x.index_select(axis, expected))


def test_recursion_depth_limits_the_back_projection():
    lr = torch.rand(1, 3, 6, 7)
    outputs = {}
    for depth in (1, 2, 3):
        model = tiny_model(recursion_depth=depth)  # same seed: same weights
        with torch.no_grad():
            outputs[depth] = model(lr)
    # x4 has two levels: depth 2 already reaches level 0 (the authors' default 3 changes nothing), depth 1 not.
    assert torch.equal(outputs[2], outputs[3])
    assert (outputs[1] - outputs[2]).abs().max() > 1e-5


def test_safetensors_round_trip_rebuilds_mgbpv1(tmp_path):
    model = tiny_model(scale=2).eval()
    path = weights.save_model(model, tmp_path / "tiny.safetensors", {})
    loaded = weights.load_model(path)
    assert isinstance(loaded, MGBPv1) and loaded.config == model.config
    lr = torch.rand(1, 3, 7, 8)
    with torch.no_grad():
        assert torch.equal(loaded(lr), model(lr))


def test_tiles_at_w_07_equal_the_untiled_pass_with_the_same_noise_maps():
    """Tiled inference crops every level's noise map (padding included) from one whole-image draw."""
    from mgbp.tiling import run_model, tile_starts

    model = tiny_model(seed=4, scale=2).eval()
    lr = torch.rand(1, 3, 24, 62, generator=torch.Generator().manual_seed(21))
    maps = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(22))
    assert [tuple(m.shape) for m in maps] == model.noise_shapes(lr.shape)[: model.levels]
    others = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(23))
    with torch.no_grad():
        reference = model(lr, noise_amp=0.7, noise=maps)
        assert (reference - model(lr, noise_amp=0.7, noise=others)).abs().max() > 2 / 255  # the noise matters
    tile = 2 * model.border_lr + 12
    assert len(tile_starts(62, tile, 2 * model.border_lr + 8)) >= 2
    tiled = run_model(model, lr, noise_amp=0.7, tile=tile, noise=maps)
    assert (tiled - reference).abs().max() < 0.1 / 255
    seeded = run_model(model, lr, noise_amp=0.7, tile=tile, generator=torch.Generator().manual_seed(22))
    assert (seeded - reference).abs().max() < 0.1 / 255
