"""NIQE against the published check value, an independent per-block numpy/scipy re-implementation of LIVE's
niqe_release (loops over blocks, scipy filtering, brute-force shape search, np.cov, np.linalg.pinv), and known
distributions for the AGGD fit."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate, gaussian_filter
from scipy.special import gamma

from mgbp.errors import ConfigError
from mgbp.metrics import niqe
from mgbp.metrics.niqe_release import _aggd_tables, fit_aggd, nearest_ratio_index, pristine_model
from mgbp.resize import imresize

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BABOON = SHARED / "data" / "images" / "Set14" / "baboon.png"
MATLAB_BABOON = 5.72957338  # MATLAB R2021a, niqe_release on the rounded Y of rgb2ycbcr (data/README.md)

# ---- independent reference: niqe_release's computequality.m / computefeature.m / estimateaggdparam.m ----------

GRID = np.arange(200, 10001) / 1000.0  # 0.2:0.001:10
R_GAM = gamma(2 / GRID) ** 2 / (gamma(1 / GRID) * gamma(3 / GRID))


def ref_aggd(vec):
    vec = vec.ravel()
    left, right = vec[vec < 0], vec[vec > 0]
    left_std = np.sqrt(np.mean(left**2)) if left.size else np.nan
    right_std = np.sqrt(np.mean(right**2)) if right.size else np.nan
    gamma_hat = left_std / right_std
    with np.errstate(invalid="ignore"):  # an all-zero block: 0 / 0, NaN as in MATLAB
        r_hat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
    r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    mismatch = (R_GAM - r_hat_norm) ** 2
    alpha = GRID[0] if np.isnan(r_hat_norm) else GRID[np.argmin(mismatch)]
    factor = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * factor, right_std * factor


def ref_block_features(block):
    alpha, bl, br = ref_aggd(block)
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, bl, br = ref_aggd(block * np.roll(block, shift, axis=(0, 1)))
        feats += [alpha, (br - bl) * gamma(2 / alpha) / gamma(1 / alpha), bl, br]
    return feats


def ref_mscn(image, window):
    mu = correlate(image, window, mode="nearest")  # 'nearest' is MATLAB's 'replicate'
    sigma = np.sqrt(np.abs(correlate(image * image, window, mode="nearest") - mu * mu))
    deviation = image - mu
    deviation[np.abs(deviation) <= 1e-9] = 0.0  # a flat neighbourhood's deviation is exactly 0
    return deviation / (sigma + 1)


def ref_features(grey):
    """grey: HxW float64 on [0, 255] -> (blocks, 36), blocks in the same spatial order at both scales."""
    window = pristine_model()["window"]
    h, w = grey.shape
    image = grey[: h - h % 96, : w - w % 96]
    per_scale = []
    for scale in (1, 2):
        size = 96 // scale
        z = ref_mscn(image, window)
        per_scale.append(
            np.array(
                [
                    ref_block_features(z[r : r + size, c : c + size])
                    for r in range(0, z.shape[0], size)
                    for c in range(0, z.shape[1], size)
                ]
            )
        )
        image = imresize(torch.from_numpy(image), scale=0.5).numpy()
    return np.concatenate(per_scale, axis=1)


def ref_niqe(grey):
    model = pristine_model()
    features = ref_features(grey)
    mu = np.nanmean(features, axis=0)
    cov = np.cov(features[~np.isnan(features).any(axis=1)], rowvar=False)
    d = model["mu"] - mu
    return float(np.sqrt(d @ np.linalg.pinv((model["cov"] + cov) / 2) @ d))


def texture(h, w, seed, sigma=1.2):
    """A natural-looking integer-valued grey texture on [0, 255]."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=(h, w)), sigma) + 0.3 * rng.normal(size=(h, w))
    field = (field - field.min()) / (field.max() - field.min())
    return np.round(20 + 210 * field)


def as_grey_tensor(*images):
    return torch.from_numpy(np.stack(images)[:, None] / 255.0)


# ---- the published check value ---------------------------------------------------------------------------------


@pytest.mark.skipif(not BABOON.is_file(), reason=f"../shared is absent: no {BABOON}")
def test_baboon_check_value():
    from PIL import Image

    rgb = np.array(Image.open(BABOON).convert("RGB"))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(torch.float64) / 255.0
    value = niqe(x)
    assert value.dtype == torch.float64 and value.shape == (1,)
    # Required: 5.7296 +- 0.001; measured 5.7295739, i.e. MATLAB's 5.72957338 to 5e-7.
    assert value.item() == pytest.approx(MATLAB_BABOON, abs=1e-4)


# ---- against the independent re-implementation -------------------------------------------------------------------


def test_matches_reference_on_texture():
    grey = texture(200, 300, seed=1)  # cropped to 192x288: 6 blocks at 96, 6 at 48
    assert niqe(as_grey_tensor(grey)).item() == pytest.approx(ref_niqe(grey), rel=1e-9)


def test_flat_blocks_give_nan_features_handled_like_nanmean_nancov():
    grey = texture(96, 384, seed=2)
    grey[:, :150] = 100.0  # block 0 and its neighbourhood flat at both scales: NaN features there only
    features = ref_features(grey)
    assert np.isnan(features[0, :18]).any() and np.isnan(features[0, 18:]).any()
    assert not np.isnan(features[1:]).any()
    assert niqe(as_grey_tensor(grey)).item() == pytest.approx(ref_niqe(grey), rel=1e-9)


