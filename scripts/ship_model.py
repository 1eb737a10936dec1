"""Package trained weights for shipping: measure them, then write fp16 safetensors with the full record.

    python scripts/ship_model.py runs/cpu-x4-perceptual/generator.safetensors --name mgbp-x4 \
        --stage runs/cpu-x4 --stage runs/cpu-x4-perceptual
    python scripts/ship_model.py runs/cpu-x4-video/generator.safetensors --name mgbp-x4-video --video \
        --init mgbp-x4 --stage runs/cpu-x4-video --training-data "..."
    python scripts/ship_model.py runs/cpu-x4-perceptual-texture2/generator.safetensors --name mgbp-x4 \
        --init mgbp-x4 --continues --stage runs/cpu-x4-perceptual-texture --stage runs/cpu-x4-perceptual-texture2
    (--continues: a warm restart replacing the shipped file: its recorded stages are kept before the new ones)

What it records in the file's metadata (read back by `scripts/model_table.py` for the README):
- `training`: per stage, the resolved config (`config.yaml` of the run), steps, wall time and device, taken from
  the run folder and the exported generator;
- `measured`: PSNR-Y / SSIM-Y at W=0 on Set5 and Set14 (`mgbp eval`, protocol of ../shared/data/README.md) and
  RMSE / PSNR-Y / SSIM-Y / NIQE on Set14 at W = 0, 0.25, 0.5, 0.75, 1 (`mgbp sweep`), at the model's scale, measured on the fp16
  file itself, with the exact commands and the machine;
- with `--degrade SPEC ...` (a model for degraded photos, e.g. mgbp-x4-real): `degraded_w0`, PSNR-Y / SSIM-Y at
  W=0 on Set5 and Set14 clean and degraded by each SPEC (`mgbp eval --degrade`), for bicubic, the `--compare`
  models and this one;
- for a video model (`--video`), instead: frame-averaged PSNR-Y / SSIM-Y and flicker on the whole Vid4-city
  clip against per-frame bicubic and the shipped image model of the same scale (`scripts/eval_video.py`),
  plus the same on a small crop (`check`) that `tests/test_shipped.py` re-measures.
The measurements run the real command-line tools, so the figures are what a user reproduces.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from mgbp.errors import MgbpError
from mgbp.models import load_model, save_model
from mgbp.models.weights import SHIPPED, WEIGHTS_DIR, read_metadata

ROOT = Path(__file__).resolve().parents[1]
IMAGES = Path("../shared/data/images")  # relative to the repository root, where the commands run
AMPLITUDES = "0,0.25,0.5,0.75,1"
VIDEO_CHECK = ["--max-frames", "8", "--crop", "128"]  # a few seconds on a CPU, re-measured by the tests
IMAGE_DATA = ("the 291 images of ../shared/data/train (T91 + BSDS200); images smaller than a training patch "
              "skipped (t20, 78x78); no other data")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu} CPU, {os.cpu_count()} cores, torch {torch.__version__} (this repository's dev machine)"


def stage_record(run_dir: Path) -> dict:
    """What a training run folder says about itself: its resolved config and its exported generator."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    exported = run_dir / "generator.safetensors"
    if not exported.is_file():  # a run stopped before its last step: its latest export is the best one
        exported = run_dir / "generator_best.safetensors"
    meta = read_metadata(exported)
    return {
        "run": run_dir.name,
        "mode": config["mode"],
        "steps": meta.get("training_step"),  # below config["steps"] when the run was stopped there
        "wall_s": meta.get("training_wall_s"),
        "device": meta.get("training_device"),
        "validation": meta.get("validation"),
        "config": config,
    }


def run_cli(args: list[str]) -> None:
    print("+ mgbp " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "mgbp.cli", *args], check=True, cwd=ROOT)


def readable(args: list[str], weights: Path, work: Path) -> str:
    return "mgbp " + " ".join(args).replace(str(weights), "WEIGHTS").replace(str(work), "OUT")


def measure(weights: Path, work: Path, scale: int) -> dict:
    eval_json, sweep_dir = work / "eval.json", work / "sweep"
    eval_args = ["eval", "--data", str(IMAGES / "Set5"), str(IMAGES / "Set14"), "--scale", str(scale),
                 "--method", "bicubic", str(weights), "--json", str(eval_json), "--quiet"]
    sweep_args = ["sweep", str(IMAGES / "Set14"), "-m", str(weights), "--amplitudes", AMPLITUDES,
                  "-o", str(sweep_dir), "--no-plot", "-q"]
    run_cli(eval_args)
    run_cli(sweep_args)
    summary = json.loads(eval_json.read_text())["summary"]
    fidelity = {f"{row['dataset']}/{row['method'].lower()}": {"psnr_y": round(row["psnr_y"], 4),
                                                              "ssim_y": round(row["ssim_y"], 5)}
                for row in summary}
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    curve = next(iter(sweep["curves"].values()))
    return {
        "fidelity_w0": {k.replace(weights.stem, "model"): v for k, v in fidelity.items()},
        "sweep_set14": {"W": sweep["amplitudes"], **{k: [round(v, 4) for v in vs] for k, vs in curve.items()}},
        "commands": [readable(eval_args, weights, work), readable(sweep_args, weights, work)],
        "machine": machine(),
    }


