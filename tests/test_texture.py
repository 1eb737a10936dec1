"""Flat-region texture metric against a direct float64 numpy loop over 7x7 windows."""

from __future__ import annotations

import numpy as np
import torch

from mgbp.metrics.texture import flat_region_texture


def _y255(rgb: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr's Y on 0..255 for RGB in [0, 1] (HxWx3)."""
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2])


def _loop_reference(out: np.ndarray, ref: np.ndarray, threshold: float = 2.0, k: int = 7) -> float:
    yo, yr = _y255(out), _y255(ref)
    values = []
    for i in range(yr.shape[0] - k + 1):
        for j in range(yr.shape[1] - k + 1):
            if yr[i:i + k, j:j + k].std() < threshold:
                values.append(yo[i:i + k, j:j + k].std())
    return float(np.mean(values)) if values else float("nan")


def test_matches_a_window_by_window_loop():
    rng = np.random.default_rng(3)
    ref = np.full((24, 30, 3), 0.5)
    ref[:, 15:] += rng.normal(0, 0.05, (24, 15, 3))  # right half textured, left half flat
    ref = np.clip(ref + rng.normal(0, 0.002, ref.shape), 0, 1)
    out = np.clip(ref + rng.normal(0, 0.01, ref.shape), 0, 1)
    got = flat_region_texture(torch.from_numpy(out).permute(2, 0, 1)[None],
                              torch.from_numpy(ref).permute(2, 0, 1)[None])
    assert abs(float(got[0]) - _loop_reference(out, ref)) < 1e-9


def test_smooth_output_scores_lower_than_a_noisy_one_and_no_flat_pixels_is_nan():
    rng = np.random.default_rng(0)
    ref = torch.full((1, 3, 20, 20), 0.4, dtype=torch.float64)
    noisy = (ref + torch.from_numpy(rng.normal(0, 0.03, (1, 3, 20, 20)))).clamp(0, 1)
    assert float(flat_region_texture(ref, ref)[0]) < 1e-4 < float(flat_region_texture(noisy, ref)[0])
    textured = torch.from_numpy(rng.uniform(0, 1, (1, 3, 20, 20)))
    assert torch.isnan(flat_region_texture(textured, textured))[0]


def _std_maps(a: np.ndarray) -> np.ndarray:
    """Y on the [0, 1] scale of (N,3,H,W) float64, population std of every valid 7x7 window (eps 1e-6 inside)."""
    luma = _y255(np.moveaxis(a, 1, -1)) / 255.0
    windows = np.lib.stride_tricks.sliding_window_view(luma, (7, 7), axis=(1, 2))
    return np.sqrt(windows.var(axis=(-2, -1)) + 1e-6)


def _check_texture_term(term: str, function, y: np.ndarray, x: np.ndarray, expected: float, tolerance: float):
    """The loss function on (y, x) equals `expected`, and eq. 11 with only that term at weight 2 is twice it."""
    from mgbp.losses import PerceptualWeights, perceptual_generator_loss

    y_t, x_t = torch.from_numpy(y).float(), torch.from_numpy(x).float()
    assert abs(float(function(y_t, x_t)) - expected) < tolerance
    weights = PerceptualWeights(gan=0, cycle_w1=0, cx=0, l1_w0=0, cycle_w0=0, **{term: 2.0})
    total, terms = perceptual_generator_loss(y_t, None, x_t, 4, weights)
    assert set(terms) == {term} and abs(float(total) - 2 * expected) < 2 * tolerance


def test_texture_loss_is_the_l1_of_local_std_maps_recomputed_in_float64():
    from mgbp.losses import texture_loss

    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (2, 3, 16, 18))
    y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1)
    expected = np.abs(_std_maps(y) - _std_maps(x)).mean()
    _check_texture_term("texture_w1", texture_loss, y, x, expected, 1e-5)


def test_log_texture_loss_is_the_l1_of_log_std_maps_recomputed_in_float64():
    from mgbp.losses import log_texture_loss

    rng = np.random.default_rng(6)
    x = np.full((1, 3, 16, 18), 0.5)
    x[..., 9:] += rng.normal(0, 0.05, (1, 3, 16, 9))  # flat left, textured right
    y = np.clip(x + rng.normal(0, 0.01, x.shape), 0, 1)
    expected = np.abs(np.log(_std_maps(y) + 1 / 255) - np.log(_std_maps(x) + 1 / 255)).mean()
    _check_texture_term("texture_log_w1", log_texture_loss, y, x, expected, 1e-4)


def test_log_texture_loss_weighs_grain_on_flat_regions_more_than_the_plain_one():
    """The same faint grain (2 grey levels) costs the log term far more over a flat region than over a textured
    one, relative to the plain L1 of standard deviations: the term sees what the flat-region metric sees."""
    from mgbp.losses import log_texture_loss, texture_loss

    rng = np.random.default_rng(7)
    flat = np.full((1, 3, 32, 32), 0.5)
    textured = np.clip(0.5 + rng.normal(0, 0.1, flat.shape), 0, 1)
    grain = rng.normal(0, 2 / 255, flat.shape)

    def ratio(x):
        x_t, y_t = torch.from_numpy(x).float(), torch.from_numpy(np.clip(x + grain, 0, 1)).float()
        return float(log_texture_loss(y_t, x_t)) / float(texture_loss(y_t, x_t))

    assert ratio(flat) > 5 * ratio(textured)


