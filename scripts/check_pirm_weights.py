"""Measure the authors' PIRM-2018 MGBPv1 weights (Table V, Figure 3) with the evaluation protocol of
`../shared/data/README.md`, to compare with the figures of `../shared/reference/README.md`
(BOE-R1 at W = 0: Set5 31.62 / 0.887, Set14 28.27 / 0.774 PSNR-Y / SSIM-Y, x4).

Protocol: HR -> modcrop(4) -> LR = MATLAB bicubic 1/4 on uint8 (rounded) -> MGBPv1 with the authors' inference
padding -> clamp, round to uint8 -> PSNR-Y / SSIM-Y ignoring 4 border pixels, averaged over each set.

Usage: .venv/bin/python scripts/check_pirm_weights.py [--weights BOE-R1.model] [--noise 0] [--sets Set5 Set14]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mgbp.io import IMAGE_EXTENSIONS, list_files, quantise, read_image
from mgbp.metrics import compare_uint8
from mgbp.models.mgbpv1 import load_authors_file
from mgbp.resize import imresize_uint8, modcrop

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SCALE = 4


def super_resolve(model, lr: np.ndarray, noise_amp: float) -> np.ndarray:
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        out = model(x, noise_amp=noise_amp).clamp(0, 1)
    return quantise(out[0].permute(1, 2, 0))  # MATLAB's rounding, as the protocol says


def evaluate_set(model, folder: Path, noise_amp: float) -> tuple[float, float, int]:
    paths = list_files(folder, IMAGE_EXTENSIONS)
    psnrs, ssims = [], []
    for path in tqdm(paths, desc=folder.name, file=sys.stderr, disable=not sys.stderr.isatty()):
        hr = modcrop(read_image(path).rgb_uint8(), SCALE)  # grey (Set14 bridge) becomes RGB
        sr = super_resolve(model, imresize_uint8(hr, 1.0 / SCALE), noise_amp)
        scores = compare_uint8(hr, sr, crop=SCALE)
        psnrs.append(scores["psnr_y"])
        ssims.append(scores["ssim_y"])
    return float(np.mean(psnrs)), float(np.mean(ssims)), len(paths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=SHARED / "reference/pirm2018/BOE-R1.model")
    parser.add_argument("--noise", type=float, default=0.0, help="noise amplitude W (default 0)")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # only matters for W > 0
    model = load_authors_file(args.weights)
    print(f"{args.weights.name}, W = {args.noise}, x{SCALE}")
    for name in args.sets:
        psnr_y, ssim_y, count = evaluate_set(model, SHARED / "data/images" / name, args.noise)
        print(f"{name:6s} ({count:2d} images): PSNR-Y {psnr_y:.2f}  SSIM-Y {ssim_y:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