def measure_degraded(weights: Path, work: Path, scale: int, specs: list[str], compare: list[str]) -> dict:
    """PSNR-Y / SSIM-Y at W=0 on clean and degraded Set5 / Set14 (`mgbp eval --degrade`), with the command."""
    out = work / "degraded.json"
    args = ["eval", "--data", str(IMAGES / "Set5"), str(IMAGES / "Set14"), "--scale", str(scale),
            "--method", "bicubic", *compare, str(weights), "--degrade", "none", *specs, "--json", str(out), "--quiet"]
    run_cli(args)
    summary = json.loads(out.read_text())["summary"]
    return {
        "degraded_w0": {f"{row['dataset']}/{row['method'].lower().replace(weights.stem, 'model')}":
                        {"psnr_y": round(row["psnr_y"], 4), "ssim_y": round(row["ssim_y"], 5)} for row in summary},
        "command": readable(args, weights, work),
    }


def run_script(args: list[str]) -> None:
    print("+ python " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def measure_video(weights: Path, work: Path, scale: int) -> dict:
    from mgbp.models.weights import default_model_for_scale

    methods = ["--scale", str(scale), "--methods", "bicubic", default_model_for_scale(scale), str(weights)]
    records = {}
    for name, extra in (("vid4_city", []), ("check", VIDEO_CHECK)):
        args = ["scripts/eval_video.py", *methods, *extra, "--quiet", "--json", str(work / f"{name}.json")]
        run_script(args)
        result = json.loads((work / f"{name}.json").read_text())
        records[name] = {
            "frames": result["frames"], "hr_size": result["hr_size"], "options": extra,
            "methods": [{"method": m["method"].replace(weights.stem, "model"), "mode": m["mode"],
                         **{k: round(m[k], 4) for k in ("psnr_y", "ssim_y", "flicker")}}
                        for m in result["methods"]],
            "command": "python " + " ".join(args[:-2]).replace(str(weights), "WEIGHTS"),
        }
    return {"video": records, "commands": [records[k]["command"] for k in records], "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="exported generator (.safetensors)")
    parser.add_argument("--name", required=True, help="shipped name, e.g. mgbp-x4")
    parser.add_argument("--stage", type=Path, action="append", default=[],
                        help="training run folder(s); none with --continues: the same weights re-configured "
                             "(e.g. by mgbp convert --noise-mask / --output-projection), re-measured")
    parser.add_argument("--description", default="")
    parser.add_argument("--video", action="store_true", help="a video (3D) model: measure on Vid4-city")
    parser.add_argument("--init", default=None, help="shipped model the first stage started from (recorded)")
    parser.add_argument("--continues", action="store_true",
                        help="the stages continue --init's own training (a warm restart of a shipped model that "
                             "replaces it): its recorded stages come first and its own start is recorded")
    parser.add_argument("--training-data", default=IMAGE_DATA, help="what the model saw, in words")
    parser.add_argument("--degrade", nargs="+", default=[], metavar="SPEC",
                        help="also measure on degraded Set5/Set14 (mgbp eval --degrade SPEC ...)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="MODEL",
                        help="models measured beside it on the degraded sets (e.g. mgbp-x4)")
    args = parser.parse_args()

    model = load_model(args.weights)
    out = ROOT / "src" / "mgbp" / "weights" / f"{args.name}.safetensors"
    if not args.stage and not args.continues:
        raise MgbpError("--stage is needed (the training runs), unless --continues re-ships --init's own training")
    stages = [stage_record(d) for d in args.stage]
    initialised_from = args.init
    if args.continues:
        if not args.init:
            raise MgbpError("--continues needs --init (the shipped model whose training the stages continue)")
        init_file = WEIGHTS_DIR / SHIPPED[args.init].filename if args.init in SHIPPED else Path(args.init)
        earlier = read_metadata(init_file)  # read before the shipped file is replaced
        stages = [*earlier.get("training", []), *stages]
        initialised_from = earlier.get("initialised_from")
    base = {
        "name": args.name,
        "description": args.description,
        "training_data": args.training_data,
        "initialised_from": initialised_from,
        "training": stages,
        "training_total_wall_s": sum(s["wall_s"] or 0 for s in stages),
    }
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / f"{args.name}.safetensors"
        save_model(model, staged, base, dtype=torch.float16)  # measure the very fp16 file we ship
        measure_with = measure_video if args.video else measure
        measured = measure_with(staged, Path(tmp), int(model.scale))
        if args.degrade:
            degraded = measure_degraded(staged, Path(tmp), int(model.scale), args.degrade, args.compare)
            measured["degraded_w0"] = degraded["degraded_w0"]
            measured["commands"] = [*measured["commands"], degraded["command"]]
    save_model(model, out, {**base, "measured": measured}, dtype=torch.float16)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), sha256 {digest}")
    print(json.dumps(measured.get("fidelity_w0") or measured["video"], indent=1))


if __name__ == "__main__":
    try:
        main()
    except (MgbpError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"ship_model: error: {exc}") from None