def test_rgb_luminance_paths():
    rng = np.random.default_rng(3)
    rgb = np.stack([texture(96, 192, seed=s) for s in (4, 5, 6)], axis=-1)
    rgb = np.clip(rgb + rng.integers(-3, 4, size=rgb.shape), 0, 255)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None] / 255.0
    y = np.floor(16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255 + 0.5)
    coefficients = np.linalg.inv([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])[0]
    grey = np.floor(rgb @ coefficients + 0.5)
    assert niqe(x).item() == pytest.approx(ref_niqe(y), rel=1e-9)
    assert niqe(x, luminance="gray").item() == pytest.approx(ref_niqe(grey), rel=1e-9)


def test_batch_equals_singles_and_float32_input():
    a, b = texture(100, 200, seed=7), texture(100, 200, seed=8)
    batch = niqe(as_grey_tensor(a, b))
    singles = torch.cat([niqe(as_grey_tensor(a)), niqe(as_grey_tensor(b))])
    torch.testing.assert_close(batch, singles, rtol=1e-12, atol=0)
    assert niqe(as_grey_tensor(a, b).float()).dtype == torch.float64


def test_constant_image_is_nan():
    assert torch.isnan(niqe(torch.full((1, 3, 96, 96), 0.5, dtype=torch.float64))).all()


# ---- pieces ------------------------------------------------------------------------------------------------------


def test_shape_search_equals_brute_force_first_minimum():
    _, ratio, _, _ = _aggd_tables()
    np.testing.assert_allclose(ratio, R_GAM, rtol=1e-14)
    rng = np.random.default_rng(4)
    midpoints = (ratio[:-1] + ratio[1:]) / 2
    targets = np.concatenate(
        [rng.uniform(0.0, 0.8, 500), ratio[rng.integers(0, ratio.size, 50)], midpoints[:50], [-1.0, 5.0]]
    )
    expected = np.argmin((ratio[None, :] - targets[:, None]) ** 2, axis=1)
    got = nearest_ratio_index(torch.from_numpy(ratio), torch.from_numpy(targets)).numpy()
    np.testing.assert_array_equal(got, expected)
    nan = nearest_ratio_index(torch.from_numpy(ratio), torch.tensor([np.nan], dtype=torch.float64))
    assert nan.item() == 0  # MATLAB min over all-NaN returns index 1


@pytest.mark.parametrize(
    "left_std, right_std, sampler, alpha",
    [
        (1.0, 1.0, "normal", 2.0),
        (1.0, 3.0, "normal", 2.0),
        (2.0, 2.0, "laplace", 1.0),
    ],
)
def test_aggd_fit_recovers_known_distributions(left_std, right_std, sampler, alpha):
    rng = np.random.default_rng(5)
    n = 200_000
    if sampler == "normal":
        magnitude = np.abs(rng.normal(size=n))
    else:
        magnitude = rng.exponential(size=n) / np.sqrt(2)  # Laplace with unit std
    # An AGGD puts mass beta_side / (beta_l + beta_r) on each side (the same shape on both).
    sign = rng.random(n) < left_std / (left_std + right_std)
    samples = np.where(sign, -left_std * magnitude, right_std * magnitude)
    fit = fit_aggd(torch.from_numpy(samples)[None])
    got_alpha, beta_l, beta_r = fit.alpha.item(), fit.beta_l.item(), fit.beta_r.item()
    assert got_alpha == pytest.approx(alpha, abs=0.05)
    factor = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    assert beta_l == pytest.approx(left_std * factor, rel=0.03)
    assert beta_r == pytest.approx(right_std * factor, rel=0.03)
    # AGGD mean (beta_r - beta_l) G(2/a) / G(1/a) against the sample mean.
    assert fit.mean.item() == pytest.approx(samples.mean(), abs=0.02 * (left_std + right_std))


def test_shipped_model_and_window():
    model = pristine_model()
    assert model["mu"].shape == (36,) and model["cov"].shape == (36, 36)
    np.testing.assert_allclose(model["cov"], model["cov"].T, atol=1e-12)
    yy, xx = np.mgrid[-3:4, -3:4]
    window = np.exp(-(xx**2 + yy**2) / (2 * (7 / 6) ** 2))  # fspecial('gaussian', 7, 7/6)
    np.testing.assert_allclose(model["window"], window / window.sum(), rtol=1e-12)


@pytest.mark.skipif(not (SHARED / "reference").is_dir(), reason=f"../shared is absent: no reference folder in {SHARED}")
def test_shipped_model_is_the_shared_reference():
    shared = np.load(SHARED / "reference" / "niqe_pris_params.npz")
    model = pristine_model()
    np.testing.assert_array_equal(model["mu"], shared["mu_pris_param"].reshape(-1))
    np.testing.assert_array_equal(model["cov"], shared["cov_pris_param"])
    np.testing.assert_array_equal(model["window"], shared["gaussian_window"])


# ---- bad inputs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.zeros(1, 3, 95, 200), "at least 96x96"),
        (torch.zeros(1, 1, 300, 40), "at least 96x96"),
        (torch.zeros(1, 2, 96, 96), "niqe expects"),
        (torch.zeros(3, 96, 96), "niqe expects"),
        (torch.zeros(1, 3, 96, 96, dtype=torch.uint8), "niqe expects"),
        (np.zeros((96, 96, 3)), "niqe expects"),
    ],
)
def test_bad_inputs_raise(x, message):
    with pytest.raises(ConfigError, match=message):
        niqe(x)


def test_bad_luminance_raises():
    with pytest.raises(ConfigError, match="luminance"):
        niqe(torch.zeros(1, 3, 96, 96), luminance="rgb")
