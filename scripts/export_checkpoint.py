"""Export the generator of a training checkpoint (`last.pt`) as a weight file, as `mgbp train` does at its end.

A run stopped before its last step (a time bound, Ctrl-C, a scheduler's SIGTERM) saves `last.pt` but exports
nothing; `scripts/gpu_session.sh` brings back that checkpoint when its TRAIN_SECONDS bound stops the training.
This writes the checkpoint's EMA generator (its plain generator when the run had no EMA) with the metadata of
`Trainer.export`: recipe, step, wall time, data and the device, which the checkpoint does not hold (--device).

    python scripts/export_checkpoint.py OUT/run/last.pt runs/gpu-x2-b/generator.safetensors --device "NVIDIA H200 x1"
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mgbp.models import save_model
from mgbp.train import build_generator, export_metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--device", required=True, help="where it was trained, e.g. 'NVIDIA H200 x1'")
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        raise SystemExit(f"export_checkpoint: {args.checkpoint} is not a file")
    if args.output.exists():
        raise SystemExit(f"export_checkpoint: {args.output} exists; not overwritten")
    try:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)  # our own file: the run's state
    except Exception as exc:  # noqa: BLE001 (any unreadable file gets the same one line)
        raise SystemExit(f"export_checkpoint: {args.checkpoint} is not a training checkpoint ({type(exc).__name__})")
    if not {"config", "generator", "step", "wall_s"} <= set(state if isinstance(state, dict) else ()):
        raise SystemExit(f"export_checkpoint: {args.checkpoint} is not a checkpoint of `mgbp train` (last.pt)")
    cfg = state["config"]
    model = build_generator(cfg["model"], cfg["data"].get("frames"))
    weights = state["ema"] if state.get("ema") is not None else state["generator"]
    model.load_state_dict({k.removeprefix("module."): v for k, v in weights.items()})
    meta = export_metadata(cfg, state["step"], state["wall_s"], args.device, None)  # last.pt keeps no validation
    meta["stopped_at"] = f"step {state['step']} of {cfg['steps']}"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, args.output, meta)
    print(f"{args.checkpoint} (step {state['step']}) -> {args.output}")


if __name__ == "__main__":
    main()
