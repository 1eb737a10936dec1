"""Linearscope identities: bicubic's response is the bicubic kernel; a ReLU network's response is the
difference of the same network with its ReLU masks frozen (float64)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from mgbp import io
from mgbp.commands.linearscope import parse_pixel
from mgbp.errors import ConfigError
from mgbp.linearscope import bicubic_response, filter_statistics, impulse_response
from mgbp.protocol import BicubicUpscaler
from tiny_mgbpv1 import tiny_mgbpv1

# torch's own forward-AD decompositions call the deprecated torch.jit.script when first loaded
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def keys_cubic(t):
    """Keys' kernel (a = -0.5), written out again here as the independent reference."""
    t = np.abs(t)
    return np.where(t <= 1, 1.5 * t**3 - 2.5 * t**2 + 1,
                    np.where(t <= 2, -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2, 0.0))


def bicubic_kernel_1d(out_length, position, scale):
    """Weight of input sample `position` (0-based) in each output sample of a x`scale` MATLAB bicubic upscale,
    away from the borders: output i (0-based) sits at input coordinate (i + 0.5) / scale - 0.5."""
    u = (np.arange(out_length) + 0.5) / scale - 0.5
    return keys_cubic(u - position)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_model_response_is_the_bicubic_kernel(scale):
    h, w, pixel = 12, 14, (6, 5)
    lr = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    result = impulse_response(BicubicUpscaler(scale), lr, pixel)
    expected = np.outer(bicubic_kernel_1d(h * scale, pixel[1], scale),
                        bicubic_kernel_1d(w * scale, pixel[0], scale))
    for channel in range(3):
        np.testing.assert_allclose(result.response[channel].numpy(), expected, atol=1e-6)
    # and it is the upscale of a one-hot image (linear model: its offset is zero)
    one_hot_upscaled = bicubic_response((h, w), pixel, scale).numpy()
    np.testing.assert_allclose(result.response.numpy(), one_hot_upscaled, atol=1e-6)
    stats = filter_statistics(expected, pixel, scale)
    assert stats["gain"] == pytest.approx(1.0, abs=1e-9) and stats["centroid_shift"] < 1e-9


def test_bicubic_offset_is_zero_and_single_channel_impulse():
    lr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    result = impulse_response(BicubicUpscaler(2), lr, (3, 4), channel="g", offset=True)
    assert result.offset.abs().max() < 1e-5
    assert result.response[0].abs().max() == 0 and result.response[2].abs().max() == 0
    assert result.response[1].abs().max() > 0.5


class TinyReLUNet(torch.nn.Module):
    """conv-ReLU-conv-ReLU-conv + pixel shuffle, with a noise channel W * N(0,1) and a bicubic skip."""

    scale = 2

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.w1 = torch.nn.Parameter(torch.randn(8, 4, 3, 3, generator=generator, dtype=torch.float64) * 0.5)
        self.b1 = torch.nn.Parameter(torch.randn(8, generator=generator, dtype=torch.float64) * 0.1)
        self.w2 = torch.nn.Parameter(torch.randn(8, 8, 3, 3, generator=generator, dtype=torch.float64) * 0.3)
        self.b2 = torch.nn.Parameter(torch.randn(8, generator=generator, dtype=torch.float64) * 0.1)
        self.w3 = torch.nn.Parameter(torch.randn(12, 8, 3, 3, generator=generator, dtype=torch.float64) * 0.3)

    def layers(self, lr, noise, masks=None):
        """The network; with `masks` the ReLUs are replaced by the fixed 0/1 masks (affine network)."""
        x = torch.cat([lr, noise], dim=1)
        a1 = torch.nn.functional.conv2d(x, self.w1, self.b1, padding=1)
        h1 = a1 * masks[0] if masks else torch.relu(a1)
        a2 = torch.nn.functional.conv2d(h1, self.w2, self.b2, padding=1)
        h2 = a2 * masks[1] if masks else torch.relu(a2)
        residual = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(h2, self.w3, padding=1), 2)
        upscaled = torch.nn.functional.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False)
        return upscaled + residual, (a1 > 0, a2 > 0)

    def forward(self, lr, noise_amp=0.0, noise=None):
        if noise is None:
            noise = torch.randn(lr.shape[0], 1, *lr.shape[-2:], dtype=lr.dtype)
        return self.layers(lr, noise_amp * noise)[0]


