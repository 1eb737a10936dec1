"""Back-projection consistency: IBP (eqs. 4-5) reaches S_f(Y) = x within tolerance in a bounded number of
iterations, converges to the closed-form back-projection, and the command's table/JSON/CSV."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch

from mgbp import io
from mgbp.backprojection import (
    DEFAULT_STEP,
    DEFAULT_TOL,
    back_project,
    enforce_consistency,
    measure_consistency,
)
from mgbp.errors import ConfigError
from mgbp.resize import imresize


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def checkerboard_lr(h, w):
    """LR image whose error mode is the slowest one of S_f P (the Nyquist checkerboard) plus DC."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (((rows + cols) % 2).to(torch.float64))[None, None].expand(1, 3, h, w).clone()


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("case", ["random", "checkerboard"])
def test_enforce_reaches_tolerance_within_bound(scale, case):
    h, w = 12, 10
    lr = rand(1, 3, h, w, seed=scale) if case == "random" else checkerboard_lr(h, w)
    output = rand(1, 3, h * scale, w * scale, seed=100 + scale) if case == "random" else \
        torch.zeros(1, 3, h * scale, w * scale, dtype=torch.float64)
    enforced, info = enforce_consistency(lr, output, scale)
    # spectrum of S_f P in [0.223, 1] -> contraction 0.643 per step at step 1.6: <= 15 steps from error 1
    assert info.converged and info.iterations <= 16
    residual = (lr - imresize(enforced, scale=1.0 / scale)).abs().max()
    assert residual < DEFAULT_TOL and info.max_error_after == pytest.approx(float(residual))
    # classic step 1 also converges, more slowly (contraction 0.777)
    _, classic = enforce_consistency(lr, output, scale, step=1.0)
    assert classic.converged and info.iterations < classic.iterations <= 30


@pytest.mark.parametrize("scale", [2, 4])
def test_one_step_is_eq_4_and_5_once_by_hand(scale):
    """`back_project(..., steps=1)`: y + step * imresize(x - S_f(y), f), clipped to [0, 1], written out here in
    float64; two steps apply it twice. Steps must be whole numbers >= 1."""
    lr, output = rand(1, 3, 9, 11, seed=7), rand(1, 3, 9 * scale, 11 * scale, seed=8)

    def by_hand(y):
        return (y + DEFAULT_STEP * imresize(lr - imresize(y, scale=1.0 / scale), scale=float(scale))).clamp(0, 1)

    assert torch.allclose(back_project(lr, output, scale, steps=1), by_hand(output), atol=1e-12, rtol=0)
    assert torch.allclose(back_project(lr, output, scale, steps=2), by_hand(by_hand(output)), atol=1e-12, rtol=0)
    single = back_project(lr.float(), output.float(), scale, steps=2)  # float32 images: computed in float32
    assert single.dtype == torch.float32 and torch.allclose(single.double(), by_hand(by_hand(output)), atol=1e-5)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="steps"):
            back_project(lr, output, scale, steps=bad)


def test_steps_without_consistent_are_refused_before_any_work(tmp_path, capsys):
    from mgbp.cli import main

    source = tmp_path / "in.png"
    io.write_image(source, np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8))
    for argv in (["upscale", str(source), "-o", str(tmp_path / "out"), "-m", "bicubic", "--consistent-steps", "1"],
                 ["upscale", str(source), "-o", str(tmp_path / "out"), "--consistent", "--consistent-steps", "0"]):
        assert main(argv) == 2
        assert "--consistent-steps" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def test_clamped_enforcement_survives_saving_as_uint8():
    # a smooth image with saturated areas: bicubic overshoots there, so plain IBP leaves values outside [0, 1]
    lr = (imresize(rand(1, 3, 5, 5, seed=4), size=(20, 20)) * 1.4 - 0.2).clamp(0, 1)
    start = imresize(lr, scale=2.0)
    plain, _ = enforce_consistency(lr, start, 2)
    clamped, info = enforce_consistency(lr, start, 2, clamp=True)
    assert info.converged and info.iterations <= 60
    assert clamped.min() >= 0 and clamped.max() <= 1
    saved_plain = measure_consistency(lr, plain, 2)["max_abs_uint8"]
    saved_clamped = measure_consistency(lr, clamped, 2)["max_abs_uint8"]
    assert saved_clamped < 0.75 < saved_plain


def dense_operator(function, n_in_shape):
    """Matrix of a linear map on (h, w) images, column by column (one-hot images in)."""
    h, w = n_in_shape
    basis = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    return function(basis).reshape(h * w, -1).T


