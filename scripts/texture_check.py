"""Flat-region texture over W (issue 14): does the perceptual end paint texture over smooth regions?

For each method and W, the mean over a dataset of `mgbp.metrics.texture.flat_region_texture` (the output's 7x7
local std of Y where the ground truth's is below 2 grey levels), beside the ground truth's own value, with the
protocol of `mgbp eval` (modcrop, MATLAB bicubic LR, uint8 output, `scale` pixels shaved) and the noise of
image i seeded by i at every W (as `mgbp sweep`). Optionally writes a side-by-side figure of crops
(ground truth, bicubic and each method at each W) for a person to look at.

    python scripts/texture_check.py ../shared/data/images/Set14 -m mgbp-x4 \
        -m ../shared/reference/pirm2018/BOE-R3.model --amplitudes 0,0.5,1 --json out/texture.json \
        --figure docs/figures/flat_texture.png --crop lenna.png:300,80,128 --crop zebra.png:20,20,128
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from mgbp.backprojection import check_steps
from mgbp.errors import ConfigError
from mgbp.io import read_image
from mgbp.metrics.texture import flat_region_texture
from mgbp.protocol import from_uint8, list_images, load_generator, method_labels, protocol_pair, upscale_uint8


def parse_crop(text: str) -> tuple[str, int, int, int]:
    name, _, box = text.partition(":")
    top, left, side = (int(v) for v in box.split(","))
    return name, top, left, side


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("-m", "--method", action="append", default=[], help="model (repeatable); bicubic is added")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--amplitudes", default="0,0.5,1")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--crop", action="append", default=[], help="IMAGE:TOP,LEFT,SIDE (HR pixels) for the figure")
    parser.add_argument("--consistent", action="store_true",
                        help="back-project every output onto S_f(Y) = LR first (mgbp upscale --consistent)")
    parser.add_argument("--consistent-steps", type=int, metavar="N",
                        help="with --consistent: N back-projection iterations (default: until converged)")
    args = parser.parse_args(argv)
    try:
        check_steps(args.consistent, args.consistent_steps)
    except ConfigError as exc:
        parser.error(str(exc))
    amplitudes = [float(a) for a in args.amplitudes.split(",")]
    specs = ["bicubic", *args.method]
    labels = method_labels(specs)
    models = [load_generator(s, scale=args.scale, device="cpu") for s in specs]
    crops = {c[0]: c[1:] for c in map(parse_crop, args.crop)}
    scores: dict[str, list[float]] = {"ground truth": []}
    pictures: dict[str, dict[str, np.ndarray]] = {}
    torch.set_grad_enabled(False)
    for index, path in enumerate(list_images(args.data)):
        hr, lr = protocol_pair(read_image(path).rgb_uint8(), args.scale, source=path)
        reference = from_uint8(hr, torch.float64)
        scores["ground truth"].append(float(flat_region_texture(reference, reference, crop=args.scale)[0]))
        if path.name in crops:
            pictures.setdefault(path.name, {})["ground truth"] = hr
        for label, model in zip(labels, models):
            for w in [0.0] if label == "Bicubic" else amplitudes:
                key = label if label == "Bicubic" else f"{label} W={w:g}"
                out = upscale_uint8(model, lr, noise_amp=w, seed=index, consistent=args.consistent,
                                    consistent_steps=args.consistent_steps)
                value = float(flat_region_texture(from_uint8(out, torch.float64), reference, crop=args.scale)[0])
                scores.setdefault(key, []).append(value)
                if path.name in crops:
                    pictures[path.name][key] = out
        print(f"{path.name}: done", file=sys.stderr)
    means = {key: float(np.nanmean(values)) for key, values in scores.items()}
    for key, value in means.items():
        print(f"{key:40s} {value:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data": str(args.data), "scale": args.scale, "mean": means,
                                         "per_image": scores}, indent=1))
    if args.figure and pictures:
        draw_figure(pictures, crops, args.figure)
    return 0


def draw_figure(pictures: dict, crops: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(pictures)
    columns = list(next(iter(pictures.values())))
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(2.2 * len(columns), 2.4 * len(rows)),
                                squeeze=False)
    for r, name in enumerate(rows):
        top, left, side = crops[name]
        for c, key in enumerate(columns):
            axes[r][c].imshow(pictures[name][key][top:top + side, left:left + side], interpolation="nearest")
            axes[r][c].set_title(key, fontsize=8)
            axes[r][c].axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
