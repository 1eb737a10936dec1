"""Content-adaptive noise (`mgbp.models.noise_mask`): m(X) against a float64 numpy re-computation, the model
input it shapes, tiles, weight files and bad configs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from mgbp import models
from mgbp.cli import main
from mgbp.errors import ConfigError
from mgbp.models.mgbpv2 import MGBPv2Config
from mgbp.models.noise_mask import NoiseMask, noise_mask
from mgbp.models.weights import load_model, save_model
from mgbp.tiling import run_model

MASK = NoiseMask(flat=1.0, busy=10.0, busy_floor=0.5, gain=1.25)
ONE_LEVEL = 1.0 / 255.0


def numpy_mask(rgb: np.ndarray, mask: NoiseMask) -> np.ndarray:
    """m(X) for one (3,H,W) image, written from the docstring's formula in float64, window by window."""
    y = 16.0 + 65.481 * rgb[0] + 128.553 * rgb[1] + 24.966 * rgb[2]  # MATLAB rgb2ycbcr Y, grey levels
    windows = sliding_window_view(y, (7, 7))
    s = windows.std(axis=(-2, -1))  # population std of every fully contained window
    s = np.pad(s, 3, mode="edge")
    flat = np.clip(s / mask.flat, 0, 1)
    busy = 1 - (1 - mask.busy_floor) * np.clip((s - mask.busy) / mask.busy, 0, 1)
    return mask.gain * flat * busy


def textured_image(seed: int, h: int = 24, w: int = 30) -> torch.Tensor:
    """Flat left third (std 0), faint middle (std ~1 grey level), busy right third: every branch of m."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((1, 3, h, w), 0.5)
    x[..., w // 3 : 2 * w // 3] += 0.006 * torch.randn(1, 3, h, w // 3, generator=g)
    x[..., 2 * w // 3 :] += 0.2 * torch.rand(1, 3, h, w - 2 * w // 3, generator=g)
    return x.clamp(0, 1)


def test_mask_equals_a_float64_window_by_window_recomputation():
    x = textured_image(0)
    got = noise_mask(x, MASK)[0, 0].double().numpy()
    want = numpy_mask(x[0].double().numpy(), MASK)
    assert got.shape == want.shape == (24, 30)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # the image exercises the flat fade-out, the full band and the busy floor
    assert want.min() == 0.0 and np.isclose(want.max(), 1.25) and (want < 1.2).sum() > 20


def test_the_graph_form_of_the_local_std_agrees_with_the_eager_one():
    """ONNX graphs keep the float32 differences-to-the-centre form; eager mode sums in float64: the same std (both
    against the float64 window-by-window numpy one, on flat, faint and busy regions around grey level 200, where
    E[y^2] - E[y]^2 in float32 would lose the faint texture)."""
    from mgbp.models.noise_mask import _local_std_about_centres, _local_std_in_float64

    y = 255 * textured_image(7, 20, 27)[:, :1] + 75
    want = sliding_window_view(y[0, 0].double().numpy(), (7, 7)).std(axis=(-2, -1))
    for form in (_local_std_about_centres, _local_std_in_float64):
        np.testing.assert_allclose(form(y, 7)[0, 0].double().numpy(), want, rtol=0, atol=2e-4)


def masked_model(mask=MASK):
    torch.manual_seed(0)
    model = models.build_model("tiny", noise_mask=mask).eval()
    with torch.no_grad():
        model.synthesis.weight.mul_(100.0)  # a residual branch big enough that noise moves grey levels
    return model


def plain_twin(model):
    twin = models.build_model("tiny").eval()
    twin.load_state_dict(model.state_dict())
    return twin


def test_the_model_feeds_w_m_n_and_leaves_w0_alone():
    model = masked_model()
    plain = plain_twin(model)
    lr = textured_image(1, 12, 15)
    noise = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(2))
    X = models.build_model("tiny").eval()._upscaled_input(lr, None)
    with torch.no_grad():
        assert torch.equal(model(lr, 0.0), plain(lr, 0.0))
        shaped = noise * torch.from_numpy(numpy_mask(X[0].double().numpy(), MASK)).float()
        assert (model(lr, 0.8, noise=noise) - plain(lr, 0.8, noise=shaped)).abs().max() < 1e-5
        assert (model(lr, 0.8, noise=noise) - plain(lr, 0.8, noise=noise)).abs().max() > 5 * ONE_LEVEL


def test_tiles_reproduce_the_whole_image_with_the_mask():
    """The mask reads X three pixels around each noise pixel: the tiles' context covers it."""
    model = masked_model()
    lr = torch.rand(1, 3, 41, 53, generator=torch.Generator().manual_seed(3))
    lr[..., :20] = 0.4  # a flat region for the mask to switch off
    noise = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = model(lr, noise_amp=1.0, noise=noise)
    tile = 2 * model.border_lr + 18
    tiled = run_model(model, lr, noise_amp=1.0, tile=tile, batch=2, noise=noise)
    assert (tiled - reference).abs().max() < ONE_LEVEL / 10


