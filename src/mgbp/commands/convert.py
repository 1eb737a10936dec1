"""`mgbp convert IN OUT`: rewrite any weight file `load_model` reads (notably the authors' PIRM-2018
MGBPv1 `.model` files, Figure 3 / Table V) in the project's safetensors format, config in the metadata.

`--to-3d` turns an image MGBPv2 into the MGBP-3D network (Section III-A) that gives the same output frame by
frame (`mgbp.models.mgbpv2.inflate_to_3d`): the starting point for training a video model.
`--noise-mask` and `--output-projection` set an image MGBPv2's input and output extensions (same weights).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mgbp.errors import ConfigError
from mgbp.models.growth import deepen, inflate_to_3d
from mgbp.models.noise_mask import NoiseMask, with_noise_mask
from mgbp.models.output_projection import OutputProjection, with_output_projection
from mgbp.models.weights import load_model, save_model


def add_arguments(parser) -> None:
    parser.add_argument("input", help="weight file (the authors' .model or one of ours) or a shipped name")
    parser.add_argument("output", help="output .safetensors file")
    parser.add_argument("--fp16", action="store_true", help="store the weights as float16")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    parser.add_argument("--to-3d", action="store_true",
                        help="inflate an image MGBPv2 into MGBP-3D with the same per-frame output")
    parser.add_argument("--frames", type=int, default=None, help="with --to-3d: the clip length to record")
    parser.add_argument("--mu", type=int, default=None,
                        help="grow an MGBPv2 to MU back-projection steps per level, same output (a warm start)")
    parser.add_argument("--noise-mask", metavar="FLAT,BUSY,FLOOR,GAIN", default=None,
                        help="shape an image MGBPv2's noise by the input's local texture (mgbp.models.noise_mask); "
                             "'off' removes a mask")
    parser.add_argument("--output-projection", metavar="STEPS[,noise]", default=None,
                        help="end an image MGBPv2 with STEPS back-projection steps onto its input "
                             "(mgbp.models.output_projection); ',noise': only at W > 0; 'off' removes them")


def parse_noise_mask(text: str) -> NoiseMask | None:
    """'off' -> None; 'FLAT,BUSY,FLOOR,GAIN' -> NoiseMask (ConfigError otherwise)."""
    if text.strip().lower() == "off":
        return None
    try:
        flat, busy, floor, gain = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--noise-mask takes FLAT,BUSY,FLOOR,GAIN (four numbers) or 'off', got {text!r}") from None
    return NoiseMask(flat=flat, busy=busy, busy_floor=floor, gain=gain)


def parse_output_projection(text: str) -> OutputProjection | None:
    """'off' -> None; 'STEPS' or 'STEPS,noise' -> OutputProjection (ConfigError otherwise)."""
    if text.strip().lower() == "off":
        return None
    parts = [p.strip().lower() for p in text.split(",")]
    if len(parts) > 2 or not parts[0].isdigit() or (len(parts) == 2 and parts[1] != "noise"):
        raise ConfigError(f"--output-projection takes STEPS, STEPS,noise or 'off', got {text!r}")
    return OutputProjection(steps=int(parts[0]), noise_only=len(parts) == 2)


def run(args) -> int:
    source, target = Path(args.input), Path(args.output)
    if target.exists() and not args.force:
        raise ConfigError(f"{target} exists (use --force to overwrite)")
    if target.resolve() == source.resolve():
        raise ConfigError("input and output are the same file")
    if args.mu is not None and args.to_3d:
        raise ConfigError("--mu and --to-3d are separate conversions: run one, then the other")
    if args.mu is not None and args.mu < 1:
        raise ConfigError(f"--mu must be positive, got {args.mu}")
    if args.frames is not None and not args.to_3d:
        raise ConfigError("--frames goes with --to-3d")
    if args.frames is not None and args.frames < 1:
        raise ConfigError(f"--frames must be positive, got {args.frames}")
    mask = parse_noise_mask(args.noise_mask) if args.noise_mask is not None else None
    projection = parse_output_projection(args.output_projection) if args.output_projection is not None else None
    model = load_model(args.input)
    extra = {"converted_from": source.name}
    if args.mu is not None:
        grown = deepen(model, args.mu)  # refuses a model that is not an MGBPv2 before its config is read
        extra["deepened_from_mu"] = model.config.mu
        model = grown
    if args.to_3d:
        model = inflate_to_3d(model, frames=args.frames)
        extra["inflated_to_3d"] = True
    if args.noise_mask is not None:
        model = with_noise_mask(model, mask)
        extra["noise_mask"] = args.noise_mask
    if args.output_projection is not None:
        model = with_output_projection(model, projection)
        extra["output_projection"] = args.output_projection
    save_model(model, target, extra_metadata=extra, dtype=torch.float16 if args.fp16 else None)
    params = sum(p.numel() for p in model.parameters())
    print(f"{source} -> {target}: {model.family} x{model.scale}, {params:,} parameters")
    return 0
