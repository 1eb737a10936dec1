"""The README's real-photo figure: a JPEG-compressed LR crop upscaled x4 by bicubic, mgbp-x4 and mgbp-x4-real at
W=0 and W=1, side by side, with the HR crop for reference and each panel's PSNR-Y on the crop.

The LR is made as `mgbp eval --degrade jpeg:Q` makes it (`mgbp.degradations.degrade_uint8`): the protocol's
MATLAB bicubic downscale of the modcropped HR image, then Pillow's JPEG at quality Q (4:2:0). Each method runs
on the whole LR image (so the crop has no border effects) with the noise seeded by `--seed`; the crop is taken
from the outputs. Nearest-neighbour enlargement (`--zoom`) keeps the pixels visible.

    python scripts/make_real_figure.py                        # Set14 monarch, JPEG 35 -> docs/figures/real_jpeg_x4.png
    python scripts/make_real_figure.py --image ../shared/data/images/Set14/pepper.png --quality 30 --box 60 40 48
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mgbp.atomic import atomic_path
from mgbp.degradations import degrade_uint8, parse_degrade_spec
from mgbp.io import read_image
from mgbp.protocol import load_generator, protocol_pair, upscale_uint8

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "images" / "Set14" / "monarch.png"
SCALE = 4


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of MATLAB's rgb2ycbcr Y (0-255 floats), as the protocol measures it."""
    weights = np.array([65.481, 128.553, 24.966]) / 255.0
    ya = a.astype(np.float64) @ weights + 16
    yb = b.astype(np.float64) @ weights + 16
    return 10 * np.log10(255.0**2 / np.mean((ya - yb) ** 2))


def panel(image: np.ndarray, title: str, zoom: int) -> Image.Image:
    """The crop enlarged by `zoom` (nearest), with its title in a band above."""
    picture = Image.fromarray(image).resize((image.shape[1] * zoom, image.shape[0] * zoom), Image.NEAREST)
    out = Image.new("RGB", (picture.width, picture.height + 22), "white")
    out.paste(picture, (0, 22))
    ImageDraw.Draw(out).text((4, 5), title, fill="black")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="HR image (default: Set14 monarch)")
    parser.add_argument("--quality", type=int, default=35, help="JPEG quality of the LR (35)")
    parser.add_argument("--box", type=int, nargs=3, default=(40, 80, 40), metavar=("TOP", "LEFT", "SIZE"),
                        help="the crop on the LR grid (default 40 80 40)")
    parser.add_argument("--real", default="mgbp-x4-real", help="the real-photo model (name or weight file)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zoom", type=int, default=1, help="nearest-neighbour enlargement of the panels")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "figures" / "real_jpeg_x4.png")
    args = parser.parse_args()

    hr, lr = protocol_pair(read_image(args.image).rgb_uint8(), SCALE, source=args.image)
    lr = degrade_uint8(lr, parse_degrade_spec(f"jpeg:{args.quality}"), seed=0)
    top, left, size = args.box
    rows, cols = slice(top * SCALE, (top + size) * SCALE), slice(left * SCALE, (left + size) * SCALE)
    reference = hr[rows, cols]
    real = Path(args.real).stem if Path(args.real).suffix else args.real
    methods = [("bicubic", "bicubic", 0.0), ("mgbp-x4", "mgbp-x4", 0.0),
               (f"{real} W=0", args.real, 0.0), (f"{real} W=1", args.real, 1.0)]
    lr_crop = lr[top: top + size, left: left + size]
    panels = [panel(np.repeat(np.repeat(lr_crop, SCALE, 0), SCALE, 1), f"input: LR, JPEG q={args.quality}",
                    args.zoom)]
    for title, spec, noise in methods:
        model = load_generator(spec, scale=SCALE, device="cpu")
        output = upscale_uint8(model, lr, noise, seed=args.seed)[rows, cols]
        panels.append(panel(output, f"{title}  {psnr_y(output, reference):.2f} dB", args.zoom))
    panels.append(panel(reference, "HR (reference)", args.zoom))
    gap = 6
    figure = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), "white")
    x = 0
    for p in panels:
        figure.paste(p, (x, 0))
        x += p.width + gap
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output) as temporary:
        figure.save(temporary, format="PNG")
    print(f"wrote {args.output} ({figure.width}x{figure.height})")


if __name__ == "__main__":
    main()
