"""Perception-distortion sweep over the noise amplitude W (paper Section VI-A, Fig. 14; Section V-B, Fig. 11).

MGBP's generators take noise inputs W * N(0, 1) (Algorithm 1, line 1): W = 0 targets distortion (the point
X* of Fig. 2), W = 1 perception (an alias image in A(X) ∩ H_real). `mgbp sweep` moves W from 0 to 1 over a
dataset and measures, at every W, the distortion (RMSE, PSNR-Y, SSIM-Y) and the perceptual score (NIQE) of
the outputs, then draws the parametric curve NIQE against RMSE with each point labelled by W, as in Fig. 14.
Several models (for example the authors' PIRM-2018 R1/R2/R3 weights, Fig. 11) are overlaid in one figure.

Evaluation protocol (`mgbp.protocol`, shared with `mgbp eval`): HR -> modcrop(f) -> LR = MATLAB bicubic 1/f
on uint8 -> model -> round to uint8 -> scores with `f` border pixels shaved: PSNR-Y / SSIM-Y as in Table II,
RMSE (uint8 Y) and NIQE as in the PIRM-SR 2018 scoring scripts, so R1/R2/R3 land in the challenge's RMSE
regions.

Smooth curves need the same noise at every W: image i is run with its noise seeded by `seed + i`
(`mgbp.protocol.forward_with_noise`) for every W and every model, so a generator sees exactly the same
standard-normal maps at every W (MGBPv1's per-level maps included, and with tiling too); only their
amplitude changes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mgbp.errors import ConfigError
from mgbp.io import read_image
from mgbp.protocol import (
    SSIM_WINDOW,
    from_uint8,
    list_images,
    load_generator,
    method_labels,
    niqe_y,
    protocol_pair,
    psnr_y,
    rmse_y,
    ssim_y,
    upscale_uint8,
)
from mgbp.tables import markdown_table, write_csv, write_json

MetricFn = Callable[[torch.Tensor, torch.Tensor, int], float]


def default_metrics() -> dict[str, MetricFn]:
    """The PIRM-SR 2018 scores (their `calc_scores.m`, behind Fig. 11 and Table V): `scale` border pixels
    shaved (4 at x4), RMSE on the uint8 Y channel (rounded like MATLAB's rgb2ycbcr of uint8), NIQE on the
    shaved output; PSNR-Y and SSIM-Y as in Table II (same shave)."""
    return {"rmse": rmse_y, "psnr_y": psnr_y, "ssim_y": ssim_y, "niqe": niqe_y}


def amplitudes_from_args(steps: int, w_min: float = 0.0, w_max: float = 1.0,
                         explicit: str | None = None) -> list[float]:
    """The W grid: `explicit` comma-separated values, else `steps` evenly spaced points in [w_min, w_max]."""
    if explicit:
        try:
            values = [float(v) for v in explicit.split(",") if v.strip()]
        except ValueError as exc:
            raise ConfigError(f"--amplitudes must be comma-separated numbers: {exc}") from None
    else:
        if steps < 2:
            raise ConfigError(f"--steps must be at least 2, got {steps}")
        values = [round(float(v), 10) for v in np.linspace(w_min, w_max, steps)]
    if not values or any(v < 0 or not np.isfinite(v) for v in values):
        raise ConfigError("noise amplitudes must be finite and non-negative")
    return values


@dataclass
class SweepResult:
    """Per-image and dataset-mean metrics for each model at each W."""

    scale: int
    seed: int
    amplitudes: list[float]
    images: list[str]
    # model label -> metric -> (images, W) array
    per_image: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def curves(self) -> dict[str, dict[str, list[float]]]:
        """model -> metric -> dataset mean at each W."""
        return {label: {name: values.mean(axis=0).tolist() for name, values in metrics.items()}
                for label, metrics in self.per_image.items()}

    def rows(self) -> list[dict]:
        """Flat rows (model, W, image or 'mean', metrics...): the CSV."""
        rows = []
        for label, metrics in self.per_image.items():
            names = list(metrics)
            for j, w in enumerate(self.amplitudes):
                for i, image in enumerate(self.images):
                    rows.append({"model": label, "W": w, "image": image,
                                 **{n: float(metrics[n][i, j]) for n in names}})
                rows.append({"model": label, "W": w, "image": "mean",
                             **{n: float(metrics[n][:, j].mean()) for n in names}})
        return rows

    def to_json(self) -> dict:
        return {"scale": self.scale, "seed": self.seed, "amplitudes": self.amplitudes, "images": self.images,
                "units": {"rmse": "uint8 Y channel, 0-255", "psnr_y": "dB", "ssim_y": "",
                          "niqe": "lower is better"},
                "shave": self.scale,
                "curves": self.curves(), "rows": self.rows()}


def sweep(models: dict[str, torch.nn.Module], dataset: Sequence[tuple[str, np.ndarray]], scale: int,
          amplitudes: Sequence[float], seed: int = 0, tile: int | None = None,
          metrics: dict[str, MetricFn] | None = None, progress: bool = True) -> SweepResult:
    """Run every model at every W on every (name, HR uint8 HxWx3) image and measure `metrics`.

    Image i uses noise seed `seed + i` at every W and for every model, so each curve is a deterministic,
    smooth function of W and the models see the same noise draws.
    """
    from tqdm import tqdm

    metrics = default_metrics() if metrics is None else metrics
    for label, model in models.items():
        if int(model.scale) != scale:
            raise ConfigError(f"model {label} upscales x{model.scale}, the sweep is at x{scale}")
    result = SweepResult(scale=scale, seed=seed, amplitudes=list(amplitudes),
                         images=[name for name, _ in dataset])
    shape = (len(dataset), len(amplitudes))
    for label in models:
        result.per_image[label] = {name: np.zeros(shape) for name in metrics}
    total = len(models) * len(dataset) * len(amplitudes)
    with tqdm(total=total, desc="sweep", disable=not progress, file=sys.stderr) as bar:
        for i, (image_name, image) in enumerate(dataset):
            hr_array, lr = protocol_pair(image, scale, source=image_name, window=SSIM_WINDOW)
            hr = from_uint8(hr_array, torch.float64)
            for label, model in models.items():
                for j, w in enumerate(amplitudes):
                    output = from_uint8(upscale_uint8(model, lr, w, seed=seed + i, tile=tile), torch.float64)
                    for name, fn in metrics.items():
                        result.per_image[label][name][i, j] = fn(output, hr, scale)
                    bar.update(1)
    return result


# -------------------------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="folder of HR images (or one image)")
    parser.add_argument("-m", "--model", action="append", required=True, dest="models",
                        help="model: shipped name, weight file, the authors' .model file or 'bicubic'; "
                             "repeat to overlay several")
    parser.add_argument("-s", "--scale", type=int, help="upscaling factor (default: the models' scale)")
    parser.add_argument("--steps", type=int, default=11, help="number of W values from --w-min to --w-max")
    parser.add_argument("--w-min", type=float, default=0.0)
    parser.add_argument("--w-max", type=float, default=1.0)
    parser.add_argument("--amplitudes", help="explicit comma-separated W values (overrides --steps)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (image i uses seed + i at every W)")
    parser.add_argument("--tile", type=int, default=None, help="tiled inference with this LR tile size")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("sweep"),
                        help="where sweep.json, sweep.csv, sweep.png and sweep.svg go")
    parser.add_argument("--no-plot", action="store_true", help="skip the figure (no matplotlib needed)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def format_table(result: SweepResult) -> str:
    """Markdown table of the dataset means: one row per (model, W)."""
    curves = result.curves()
    names = list(next(iter(curves.values())))
    rows = [[label, f"{w:g}"] + [f"{metrics[n][j]:.4f}" for n in names]
            for label, metrics in curves.items() for j, w in enumerate(result.amplitudes)]
    return markdown_table(["model", "W"] + names, rows)


def run(args: argparse.Namespace) -> int:
    amplitudes = amplitudes_from_args(args.steps, args.w_min, args.w_max, args.amplitudes)
    models = {label: load_generator(name, scale=args.scale, device=args.device)
              for name, label in zip(args.models, method_labels(args.models))}
    scales = {int(m.scale) for m in models.values()}
    scale = args.scale if args.scale is not None else scales.pop() if len(scales) == 1 else None
    if scale is None:
        raise ConfigError(f"the models have different scales {sorted(scales)}: sweep one scale at a time")
    paths = list_images(args.dataset)[: args.limit]
    dataset = [(p.stem, read_image(p).rgb_uint8()) for p in paths]
    if not args.no_plot:
        from mgbp.plotting import require_pyplot

        require_pyplot()  # fail before the long run, not after it
    result = sweep(models, dataset, scale, amplitudes, seed=args.seed, tile=args.tile,
                   progress=not args.quiet and sys.stderr.isatty())
    out = args.output_dir
    write_json(out / "sweep.json", {"dataset": str(args.dataset), "models": args.models, **result.to_json()})
    write_csv(out / "sweep.csv", result.rows())
    if not args.no_plot:
        from mgbp.plotting import plot_perception_distortion

        plot_perception_distortion(result.curves(), result.amplitudes, out / "sweep",
                                   title=f"{args.dataset.name} x{scale}: perception-distortion over W")
    print(format_table(result))
    print(f"wrote {out / 'sweep.json'}, sweep.csv" + ("" if args.no_plot else ", sweep.png, sweep.svg"))
    return 0
