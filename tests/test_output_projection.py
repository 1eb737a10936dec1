"""Back-projection steps at the end of MGBPv2 (`mgbp.models.output_projection`): the model with them against
the post-hoc projection of `mgbp.backprojection` (itself checked against a float64 dense solve in
tests/test_consistency.py), W > 0 only, tiles, autocast, weight files, `mgbp convert` and bad configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mgbp import models
from mgbp.backprojection import back_project, measure_consistency
from mgbp.cli import main
from mgbp.errors import ConfigError
from mgbp.models.mgbpv2 import MGBPv2Config
from mgbp.models.output_projection import OutputProjection, project_output, with_output_projection
from mgbp.models.weights import load_model, save_model
from mgbp.tiling import run_model


def tiny(projection=None, seed=0):
    """The `tiny` preset with a residual branch large enough to move the output well off S_f(Y) = x."""
    torch.manual_seed(seed)
    model = models.build_model("tiny", output_projection=projection).eval()
    with torch.no_grad():
        model.synthesis.weight.mul_(30.0)
    return model


def plain_twin(model):
    return with_output_projection(model, None).eval()


def image(seed, h=13, w=11, batch=1):
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("steps", [1, 2])
def test_the_model_ends_with_the_post_hoc_back_projection_of_its_clamped_output(steps):
    model = tiny(OutputProjection(steps=steps))
    lr = image(1)
    with torch.no_grad():
        plain = plain_twin(model)(lr)
        got = model(lr)
    want = back_project(lr, plain.clamp(0, 1), model.scale, steps=steps)  # clips to [0, 1] after each step
    if steps == 1:  # one step: the clip after it is the only difference
        torch.testing.assert_close(got.clamp(0, 1), want, atol=1e-6, rtol=0)
    before = measure_consistency(lr, plain.clamp(0, 1), model.scale)["rmse"]
    after = measure_consistency(lr, got, model.scale)["rmse"]
    assert float(before) > 1.0 and float(after) < 0.65**steps * float(before)


def test_noise_only_leaves_w0_untouched_and_projects_w_above_0_per_sample():
    model = tiny(OutputProjection(steps=1, noise_only=True))
    plain = plain_twin(model)
    lr = image(2, batch=2)
    noise = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(lr), plain(lr))  # W = 0: the network's output as it is
        projected = back_project(lr, plain(lr, 1.0, noise=noise).clamp(0, 1), model.scale, steps=1)
        torch.testing.assert_close(model(lr, 1.0, noise=noise).clamp(0, 1), projected, atol=1e-6, rtol=0)
        mixed = model(lr, torch.tensor([0.0, 1.0]), noise=noise)
        unprojected = plain(lr, torch.tensor([0.0, 1.0]), noise=noise)
    assert torch.equal(mixed[0], unprojected[0])
    torch.testing.assert_close(mixed[1].clamp(0, 1), projected[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("noise_amp", [0.0, 1.0])
def test_tiles_reproduce_the_whole_image_with_the_projection(noise_amp):
    """The step reads 4 LR pixels around each pixel: the tiles' context covers it."""
    model = tiny(OutputProjection(steps=2))
    lr = image(4, 41, 53)
    noise = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = model(lr, noise_amp=noise_amp, noise=noise)
    assert model.border_lr == plain_twin(model).border_lr + 8
    tile = 2 * model.border_lr + 10
    tiled = run_model(model, lr, noise_amp=noise_amp, tile=tile, batch=2, noise=noise)
    assert (tiled - reference).abs().max() < 1e-5


