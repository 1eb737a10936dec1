"""`mgbp linearscope`: the adaptive upscaling filter of a network at chosen input pixels (Section VI-C, Fig. 16)
from the command line: .npy arrays, a JSON summary and figures. The maths (impulse responses by Jacobian-vector
products, the bicubic reference, the filter statistics) is `mgbp.linearscope`.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch

from mgbp.errors import ConfigError
from mgbp.io import read_image
from mgbp.linearscope import CHANNELS, bicubic_response, filter_statistics, impulse_response
from mgbp.protocol import from_uint8, load_generator, method_label, protocol_pair
from mgbp.tables import write_json


def parse_pixel(text: str) -> tuple[int, int]:
    """"X,Y" (column, row; 0-based) -> (x, y)."""
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--pixel expects X,Y (two integers), got {text!r}") from None
    return x, y


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="the LR input image (or the HR image with --degrade)")
    parser.add_argument("--pixel", action="append", required=True, type=parse_pixel, dest="pixels",
                        metavar="X,Y", help="input pixel (column,row; 0-based); repeat for several")
    parser.add_argument("-m", "--model", default="bicubic",
                        help="shipped name, weight file, the authors' .model file, or 'bicubic' (default)")
    parser.add_argument("--noise", type=float, default=0.0, help="noise amplitude W (noise maps held fixed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise maps")
    parser.add_argument("--scale", type=int, default=None,
                        help="upscaling factor for 'bicubic' (default 4); must match a model's scale")
    parser.add_argument("--degrade", action="store_true",
                        help="treat IMAGE as HR: modcrop and MATLAB-bicubic downscale it by the scale first")
    parser.add_argument("--channel", choices=sorted(CHANNELS), default="all",
                        help="input channel(s) of the impulse (default all: a grey impulse)")
    parser.add_argument("--offset", action="store_true", help="also save the affine offset F(x) - J x")
    parser.add_argument("--radius", type=int, default=16,
                        help="half-size in LR pixels of the crop shown and saved (default 16)")
    parser.add_argument("--full", action="store_true", help="save the whole response, not the crop")
    parser.add_argument("--context", type=int, default=None,
                        help="run the network on only this many LR pixels around each pixel (default: "
                             "the whole image); ReLUs near the cut change state; keep it >= the border")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("linearscope"))
    parser.add_argument("--no-plot", action="store_true", help="only the .npy arrays and the JSON summary")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _window(pixel, radius, shape_hw):
    """LR window [top, bottom) x [left, right) of half-size `radius` around the pixel, clipped."""
    x, y = pixel
    height, width = shape_hw
    return max(0, y - radius), min(height, y + radius + 1), max(0, x - radius), min(width, x + radius + 1)


def _save_npy(path: Path, array: np.ndarray) -> None:
    from mgbp.atomic import write_bytes_atomically

    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes_atomically(path, buffer.getvalue())


def _analyse_pixel(model, image: np.ndarray, pixel, args, scale: int, out: Path) -> dict:
    """Linearscope at one pixel: arrays, figure and the JSON entry (coordinates in the full LR image)."""
    height, width = image.shape[:2]
    if not (0 <= pixel[0] < width and 0 <= pixel[1] < height):
        raise ConfigError(f"pixel ({pixel[0]},{pixel[1]}) is outside the {width}x{height} input")
    # the network sees the whole image, or only `context` LR pixels around the pixel (large images, CPU)
    if args.context is None:
        c_top, c_bottom, c_left, c_right = 0, height, 0, width
    else:
        c_top, c_bottom, c_left, c_right = _window(pixel, args.context, (height, width))
    seen = image[c_top:c_bottom, c_left:c_right]
    local = (pixel[0] - c_left, pixel[1] - c_top)
    lr = from_uint8(seen)
    result = impulse_response(model, lr, local, args.noise, args.seed, args.channel, args.offset)
    response = result.response.cpu().to(torch.float64).numpy()
    bicubic = bicubic_response(lr.shape[-2:], local, scale, args.channel).numpy()
    top, bottom, left, right = (0, lr.shape[-2], 0, lr.shape[-1]) if args.full else \
        _window(local, args.radius, lr.shape[-2:])
    hr_window = (slice(None), slice(top * scale, bottom * scale), slice(left * scale, right * scale))
    stem = f"{args.image.stem}_{method_label(args.model)}_x{pixel[0]}_y{pixel[1]}"
    _save_npy(out / f"{stem}.npy", response[hr_window].astype(np.float32))
    if result.offset is not None:
        _save_npy(out / f"{stem}_offset.npy", result.offset.cpu().numpy()[hr_window].astype(np.float32))
    shown, bicubic_shown = response.mean(axis=0), bicubic.mean(axis=0)
    entry = {"pixel": list(pixel), "file": f"{stem}.npy",
             "window_lr": {"top": top + c_top, "left": left + c_left, "bottom": bottom + c_top,
                           "right": right + c_left},
             "context_lr": {"top": c_top, "left": c_left, "height": lr.shape[-2], "width": lr.shape[-1]},
             "network": filter_statistics(shown, local, scale),
             "bicubic": filter_statistics(bicubic_shown, local, scale)}
    if result.offset is not None:
        entry["offset_file"] = f"{stem}_offset.npy"
    if not args.no_plot:
        from mgbp.plotting import plot_linearscope

        crop = seen[top:bottom, left:right].astype(np.float64) / 255.0
        plot_linearscope(crop, (local[0] - left, local[1] - top), shown[hr_window[1:]],
                         bicubic_shown[hr_window[1:]], out / f"{stem}.png", scale=scale,
                         title=f"{args.image.name} ({pixel[0]},{pixel[1]})  {method_label(args.model)}"
                               f"  W={args.noise:g}")
        entry["figure"] = f"{stem}.png"
    return entry


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.radius < 0 or (args.context is not None and args.context < 1):
        raise ConfigError("--radius must be >= 0 and --context >= 1")
    model = load_generator(args.model, scale=args.scale, device=args.device)
    scale = int(model.scale)
    image = read_image(args.image).rgb_uint8()
    if args.degrade:
        image = protocol_pair(image, scale, source=args.image, window=0)[1]
    if not args.no_plot:
        from mgbp.plotting import require_pyplot

        require_pyplot()  # fail before the long part
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    summary = {"image": str(args.image), "model": args.model, "scale": scale, "noise": args.noise,
               "seed": args.seed, "channel": args.channel, "degrade": bool(args.degrade),
               "context": args.context, "pixels": []}
    for pixel in tqdm(args.pixels, desc="linearscope", file=sys.stderr,
                      disable=args.quiet or not sys.stderr.isatty()):
        entry = _analyse_pixel(model, image, pixel, args, scale, out)
        summary["pixels"].append(entry)
        net, bic = entry["network"], entry["bicubic"]
        print(f"({pixel[0]},{pixel[1]}): gain {net['gain']:.4f} (bicubic {bic['gain']:.4f}), "
              f"rms radius {net['rms_radius']:.2f} px (bicubic {bic['rms_radius']:.2f}), "
              f"centroid shift {net['centroid_shift']:.2f} px -> {out / entry['file']}")
    write_json(out / "linearscope.json", summary)
    return 0
