"""Training-speed options (issue 13): bfloat16 autocast on CPU when asked for (`amp: bf16`), the discriminator in
the channels-last layout. What a speed option must not do is change what is learned: these check that it still
learns, and that the float32 default stays float32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mgbp import train, train_config


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        base = rng.integers(0, 256, (10, 10, 3)).astype(np.uint8)
        path = tmp_path / "train" / f"t{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.array(Image.fromarray(base).resize((44, 40 + 4 * i), Image.BICUBIC))).save(path)
    return tmp_path / "train"


def config(tmp_path, images, **extra) -> dict:
    cfg = {"model": {"preset": "tiny"}, "output_dir": str(tmp_path / "run"), "steps": 40, "log_every": 10,
           "checkpoint_every": 1000, "cpu_threads": 1, "export": False,
           "data": {"train": [str(images)], "patch": 6, "batch": 4, "workers": 0},
           "val": {"folder": str(images), "every": 1000}, "optim": {"lr": 2e-3}}
    cfg = train_config._merge_loose(cfg, extra)
    flat = []

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k != "overrides":
                walk(v, f"{prefix}{k}.")
            else:
                flat.append(f"{prefix}{k}={json.dumps(v)}")

    walk(cfg)
    return train.load_config(None, flat)


def test_bf16_autocast_on_cpu_when_asked_and_it_still_learns(tmp_path, images):
    trainer = train.Trainer(config(tmp_path, images, amp="bf16"), quiet=True)
    assert trainer.device.type == "cpu" and trainer.amp_dtype == torch.bfloat16
    before = trainer.validate()
    assert trainer.run() == 0
    after = trainer.validate()
    trainer.close()
    assert after["l1"] < 0.97 * before["l1"], (before, after)
    assert all(p.dtype == torch.float32 for p in trainer.generator.parameters())  # autocast, not a cast


def test_bf16_on_a_cpu_that_emulates_it_warns(tmp_path, images, monkeypatch, caplog):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    with caplog.at_level("WARNING", logger="mgbp"):
        trainer = train.Trainer(config(tmp_path, images, amp="bf16"), quiet=True)
    trainer.close()
    assert trainer.amp_dtype == torch.bfloat16  # still what was asked for
    assert any("emulated" in r.getMessage() for r in caplog.records)


def test_default_amp_stays_float32_on_cpu(tmp_path, images):
    trainer = train.Trainer(config(tmp_path, images), quiet=True)
    assert trainer.amp_dtype is None
    trainer.close()


def test_discriminator_kernels_are_channels_last(tmp_path, images):
    trainer = train.Trainer(config(tmp_path, images, mode="perceptual"), quiet=True)
    kernels = [p for p in trainer.discriminator.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    trainer.close()
