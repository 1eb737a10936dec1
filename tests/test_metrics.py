"""PSNR / SSIM / RMSE against independent float64 numpy/scipy computations and the protocol's bicubic figures."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d

from mgbp.errors import ConfigError
from mgbp.metrics import compare_uint8, mse, psnr, rmse, ssim, uint8_to_tensor

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGES = SHARED / "data" / "images"


# ---- independent references (numpy / scipy, float64, images HxWxC uint8-like on [0, 255]) -----------------


def ref_y(rgb255: np.ndarray) -> np.ndarray:
    r, g, b = (rgb255[..., k].astype(np.float64) for k in range(3))
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def ref_crop(image: np.ndarray, crop: int) -> np.ndarray:
    return image[crop : image.shape[0] - crop, crop : image.shape[1] - crop]


def ref_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10.0 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))


def ref_ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s ssim_index.m: fspecial('gaussian', 11, 1.5), filter2(..., 'valid'), K = (0.01, 0.03)."""
    yy, xx = np.mgrid[-5:6, -5:6].astype(np.float64)
    window = np.exp(-(xx**2 + yy**2) / (2 * 1.5**2))
    window /= window.sum()
    a, b = a.astype(np.float64), b.astype(np.float64)

    def filt(t):
        return correlate2d(t, window, mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filt(a), filt(b)
    s11, s22, s12 = filt(a * a) - mu1**2, filt(b * b) - mu2**2, filt(a * b) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return float(ssim_map.mean())


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """HxWx3 uint8 arrays -> (N, 3, H, W) float64 in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(torch.float64) / 255.0


@pytest.fixture(scope="module")
def pair():
    """Two 2-image batches: a smooth random texture and a noisy, shifted copy (SSIM well inside (0, 1))."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(2, 8, 10, 3)).astype(np.float64)
    big = np.kron(base, np.ones((1, 5, 4, 1)))[:, :37, :33]  # blocky 37x33: structure SSIM can see
    noisy = np.clip(big + rng.normal(0, 20, size=big.shape), 0, 255)
    a, b = np.round(big).astype(np.uint8), np.round(noisy).astype(np.uint8)
    return a, b, to_batch(list(a)), to_batch(list(b))


# ---- PSNR / MSE / RMSE --------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop", [0, 3])
def test_psnr_y_matches_numpy(pair, crop):
    a, b, ta, tb = pair
    got = psnr(ta, tb, crop=crop)
    assert got.dtype == torch.float64 and got.shape == (2,)
    for i in range(2):
        expected = ref_psnr(ref_crop(ref_y(a[i]), crop), ref_crop(ref_y(b[i]), crop))
        assert got[i].item() == pytest.approx(expected, abs=1e-10)


def test_psnr_rgb_matches_numpy(pair):
    a, b, ta, tb = pair
    got = psnr(ta, tb, crop=2, y_channel=False)
    for i in range(2):
        assert got[i].item() == pytest.approx(ref_psnr(ref_crop(a[i], 2), ref_crop(b[i], 2)), abs=1e-10)


def test_psnr_identical_is_infinite_and_float32_input_is_accumulated_in_float64(pair):
    _, _, ta, tb = pair
    assert torch.isinf(psnr(ta, ta)).all()
    torch.testing.assert_close(psnr(ta.float(), tb.float()), psnr(ta, tb), rtol=0, atol=1e-4)
    assert psnr(ta.float(), tb.float()).dtype == torch.float64


def test_mse_and_rmse_match_numpy(pair):
    a, b, ta, tb = pair
    for i in range(2):
        diff_rgb = a[i].astype(np.float64) - b[i]
        assert rmse(ta, tb)[i].item() == pytest.approx(np.sqrt(np.mean(diff_rgb**2)), abs=1e-10)
        diff_y = ref_crop(ref_y(a[i]) - ref_y(b[i]), 4)
        assert mse(ta, tb, crop=4)[i].item() == pytest.approx(np.mean(diff_y**2), abs=1e-9)
        # PIRM-2018 convention: uint8 Y (MATLAB rounds half away from zero; Y > 0 so floor(x + 0.5)).
        y_a, y_b = np.floor(ref_y(a[i]) + 0.5), np.floor(ref_y(b[i]) + 0.5)
        expected = np.sqrt(np.mean(ref_crop(y_a - y_b, 4) ** 2))
        got = rmse(ta, tb, crop=4, y_channel=True, round_y=True)[i].item()
        assert got == pytest.approx(expected, abs=1e-10)


# ---- SSIM ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop", [0, 4])
def test_ssim_y_matches_scipy_reference(pair, crop):
    a, b, ta, tb = pair
    got = ssim(ta, tb, crop=crop)
    assert got.dtype == torch.float64 and got.shape == (2,)
    for i in range(2):
        expected = ref_ssim_plane(ref_crop(ref_y(a[i]), crop), ref_crop(ref_y(b[i]), crop))
        assert 0.05 < expected < 0.95  # a non-trivial value
        assert got[i].item() == pytest.approx(expected, abs=1e-12)


def test_ssim_rgb_is_channel_average_of_reference(pair):
    a, b, ta, tb = pair
    got = ssim(ta, tb, y_channel=False)
    for i in range(2):
        expected = np.mean([ref_ssim_plane(a[i][..., c], b[i][..., c]) for c in range(3)])
        assert got[i].item() == pytest.approx(expected, abs=1e-12)


def test_ssim_identical_is_one_and_batch_equals_singles(pair):
    _, _, ta, tb = pair
    torch.testing.assert_close(ssim(ta, ta), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    singles = torch.cat([ssim(ta[i : i + 1], tb[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(ssim(ta, tb), singles, rtol=0, atol=1e-14)


def test_single_channel_input_is_used_as_is(pair):
    a, b, ta, tb = pair
    grey_a, grey_b = ta[:, :1], tb[:, :1]
    expected = ref_ssim_plane(a[0][..., 0], b[0][..., 0])
    assert ssim(grey_a, grey_b)[0].item() == pytest.approx(expected, abs=1e-12)


def test_compare_uint8_grey_equals_replicated_rgb(pair):
    a, b, _, _ = pair
    grey = compare_uint8(a[0][..., 1], b[0][..., 1], crop=2)
    rgb = compare_uint8(np.repeat(a[0][..., 1:2], 3, 2), np.repeat(b[0][..., 1:2], 3, 2), crop=2)
    assert grey == rgb
    assert set(grey) == {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "rmse"}


# ---- bad inputs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [psnr, ssim, rmse, mse])
def test_shape_mismatch_raises(metric):
    with pytest.raises(ConfigError, match="differ in shape"):
        metric(torch.zeros(1, 3, 20, 20), torch.zeros(1, 3, 20, 21))


@pytest.mark.parametrize(
    "a, crop",
    [
        (torch.zeros(1, 3, 20, 20), 10),  # nothing left
        (torch.zeros(1, 3, 20, 20), -1),  # negative crop
        (torch.zeros(1, 4, 20, 20), 0),  # 4 channels
        (torch.zeros(3, 20, 20), 0),  # unbatched
        (torch.zeros(1, 3, 20, 20, dtype=torch.uint8), 0),  # not [0, 1] floats
    ],
)
def test_bad_inputs_raise(a, crop):
    for metric in (psnr, ssim, rmse):
        with pytest.raises(ConfigError):
            metric(a, a.clone(), crop=crop)


def test_ssim_needs_an_11_pixel_window():
    with pytest.raises(ConfigError, match="11x11"):
        ssim(torch.zeros(1, 3, 20, 20), torch.zeros(1, 3, 20, 20), crop=5)


def test_uint8_to_tensor_rejects_bad_arrays():
    with pytest.raises(ConfigError):
        uint8_to_tensor(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ConfigError):
        uint8_to_tensor(np.zeros((4, 4, 4), dtype=np.uint8))


# ---- the protocol's published bicubic figures -----------------------------------------------------------------


@pytest.mark.skipif(not IMAGES.is_dir(), reason=f"../shared is absent: no {IMAGES}")
@pytest.mark.parametrize("name, psnr_y, ssim_y", [("Set5", 28.43, 0.811), ("Set14", 26.09, 0.705)])
def test_bicubic_x4_protocol_figures(name, psnr_y, ssim_y):
    from PIL import Image

    from mgbp.resize import imresize_uint8, modcrop

    psnrs, ssims = [], []
    for path in sorted((IMAGES / name).glob("*.png")):
        hr = modcrop(np.array(Image.open(path).convert("RGB")), 4)  # bridge.png is mode L
        bicubic = imresize_uint8(imresize_uint8(hr, 0.25), 4)
        a, b = uint8_to_tensor(hr), uint8_to_tensor(bicubic)
        psnrs.append(psnr(a, b, crop=4).item())
        ssims.append(ssim(a, b, crop=4).item())
    assert len(psnrs) == {"Set5": 5, "Set14": 14}[name]
    assert np.mean(psnrs) == pytest.approx(psnr_y, abs=0.01)
    assert np.mean(ssims) == pytest.approx(ssim_y, abs=0.001)