def test_flat_texture_loss_is_the_excess_std_over_flat_windows_recomputed_in_float64():
    """Window by window in float64: where X's 7x7 std of Y (0..1) is below 2/255, max(0, std(Y) - std(X)), averaged
    over those windows only; textured windows of X cost nothing, whatever Y does there."""
    from mgbp.losses import flat_texture_loss

    rng = np.random.default_rng(8)
    x = np.full((2, 3, 18, 20), 0.45)
    x[..., 10:] += rng.normal(0, 0.06, (2, 3, 18, 10))  # flat left, textured right
    x = np.clip(x + rng.normal(0, 0.001, x.shape), 0, 1)
    y = np.clip(x + rng.normal(0, 0.008, x.shape), 0, 1)
    sx, sy = _std_maps(x), _std_maps(y)
    flat = sx < 2 / 255
    assert 0 < flat.mean() < 1  # both kinds of window are present
    expected = np.maximum(sy - sx, 0)[flat].mean()
    _check_texture_term("texture_flat_w1", flat_texture_loss, y, x, expected, 1e-5)


def test_flat_texture_loss_ignores_textured_regions_and_is_zero_without_flat_ones():
    from mgbp.losses import flat_texture_loss

    rng = np.random.default_rng(9)
    x = np.full((1, 3, 20, 24), 0.5)
    x[..., 12:] += rng.normal(0, 0.08, (1, 3, 20, 12))
    y_grain_textured = x.copy()
    y_grain_textured[..., 12:] += rng.normal(0, 0.05, (1, 3, 20, 12))  # more texture only where X has it
    y_grain_flat = x.copy()
    y_grain_flat[..., :6] += rng.normal(0, 0.02, (1, 3, 20, 6))  # grain over the flat part

    def as_t(a):
        return torch.from_numpy(np.clip(a, 0, 1)).float()

    on_flat = float(flat_texture_loss(as_t(y_grain_flat), as_t(x)))
    on_textured = float(flat_texture_loss(as_t(y_grain_textured), as_t(x)))
    assert on_textured < 1e-4 and on_flat > 1e-3
    textured = as_t(rng.uniform(0, 1, (1, 3, 16, 16)))
    assert float(flat_texture_loss(textured * 0.9, textured)) == 0.0


def test_flat_texture_margin_lets_that_much_excess_pass():
    """With a margin m (grey levels), only max(0, std(Y) - std(X) - m/255) counts, recomputed in float64."""
    from mgbp.losses import PerceptualWeights, perceptual_generator_loss

    rng = np.random.default_rng(10)
    x = np.clip(np.full((1, 3, 20, 22), 0.4) + rng.normal(0, 0.001, (1, 3, 20, 22)), 0, 1)
    y = np.clip(x + rng.normal(0, 0.006, x.shape), 0, 1)
    sx, sy = _std_maps(x), _std_maps(y)
    flat = sx < 2 / 255
    weights = PerceptualWeights(gan=0, cycle_w1=0, cx=0, l1_w0=0, cycle_w0=0, texture_flat_w1=1.0,
                                texture_flat_margin=0.5)
    total, _ = perceptual_generator_loss(torch.from_numpy(y).float(), None, torch.from_numpy(x).float(), 4, weights)
    expected = np.maximum(sy - sx - 0.5 / 255, 0)[flat].mean()
    assert expected > 1e-4 and abs(float(total) - expected) < 1e-5
    weights.texture_flat_margin = 255.0
    assert float(perceptual_generator_loss(torch.from_numpy(y).float(), None, torch.from_numpy(x).float(), 4,
                                           weights)[0]) == 0.0


def test_texture_terms_together_are_the_sum_of_each_alone():
    """Eq. 11 with the three texture terms on (they share one pair of local-std maps) gives each term the value
    its own function gives, recomputed in float64 for the flat-region one."""
    from mgbp.losses import (
        PerceptualWeights,
        flat_texture_loss,
        log_texture_loss,
        perceptual_generator_loss,
        texture_loss,
    )

    rng = np.random.default_rng(11)
    x = np.full((1, 3, 18, 20), 0.5)
    x[..., 10:] += rng.normal(0, 0.05, (1, 3, 18, 10))
    x = np.clip(x + rng.normal(0, 0.001, x.shape), 0, 1)
    y = np.clip(x + rng.normal(0, 0.01, x.shape), 0, 1)
    y_t, x_t = torch.from_numpy(y).float(), torch.from_numpy(x).float()
    weights = PerceptualWeights(gan=0, cycle_w1=0, cx=0, l1_w0=0, cycle_w0=0, texture_w1=1.0, texture_log_w1=0.5,
                                texture_flat_w1=2.0, texture_flat_margin=0.3)
    total, terms = perceptual_generator_loss(y_t, None, x_t, 4, weights)
    sx, sy = _std_maps(x), _std_maps(y)
    flat_expected = np.maximum(sy - sx - 0.3 / 255, 0)[sx < 2 / 255].mean()
    assert abs(float(terms["texture_w1"]) - float(texture_loss(y_t, x_t))) < 1e-7
    assert abs(float(terms["texture_log_w1"]) - 0.5 * float(log_texture_loss(y_t, x_t))) < 1e-7
    assert abs(float(terms["texture_flat_w1"]) - 2.0 * flat_expected) < 2.0 * 1e-5  # weight 2 x the 1e-5 above
    assert abs(float(terms["texture_flat_w1"]) - 2.0 * float(flat_texture_loss(y_t, x_t, margin=0.3 / 255))) < 1e-7
    assert abs(float(total) - sum(float(v) for v in terms.values())) < 1e-6
