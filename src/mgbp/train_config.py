"""The training configuration of `mgbp train` (Section IV): defaults, YAML files with `base:` chains, and
`key=value` overrides, validated; and the learning-rate schedule (Adam 1e-4 halved every 200k steps by
default, as in the paper; cosine and constant schedules and a linear warm-up as options).

A config is a plain nested dict; `DEFAULTS` documents every key. Loading order: DEFAULTS <- the YAML file (and
the files its `base:` names, recursively) <- command-line overrides. Unknown keys are errors, so a typo never
silently trains the wrong model.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import yaml

from mgbp.errors import ConfigError

DEFAULTS: dict = {
    "mode": "fidelity",  # fidelity | perceptual
    "seed": 0,
    "output_dir": "runs/default",
    "steps": 1000,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "amp": "auto",  # auto (bf16 on GPU, off on CPU) | off | bf16 | fp16
    "compile": False,  # torch.compile the training forward
    "cpu_threads": None,  # torch intra-op threads on CPU (null: torch's default)
    "log_every": 50,
    "checkpoint_every": 1000,
    "export": True,  # write generator.safetensors (and generator_best.safetensors) via mgbp.models.save_model
    "export_dtype": None,  # null: as trained (float32); "float16" for small shipped files
    "model": {
        "preset": "tiny",  # a name for mgbp.models.build_model
        "overrides": {},  # keyword overrides for build_model
        "config": None,  # or an explicit MGBPv2Config dict (used when preset is null)
    },
    "init_from": None,  # generator weights to start from: a training checkpoint (.pt) or a weight file
    "data": {
        "train": ["../shared/data/train"],
        "lr_train": None,  # paired LR folder(s) instead of on-the-fly bicubic degradation
        "video": False,  # clips (N,3,T,H,W) from frame folders / video files for MGBP-3D
        "frames": 5,
        "max_frames": None,  # per video sequence (memory)
        "stills": None,  # image folders panned into clips (data.PanningClipDataset), video models only
        "stills_fraction": 0.5,  # share of clips drawn from `stills` when `train` has videos too
        "pan": 3,  # largest motion of a panned still, HR pixels per frame
        "patch": 48,  # LR patch side; the HR patch is patch * scale
        "batch": 16,  # global batch (split over DDP processes)
        "workers": 2,
        "cache": True,  # decode every image once into a uint8 in-memory cache
        "augment": True,  # 8 flips / 90-degree rotations
        "skip_bad": False,
        # LR by the Real-ESRGAN second-order model (mgbp.degradations.DegradationConfig: a mapping, {} for its
        # defaults) instead of the paper's bicubic S_f(X); null: bicubic
        "degradation": None,
    },
    "val": {
        "folder": None,  # validation images (full images, evaluation protocol); null: no validation
        "every": 1000,
        "max_images": None,
        "noise_amp": 1.0,  # W of the perceptual validation (eq. 14)
    },
    "optim": {
        "lr": 1.0e-4,
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
        "schedule": "step",  # step | cosine | constant
        "step_every": 200000,  # step schedule: multiply by gamma every step_every steps
        "gamma": 0.5,
        "warmup": 0,  # linear warm-up steps
        "min_lr": 0.0,  # cosine floor
        "grad_clip": 0.0,  # max global grad norm; 0 = off
    },
    "d_optim": {"lr": 1.0e-4, "betas": [0.9, 0.999], "weight_decay": 0.0},  # same schedule as optim
    "ema": 0.0,  # EMA decay of the generator (e.g. 0.999); 0 = off. Validation/export use the EMA.
    "loss": {
        # fidelity, eq. 9
        "l1": 1.0,
        "cycle": 1.0,
        "l2": 0.0,  # ours: mean squared error on Y_{W=0} (the "L1, then L2" fine-tune); 0 = off
        # perceptual, eq. 11 (0 switches a term off)
        "gan": 0.001,
        "cycle_w1": 0.1,
        "cx": 0.1,
        "l1_w0": 10.0,
        "cycle_w0": 0.1,
        "cx_bandwidth": 0.5,
        "texture_w1": 0.0,  # ours: local-std matching of Y_{W=1} against X (mgbp.losses.texture_loss); 0 = off
        "texture_log_w1": 0.0,  # ours: the same on log(std + 1/255) (mgbp.losses.log_texture_loss); 0 = off
        "texture_flat_w1": 0.0,  # ours: excess local std where X is flat (mgbp.losses.flat_texture_loss); 0 = off
        "texture_flat_margin": 0.0,  # grey levels (0..255) of excess grain the flat-region term lets pass
        "noise": True,  # False: the no-noise ablation of Fig. 15 (W = 0 in every term)
        "vgg_weights": None,  # torchvision VGG19 state dict; without it CX is off (warning)
    },
    "discriminator": {"features": 64, "vnsc": True},
}


# ------------------------------------------------------------------------------------------ config
def _merge(base: dict, update: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"unknown config key '{where}{key}'")
        if isinstance(base[key], dict) and key not in ("overrides",) and base[key] is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where}{key} must be a mapping")
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _numbers(value):
    """YAML 1.1 reads `1e-4` (no dot) as a string: turn such strings into floats, recursively."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and _SCIENTIFIC.match(value):
        return float(value)
    return value


