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
amplitude changes. The command line (files in, tables and figure out) is `mgbp.commands.sweep`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mgbp.backprojection import check_steps
from mgbp.errors import ConfigError
from mgbp.protocol import (
    SSIM_WINDOW,
    from_uint8,
    niqe_y,
    protocol_pair,
    psnr_y,
    rmse_y,
    ssim_y,
    upscale_uint8,
)

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
          metrics: dict[str, MetricFn] | None = None, progress: bool = True, consistent: bool = False,
          consistent_steps: int | None = None) -> SweepResult:
    """Run every model at every W on every (name, HR uint8 HxWx3) image and measure `metrics`.

    Image i uses noise seed `seed + i` at every W and for every model, so each curve is a deterministic,
    smooth function of W and the models see the same noise draws. `consistent`: each output is back-projected
    onto S_f(Y) = LR before it is measured (`mgbp upscale --consistent`), in `consistent_steps` iterations
    when given.
    """
    from tqdm import tqdm

    check_steps(consistent, consistent_steps)
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
                    out = upscale_uint8(model, lr, w, seed=seed + i, tile=tile, consistent=consistent,
                                        consistent_steps=consistent_steps)
                    output = from_uint8(out, torch.float64)
                    for name, fn in metrics.items():
                        result.per_image[label][name][i, j] = fn(output, hr, scale)
                    bar.update(1)
    return result
