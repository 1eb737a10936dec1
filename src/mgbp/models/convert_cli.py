"""`mgbp convert IN OUT`: rewrite any weight file `load_model` reads (notably the authors' PIRM-2018
MGBPv1 `.model` files, Figure 3 / Table V) in the project's safetensors format, config in the metadata."""

from __future__ import annotations

from pathlib import Path

import torch

from mgbp.errors import ConfigError
from mgbp.models.weights import load_model, save_model


def add_arguments(parser) -> None:
    parser.add_argument("input", help="weight file: the authors' .model or one of ours")
    parser.add_argument("output", help="output .safetensors file")
    parser.add_argument("--fp16", action="store_true", help="store the weights as float16")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")


def run(args) -> int:
    source, target = Path(args.input), Path(args.output)
    if target.exists() and not args.force:
        raise ConfigError(f"{target} exists (use --force to overwrite)")
    if target.resolve() == source.resolve():
        raise ConfigError("input and output are the same file")
    model = load_model(source)
    extra = {"converted_from": source.name}
    save_model(model, target, extra_metadata=extra, dtype=torch.float16 if args.fp16 else None)
    params = sum(p.numel() for p in model.parameters())
    print(f"{source} -> {target}: {model.family} x{model.scale}, {params:,} parameters")
    return 0