def parse_override(text: str) -> dict:
    """`a.b=value` -> {"a": {"b": value}} with the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    try:
        value = _numbers(yaml.safe_load(raw)) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: bad value: {exc}") from exc
    node: dict = {}
    cursor = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return node


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    """A config file as a dict; a `base: other.yaml` key (relative to the file) is loaded first."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config {path} includes itself through 'base'")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping")
    loaded.pop("description", None)
    base = loaded.pop("base", None)
    loaded = _numbers(loaded)
    if base is None:
        return loaded
    parent = _read_yaml(path.parent / base, seen + (path.resolve(),))
    return _merge_loose(parent, loaded)


def _merge_loose(base: dict, update: dict) -> dict:
    """Recursive dict merge without key checks (both sides are checked against DEFAULTS afterwards)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "overrides":
            out[key] = _merge_loose(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    """DEFAULTS <- YAML file (and its `base` chain) <- key=value overrides, validated."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        cfg = _merge(cfg, _read_yaml(Path(path)))
    for text in overrides:
        cfg = _merge(cfg, parse_override(text))
    validate_config(cfg)
    return cfg


# Every number of DEFAULTS and its range: (dotted key, integer?, range, may be null?). A wrong type or a value out
# of range is a one-line ConfigError here, not a traceback (or a silent NaN) steps into a run.
POSITIVE, NON_NEGATIVE, UNIT, UNIT_OPEN = "positive", "non-negative", "in [0, 1]", "in [0, 1)"
NUMBER_RULES = (
    ("steps", True, POSITIVE, False), ("log_every", True, POSITIVE, False),
    ("checkpoint_every", True, POSITIVE, False), ("cpu_threads", True, POSITIVE, True), ("seed", True, None, False),
    ("data.patch", True, POSITIVE, False), ("data.batch", True, POSITIVE, False),
    ("data.workers", True, NON_NEGATIVE, False), ("data.frames", True, POSITIVE, False),
    ("data.max_frames", True, POSITIVE, True), ("data.pan", True, NON_NEGATIVE, False),
    ("data.stills_fraction", False, UNIT, False),
    ("val.every", True, POSITIVE, False), ("val.max_images", True, POSITIVE, True),
    ("val.noise_amp", False, NON_NEGATIVE, False),
    ("optim.lr", False, POSITIVE, False), ("optim.weight_decay", False, NON_NEGATIVE, False),
    ("optim.step_every", True, POSITIVE, False), ("optim.gamma", False, POSITIVE, False),
    ("optim.warmup", True, NON_NEGATIVE, False), ("optim.min_lr", False, NON_NEGATIVE, False),
    ("optim.grad_clip", False, NON_NEGATIVE, False),
    ("d_optim.lr", False, POSITIVE, False), ("d_optim.weight_decay", False, NON_NEGATIVE, False),
    ("ema", False, UNIT_OPEN, False), ("loss.cx_bandwidth", False, POSITIVE, False),
    ("discriminator.features", True, POSITIVE, False),
)


