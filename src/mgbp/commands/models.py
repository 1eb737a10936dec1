"""`mgbp models`: list the presets of Table I (and ours) with their size and cost, and the shipped weights.

Parameter counts come from building each network on the meta device (no memory, no initialisation);
multiply-accumulates per output pixel from `mgbp.models.mgbpv2.macs_per_output_pixel` (per output voxel for
MGBP-3D; the bicubic upscale is not counted).
"""

from __future__ import annotations

import dataclasses
import json

from mgbp.models.presets import PRESETS, summarize
from mgbp.models.weights import SHIPPED, WEIGHTS_DIR, Shipped, read_metadata


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _human(count: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count:.0f}"


def measured(entry: Shipped) -> dict:
    """The figures recorded in a shipped file's metadata by scripts/ship_model.py ({} when it has none)."""
    path = WEIGHTS_DIR / entry.filename
    if not path.is_file():
        return {}
    figures = read_metadata(path).get("measured")
    return figures if isinstance(figures, dict) else {}


def figures_line(figures: dict) -> str:
    """PSNR-Y at W=0 on Set5 / Set14 (bicubic in brackets), or the video model's Vid4-city clip; '' if none."""
    fidelity = figures.get("fidelity_w0", {})
    parts = []
    for dataset in ("Set5", "Set14"):
        model, bicubic = fidelity.get(f"{dataset}/model"), fidelity.get(f"{dataset}/bicubic")
        if model and bicubic:
            parts.append(f"{dataset} {model['psnr_y']:.2f} dB (bicubic {bicubic['psnr_y']:.2f})")
    clip = figures.get("video", {}).get("vid4_city", {})
    by_method = {m.get("method"): m for m in clip.get("methods", [])}
    if "model" in by_method and "Bicubic" in by_method:
        parts.append(f"Vid4-city {by_method['model']['psnr_y']:.2f} dB (bicubic {by_method['Bicubic']['psnr_y']:.2f})")
    return "PSNR-Y at W=0: " + ", ".join(parts) if parts else ""


def run(args) -> int:
    summaries = [summarize(name) for name in PRESETS]
    if args.json:
        shipped = {name: dataclasses.asdict(entry) | {"measured": measured(entry)} for name, entry in SHIPPED.items()}
        print(
            json.dumps({"presets": [dataclasses.asdict(s) for s in summaries], "shipped": shipped}, indent=2)
        )
        return 0
    header = f"{'preset':<12} {'family':<7} {'scale':>5} {'L':>2} {'mu':>3}  {'channels (lowest first)':<24}"
    print(f"{header} {'params':>12} {'MACs/px':>10}  source")
    for s in summaries:
        channels = "-".join(str(c) for c in s.channels)
        print(
            f"{s.name:<12} {s.family:<7} {'x' + str(s.scale):>5} {s.levels:>2} {s.mu:>3}  {channels:<24}"
            f" {s.parameters:>12,} {_human(s.macs_per_pixel):>10}  {s.source}"
        )
    print()
    if not SHIPPED:
        print(
            "shipped weights: none yet (build_model gives untrained networks; load_model reads weight files)"
        )
    for name, entry in SHIPPED.items():
        print(f"shipped {name}: x{entry.scale} {entry.filename}  {entry.description}")
        line = figures_line(measured(entry))
        if line:
            print(f"    {line}")
    return 0
