"""mgbp.color against MATLAB's published rgb2ycbcr / rgb2gray constants, recomputed by hand in float64 numpy."""

import numpy as np
import pytest
import torch

from mgbp.color import rgb_to_gray, rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from mgbp.errors import ConfigError

# MATLAB documentation of rgb2ycbcr (ITU-R BT.601, values for RGB in [0, 1] giving [0, 255]).
PUBLISHED = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
OFFSET = np.array([16.0, 128.0, 128.0])


def hand_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> YCbCr in [0, 1], channel by channel in float64 loops over the 3x3 matrix."""
    out = np.empty_like(rgb, dtype=np.float64)
    for row in range(3):
        total = np.full(rgb.shape[:1] + rgb.shape[2:], OFFSET[row])
        for col in range(3):
            total = total + PUBLISHED[row, col] * rgb[:, col].astype(np.float64)
        out[:, row] = total / 255.0
    return out


@pytest.fixture
def rgb():
    return torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_ycbcr_matches_published_matrix(rgb):
    np.testing.assert_allclose(rgb_to_ycbcr(rgb).numpy(), hand_ycbcr(rgb.numpy()), rtol=0, atol=1e-14)


def test_ycbcr_float32_stays_float32_and_close(rgb):
    out = rgb_to_ycbcr(rgb.float())
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), hand_ycbcr(rgb.numpy()), rtol=0, atol=1e-6)


def test_matlab_documented_uint8_values():
    # MATLAB: rgb2ycbcr(uint8([255 0 0])) = [81 90 240]; white -> [235 128 128]; black -> [16 128 128].
    pixels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    out = rgb_to_ycbcr(pixels.t()[None, :, :, None])[0, :, :, 0].t() * 255
    np.testing.assert_array_equal(np.round(out.numpy()), [[81, 90, 240], [235, 128, 128], [16, 128, 128]])


def test_y_is_first_channel_and_keeps_axis(rgb):
    y = rgb_to_y(rgb)
    assert y.shape == (2, 1, 5, 7)
    np.testing.assert_allclose(y[:, 0].numpy(), hand_ycbcr(rgb.numpy())[:, 0], rtol=0, atol=1e-14)


def test_round_trip(rgb):
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)).numpy(), rgb.numpy(), rtol=0, atol=1e-12)


def test_inverse_matches_numpy_inverse(rgb):
    ycc = rgb.numpy()  # any values: the inverse is affine
    inv = np.linalg.inv(PUBLISHED / 255.0)
    expected = np.einsum("ck,nkhw->nchw", inv, ycc - (OFFSET / 255.0)[None, :, None, None])
    np.testing.assert_allclose(ycbcr_to_rgb(rgb).numpy(), expected, rtol=0, atol=1e-12)


def test_gray_matches_matlab_rgb2gray(rgb):
    # rgb2gray.m documents 0.2989 R + 0.5870 G + 0.1140 B; full precision from inv of the NTSC matrix.
    coefficients = np.linalg.inv([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])[0]
    np.testing.assert_allclose(coefficients, [0.2989, 0.5870, 0.1140], atol=5e-5)
    expected = np.einsum("k,nkhw->nhw", coefficients, rgb.numpy())
    np.testing.assert_allclose(rgb_to_gray(rgb)[:, 0].numpy(), expected, rtol=0, atol=1e-14)


def test_video_clip_channel_axis():
    clip = torch.rand(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    frames = clip.permute(0, 2, 1, 3, 4).reshape(2, 3, 4, 4)
    expected = rgb_to_ycbcr(frames).reshape(1, 2, 3, 4, 4).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(rgb_to_ycbcr(clip), expected, rtol=0, atol=1e-15)


def test_gradients_flow(rgb):
    x = rgb.clone().requires_grad_(True)
    rgb_to_y(x).sum().backward()
    np.testing.assert_allclose(x.grad[0, :, 0, 0].numpy(), PUBLISHED[0] / 255.0, rtol=1e-14)


@pytest.mark.parametrize("bad", [torch.zeros(1, 4, 2, 2), torch.zeros(1, 3, 2, 2, dtype=torch.uint8), "img"])
def test_bad_inputs_raise_config_error(bad):
    for function in (rgb_to_ycbcr, ycbcr_to_rgb, rgb_to_y, rgb_to_gray):
        with pytest.raises(ConfigError):
            function(bad)
