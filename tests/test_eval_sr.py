"""`mgbp eval --sr`: other tools' outputs scored with the same protocol; the NIQE few-blocks warning; the
optional LPIPS/DISTS through pyiqa (never installed here: its absence, and its presence, are simulated with a
fake module and fake weight files, and the scores are checked against a direct computation)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgbp.cli import main
from mgbp.errors import ConfigError, ImageReadError
from mgbp.evaluate import evaluate
from mgbp.metrics import learned
from mgbp.protocol import find_method_output, niqe_block_count
from mgbp.resize import imresize_uint8, modcrop


def smooth_image(height, width, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 4 + 2, width // 4 + 2, 3)).astype(np.uint8)
    return imresize_uint8(coarse, size=(height, width))


def y_255(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64) / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def direct_psnr_y(output, reference, crop) -> float:
    a, b = y_255(output)[crop:-crop, crop:-crop], y_255(reference)[crop:-crop, crop:-crop]
    return float(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


def protocol_bicubic(hr: np.ndarray, scale: int = 4) -> np.ndarray:
    """What another tool would output: MATLAB bicubic up of the protocol's LR (written out independently)."""
    hr = modcrop(hr, scale)
    return imresize_uint8(imresize_uint8(hr, scale=1 / scale), scale=float(scale))


@pytest.fixture
def hr_folder(tmp_path) -> Path:
    folder = tmp_path / "Tiny"
    folder.mkdir()
    for name, (h, w), seed in (("baby", (42, 37), 1), ("bird", (40, 44), 2), ("head", (36, 36), 3)):
        Image.fromarray(smooth_image(h, w, seed)).save(folder / f"{name}.png")
    return folder


# ------------------------------------------------------------------------------------------------ matching


def test_output_names_of_common_tools_are_matched(tmp_path):
    sr = tmp_path / "sr"
    sr.mkdir()
    for name in ("baby_x4.png", "bird_SR.PNG", "head_out.jpg", "woman.bmp", "zebra_x4_SR.png", "face_SwinIR.png",
                 "lenax4.tif"):
        (sr / name).write_bytes(b"x")
    for stem, expected in (("baby", "baby_x4.png"), ("bird", "bird_SR.PNG"), ("head", "head_out.jpg"),
                           ("woman", "woman.bmp"), ("zebra", "zebra_x4_SR.png"), ("face", "face_SwinIR.png"),
                           ("lena", "lenax4.tif")):
        assert find_method_output(sr, tmp_path / "Set5" / f"{stem}.png", 4).name == expected
    with pytest.raises(ImageReadError, match="no output"):
        find_method_output(sr, tmp_path / "Set5" / "comic.png", 4)
    with pytest.raises(ImageReadError, match="no output"):  # baby_x4 is not baby's x2 output
        find_method_output(sr, tmp_path / "Set5" / "baby.png", 2)


def test_two_candidates_are_ambiguous_and_a_dataset_subfolder_comes_first(tmp_path):
    sr = tmp_path / "sr"
    (sr / "Set5").mkdir(parents=True)
    (sr / "baby.png").write_bytes(b"x")
    (sr / "baby_x4.png").write_bytes(b"x")
    with pytest.raises(ImageReadError, match="2 outputs match"):
        find_method_output(sr, tmp_path / "Set14" / "baby.png", 4)
    (sr / "Set5" / "baby_out.png").write_bytes(b"x")
    assert find_method_output(sr, tmp_path / "Set5" / "baby.png", 4) == sr / "Set5" / "baby_out.png"


# ------------------------------------------------------------------------------------------------ --sr


def test_outputs_of_another_tool_score_as_that_method_would(hr_folder, tmp_path, capsys):
    """Bicubic outputs written as another tool would name them score exactly as --method bicubic does, and
    PSNR-Y agrees with a direct float64 computation."""
    sr = tmp_path / "tool"
    sr.mkdir()
    for suffix, path in zip(("_x4", "_SR", "_out"), sorted(hr_folder.iterdir())):
        hr = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(protocol_bicubic(hr)).save(sr / f"{path.stem}{suffix}.png")
    results = evaluate([hr_folder], [4], ["bicubic"], sr_dirs=[sr], progress=False)
    ours, theirs = results.mean("Tiny", 4, "Bicubic"), results.mean("Tiny", 4, "tool")
    assert theirs.count == 3 and theirs.psnr_y == pytest.approx(ours.psnr_y, abs=1e-12)
    assert theirs.ssim_y == pytest.approx(ours.ssim_y, abs=1e-12)
    baby = np.asarray(Image.open(hr_folder / "baby.png").convert("RGB"))
    row = next(r for r in results.images if r.method == "tool" and r.image == "baby")
    assert row.psnr_y == pytest.approx(direct_psnr_y(protocol_bicubic(baby), modcrop(baby, 4), 4), abs=1e-9)


