"""Speed and peak memory of one whole LR -> HR forward pass of MGBP presets (anchors.md's protocol).

Median of `--repeat` timed runs after `--warmup` runs, batch 1, random weights for presets (speed does not depend
on them; shipped names load their files), random input. On CUDA: cudnn.benchmark on, peak memory from
`torch.cuda.max_memory_allocated`. On CPU peak resident memory growth is not measured.

Precisions (`--precision`, several allowed): `autocast` (fp16 autocast over float32 weights: anchors.md's protocol,
the default on CUDA), `half` / `bf16` (weights and input converted, as `mgbp upscale --half / --bf16`), `fp32`.

Variants (`--variants`), each timed on the same input, for issue 13's GPU target (Table I x4 fp16 >= 1.5x the
authors' code): `plain` (the model's forward as shipped), `nchw` (the model's weights moved back from channels-last
to contiguous NCHW), `cuda-graph` (the forward captured once in a CUDA graph and replayed: no per-kernel launch
cost; CUDA only) and `compile` (`torch.compile`, default mode). `--profile-top N` adds, for the first variant,
the N kernels (CUDA) or operators (CPU) with the most self time and the number of kernel launches per forward:
where the time goes, before changing anything.

    PYTHONPATH=src python benchmarks/bench_forward.py --preset fast-x4 --lr-size 120x68 --device cpu
    PYTHONPATH=src python benchmarks/bench_forward.py --preset mgbpv2-x4 --lr-size 480x270 960x540 --device cuda
    PYTHONPATH=src python benchmarks/bench_forward.py --preset mgbpv2-x4 mgbp-x4 --lr-size 480x270 --device cuda \\
        --precision autocast half --variants plain nchw cuda-graph --profile-top 25

Prints one JSON line per (preset, size, precision, variant) with the device name, so every figure says where it
came from; a variant that cannot run there gets a line with its reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from mgbp.errors import MgbpError
from mgbp.models import PRESETS, build_model, load_model
from mgbp.resize import imresize

PRECISIONS = ("autocast", "half", "bf16", "fp32")
VARIANTS = ("plain", "nchw", "cuda-graph", "compile")
WEIGHT_DTYPES = {"half": torch.float16, "bf16": torch.bfloat16}


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


def make_model(preset: str, device: torch.device, precision: str, variant: str) -> torch.nn.Module:
    """A preset with random weights or a shipped/weight file, on `device` in `precision`'s weight dtype."""
    model = build_model(preset) if preset in PRESETS else load_model(preset)
    model = model.to(device=device, dtype=WEIGHT_DTYPES.get(precision, torch.float32)).eval()
    if variant == "nchw":
        model = model.to(memory_format=torch.contiguous_format)
    return model


def autocast_context(device: torch.device, precision: str, *, cache: bool = True):
    if precision != "autocast":
        return contextlib.nullcontext()
    if device.type != "cuda":
        return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=cache)  # CPU autocast has no fp16 path
    return torch.autocast("cuda", dtype=torch.float16, cache_enabled=cache)


def plain_runner(model, lr, device, precision) -> Callable[[], torch.Tensor]:
    @torch.inference_mode()
    def run():
        with autocast_context(device, precision):
            return model(lr)

    return run


def graph_runner(model, lr, device, precision) -> Callable[[], torch.Tensor]:
    """Capture one forward on a static input in a CUDA graph; each call copies the input in and replays it."""
    static_input = lr.clone()

    def forward():
        # autocast's weight-cast cache cannot outlive a capture: casts are recorded into the graph instead
        with torch.inference_mode(), autocast_context(device, precision, cache=False):
            return model(static_input)

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):  # cudnn.benchmark picks its algorithms outside the capture
            forward()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = forward()

    def run():
        static_input.copy_(lr)
        graph.replay()
        return static_output

    return run


def compile_runner(model, lr, device, precision) -> Callable[[], torch.Tensor]:
    """torch.compile'd forward under no_grad: under inference_mode dynamo's guard on the bicubic's numpy-made
    kernel fails on the frame that made it when `compile` is the first variant run (torch 2.13)."""
    compiled = torch.compile(model)

    @torch.no_grad()
    def run():
        with autocast_context(device, precision):
            return compiled(lr)

    return run


