"""MATLAB-compatible bicubic resize against Octave fixtures and an independent float64 re-computation.

`tests/fixtures/resize_octave.npz` was made by `scripts/make_resize_fixtures.py` with Octave 7.3 + image 2.14.
Octave's `imresize` equals MATLAB's except in one respect, found while making the fixtures: it does not
renormalise the kernel weights of each output pixel to sum to one (MATLAB's `contributions` does). The sums
differ from one only for antialiased shrinking by a non-integer factor, so:
- integer factors and all upscales: compared with Octave directly (identical uint8 output);
- non-integer shrinking: an independent dense-matrix implementation below is checked against Octave with
  normalisation off (proving it reads the algorithm the same way) and our resize against it with
  normalisation on (MATLAB's behaviour).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mgbp.errors import ConfigError
from mgbp.resize import (
    DENSE_MAX_LENGTH,
    downscale_integer,
    imresize,
    imresize_uint8,
    modcrop,
    resize_axis,
    resize_axis_dense,
    shrink_axis_integer,
    symmetric_indices,
    upscale_integer,
)

FIXTURES = np.load(Path(__file__).parent / "fixtures" / "resize_octave.npz")
CASES = sorted(k[len("uint8/"):] for k in FIXTURES.files if k.startswith("uint8/"))


def request(case: str) -> dict:
    r = FIXTURES[f"request/{case}"]
    return {"scale": float(r)} if r.ndim == 0 else {"size": tuple(int(v) for v in r)}


def case_scales(case: str) -> tuple[float, float]:
    x = FIXTURES[f"input/{case.split('/')[0]}"]
    req = request(case)
    if "scale" in req:
        return req["scale"], req["scale"]
    return req["size"][0] / x.shape[0], req["size"][1] / x.shape[1]


def renormalisation_matters(case: str) -> bool:
    """True where MATLAB's weight renormalisation changes results (antialiased non-integer shrink)."""
    return any(s < 1 and abs(1 / s - round(1 / s)) > 1e-9 for s in case_scales(case))


