"""`mgbp eval`: the published bicubic figures, scores against direct float64 re-computations, the model path
with a tiny stand-in generator, table formats that parse back, and bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mgbp.evaluate as evaluate_module
from mgbp import models
from mgbp.cli import main
from mgbp.errors import ConfigError, ImageReadError
from mgbp.evaluate import evaluate
from mgbp.models.contract import Capabilities
from mgbp.resize import imresize_uint8

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGES = SHARED / "data" / "images"


class NearestUpscaler(torch.nn.Module):
    """A tiny stand-in generator: nearest-neighbour upscale, plus W * N(0, 1) noise."""

    family, is_video, noise_channels, border_lr = "nearest", False, 1, 0
    capabilities = Capabilities(whole_image_noise=False, placement=False)

    def __init__(self, scale: int):
        super().__init__()
        self.scale, self.config = scale, {"scale": scale}
        self.gain = torch.nn.Parameter(torch.ones(()))

    def forward(self, lr, noise_amp=0.0, noise=None):
        out = self.gain * lr.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)
        if float(noise_amp) > 0:
            out = out + float(noise_amp) * torch.randn_like(out)
        return out


@pytest.fixture
def stand_in_models(monkeypatch):
    """Model specs `nearest2.model`, `nearest4.model`, ... load as NearestUpscaler of that scale."""

    def fake_load(spec, device=None):
        return NearestUpscaler(int(Path(spec).stem.removeprefix("nearest")))

    monkeypatch.setattr("mgbp.models.load_model", fake_load)


def smooth_image(height, width, seed, grey=False) -> np.ndarray:
    """A smooth random uint8 image (bicubic is not exact on it, so scores are informative)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 4 + 2, width // 4 + 2, 1 if grey else 3)).astype(np.uint8)
    return imresize_uint8(coarse, size=(height, width))


@pytest.fixture
def dataset(tmp_path) -> Path:
    folder = tmp_path / "Tiny"
    folder.mkdir()
    Image.fromarray(smooth_image(26, 35, 1)).save(folder / "a.png")  # not a multiple of 4: modcrop matters
    Image.fromarray(smooth_image(24, 20, 2)[..., 0]).save(folder / "b_grey.png")
    Image.fromarray(smooth_image(33, 30, 3)).save(folder / "c.png")
    return folder


# ------------------------------------------------------------------------------------------ direct references


def y_channel_255(rgb_uint8: np.ndarray) -> np.ndarray:
    rgb = rgb_uint8.astype(np.float64) / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def direct_psnr_y(output: np.ndarray, reference: np.ndarray, crop: int) -> float:
    a = y_channel_255(output)[crop:-crop, crop:-crop]
    b = y_channel_255(reference)[crop:-crop, crop:-crop]
    return float(10.0 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2)))


def direct_rmse_y(output: np.ndarray, reference: np.ndarray, crop: int) -> float:
    """PIRM-2018 style: Y of MATLAB's uint8 rgb2ycbcr (rounded half away from zero), border ignored."""
    a = np.floor(y_channel_255(output) + 0.5)[crop:-crop, crop:-crop]
    b = np.floor(y_channel_255(reference) + 0.5)[crop:-crop, crop:-crop]
    return float(np.sqrt(np.mean((a - b) ** 2)))


def protocol_by_hand(path: Path, scale: int):
    """HR (modcropped, grey replicated to RGB) and its LR, written out step by step."""
    hr = np.array(Image.open(path).convert("RGB"))
    hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    return hr, imresize_uint8(hr, scale=1.0 / scale)


# ------------------------------------------------------------------------------------------ published figures


