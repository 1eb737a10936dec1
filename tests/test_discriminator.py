"""VN+SC (eqs. 7-8) against a direct float64 loop, and the multiscale discriminator of Fig. 7."""

import math

import numpy as np
import pytest
import torch

from mgbp.losses import downscale
from mgbp.models.discriminator import VNSC, MultiscaleDiscriminator


def ref_vnsc(rgb: np.ndarray) -> np.ndarray:
    """Direct per-pixel loops, float64: rgb (3, H, W) in [0,1] -> (49, H, W)."""
    _, h, w = rgb.shape
    lum = (0.2989 * rgb[0] + 0.5870 * rgb[1] + 0.1140 * rgb[2]) * 255.0
    g = np.array([[math.exp(-((a - 3) ** 2 + (b - 3) ** 2) / (2 * 1.17**2)) for b in range(7)] for a in range(7)])
    g /= g.sum()
    mu, mu2 = np.zeros((h, w)), np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for a in range(7):
                for b in range(7):
                    v = lum[min(max(i + a - 3, 0), h - 1), min(max(j + b - 3, 0), w - 1)]  # replicate
                    mu[i, j] += g[a, b] * v
                    mu2[i, j] += g[a, b] * v * v
    norm = (lum - mu) / (np.sqrt(np.maximum(mu2 - mu * mu, 0)) + 1)
    out = np.zeros((49, h, w))
    for p in range(-3, 4):
        for q in range(-3, 4):
            for i in range(h):
                for j in range(w):
                    inside = 0 <= i + p < h and 0 <= j + q < w
                    out[7 * (p + 3) + q + 3, i, j] = norm[i, j] * norm[i + p, j + q] if inside else 0.0
    return out


def test_vnsc_matches_direct_loop():
    rgb = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = VNSC().double()(rgb)[0].numpy()
    np.testing.assert_allclose(got, ref_vnsc(rgb[0].numpy()), rtol=1e-6, atol=1e-8)


def test_vnsc_ignores_brightness_offset_and_colour_scaling_of_luma():
    rgb = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.5
    layer = VNSC().double()
    # a constant added to the luminance changes mu only: I - mu and sigma are unchanged (eq. 7)
    np.testing.assert_allclose(layer(rgb + 0.2).numpy(), layer(rgb).numpy(), atol=1e-9)
    # channel 24 (p = q = 0) is I_hat^2 >= 0
    assert (layer(rgb)[:, 24] >= 0).all()


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_discriminator_shapes_at_every_scale(scale):
    torch.manual_seed(0)
    disc = MultiscaleDiscriminator(scale, features=8)
    hr = torch.rand(2, 3, 8 * scale, 8 * scale)
    images = [hr] + [downscale(hr, k) for k in (2, 4, 8, 16) if k <= scale]
    logits, feats = disc(images, return_features=True)
    stages = int(math.log2(scale)) + 1
    assert len(feats) == stages == disc.num_inputs
    for s, f in enumerate(feats):
        side = 8 * scale // 2 ** (s + 1)  # each stage's last layer has stride 2
        assert f.shape == (2, 8, side, side)
    assert logits.shape == (2, 1, 8 * scale // 2**stages, 8 * scale // 2**stages)


def test_rgb_ablation_and_gradients():
    torch.manual_seed(0)
    disc = MultiscaleDiscriminator(2, features=8, vnsc=False)
    assert disc.stages[0].body[0].in_channels == 3 and disc.stages[1].body[0].in_channels == 8 + 3
    hr = torch.rand(1, 3, 16, 16, requires_grad=True)
    disc([hr, downscale(hr, 2)]).sum().backward()
    assert hr.grad.abs().sum() > 0
    with_vnsc = MultiscaleDiscriminator(2, features=8)
    assert with_vnsc.stages[0].body[0].in_channels == 49
    with pytest.raises(ValueError):
        with_vnsc([hr])


def test_vnsc_gradient_is_finite_on_flat_regions():
    """A flat patch has zero local variance, where d sqrt/d var is infinite: the gradient must stay finite."""
    from mgbp.models.discriminator import VNSC

    image = torch.zeros(1, 3, 16, 16, dtype=torch.float64)  # black: the variance is exactly 0
    image[..., 8:, 8:] = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    image.requires_grad_(True)
    VNSC()(image).square().sum().backward()
    assert torch.isfinite(image.grad).all()
