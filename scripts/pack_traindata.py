"""Pack training images as lossless WebP under the git-ignored `.traindata/` for a GPU session.

The device machine receives only the working tree (64 MiB in all, ignored paths through `carry`), not
`../shared`. The 291 training images are 59 MB as PNG and, per issue 6, about 39 MB as lossless WebP, which `mgbp.data`
reads directly; pixels are identical (checked here on every image).

    python scripts/pack_traindata.py                       # -> .traindata/train/{T91,BSD200}/*.webp
    # on the GPU machine (carry .traindata):
    PYTHONPATH=src python -m mgbp.train configs/fidelity-x4.yaml data.train=[.traindata/train] ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    parser.add_argument("--dest", type=Path, default=ROOT / ".traindata" / "train")
    args = parser.parse_args()
    total = 0
    for src in sorted(args.source.rglob("*.png")):
        dst = args.dest / src.relative_to(args.source).with_suffix(".webp")
        dst.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(src).convert("RGB")
        image.save(dst, lossless=True, quality=100, method=4)  # method 6: 19x slower, no smaller here
        if not np.array_equal(np.asarray(Image.open(dst).convert("RGB")), np.asarray(image)):
            raise SystemExit(f"{dst}: lossless WebP did not round-trip")
        total += dst.stat().st_size
    print(f"wrote {args.dest} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