@pytest.mark.skipif(not IMAGES.is_dir(), reason=f"../shared is absent: no {IMAGES}")
def test_bicubic_x4_reproduces_published_set5_set14_figures(tmp_path, capsys):
    out = tmp_path / "table.json"
    code = main(["eval", "--data", str(IMAGES / "Set5"), str(IMAGES / "Set14"), "--scale", "4",
                 "--json", str(out), "--quiet"])
    assert code == 0
    summary = {row["dataset"]: row for row in json.loads(out.read_text())["summary"]}
    assert summary["Set5"]["count"] == 5 and summary["Set14"]["count"] == 14
    assert abs(summary["Set5"]["psnr_y"] - 28.43) <= 0.01 and abs(summary["Set5"]["ssim_y"] - 0.811) <= 0.001
    assert abs(summary["Set14"]["psnr_y"] - 26.09) <= 0.01 and abs(summary["Set14"]["ssim_y"] - 0.705) <= 0.001
    printed = capsys.readouterr().out
    assert "Bicubic" in printed and "28.43" in printed and "26.09" in printed


# ------------------------------------------------------------------------------------------ scores


def test_scores_match_direct_float64_computation(dataset, stand_in_models):
    results = evaluate([dataset], [2, 4], ["bicubic", "nearest4.model"], rmse=True, progress=False)
    for row in results.images:
        hr, lr = protocol_by_hand(dataset / f"{row.image}.png", row.scale)
        if row.method == "Bicubic":
            output = imresize_uint8(lr, scale=float(row.scale))
        else:
            output = np.repeat(np.repeat(lr, row.scale, axis=0), row.scale, axis=1)
        assert row.psnr_y == pytest.approx(direct_psnr_y(output, hr, row.scale), abs=1e-6)
        assert row.rmse == pytest.approx(direct_rmse_y(output, hr, row.scale), abs=1e-6)
        assert 0 < row.ssim_y < 1
    # The x4 model has no x2 row; the mean is the mean over the three images.
    assert {(r.scale, r.method) for r in results.summary} == {(2, "Bicubic"), (4, "Bicubic"), (4, "nearest4")}
    x4 = [r.psnr_y for r in results.images if (r.scale, r.method) == (4, "nearest4")]
    assert results.mean("Tiny", 4, "nearest4").psnr_y == pytest.approx(np.mean(x4), abs=1e-12)
    assert results.mean("Tiny", 4, "nearest4").count == 3


def test_consistent_scores_what_upscale_consistent_writes(dataset, stand_in_models):
    """`--consistent`: every output is back-projected onto S_f(Y) = LR before scoring. The scores are those of
    what `mgbp upscale --consistent` writes (`mgbp.inference`), and those outputs satisfy the constraint, checked
    with MATLAB's bicubic downscale, to within the uint8 rounding; the plain nearest-neighbour output does not."""
    from mgbp.inference import upscale_tensor
    from mgbp.protocol import from_uint8, to_uint8
    from mgbp.resize import imresize

    results = evaluate([dataset], [4], ["bicubic", "nearest4.model"], progress=False, consistent=True)
    assert results.settings["consistent"] is True
    assert {r.method for r in results.summary} == {"Bicubic+BP", "nearest4+BP"}
    for row in results.images:
        hr, lr = protocol_by_hand(dataset / f"{row.image}.png", 4)
        if row.method == "nearest4+BP":
            written = to_uint8(upscale_tensor(NearestUpscaler(4), from_uint8(lr), consistent=True))
            assert row.psnr_y == pytest.approx(direct_psnr_y(written, hr, 4), abs=1e-6)
            plain = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)
            for output, bound in ((written, 1.0), (plain, None)):
                down = imresize(from_uint8(output, torch.float64), scale=0.25) * 255.0
                error = float((down - from_uint8(lr, torch.float64) * 255.0).abs().max())
                assert error < bound if bound else error > 5.0


def test_consistent_steps_score_what_upscale_writes_with_that_many_iterations(dataset, stand_in_models):
    from mgbp.inference import upscale_tensor
    from mgbp.protocol import from_uint8, to_uint8

    results = evaluate([dataset], [4], ["nearest4.model"], progress=False, consistent=True, consistent_steps=1)
    assert results.settings["consistent_steps"] == 1 and {r.method for r in results.summary} == {"nearest4+BP1"}
    for row in results.images:
        hr, lr = protocol_by_hand(dataset / f"{row.image}.png", 4)
        written = to_uint8(upscale_tensor(NearestUpscaler(4), from_uint8(lr), consistent=True, consistent_steps=1))
        assert row.psnr_y == pytest.approx(direct_psnr_y(written, hr, 4), abs=1e-6)
        full = to_uint8(upscale_tensor(NearestUpscaler(4), from_uint8(lr), consistent=True))
        assert not np.array_equal(written, full)  # one iteration is not the converged projection


