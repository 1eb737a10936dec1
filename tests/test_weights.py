"""Tests of the weight files (safetensors + JSON config metadata), load_model, mgbp convert and mgbp models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mgbp.cli import main
from mgbp.errors import WeightFileError
from mgbp.models import PRESETS, SHIPPED, MGBPv2, build_model, default_model_for_scale, load_model, save_model
from mgbp.models import weights as weights_module
from mgbp.models.mgbpv2 import count_parameters

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PIRM = SHARED / "reference" / "pirm2018"


def make(name="tiny", **overrides) -> MGBPv2:
    torch.manual_seed(0)
    return build_model(name, **overrides).eval()


def sample_input(model, n=2):
    torch.manual_seed(3)
    return torch.rand((n, 3, 3, 5, 6) if model.is_video else (n, 3, 5, 6))


# ---- round trips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,overrides", [("tiny", {}), ("tiny", {"padding": "same"}), ("tiny-3d", {})])
def test_round_trip_rebuilds_from_the_file_alone(tmp_path, name, overrides):
    model = make(name, **overrides)
    path = save_model(
        model, tmp_path / "m.safetensors", {"training": {"steps": 5}, "metrics": {"psnr": 27.9}}
    )
    loaded = load_model(path)
    assert type(loaded) is MGBPv2 and loaded.config == model.config and not loaded.training
    assert (loaded.family, loaded.scale, loaded.is_video) == (model.family, model.scale, model.is_video)
    assert loaded.metadata["metrics"] == {"psnr": 27.9} and loaded.metadata["training"] == {"steps": 5}
    assert loaded.preset == name
    lr = sample_input(model)
    noise_shape = (lr.shape[0], 1, *lr.shape[2:-2], lr.shape[-2] * model.scale, lr.shape[-1] * model.scale)
    noise = torch.randn(noise_shape)
    with torch.no_grad():
        assert torch.equal(loaded(lr), model(lr))
        assert torch.equal(loaded(lr, noise_amp=0.8, noise=noise), model(lr, noise_amp=0.8, noise=noise))


def test_metadata_is_plain_json_strings(tmp_path):
    path = save_model(make(), tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "mgbp" and metadata["family"] == "mgbpv2"
    assert json.loads(metadata["config"])["channels"] == [12, 8, 4]
    assert metadata["scale"] == "4" and metadata["noise_channels"] == "1"


def test_fp16_files_load_as_float32_unless_asked(tmp_path):
    model = make()
    path = save_model(model, tmp_path / "half.safetensors", dtype=torch.float16)
    assert all(t.dtype == torch.float16 for t in load_file(path).values())
    loaded = load_model(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    rounded = make().half().float()
    lr = sample_input(model)
    with torch.no_grad():
        assert torch.equal(loaded(lr), rounded(lr))
    assert all(p.dtype == torch.float64 for p in load_model(path, dtype=torch.float64).parameters())


def test_save_is_atomic_and_keeps_no_temp_files(tmp_path):
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"old")
    save_model(make(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    with pytest.raises(WeightFileError, match="reserved"):
        save_model(make(), tmp_path / "x.safetensors", {"config": "mine"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


# ---- bad files -----------------------------------------------------------------------------------------------


def one_line_error(path) -> str:
    with pytest.raises(WeightFileError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_and_unknown_name(tmp_path):
    assert "no weight file" in one_line_error(tmp_path / "absent.safetensors")
    assert "no shipped weights" in one_line_error("mgbp-x99")


def test_truncated_and_garbage_files(tmp_path):
    good = save_model(make(), tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "not a readable safetensors file" in one_line_error(truncated)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"\x00not weights" * 50)
    assert "neither safetensors nor a PyTorch state dict" in one_line_error(garbage)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    one_line_error(empty)


def _rewrite(path: Path, out: Path, tensors=None, **metadata_changes) -> Path:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    tensors = load_file(path) if tensors is None else tensors
    metadata.update(metadata_changes)
    save_file(tensors, out, metadata=metadata)
    return out


def test_mismatched_files_name_what_did_not_match(tmp_path):
    good = save_model(make(), tmp_path / "good.safetensors")
    config = {**json.loads(_metadata(good)["config"]), "channels": [12, 8, 5]}
    message = one_line_error(_rewrite(good, tmp_path / "shape.safetensors", config=json.dumps(config)))
    assert "shape of" in message and "in the file" in message

    tensors = load_file(good)
    tensors.pop("bp.L3.s2.up.weight")
    tensors["extra.weight"] = torch.zeros(1)
    message = one_line_error(_rewrite(good, tmp_path / "keys.safetensors", tensors=tensors))
    assert "missing bp.L3.s2.up.weight" in message and "unexpected extra.weight" in message

    assert "unknown model family" in one_line_error(_rewrite(good, tmp_path / "f.safetensors", family="gan"))
    assert "not JSON" in one_line_error(_rewrite(good, tmp_path / "j.safetensors", config="{oops"))
    bad_config = json.dumps({**json.loads(_metadata(good)["config"]), "padding": "full"})
    assert "valid mgbpv2" in one_line_error(_rewrite(good, tmp_path / "c.safetensors", config=bad_config))

    bare = tmp_path / "bare.safetensors"
    save_file({"weight": torch.zeros(2)}, bare)
    assert "match no known network" in one_line_error(bare)


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


class _RunsCode:
    """A pickle that would create a folder when unpickled without weights_only."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickled_code_is_never_executed(tmp_path):
    marker = tmp_path / "was-executed"
    evil = tmp_path / "evil.model"
    torch.save({"weight": _RunsCode(str(marker))}, evil)
    message = one_line_error(evil)
    assert "without running pickled code" in message
    assert not marker.exists()
    listy = tmp_path / "list.model"
    torch.save([torch.zeros(1)], listy)
    assert "not a state dict" in one_line_error(listy)