def dense_matrix(n_in: int, n_out: int, scale: float, normalize: bool) -> np.ndarray:
    """Independent reading of MATLAB's imresize.m: one explicit (n_out, n_in) matrix, loops, float64."""
    def keys_cubic(t):
        t = abs(t)
        if t <= 1:
            return 1.5 * t**3 - 2.5 * t**2 + 1
        if t <= 2:
            return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
        return 0.0

    shrink = scale < 1
    width = 4 / scale if shrink else 4
    m = np.zeros((n_out, n_in))
    for i in range(1, n_out + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        first = math.floor(u - width / 2)
        taps = [(j, scale * keys_cubic(scale * (u - j)) if shrink else keys_cubic(u - j))
                for j in range(first, first + math.ceil(width) + 2)]
        total = sum(w for _, w in taps)
        for j, w in taps:
            k = (j - 1) % (2 * n_in)  # symmetric extension: 1..n, n..1, ...
            k = k if k < n_in else 2 * n_in - 1 - k
            m[i - 1, k] += w / total if normalize else w
    return m


def dense_resize(x: np.ndarray, out_hw, scales, normalize: bool) -> np.ndarray:
    rows = dense_matrix(x.shape[0], out_hw[0], scales[0], normalize)
    cols = dense_matrix(x.shape[1], out_hw[1], scales[1], normalize)
    return np.einsum("ab,bc...,dc->ad...", rows, x, cols)


def ours_float(x_uint8: np.ndarray, **req) -> np.ndarray:
    t = torch.from_numpy(x_uint8.astype(np.float64) / 255)
    if t.dim() == 3:
        return imresize(t.permute(2, 0, 1), **req).permute(1, 2, 0).numpy()
    return imresize(t, **req).numpy()


@pytest.mark.parametrize("case", [c for c in CASES if not renormalisation_matters(c)])
def test_uint8_identical_to_octave(case):
    x = FIXTURES[f"input/{case.split('/')[0]}"]
    out = imresize_uint8(x, **request(case))
    ref = FIXTURES[f"uint8/{case}"]
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("case", [c for c in CASES if not renormalisation_matters(c)])
def test_float_matches_octave(case):
    x = FIXTURES[f"input/{case.split('/')[0]}"]
    out = ours_float(x, **request(case))
    np.testing.assert_allclose(out, FIXTURES[f"double/{case}"], atol=2e-7)


@pytest.mark.parametrize("case", [c for c in CASES if renormalisation_matters(c)])
def test_non_integer_shrink_is_matlab(case):
    x = FIXTURES[f"input/{case.split('/')[0]}"]
    ref_octave = FIXTURES[f"double/{case}"].astype(np.float64)
    scales = case_scales(case)
    xf = x.astype(np.float64) / 255
    # The independent implementation reproduces Octave when it, too, skips the renormalisation ...
    np.testing.assert_allclose(dense_resize(xf, ref_octave.shape[:2], scales, False), ref_octave, atol=2e-7)
    # ... and ours equals it with MATLAB's renormalisation.
    out = ours_float(x, **request(case))
    np.testing.assert_allclose(out, dense_resize(xf, ref_octave.shape[:2], scales, True), atol=1e-12)
    # On uint8: MATLAB's rounding of the renormalised float result.
    expected = np.clip(np.floor(dense_resize(x.astype(np.float64), ref_octave.shape[:2], scales, True) + 0.5),
                       0, 255)
    np.testing.assert_array_equal(imresize_uint8(x, **request(case)), expected.astype(np.uint8))


def test_overall_agreement_with_octave():
    """The issue's bar over all integer-factor fixtures: >= 99.9% identical, never off by more than 1."""
    same = total = worst = 0
    for case in CASES:
        if renormalisation_matters(case):
            continue
        x = FIXTURES[f"input/{case.split('/')[0]}"]
        d = np.abs(imresize_uint8(x, **request(case)).astype(int) - FIXTURES[f"uint8/{case}"].astype(int))
        same, total, worst = same + (d == 0).sum(), total + d.size, max(worst, d.max())
    assert same / total >= 0.999 and worst <= 1


def test_output_size_and_axis_order():
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    assert imresize(x, scale=1 / 3).shape == (2, 3, 2, 3)  # ceil(5/3), ceil(7/3)
    assert imresize(x, scale=(2, 0.5)).shape == (2, 3, 10, 4)
    clip = torch.rand(1, 3, 4, 6, 6, dtype=torch.float64)  # (N,C,T,H,W): frames resized independently
    out = imresize(clip, scale=2)
    assert out.shape == (1, 3, 4, 12, 12)
    torch.testing.assert_close(out[:, :, 2], imresize(clip[:, :, 2], scale=2))


def test_float32_close_to_float64():
    x = torch.rand(1, 3, 19, 21, dtype=torch.float64)
    ref = imresize(x, scale=0.25)
    torch.testing.assert_close(imresize(x.float(), scale=0.25).double(), ref, atol=1e-6, rtol=0)


def test_gradcheck_down_and_up():
    x = torch.rand(1, 1, 9, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, scale=0.5), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, scale=3), (x,))


def test_modcrop():
    assert modcrop(np.zeros((10, 13, 3)), 4).shape == (8, 12, 3)


@pytest.mark.parametrize("kwargs", [{}, {"scale": 2, "size": 3}, {"scale": 0}, {"scale": -1},
                                    {"scale": float("inf")}, {"size": (0, 3)}])
def test_bad_requests(kwargs):
    with pytest.raises(ConfigError):
        imresize(torch.rand(1, 1, 4, 4), **kwargs)


def test_rejects_integer_tensor():
    with pytest.raises(ConfigError):
        imresize(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), scale=2)


# ---- integer upscales: the polyphase convolution --------------------------------------------------------


