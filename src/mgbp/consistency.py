"""Back-projection consistency S_f(Y) = x: measure it, and enforce it with classic IBP (paper eqs. 3-5).

The prior behind MGBP (Section II, eq. 1 and Section III-A, eq. 3) is that a good output Y, downscaled by the
degradation operator S_f (MATLAB bicubic `imresize(Y, 1/f)`, the operator that made the LR input), gives back
the input: S_f(Y) = x. This module

- measures the LR mismatch e = x - S_f(Y) of any output against its input (max |e| and RMSE, per image and
  per dataset), and
- enforces the prior with the classic Iterative Back-Projection of eqs. 4-5,
      e_k = x - S_f(y_k),    y_{k+1} = y_k + step * P(e_k),    P = bicubic upscale imresize(e, f),
  until max |e_k| < tol (default half a grey level, 0.5/255) or `max_iter` iterations.

Convergence (measured with the dense per-axis matrices of `mgbp.resize`, f = 2, 3, 4, 8, 16 and LR lengths
1..69 and 500): the LR error evolves as e_{k+1} = (I - step * S_f P) e_k, and S_f P is separable with per-axis
factors M = S_f P whose eigenvalues are real and lie in [0.472, 1.0]; the 2-D operator therefore has its
spectrum in [0.223, 1.0]. With the classic step 1 the error shrinks by at most 1 - 0.223 = 0.777 per
iteration (about 25 iterations from a max error of 1.0 in the worst case); the best fixed step
2 / (0.223 + 1) = 1.63 gives 0.635. We use step 1.6 by default (contraction <= max(|1 - 1.6*0.223|,
|1 - 1.6|) = 0.643, about 2.3 iterations per factor e: ~14 iterations from a max error of 1.0 to 0.5/255).
Measured from Y = 0 against a checkerboard LR (the slowest mode plus DC, max error 1.0), f = 2, 3, 4, 8:
13 iterations at step 1.6 (observed rate 0.59-0.61), 20-22 at step 1 (0.75-0.76); uniform random inputs
take 11 at step 1.6. Every update lies in the range of P, so the iteration converges to
y_0 + P (S_f P)^{-1} e_0, the back-projection of the initial mismatch; the tests check that limit against a
float64 dense-matrix solve.

By default the enforced output is not clamped: clamping to [0, 1] (or rounding to uint8) afterwards moves it
off the constraint again (`measure_consistency` reports what survives rounding). `clamp=True` (the command's
default, since it writes images) clips to [0, 1] inside the loop instead, which keeps the saved image
consistent to about half a grey level.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mgbp.errors import ConfigError
from mgbp.io import read_image
from mgbp.protocol import (
    forward_with_noise,
    from_uint8,
    list_images,
    load_generator,
    protocol_pair,
    psnr_y,
    to_uint8,
)
from mgbp.resize import imresize, to_uint8_range
from mgbp.tables import markdown_table, write_csv, write_json

DEFAULT_TOL = 0.5 / 255
DEFAULT_MAX_ITER = 60
DEFAULT_STEP = 1.6  # see the module docstring: spectrum of S_f P in [0.223, 1]


@dataclass
class ConsistencyInfo:
    """What `enforce_consistency` did: the LR max error (in [0,1] units) before and after, per iteration."""

    iterations: int
    converged: bool
    max_error_before: float
    max_error_after: float
    history: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _check_pair(lr: torch.Tensor, output: torch.Tensor, scale: int) -> None:
    if not (torch.is_tensor(lr) and torch.is_tensor(output)):
        raise ConfigError("consistency expects tensors for the input and the output")
    if int(scale) != scale or scale < 1:
        raise ConfigError(f"consistency needs an integer scale >= 1, got {scale}")
    expected = (lr.shape[-2] * int(scale), lr.shape[-1] * int(scale))
    if tuple(output.shape[:-2]) != tuple(lr.shape[:-2]) or tuple(output.shape[-2:]) != expected:
        raise ConfigError(f"output shape {tuple(output.shape)} does not match input {tuple(lr.shape)} "
                          f"upscaled x{int(scale)}")


def downscale(output: torch.Tensor, scale: int) -> torch.Tensor:
    """S_f: MATLAB bicubic downscale by 1/f (antialiased), the degradation that made the input."""
    return imresize(output, scale=1.0 / scale)


def lr_error(lr: torch.Tensor, output: torch.Tensor, scale: int) -> torch.Tensor:
    """e = x - S_f(Y) (eq. 4), same shape as `lr`."""
    _check_pair(lr, output, scale)
    return lr - downscale(output, scale)


def measure_consistency(lr: torch.Tensor, output: torch.Tensor, scale: int) -> dict[str, torch.Tensor]:
    """Per-image mismatch of S_f(Y) against x for (N,C,h,w) / (N,C,fh,fw) tensors in [0,1].

    Returns float64 tensors (N,): `max_abs` and `rmse` of x - S_f(Y) on the [0,255] scale, for Y as given,
    and `max_abs_uint8`, `rmse_uint8` for Y rounded to uint8 first (what a saved image keeps).
    """
    lr64, out64 = lr.to(torch.float64), output.to(torch.float64)
    rounded = to_uint8_range(out64 * 255) / 255  # clipped and rounded as a saved image is
    result = {}
    for suffix, candidate in (("", out64), ("_uint8", rounded)):
        error = lr_error(lr64, candidate, scale).flatten(1) * 255
        result["max_abs" + suffix] = error.abs().amax(dim=1)
        result["rmse" + suffix] = error.pow(2).mean(dim=1).sqrt()
    return result


def enforce_consistency(lr: torch.Tensor, output: torch.Tensor, scale: int, tol: float = DEFAULT_TOL,
                        max_iter: int = DEFAULT_MAX_ITER, step: float = DEFAULT_STEP, clamp: bool = False):
    """Classic iterative back-projection (eqs. 4-5) of `output` onto {Y : S_f(Y) = lr}.

    Iterates e = lr - S_f(y), y <- y + step * imresize(e, f) until max |e| < tol over the whole batch or
    `max_iter` iterations. Works in float64 (the tolerance is far below float32 rounding of large sums),
    returns the output in the input's dtype and a `ConsistencyInfo`.

    `clamp=True` clips y to [0, 1] after every update (alternating projections onto the constraint and the
    valid range): the result then survives saving as uint8 (on Set5 x4 bicubic outputs: max |e| 0.43-0.50 grey
    levels after clipping and rounding, against 2.6-11.7 for the unclamped result clipped afterwards), at
    the price of the convergence guarantee (7-37 iterations measured there instead of 4-6).
    """
    _check_pair(lr, output, scale)
    if not 0 < step < 2:
        raise ConfigError(f"back-projection step must be in (0, 2) for convergence, got {step}")
    if tol <= 0 or max_iter < 0:
        raise ConfigError("tol must be positive and max_iter non-negative")
    x = lr.to(torch.float64)
    y = output.to(torch.float64)
    error = x - downscale(y, scale)
    history = [float(error.abs().max())]
    iterations = 0
    while history[-1] >= tol and iterations < max_iter:
        y = y + step * imresize(error, scale=float(scale))
        if clamp:
            y = y.clamp(0.0, 1.0)
        error = x - downscale(y, scale)
        history.append(float(error.abs().max()))
        iterations += 1
    info = ConsistencyInfo(iterations=iterations, converged=history[-1] < tol,
                           max_error_before=history[0], max_error_after=history[-1], history=history)
    return y.to(output.dtype), info


# ----------------------------------------------------------------------------------------------- command line

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
                from mgbp.io import write_image

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
