"""ONNX Runtime CPU speed of an exported model beside torch's, on the same input (`mgbp export`, Algorithm 1).

Exports the model (`mgbp.export`, full graph: image, W and noise map inputs), then times one whole-image
forward pass at each LR size: torch (`model(lr, noise_amp=W, noise=map)` under inference mode) and ONNX
Runtime's CPU provider on the same inputs, with the same number of threads for both (`--threads`). Median
of `--repeat` runs after `--warmup`; the largest |ONNX - torch| of the timed inputs is printed beside the
times, so the speed figures are for outputs that agree.

    PYTHONPATH=src python benchmarks/bench_onnx.py -m mgbp-x4 --lr-size 128x128 256x256 --threads 2

Prints a Markdown table (and `--json FILE`) that says the machine, the thread count and the versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mgbp.export import ExportOptions, example_inputs, export_onnx, input_names
from mgbp.models import load_model


def median_seconds(run, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ort_session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def measure(model, session, names, size: tuple[int, int], args) -> dict:
    """Time torch and ONNX Runtime on the same seeded inputs at LR `size` (height, width)."""
    height, width = size
    image, noise_amp, noise = example_inputs(model, names, size, noise_amp=args.noise)
    feeds = {"image": image.numpy(), "noise_amp": noise_amp.numpy(), "noise": noise.numpy()}

    @torch.inference_mode()
    def run_torch():
        return model(image, noise_amp=noise_amp, noise=noise).clamp(0, 1)

    def run_ort():
        return session.run(["output"], feeds)[0]

    difference = float(np.abs(run_ort() - run_torch().numpy()).max())
    torch_s = median_seconds(run_torch, args.warmup, args.repeat)
    ort_s = median_seconds(run_ort, args.warmup, args.repeat)
    return {"model": args.model, "lr_size": f"{width}x{height}",
            "hr_size": f"{model.scale * width}x{model.scale * height}", "torch_s": torch_s,
            "onnxruntime_s": ort_s, "speedup": torch_s / ort_s, "max_abs_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default="mgbp-x4", help="shipped name or weight file (mgbp-x4)")
    parser.add_argument("--lr-size", nargs="+", default=["128x128", "256x256"], metavar="WxH")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and ONNX Runtime")
    parser.add_argument("--noise", type=float, default=1.0, help="W of the timed runs (1)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()

    import onnxruntime

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu").eval()
    names = input_names(model, ExportOptions())
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(model, path, ExportOptions(), label=args.model)
        session = ort_session(path, args.threads)
        for text in args.lr_size:
            rows.append(measure(model, session, names, parse_size(text), args))
    machine = (f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} threads; torch "
               f"{torch.__version__}, onnxruntime {onnxruntime.__version__}, W = {args.noise:g}, median of "
               f"{args.repeat}")
    print("| model | LR -> HR | torch | ONNX Runtime | torch / ORT | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['lr_size']} -> {r['hr_size']} | {r['torch_s']:.3f} s | "
              f"{r['onnxruntime_s']:.3f} s | {r['speedup']:.2f} | {r['max_abs_difference']:.1e} |")
    print(f"\n{machine}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
