"""`mgbp consistency`: measure S_f(Y) = x (paper eqs. 3-4) of upscaled outputs against their inputs, or enforce it
with classic iterative back-projection (eqs. 4-5); the maths is `mgbp.backprojection`.

Inputs come from `--lr` (the LR images the outputs came from) or `--hr` (ground truth: the LR is made by the
evaluation protocol, `mgbp.protocol`, and PSNR-Y is reported before and after); the outputs from a folder or
from running `--model`. Figures are in grey levels (0-255).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mgbp.backprojection import (
    DEFAULT_MAX_ITER,
    DEFAULT_STEP,
    DEFAULT_TOL,
    enforce_consistency,
    measure_consistency,
)
from mgbp.errors import ConfigError
from mgbp.io import read_image, write_image
from mgbp.protocol import (
    forward_with_noise,
    from_uint8,
    list_images,
    load_generator,
    protocol_pair,
    psnr_y,
    to_uint8,
)
from mgbp.tables import markdown_table, write_csv, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outputs", nargs="?", type=Path,
                        help="folder (or one image) of upscaled outputs; omit it with --model")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lr", type=Path, help="folder (or image) of the LR inputs the outputs came from")
    source.add_argument("--hr", type=Path,
                        help="folder (or image) of HR ground truth: inputs are made by the protocol "
                             "(modcrop, MATLAB bicubic 1/f on uint8) and PSNR-Y is reported")
    parser.add_argument("--scale", type=int, help="upscaling factor f (inferred from sizes or the model)")
    parser.add_argument("-m", "--model", help="run this model on the inputs instead of reading OUTPUTS")
    parser.add_argument("--noise", type=float, default=0.0, help="noise amplitude W for --model")
    parser.add_argument("--seed", type=int, default=0, help="noise seed for --model")
    parser.add_argument("--tile", type=int, default=None, help="tile size (LR pixels) for --model")
    parser.add_argument("--device", default=None, help="torch device for --model (default: cuda if present)")
    parser.add_argument("--enforce", action="store_true", help="enforce S_f(Y) = x by back-projection")
    parser.add_argument("--tol", type=float, default=DEFAULT_TOL * 255,
                        help="tolerance on max |x - S_f(Y)| in grey levels (default 0.5)")
    parser.add_argument("--max-iter", type=int, default=DEFAULT_MAX_ITER)
    parser.add_argument("--step", type=float, default=DEFAULT_STEP, help="back-projection step (0, 2)")
    parser.add_argument("--no-clamp", dest="clamp", action="store_false",
                        help="do not clip to [0, 1] between iterations (pure eqs. 4-5; the saved, clipped "
                             "image then loses part of the consistency)")
    parser.add_argument("-o", "--output-dir", type=Path, help="write the enforced outputs here (PNG)")
    parser.add_argument("--json", type=Path, help="write the per-image and mean figures as JSON")
    parser.add_argument("--csv", type=Path, help="write the per-image rows as CSV")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _match_output(stem: str, outputs: dict[str, Path]) -> Path:
    """The output for input `stem`: same stem, or a unique `stem_...`/`stem-...` (e.g. `baboon_x4.png`)."""
    if stem in outputs:
        return outputs[stem]
    candidates = [p for s, p in outputs.items() if s.startswith((stem + "_", stem + "-"))]
    if len(candidates) != 1:
        found = "none" if not candidates else ", ".join(p.name for p in candidates)
        raise ConfigError(f"cannot match one output to input {stem!r} (found {found})")
    return candidates[0]


def _load_pairs(args, scale):
    """[(name, lr uint8 HxWx3, hr uint8 or None)] from --lr or --hr."""
    source = args.hr if args.hr is not None else args.lr
    if args.hr is not None and scale is None:
        raise ConfigError("--hr needs --scale (or --model) to make the LR inputs")
    pairs = []
    for path in list_images(source):
        image = read_image(path).rgb_uint8()
        if args.hr is not None:
            hr, lr = protocol_pair(image, scale, source=path, window=1)  # PSNR-Y needs 1 pixel after the shave
            pairs.append((path.stem, lr, hr))
        else:
            pairs.append((path.stem, image, None))
    return pairs


def _summarise(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float)) and not isinstance(rows[0][k], bool)]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def _format_table(rows: list[dict], mean: dict) -> str:
    columns = [k for k in rows[0] if k != "name"]

    def cell(value):
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    body = [[row["name"]] + [cell(row[c]) for c in columns] for row in rows]
    body.append(["**mean**"] + [cell(mean[c]) if c in mean else "" for c in columns])
    return markdown_table(["image"] + columns, body)


def _saved_psnr_y(output: torch.Tensor, hr, scale: int) -> float:
    """PSNR-Y against the ground truth of the output as it is saved (rounded to uint8), Table II protocol."""
    return psnr_y(from_uint8(to_uint8(output), torch.float64), from_uint8(hr, torch.float64), scale)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if (args.model is None) == (args.outputs is None):
        raise ConfigError("give OUTPUTS (the upscaled images to check) or --model to make them, not both")
    model = None
    scale = args.scale
    if args.model is not None:
        model = load_generator(args.model, scale=scale, device=args.device)
        scale = int(model.scale)
    pairs = _load_pairs(args, scale)
    outputs = None if args.outputs is None else {p.stem: p for p in list_images(args.outputs)}
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, lr, hr in tqdm(pairs, desc="consistency", file=sys.stderr,
                             disable=args.quiet or not sys.stderr.isatty()):
        x = from_uint8(lr, torch.float64)
        if model is not None:
            y = forward_with_noise(model, x, args.noise, seed=args.seed, tile=args.tile)
            y = y.cpu().to(torch.float64)
        else:
            y = from_uint8(read_image(_match_output(name, outputs)).rgb_uint8(), torch.float64)
        if scale is None:
            ratio = y.shape[-2] / x.shape[-2]
            if ratio != int(ratio) or y.shape[-1] != x.shape[-1] * int(ratio):
                raise ConfigError(f"{name}: output size is not an integer multiple of the input size")
            scale = int(ratio)
        row = {"name": name}
        before = measure_consistency(x, y, scale)
        row.update({"max_abs": float(before["max_abs"][0]), "rmse": float(before["rmse"][0]),
                    "max_abs_uint8": float(before["max_abs_uint8"][0])})
        if hr is not None:
            row["psnr_y"] = _saved_psnr_y(y, hr, scale)
        if args.enforce:
            y, info = enforce_consistency(x, y, scale, tol=args.tol / 255, max_iter=args.max_iter,
                                          step=args.step, clamp=args.clamp)
            after = measure_consistency(x, y, scale)
            row.update({"iterations": info.iterations, "converged": info.converged,
                        "max_abs_after": float(after["max_abs"][0]),
                        "max_abs_uint8_after": float(after["max_abs_uint8"][0]),
                        "rmse_uint8_after": float(after["rmse_uint8"][0])})
            if hr is not None:
                row["psnr_y_after"] = _saved_psnr_y(y, hr, scale)
                row["psnr_y_change"] = row["psnr_y_after"] - row["psnr_y"]
            if args.output_dir is not None:
                write_image(args.output_dir / f"{name}.png", to_uint8(y).astype("float32") / 255.0)
        rows.append(row)
    if not rows:
        raise ConfigError("no images found")
    mean = _summarise(rows)
    report = {"scale": scale, "enforce": bool(args.enforce), "clamp": bool(args.clamp), "tol": args.tol,
              "units": "grey levels (0-255)",
              "images": rows, "mean": mean}
    if args.json is not None:
        write_json(args.json, report)
    if args.csv is not None:
        write_csv(args.csv, rows)
    print(_format_table(rows, mean))
    failed = [r["name"] for r in rows if args.enforce and not r["converged"]]
    if failed:
        print(f"warning: not within tolerance after {args.max_iter} iterations: {', '.join(failed)}",
              file=sys.stderr)
    return 0
