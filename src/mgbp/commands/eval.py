"""`mgbp eval`: the command line of the paper's Table II evaluation (PSNR-Y / SSIM-Y, with NIQE and RMSE, the
perception and distortion axes of Fig. 14, on request): options in, the summary table (and per-image rows) on
stdout, JSON / CSV / Markdown files out. The evaluation itself (protocol, methods, seeds, metrics) is
`mgbp.evaluate.evaluate`; its module docstring describes the protocol and the options' meaning.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mgbp.evaluate import evaluate
from mgbp.protocol import BICUBIC


def sample_image() -> Path:
    """The bundled 128x128 sample (a crop of Set5 `butterfly`), the default data of `mgbp eval`."""
    return Path(__file__).resolve().parents[1] / "assets" / "sample.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", metavar="DIR",
                        help="dataset folders (or single images) of HR images, e.g. ../shared/data/images/Set5 "
                             "(default: the bundled 128x128 sample image)")
    parser.add_argument("--scale", nargs="+", type=int, default=[4], metavar="F", help="upscaling factors (4)")
    parser.add_argument("--method", action="extend", nargs="+", metavar="NAME_OR_FILE",
                        help="bicubic (default), a shipped model name, a .safetensors or an authors' .model "
                             "file; repeat or list several")
    parser.add_argument("--noise", type=float, default=0.0, metavar="W", help="noise amplitude W (0)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (image i uses seed + i)")
    parser.add_argument("--niqe", action="store_true", help="also measure NIQE (no reference)")
    parser.add_argument("--rmse", action="store_true", help="also measure RMSE (0-255, Y, border cropped)")
    parser.add_argument("--per-image", action="store_true", help="print and write per-image rows")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write all results as JSON")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write the table as CSV")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the table as Markdown")
    parser.add_argument("--save-images", type=Path, metavar="DIR",
                        help="write outputs as DIR/<dataset>/x<scale>/<method>/<image>.png")
    parser.add_argument("--degrade", nargs="+", metavar="SPEC",
                        help="degrade the protocol's LR after the bicubic downscale, one test set per SPEC: "
                             "jpeg:Q (Pillow, 4:2:0), noise:S (Gaussian sigma S of 255), blur:S (Gaussian, LR "
                             "pixels), combined with '+' (jpeg:40+noise:10); none: the clean protocol")
    parser.add_argument("--sr", nargs="+", metavar="DIR",
                        help="folders of outputs made by other tools from the protocol's LR images, one method per "
                             "folder, matched by name: baby.png, baby_x4.png, baby_SR.png, baby_out.png, ... "
                             "(in DIR/<dataset>/ or DIR)")
    parser.add_argument("--save-lr", type=Path, metavar="DIR",
                        help="write the protocol's LR images as DIR/<dataset>/x<scale>/<image>.png (the inputs to "
                             "give another tool)")
    parser.add_argument("--lpips", action="store_true",
                        help="also LPIPS through pyiqa, if installed with its weights on disk (never downloaded)")
    parser.add_argument("--dists", action="store_true",
                        help="also DISTS through pyiqa, if installed with its weights on disk (never downloaded)")
    parser.add_argument("--lr", nargs="+", metavar="DIR",
                        help="paired LR folders, one per --data folder (instead of bicubic downscaling)")
    parser.add_argument("--tile", type=int, metavar="N", help="LR tile size for model inference (auto)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="run every model as the mean over the 8 flips/rotations of its input (W = 0; "
                             "labels get '+SE')")
    parser.add_argument("--consistent", action="store_true",
                        help="back-project every output onto S_f(Y) = LR before scoring, as `mgbp upscale "
                             "--consistent` writes it (paper eqs. 4-5; labels get '+BP')")
    parser.add_argument("--consistent-steps", type=int, metavar="N",
                        help="with --consistent: N back-projection iterations (labels get '+BPN'; "
                             "default: until S_f(Y) = LR to half a grey level)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--strict", action="store_true", help="stop at an unreadable image instead of skipping")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mgbp import tables
    from mgbp.atomic import check_writable

    for option, path in (("--json", args.json), ("--csv", args.csv), ("--markdown", args.markdown)):
        if path is not None:  # before the evaluation, not after it
            check_writable(path, f"{option} {path}")
    learned = [name for name in ("lpips", "dists") if getattr(args, name)]
    methods = args.method or ([] if args.sr else [BICUBIC])
    results = evaluate(args.data or [sample_image()], args.scale, methods, noise=args.noise, niqe=args.niqe,
                       rmse=args.rmse, lr_dirs=args.lr, tile=args.tile, device=args.device,
                       save_images=args.save_images, seed=args.seed, strict=args.strict,
                       progress=not args.quiet, self_ensemble=args.self_ensemble, degrade=args.degrade,
                       sr_dirs=args.sr, learned=learned, save_lr=args.save_lr, consistent=args.consistent,
                       consistent_steps=args.consistent_steps)
    document = results.to_dict()
    print(tables.text_table(*tables.summary_grid(document["summary"])))
    if args.per_image:
        print()
        print(tables.text_table(*tables.image_grid(document["images"])))
    if results.skipped:
        print(f"\n{len(results.skipped)} image(s) skipped (see warnings above)")
    if args.json:
        tables.write_text(args.json, tables.json_document(document))
    if args.csv:
        tables.write_text(args.csv, tables.csv_document(document, args.per_image))
    if args.markdown:
        tables.write_text(args.markdown, tables.markdown_document(document, args.per_image))
    return 0