def test_the_mask_travels_in_the_weight_file(tmp_path):
    model = masked_model()
    path = tmp_path / "masked.safetensors"
    save_model(model, path)
    loaded = load_model(str(path), device="cpu")
    assert loaded.config.noise_mask == MASK
    lr = textured_image(5, 10, 12)
    noise = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(loaded(lr, 1.0, noise=noise), model(lr, 1.0, noise=noise))


@pytest.mark.parametrize("bad", [{"flat": -1.0}, {"busy": 0.0}, {"busy_floor": 1.5}, {"gain": 0.0},
                                 {"gain": float("nan")}, {"width": 3.0}, "strong"])
def test_bad_masks_are_config_errors(bad):
    with pytest.raises(ConfigError, match="noise_mask"):
        MGBPv2Config(noise_mask=bad)


def test_video_models_refuse_a_mask():
    with pytest.raises(ConfigError, match="noise_mask is for image models"):
        dataclasses.replace(models.build_model("tiny-3d").config, noise_mask=MASK)


def test_convert_records_the_mask_and_off_removes_it(tmp_path, capsys):
    plain = plain_twin(masked_model())
    source, masked, unmasked = tmp_path / "plain.safetensors", tmp_path / "m.safetensors", tmp_path / "u.safetensors"
    save_model(plain, source)
    assert main(["convert", str(source), str(masked), "--noise-mask", "1,10,0.5,1.25"]) == 0
    model = load_model(str(masked), device="cpu")
    assert model.config.noise_mask == MASK
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
    assert main(["convert", str(masked), str(unmasked), "--noise-mask", "off"]) == 0
    assert load_model(str(unmasked), device="cpu").config.noise_mask is None


@pytest.mark.parametrize("value", ["1,2", "a,b,c,d", "1,10,2,1"])
def test_convert_refuses_a_bad_mask_in_one_line_and_writes_nothing(tmp_path, capsys, value):
    source, target = tmp_path / "plain.safetensors", tmp_path / "m.safetensors"
    save_model(plain_twin(masked_model()), source)
    assert main(["convert", str(source), str(target), "--noise-mask", value]) == 2
    err = capsys.readouterr().err.strip()
    assert "noise_mask" in err.replace("-", "_") and len(err.splitlines()) == 1
    assert not target.exists()


def test_convert_refuses_a_mask_on_a_video_model_in_one_line(tmp_path, capsys):
    source, target = tmp_path / "clip.safetensors", tmp_path / "m.safetensors"
    save_model(models.build_model("tiny-3d"), source)
    assert main(["convert", str(source), str(target), "--noise-mask", "1,10,0.5,1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs an image MGBPv2 model" in err and len(err.splitlines()) == 1
    assert not target.exists()
