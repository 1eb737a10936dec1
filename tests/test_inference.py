"""Tiled inference (`mgbp.tiling`) and the API around it (`mgbp.inference`): exactness against the untiled forward
pass, OOM fallback, the API."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from mgbp import inference, models, tiling
from mgbp.errors import ConfigError, MgbpError
from mgbp.inference import upscale
from mgbp.models.contract import Capabilities
from mgbp.resize import imresize
from mgbp.tiling import all_finite, run_model, tile_starts, tile_weights_1d
from tiny_generators import OomGenerator, TinyGenerator

ONE_LEVEL = 1.0 / 255.0


def whole_image(model, lr):
    """The reference: one forward pass of the model on the whole image, no tiling code involved."""
    with torch.no_grad():
        return model(lr)


@pytest.fixture(scope="module")
def model():
    return TinyGenerator(scale=2, seed=1).eval()


@pytest.mark.parametrize(("shape", "tile", "batch"), [((1, 3, 45, 61), 30, 1), ((2, 3, 50, 37), 29, 3),
                                                       ((1, 3, 33, 33), 32, 2)])
def test_tiled_matches_untiled(model, shape, tile, batch):
    lr = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    tiled = run_model(model, lr, tile=tile, batch=batch)
    assert tiled.shape == (shape[0], 3, 2 * shape[2], 2 * shape[3])
    assert (tiled - whole_image(model, lr)).abs().max() < ONE_LEVEL / 10


@pytest.mark.parametrize(("shape", "batch"), [((1, 3, 45, 61), 1), ((3, 3, 20, 24), 3), ((3, 3, 20, 24), 2)])
def test_one_tile_per_image_is_the_forward_pass_bit_for_bit(model, shape, batch):
    """An image that fits one tile skips the blend (weights 1): the output is the forward pass itself, exactly,
    when all images share one pass, and the blend of batches (2 + 1 of 3) gives it exactly too. (The reference
    runs the same batches: a convolution's rounding may depend on the batch it runs in.)"""
    lr = torch.rand(shape, generator=torch.Generator().manual_seed(5))
    out = run_model(model, lr, batch=batch)
    reference = torch.cat([whole_image(model, lr[n:n + batch]) for n in range(0, shape[0], batch)])
    assert out.dtype == torch.float32 and torch.equal(out, reference)


def test_one_tile_of_a_bf16_model_comes_back_as_float32(model):
    lr = torch.rand((1, 3, 16, 20), generator=torch.Generator().manual_seed(6))
    half = TinyGenerator(scale=2, seed=1).eval().to(torch.bfloat16)
    out = run_model(half, lr.to(torch.bfloat16))
    assert out.dtype == torch.float32 and torch.equal(out, whole_image(half, lr.to(torch.bfloat16)).float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_all_finite_agrees_with_the_element_wise_test(dtype):
    big = torch.finfo(dtype).max
    cases = {
        "random": torch.randn(64, 33),
        "one NaN": torch.randn(64, 33).index_put_((torch.tensor([7]), torch.tensor([5])), torch.tensor(float("nan"))),
        "one +inf": torch.zeros(10).index_fill_(0, torch.tensor([3]), float("inf")),
        "-inf": torch.full((5,), -float("inf")),
        "+inf and -inf": torch.tensor([1.0, float("inf"), -float("inf")]),
        "finite values whose sum overflows": torch.full((8,), big),
        "empty": torch.zeros(0),
    }
    for name, values in cases.items():
        t = values.to(dtype)
        assert all_finite(t) == bool(torch.isfinite(t).all()), name


def test_tiled_matches_untiled_for_a_clip():
    model = TinyGenerator(scale=3, clip_length=4).eval()
    clip = torch.rand(1, 3, 4, 30, 26, generator=torch.Generator().manual_seed(4))
    tiled = run_model(model, clip, tile=24, overlap=12)
    assert (tiled - whole_image(model, clip)).abs().max() < ONE_LEVEL / 10


def test_too_small_an_overlap_shows_seams(model):
    """The agreement above is not automatic: an overlap below the model's border gives visible errors."""
    lr = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    with pytest.warns(UserWarning, match="overlap"):
        tiled = run_model(model, lr, tile=16, overlap=2)
    assert (tiled - whole_image(model, lr)).abs().max() > ONE_LEVEL


def test_no_seams_on_a_gradient(model):
    ramp = torch.linspace(0.1, 0.9, 72)
    lr = torch.stack([ramp[None, :].expand(64, 72), ramp[:64, None].expand(64, 72), 0.5 * ramp[None, :72]
                      .expand(64, 72)])[None]
    tiled, untiled = run_model(model, lr, tile=36), whole_image(model, lr)
    # a seam is a jump in the horizontal / vertical differences at a tile edge: compare them everywhere
    for dim in (-1, -2):
        assert (tiled.diff(dim=dim) - untiled.diff(dim=dim)).abs().max() < ONE_LEVEL / 10


def test_tile_weights_cover_and_sum_to_one():
    """Direct loop over HR pixels: every pixel has weight > 0; off the moved-in last tile, the sum is 1."""
    length, extent, overlap, margin, scale = 100, 30, 12, 3, 2
    starts = tile_starts(length, extent, overlap)
    assert starts[0] == 0 and starts[-1] == length - extent and all(b - a <= extent - overlap
                                                                   for a, b in itertools.pairwise(starts))
    total = np.zeros(scale * length)
    for start in starts:
        weights = tile_weights_1d(start, extent, length, scale, margin, overlap).numpy()
        for j, w in enumerate(weights):
            total[scale * start + j] += w
        if start > 0:  # nothing within the margin of an inner edge is used
            assert np.all(weights[: scale * margin] == 0)
    assert total.min() > 0
    assert np.allclose(total[: scale * starts[-1]], 1.0)  # before the last tile, placement is regular


def test_oom_fallback_halves_tiles_until_it_fits():
    model = OomGenerator(max_pixels=40 * 40, scale=2, seed=1).eval()
    lr = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(6))
    out = run_model(model, lr, tile=128, batch=4)
    reference = whole_image(TinyGenerator(scale=2, seed=1).eval(), lr)
    assert (out - reference).abs().max() < ONE_LEVEL / 10
    assert any(n * h * w > 40 * 40 for n, _, h, w in model.calls)  # it did run out of memory first


def test_oom_with_the_smallest_tile_is_a_clear_error():
    model = OomGenerator(max_pixels=10, scale=2).eval()
    with pytest.raises(MgbpError, match="out of memory"):
        run_model(model, torch.rand(1, 3, 64, 64), tile=48)


def test_other_runtime_errors_are_not_retried():
    class Broken(TinyGenerator):
        def forward(self, lr, noise_amp=0.0, noise=None):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_model(Broken().eval(), torch.rand(1, 3, 20, 20))


def test_cpu_tiles_follow_the_pixel_budget(monkeypatch):
    """Automatic tiling on CPU: no forward pass is larger than the output-pixel budget allows."""
    monkeypatch.setattr(tiling, "CPU_OUTPUT_PIXEL_BUDGET", 4 * 40 * 40)
    model = OomGenerator(max_pixels=10**9, scale=2, seed=1).eval()
    lr = torch.rand(1, 3, 90, 100, generator=torch.Generator().manual_seed(7))
    out = run_model(model, lr)
    assert max(h * w for _, _, h, w in model.calls) <= 40 * 40
    assert (out - whole_image(TinyGenerator(scale=2, seed=1).eval(), lr)).abs().max() < ONE_LEVEL / 10


def reference_uint8(model, rgb_uint8):
    x = torch.from_numpy(np.array(rgb_uint8)).permute(2, 0, 1)[None].double().div(255).float()
    y = whole_image(model, x).clamp(0, 1)
    return np.round(y[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def test_numpy_uint8_uint16_and_float(model):
    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out = upscale(image, model=model)
    assert out.dtype == np.uint8 and out.shape == (40, 48, 3)
    assert np.abs(out.astype(int) - reference_uint8(model, image)).max() <= 1
    deep = rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    out16 = upscale(deep, model=model)
    assert out16.dtype == np.uint16 and len(np.unique(out16 % 257)) > 1  # not flattened to 8 bits
    as_float = upscale(image.astype(np.float32) / 255, model=model)
    assert as_float.dtype == np.float32 and np.abs(as_float * 255 - out).max() <= 0.51


def test_grey_and_alpha(model):
    rng = np.random.default_rng(9)
    grey = rng.integers(0, 256, (18, 22), dtype=np.uint8)
    out = upscale(grey, model=model)
    assert out.shape == (36, 44)
    expected = reference_uint8(model, np.repeat(grey[..., None], 3, axis=2)).astype(float).mean(axis=2)
    assert np.abs(out - expected).max() <= 1
    rgba = rng.integers(0, 256, (18, 22, 4), dtype=np.uint8)
    out = upscale(rgba, model=model)
    alpha = imresize(torch.from_numpy(rgba[..., 3]).double() / 255, scale=2).clamp(0, 1).numpy() * 255
    assert out.shape == (36, 44, 4) and np.abs(out[..., 3] - alpha).max() <= 1
    assert np.abs(out[..., :3].astype(int) - reference_uint8(model, rgba[..., :3])).max() <= 1


def test_pil_images(model):
    rng = np.random.default_rng(10)
    rgb = Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
    out = upscale(rgb, model=model)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (40, 32)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = upscale(palette, model=model)
    assert out.mode == "RGB" and out.size == (40, 32)
    expected = reference_uint8(model, np.asarray(palette.convert("RGB")))
    assert np.abs(np.asarray(out).astype(int) - expected).max() <= 1
    assert upscale(rgb.convert("LA"), model=model).mode == "LA"


def test_tensors_single_and_batched(model):
    batch = torch.rand(2, 3, 14, 18, generator=torch.Generator().manual_seed(11))
    out = upscale(batch, model=model)
    assert out.shape == (2, 3, 28, 36)
    assert (out - whole_image(model, batch).clamp(0, 1)).abs().max() < 1e-5
    single = upscale(batch[1], model=model)
    assert single.shape == (3, 28, 36) and (single - out[1]).abs().max() < 1e-5


def test_consistent_output_meets_the_lr_constraint_and_equals_back_projecting_the_plain_one(model):
    """`mgbp.upscale(..., consistent=True)` is `mgbp upscale --consistent`: the plain output back-projected onto
    S_f(Y) = input (eqs. 4-5), which MATLAB's bicubic downscale then maps back onto the input."""
    from mgbp.backprojection import DEFAULT_TOL, back_project

    coarse = torch.rand(1, 3, 5, 6, generator=torch.Generator().manual_seed(12))
    lr = 0.2 + 0.6 * imresize(coarse, size=(14, 18)).clamp(0, 1)  # inside (0, 1): the clamp does not bind
    out = upscale(lr, model=model, consistent=True)
    plain = run_model(model, lr)
    assert torch.equal(out, back_project(lr, plain, 2).clamp(0, 1))
    assert (imresize(out, scale=0.5) - lr).abs().max() < 2 * DEFAULT_TOL
    assert (imresize(plain.clamp(0, 1), scale=0.5) - lr).abs().max() > 10 * DEFAULT_TOL


def test_user_errors(model):
    with pytest.raises(ConfigError, match="x2"):
        upscale(np.zeros((8, 8, 3), np.uint8), model=model, scale=4)
    with pytest.raises(ConfigError):
        upscale([[0, 1]], model=model)
    with pytest.raises(ConfigError, match="overlap"):
        run_model(model, torch.rand(1, 3, 40, 40), tile=8, overlap=10)
    with pytest.raises(MgbpError, match="x7"):  # no shipped weights for x7: says so (and lists what exists)
        inference.resolve_model(None, scale=7)


def test_tiled_matches_untiled_for_the_real_mgbpv2():
    """The MGBPv2 of the model issue (tiny preset): its own border_lr makes tiles exact."""
    model = models.build_model("tiny").eval()
    lr = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(12))
    tiled = run_model(model, lr, tile=2 * model.border_lr + 20)
    assert (tiled - whole_image(model, lr)).abs().max() < ONE_LEVEL / 10


def test_gpu_plan_uses_the_memory_budget(monkeypatch, model):
    """On a GPU the tile side is the square root of the pixel budget, and leftover budget batches tiles."""
    monkeypatch.setattr(tiling, "model_device", lambda m: (torch.device("cuda"), torch.float32))
    monkeypatch.setattr(tiling, "_gpu_pixel_budget", lambda m, lr, amp: 10_000)
    plan = tiling.auto_plan(model, torch.zeros(1, 3, 400, 500), None, 18, 0.0)
    assert (plan.tile, plan.batch) == (100, 1)
    plan = tiling.auto_plan(model, torch.zeros(1, 3, 30, 1000), None, 18, 0.0)
    assert (plan.tile, plan.batch) == (100, 3)  # 30x100 tiles: three fit in the budget


def test_gpu_budget_respects_the_per_process_memory_cap(monkeypatch):
    """The probe's bytes per pixel divide what this process may still allocate: the free memory, or less when
    `torch.cuda.set_per_process_memory_fraction` (`--max-gpu-memory`) caps the process."""
    gib = 2**30
    fake = {"fraction": 1.0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (60 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * gib)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2 * gib)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: fake["fraction"],
                        raising=False)
    device = torch.device("cuda")
    assert tiling.available_gpu_memory(device) == 61 * gib  # free + PyTorch's cache
    fake["fraction"] = 0.1  # an 8 GiB cap on an 80 GiB card, 1 GiB already held by the weights
    assert tiling.available_gpu_memory(device) == 8 * gib - 1 * gib
    fake["fraction"] = 0.01
    assert tiling.available_gpu_memory(device) == 0


def test_max_gpu_memory_needs_cuda(capsys):
    from mgbp.cli import main

    assert main(["upscale", "x.png", "--max-gpu-memory", "8", "--device", "cpu"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


# ---- grid alignment and noise (W > 0) for the real generators -------------------------------------------------


def strong_mgbpv2(preset="tiny", **overrides):
    """An MGBPv2 whose residual branch is not the near-zero start of training (Synthesis x100), so that tile
    misalignment and the noise both move the output by many grey levels."""
    torch.manual_seed(0)
    model = models.build_model(preset, **overrides).eval()
    with torch.no_grad():
        model.synthesis.weight.mul_(100.0)
    return model


class Unplaced(torch.nn.Module):
    """The same network with no `placement` support: tiles padded on their own, as before the grid fix."""

    capabilities = Capabilities(whole_image_noise=False, placement=False)
    is_video = False

    def __init__(self, model):
        super().__init__()
        self.inner, self.scale, self.border_lr, self.family = model, model.scale, model.border_lr, "unplaced"
        self.noise_channels, self.config = model.noise_channels, model.config

    def forward(self, lr, noise_amp=0.0, noise=None):
        return self.inner(lr, noise_amp, noise)


@pytest.mark.parametrize("overrides", [{"scale": 3, "levels": 2, "channels": (8, 4)},
                                       {"scale": 2, "levels": 3, "channels": (8, 6, 4)}])
def test_mgbpv2_tiles_line_up_with_the_whole_images_grids(overrides):
    """x3 (HR tile offsets 3k, grid of 2) and x2 with 3 levels (grid of 4): tiles at offsets that are not whole
    grid cells are exact only because the model aligns them; the same tiles padded on their own are not."""
    model = strong_mgbpv2(**overrides)
    tile = 2 * model.border_lr + 11  # tile starts fall on every phase of the grid
    lr = torch.rand(1, 3, 37, tile + 12, generator=torch.Generator().manual_seed(13))
    assert len(tile_starts(lr.shape[-1], tile, 2 * model.border_lr + 8)) >= 3
    reference = whole_image(model, lr)
    assert (run_model(model, lr, tile=tile, batch=2) - reference).abs().max() < ONE_LEVEL / 10
    assert (run_model(Unplaced(model), lr, tile=tile) - reference).abs().max() > 5 * ONE_LEVEL


def test_mgbpv2_tiles_at_w_07_equal_the_untiled_pass_with_the_same_noise():
    """One whole-image noise map, cropped per tile: tiled = untiled at W = 0.7. The noise moves the output by
    far more than the tolerance, so tiles drawing (or cropping) their own noise would fail this."""
    model = strong_mgbpv2()
    lr = torch.rand(2, 3, 41, 53, generator=torch.Generator().manual_seed(14))
    noise = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(15))
    other = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(16))
    with torch.no_grad():
        reference = model(lr, noise_amp=0.7, noise=noise)
        assert (reference - model(lr, noise_amp=0.7, noise=other)).abs().max() > 20 * ONE_LEVEL
    tile = 2 * model.border_lr + 18  # overlap 2 * border + 8: tiles advance by 10 LR pixels
    assert len(tile_starts(41, tile, 2 * model.border_lr + 8)) * len(tile_starts(53, tile, 30)) > 2
    tiled = run_model(model, lr, noise_amp=0.7, tile=tile, batch=3, noise=noise)
    assert (tiled - reference).abs().max() < ONE_LEVEL / 10
    # a seed draws the same map (on the CPU, whatever the model's device): reproducible and tile-independent
    seeded = run_model(model, lr, noise_amp=0.7, tile=tile, generator=torch.Generator().manual_seed(15))
    assert (seeded - reference).abs().max() < ONE_LEVEL / 10
    untiled = run_model(model, lr, noise_amp=0.7, tile=200, generator=torch.Generator().manual_seed(15))
    assert (untiled - reference).abs().max() < ONE_LEVEL / 10
    # per-sample W with the same map
    amps = torch.tensor([0.0, 0.7])
    with torch.no_grad():
        mixed_reference = model(lr, noise_amp=amps, noise=noise)
    mixed = run_model(model, lr, noise_amp=amps, tile=tile, noise=noise)
    assert (mixed - mixed_reference).abs().max() < ONE_LEVEL / 10


class FreshNoisePerTile(torch.nn.Module):
    """The same network, tiled the same way, but each tile's noise is cut from a fresh map: what tiles that
    draw their own noise amount to."""

    capabilities = Capabilities(whole_image_noise=True, placement=True)
    is_video = False

    def __init__(self, model):
        super().__init__()
        self.inner, self.scale, self.border_lr, self.family = model, model.scale, model.border_lr, "fresh"
        self.noise_channels, self.config = model.noise_channels, model.config
        self.tile_padding, self.draw_noise = model.tile_padding, model.draw_noise
        self.draws = 0

    def crop_noise(self, whole, rows, cols):
        self.draws += 1
        fresh = torch.randn(whole.shape, generator=torch.Generator().manual_seed(100 + self.draws))
        return self.inner.crop_noise(fresh, rows, cols)

    def forward(self, lr, noise_amp=0.0, noise=None, placement=None):
        return self.inner(lr, noise_amp, noise, placement=placement)


def test_tiles_drawing_their_own_noise_would_fail_the_test_above():
    """The control: same tiles, same blending, each tile's noise from its own map -> visible differences."""
    model = strong_mgbpv2()
    lr = torch.rand(1, 3, 41, 53, generator=torch.Generator().manual_seed(14))
    noise = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        reference = model(lr, noise_amp=0.7, noise=noise)
    fresh = FreshNoisePerTile(model)
    tiled = run_model(fresh, lr, noise_amp=0.7, tile=2 * model.border_lr + 18, noise=noise)
    assert fresh.draws > 1 and (tiled - reference).abs().max() > 5 * ONE_LEVEL


def test_mgbp3d_clip_tiles_at_w_07():
    model = strong_mgbpv2("tiny-3d")
    clip = torch.rand(1, 3, 3, 30, 34, generator=torch.Generator().manual_seed(17))
    noise = model.draw_noise(clip.shape, generator=torch.Generator().manual_seed(18))
    assert noise.shape == (1, 1, 3, 60, 68)
    with torch.no_grad():
        reference = model(clip, noise_amp=0.7, noise=noise)
    tiled = run_model(model, clip, noise_amp=0.7, tile=2 * model.border_lr + 18, noise=noise)
    assert (tiled - reference).abs().max() < ONE_LEVEL / 10


def test_seeded_upscale_is_reproducible_and_tile_independent():
    model = strong_mgbpv2()
    image = np.random.default_rng(19).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    first = upscale(image, model=model, noise=0.7, seed=5)
    assert np.array_equal(first, upscale(image, model=model, noise=0.7, seed=5))
    tiled = upscale(image, model=model, noise=0.7, seed=5, tile=2 * model.border_lr + 18)
    assert np.abs(tiled.astype(int) - first).max() <= 1
    assert np.abs(upscale(image, model=model, noise=0.7, seed=6).astype(int) - first).max() > 5


def test_models_drawing_their_own_noise_warn_once(model, monkeypatch):
    monkeypatch.setattr(tiling, "_WARNED_INDEPENDENT_NOISE", set())
    lr = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(20))
    with pytest.warns(UserWarning, match="own noise"):
        run_model(model, lr, noise_amp=0.5, tile=24)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_model(model, lr, noise_amp=0.5, tile=24)  # once only
        run_model(model, lr, noise_amp=0.0, tile=24)
    with pytest.raises(ConfigError, match="noise map"):
        run_model(model, lr, noise_amp=0.5, noise=torch.randn(1, 1, 80, 80))