def test_consistent_does_not_apply_to_outputs_made_elsewhere(dataset, tmp_path):
    with pytest.raises(ConfigError, match="--consistent"):
        evaluate([dataset], [4], [], sr_dirs=[tmp_path], consistent=True, progress=False)


def test_saved_generator_file_runs_through_load_model(dataset, tmp_path):
    torch.manual_seed(0)
    model = models.build_model("tiny").eval()
    path = models.save_model(model, tmp_path / "tiny_net.safetensors")
    results = evaluate([dataset], [model.scale], ["bicubic", str(path)], progress=False, device="cpu")
    rows = [r for r in results.images if r.method == "tiny_net"]
    assert len(rows) == 3
    for row in rows:
        hr, lr = protocol_by_hand(dataset / f"{row.image}.png", model.scale)
        with torch.no_grad():
            out = model(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255.0)
        out = np.clip(np.floor(out[0].permute(1, 2, 0).double().numpy() * 255.0 + 0.5), 0, 255).astype(np.uint8)
        assert row.psnr_y == pytest.approx(direct_psnr_y(out, hr, model.scale), abs=1e-6)


def test_grey_image_scores_as_its_rgb_copy(tmp_path):
    grey = smooth_image(24, 28, 5, grey=True)[..., 0]
    for name, image in (("grey", Image.fromarray(grey)), ("rgb", Image.fromarray(grey).convert("RGB"))):
        (tmp_path / name).mkdir()
        image.save(tmp_path / name / "x.png")
    results = evaluate([tmp_path / "grey", tmp_path / "rgb"], [2], progress=False)
    first, second = results.images
    assert (first.psnr_y, first.ssim_y) == (second.psnr_y, second.ssim_y)


def test_noise_is_seeded_per_image_and_independent_of_other_methods(dataset, stand_in_models):
    alone = evaluate([dataset], [4], ["nearest4.model"], noise=0.3, progress=False)
    mixed = evaluate([dataset], [2, 4], ["bicubic", "nearest4.model"], noise=0.3, progress=False)
    clean = evaluate([dataset], [4], ["nearest4.model"], noise=0.0, progress=False)
    pick = [r for r in mixed.images if r.method == "nearest4"]
    assert [(r.image, r.psnr_y) for r in alone.images] == [(r.image, r.psnr_y) for r in pick]
    assert all(a.psnr_y != c.psnr_y for a, c in zip(alone.images, clean.images))


def test_model_at_a_scale_it_does_not_do_is_a_config_error(dataset, stand_in_models):
    with pytest.raises(ConfigError, match="x3"):
        evaluate([dataset], [2, 4], ["nearest3.model"], progress=False)


def test_save_images_writes_the_rounded_outputs(dataset, tmp_path):
    target = tmp_path / "outputs"
    evaluate([dataset], [4], ["bicubic"], save_images=target, progress=False)
    saved = np.asarray(Image.open(target / "Tiny" / "x4" / "Bicubic" / "a.png"))
    _, lr = protocol_by_hand(dataset / "a.png", 4)
    np.testing.assert_array_equal(saved, imresize_uint8(lr, scale=4.0))


def test_paired_lr_folder_gives_the_same_scores_and_checks_sizes(dataset, tmp_path):
    lr_root = tmp_path / "Tiny_LR"
    (lr_root / "X4").mkdir(parents=True)
    for path in sorted(dataset.iterdir()):
        _, lr = protocol_by_hand(path, 4)
        Image.fromarray(lr).save(lr_root / "X4" / f"{path.stem}x4.png")
    made = evaluate([dataset], [4], progress=False)
    paired = evaluate([dataset], [4], lr_dirs=[lr_root], progress=False)
    assert [(r.image, r.psnr_y, r.ssim_y) for r in made.images] == [(r.image, r.psnr_y, r.ssim_y)
                                                                    for r in paired.images]
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(lr_root / "X4" / "cx4.png")  # wrong size
    warnings = []
    checked = evaluate([dataset], [4], lr_dirs=[lr_root], progress=False, warn=warnings.append)
    assert [s["path"] for s in checked.skipped] == [str(dataset / "c.png")]
    reason = checked.skipped[0]["reason"]
    assert reason.startswith(f"{lr_root / 'X4' / 'cx4.png'}: LR 3x3 times 4 does not match HR c.png 28x32")
    assert len(warnings) == 1


