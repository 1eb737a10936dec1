"""Video metrics (mgbp.video_metrics): temporal flicker against hand-computed values, frame-averaged PSNR against a
direct numpy computation, and the per-frame / 3D methods against nearest-neighbour references."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mgbp.errors import ConfigError
from mgbp.video_metrics import (
    center_crop,
    clip_scores,
    load_clip,
    protocol_clip,
    stack_uint8,
    temporal_flicker,
    upscale_clip_3d,
    upscale_per_frame,
)
from tiny_generators import NearestGenerator

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CITY = SHARED / "data" / "video" / "Vid4-city"


def grey_clip(levels, size=12) -> torch.Tensor:
    """(T,3,size,size) clip of uniform grey frames at the given uint8 levels."""
    frames = [np.full((size, size, 3), level, dtype=np.uint8) for level in levels]
    return stack_uint8(frames)


def random_clip(seed: int, frames=4, size=16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(frames, 3, size, size, generator=generator, dtype=torch.float64)


def test_flicker_is_zero_for_a_perfect_output():
    clip = random_clip(0)
    assert temporal_flicker(clip, clip.clone(), crop=4) == 0.0


def test_flicker_matches_a_hand_computed_three_frame_example():
    # grey g (uint8) has Y = 16 + 219 g / 255 on [0,255]. GT levels 0, 51, 102: temporal steps +51, +51.
    # Output 0, 102, 102: steps +102, 0. |102 - 51| = |0 - 51| = 51 grey levels = 51 * 219 / 255 = 43.8 in Y.
    truth, output = grey_clip([0, 51, 102]), grey_clip([0, 102, 102])
    assert temporal_flicker(output, truth, crop=4) == pytest.approx(43.8, abs=1e-9)


def test_flicker_ignores_a_constant_offset_of_every_output_frame():
    truth, output = random_clip(1), random_clip(2)
    shifted = output + 0.1  # not clamped: the offset is exact
    reference = temporal_flicker(output, truth, crop=2)
    assert reference > 1.0
    assert temporal_flicker(shifted, truth, crop=2) == pytest.approx(reference, rel=1e-12)


def test_flicker_needs_two_frames_of_the_same_shape():
    with pytest.raises(ConfigError):
        temporal_flicker(random_clip(0, frames=1), random_clip(1, frames=1))
    with pytest.raises(ConfigError):
        temporal_flicker(random_clip(0, frames=3), random_clip(1, frames=2))


def test_frame_averaged_psnr_matches_numpy():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 256, size=(3, 20, 24, 3), dtype=np.uint8)
    noisy = np.clip(truth.astype(np.int64) + rng.integers(-20, 21, size=truth.shape), 0, 255).astype(np.uint8)
    scores = clip_scores(stack_uint8(noisy), stack_uint8(truth), crop=4)

    def y(frame):  # MATLAB rgb2ycbcr luma, float64, [0,255]
        f = frame.astype(np.float64)
        return 16.0 + (65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]) / 255.0

    psnrs = [10 * np.log10(255.0**2 / np.mean((y(a)[4:-4, 4:-4] - y(b)[4:-4, 4:-4]) ** 2))
             for a, b in zip(noisy, truth)]
    assert scores["per_frame"]["psnr_y"] == pytest.approx(psnrs, abs=1e-9)
    assert scores["psnr_y"] == pytest.approx(np.mean(psnrs), abs=1e-9)
    assert scores["frames"] == 3 and 0.0 < scores["ssim_y"] < 1.0


class NearestVideo(NearestGenerator):
    """A 3D stand-in: nearest-neighbour on every frame of (N,3,T,h,w), dropping `consumed` frames at each end."""

    is_video = True

    def __init__(self, scale=2, clip_length=3, consumed=0):
        super().__init__(scale)
        self.clip_length, self.frames_consumed = clip_length, consumed

    def forward(self, lr, noise_amp=0.0, noise=None):
        out = super().forward(lr, noise_amp, noise)
        return out[:, :, self.frames_consumed:out.shape[2] - self.frames_consumed]


@pytest.mark.parametrize("consumed", [0, 1])
def test_3d_path_keeps_every_frame_in_place(consumed):
    rng = np.random.default_rng(4)
    lr = [rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8) for _ in range(7)]
    model = NearestVideo(scale=2, clip_length=3 + 2 * consumed, consumed=consumed)
    outputs = upscale_clip_3d(model, lr, stride=2)
    assert len(outputs) == len(lr)
    for frame, out in zip(lr, outputs):
        np.testing.assert_array_equal(out, frame.repeat(2, axis=0).repeat(2, axis=1))


def test_per_frame_bicubic_and_protocol_lr():
    from mgbp.protocol import BicubicUpscaler
    from mgbp.resize import imresize_uint8

    rng = np.random.default_rng(5)
    hr = [rng.integers(0, 256, size=(30, 26, 3), dtype=np.uint8) for _ in range(2)]
    hr_crop, lr = protocol_clip(hr, 4)
    assert hr_crop[0].shape == (28, 24, 3) and lr[0].shape == (7, 6, 3)
    out = upscale_per_frame(BicubicUpscaler(4), lr)
    np.testing.assert_array_equal(out[1], imresize_uint8(lr[1], scale=4.0))


@pytest.mark.skipif(not CITY.is_dir(), reason=f"../shared is absent: no {CITY}")
def test_load_a_few_frames_of_vid4_city():
    frames = center_crop(load_clip(CITY, max_frames=2), 64, 48)
    assert len(frames) == 2 and frames[0].shape == (64, 48, 3) and frames[0].dtype == np.uint8


def test_default_stride_overlaps_windows_by_half():
    """Without a stride, a 5-frame model's windows start every 2 frames (half a window; at most the paper's 5
    for long clips): the output equals an explicit stride of 2 and differs from back-to-back windows."""
    from mgbp.video_windows import default_stride
    from tiny_generators import TinyGenerator

    assert [default_stride(n) for n in (1, 2, 5, 9, 37)] == [1, 1, 2, 4, 5]
    model = TinyGenerator(scale=2, clip_length=5).eval()
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (10, 12, 3), dtype=np.uint8) for _ in range(11)]
    default = stack_uint8(upscale_clip_3d(model, frames))
    assert torch.equal(default, stack_uint8(upscale_clip_3d(model, frames, stride=2)))
    assert not torch.equal(default, stack_uint8(upscale_clip_3d(model, frames, stride=5)))