def test_a_noise_map_of_the_wrong_shape_is_a_config_error():
    model = strong_mgbpv2()
    with pytest.raises(ConfigError, match="noise must have shape"):
        run_model(model, torch.rand(1, 3, 20, 20), noise_amp=0.5, noise=torch.randn(1, 1, 40, 40))


# ---- geometric self-ensemble -------------------------------------------------------------------------------------


def numpy_self_ensemble(model, lr: torch.Tensor) -> np.ndarray:
    """The reference, written out with numpy's own rot90/fliplr on HxWxC float64 arrays: the mean over the 8
    symmetries g of g^-1(model(g(lr)))."""
    image = lr[0].permute(1, 2, 0).double().numpy()
    outputs = []
    for turns in range(4):
        for mirror in (False, True):
            x = np.rot90(np.fliplr(image) if mirror else image, turns)
            with torch.no_grad():
                y = model(torch.from_numpy(x.copy()).permute(2, 0, 1)[None].float())
            y = np.rot90(y[0].permute(1, 2, 0).double().numpy(), -turns)
            outputs.append(np.fliplr(y) if mirror else y)
    return np.mean(outputs, axis=0)


def test_self_ensemble_matches_a_numpy_re_computation(model):
    lr = torch.rand(1, 3, 21, 34, generator=torch.Generator().manual_seed(6))  # not square: rotations swap axes
    ensemble = run_model(model, lr, self_ensemble=True)
    assert ensemble.shape == (1, 3, 42, 68)
    reference = numpy_self_ensemble(model, lr)
    assert np.abs(ensemble[0].permute(1, 2, 0).double().numpy() - reference).max() < 1e-5
    # and the ensemble is not the plain output (the tiny model is not symmetric), so the check above has teeth
    assert (ensemble - whole_image(model, lr)).abs().max() > ONE_LEVEL