# ------------------------------------------------------------------------------------------ table formats


def parse_markdown_table(text: str, first_header: str) -> list[dict]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def test_json_csv_markdown_parse_back_to_the_same_numbers(dataset, tmp_path, stand_in_models,
                                                          capsys):
    Image.fromarray(smooth_image(104, 112, 4)).save(dataset / "d_big.png")  # NIQE at x4: 96x104 after the shave
    files = {kind: tmp_path / f"out.{kind}" for kind in ("json", "csv", "md")}
    code = main(["eval", "--data", str(dataset), "--scale", "2", "4", "--method", "bicubic", "nearest4.model",
                 "--niqe", "--rmse", "--per-image", "--quiet", "--json", str(files["json"]),
                 "--csv", str(files["csv"]), "--markdown", str(files["md"])])
    assert code == 0
    document = json.loads(files["json"].read_text())
    summary, images = document["summary"], document["images"]
    assert len(summary) == 3 and len(images) == 12 and document["image_counts"] == {"Tiny": 4}
    assert document["settings"]["scales"] == [2, 4]

    rows = list(csv.DictReader(files["csv"].open()))
    means = [r for r in rows if r["image"] == ""]
    per_image = [r for r in rows if r["image"] != ""]
    assert len(means) == 3 and len(per_image) == 12
    for parsed, expected in zip(means + per_image, summary + images):
        for key in ("psnr_y", "ssim_y", "niqe", "rmse"):  # CSV keeps full precision; empty for missing
            assert (None if parsed[key] == "" else float(parsed[key])) == expected[key]
        assert (parsed["dataset"], int(parsed["scale"]), parsed["method"]) == (
            expected["dataset"], expected["scale"], expected["method"])

    markdown = files["md"].read_text()
    table = parse_markdown_table(markdown, "Scale")
    assert [(r["Scale"], r["Method"]) for r in table] == [("x2", "Bicubic"), ("x4", "Bicubic"), ("x4", "nearest4")]
    by_key = {(f"x{s['scale']}", s["method"]): s for s in summary}
    for row in table:
        expected = by_key[(row["Scale"], row["Method"])]
        assert row["Tiny PSNR-Y"] == f"{expected['psnr_y']:.2f}"
        assert row["Tiny SSIM-Y"] == f"{expected['ssim_y']:.4f}"
        assert row["Tiny NIQE"] == ("-" if expected["niqe"] is None else f"{expected['niqe']:.4f}")
        assert row["Tiny RMSE"] == f"{expected['rmse']:.2f}"
    assert len(parse_markdown_table(markdown, "Dataset")) == 12
    # Only d_big is large enough for NIQE (96x96 blocks); the others are left out of its mean, not fatal.
    assert [i["image"] for i in images if i["niqe"] is not None] == ["d_big"] * 3
    assert all(s["niqe"] == next(i["niqe"] for i in images if i["image"] == "d_big"
                                 and (i["scale"], i["method"]) == (s["scale"], s["method"])) for s in summary)

    printed = capsys.readouterr().out
    assert "nearest4" in printed and "Tiny PSNR-Y" in printed and "b_grey" in printed


def test_niqe_is_measured_with_the_border_shaved(tmp_path):
    """PIRM-2018's protocol (as for every other score): `scale` border pixels ignored."""
    from mgbp.metrics import niqe

    (tmp_path / "one").mkdir()
    Image.fromarray(smooth_image(104, 112, 6)).save(tmp_path / "one" / "x.png")
    results = evaluate([tmp_path / "one"], [4], niqe=True, progress=False)
    _, lr = protocol_by_hand(tmp_path / "one" / "x.png", 4)
    output = torch.from_numpy(imresize_uint8(lr, scale=4.0)).permute(2, 0, 1)[None].double() / 255
    assert results.images[0].niqe == pytest.approx(float(niqe(output[..., 4:-4, 4:-4])[0]), abs=1e-9)
    assert results.summary[0].niqe == results.images[0].niqe


