"""The README's perception-distortion figure (paper Fig. 14): the shipped mgbp-x4 and the authors' MGBPv1
BOE-R1 on Set14 x4, NIQE against RMSE as the noise amplitude W goes 0 -> 1 (`mgbp sweep`, `mgbp.plotting`).

    python scripts/sweep_figure.py                                   # runs the sweep (minutes), then draws
    python scripts/sweep_figure.py --from-json out/sweep/sweep.json  # draws from a finished sweep

The sweep is `mgbp sweep ../shared/data/images/Set14 -m mgbp-x4 -m ../shared/reference/pirm2018/BOE-R1.model
--amplitudes 0,0.25,0.5,0.75,1 -o OUT --no-plot -q`; the figure goes to docs/figures/sweep_set14_x4.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIGURE = ROOT / "docs" / "figures" / "sweep_set14_x4.png"
AMPLITUDES = "0,0.25,0.5,0.75,1"


def run_sweep(out: Path) -> Path:
    from mgbp.cli import main

    dataset = SHARED / "data" / "images" / "Set14"
    boe_r1 = SHARED / "reference" / "pirm2018" / "BOE-R1.model"
    for needed in (dataset, boe_r1):
        if not needed.exists():
            sys.exit(f"sweep_figure: {needed} is missing (../shared beside the repository)")
    code = main(["sweep", str(dataset), "-m", "mgbp-x4", "-m", str(boe_r1), "--amplitudes", AMPLITUDES,
                 "-o", str(out), "--no-plot", "-q"])
    if code != 0:
        sys.exit(code)
    return out / "sweep.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-json", type=Path, help="a finished sweep's sweep.json (skip the sweep)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "sweep_set14_x4", help="sweep output folder")
    parser.add_argument("-o", "--figure", type=Path, default=FIGURE, help="the PNG to write")
    args = parser.parse_args()

    from mgbp.plotting import perception_distortion_figure, require_pyplot, save_figure

    plt = require_pyplot()
    document = json.loads((args.from_json or run_sweep(args.out)).read_text())
    labels = {"mgbp-x4": "mgbp-x4 (shipped)", "BOE-R1": "BOE-R1 (authors' MGBPv1, PIRM 2018)"}
    curves = {labels.get(name, name): values for name, values in document["curves"].items()}
    figure = perception_distortion_figure(curves, document["amplitudes"],
                                          title=f"Set14 x{document['scale']}: perception-distortion over W")
    try:
        save_figure(figure, args.figure)
    finally:
        plt.close(figure)
    for name, values in curves.items():
        print(name, "RMSE", [round(v, 2) for v in values["rmse"]], "NIQE", [round(v, 2) for v in values["niqe"]])
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