def test_self_ensemble_is_equivariant_and_exact_for_a_symmetric_method():
    """The ensemble of any model commutes with the 8 symmetries; for MATLAB bicubic (symmetric already) it is
    bicubic itself."""
    model = TinyGenerator(scale=3, seed=2).eval()
    lr = torch.rand(1, 3, 17, 23, generator=torch.Generator().manual_seed(7))
    ensemble = run_model(model, lr, self_ensemble=True)
    for turns, mirror in tiling.dihedral_transforms():
        def g(t, turns=turns, mirror=mirror):
            return torch.rot90(t.flip(-1) if mirror else t, turns, (-2, -1))

        assert (run_model(model, g(lr), self_ensemble=True) - g(ensemble)).abs().max() < 1e-5
    from mgbp.protocol import BicubicUpscaler

    bicubic = BicubicUpscaler(3)
    assert (run_model(bicubic, lr, self_ensemble=True) - imresize(lr, scale=3.0)).abs().max() < 1e-5


def test_self_ensemble_of_a_clip_and_with_tiles(model):
    clip_model = TinyGenerator(scale=2, clip_length=3).eval()
    clip = torch.rand(1, 3, 3, 26, 22, generator=torch.Generator().manual_seed(8))
    per_frame = torch.stack([run_model(clip_model, clip[:, :, t], self_ensemble=True) for t in range(3)], 2)
    whole = run_model(clip_model, clip, self_ensemble=True)
    # the 3D model mixes frames after a per-frame net: its ensemble is the same mix of per-frame ensembles
    padded = torch.nn.functional.pad(per_frame, (0, 0, 0, 0, 1, 1))
    assert (whole - (0.8 * per_frame + 0.1 * (padded[:, :, :-2] + padded[:, :, 2:]))).abs().max() < 1e-5
    lr = torch.rand(1, 3, 45, 38, generator=torch.Generator().manual_seed(9))
    tiled = run_model(model, lr, tile=24, self_ensemble=True)
    assert (tiled - run_model(model, lr, self_ensemble=True)).abs().max() < ONE_LEVEL / 10


def test_self_ensemble_refuses_noise(model, tmp_path, capsys):
    with pytest.raises(ConfigError, match="W = 0"):
        run_model(model, torch.rand(1, 3, 8, 8), noise_amp=0.5, self_ensemble=True)
    from mgbp.cli import main

    source = tmp_path / "in.png"
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(source)
    assert main(["upscale", "-q", str(source), "--self-ensemble", "-W", "0.5", "-o", str(tmp_path / "o.png")]) == 2
    assert "W = 0" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
