"""Host memory of `mgbp upscale` on one image, per output sample: what `--max-memory`'s estimate is built on.

    PYTHONPATH=src python benchmarks/bench_image_memory.py --lr-size 2048 --bit-depth 8
    PYTHONPATH=src python benchmarks/bench_image_memory.py --lr-size 2048 --bit-depth 16

Writes a random RGB PNG of the given side (8- or 16-bit), runs the command's image path
(`mgbp.image_files.upscale_image_file`: read, tiled upscale, write) with a generator (default: the tiny
preset with random weights; the tiles' activations are bounded by the tile size, so a large image measures the
per-sample cost) and prints one JSON line: the growth of the process's peak resident memory (ru_maxrss) divided
by the output samples (colour planes), beside `BYTES_PER_OUTPUT_SAMPLE`, and the estimate of
`image_memory_bytes` against the measured growth.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mgbp.image_files import BYTES_PER_OUTPUT_SAMPLE, image_memory_bytes, upscale_image_file
from mgbp.inference import InferenceOptions
from mgbp.io import peek_image, write_image
from mgbp.models import build_model, load_model


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-size", type=int, default=2048, help="side of the square LR image")
    parser.add_argument("--bit-depth", type=int, choices=(8, 16), default=8)
    parser.add_argument("-m", "--model", help="shipped name or weight file (default: tiny preset, random)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = (load_model(args.model) if args.model else build_model("tiny")).eval()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.png", Path(folder) / "out.png"
        if args.bit_depth == 16:
            write_image(source, rng.integers(0, 65536, (args.lr_size, args.lr_size, 3), dtype=np.uint16),
                        bit_depth=16)
        else:
            Image.fromarray(rng.integers(0, 256, (args.lr_size, args.lr_size, 3), dtype=np.uint8)).save(source)
        options = InferenceOptions(seed=0)
        header = peek_image(source)
        before = peak_rss_bytes()
        upscale_image_file(source, target, model, options, max_memory=float("inf"))  # measure, never refuse
        growth = peak_rss_bytes() - before
    samples = int(model.scale) ** 2 * args.lr_size ** 2 * 3
    print(json.dumps({
        "lr_size": args.lr_size, "bit_depth": args.bit_depth, "scale": int(model.scale),
        "model": args.model or "tiny (random)", "peak_rss_growth_gib": round(growth / 2**30, 2),
        "bytes_per_output_sample": round(growth / samples, 1),
        "estimate_bytes_per_output_sample": BYTES_PER_OUTPUT_SAMPLE[args.bit_depth],
        "estimate_gib": round(image_memory_bytes(header, int(model.scale)) / 2**30, 2),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }))


if __name__ == "__main__":
    main()
