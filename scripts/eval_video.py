"""Evaluate video upscaling on a ground-truth frame folder (issue 6's video target: Vid4-city, x4).

    python scripts/eval_video.py --methods bicubic mgbp-x4 --max-frames 10 --json out/vid4_city.json
    python scripts/eval_video.py --clip ../shared/data/video/Vid4-city --crop 256 --methods bicubic my3d.safetensors

Each frame follows the image protocol (modcrop, MATLAB bicubic 1/f on uint8, uint8 outputs); bicubic and 2D
generators run frame by frame, a 3D generator (`is_video`) over the whole clip with `mgbp.video`'s windowed
overlap-add. Reports frame-averaged PSNR-Y / SSIM-Y (f-pixel border ignored) and the temporal flicker of
`mgbp.video_metrics` (mean |dY_out/dt - dY_gt/dt|, Y on [0,255]) as a Markdown table, and optionally as JSON.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from mgbp.errors import MgbpError
from mgbp.evaluate import SELF_ENSEMBLE_SUFFIX
from mgbp.protocol import is_bicubic, load_generator, method_labels
from mgbp.tables import markdown_table, write_json
from mgbp.video_metrics import (
    center_crop,
    clip_scores,
    load_clip,
    protocol_clip,
    stack_uint8,
    upscale_clip_3d,
    upscale_per_frame,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "video" / "Vid4-city"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="folder of ground-truth frames")
    parser.add_argument("--methods", nargs="+", default=["bicubic", "mgbp-x4"],
                        help="bicubic, shipped model names or weight files (2D per frame, 3D over the clip)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    parser.add_argument("--crop", type=str, default=None,
                        help="centre-crop every HR frame to SIDE or HEIGHTxWIDTH pixels (short CPU runs)")
    parser.add_argument("--window", type=int, default=None, help="3D models: frames per window (default: model's)")
    parser.add_argument("--stride", type=int, default=None,
                        help="3D models: frames between windows (default: half a window's frames, at most 5)")
    parser.add_argument("--tile", type=int, default=None, help="LR tile size (default: automatic)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="run the models as the mean over the 8 flips/rotations (labels get '+SE')")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def parse_crop(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise MgbpError(f"--crop {text}: expected SIDE or HEIGHTxWIDTH in pixels")
    return (sizes[0], sizes[-1])


def evaluate(args: argparse.Namespace) -> dict:
    hr = load_clip(args.clip, args.max_frames)
    crop = parse_crop(args.crop)
    if crop is not None:
        hr = center_crop(hr, *crop)
    hr, lr = protocol_clip(hr, args.scale)
    reference = stack_uint8(hr)
    results = {"clip": str(args.clip), "scale": args.scale, "frames": len(hr),
               "hr_size": list(hr[0].shape[:2]), "border_crop": args.scale,
               "machine": f"{platform.node()} {platform.machine()}, torch {torch.__version__}, "
                          f"{torch.get_num_threads()} threads", "methods": []}
    for spec, label in zip(args.methods, method_labels(args.methods)):
        model = load_generator(spec, scale=args.scale, device=args.device)
        video = bool(getattr(model, "is_video", False))
        ensemble = args.self_ensemble and not is_bicubic(spec)  # bicubic is symmetric already
        label = label + SELF_ENSEMBLE_SUFFIX if ensemble else label
        bar = tqdm(total=len(lr), desc=label, unit="frame", disable=args.quiet, file=sys.stderr)
        start = time.perf_counter()
        if video:
            outputs = upscale_clip_3d(model, lr, window=args.window, stride=args.stride, tile=args.tile,
                                      progress=partial(bar.update, 1), self_ensemble=ensemble)
        else:
            outputs = upscale_per_frame(model, lr, tile=args.tile, progress=partial(bar.update, 1),
                                        self_ensemble=ensemble)
        seconds = time.perf_counter() - start
        bar.close()
        scores = clip_scores(stack_uint8(outputs), reference, crop=args.scale)
        results["methods"].append({"method": label, "spec": str(spec), "mode": "3D clip" if video else "per frame",
                                   "seconds": round(seconds, 2), **scores})
    return results


def table(results: dict) -> str:
    header = ["Method", "mode", "frames", "PSNR-Y (dB)", "SSIM-Y", "flicker (Y, 0-255)"]
    rows = [[r["method"], r["mode"], str(r["frames"]), f"{r['psnr_y']:.2f}", f"{r['ssim_y']:.4f}",
             "-" if r["flicker"] is None else f"{r['flicker']:.3f}"] for r in results["methods"]]
    return markdown_table(header, rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        results = evaluate(args)
    except MgbpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{results['clip']}: {results['frames']} frames, HR {results['hr_size'][1]}x{results['hr_size'][0]}, "
          f"x{results['scale']}, {results['border_crop']}-pixel border ignored")
    print(table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