def test_a_w0_call_tiles_with_the_plain_networks_border_when_the_extensions_act_only_on_noise():
    """With the noise mask and a noise-only step (the shipped mgbp-x4), W = 0 needs the plain network's context
    and no more, so its tiles overlap less; a step that always runs keeps its reach at W = 0 too. The smaller
    overlap still reproduces the whole image (tiles of 2 * 11 + 10 LR pixels on 41 x 53)."""
    from mgbp.models.noise_mask import NoiseMask, with_noise_mask
    from mgbp.tiling import default_overlap

    model = with_noise_mask(tiny(OutputProjection(steps=1, noise_only=True)), NoiseMask(1.0, 10.0, 0.5, 1.25))
    plain = with_noise_mask(plain_twin(model), None)
    assert model.border_lr > model.border_lr_without_noise == plain.border_lr
    assert default_overlap(model, 0.0) == default_overlap(plain, 0.0) < default_overlap(model, 1.0)
    assert default_overlap(model, torch.tensor([0.0])) == default_overlap(model, 1.0)  # per-sample W: full border
    always = tiny(OutputProjection(steps=1))
    assert always.border_lr_without_noise == always.border_lr == plain.border_lr + 4
    lr = image(4, 41, 53)
    with torch.no_grad():
        reference = model(lr)
    tiled = run_model(model, lr, tile=2 * model.border_lr_without_noise + 10, batch=2)
    assert (tiled - reference).abs().max() < 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_one_step_reaches_as_far_as_the_tile_border_it_adds_and_no_less(scale):
    """A change of one output pixel (a tile edge's wrong mirror) moves the projected output within
    `reach_lr` LR pixels of it, and beyond `reach_lr - 1` (the border is not wider than it must be)."""
    reach = OutputProjection(steps=1).reach_lr(scale) * scale  # in output pixels
    h = 24
    generator = torch.Generator().manual_seed(scale)
    lr = 0.25 + 0.5 * torch.rand(1, 1, h, h, dtype=torch.float64, generator=generator)
    output = 0.25 + 0.5 * torch.rand(1, 1, h * scale, h * scale, dtype=torch.float64, generator=generator)
    centre = h * scale // 2
    moved = output.clone()
    moved[..., centre, centre] += 0.1
    change = (project_output(lr, moved, scale, 1) - project_output(lr, output, scale, 1)).abs()[0, 0]
    distance = (torch.nonzero(change > 1e-12) - centre).abs().amax()
    assert (reach - scale) < distance <= reach


def test_the_step_stays_in_float32_under_bf16_autocast():
    """x - S_f(Y) is a small difference of large sums: in bf16 it would be mostly rounding."""
    lr, output = image(6), image(7, 26, 22)
    want = project_output(lr, output, 2, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = project_output(lr, output, 2, 1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_training_passes_gradients_through_the_step():
    model = tiny(OutputProjection(steps=1)).train()
    model(image(8)).mean().backward()
    assert model.synthesis.weight.grad is not None and model.synthesis.weight.grad.abs().sum() > 0


def test_the_projection_travels_in_the_weight_file(tmp_path):
    model = tiny(OutputProjection(steps=2, noise_only=True))
    path = tmp_path / "projected.safetensors"
    save_model(model, path)
    loaded = load_model(str(path), device="cpu")
    assert loaded.config.output_projection == OutputProjection(steps=2, noise_only=True)
    lr = image(9)
    noise = model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        assert torch.equal(loaded(lr, 1.0, noise=noise), model(lr, 1.0, noise=noise))


@pytest.mark.parametrize("bad", [{"steps": 0}, {"steps": 1.5}, {"steps": True}, {"steps": "2"},
                                 {"steps": 1, "noise_only": "yes"}, {"steps": 1, "every": 2}, 3])
def test_bad_projections_are_config_errors(bad):
    with pytest.raises(ConfigError, match="output_projection"):
        MGBPv2Config(output_projection=bad)


def test_video_models_refuse_a_projection():
    with pytest.raises(ConfigError, match="output_projection is for image models"):
        dataclasses.replace(models.build_model("tiny-3d").config, output_projection=OutputProjection())


def test_convert_records_the_projection_and_off_removes_it(tmp_path):
    plain = plain_twin(tiny())
    source, projected, removed = (tmp_path / name for name in ("plain.safetensors", "p.safetensors",
                                                                "r.safetensors"))
    save_model(plain, source)
    assert main(["convert", str(source), str(projected), "--output-projection", "2,noise"]) == 0
    model = load_model(str(projected), device="cpu")
    assert model.config.output_projection == OutputProjection(steps=2, noise_only=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
    assert main(["convert", str(projected), str(removed), "--output-projection", "off"]) == 0
    assert load_model(str(removed), device="cpu").config.output_projection is None


@pytest.mark.parametrize("value", ["0", "x", "1,always", "1,noise,2", "-1"])
def test_convert_refuses_a_bad_projection_in_one_line_and_writes_nothing(tmp_path, capsys, value):
    source, target = tmp_path / "plain.safetensors", tmp_path / "p.safetensors"
    save_model(plain_twin(tiny()), source)
    assert main(["convert", str(source), str(target), "--output-projection", value]) == 2
    err = capsys.readouterr().err.strip()
    assert "output" in err and "projection" in err and len(err.splitlines()) == 1
    assert not target.exists()


def test_convert_refuses_a_projection_on_a_video_model_in_one_line(tmp_path, capsys):
    source, target = tmp_path / "clip.safetensors", tmp_path / "p.safetensors"
    save_model(models.build_model("tiny-3d"), source)
    assert main(["convert", str(source), str(target), "--output-projection", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs an image MGBPv2 model" in err and len(err.splitlines()) == 1
    assert not target.exists()
