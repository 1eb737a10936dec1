"""Reduced precision (--half / --bf16) against float32: PSNR-Y on a benchmark set, NaN and black outputs (issue 13).

For each model and precision, every image of the folder goes through the evaluation protocol
(`mgbp.protocol`: modcrop, MATLAB bicubic LR, the model through `mgbp.protocol.upscale_uint8`, i.e. the tiled path
of `mgbp upscale`, rounded to uint8) and is scored by PSNR-Y against its HR image. A precision passes when no
output holds a NaN/Inf (the tile path reruns such a tile in float32 and warns: counted here as a failure), no
output is black, and its mean PSNR-Y is within `--tolerance` dB (0.05) of float32's.

    python benchmarks/check_low_precision.py                          # mgbp-x4 and BOE-R3, bf16, CPU, Set14
    python benchmarks/check_low_precision.py -m mgbp-x4 mgbp-x2 --dtype half bf16 --device cuda

Prints one JSON line per (model, precision) and exits 1 when one fails (2 for bad options, one line).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DTYPES = {"float32": torch.float32, "half": torch.float16, "bf16": torch.bfloat16}


def scores(model, images: list[Path], device) -> tuple[list[float], list[str]]:
    from mgbp.io import read_image
    from mgbp.protocol import from_uint8, protocol_pair, psnr_y, upscale_uint8

    values, problems = [], []
    scale = int(model.scale)
    for path in images:
        hr, lr = protocol_pair(read_image(path).rgb_uint8(), scale, source=path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = upscale_uint8(model, lr)
        if any("overflowed" in str(w.message) for w in caught):
            problems.append(f"{path.name}: a tile overflowed and was rerun in float32")
        if out.max() == 0:
            problems.append(f"{path.name}: black output")
        values.append(psnr_y(from_uint8(out, torch.float64), from_uint8(hr, torch.float64), scale))
    return values, problems


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO / "src"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--models", nargs="+", default=None,
                        help="shipped names or weight files (default: mgbp-x4 and ../shared's BOE-R3)")
    parser.add_argument("--dtype", nargs="+", default=["bf16"], help="half and/or bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--folder", type=Path, default=SHARED / "data" / "images" / "Set14")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--tolerance", type=float, default=0.05, help="dB of mean PSNR-Y (default 0.05)")
    args = parser.parse_args(argv)
    unknown = [d for d in args.dtype if d not in DTYPES or d == "float32"]
    if unknown:
        print(f"check_low_precision: unknown precision {unknown[0]!r} (choose from half, bf16)", file=sys.stderr)
        return 2

    import mgbp
    from mgbp.protocol import list_images

    models = args.models or ["mgbp-x4"] + ([str(SHARED / "reference" / "pirm2018" / "BOE-R3.model")]
                                           if (SHARED / "reference" / "pirm2018" / "BOE-R3.model").is_file() else [])
    if not args.folder.is_dir():
        print(f"check_low_precision: {args.folder} not found (../shared absent?): pass --folder", file=sys.stderr)
        return 2
    images = list_images(args.folder)[: args.max_images]
    device = torch.device(args.device)
    failed = False
    for name in models:
        reference, _ = scores(mgbp.load_model(name).to(device).eval(), images, device)
        for dtype in args.dtype:
            model = mgbp.load_model(name).to(device=device, dtype=DTYPES[dtype]).eval()
            values, problems = scores(model, images, device)
            delta = float(np.mean(values) - np.mean(reference))
            ok = not problems and abs(delta) <= args.tolerance
            failed |= not ok
            print(json.dumps({"model": Path(name).name, "dtype": dtype, "images": len(images),
                              "folder": args.folder.name, "psnr_y_float32": round(float(np.mean(reference)), 3),
                              "psnr_y": round(float(np.mean(values)), 3), "delta_db": round(delta, 3),
                              "worst_image_delta_db": round(float(np.max(np.abs(np.subtract(values, reference)))), 3),
                              "problems": problems, "pass": ok, "device": torch.cuda.get_device_name(device)
                              if device.type == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} "
                              f"threads", "torch": torch.__version__}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