def gather_upscale(x: torch.Tensor, fy: int, fx: int) -> torch.Tensor:
    """The per-axis table-and-gather path (the one non-integer scales take), rows first."""
    if fy > 1:
        x = resize_axis(x, -2, x.shape[-2] * fy, float(fy))
    if fx > 1:
        x = resize_axis(x, -1, x.shape[-1] * fx, float(fx))
    return x


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("hw", [(1, 1), (1, 4), (2, 3), (3, 2), (7, 9)])
def test_integer_upscale_equals_independent_dense_resize(factor, hw):
    """Tiny sizes too: with 1 or 2 pixels the symmetric mirror folds back over the whole axis."""
    x = torch.rand(2, 3, *hw, dtype=torch.float64, generator=torch.Generator().manual_seed(factor))
    want = np.stack([[dense_resize(plane.numpy(), (hw[0] * factor, hw[1] * factor), (factor, factor), True)
                      for plane in sample] for sample in x])
    np.testing.assert_allclose(upscale_integer(x, factor).numpy(), want, atol=1e-12, rtol=0)
    np.testing.assert_allclose(imresize(x, scale=factor).numpy(), want, atol=1e-12, rtol=0)
    np.testing.assert_allclose(imresize(x.float(), scale=factor).numpy(), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("factors", [(2, 3), (3, 2), (1, 4), (4, 1)])
def test_integer_upscale_per_axis_factors_match_gather_path(factors):
    x = torch.rand(1, 2, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    want = gather_upscale(x, *factors)
    torch.testing.assert_close(imresize(x, scale=factors), want, atol=1e-12, rtol=0)
    torch.testing.assert_close(imresize(x.float(), scale=factors).double(), want, atol=1e-6, rtol=0)


def test_integer_upscale_of_clips_size_requests_and_low_precision():
    clip = torch.rand(1, 3, 4, 5, 6, generator=torch.Generator().manual_seed(5))  # (N, C, T, H, W)
    out = upscale_integer(clip, 4)
    assert out.shape == (1, 3, 4, 20, 24)
    torch.testing.assert_close(out, gather_upscale(clip, 4, 4), atol=1e-6, rtol=0)
    # a size request that is an integer factor takes the same path
    torch.testing.assert_close(imresize(clip, size=(15, 18)), gather_upscale(clip, 3, 3), atol=1e-6, rtol=0)
    for dtype, tol in ((torch.bfloat16, 2e-2), (torch.float16, 2e-3)):
        low = upscale_integer(clip.to(dtype), 2)
        assert low.dtype == dtype
        torch.testing.assert_close(low.float(), gather_upscale(clip, 2, 2), atol=tol, rtol=0)


def test_integer_upscale_gradcheck():
    x = torch.rand(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: upscale_integer(t, (2, 3)), (x,))


def test_integer_upscale_exports_with_dynamic_height_and_width():
    """One torch.export trace serves every size: nothing in the path depends on H or W."""

    class Upscale(torch.nn.Module):
        def forward(self, x):
            return imresize(x, scale=4)

    h, w = torch.export.Dim("h", min=2, max=1024), torch.export.Dim("w", min=2, max=1024)
    example = torch.rand(1, 3, 6, 8)
    program = torch.export.export(Upscale(), (example,), dynamic_shapes={"x": {2: h, 3: w}})
    for shape in [(1, 3, 6, 8), (1, 3, 2, 13), (1, 3, 17, 5)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        torch.testing.assert_close(program.module()(x), gather_upscale(x, 4, 4), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("n_in", "n_out"), [(600, 150), (600, 257), (37, 91)])
def test_dense_and_gather_paths_equal_the_independent_matrix(n_in, n_out):
    """Axes up to DENSE_MAX_LENGTH are resized by a matrix product, longer ones by gathers: both are MATLAB's."""
    x = torch.rand(2, n_in, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(n_in + n_out))
    scale = n_out / n_in
    want = np.einsum("oi,bic->boc", dense_matrix(n_in, n_out, scale, True), x.numpy())
    np.testing.assert_allclose(resize_axis(x, 1, n_out, scale).numpy(), want, atol=1e-12, rtol=0)
    np.testing.assert_allclose(resize_axis_dense(x, 1, n_out, scale).numpy(), want, atol=1e-12, rtol=0)
    long_axis = torch.rand(1, 1, 3, 600, dtype=torch.float64)  # over DENSE_MAX_LENGTH: the gather path
    assert 600 > DENSE_MAX_LENGTH
    np.testing.assert_allclose(imresize(long_axis, size=(3, 150)).numpy()[0, 0],
                               long_axis.numpy()[0, 0] @ dense_matrix(600, 150, 0.25, True).T, atol=1e-12, rtol=0)


@pytest.mark.parametrize("f", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("n_lr", [1, 2, 7])
@pytest.mark.parametrize("dim", [1, -1])
def test_strided_tap_shrink_equals_the_independent_matrix(f, n_lr, dim):
    """`shrink_axis_integer` (long axes in eager mode) is MATLAB's 1/f, also where the mirror pad is longer than
    the axis (1 LR pixel) and along the last axis (taken through a transpose)."""
    x = torch.rand(2, f * n_lr, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(f * 31 + n_lr))
    x = x if dim == 1 else x.transpose(1, 2).contiguous()
    matrix = dense_matrix(f * n_lr, n_lr, 1.0 / f, True)
    want = np.einsum("oi,bic->boc", matrix, x.numpy()) if dim == 1 else x.numpy() @ matrix.T
    np.testing.assert_allclose(shrink_axis_integer(x, dim, f).numpy(), want, atol=1e-12, rtol=0)


def test_long_axes_shrunk_by_whole_factors_take_the_strided_taps_and_stay_matlab_exact():
    """imresize routes 1/f of axes longer than DENSE_MAX_LENGTH (multiples of f) to `shrink_axis_integer`: the
    result is the independent matrices' on both axes, and gradients flow (the training losses' S_k)."""
    h, w = 4 * 130, 2 * DENSE_MAX_LENGTH + 4
    x = torch.rand(1, 2, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(5), requires_grad=True)
    got = imresize(x, scale=0.25)
    want = np.einsum("oi,ncij,pj->ncop", dense_matrix(h, h // 4, 0.25, True), x.detach().numpy(),
                     dense_matrix(w, w // 4, 0.25, True))
    np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-12, rtol=0)
    small = torch.rand(1, 1, 8, 2 * DENSE_MAX_LENGTH, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, scale=0.5), (small,))


def test_reused_phase_kernel_is_the_fresh_one_and_survives_inference_mode():
    """The kernel kept per (device, dtype) is bit-identical to one built from the float64 weights; one first made
    under inference_mode (as `mgbp upscale` runs) must still work in a later training step's backward pass."""
    from mgbp.resize import _cached_phase_kernel, phase_kernel, reusable_phase_kernel, upscale_integer

    _cached_phase_kernel.cache_clear()
    with torch.inference_mode():
        upscale_integer(torch.rand(1, 3, 5, 6), 3)
    like = torch.rand(1, 3, 5, 6, dtype=torch.float32)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        reused = reusable_phase_kernel(3, 3, like.to(dtype))
        assert reused.dtype == dtype and torch.equal(reused, phase_kernel(3, 3, dtype=dtype))
    assert reusable_phase_kernel(3, 3, like) is reusable_phase_kernel(3, 3, like)  # made once
    x = like.clone().requires_grad_(True)
    upscale_integer(x, 3).square().sum().backward()  # raised "Inference tensors cannot be saved" if cached as one
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ---- integer downscales: the strided convolution --------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 8, 16])
@pytest.mark.parametrize("lr_hw", [(1, 1), (1, 3), (2, 5), (7, 4)])
def test_integer_downscale_equals_independent_dense_resize(factor, lr_hw):
    """MATLAB's antialiased 1/f shrink, also where the pad (up to 2f - 1 pixels) is longer than the axis and the
    mirror folds back more than once."""
    hw = (lr_hw[0] * factor, lr_hw[1] * factor)
    x = torch.rand(2, 3, *hw, dtype=torch.float64, generator=torch.Generator().manual_seed(factor))
    want = np.stack([[dense_resize(plane.numpy(), lr_hw, (1 / factor, 1 / factor), True) for plane in sample]
                     for sample in x])
    np.testing.assert_allclose(downscale_integer(x, factor).numpy(), want, atol=1e-12, rtol=0)
    np.testing.assert_allclose(downscale_integer(x.float(), factor).numpy(), want, atol=1e-6, rtol=0)


def test_symmetric_indices_repeat_the_mirror_with_period_twice_the_length():
    """Written out by hand: positions -4 .. 6 of the axis (x0, x1, x2), MATLAB's mirror with the edge repeated."""
    assert symmetric_indices(3, 4, 4).tolist() == [2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]
    assert symmetric_indices(1, 2, 3).tolist() == [0] * 6


def test_integer_downscale_gradcheck_and_export_with_dynamic_height_and_width():
    x = torch.rand(1, 2, 8, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: downscale_integer(t, 4), (x,))

    class Downscale(torch.nn.Module):
        def forward(self, x):
            return downscale_integer(x, 4)

    h, w = torch.export.Dim("h", min=2, max=256), torch.export.Dim("w", min=2, max=256)
    program = torch.export.export(Downscale(), (torch.rand(1, 3, 24, 32),),
                                  dynamic_shapes={"x": {2: 4 * h, 3: 4 * w}})
    for shape in [(1, 3, 24, 32), (1, 3, 8, 52), (1, 3, 68, 20)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        torch.testing.assert_close(program.module()(x), imresize(x, scale=0.25), atol=1e-6, rtol=0)
