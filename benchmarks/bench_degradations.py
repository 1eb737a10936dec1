"""Cost of the Real-ESRGAN degradation pipeline (`mgbp.degradations`) against a training step.

Median over `--repeat` batches (after `--warmup`) of: (a) the pipeline on a batch of HR patches as `mgbp train`
makes them (16 patches of 96x96 HR plus the 2-LR-pixel margin of `mgbp.data`: 112x112), (b) the JPEG step
alone at that size, (c) one fidelity training step (forward, eq. 9 loss, backward, Adam) of the generator of a
training config (default: configs/cpu-x4.yaml, the default model's recipe). One CPU thread unless --threads.

    PYTHONPATH=src python benchmarks/bench_degradations.py
    PYTHONPATH=src python benchmarks/bench_degradations.py --degradation configs/cpu-x4-real.yaml

Prints one JSON line with the machine, so every figure says where it came from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from mgbp.degradations import Degradation
from mgbp.jpeg import jpeg_compress
from mgbp.train import build_generator
from mgbp.train_config import load_config


def median_ms(run, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cpu-x4.yaml", help="training config of the timed step")
    parser.add_argument("--degradation", help="a training config whose data.degradation is timed "
                                              "(default: the Real-ESRGAN defaults)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=24, help="LR patch side (HR: patch * 4)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    scale, margin = 4, 2
    hr = torch.rand(args.batch, 3, (args.patch + 2 * margin) * scale, (args.patch + 2 * margin) * scale)
    settings = load_config(args.degradation)["data"]["degradation"] if args.degradation else None
    degrade = Degradation(settings)
    generator = torch.Generator().manual_seed(0)
    pipeline_ms = median_ms(lambda: degrade(hr, scale, generator), args.warmup, args.repeat)
    jpeg_ms = median_ms(lambda: jpeg_compress(hr, 50), args.warmup, args.repeat)

    from mgbp.losses import fidelity_loss

    cfg = load_config(args.config)
    model = build_generator(cfg["model"])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    lr = torch.rand(args.batch, 3, args.patch, args.patch)
    target = torch.rand(args.batch, 3, args.patch * scale, args.patch * scale)

    def step():
        loss, _ = fidelity_loss(model(lr, noise_amp=0.0), target, scale, 1.0, 1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step_ms = median_ms(step, 2, max(5, args.repeat // 4))
    print(json.dumps({
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} thread(s), torch {torch.__version__}",
        "batch": f"{args.batch} x 3 x {hr.shape[-2]} x {hr.shape[-1]} HR (96x96 patches + margin)",
        "degradation": args.degradation or "defaults (Real-ESRGAN x4)",
        "pipeline_ms": round(pipeline_ms, 1), "jpeg_hr_ms": round(jpeg_ms, 1),
        "train_step_ms": round(step_ms, 1), "config": args.config,
        "pipeline_share_of_step": round(pipeline_ms / (pipeline_ms + step_ms), 3),
    }))


if __name__ == "__main__":
    main()
