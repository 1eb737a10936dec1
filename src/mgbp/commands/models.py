"""`mgbp models`: list the presets of Table I (and ours) with their size and cost, and the shipped weights.

Parameter counts come from building each network on the meta device (no memory, no initialisation);
multiply-accumulates per output pixel from `mgbp.models.mgbpv2.macs_per_output_pixel` (per output voxel for
MGBP-3D; the bicubic upscale is not counted).
"""

from __future__ import annotations

import dataclasses
import json

from mgbp.models.presets import PRESETS, summarize
from mgbp.models.weights import SHIPPED


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _human(count: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count:.0f}"


def run(args) -> int:
    summaries = [summarize(name) for name in PRESETS]
    if args.json:
        shipped = {name: dataclasses.asdict(entry) for name, entry in SHIPPED.items()}
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
    return 0