@pytest.mark.parametrize("noise_amp", [0.0, 0.7])
def test_relu_network_response_equals_masked_difference(noise_amp):
    net = TinyReLUNet()
    lr = torch.rand(1, 3, 10, 9, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    pixel, seed = (4, 6), 11
    result = impulse_response(net, lr, pixel, noise_amp=noise_amp, seed=seed, offset=True)
    # Independent reference: the same noise map, the ReLU masks frozen at x, the masked network is affine, so
    # the difference quotient with step 1 is the exact impulse response.
    torch.manual_seed(seed)
    noise = noise_amp * torch.randn(1, 1, 10, 9, dtype=torch.float64)
    with torch.no_grad():
        out_x, masks = net.layers(lr, noise)
        delta = torch.zeros_like(lr)
        delta[0, :, pixel[1], pixel[0]] = 1.0
        out_shifted = net.layers(lr + delta, noise, masks)[0]
        offset = net.layers(torch.zeros_like(lr), noise, masks)[0]
    assert (masks[0].logical_not().any() and masks[0].any())  # some ReLUs on, some off: a real test
    np.testing.assert_allclose(result.response.numpy(), (out_shifted - out_x)[0].numpy(), atol=1e-12)
    np.testing.assert_allclose(result.output.numpy(), out_x[0].numpy(), atol=1e-12)
    np.testing.assert_allclose(result.offset.numpy(), offset[0].numpy(), atol=1e-12)


def test_bad_pixel_and_channel():
    lr = torch.rand(1, 3, 6, 6)
    with pytest.raises(ConfigError, match="outside"):
        impulse_response(BicubicUpscaler(2), lr, (6, 0))
    with pytest.raises(ConfigError, match="channel"):
        impulse_response(BicubicUpscaler(2), lr, (1, 1), channel="y")
    with pytest.raises(ConfigError, match="X,Y"):
        parse_pixel("3")
    assert parse_pixel("3,7") == (3, 7)


def test_command_writes_npy_json_and_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from mgbp.commands import linearscope

    image = (np.random.default_rng(5).random((20, 24, 3)) * 255).round().astype(np.uint8)
    path = tmp_path / "in.png"
    io.write_image(path, image.astype(np.float32) / 255.0)
    parser = argparse.ArgumentParser()
    linearscope.add_arguments(parser)
    out = tmp_path / "ls"
    args = parser.parse_args([str(path), "--pixel", "10,9", "--pixel", "0,0", "--scale", "3", "--radius", "4",
                              "--offset", "-o", str(out), "-q"])
    assert linearscope.run(args) == 0
    summary = json.loads((out / "linearscope.json").read_text())
    assert [p["pixel"] for p in summary["pixels"]] == [[10, 9], [0, 0]]
    array = np.load(out / summary["pixels"][0]["file"])
    assert array.shape == (3, 9 * 3, 9 * 3)  # a (2*4+1)-pixel LR window at x3
    expected = np.outer(bicubic_kernel_1d(60, 9, 3), bicubic_kernel_1d(72, 10, 3))[15:42, 18:45]
    np.testing.assert_allclose(array[0], expected, atol=1e-6)
    assert (out / summary["pixels"][1]["figure"]).stat().st_size > 0
    assert np.abs(np.load(out / "in_Bicubic_x10_y9_offset.npy")).max() < 1e-5
    # with a context window the network sees only a crop; bicubic's interior kernel is unchanged by it
    args = parser.parse_args([str(path), "--pixel", "10,9", "--scale", "3", "--radius", "4", "--context", "6",
                              "--no-plot", "-o", str(tmp_path / "ctx"), "-q"])
    assert linearscope.run(args) == 0
    entry = json.loads((tmp_path / "ctx" / "linearscope.json").read_text())["pixels"][0]
    assert entry["context_lr"] == {"top": 3, "left": 4, "height": 13, "width": 13}
    assert entry["window_lr"] == {"top": 5, "left": 6, "bottom": 14, "right": 15}
    np.testing.assert_allclose(np.load(tmp_path / "ctx" / entry["file"])[0], expected, atol=1e-6)


def test_fallback_jvp_gives_the_same_response(monkeypatch):
    """Operators without a forward-mode formula: the double-backward JVP gives the same column of J."""
    net = TinyReLUNet()
    lr = torch.rand(1, 3, 7, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    forward_mode = impulse_response(net, lr, (2, 3), noise_amp=0.5, seed=2, offset=True)

    def no_forward_mode(*args, **kwargs):
        raise NotImplementedError("no forward AD formula")

    monkeypatch.setattr(torch.func, "jvp", no_forward_mode)
    fallback = impulse_response(net, lr, (2, 3), noise_amp=0.5, seed=2, offset=True)
    torch.testing.assert_close(fallback.response, forward_mode.response, rtol=0, atol=1e-12)
    torch.testing.assert_close(fallback.offset, forward_mode.offset, rtol=0, atol=1e-12)


def test_mgbpv1_response_matches_a_tiny_difference_quotient():
    """On the authors' architecture (tiny config, float64, W > 0 with the noise held fixed) the JVP matches
    (F(x + eps e_p) - F(x)) / eps: no ReLU changes state for so small a step."""
    model = tiny_mgbpv1()
    lr = torch.rand(1, 3, 9, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pixel, eps = (4, 5), 1e-7
    result = impulse_response(model, lr, pixel, noise_amp=0.5, seed=4)
    delta = torch.zeros_like(lr)
    delta[0, :, pixel[1], pixel[0]] = eps
    with torch.no_grad():
        torch.manual_seed(4)
        base = model(lr, noise_amp=0.5)
        torch.manual_seed(4)
        shifted = model(lr + delta, noise_amp=0.5)
    quotient = (shifted - base)[0] / eps
    assert result.response.abs().max() > 0.1
    torch.testing.assert_close(result.response, quotient, rtol=0, atol=1e-6)
