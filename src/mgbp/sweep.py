"""Perception-distortion sweep over the noise amplitude W (paper Section VI-A, Fig. 14; Section V-B, Fig. 11).

MGBP's generators take noise inputs W * N(0, 1) (Algorithm 1, line 1): W = 0 targets distortion (the point
X* of Fig. 2), W = 1 perception (an alias image in A(X) ∩ H_real). `mgbp sweep` moves W from 0 to 1 over a
dataset and measures, at every W, the distortion (RMSE, PSNR-Y, SSIM-Y) and the perceptual score (NIQE) of
the outputs, then draws the parametric curve NIQE against RMSE with each point labelled by W, as in Fig. 14.
Several models (for example the authors' PIRM-2018 R1/R2/R3 weights, Fig. 11) are overlaid in one figure.

Evaluation protocol (`shared/data/README.md`): HR -> modcrop(f) -> LR = MATLAB bicubic 1/f on uint8 ->
model -> round to uint8 -> scores with `f` border pixels shaved: PSNR-Y / SSIM-Y as in Table II, RMSE
(uint8 Y) and NIQE as in the PIRM-SR 2018 scoring scripts, so R1/R2/R3 land in the challenge's RMSE regions.

Smooth curves need the same noise at every W: before each forward the global RNG is re-seeded (inside
`torch.random.fork_rng`, so the caller's RNG state is untouched) with `seed + image index`. A generator that
draws its standard-normal maps with torch's RNG and scales them by W (every MGBP family does, MGBPv1's
per-level maps included, and so does tiled inference, which draws tile by tile in a fixed order) therefore
sees exactly the same maps at every W; only their amplitude changes.

This module also holds the small helpers that the other research tools (`mgbp.linearscope`,
`mgbp.consistency`) share: the bicubic pseudo-model, model loading, the data protocol and atomic writes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mgbp.atomic import write_bytes_atomically
from mgbp.errors import ConfigError, ImageReadError
from mgbp.resize import imresize, imresize_uint8, modcrop, to_uint8_range

METRIC_NAMES = ("rmse", "psnr_y", "ssim_y", "niqe")
_FALLBACK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# ------------------------------------------------------------------------------------------ shared helpers

class BicubicUpscaler(torch.nn.Module):
    """MATLAB bicubic upscaling as a generator (the baseline of every table, and the linear reference of
    Linearscope): same interface as the MGBP generators, no noise, exactly linear."""

    family = "bicubic"
    is_video = False
    noise_channels = 0
    border_lr = 3  # 4-tap kernel plus the symmetric boundary

    def __init__(self, scale: int = 4):
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ConfigError(f"bicubic scale must be an integer >= 1, got {scale}")
        self.scale = int(scale)

    def forward(self, lr: torch.Tensor, noise_amp=0.0, noise=None) -> torch.Tensor:
        return imresize(lr, scale=float(self.scale))


def default_device(device: str | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_generator(name: str, scale: int | None = None, device: str | None = None) -> torch.nn.Module:
    """`bicubic` (at `scale`, default 4) or anything `mgbp.models.load_model` accepts, in eval mode."""
    if name == "bicubic":
        return BicubicUpscaler(scale or 4)
    from mgbp.models import load_model

    model = load_model(name, device=default_device(device))
    model.eval()
    return model


def model_label(name: str) -> str:
    """Short legend label: the file stem of a weight file, the name of a shipped model."""
    path = Path(name)
    return path.stem if path.suffix else name


def model_device(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters(), None)
    if parameter is None:
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype


def forward_with_noise(model: torch.nn.Module, lr: torch.Tensor, noise_amp: float, seed: int = 0,
                       tile: int | None = None, overlap: int | None = None) -> torch.Tensor:
    """One forward at noise amplitude W with the RNG seeded to `seed`: the same standard-normal maps for
    every W. Runs tiled through `mgbp.inference.run_model` when `tile` is given."""
    device, dtype = model_device(model)
    lr = lr.to(device=device, dtype=dtype)
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        if tile is None:
            return model(lr, noise_amp=float(noise_amp))
        from mgbp.inference import run_model

        return run_model(model, lr, float(noise_amp), tile, overlap)  # overlap None: its safe default


def image_extensions() -> tuple[str, ...]:
    try:
        from mgbp.io import IMAGE_EXTENSIONS
    except ImportError:  # the I/O module is optional for listing
        return _FALLBACK_EXTENSIONS
    return tuple(e.lower() for e in IMAGE_EXTENSIONS)


def list_images(path: Path) -> list[Path]:
    """Images of a folder (sorted by name), or the one image given."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ImageReadError(f"no such file or folder: {path}")
    extensions = image_extensions()
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if not images:
        raise ImageReadError(f"no images in {path}")
    return images


def load_rgb_uint8(path: Path) -> np.ndarray:
    """An image as uint8 HxWx3 (grey replicated to RGB, 16-bit rounded to 8-bit, alpha dropped)."""
    from mgbp.io import read_image

    rgb = np.asarray(read_image(path).rgb, dtype=np.float32)
    if rgb.ndim == 2:
        rgb = rgb[:, :, None]
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.clip(np.round(rgb[:, :, :3] * 255.0), 0, 255).astype(np.uint8)


