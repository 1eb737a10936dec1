"""The trainer (Section IV): config handling, a short fidelity run that learns, exact resume, Ctrl-C."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mgbp import train, train_config
from mgbp.errors import ConfigError, WeightFileError

ROOT = Path(__file__).resolve().parents[1]


def smooth_image(path: Path, h: int, w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 6 + 2, w // 6 + 2, 3)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.array(Image.fromarray(base).resize((w, h), Image.BICUBIC))).save(path)


@pytest.fixture
def images(tmp_path):
    for i in range(3):
        smooth_image(tmp_path / "train" / f"t{i}.png", 40 + 4 * i, 44, i)
    return tmp_path / "train"


def make_config(tmp_path, images, name, **extra) -> dict:
    cfg = {
        "model": {"preset": "tiny"},
        "output_dir": str(tmp_path / name),
        "steps": 50,
        "log_every": 10,
        "checkpoint_every": 1000,
        "cpu_threads": 1,
        "data": {"train": [str(images)], "patch": 6, "batch": 4, "workers": 0},
        "val": {"folder": str(images), "every": 1000},
        "optim": {"lr": 2e-3},
    }
    for key, value in extra.items():
        cfg = train_config._merge_loose(cfg, {key: value})
    return train.load_config(None, [f"{k}={json.dumps(v)}" for k, v in _flatten(cfg)])


def _flatten(cfg, prefix=""):
    for k, v in cfg.items():
        if isinstance(v, dict) and k != "overrides":
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# ------------------------------------------------------------------------------------------ config
def test_config_layers_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"steps": 7, "data": {"batch": 2}, "description": "a note"}))
    cfg = train.load_config(path, ["optim.lr=3e-4", "data.train=/x", "loss.noise=false"])
    assert cfg["steps"] == 7 and cfg["data"]["batch"] == 2 and cfg["optim"]["lr"] == 3e-4
    assert cfg["data"]["train"] == ["/x"] and cfg["loss"]["noise"] is False
    assert cfg["optim"]["step_every"] == 200000 and cfg["optim"]["gamma"] == 0.5  # the paper's schedule
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'"):
        train.load_config(path, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="mode"):
        train.load_config(path, ["mode=gan"])
    with pytest.raises(ConfigError, match="not key=value"):
        train.load_config(path, ["steps"])
    with pytest.raises(ConfigError, match="not found"):
        train.load_config(tmp_path / "nope.yaml")


def test_every_shipped_config_is_valid():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(configs) >= 10
    for path in configs:
        cfg = train.load_config(path)
        if cfg["model"]["preset"]:
            from mgbp.models import PRESETS
            assert cfg["model"]["preset"] in PRESETS, path.name


def test_learning_rate_schedules():
    optim = dict(train.DEFAULTS["optim"])
    assert train.learning_rate_factor(199_999, optim, 10**6) == 1.0
    assert train.learning_rate_factor(200_000, optim, 10**6) == 0.5
    assert train.learning_rate_factor(400_000, optim, 10**6) == 0.25
    cosine = {**optim, "schedule": "cosine", "warmup": 10, "min_lr": 1e-5, "lr": 1e-4}
    assert train.learning_rate_factor(0, cosine, 110) == pytest.approx(0.1)
    assert train.learning_rate_factor(10, cosine, 110) == pytest.approx(1.0)
    assert train.learning_rate_factor(60, cosine, 110) == pytest.approx(0.1 + 0.9 * 0.5)
    assert train.learning_rate_factor(110, cosine, 110) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------ training
def test_fifty_fidelity_steps_lower_the_validation_l1(tmp_path, images):
    cfg = make_config(tmp_path, images, "fid", ema=0.9)
    trainer = train.Trainer(cfg, quiet=True)
    before = trainer.validate()
    assert trainer.run() == 0
    trainer.close()
    after = records(Path(cfg["output_dir"]), "val")[-1]
    assert after["step"] == 50
    assert after["l1"] < 0.97 * before["l1"], (before, after)  # the residual net starts at bicubic
    assert after["psnr_y"] > before["psnr_y"]
    losses = [r["loss"] for r in records(Path(cfg["output_dir"]), "train")]
    assert len(losses) == 5 and losses[-1] < losses[0]
    out = Path(cfg["output_dir"])
    for name in ("last.pt", "best.pt", "generator.safetensors", "generator_best.safetensors",
                 "train.csv", "val.csv", "config.yaml"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp-*"))
    from safetensors import safe_open

    from mgbp.models import load_model
    model = load_model(out / "generator.safetensors")
    assert model.scale == 4
    with safe_open(str(out / "generator.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert json.loads(meta["validation"])["l1"] == pytest.approx(after["l1"])
    assert json.loads(meta["recipe"])["steps"] == 50 and json.loads(meta["training_step"]) == 50


def test_l2_only_fidelity_steps_lower_the_validation_mse(tmp_path, images):
    cfg = make_config(tmp_path, images, "l2", steps=30, loss={"l1": 0.0, "cycle": 0.0, "l2": 1.0})
    trainer = train.Trainer(cfg, quiet=True)
    before = trainer.validate()
    assert trainer.run() == 0
    trainer.close()
    logged = records(Path(cfg["output_dir"]), "train")
    assert {"l2", "loss"} <= set(logged[-1]) and "l1" not in logged[-1]
    assert logged[-1]["l2"] == pytest.approx(logged[-1]["loss"])  # the only term
    after = records(Path(cfg["output_dir"]), "val")[-1]
    assert after["l2"] < 0.95 * before["l2"], (before, after)


def _final_state(cfg):
    state = torch.load(Path(cfg["output_dir"]) / "last.pt", weights_only=False)
    return state


@pytest.mark.parametrize("mode", ["fidelity", "perceptual"])
def test_resume_gives_the_identical_next_step(tmp_path, images, mode):
    extra = {"mode": mode, "ema": 0.5, "log_every": 1, "val": {"folder": None},
             "discriminator": {"features": 8}, "loss": {"cx": 0.0}}
    straight = make_config(tmp_path, images, "straight", steps=4, **extra)
    assert train.Trainer(straight, quiet=True).run() == 0
    first = make_config(tmp_path, images, "resumed", steps=3, **extra)
    assert train.Trainer(first, quiet=True).run() == 0
    second = make_config(tmp_path, images, "resumed", steps=4, **extra)
    assert train.Trainer(second, resume=True, quiet=True).run() == 0
    a, b = _final_state(straight), _final_state(second)
    assert a["step"] == b["step"] == 4
    for part in ("generator", "ema") + (("discriminator",) if mode == "perceptual" else ()):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    loss_a = records(Path(straight["output_dir"]), "train")[-1]
    loss_b = records(Path(second["output_dir"]), "train")[-1]
    assert loss_a["step"] == loss_b["step"] == 4 and loss_a["loss"] == loss_b["loss"]
    if mode == "perceptual":
        assert {"gan", "cycle_w1", "l1_w0", "cycle_w0", "d_loss"} <= set(loss_a)


def test_ctrl_c_saves_and_resume_continues(tmp_path, images, monkeypatch):
    cfg = make_config(tmp_path, images, "interrupt", steps=6, log_every=1, val={"folder": None})
    trainer = train.Trainer(cfg, quiet=True)
    original = trainer.train_step

    def interrupted_at_three(batch):
        if trainer.step == 3:
            raise KeyboardInterrupt
        return original(batch)

    monkeypatch.setattr(trainer, "train_step", interrupted_at_three)
    assert trainer.run() == 130
    assert torch.load(Path(cfg["output_dir"]) / "last.pt", weights_only=False)["step"] == 3
    assert train.Trainer(cfg, resume=True, quiet=True).run() == 0
    assert _final_state(cfg)["step"] == 6


def test_perceptual_starts_from_a_fidelity_checkpoint(tmp_path, images):
    fid = make_config(tmp_path, images, "fid0", steps=2, val={"folder": None})
    train.Trainer(fid, quiet=True).run()
    per = make_config(tmp_path, images, "per0", steps=1, mode="perceptual", val={"folder": None},
                      init_from=str(Path(fid["output_dir"]) / "last.pt"), discriminator={"features": 8})
    trainer = train.Trainer(per, quiet=True)
    start = torch.load(Path(fid["output_dir"]) / "last.pt", weights_only=False)["generator"]
    assert all(torch.equal(v, trainer.generator.state_dict()[k]) for k, v in start.items())
    assert trainer.vgg is None  # no VGG weights configured: CX off with a warning
    assert trainer.run() == 0


def test_command_line_errors_and_no_pyav_needed(tmp_path):
    env_cmd = [sys.executable, "-c",
               "import sys, mgbp.train, mgbp.data; sys.exit(1 if 'av' in sys.modules else 0)"]
    assert subprocess.run(env_cmd, check=False, cwd=ROOT).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: fidelity\nsteps: 0\n")
    res = subprocess.run([sys.executable, "-m", "mgbp.train", str(bad)], check=False, capture_output=True,
                         text=True, cwd=ROOT)
    assert res.returncode == 2 and "steps must be a positive integer" in res.stderr
    assert res.stderr.count("\n") == 1


def test_video_fidelity_steps_on_frame_folders(tmp_path):
    for t in range(5):
        smooth_image(tmp_path / "clips" / "a" / f"{t:08d}.png", 24, 28, 20 + t)
    cfg = make_config(tmp_path, tmp_path / "clips", "video", steps=2, log_every=1, val={"folder": None},
                      model={"preset": "tiny-3d"}, data={"video": True, "frames": 3, "batch": 2})
    trainer = train.Trainer(cfg, quiet=True)
    assert trainer.is_video and trainer.run() == 0
    assert len(records(Path(cfg["output_dir"]), "train")) == 2


def test_video_model_trains_on_panned_stills_mixed_with_clips(tmp_path, images):
    for t in range(5):
        smooth_image(tmp_path / "clips" / "a" / f"{t:08d}.png", 24, 28, 20 + t)
    cfg = make_config(tmp_path, tmp_path / "clips", "stills", steps=2, log_every=1, val={"folder": None},
                      model={"preset": "tiny-3d"},
                      data={"video": True, "frames": 3, "batch": 2, "stills": [str(images)], "pan": 2})
    trainer = train.Trainer(cfg, quiet=True)
    assert type(trainer.dataset).__name__ == "MixedClipDataset" and trainer.run() == 0
    assert len(records(Path(cfg["output_dir"]), "train")) == 2


@pytest.mark.parametrize(("override", "message"), [("data.pan=-1", "data.pan must be a non-negative integer"),
                                                   ("data.stills_fraction=1.5", "data.stills_fraction must be in")])
def test_bad_panning_options_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        train.load_config(None, [override])


def test_perceptual_validation_reports_niqe_at_w1(tmp_path, images):
    smooth_image(tmp_path / "val" / "v.png", 200, 200, 7)
    cfg = make_config(tmp_path, images, "pval", steps=1, mode="perceptual", val={"folder": str(tmp_path / "val")},
                      discriminator={"features": 8})
    trainer = train.Trainer(cfg, quiet=True)
    assert trainer.run() == 0
    val = records(Path(cfg["output_dir"]), "val")[-1]
    assert np.isfinite(val["niqe_w1"]) and np.isfinite(val["psnr_y"])
    assert trainer.best["metric"] == "niqe_w1"


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["MGBP_PICKLE_MARKER"]),))


def test_checkpoints_are_read_without_running_pickled_code(tmp_path, monkeypatch):
    """init_from / --resume read .pt files with weights_only=True: a hostile file is refused, not executed."""
    marker = tmp_path / "executed"
    monkeypatch.setenv("MGBP_PICKLE_MARKER", str(marker))
    hostile = tmp_path / "hostile.pt"
    torch.save({"generator": _RunsCodeWhenUnpickled()}, hostile)
    with pytest.raises(WeightFileError, match="cannot read checkpoint") as refused:
        train.load_generator_weights(torch.nn.Linear(1, 1), str(hostile))
    assert not marker.exists()
    assert "Python objects" in str(refused.value) and "\n" not in str(refused.value)
