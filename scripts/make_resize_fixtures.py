"""Make tests/fixtures/resize_octave.npz: reference outputs of Octave's `imresize(..., 'bicubic')`.

Octave 7 with the `image` package agrees with MATLAB's `imresize` for bicubic resizing. This script draws
deterministic inputs with numpy, has Octave resize them (uint8 and double inputs), and stores inputs and
outputs in one small npz that `tests/test_resize.py` compares against.

Needs Debian's `octave` and `octave-image` (`apt-get install octave octave-image`). Run from the repo root:
    python scripts/make_resize_fixtures.py
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OUT = ROOT / "tests" / "fixtures" / "resize_octave.npz"

# (input name, request): a request is a scale number or an explicit [rows, cols] size.
SCALES = [0.5, 1 / 3, 0.25, 0.125, 2, 3, 4, 8, 0.7, 1.3, 2.5]
SIZES = [(7, 20), (40, 9), (1, 1)]


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261126)
    bird = np.asarray(Image.open(SHARED / "data/images/Set5/bird.png").convert("RGB"))
    return {
        "natural": np.ascontiguousarray(bird[101:122, 60:91]),  # 21x31x3, odd sizes, real edges
        "noise": rng.integers(0, 256, size=(17, 13), dtype=np.uint8),  # worst case for rounding
        "row": rng.integers(0, 256, size=(1, 9), dtype=np.uint8),  # 1-pixel-tall input
        "column": rng.integers(0, 256, size=(9, 1), dtype=np.uint8),
        "pixel": np.array([[200]], dtype=np.uint8),
    }


def cases(images: dict[str, np.ndarray]) -> list[tuple[str, str, object]]:
    out = []
    for name in images:
        for s in SCALES:
            if name == "pixel" and s < 1:
                continue  # MATLAB gives a 1x1 output; nothing to learn
            out.append((f"{name}/scale{s:.6g}", name, float(s)))
        for size in SIZES:
            out.append((f"{name}/size{size[0]}x{size[1]}", name, size))
    return out


OCTAVE_SCRIPT = r"""
pkg load image;
load('-v7', '{inp}');
n = numel(keys);
res_u8 = cell(n, 1); res_f = cell(n, 1);
for k = 1:n
  x = images.(srcs{{k}});
  r = reqs{{k}};
  res_u8{{k}} = imresize(x, r, 'bicubic');
  res_f{{k}} = imresize(double(x) / 255, r, 'bicubic');
end
save('-v7', '{out}', 'res_u8', 'res_f');
"""


def main() -> None:
    images = inputs()
    todo = cases(images)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.mat", Path(tmp) / "out.mat"
        reqs = np.empty(len(todo), dtype=object)
        for i, (_, _, r) in enumerate(todo):
            reqs[i] = np.array(r, dtype=np.float64) if isinstance(r, tuple) else r
        scipy.io.savemat(inp, {
            "images": images,
            "keys": np.array([k for k, _, _ in todo], dtype=object),
            "srcs": np.array([s for _, s, _ in todo], dtype=object),
            "reqs": reqs,
        })
        script = Path(tmp) / "run.m"
        script.write_text(OCTAVE_SCRIPT.format(inp=inp, out=out))
        subprocess.run(["octave-cli", "--no-gui", "--quiet", str(script)], check=True)
        res = scipy.io.loadmat(out)
    arrays = {f"input/{k}": v for k, v in images.items()}
    for i, (key, src, req) in enumerate(todo):
        arrays[f"request/{key}"] = np.array(req, dtype=np.float64)
        arrays[f"uint8/{key}"] = np.asarray(res["res_u8"][i, 0]).astype(np.uint8)
        arrays[f"double/{key}"] = np.asarray(res["res_f"][i, 0]).astype(np.float32)  # 1e-7 is plenty
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({len(todo)} cases, {OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