def _check_number(cfg: dict, key: str, integer: bool, allowed: str | None, nullable: bool) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if value is None and nullable:
        return
    kind = "integer" if integer else "number"
    wanted = {None: f"an {kind}" if integer else "a number", POSITIVE: f"a positive {kind}",
              NON_NEGATIVE: f"a non-negative {kind}"}.get(allowed, f"a {kind} {allowed}")
    is_number = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not is_number or not math.isfinite(value):
        raise ConfigError(f"{key} must be {wanted}, got {value!r}")
    fits = {None: True, POSITIVE: value > 0, NON_NEGATIVE: value >= 0, UNIT: 0 <= value <= 1,
            UNIT_OPEN: 0 <= value < 1}[allowed]
    if not fits:
        raise ConfigError(f"{key} must be {allowed if allowed in (UNIT, UNIT_OPEN) else wanted}, got {value!r}")


def _check_numbers(cfg: dict) -> None:
    for key, integer, allowed, nullable in NUMBER_RULES:
        _check_number(cfg, key, integer, allowed, nullable)
    for name, default in DEFAULTS["loss"].items():  # term weights (eqs. 9, 11): 0 switches a term off
        # every key whose default is a number is a weight: a string there ("abc") is refused, not ignored
        if isinstance(default, (int, float)) and not isinstance(default, bool) and name != "cx_bandwidth":
            _check_number(cfg, f"loss.{name}", False, NON_NEGATIVE, False)
    for section in ("optim", "d_optim"):
        betas = cfg[section]["betas"]
        if not (isinstance(betas, list) and len(betas) == 2 and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"{section}.betas must be two numbers in [0, 1), got {betas!r}")


def validate_config(cfg: dict) -> None:
    _check_numbers(cfg)
    if cfg["mode"] not in ("fidelity", "perceptual"):
        raise ConfigError(f"mode must be fidelity or perceptual, got {cfg['mode']!r}")
    if cfg["amp"] not in ("auto", "off", "bf16", "fp16"):
        raise ConfigError(f"amp must be auto, off, bf16 or fp16, got {cfg['amp']!r}")
    if cfg["optim"]["schedule"] not in ("step", "cosine", "constant"):
        raise ConfigError(f"optim.schedule must be step, cosine or constant, got {cfg['optim']['schedule']!r}")
    for key in ("steps", "log_every", "checkpoint_every"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if cfg["export_dtype"] not in (None, "float32", "float16", "bfloat16"):
        raise ConfigError(f"export_dtype must be null, float32, float16 or bfloat16, got {cfg['export_dtype']!r}")
    if not isinstance(cfg["data"]["batch"], int) or cfg["data"]["batch"] < 1:
        raise ConfigError(f"data.batch must be a positive integer, got {cfg['data']['batch']!r}")
    if not 0.0 <= float(cfg["ema"]) < 1.0:
        raise ConfigError(f"ema must be in [0, 1), got {cfg['ema']}")
    if not isinstance(cfg["data"]["pan"], int) or cfg["data"]["pan"] < 0:
        raise ConfigError(f"data.pan must be a non-negative integer (HR pixels per frame), got {cfg['data']['pan']!r}")
    if not 0.0 <= float(cfg["data"]["stills_fraction"]) <= 1.0:
        raise ConfigError(f"data.stills_fraction must be in [0, 1], got {cfg['data']['stills_fraction']}")
    if cfg["data"]["degradation"] is not None:
        _validate_degradation(cfg)
    for key in ("train", "stills"):
        if isinstance(cfg["data"][key], str):
            cfg["data"][key] = [cfg["data"][key]]


def _validate_degradation(cfg: dict) -> None:
    from mgbp.degradations import DegradationConfig

    DegradationConfig.from_dict(cfg["data"]["degradation"])  # raises a one-line ConfigError
    if cfg["data"]["lr_train"]:
        raise ConfigError("data.degradation makes the LR from the HR: it cannot be used with data.lr_train")
    if cfg["data"]["video"]:
        raise ConfigError("data.degradation is for image models (data.video is true)")


def learning_rate_factor(step: int, optim: dict, total_steps: int) -> float:
    """Multiplier of the base learning rate at `step` (0-based): warm-up, then step / cosine / constant."""
    warmup = int(optim["warmup"])
    factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if optim["schedule"] == "step":
        factor *= float(optim["gamma"]) ** (step // int(optim["step_every"]))
    elif optim["schedule"] == "cosine":
        span = max(1, total_steps - warmup)
        progress = min(1.0, max(0, step - warmup) / span)
        floor = float(optim["min_lr"]) / float(optim["lr"])
        factor *= floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor
