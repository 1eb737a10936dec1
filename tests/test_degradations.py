"""`mgbp.degradations`: each operator of Real-ESRGAN's second-order model against an independent computation
(scipy / numpy float64), the seeded pipeline (determinism, shapes, ranges), its config checks, its hook into
training, and the fixed degradations of `mgbp eval --degrade`."""

import io
import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.special
import scipy.stats
import torch
import yaml
from PIL import Image

from mgbp import degradations as dg
from mgbp.data import make_training_pair
from mgbp.errors import ConfigError
from mgbp.resize import imresize
from mgbp.train_config import load_config


def rng_image(n=2, h=32, w=40, seed=0) -> torch.Tensor:
    """Smooth random images (N, 3, H, W) in [0, 1] (bilinear upscale of a coarse grid)."""
    coarse = torch.rand(n, 3, h // 4 + 1, w // 4 + 1, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)


# ---------------------------------------------------------------------------------------------- kernels
def numpy_form(size, sigma_x, sigma_y, theta):
    """Q = x^T Sigma^-1 x on the grid, Sigma from its eigen-decomposition (numpy, float64)."""
    r = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    sigma = r @ np.diag([sigma_x**2, sigma_y**2]) @ r.T
    ax = np.arange(size) - size // 2
    xx, yy = np.meshgrid(ax, ax)
    grid = np.stack([xx, yy], -1).astype(np.float64)
    return np.einsum("hwi,ij,hwj->hw", grid, np.linalg.inv(sigma), grid), sigma, grid


def test_isotropic_gaussian_is_scipys_window_product():
    from scipy.signal.windows import gaussian

    k = dg.gaussian_family_kernels(21, [1.7], [1.7], [0.0], [1.0], [0])[0].numpy()
    w = gaussian(21, 1.7)
    assert np.allclose(k, np.outer(w, w) / np.outer(w, w).sum(), atol=1e-12)


def test_anisotropic_gaussian_is_scipys_normal_density():
    sx, sy, theta = 2.5, 0.8, 0.6
    _, sigma, grid = numpy_form(15, sx, sy, theta)
    density = scipy.stats.multivariate_normal(mean=[0, 0], cov=sigma).pdf(grid)
    k = dg.gaussian_family_kernels(15, [sx], [sy], [theta], [1.0], [0])[0].numpy()
    assert np.allclose(k, density / density.sum(), atol=1e-12)
    assert not np.allclose(k, k.T, atol=1e-4)  # really rotated


@pytest.mark.parametrize("shape,beta", [(1, 0.6), (1, 3.0), (2, 1.0), (2, 2.0)])
def test_generalised_and_plateau_kernels(shape, beta):
    q, _, _ = numpy_form(13, 1.9, 1.1, -1.2)
    expected = np.exp(-0.5 * q**beta) if shape == 1 else 1.0 / (1.0 + q**beta)
    k = dg.gaussian_family_kernels(13, [1.9], [1.1], [-1.2], [beta], [shape])[0].numpy()
    assert np.allclose(k, expected / expected.sum(), atol=1e-12)


def test_sinc_kernel_is_the_circular_lowpass_with_scipys_bessel():
    w = 1.3
    ax = np.arange(21) - 10
    r = np.hypot(*np.meshgrid(ax, ax))
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(r == 0, w * w / (4 * np.pi), w * scipy.special.j1(w * r) / (2 * np.pi * r))
    k = dg.sinc_kernels(21, [w])[0].numpy()
    assert np.allclose(k, expected / expected.sum(), atol=1e-10)
    assert (k < 0).any()  # the ringing lobes


def test_random_kernels_sum_to_one_and_respect_their_size():
    order = dg.OrderConfig(kernel_size=(7, 9), sinc_prob=0.5)
    k = dg.random_kernels(order, 64, torch.Generator().manual_seed(3))
    assert k.shape[-1] in (7, 9) and torch.allclose(k.sum(dim=(1, 2)), torch.ones(64, dtype=torch.float64))
    sized7 = (k[:, 0, :] == 0).all(dim=1) & (k[:, :, 0] == 0).all(dim=1)
    assert 0 < int(sized7.sum()) < 64  # both sizes drawn; size-7 kernels are zero on the 9x9 rim


def test_blur_is_scipys_convolution_per_image():
    x = rng_image(3, 24, 30)
    kernels = torch.stack([dg.gaussian_family_kernels(11, [s], [s * 0.5], [0.3 * i], [1.0], [0])[0]
                           for i, s in enumerate((0.7, 1.5, 2.5))])
    out = dg.blur(x, kernels)
    for i in range(3):
        for c in range(3):
            # torch's 'reflect' padding (edge not repeated) is scipy's 'mirror'
            expected = scipy.ndimage.convolve(x[i, c].double().numpy(), kernels[i].numpy(), mode="mirror")
            assert np.allclose(out[i, c].numpy(), expected, atol=2e-6)


# ----------------------------------------------------------------------------------------------- resize
def test_area_and_bilinear_halving_are_block_means():
    x = rng_image(2, 16, 24)
    blocks = x.double().numpy().reshape(2, 3, 8, 2, 12, 2).mean(axis=(3, 5))
    for mode in ("area", "bilinear"):  # bilinear without antialiasing samples between the two pixels
        assert np.allclose(dg.resize(x, (8, 12), mode).numpy(), blocks, atol=1e-6)


def test_bicubic_halving_is_keys_a_minus_075():
    # no antialiasing: output i sits between input 2i and 2i + 1, taps at +-0.5 and +-1.5, borders clamped
    x = rng_image(1, 16, 16)[0, 0].double().numpy()
    a = -0.75
    near = (a + 2) * 0.5**3 - (a + 3) * 0.5**2 + 1
    far = a * 1.5**3 - 5 * a * 1.5**2 + 8 * a * 1.5 - 4 * a
    taps = np.array([far, near, near, far])

    def halve(v):
        idx = np.clip(np.arange(8)[:, None] * 2 + np.arange(-1, 3)[None, :], 0, len(v) - 1)
        return (v[idx] * taps).sum(axis=1)

    expected = np.apply_along_axis(halve, 1, np.apply_along_axis(halve, 0, x))
    out = dg.resize(rng_image(1, 16, 16), (8, 8), "bicubic")[0, 0].numpy()
    assert np.allclose(out, expected, atol=1e-5)


def test_matlab_mode_is_the_protocols_imresize():
    x = rng_image(2, 32, 32)
    assert torch.equal(dg.resize(x, (8, 8), "matlab"), imresize(x, size=(8, 8)))


# ------------------------------------------------------------------------------------------------ noise
def order_with(**kw) -> dg.OrderConfig:
    return dg.OrderConfig(**{"noise_prob": 1.0, **kw})


@pytest.mark.parametrize("gray", [0.0, 1.0])
def test_gaussian_noise_statistics(gray):
    x = torch.full((4, 3, 128, 128), 0.5)
    order = order_with(gaussian_noise_prob=1.0, noise_sigma=(10.0, 10.0), gray_noise_prob=gray)
    noise = (dg.add_noise(x, order, torch.Generator().manual_seed(0)) - 0.5).double().numpy() * 255
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 10.0) < 0.15
    correlation = np.corrcoef(noise[:, 0].ravel(), noise[:, 1].ravel())[0, 1]
    assert correlation > 0.999 if gray else abs(correlation) < 0.02


@pytest.mark.parametrize("level", [0.2, 0.7])
def test_poisson_noise_statistics(level):
    x = torch.full((4, 3, 128, 128), level)
    order = order_with(gaussian_noise_prob=0.0, poisson_scale=(1.0, 1.0), gray_noise_prob=0.0)
    noise = (dg.add_noise(x, order, torch.Generator().manual_seed(1)) - level).double().numpy() * 255
    # Poisson(255 x) / 255 - x has variance x / 255: on the 0-255 scale, 255 x
    assert abs(noise.mean()) < 0.15
    assert abs(noise.var() / (255 * level) - 1) < 0.03
    counts = noise + 255 * level  # Poisson draws: whole photon counts, 1/255 each
    assert np.allclose(counts, np.round(counts), atol=1e-3)


def test_grey_poisson_noise_is_the_same_on_all_channels():
    x = rng_image(2, 32, 32)
    order = order_with(gaussian_noise_prob=0.0, poisson_scale=(2.0, 2.0), gray_noise_prob=1.0)
    noise = dg.add_noise(x * 0.5 + 0.25, order, torch.Generator().manual_seed(2)) - (x * 0.5 + 0.25)
    assert torch.allclose(noise[:, 0], noise[:, 1], atol=1e-6) and noise.abs().max() > 0.01


def test_noise_probability_zero_leaves_the_image():
    x = rng_image()
    assert torch.equal(dg.add_noise(x, order_with(noise_prob=0.0), torch.Generator().manual_seed(0)), x)


# --------------------------------------------------------------------------------------------- pipeline
def test_pipeline_is_seeded_shaped_and_in_range():
    hr = rng_image(6, 64, 48)
    degrade = dg.Degradation({})
    a = degrade(hr, 4, torch.Generator().manual_seed(5))
    b = degrade(hr, 4, torch.Generator().manual_seed(5))
    c = degrade(hr, 4, torch.Generator().manual_seed(6))
    assert a.shape == (6, 3, 16, 12) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.allclose(a * 255, torch.round(a * 255), atol=1e-4)  # 8-bit levels, as the protocol's LR


def test_parameters_are_drawn_per_sample():
    hr = rng_image(1, 64, 64).expand(8, -1, -1, -1).contiguous()
    lr = dg.Degradation({})(hr, 4, torch.Generator().manual_seed(0))
    distinct = {tuple(torch.round(lr[i] * 255).flatten()[:200].tolist()) for i in range(8)}
    assert len(distinct) == 8


def test_clean_probability_one_is_the_papers_bicubic_lr():
    hr = rng_image(3, 48, 48)
    lr = dg.Degradation({"clean_prob": 1.0})(hr, 4, torch.Generator().manual_seed(0))
    assert torch.equal(lr, torch.floor(imresize(hr, scale=0.25).clamp(0, 1) * 255 + 0.5) / 255)


def test_everything_off_with_a_matlab_final_resize_is_bicubic_too():
    # (the second order's resize is to a scale of the LR size: there the whole downscale happens)
    off = {"blur_prob": 0.0, "noise_prob": 0.0, "jpeg_prob": 0.0, "resize_probs": {"keep": 1.0},
           "resize_modes": {"matlab": 1.0}}
    config = {"first": off, "second": off, "final_sinc_prob": 0.0, "final_resize_modes": {"matlab": 1.0}}
    hr = rng_image(2, 32, 32)
    lr = dg.Degradation(config)(hr, 4, torch.Generator().manual_seed(0))
    assert torch.equal(lr, torch.floor(imresize(hr, size=(8, 8)).clamp(0, 1) * 255 + 0.5) / 255)


def test_tiny_intermediate_sizes_work():
    config = {"first": {"resize_probs": {"down": 1.0}, "resize_range": [0.15, 0.15]},
              "second": {"resize_probs": {"down": 1.0}, "resize_range": [0.3, 0.3]}}
    lr = dg.Degradation(config)(rng_image(2, 40, 40), 4, torch.Generator().manual_seed(0))
    assert lr.shape == (2, 3, 10, 10) and torch.isfinite(lr).all()


def test_training_pair_with_a_degradation_keeps_the_margin_rule():
    hr = (rng_image(2, 40, 40) * 255).round().to(torch.uint8)
    degrade = dg.Degradation({})
    lr, target = make_training_pair({"hr": hr}, 4, 1, degradation=degrade, generator=torch.Generator().manual_seed(0))
    assert lr.shape == (2, 3, 8, 8) and target.shape == (2, 3, 32, 32)
    full = degrade(hr.float() / 255, 4, torch.Generator().manual_seed(0))
    assert torch.equal(lr, full[..., 1:-1, 1:-1])


# ----------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("settings,message", [
    ({"clean": 0.5}, "unknown config key 'data.degradation.clean'"),
    ({"first": {"sigma": [1, 2]}}, "unknown config key 'data.degradation.first.sigma'"),
    ({"clean_prob": 1.5}, "data.degradation.clean_prob must be a probability"),
    ({"first": {"kernel_size": [8, 21]}}, "kernel_size must be odd"),
    ({"first": {"noise_sigma": [20, 10]}}, "noise_sigma must satisfy"),
    ({"second": {"jpeg_quality": [30, 101]}}, "jpeg_quality must satisfy"),
    ({"second": {"jpeg_quality": "high"}}, "jpeg_quality must be a range"),
    ({"final_resize_modes": {"lanczos": 1}}, "unknown choice 'lanczos'"),
    ({"first": {"kernel_probs": {"iso": 0}}}, "must not all be 0"),
    ([1, 2], "must be a mapping"),
])
def test_bad_settings_are_one_line_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message) as info:
        dg.DegradationConfig.from_dict(settings)
    assert "\n" not in str(info.value)


def test_training_config_section_is_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"degradation": {"first": {"jpeg_prob": 2}}}}))
    with pytest.raises(ConfigError, match="data.degradation.first.jpeg_prob"):
        load_config(path)
    path.write_text(yaml.safe_dump({"data": {"degradation": {}, "lr_train": [str(tmp_path)]}}))
    with pytest.raises(ConfigError, match="cannot be used with data.lr_train"):
        load_config(path)
    path.write_text(yaml.safe_dump({"data": {"degradation": {"clean_prob": 0.3}}}))
    assert load_config(path)["data"]["degradation"] == {"clean_prob": 0.3}


