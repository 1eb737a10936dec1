"""The live preview of `mgbp serve` (`mgbp.region.upscale_region`): a region computed from a crop equals that
region of one forward pass on the whole image with the same seeded noise (no tiling code in the reference)."""

from __future__ import annotations

import pytest
import torch

from mgbp import models
from mgbp.errors import ConfigError
from mgbp.inference import upscale_tensor
from mgbp.region import Region, upscale_region
from mgbp.resize import imresize
from tiny_mgbpv1 import tiny_mgbpv1

FLOAT_ROUNDING = 1e-5


def whole_image_reference(model, planes, noise, seed):
    """Grey as RGB, one forward pass on the whole image with noise drawn from `seed`, clamped; grey back as the
    channel mean; alpha by MATLAB bicubic."""
    channels = planes.shape[1]
    _, dtype = next(iter(model.parameters())).device, next(iter(model.parameters())).dtype
    rgb = planes[:, :1].expand(-1, 3, -1, -1) if channels in (1, 2) else planes[:, :3]
    extra = {}
    if noise > 0:
        drawn = model.draw_noise(rgb.shape, generator=torch.Generator().manual_seed(seed))
        extra["noise"] = drawn.to(dtype) if torch.is_tensor(drawn) else [m.to(dtype) for m in drawn]
    with torch.no_grad():
        out = model(rgb.to(dtype), noise_amp=noise, **extra).float().clamp(0, 1)
    out = out.mean(1, keepdim=True) if channels in (1, 2) else out
    if channels in (2, 4):
        out = torch.cat([out, imresize(planes[:, -1:], scale=model.scale).clamp(0, 1)], dim=1)
    return out


def image(channels, height, width, seed=0):
    return torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny_v2():
    torch.manual_seed(0)
    return models.build_model("tiny").eval()  # MGBPv2 x4 with placement and a cropped noise map


REGIONS = [Region(0, 0, 9, 11), Region(7, 5, 13, 10), Region(21, 26, 9, 9), Region(0, 0, 30, 35)]


@pytest.mark.parametrize("channels", [3, 1, 4, 2])
@pytest.mark.parametrize("noise", [0.0, 0.7])
def test_region_equals_the_whole_image_forward(tiny_v2, channels, noise):
    planes = image(channels, 30, 35, seed=channels)
    reference = whole_image_reference(tiny_v2, planes, noise, seed=5)
    for region in REGIONS:
        out = upscale_region(tiny_v2, planes, region, noise=noise, seed=5)
        rows, cols = region.scaled(4).slices()
        assert out.shape == (1, channels, 4 * region.height, 4 * region.width)
        assert (out - reference[..., rows, cols]).abs().max() < FLOAT_ROUNDING, region


def test_region_of_the_shipped_x2_model_lines_up_its_grids():
    """x2: an LR shift of one pixel is half a cell of the lowest grid, so only `placement` makes this agree."""
    model = models.load_model("mgbp-x2")
    planes = image(3, 26, 31, seed=3)
    reference = whole_image_reference(model, planes, 1.0, seed=0)
    for region in (Region(3, 5, 9, 7), Region(11, 20, 15, 11)):
        rows, cols = region.scaled(2).slices()
        out = upscale_region(model, planes, region, noise=1.0, seed=0)
        assert (out - reference[..., rows, cols]).abs().max() < FLOAT_ROUNDING


def test_region_of_the_authors_network():
    """MGBPv1 (Figure 3) is placed by whole LR pixels already and takes per-level noise maps."""
    model = tiny_mgbpv1()
    planes = image(3, 22, 19, seed=4).double()
    reference = whole_image_reference(model, planes, 0.8, seed=2)
    region = Region(6, 4, 10, 9)
    rows, cols = region.scaled(2).slices()
    out = upscale_region(model, planes, region, noise=0.8, seed=2)
    assert (out - reference[..., rows, cols].float()).abs().max() < FLOAT_ROUNDING


def test_another_seed_gives_another_texture(tiny_v2):
    """The comparison above can fail: the noise really enters the region."""
    planes = image(3, 30, 35)
    reference = whole_image_reference(tiny_v2, planes, 1.0, seed=5)
    region = REGIONS[1]
    rows, cols = region.scaled(4).slices()
    out = upscale_region(tiny_v2, planes, region, noise=1.0, seed=6)
    assert (out - reference[..., rows, cols]).abs().max() > 1e-3


def test_region_equals_the_tiled_full_render(tiny_v2):
    """What the page downloads (`upscale_tensor`, tiled here) and what it previews agree."""
    planes = image(4, 50, 64, seed=9)
    full = upscale_tensor(tiny_v2, planes, noise=0.5, seed=0, tile=40)  # 2x2 tiles
    region = Region(17, 21, 14, 16)  # across the tiles' overlap
    rows, cols = region.scaled(4).slices()
    assert (upscale_region(tiny_v2, planes, region, noise=0.5, seed=0) - full[..., rows, cols]).abs().max() \
        < FLOAT_ROUNDING


def test_centred_regions_stay_inside_the_image():
    assert Region.centred(0, 0, 8, 20, 30) == Region(0, 0, 8, 8)
    assert Region.centred(19, 29, 8, 20, 30) == Region(12, 22, 8, 8)
    assert Region.centred(10, 15, 8, 20, 30) == Region(6, 11, 8, 8)
    assert Region.centred(3, 3, 64, 20, 30) == Region(0, 0, 20, 30)  # the whole of a small image


def test_bad_regions_and_amplitudes_are_one_line_errors(tiny_v2):
    planes = image(3, 10, 12)
    with pytest.raises(ConfigError, match="inside"):
        upscale_region(tiny_v2, planes, Region(5, 5, 6, 6))
    with pytest.raises(ConfigError, match="noise"):
        upscale_region(tiny_v2, planes, Region(0, 0, 4, 4), noise=float("nan"))
