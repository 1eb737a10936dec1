"""`mgbp export`: write an image MGBPv2 model (Algorithm 1, bicubic input and padding included) as an ONNX
graph for ONNX Runtime, TensorRT or chaiNNer (`mgbp.export`), checked against torch in ONNX Runtime."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgbp.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mgbp.export import DEFAULT_OPSET, EXPORTERS

    parser.add_argument("model", metavar="MODEL", help="shipped model name (e.g. mgbp-x4) or weight file")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="FILE.onnx", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET}; " + ", ".join(
                            f"{name}: {low}-{high}" for name, (low, high) in EXPORTERS.items()) + ")")
    parser.add_argument("--half", action="store_true", help="float16 weights, input and output")
    parser.add_argument("--static", metavar="HxW", help="a fixed LR input size, e.g. 270x480 (default: "
                        "dynamic batch, height and width)")
    parser.add_argument("--image-only", action="store_true",
                        help="one input (the image), as chaiNNer loads; W fixed by -W, noise drawn in the graph")
    parser.add_argument("-W", "--noise", type=float, default=0.0,
                        help="noise amplitude W of an --image-only model (default 0: deterministic)")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="PyTorch exporter (default torchscript: seconds; dynamo: torch.export, minutes)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison with torch")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    from mgbp import export
    from mgbp.models import load_model

    output = Path(args.output)
    if output.suffix.lower() != ".onnx":
        raise ConfigError(f"-o {output}: the output must be an .onnx file")
    if output.is_dir():
        raise ConfigError(f"{output} is a folder")
    if output.exists() and not args.overwrite:
        raise ConfigError(f"{output} exists (use --overwrite to replace it)")
    static = None if args.static is None else export.parse_size(args.static)
    options = export.ExportOptions(opset=args.opset, half=args.half, image_only=args.image_only,
                                   static_size=static, noise_amp=args.noise, exporter=args.exporter)
    export.require_onnx()
    model = load_model(args.model, device="cpu")
    export.check_exportable(model)
    export.check_options(options, model)
    if not args.quiet:
        print(f"exporting {args.model} with the {args.exporter} exporter ...", file=sys.stderr)
    report = export.export_onnx(model, output, options, label=str(args.model), check=not args.no_check)
    if not args.quiet:
        size = "x".join(map(str, options.static_size)) if options.static_size else (
            f"dynamic N, H, W (H, W >= {report.min_side})")
        print(f"wrote {report.path}: x{report.scale}, opset {options.opset}, "
              f"{'float16' if options.half else 'float32'}, inputs {', '.join(report.inputs)}, {size}")
        if report.check_note:
            print(report.check_note)
    return 0
