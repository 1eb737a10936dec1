"""Throughput of `mgbp upscale --ray` (mgbp.distributed) with 1 and 2 (or more) workers on a local Ray instance.

Upscales `--images` random RGB images of `--size` with the model (`-m`, default the shipped mgbp-x4) through
the Ray Data pipeline once per worker count, and prints one JSON line per run: wall time (Ray's actor start
included), images per second once the first output is out (the steady state a long job sees), the machine and
its load average, since other work on a shared machine changes these figures. Outputs go to a temporary folder.

    PYTHONPATH=src python benchmarks/bench_ray.py --images 16 --size 96x96 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mgbp.distributed import ClusterOptions, ModelSpec, UpscaleSettings, iter_results


@dataclass
class Job:
    source: Path
    target: Path
    kind: str = "image"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'CPU'})"


def run(jobs: list[Job], model: str | None, workers: int, batch: int) -> dict:
    start = time.perf_counter()
    first = None
    results = []
    for result in iter_results(jobs, ModelSpec(model), UpscaleSettings(overwrite=True),
                               ClusterOptions(workers=workers, batch_size=batch, gpus_per_worker=0)):
        results.append(result)
        first = first or time.perf_counter()
    end = time.perf_counter()
    failed = [r.message for r in results if r.status != "written"]
    if failed:
        raise SystemExit(f"bench_ray: {len(failed)} failed, e.g. {failed[0]}")
    steady = (len(results) - 1) / (end - first) if len(results) > 1 and end > first else float("nan")
    return {"workers": workers, "images": len(results), "wall_s": round(end - start, 2),
            "steady_images_per_s": round(steady, 3), "actors_seen": len({r.worker for r in results})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", default="96x96", help="WIDTHxHEIGHT of the LR images")
    parser.add_argument("-m", "--model", default=None, help="shipped name or weight file (default: mgbp-x4)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray instance")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    import ray

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # as `mgbp.distributed.connect`: no core chatter
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as folder:
        rng = np.random.default_rng(0)
        jobs = []
        for i in range(args.images):
            source = Path(folder) / "in" / f"{i:05d}.png"
            source.parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(source)
            jobs.append(Job(source, Path(folder) / "out" / source.name))
        for workers in args.workers:
            figures = run(jobs, args.model, workers, args.batch_size)
            figures.update(model=args.model or "mgbp-x4 (default)", size=args.size, ray_cpus=args.cpus,
                           machine=machine(), load_average_1min=round(os.getloadavg()[0], 2))
            print(json.dumps(figures), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