def test_limit_is_closed_form_back_projection():
    scale, h, w = 2, 5, 6
    lr, output = rand(1, 1, h, w, seed=1), rand(1, 1, h * scale, w * scale, seed=2)
    down = dense_operator(lambda z: imresize(z, scale=1.0 / scale), (h * scale, w * scale))
    up = dense_operator(lambda z: imresize(z, scale=float(scale)), (h, w))
    error = lr.flatten() - down @ output.flatten()
    # IBP only adds vectors in range(P): the fixed point is y0 + P (S P)^-1 e0
    expected = output.flatten() + up @ torch.linalg.solve(down @ up, error)
    enforced, info = enforce_consistency(lr, output, scale, tol=1e-13, max_iter=200)
    assert info.converged
    np.testing.assert_allclose(enforced.flatten().numpy(), expected.numpy(), atol=1e-11)


def test_measure_reports_mismatch_and_uint8_rounding():
    lr = rand(2, 3, 8, 8, seed=3)
    bicubic = imresize(lr, scale=4.0)
    before = measure_consistency(lr, bicubic, 4)
    # S_f after bicubic upscaling is not the identity: a clear mismatch, here computed directly
    direct = (lr - imresize(bicubic, scale=0.25)).abs().flatten(1).amax(1) * 255
    np.testing.assert_allclose(before["max_abs"].numpy(), direct.numpy())
    assert before["max_abs"].min() > 1.0
    enforced, _ = enforce_consistency(lr, bicubic, 4)
    after = measure_consistency(lr, enforced, 4)
    assert after["max_abs"].max() < 0.5
    assert after["max_abs_uint8"].max() < before["max_abs"].min()  # rounding the output keeps most of it


def test_bad_inputs():
    with pytest.raises(ConfigError, match="does not match"):
        enforce_consistency(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 9, 8), 2)
    with pytest.raises(ConfigError, match="step"):
        enforce_consistency(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 8, 8), 2, step=2.5)


def run_command(argv):
    from mgbp.commands import consistency

    parser = argparse.ArgumentParser()
    consistency.add_arguments(parser)
    return consistency.run(parser.parse_args(argv))


def test_command_measures_and_enforces_folders(tmp_path, capsys):
    lr_dir, out_dir = tmp_path / "lr", tmp_path / "out"
    lr_dir.mkdir()
    out_dir.mkdir()
    rng = np.random.default_rng(7)
    for name in ("a", "b"):
        lr = rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)
        up = imresize(torch.from_numpy(lr).permute(2, 0, 1)[None].double() / 255, scale=2.0)
        io.write_image(lr_dir / f"{name}.png", lr.astype(np.float32) / 255)
        up = up[0].permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float32)
        io.write_image(out_dir / f"{name}_x2.png", up)
    report, table = tmp_path / "r.json", tmp_path / "r.csv"
    # uniform-noise LR images have no consistent output inside [0, 1] (measured: clamped IBP stalls at
    # ~25-31 grey levels), so this one runs the pure eqs. 4-5
    assert run_command([str(out_dir), "--lr", str(lr_dir), "--enforce", "--no-clamp",
                        "-o", str(tmp_path / "fixed"), "--json", str(report), "--csv", str(table), "-q"]) == 0
    data = json.loads(report.read_text())
    assert data["scale"] == 2 and data["clamp"] is False and [r["name"] for r in data["images"]] == ["a", "b"]
    assert all(r["converged"] and r["max_abs_after"] < 0.5 < r["max_abs"] for r in data["images"])
    assert data["mean"]["max_abs"] == pytest.approx(np.mean([r["max_abs"] for r in data["images"]]))
    rows = list(csv.DictReader(table.open()))
    assert [r["name"] for r in rows] == ["a", "b"] and float(rows[0]["iterations"]) >= 1
    printed = capsys.readouterr().out
    assert printed.startswith("| image | max_abs |") and "| **mean** |" in printed
    assert sorted(p.name for p in (tmp_path / "fixed").iterdir()) == ["a.png", "b.png"]


def test_command_with_ground_truth_reports_psnr_change(tmp_path):
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    rng = np.random.default_rng(8)
    smooth = imresize(torch.from_numpy(rng.random((3, 8, 8))), size=(34, 30)).clamp(0, 1)
    io.write_image(hr_dir / "s.png", smooth.permute(1, 2, 0).numpy().astype(np.float32))
    report = tmp_path / "r.json"
    assert run_command(["--hr", str(hr_dir), "-m", "bicubic", "--scale", "2", "--enforce",
                        "--json", str(report), "-q"]) == 0
    row = json.loads(report.read_text())["images"][0]
    assert row["converged"] and row["max_abs_uint8_after"] < 0.75  # clamped by default: survives saving
    assert row["psnr_y_change"] == pytest.approx(row["psnr_y_after"] - row["psnr_y"])
    assert row["psnr_y_change"] > 0  # back-projection sharpens bicubic towards the smooth ground truth


def test_texture_check_refuses_steps_without_consistent(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "texture_check.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path), "--consistent-steps", "1"],
                         check=False, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].endswith("give --consistent too")