def test_a_mismatched_output_skips_that_image_only(hr_folder, tmp_path, capsys):
    sr = tmp_path / "tool"
    sr.mkdir()
    for path in sorted(hr_folder.iterdir()):
        hr = np.asarray(Image.open(path).convert("RGB"))
        out = protocol_bicubic(hr)
        if path.stem == "bird":
            out = out[:-4]  # wrong size
        if path.stem == "baby":  # the size of the un-modcropped HR (42x37): modcropped like the HR
            out = np.pad(out, ((0, 2), (0, 1), (0, 0)), mode="edge")
        Image.fromarray(out).save(sr / f"{path.stem}.png")
    assert main(["eval", "--data", str(hr_folder), "--sr", str(sr), "--quiet", "--json",
                 str(tmp_path / "r.json")]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "bird" in line]
    assert len(warnings) == 1 and "does not match" in warnings[0] and "skipped for tool" in warnings[0]
    assert "1 image(s) skipped" in captured.out
    import json

    document = json.loads((tmp_path / "r.json").read_text())
    assert document["summary"][0]["count"] == 2 and document["summary"][0]["method"] == "tool"
    assert {row["image"] for row in document["images"]} == {"baby", "head"}


def test_sr_bad_input_is_one_line_and_writes_nothing(hr_folder, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "--data", str(hr_folder), "--sr", str(tmp_path / "missing"), "--json", str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err
    sr = tmp_path / "tool"
    sr.mkdir()
    assert main(["eval", "--data", str(hr_folder), "--sr", str(sr), "--scale", "2", "4", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "one --scale" in err and err.count("\n") == 1
    assert not out.exists()


def test_save_lr_writes_the_protocol_inputs(hr_folder, tmp_path):
    evaluate([hr_folder], [4], ["bicubic"], save_lr=tmp_path / "lr", progress=False)
    baby = np.asarray(Image.open(hr_folder / "baby.png").convert("RGB"))
    written = np.asarray(Image.open(tmp_path / "lr" / "Tiny" / "x4" / "baby.png"))
    np.testing.assert_array_equal(written, imresize_uint8(modcrop(baby, 4), scale=0.25))


# ------------------------------------------------------------------------------------------------ NIQE


def test_niqe_block_count_follows_the_shaved_size():
    assert niqe_block_count(128, 128, 4) == 1  # 120 -> one 96x96 block
    assert niqe_block_count(200, 296, 4) == 6  # 192 x 288 -> 2 x 3
    assert niqe_block_count(100, 100, 4) == 0


def test_niqe_on_few_blocks_warns_once_per_image(tmp_path, capsys):
    folder = tmp_path / "Small"
    folder.mkdir()
    Image.fromarray(smooth_image(128, 128, 4)).save(folder / "small.png")  # 1 block after the shave
    Image.fromarray(smooth_image(200, 200, 5)).save(folder / "large.png")  # 4 blocks: no warning
    assert main(["eval", "--data", str(folder), "--method", "bicubic", "--niqe", "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "NIQE rests on" in line]
    assert len(lines) == 1 and "small.png" in lines[0] and "1 block(s)" in lines[0]


# ------------------------------------------------------------------------------------------------ pyiqa


def test_without_pyiqa_lpips_and_dists_are_skipped_with_the_reason(hr_folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # `import pyiqa` raises ImportError
    assert learned.unavailable("lpips").startswith("LPIPS skipped: pyiqa is not installed")
    assert main(["eval", "--data", str(hr_folder), "--lpips", "--dists", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "LPIPS skipped: pyiqa is not installed" in captured.err
    assert "DISTS skipped: pyiqa is not installed" in captured.err
    assert "LPIPS" not in captured.out and "DISTS" not in captured.out


@pytest.fixture
def fake_pyiqa(monkeypatch, tmp_path):
    """A stand-in pyiqa whose metrics are the mean absolute RGB difference; records how it was built."""
    calls = []
    module = types.ModuleType("pyiqa")

    def create_metric(name, as_loss=False, device=None, **kwargs):
        calls.append({"name": name, **kwargs})
        return lambda x, y: (x - y).abs().mean(dim=(1, 2, 3))

    module.create_metric = create_metric
    monkeypatch.setitem(sys.modules, "pyiqa", module)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return calls


def test_pyiqa_without_its_weight_files_is_skipped_and_names_them(fake_pyiqa, tmp_path):
    reason = learned.unavailable("dists")
    assert reason.startswith("DISTS skipped: weight files not on disk")
    assert str(tmp_path / "hub" / "pyiqa" / "DISTS_weights-f5e65c96.pth") in reason
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in reason
    with pytest.raises(ConfigError):
        learned.LearnedScorer("dists")
    assert fake_pyiqa == []  # never built, so nothing could download


def test_pyiqa_with_local_weights_scores_from_those_files(fake_pyiqa, hr_folder, tmp_path):
    for path in learned.weight_files("lpips"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
    assert learned.unavailable("lpips") is None
    results = evaluate([hr_folder], [4], ["bicubic"], learned=["lpips", "dists"], progress=False,
                       warn=lambda message: None)
    assert fake_pyiqa == [{"name": "lpips", "pretrained_model_path": str(learned.weight_files("lpips")[0])}]
    assert results.settings["learned_metrics"] == ["lpips"]
    baby = np.asarray(Image.open(hr_folder / "baby.png").convert("RGB"))
    out, ref = protocol_bicubic(baby).astype(np.float64), modcrop(baby, 4).astype(np.float64)
    expected = np.abs(out - ref)[4:-4, 4:-4].mean() / 255.0  # RGB, border shaved
    row = next(r for r in results.images if r.image == "baby")
    assert row.lpips == pytest.approx(expected, rel=1e-5) and row.dists is None
