"""`mgbp sweep`: the perception-distortion sweep over the noise amplitude W (Section VI-A, Fig. 14; Section V-B,
Fig. 11) from the command line: the models and images in, `sweep.json`, `sweep.csv` and the figure out. The
sweep itself (protocol, seeds, metrics) is `mgbp.sweep`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgbp.errors import ConfigError
from mgbp.io import read_image
from mgbp.protocol import list_images, load_generator, method_labels
from mgbp.sweep import SweepResult, amplitudes_from_args, sweep
from mgbp.tables import markdown_table, write_csv, write_json


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
    parser.add_argument("--consistent", action="store_true",
                        help="back-project every output onto S_f(Y) = LR before measuring it (paper eqs. 4-5)")
    parser.add_argument("--consistent-steps", type=int, metavar="N",
                        help="with --consistent: N back-projection iterations (default: until converged)")
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
                   progress=not args.quiet and sys.stderr.isatty(), consistent=args.consistent,
                   consistent_steps=args.consistent_steps)
    out = args.output_dir
    write_json(out / "sweep.json", {"dataset": str(args.dataset), "models": args.models,
                                    "consistent": args.consistent, "consistent_steps": args.consistent_steps,
                                    **result.to_json()})
    write_csv(out / "sweep.csv", result.rows())
    if not args.no_plot:
        from mgbp.plotting import plot_perception_distortion

        plot_perception_distortion(result.curves(), result.amplitudes, out / "sweep",
                                   title=f"{args.dataset.name} x{scale}: perception-distortion over W")
    print(format_table(result))
    print(f"wrote {out / 'sweep.json'}, sweep.csv" + ("" if args.no_plot else ", sweep.png, sweep.svg"))
    return 0