# ---- shipped registry ----------------------------------------------------------------------------------------


def test_a_scale_without_shipped_weights_says_so_and_lists_what_exists():
    with pytest.raises(WeightFileError, match="no shipped weights for scale x7") as info:
        default_model_for_scale(7)
    for name in SHIPPED:
        assert name in str(info.value)


def test_a_shipped_entry_is_one_line(tmp_path, monkeypatch):
    path = save_model(make(), tmp_path / "mgbp-x4.safetensors")
    digest = weights_module._sha256(path)
    monkeypatch.setattr(weights_module, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(
        SHIPPED, "mgbp-x4", weights_module.Shipped("mgbp-x4.safetensors", scale=4, sha256=digest)
    )
    assert default_model_for_scale(4) == "mgbp-x4"
    assert load_model("mgbp-x4").config == make().config
    monkeypatch.setitem(
        SHIPPED, "mgbp-x4", weights_module.Shipped("mgbp-x4.safetensors", scale=4, sha256="0" * 64)
    )
    assert "sha256 does not match" in one_line_error("mgbp-x4")


# ---- the authors' MGBPv1 files and mgbp convert ------------------------------------------------------------------


def _pirm_file() -> Path:
    path = PIRM / "BOE-R1.model"
    if not path.is_file():
        pytest.skip(f"../shared is absent: the authors' PIRM weights are not here ({path})")
    return path


def test_authors_model_files_are_recognised_by_their_keys():
    model = load_model(_pirm_file())
    assert model.family == "mgbpv1" and model.scale == 4 and not model.is_video
    assert count_parameters(model) == 281_084  # Table V / reference README


def test_convert_writes_our_format_and_outputs_are_identical(tmp_path, capsys):
    source = _pirm_file()
    target = tmp_path / "boe-r1.safetensors"
    assert main(["convert", str(source), str(target)]) == 0
    assert "281,084 parameters" in capsys.readouterr().out
    direct, converted = load_model(source), load_model(target)
    assert converted.family == "mgbpv1" and converted.metadata["converted_from"] == "BOE-R1.model"
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        assert torch.equal(direct(lr), converted(lr))
    assert main(["convert", str(source), str(target)]) == 2  # refuses to overwrite without --force
    assert "exists" in capsys.readouterr().err


def test_convert_reports_bad_input_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"nope")
    assert main(["convert", str(bad), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mgbp convert: error:") and "\n" not in err
    assert not (tmp_path / "out.safetensors").exists()


# ---- mgbp models ------------------------------------------------------------------------------------------


def test_models_command_lists_every_preset(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert name in out
    for name in SHIPPED:
        assert name in out


def test_models_command_json_counts(capsys):
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in listing["presets"]}
    assert set(by_name) == set(PRESETS)
    assert by_name["tiny"]["parameters"] == count_parameters(build_model("tiny"))
    assert set(listing["shipped"]) == set(SHIPPED)


def test_clip_length_round_trip_and_files_without_it(tmp_path):
    model = make("tiny-3d", frames=9)
    loaded = load_model(save_model(model, tmp_path / "clip9.safetensors"))
    assert loaded.config.frames == 9 and loaded.clip_length == 9
    # a file written before `frames` existed: its config has no such key -> the default clip length
    from safetensors import safe_open

    tensors = load_file(str(tmp_path / "clip9.safetensors"))
    with safe_open(str(tmp_path / "clip9.safetensors"), framework="pt") as handle:
        metadata = dict(handle.metadata())
    config = json.loads(metadata["config"])
    del config["frames"]
    metadata["config"] = json.dumps(config)
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=metadata)
    old = load_model(tmp_path / "old.safetensors")
    assert old.config.frames == 5 and old.clip_length == 5
    image = make("tiny")
    assert load_model(save_model(image, tmp_path / "image.safetensors")).config.frames is None


def _perturbed_tiny_file(path: Path, seed: int):
    """The tiny preset with every weight moved off its initialisation (a nonzero synthesis, so that a check of
    equal outputs is not the bicubic residual alone), eval mode, and saved to `path`."""
    torch.manual_seed(seed)
    model = build_model("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model(model, path)
    return model, path


def test_to_3d_gives_the_image_models_output_on_every_frame(tmp_path):
    """`mgbp convert --to-3d`: the inflated MGBP-3D equals the image model frame by frame (W=0 and W=0.6
    with the same noise per frame), computed independently as a loop of 2D forward passes."""
    image_model, source = _perturbed_tiny_file(tmp_path / "image.safetensors", seed=3)
    target = tmp_path / "video.safetensors"
    assert main(["convert", str(source), str(target), "--to-3d", "--frames", "7"]) == 0
    video_model = load_model(target).eval()
    assert video_model.is_video and video_model.clip_length == 7 and video_model.metadata["inflated_to_3d"]
    clip = torch.rand(2, 3, 5, 10, 9)
    noise = torch.randn(2, 1, 5, 40, 36)
    with torch.no_grad():
        for amp in (0.0, 0.6):
            together = video_model(clip, noise_amp=amp, noise=noise)
            for t in range(5):
                alone = image_model(clip[:, :, t], noise_amp=amp, noise=noise[:, :, t])
                assert torch.allclose(together[:, :, t], alone, atol=1e-5), (amp, t)
    assert main(["convert", "mgbp-x2", str(tmp_path / "x.safetensors"), "--frames", "3"]) == 2  # no --to-3d


def test_to_3d_drops_the_image_only_extensions(tmp_path):
    """A model with a noise mask and an output projection (as the shipped mgbp-x4) still inflates: the video
    network equals the image network without them, frame by frame, at W = 0.6 with the same noise."""
    from mgbp.models.noise_mask import NoiseMask, with_noise_mask
    from mgbp.models.output_projection import OutputProjection, with_output_projection

    plain, _source = _perturbed_tiny_file(tmp_path / "plain.safetensors", seed=4)
    extended = with_output_projection(with_noise_mask(plain, NoiseMask(flat=2.0)), OutputProjection(1, True))
    source, target = tmp_path / "extended.safetensors", tmp_path / "video.safetensors"
    save_model(extended, source)
    assert main(["convert", str(source), str(target), "--to-3d"]) == 0
    video_model = load_model(target).eval()
    assert video_model.config.noise_mask is None and video_model.config.output_projection is None
    clip, noise = torch.rand(1, 3, 3, 8, 7), torch.randn(1, 1, 3, 32, 28)
    with torch.no_grad():
        together = video_model(clip, noise_amp=0.6, noise=noise)
        for t in range(3):
            alone = plain.eval()(clip[:, :, t], noise_amp=0.6, noise=noise[:, :, t])
            assert torch.allclose(together[:, :, t], alone, atol=1e-5), t


def test_to_3d_refuses_a_model_it_cannot_inflate(tmp_path, capsys):
    for source in (_pirm_file().as_posix(), "mgbp-x4-video"):
        assert main(["convert", source, str(tmp_path / "v.safetensors"), "--to-3d"]) == 2
        assert "needs an MGBPv2 image model" in capsys.readouterr().err
    assert main(["convert", "mgbp-x4", str(tmp_path / "v.safetensors"), "--to-3d", "--frames", "0"]) == 2
    assert "--frames must be positive" in capsys.readouterr().err
    assert not (tmp_path / "v.safetensors").exists()


def test_deepened_model_gives_the_trained_models_output(tmp_path):
    """`mgbp convert --mu 3`: the network with three back-projection steps per level equals the trained one with
    two (W=0 and W=0.7, same noise), computed by the trained network itself; its new call sites then learn."""
    trained, source = _perturbed_tiny_file(tmp_path / "mu2.safetensors", seed=5)
    target = tmp_path / "mu3.safetensors"
    assert main(["convert", str(source), str(target), "--mu", "3"]) == 0
    deeper = load_model(target).eval()
    assert deeper.config.mu == 3 and deeper.metadata["deepened_from_mu"] == trained.config.mu
    assert count_parameters(deeper) > count_parameters(trained)
    lr, noise = torch.rand(2, 3, 11, 9), torch.randn(2, 1, 44, 36)
    with torch.no_grad():
        for amp in (0.0, 0.7):
            assert torch.allclose(deeper(lr, noise_amp=amp, noise=noise), trained(lr, noise_amp=amp, noise=noise),
                                  atol=1e-5), amp
    new_upscales = [p for name, p in deeper.named_parameters()
                    if ".up." in name and name not in dict(trained.named_parameters())]
    assert new_upscales and all(float(p.detach().abs().max()) == 0.0 for p in new_upscales)
    # Not dead: an Upscale behind a zero one gets its first gradient once that one has moved (one step per
    # nesting level of the W-cycle), then every new call site learns.
    optimiser = torch.optim.SGD(deeper.parameters(), lr=0.5)
    for _ in range(deeper.config.levels - 1):
        optimiser.zero_grad()
        (deeper(lr, noise_amp=0.7, noise=noise) - 0.5).square().mean().backward()
        optimiser.step()
    assert all(float(p.grad.abs().max()) > 0.0 for p in new_upscales)


def test_deepening_refuses_what_it_cannot_grow(tmp_path, capsys):
    target = tmp_path / "d.safetensors"
    for argv, message in (([_pirm_file().as_posix(), "--mu", "3"], "needs an MGBPv2 model"),
                          (["mgbp-x8", "--mu", "1"], "below the model's mu 2"),
                          (["mgbp-x2", "--mu", "0"], "--mu must be positive"),
                          (["mgbp-x2", "--mu", "3", "--to-3d"], "separate conversions")):
        assert main(["convert", argv[0], str(target), *argv[1:]]) == 2
        assert message in capsys.readouterr().err, argv
    assert not target.exists()


def test_videos_prefer_a_shipped_video_model_and_images_never_get_one(monkeypatch):
    from mgbp.models import weights

    image_only = dict(weights.SHIPPED)
    monkeypatch.setattr(weights, "SHIPPED", {"v4": weights.Shipped("v4.safetensors", 4, video=True), **image_only})
    assert default_model_for_scale(4) == "mgbp-x4"  # a video model listed first is not an image default
    assert weights.default_model_for_scale(4, video=True) == "v4"
    assert weights.default_model_for_scale(2, video=True) == "mgbp-x2"  # no x2 video model: the image one
    monkeypatch.setattr(weights, "SHIPPED", {"v3": weights.Shipped("v3.safetensors", 3, video=True)})
    with pytest.raises(WeightFileError, match="no shipped weights for scale x3"):
        weights.default_model_for_scale(3)