def test_default_data_is_the_bundled_sample(tmp_path, capsys):
    assert main(["eval", "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    row = json.loads((tmp_path / "s.json").read_text())["images"][0]
    sample = Path(evaluate_module.__file__).parent / "assets" / "sample.png"
    hr, lr = protocol_by_hand(sample, 4)
    assert (row["dataset"], row["image"], row["scale"]) == ("sample", "sample", 4)
    assert row["psnr_y"] == pytest.approx(direct_psnr_y(imresize_uint8(lr, scale=4.0), hr, 4), abs=1e-6)
    assert "Bicubic" in capsys.readouterr().out


def test_exact_output_gives_infinite_psnr_and_strict_json(tmp_path, capsys):
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.full((20, 20, 3), 77, np.uint8)).save(tmp_path / "flat" / "f.png")
    Image.fromarray(np.full((19, 40, 3), 77, np.uint8)).save(tmp_path / "flat" / "small.png")
    assert main(["eval", "--quiet", "--data", str(tmp_path / "flat"), "--json", str(tmp_path / "f.json")]) == 0
    text = (tmp_path / "f.json").read_text()
    assert "Infinity" not in text and json.loads(text)["summary"][0]["psnr_y"] is None
    captured = capsys.readouterr()
    assert "inf" in captured.out
    assert "small.png: 40x19 is too small for the x4 protocol (needs at least 20x20)" in captured.err


def test_without_niqe_and_rmse_there_are_no_such_columns(dataset, tmp_path, capsys):
    assert main(["eval", "--data", str(dataset), "--scale", "4", "--quiet",
                 "--markdown", str(tmp_path / "t.md")]) == 0
    header = parse_markdown_table((tmp_path / "t.md").read_text(), "Scale")[0].keys()
    assert list(header) == ["Scale", "Method", "Tiny PSNR-Y", "Tiny SSIM-Y"]
    assert "NIQE" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ bad inputs


def run_cli(capsys, *arguments) -> tuple[int, str, str]:
    code = main(["eval", "--quiet", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_folder_exits_2_with_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--data", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in err and err.count("\n") == 1


def test_empty_folder_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    code, _, err = run_cli(capsys, "--data", str(tmp_path / "empty"))
    assert code == 2 and "no images" in err and err.count("\n") == 1


def test_broken_image_is_reported_and_skipped_or_fatal_with_strict(dataset, tmp_path, capsys):
    (dataset / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, out, err = run_cli(capsys, "--data", str(dataset), "--json", str(tmp_path / "r.json"))
    assert code == 0 and "broken.png" in err and "skipped" in out
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["image_counts"] == {"Tiny": 3}
    assert [Path(s["path"]).name for s in document["skipped"]] == ["broken.png"]
    code, _, err = run_cli(capsys, "--data", str(dataset), "--strict")
    assert code == 2 and "broken.png" in err and err.count("\n") == 1


def test_folder_of_only_broken_images_exits_2(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_text("not a jpeg")
    code, _, err = run_cli(capsys, "--data", str(tmp_path / "bad"))
    assert code == 2 and "none of its 1 images" in err


@pytest.mark.parametrize("arguments,message", [
    (["--noise", "-1"], "--noise"),
    (["--scale", "0"], "scales"),
    (["--lr", "a", "b"], "--lr needs one folder"),
    (["--tile", "0"], "--tile"),
])
def test_bad_options_exit_2(dataset, capsys, arguments, message):
    code, _, err = run_cli(capsys, "--data", str(dataset), *arguments)
    assert code == 2 and message in err


def test_api_raises_mgbp_errors(tmp_path):
    with pytest.raises(ConfigError):
        evaluate([], [4])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"")
    with pytest.raises(ImageReadError):
        evaluate([tmp_path / "bad"], [4], strict=True, progress=False)
