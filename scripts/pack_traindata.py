"""Pack training images as lossless WebP under the git-ignored `.traindata/` for a GPU session.

The device machine receives only the working tree (64 MiB in all, ignored paths through `carry`), not
`../shared`. The 291 training images are 59 MB as PNG and, per issue 6, about 39 MB as lossless WebP, which `mgbp.data`
reads directly; pixels are identical (checked here on every image).

Beside them, `.traindata/shared/` mirrors the few things of `../shared` that the GPU session's checks read, at
the same relative paths (about 6 MB): Set14 (issue 13's reduced-precision check, 4.8 MB), the authors' BOE-R3
weights (the same check) and their published code (timed side by side by `benchmarks/bench_speed.py`, never
imported by the package). `scripts/gpu_session.sh` uses that mirror when `../shared` is absent. The copy is
git-ignored and only travels to the device for timing and checks (the code's LGPL allows running it).

    python scripts/pack_traindata.py                       # -> .traindata/train/{T91,BSD200}/*.webp + .traindata/shared
    # on the GPU machine (carry .traindata):
    PYTHONPATH=src python -m mgbp.train configs/fidelity-x4.yaml data.train=[.traindata/train] ...
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# What the GPU session's checks read from ../shared, relative to it (scripts/gpu_session.sh).
SHARED_FOR_CHECKS = ("data/images/Set14", "reference/pirm2018/BOE-R3.model", "reference/authors-code")


def pack_training_images(source: Path, dest: Path) -> int:
    total = 0
    for src in sorted(source.rglob("*.png")):
        dst = dest / src.relative_to(source).with_suffix(".webp")
        dst.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(src).convert("RGB")
        image.save(dst, lossless=True, quality=100, method=4)  # method 6: 19x slower, no smaller here
        if not np.array_equal(np.asarray(Image.open(dst).convert("RGB")), np.asarray(image)):
            raise SystemExit(f"{dst}: lossless WebP did not round-trip")
        total += dst.stat().st_size
    return total


def mirror_for_checks(shared: Path, dest: Path) -> int:
    """Copy SHARED_FOR_CHECKS from `shared` into `dest` at the same relative paths (files byte for byte)."""
    total = 0
    for relative in SHARED_FOR_CHECKS:
        src, dst = shared / relative, dest / relative
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
        total += sum(f.stat().st_size for f in ([dst] if dst.is_file() else dst.rglob("*")) if f.is_file())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--dest", type=Path, default=ROOT / ".traindata",
                        help="folder that gets train/ and shared/ (default .traindata)")
    parser.add_argument("--checks-only", action="store_true",
                        help="only refresh dest/shared (the training images are already packed)")
    args = parser.parse_args()
    missing = [args.shared / relative for relative in ("data/train", *SHARED_FOR_CHECKS)
               if not (args.shared / relative).exists()]
    if missing:  # checked before anything is written
        raise SystemExit(f"pack_traindata: {missing[0]} not found (is ../shared there? pass --shared)")
    if not args.checks_only:
        total = pack_training_images(args.shared / "data" / "train", args.dest / "train")
        print(f"wrote {args.dest / 'train'} ({total / 1e6:.1f} MB)")
    total = mirror_for_checks(args.shared, args.dest / "shared")
    print(f"wrote {args.dest / 'shared'} ({total / 1e6:.1f} MB: {', '.join(SHARED_FOR_CHECKS)})")


if __name__ == "__main__":
    main()
