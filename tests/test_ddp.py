"""DistributedDataParallel (issue 4, section 5): 2 CPU processes (gloo) under torchrun against 1 process with
the same global batch: the same samples, so the same losses and the same weights within float tolerance."""

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

if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)


def losses_by_step(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert len({r["step"] for r in train_rows}) == len(train_rows), "only rank 0 may log"
    return {r["step"]: r["loss"] for r in train_rows}


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        base = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
        (tmp_path / "img").mkdir(exist_ok=True)
        image = np.array(Image.fromarray(base).resize((40, 36), Image.BICUBIC))
        Image.fromarray(image).save(tmp_path / "img" / f"{i}.png")
    config = {
        "model": {"preset": "tiny"}, "steps": 3, "log_every": 1, "cpu_threads": 1, "export": False,
        "data": {"train": [str(tmp_path / "img")], "patch": 6, "batch": 4, "workers": 0},
        "val": {"folder": None}, "optim": {"lr": 1.0e-3}, "ema": 0.5,
    }
    single_cfg = train.load_config(None, [f"output_dir={tmp_path / 'one'}"])
    single_cfg = train_config._merge(single_cfg, config)
    assert train.Trainer(single_cfg, quiet=True).run() == 0

    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump({**config, "output_dir": str(tmp_path / "two")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(train.__file__).parents[1])}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mgbp.train", str(path), "--quiet"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

    one, two = losses_by_step(tmp_path / "one"), losses_by_step(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=False)
    assert b["step"] == 3 and b["config"]["data"]["batch"] == 4
    for key, value in a["generator"].items():
        torch.testing.assert_close(b["generator"][key], value, rtol=1e-4, atol=1e-6)
    assert not list((tmp_path / "two").glob("*.tmp-*"))
