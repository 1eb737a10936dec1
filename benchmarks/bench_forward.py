"""Speed and peak memory of one whole LR -> HR forward pass of MGBP presets (anchors.md's protocol).

Median of `--repeat` timed runs after `--warmup` runs, batch 1, random weights (speed does not depend on
them), random input. On CUDA: fp16 autocast unless `--fp32`, cudnn.benchmark on, peak memory from
`torch.cuda.max_memory_allocated`. On CPU: fp32, peak resident memory growth is not measured.

    PYTHONPATH=src python benchmarks/bench_forward.py --preset fast-x4 --lr-size 120x68 --device cpu
    PYTHONPATH=src python benchmarks/bench_forward.py --preset mgbpv2-x4 --lr-size 480x270 960x540 --device cuda

Prints one JSON line per (preset, size) with the device name, so every figure says where it came from.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from mgbp.models import build_model
from mgbp.resize import imresize


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(run, device: torch.device, warmup: int, repeat: int) -> list[float]:
    for _ in range(warmup):
        run()
    synchronize(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def bench(preset: str, width: int, height: int, device: torch.device, half: bool, warmup: int, repeat: int):
    if preset == "bicubic":
        model, scale, params = None, 4, 0
    else:
        model = build_model(preset).to(device).eval()
        scale, params = model.scale, sum(p.numel() for p in model.parameters())
    lr = torch.rand(1, 3, height, width, device=device)
    autocast = torch.autocast("cuda", dtype=torch.float16) if (half and device.type == "cuda") else None

    @torch.inference_mode()
    def run():
        if model is None:
            return imresize(lr, scale=scale)
        if autocast is None:
            return model(lr)
        with autocast:
            return model(lr)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_forward(run, device, warmup, repeat)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "preset": preset,
        "params": params,
        "lr": f"{width}x{height}",
        "hr": f"{width * scale}x{height * scale}",
        "median_ms": round(1000 * statistics.median(times), 2),
        "min_ms": round(1000 * min(times), 2),
        "peak_gib": None if peak is None else round(peak, 3),
        "dtype": "fp16-autocast" if autocast is not None else "fp32",
        "device": device_name(device),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=["fast-x4"])
    parser.add_argument("--lr-size", nargs="+", default=["120x68"], help="LR sizes WxH")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fp32", action="store_true", help="no fp16 autocast on CUDA")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for preset in args.preset:
        for size in args.lr_size:
            width, height = (int(v) for v in size.lower().split("x"))
            result = bench(preset, width, height, device, not args.fp32, args.warmup, args.repeat)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
