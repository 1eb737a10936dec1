"""What a training run keeps on disk to resume exactly (Section IV's training, made interruptible): checkpoints
read safely and written atomically, every RNG's state, the per-step seed, and the CSV / JSONL logs trimmed back
to the checkpoint's step. Not a paper equation: the bookkeeping of `mgbp.train`, which uses all of it.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import numpy as np
import torch

from mgbp.atomic import atomic_path
from mgbp.errors import WeightFileError


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint, read with `weights_only=True`: a hostile .pt file cannot run code."""
    from mgbp.models.weights import unpickler_reason

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - refused, truncated, not a checkpoint: unpickling raises many types
        if "Weights only load failed" in str(exc):  # torch's message runs on with advice to unpickle anyway
            reason = (f"it holds Python objects besides tensors and plain values ({unpickler_reason(exc)}; a "
                      f"foreign file, or one written by an older mgbp), so it is not loaded; init_from a "
                      f".safetensors export instead")
        else:
            reason = unpickler_reason(exc)
        raise WeightFileError(f"cannot read checkpoint {path}: {reason}") from None


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save through a temp file in the same folder (never a half-written checkpoint)."""
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


def rng_state() -> dict:
    """Every RNG's state as tensors and plain numbers, so checkpoints load with `weights_only=True`."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_seed(seed: int, step: int, rank: int) -> int:
    """A distinct torch seed per (run seed, step, rank): noise draws are reproducible on resume."""
    return (int(seed) * 1_000_003 + int(step) * 1_009 + int(rank)) % (2**63 - 1)


class CsvLog:
    """Append-only CSV whose columns are fixed by the first record (later extra keys are dropped)."""

    def __init__(self, path: Path):
        self.path = path
        self.fields = None
        if path.exists() and path.stat().st_size:
            with path.open() as fh:
                self.fields = next(csv.reader(fh), None)

    def write(self, record: dict) -> None:
        new = self.fields is None
        if new:
            self.fields = list(record)
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(record)


def drop_records_after(path: Path, step: int) -> None:
    """Rewrite a log (train.csv / val.csv, or log.jsonl) without its records of steps after `step`: a run
    killed after its last checkpoint logged steps that `--resume` runs (and logs) again."""
    if not path.is_file():
        return
    if path.suffix == ".jsonl":
        records = path.read_text().splitlines(keepends=True)
        kept = [line for line in records if not line.strip() or json.loads(line).get("step", 0) <= step]
        text = "".join(kept)
    else:
        with path.open(newline="") as fh:
            records = list(csv.reader(fh))
        if not records or "step" not in records[0]:
            return
        column = records[0].index("step")
        kept = records[:1] + [row for row in records[1:] if row and float(row[column]) <= step]
        buffer = io.StringIO()
        csv.writer(buffer).writerows(kept)  # the same dialect CsvLog writes with
        text = buffer.getvalue()
    if len(kept) != len(records):
        with atomic_path(path) as temporary:
            temporary.write_text(text)
