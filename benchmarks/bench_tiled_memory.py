"""Peak memory and time of a large tiled upscale (issue 5: "a 4K x4 output on this 2-core, 24 GB machine").

    PYTHONPATH=src python benchmarks/bench_tiled_memory.py -m mgbp-x4 --lr-size 960x540
    PYTHONPATH=src python benchmarks/bench_tiled_memory.py --preset mgbpv2-x4 --lr-size 960x540 --tile 128
    PYTHONPATH=src python benchmarks/bench_tiled_memory.py --preset mgbpv2-x16 --lr-size 480x270 \
        --device cuda --max-gpu-memory 8 --dtype half      # issue 5: an x16 8K output within 8 GB of GPU memory

Runs `mgbp.inference.upscale_tensor` (the path `mgbp upscale` takes) on a random LR image and prints one JSON
line: the output size, wall time, tile plan, and the process's peak resident memory (ru_maxrss) before and
after, so the growth is what the upscale itself needed. On CUDA it also reports
`torch.cuda.max_memory_allocated`; `--max-gpu-memory` caps the process (PyTorch's per-process fraction, what
`mgbp upscale --max-gpu-memory` sets), so going over it would fail rather than pass unnoticed. The input and the
output stay in CPU memory, as in `mgbp upscale`; tiles go to the device. Random weights are fine for a preset: memory and time do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch

from mgbp.errors import MgbpError
from mgbp.inference import resolve_dtype, upscale_tensor
from mgbp.models import build_model, load_model


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-m", "--model", help="shipped name or weight file")
    source.add_argument("--preset", help="a preset with random weights")
    parser.add_argument("--lr-size", default="960x540", help="WxH of the LR input")
    parser.add_argument("--tile", type=int, default=None, help="LR tile (default: automatic)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="half / bf16 (default: float32)")
    parser.add_argument("--max-gpu-memory", type=float, default=None, metavar="GIB")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:  # the memory cap needs an index ("cuda" -> "cuda:0")
        device = torch.device("cuda", torch.cuda.current_device())
    if args.max_gpu_memory is not None:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.max_gpu_memory * 2**30 / total), device)
    model = load_model(args.model) if args.model else build_model(args.preset)
    model = model.to(device=device, dtype=resolve_dtype(args.dtype)).eval()
    width, height = (int(v) for v in args.lr_size.lower().split("x"))
    lr = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))  # in CPU memory
    before = peak_rss_gib()
    start = time.perf_counter()
    with torch.inference_mode():
        try:
            out = upscale_tensor(model, lr, tile=args.tile)
        except MgbpError as exc:  # e.g. out of memory under --max-gpu-memory even at the smallest tiles: one line
            raise SystemExit(f"bench_tiled_memory: {exc}") from None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    result = {
        "model": args.model or args.preset,
        "lr": f"{width}x{height}",
        "out": f"{out.shape[-1]}x{out.shape[-2]}",
        "wall_s": round(wall, 1),
        "peak_rss_gib_before": round(before, 2),
        "peak_rss_gib_after": round(peak_rss_gib(), 2),
        "output_tensor_gib": round(out.numel() * out.element_size() / 2**30, 3),
        "tile": args.tile or "auto",
        "dtype": str(next(model.parameters()).dtype),
        "max_gpu_memory_gib": args.max_gpu_memory,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        result["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