RUNNERS = {"plain": plain_runner, "nchw": plain_runner, "cuda-graph": graph_runner, "compile": compile_runner}


def kernel_profile(run, device: torch.device, top: int) -> dict:
    """Self time of the `top` busiest kernels (CUDA) / operators (CPU) of one forward, and the launch count."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    run()
    synchronize(device)
    with profile(activities=activities) as prof:
        run()
        synchronize(device)
    on_device = device.type == "cuda"
    events = [e for e in prof.events() if (e.device_type.name == "CUDA") == on_device]
    if not on_device:
        events = [e for e in events if e.name.startswith(("aten::", "mkldnn::"))]
    totals: dict[str, list[float]] = {}
    for event in events:
        self_us = event.self_device_time_total if on_device else event.self_cpu_time_total
        entry = totals.setdefault(event.name, [0.0, 0])
        entry[0] += self_us
        entry[1] += 1
    busiest = sorted(totals.items(), key=lambda item: -item[1][0])[:top]
    return {
        "kernel_launches" if on_device else "operator_calls": len(events),
        "self_ms_total": round(sum(v[0] for v in totals.values()) / 1000, 3),
        "top": [{"name": name[:120], "self_ms": round(us / 1000, 3), "calls": calls} for name, (us, calls) in busiest],
    }


def bench(preset: str, width: int, height: int, device: torch.device, precision: str, variant: str,
          warmup: int, repeat: int, profile_top: int = 0) -> dict:
    record = {"preset": preset, "lr": f"{width}x{height}", "precision": precision, "variant": variant,
              "device": device_name(device), "torch": torch.__version__}
    if variant == "cuda-graph" and device.type != "cuda":
        return record | {"skipped": "CUDA graphs need a CUDA device"}
    if preset == "bicubic":
        model, scale, params = None, 4, 0
    else:
        model = make_model(preset, device, precision, variant)
        scale, params = model.scale, sum(p.numel() for p in model.parameters())
    lr = torch.rand(1, 3, height, width, device=device, dtype=WEIGHT_DTYPES.get(precision, torch.float32))
    if model is None:
        def run():
            return imresize(lr, scale=scale)
    else:
        run = RUNNERS[variant](model, lr, device, precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_forward(run, device, warmup, repeat)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    record |= {
        "params": params,
        "hr": f"{width * scale}x{height * scale}",
        "median_ms": round(1000 * statistics.median(times), 2),
        "min_ms": round(1000 * min(times), 2),
        "peak_gib": None if peak is None else round(peak, 3),
    }
    if profile_top > 0:
        record["profile"] = kernel_profile(run, device, profile_top)
    return record


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise MgbpError(f"--lr-size {text!r}: expected WxH, e.g. 480x270") from None
    if width < 1 or height < 1:
        raise MgbpError(f"--lr-size {text!r}: sizes must be positive")
    return width, height


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=["fast-x4"], help="presets, shipped names or weight files")
    parser.add_argument("--lr-size", nargs="+", default=["120x68"], help="LR sizes WxH")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=None,
                        help="default: autocast on CUDA (anchors.md), fp32 on CPU")
    parser.add_argument("--fp32", action="store_true", help="same as --precision fp32")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["plain"])
    parser.add_argument("--profile-top", type=int, default=0, help="profile the first variant: N busiest kernels")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    precisions = ["fp32"] if args.fp32 else args.precision or (["autocast"] if device.type == "cuda" else ["fp32"])
    try:
        sizes = [parse_size(size) for size in args.lr_size]
        unknown = [p for p in args.preset if p != "bicubic" and p not in PRESETS and not p.startswith("mgbp-")
                   and not p.endswith((".safetensors", ".model"))]
        if unknown:
            raise MgbpError(f"unknown preset {unknown[0]!r} (choose from {', '.join(PRESETS)}, a shipped name or a "
                            "weight file)")
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        for preset in args.preset:
            for width, height in sizes:
                for precision in precisions:
                    for index, variant in enumerate(args.variants):
                        result = bench(preset, width, height, device, precision, variant, args.warmup, args.repeat,
                                       args.profile_top if index == 0 else 0)
                        print(json.dumps(result), flush=True)
    except MgbpError as exc:
        print(f"bench_forward: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