def test_training_steps_on_degraded_patches(tmp_path):
    from mgbp import train

    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(2):
        array = (rng_image(1, 48, 48, seed=i)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"t{i}.png")
    overrides = [f"output_dir={tmp_path / 'run'}", "steps=3", "log_every=1", "model.preset=tiny",
                 f"data.train=[{folder}]", "data.patch=6", "data.batch=2", "data.workers=0", "val.folder=null",
                 "data.degradation={clean_prob: 0.5}"]
    trainer = train.Trainer(load_config(None, overrides), quiet=True)
    assert trainer.degradation is not None and trainer.run() == 0
    generator_a, generator_b = trainer._degradation_generator(), trainer._degradation_generator()
    assert torch.equal(torch.rand(4, generator=generator_a), torch.rand(4, generator=generator_b))


# --------------------------------------------------------------------------------- eval: --degrade SPEC
def test_spec_parsing_and_labels():
    steps = dg.parse_degrade_spec("jpeg:40+noise:10+blur:1.2")
    assert steps == (dg.TestDegradation("jpeg", 40.0), dg.TestDegradation("noise", 10.0),
                     dg.TestDegradation("blur", 1.2))
    assert dg.spec_label(steps) == "jpeg:40+noise:10+blur:1.2"


@pytest.mark.parametrize("spec,message", [
    ("jpg:40", "unknown degradation 'jpg:40'"), ("jpeg", "jpeg needs a number"), ("jpeg:0", "1-100"),
    ("jpeg:40.5", "1-100"), ("noise:-1", ">= 0"), ("noise:10+sharpen:2", "unknown degradation 'sharpen:2'"),
])
def test_bad_specs_list_the_valid_ones(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        dg.parse_degrade_spec(spec)
    assert "\n" not in str(info.value)
    if "unknown" in message:
        assert "jpeg:Q" in str(info.value) and "noise:S" in str(info.value) and "blur:S" in str(info.value)


def test_spec_jpeg_is_pillows_and_noise_is_seeded():
    rgb = (rng_image(1, 48, 64)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=40, subsampling=2)
    expected = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert np.array_equal(dg.degrade_uint8(rgb, dg.parse_degrade_spec("jpeg:40"), 0), expected)
    noise = dg.parse_degrade_spec("noise:10")
    flat = np.full((200, 200, 3), 128, np.uint8)
    a, b = dg.degrade_uint8(flat, noise, 7), dg.degrade_uint8(flat, noise, 7)
    assert np.array_equal(a, b) and not np.array_equal(a, dg.degrade_uint8(flat, noise, 8))
    assert abs(a.astype(np.float64).std() - math.sqrt(100 + 1 / 12)) < 0.2  # sigma 10 plus the rounding
    assert dg.image_seed("baboon") == dg.image_seed("baboon") != dg.image_seed("barbara")


def test_spec_blur_is_a_symmetric_gaussian_filter():
    rgb = (rng_image(1, 30, 30)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    sigma = 1.2
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(rgb.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
    rows = sum(t * padded[i: i + 30] for i, t in enumerate(taps))
    both = sum(t * rows[:, i: i + 30] for i, t in enumerate(taps))
    expected = np.clip(np.floor(both + 0.5), 0, 255).astype(np.uint8)
    result = dg.degrade_uint8(rgb, dg.parse_degrade_spec("blur:1.2"), 0)
    assert np.abs(result.astype(int) - expected).max() <= 1 and (result != rgb).any()


def test_eval_scores_degraded_test_sets_under_their_labels(tmp_path):
    from mgbp.evaluate import evaluate

    folder = tmp_path / "Set"
    folder.mkdir()
    for i in range(2):
        array = (rng_image(1, 64, 64, seed=10 + i)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"im{i}.png")
    results = evaluate([folder], degrade=["none", "jpeg:20", "noise:10"], progress=False, seed=3)
    clean, jpeg, noisy = (results.mean(name, 4, "Bicubic") for name in ("Set", "Set [jpeg:20]", "Set [noise:10]"))
    assert jpeg.psnr_y < clean.psnr_y - 0.3 and noisy.psnr_y < clean.psnr_y - 0.3
    again = evaluate([folder], degrade=["noise:10"], progress=False, seed=3)
    assert again.mean("Set [noise:10]", 4, "Bicubic").psnr_y == noisy.psnr_y  # seeded per image
    assert results.settings["degrade"] == [None, "jpeg:20", "noise:10"]
    with pytest.raises(ConfigError, match="unknown degradation 'jpg:20'"):
        evaluate([folder], degrade=["jpg:20"], progress=False)