def protocol_lr(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(modcropped HR, LR) as uint8 arrays: the benchmark degradation of `shared/data/README.md`."""
    hr = modcrop(hr, scale)
    if min(hr.shape[:2]) < scale:
        raise ConfigError(f"image of {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {scale}")
    return hr, imresize_uint8(hr, scale=1.0 / scale)


def from_uint8(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 HxWx3 -> (1,3,H,W) in [0,1] (float64 keeps k/255 exact for the metrics)."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].to(dtype) / 255.0


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) float in [0,1] -> uint8 HxWx3, rounded half away from zero and clipped (MATLAB's rule)."""
    return to_uint8_range(image.detach()[0].to(torch.float64) * 255).permute(1, 2, 0).cpu().numpy().astype(
        np.uint8)


def psnr_y(output: torch.Tensor, reference: torch.Tensor, scale: int) -> torch.Tensor:
    from mgbp.metrics import psnr

    return psnr(output, reference, crop=scale, y_channel=True)


def write_json_atomic(path: Path, data) -> None:
    write_bytes_atomically(path, (json.dumps(data, indent=2) + "\n").encode())


def write_csv_atomic(path: Path, rows: Sequence[dict]) -> None:
    if not rows:
        raise ConfigError("nothing to write")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomically(path, buffer.getvalue().encode())


# ------------------------------------------------------------------------------------------------ the sweep

MetricFn = Callable[[torch.Tensor, torch.Tensor, int], float]


def default_metrics() -> dict[str, MetricFn]:
    """The PIRM-SR 2018 scores (their `calc_scores.m`, behind Fig. 11 and Table V): `scale` border pixels
    shaved (4 at x4), RMSE on the uint8 Y channel (rounded like MATLAB's rgb2ycbcr of uint8), NIQE on the
    shaved output; PSNR-Y and SSIM-Y as in Table II (same shave)."""
    from mgbp import metrics

    def shave(x, border):
        return x[..., border:-border, border:-border] if border > 0 else x

    return {
        "rmse": lambda out, hr, f: float(metrics.rmse(out, hr, crop=f, y_channel=True, round_y=True)[0]),
        "psnr_y": lambda out, hr, f: float(metrics.psnr(out, hr, crop=f, y_channel=True)[0]),
        "ssim_y": lambda out, hr, f: float(metrics.ssim(out, hr, crop=f, y_channel=True)[0]),
        "niqe": lambda out, hr, f: float(metrics.niqe(shave(out, f))[0]),
    }


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
        if int(getattr(model, "scale", scale)) != scale:
            raise ConfigError(f"model {label} upscales x{model.scale}, the sweep is at x{scale}")
    result = SweepResult(scale=scale, seed=seed, amplitudes=list(amplitudes),
                         images=[name for name, _ in dataset])
    shape = (len(dataset), len(amplitudes))
    for label in models:
        result.per_image[label] = {name: np.zeros(shape) for name in metrics}
    total = len(models) * len(dataset) * len(amplitudes)
    with tqdm(total=total, desc="sweep", disable=not progress, file=sys.stderr) as bar:
        for i, (_, image) in enumerate(dataset):
            hr_array, lr_array = protocol_lr(image, scale)
            hr, lr = from_uint8(hr_array, torch.float64), from_uint8(lr_array)
            for label, model in models.items():
                for j, w in enumerate(amplitudes):
                    output = forward_with_noise(model, lr, w, seed=seed + i, tile=tile)
                    output = from_uint8(to_uint8(output), torch.float64)  # the protocol's uint8 rounding
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
    lines = ["| model | W | " + " | ".join(names) + " |", "| --- " * (len(names) + 2) + "|"]
    for label, metrics in curves.items():
        for j, w in enumerate(result.amplitudes):
            lines.append(f"| {label} | {w:g} | " + " | ".join(f"{metrics[n][j]:.4f}" for n in names) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    amplitudes = amplitudes_from_args(args.steps, args.w_min, args.w_max, args.amplitudes)
    models: dict[str, torch.nn.Module] = {}
    for name in args.models:
        label = model_label(name)
        if label in models:
            raise ConfigError(f"model {label!r} given twice")
        models[label] = load_generator(name, scale=args.scale, device=args.device)
    scales = {int(m.scale) for m in models.values()}
    scale = args.scale if args.scale is not None else scales.pop() if len(scales) == 1 else None
    if scale is None:
        raise ConfigError(f"the models have different scales {sorted(scales)}: sweep one scale at a time")
    paths = list_images(args.dataset)[: args.limit]
    dataset = [(p.stem, load_rgb_uint8(p)) for p in paths]
    if not args.no_plot:
        from mgbp.plotting import require_pyplot

        require_pyplot()  # fail before the long run, not after it
    result = sweep(models, dataset, scale, amplitudes, seed=args.seed, tile=args.tile,
                   progress=not args.quiet and sys.stderr.isatty())
    out = args.output_dir
    write_json_atomic(out / "sweep.json", {"dataset": str(args.dataset), "models": args.models,
                                           **result.to_json()})
    write_csv_atomic(out / "sweep.csv", result.rows())
    if not args.no_plot:
        from mgbp.plotting import plot_perception_distortion

        plot_perception_distortion(result.curves(), result.amplitudes, out / "sweep",
                                   title=f"{args.dataset.name} x{scale}: perception-distortion over W")
    print(format_table(result))
    print(f"wrote {out / 'sweep.json'}, sweep.csv" + ("" if args.no_plot else ", sweep.png, sweep.svg"))
    return 0
