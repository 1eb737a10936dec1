"""`mgbp train CONFIG.yaml [key=value ...] [--resume]`: the learning strategies of Section IV.

- mode `fidelity`: minimise eq. 9 on Y_{W=0}; validate with PSNR-Y (eq. 10 is the L2 on Y_{W=0}: PSNR is
  its monotone transform; the L1 and L2 are logged too) and keep the best model.
- mode `perceptual`: eq. 11 with the relativistic GAN of eqs. 12-13 and the multiscale VN+SC
  discriminator of Fig. 7, generator and discriminator steps alternating; one generator pass computes both
  Y_{W=0} and Y_{W=1} (the batch is doubled with noise amplitudes 0 and 1); validate with NIQE of Y_{W=1}
  (eq. 14). Cycle weights: see `mgbp.losses` (we use 1/(10|C|), the extraction's reading of eq. 11).

Run it as `mgbp train ...`, `python -m mgbp.train ...`, or under
`torchrun --nproc_per_node N -m mgbp.train ...` for DistributedDataParallel (NCCL on GPU, gloo on CPU;
the global batch `data.batch` is split over the processes; rank 0 logs, validates and writes checkpoints).

Exact resumption: a batch is a pure function of (seed, step) (`mgbp.data`), the global torch RNG is re-seeded
from (seed, step, rank) at every step, and `last.pt` holds the models, EMA, optimisers, AMP scaler, step and
RNG states; the learning rate is a function of the step. So `--resume` gives the same next step as an
uninterrupted run. Checkpoints and exports are written atomically; Ctrl-C (or SIGTERM, which the command
turns into Ctrl-C) saves `last.pt`. The command line (options, logging, signals) is `mgbp.commands.train`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from mgbp.device import bf16_is_emulated, resolve_device
from mgbp.errors import ConfigError, WeightFileError
from mgbp.train_config import DEFAULTS, learning_rate_factor, load_config  # noqa: F401 (re-exported)
from mgbp.train_state import (
    CsvLog,
    atomic_torch_save,
    drop_records_after,
    load_checkpoint,
    rng_state,
    set_rng_state,
    step_seed,
)

log = logging.getLogger("mgbp.train")

# ------------------------------------------------------------------------------------------ helpers
def build_generator(model_cfg: dict, frames: int | None = None) -> torch.nn.Module:
    """The generator from `mgbp.models.build_model(preset, **overrides)` or an explicit MGBPv2 config.

    `frames`: the training clip length (`data.frames`), recorded in a video model's config (`config.frames`,
    exported with the weights) so that video inference uses windows of the length it was trained on.
    """
    if model_cfg.get("preset"):
        from mgbp.models import build_model

        model = build_model(model_cfg["preset"], **(model_cfg.get("overrides") or {}))
    elif model_cfg.get("config"):
        from mgbp.models.mgbpv2 import MGBPv2, config_from_dict
        model = MGBPv2(config_from_dict(dict(model_cfg["config"])))
    else:
        raise ConfigError("set model.preset (a preset name) or model.config (an MGBPv2 config mapping)")
    if frames is not None and model.is_video:
        # replace() re-runs the config's checks (a clip too short for a network without temporal padding)
        model.config = dataclasses.replace(model.config, frames=int(frames))
    return model


def load_generator_weights(model: torch.nn.Module, source: str) -> None:
    """Initialise from a training checkpoint (EMA if it has one) or from a weight file (mgbp.models)."""
    path = Path(source)
    if path.suffix in (".pt", ".pth") and path.is_file():
        state = load_checkpoint(path)
        weights = state.get("ema") or state.get("generator") if isinstance(state, dict) else None
        if weights is None:
            raise WeightFileError(f"{path} is not an mgbp training checkpoint (no 'generator' entry)")
    else:
        from mgbp.models import load_model

        weights = load_model(source).state_dict()
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise WeightFileError(f"init_from={source} does not match the configured generator: "
                              f"{str(exc).splitlines()[0]}") from exc


# ------------------------------------------------------------------------------------------ trainer
def export_metadata(cfg: dict, step: int, wall_s: float, device: str, validation) -> dict:
    """What an exported generator records about its training (`save_model` JSON-encodes each value): read back by
    `scripts/ship_model.py` and the README's model table. Also used for a stopped run's last.pt
    (`scripts/export_checkpoint.py`)."""
    return {
        "recipe": cfg,
        "training_step": step,
        "training_wall_s": round(wall_s, 1),
        "training_data": list(cfg["data"]["train"] or []) + list(cfg["data"].get("stills") or []),
        "training_device": device,
        "validation": validation,
        "validation_folder": cfg["val"]["folder"],
    }


class Trainer:
    def __init__(self, cfg: dict, resume: bool = False, quiet: bool = False):
        self.cfg = cfg
        self.quiet = quiet
        self.out = Path(cfg["output_dir"])
        self._setup_distributed()
        self.is_main = self.rank == 0
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self._seed_everything(cfg["seed"])
        self._build_models()
        self._build_optimisers()
        self.step = 0
        self.best = {"metric": None, "value": None, "step": None}
        self.wall_s = 0.0
        self.val_metrics: dict = {}
        self.resumed_step: int | None = None  # the step of the checkpoint --resume loaded
        if resume:
            self._resume()
        self._wrap_models()
        self._build_data()
        self._build_logs()

    # ---- setup ------------------------------------------------------------------------------------
    def _setup_distributed(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(self.cfg["device"], option="device")  # meta, absent CUDA...: one line
        if self.device.type == "cuda" and self.device.index is None and self.world > 1:
            self.device = torch.device(f"cuda:{local_rank}")
        if self.device.type == "cuda":
            if self.device.index is not None:
                torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.cfg["cpu_threads"]:
            torch.set_num_threads(int(self.cfg["cpu_threads"]))
        self.distributed = self.world > 1
        if self.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)
        amp = self.cfg["amp"]
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" else "off"
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        if self.amp_dtype == torch.float16 and self.device.type != "cuda":
            log.warning("amp=%s requested on %s: float16 mixed precision is for GPUs, running in float32", amp,
                        self.device)
            self.amp_dtype = None
        elif self.amp_dtype is not None and self.device.type != "cuda":
            # asked for explicitly ('auto' is off on CPU): bf16 convolutions run on AMX / AVX512-BF16 (1.5x the
            # fidelity step of configs/cpu-x4.yaml on this Xeon, benchmarks/bench_speed.py section d)
            log.info("amp=bf16 on %s: convolutions in bfloat16 (autocast), the rest in float32", self.device)
            if bf16_is_emulated(self.device):
                log.warning("amp=bf16: this CPU has neither AVX512-BF16 nor AMX, so bfloat16 is emulated and slower "
                            "than float32 (amp: off)")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _seed_everything(self, seed: int):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _build_models(self):
        cfg = self.cfg
        self.generator = build_generator(cfg["model"], frames=cfg["data"]["frames"]).to(self.device)
        self.scale = int(self.generator.scale)
        self.is_video = bool(self.generator.is_video)
        if cfg["init_from"]:
            load_generator_weights(self.generator, cfg["init_from"])
        self.ema = None
        if float(cfg["ema"]) > 0:
            self.ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
        self.discriminator = None
        self.vgg = None
        if cfg["mode"] == "perceptual":
            loss = cfg["loss"]
            if float(loss["gan"]) > 0:
                from mgbp.models.discriminator import MultiscaleDiscriminator
                self.discriminator = MultiscaleDiscriminator(  # NHWC kernels, as the generators': oneDNN's layout
                    self.scale, int(cfg["discriminator"]["features"]), bool(cfg["discriminator"]["vnsc"])
                ).to(self.device, memory_format=torch.channels_last)
            if float(loss["cx"]) > 0:
                from mgbp.vgg import maybe_load_vgg
                self.vgg = maybe_load_vgg(loss["vgg_weights"], self.device)
            if self.is_video:
                raise ConfigError("perceptual mode is for images (the paper trains MGBP-3D for fidelity only)")

    def _build_optimisers(self):
        o = self.cfg["optim"]
        fused = {"fused": True} if self.device.type == "cuda" else {}  # one kernel per step on GPU
        self.g_opt = torch.optim.Adam(self.generator.parameters(), lr=float(o["lr"]), betas=tuple(o["betas"]),
                                      weight_decay=float(o["weight_decay"]), **fused)
        self.d_opt = None
        if self.discriminator is not None:
            d = self.cfg["d_optim"]
            self.d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=float(d["lr"]),
                                          betas=tuple(d["betas"]), weight_decay=float(d["weight_decay"]), **fused)

    def _wrap_models(self):
        """DDP wrappers (the raw modules stay for saving, EMA and the frozen-D generator step)."""
        self.g_train = self.generator
        self.d_train = self.discriminator
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_train = DDP(self.generator, device_ids=ids)
            if self.discriminator is not None:
                self.d_train = DDP(self.discriminator, device_ids=ids)
        if self.cfg["compile"]:
            self.g_train = torch.compile(self.g_train)

    def _build_data(self):
        from torch.utils.data import DataLoader

        from mgbp.data import ImagePatchDataset, StepBatchSampler, clip_dataset, seed_worker

        d = self.cfg["data"]
        if self.is_video or d["video"]:
            self.dataset = clip_dataset(d, self.scale, self.cfg["seed"])
        else:
            self.dataset = ImagePatchDataset(d["train"], self.scale, d["patch"], d["augment"], d["cache"],
                                             d["lr_train"], d["skip_bad"], self.cfg["seed"])
        sampler = StepBatchSampler(self.step, self.cfg["steps"], d["batch"], self.rank, self.world)
        workers = int(d["workers"])
        self.loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", worker_init_fn=seed_worker,
                                 persistent_workers=False, prefetch_factor=4 if workers else None)
        self.degradation = None
        if d["degradation"] is not None:  # Real-ESRGAN's LR instead of bicubic (mgbp.degradations)
            from mgbp.degradations import Degradation
            self.degradation = Degradation(d["degradation"])
        self.val_set = None
        v = self.cfg["val"]
        if self.is_main and v["folder"]:
            from mgbp.data import load_validation_set
            if self.is_video:
                log.warning("validation of video models is not implemented here; use `mgbp eval`")
            else:
                self.val_set = load_validation_set(v["folder"], self.scale, v["max_images"])

    def _build_logs(self):
        self.tb = None
        if not self.is_main:
            return
        self.jsonl = self.out / "log.jsonl"
        if self.resumed_step is not None:  # what a killed run logged after its checkpoint is logged again
            for name in ("log.jsonl", "train.csv", "val.csv"):
                drop_records_after(self.out / name, self.resumed_step)
        self.train_csv = CsvLog(self.out / "train.csv")
        self.val_csv = CsvLog(self.out / "val.csv")
        try:
            from torch.utils.tensorboard import SummaryWriter
            purge = None if self.resumed_step is None else self.resumed_step + 1  # TensorBoard's own cut
            self.tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=purge)
        except ImportError:  # tensorboard is optional
            self.tb = None
        (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg, sort_keys=False))

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": "mgbp-train-checkpoint-1",
            "step": self.step,
            "config": self.cfg,
            "generator": self.generator.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "discriminator": self.discriminator.state_dict() if self.discriminator is not None else None,
            "g_opt": self.g_opt.state_dict(),
            "d_opt": self.d_opt.state_dict() if self.d_opt is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "best": self.best,
            "wall_s": self.wall_s,
        }

    def _resume(self):
        path = self.out / "last.pt"
        if not path.is_file():
            log.warning("--resume: no checkpoint at %s, starting from scratch", path)
            return
        state = load_checkpoint(path)  # a WeightFileError that names the path once
        try:
            self.generator.load_state_dict(state["generator"])
            if self.ema is not None and state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            if self.discriminator is not None and state.get("discriminator") is not None:
                self.discriminator.load_state_dict(state["discriminator"])
            self.g_opt.load_state_dict(state["g_opt"])
            if self.d_opt is not None and state.get("d_opt") is not None:
                self.d_opt.load_state_dict(state["d_opt"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise WeightFileError(f"checkpoint {path} does not match this config: "
                                  f"{str(exc).splitlines()[0]}") from exc
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.resumed_step = self.step
        self.best = state.get("best", self.best)
        self.wall_s = float(state.get("wall_s", 0.0))
        log.info("resumed from %s at step %d", path, self.step)

    def save_checkpoint(self, name: str = "last") -> None:
        if self.is_main:
            atomic_torch_save(self.state_dict(), self.out / f"{name}.pt")

    def export(self, name: str) -> Path | None:
        """The generator (EMA if on) in the project's weight format, with recipe and metrics in metadata."""
        if not (self.is_main and self.cfg["export"]):
            return None
        from mgbp.models import save_model

        model = self.ema if self.ema is not None else self.generator
        device = (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                  else f"cpu ({os.cpu_count()} cores)") + f" x{self.world}"
        meta = export_metadata(self.cfg, self.step, self.wall_s, device, self.val_metrics)
        path = self.out / f"{name}.safetensors"
        dtype = {None: None, "float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
        save_model(model, path, meta, dtype=dtype[self.cfg["export_dtype"]])  # atomic (temp file + os.replace)
        return path

    # ---- steps ------------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _set_learning_rate(self):
        factor = learning_rate_factor(self.step, self.cfg["optim"], self.cfg["steps"])
        for group in self.g_opt.param_groups:
            group["lr"] = float(self.cfg["optim"]["lr"]) * factor
        if self.d_opt is not None:
            for group in self.d_opt.param_groups:
                group["lr"] = float(self.cfg["d_optim"]["lr"]) * factor
        return factor

    def _optimiser_step(self, loss: torch.Tensor, optimiser, parameters) -> None:
        optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        clip = float(self.cfg["optim"]["grad_clip"])
        if clip > 0:
            self.scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(parameters, clip)
        self.scaler.step(optimiser)

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        from mgbp.data import make_training_pair

        torch.manual_seed(step_seed(self.cfg["seed"], self.step, self.rank))
        self._set_learning_rate()
        lr, hr = make_training_pair(batch, self.scale, self.dataset.margin, self.device,
                                    degradation=self.degradation, generator=self._degradation_generator())
        if self.cfg["mode"] == "fidelity":
            terms = self._fidelity_step(lr, hr)
        else:
            terms = self._perceptual_step(lr, hr)
        self.scaler.update()
        self._update_ema()
        return terms

    def _degradation_generator(self) -> torch.Generator | None:
        """The degradation's random draws, a function of (seed, step, rank) like the batch: exact on resume."""
        if self.degradation is None:
            return None
        return torch.Generator().manual_seed(step_seed(self.cfg["seed"] + 1, self.step, self.rank))

    def _crop_target(self, y: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """MGBP-3D without temporal padding outputs T' < T frames: compare with the central frames."""
        if y.dim() == 5 and y.shape[2] != hr.shape[2]:
            drop = (hr.shape[2] - y.shape[2]) // 2
            return hr[:, :, drop: drop + y.shape[2]]
        return hr

    def _fidelity_step(self, lr, hr):
        from mgbp.losses import fidelity_loss

        loss_cfg = self.cfg["loss"]
        with self._autocast():
            y0 = self.g_train(lr, noise_amp=0.0)
        target = self._crop_target(y0, hr)
        loss, terms = fidelity_loss(y0.float(), target, self.scale, float(loss_cfg["l1"]), float(loss_cfg["cycle"]),
                                    float(loss_cfg["l2"]))
        self._optimiser_step(loss, self.g_opt, self.generator.parameters())
        terms["loss"] = loss.detach()
        return terms

    def _perceptual_step(self, lr, hr):
        from mgbp.losses import PerceptualWeights, discriminator_loss, perceptual_generator_loss

        c = self.cfg["loss"]
        weights = PerceptualWeights(gan=float(c["gan"]), cycle_w1=float(c["cycle_w1"]), cx=float(c["cx"]),
                                    l1_w0=float(c["l1_w0"]), cycle_w0=float(c["cycle_w0"]),
                                    cx_bandwidth=float(c["cx_bandwidth"]), texture_w1=float(c["texture_w1"]),
                                    texture_log_w1=float(c["texture_log_w1"]),
                                    texture_flat_w1=float(c["texture_flat_w1"]),
                                    texture_flat_margin=float(c["texture_flat_margin"]))
        n = lr.shape[0]
        with self._autocast():
            if c["noise"]:
                # one generator pass for both outputs: the batch twice, W = 0 then W = 1
                amp = torch.cat([torch.zeros(n), torch.ones(n)]).to(self.device)
                both = self.g_train(torch.cat([lr, lr]), noise_amp=amp).float()
                y0, y1 = both[:n], both[n:]
            else:  # Fig. 15 "no noise": W = 0 in every term
                y0 = y1 = self.g_train(lr, noise_amp=0.0).float()
        # generator step: the raw discriminator, frozen (its DDP wrapper must only see the D step)
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)
        with self._autocast():
            g_loss, terms = perceptual_generator_loss(y1, y0, hr, self.scale, weights, self.discriminator, self.vgg)
        self._optimiser_step(g_loss, self.g_opt, self.generator.parameters())
        terms["loss"] = g_loss.detach()
        if self.discriminator is not None:
            self.discriminator.requires_grad_(True)
            with self._autocast():
                d_loss = discriminator_loss(self.d_train, y1, hr, self.scale)
            self._optimiser_step(d_loss.float(), self.d_opt, self.discriminator.parameters())
            terms["d_loss"] = d_loss.detach().float()
        return terms

    @torch.no_grad()
    def _update_ema(self):
        if self.ema is None:
            return
        # warm-up of the decay so the EMA is not dominated by the random initialisation early on
        decay = min(float(self.cfg["ema"]), (1.0 + self.step) / (10.0 + self.step))
        ema_params = list(self.ema.parameters())
        params = [p.detach() for p in self.generator.parameters()]
        if hasattr(torch, "_foreach_lerp_"):  # one fused launch instead of one per tensor (GPU)
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        else:
            for ema_p, p in zip(ema_params, params):
                ema_p.lerp_(p, 1.0 - decay)
        for ema_b, b in zip(self.ema.buffers(), self.generator.buffers()):
            ema_b.copy_(b)

    # ---- validation -------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Fidelity: PSNR-Y, L1 and L2 (eq. 10) at W=0; perceptual: NIQE at W (eq. 14) as well."""
        from mgbp.data import quantise
        from mgbp.metrics import niqe, psnr

        model = self.ema if self.ema is not None else self.generator
        was_training = model.training
        model.eval()
        psnrs, l1s, l2s, niqes = [], [], [], []
        perceptual = self.cfg["mode"] == "perceptual"
        for _name, lr, hr in self.val_set:
            lr = lr.to(self.device)
            with self._autocast():
                y = model(lr, noise_amp=0.0).float()
            y = quantise(y.clamp(0, 1)).cpu()
            psnrs.append(float(psnr(y, hr, crop=self.scale, y_channel=True)[0]))
            l1s.append(float(F.l1_loss(y, hr)))
            l2s.append(float(F.mse_loss(y, hr)))
            if perceptual:
                with self._autocast():
                    y1 = model(lr, noise_amp=float(self.cfg["val"]["noise_amp"])).float()
                niqes.append(float(niqe(quantise(y1.clamp(0, 1)).cpu())[0]))
        model.train(was_training)
        metrics = {"psnr_y": float(np.mean(psnrs)), "l1": float(np.mean(l1s)), "l2": float(np.mean(l2s))}
        if niqes:
            metrics["niqe_w1"] = float(np.mean(niqes))
        return metrics

    def _is_better(self, metrics: dict) -> tuple[str, float, bool]:
        if "niqe_w1" in metrics:
            key, value = "niqe_w1", metrics["niqe_w1"]
            better = self.best["value"] is None or value < self.best["value"]
        else:
            key, value = "psnr_y", metrics["psnr_y"]
            better = self.best["value"] is None or value > self.best["value"]
        return key, value, better

    # ---- loop -------------------------------------------------------------------------------------
    def _reduce(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        names = sorted(sums)
        values = torch.stack([sums[k].float().to(self.device) for k in names]) / max(1, count)
        if self.distributed:
            torch.distributed.all_reduce(values)
            values /= self.world
        return dict(zip(names, values.cpu().tolist()))

    def _record(self, record: dict, csv_log: CsvLog | None) -> None:
        if not self.is_main:
            return
        with self.jsonl.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if csv_log is not None:
            csv_log.write(record)
        if self.tb is not None:
            prefix = "val" if record.get("kind") == "val" else "train"
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "kind"):
                    self.tb.add_scalar(f"{prefix}/{key}", value, record["step"])

    def _run_validation(self) -> None:
        if self.is_main and self.val_set is not None:
            metrics = self.validate()
            self.val_metrics = {**metrics, "step": self.step}
            key, value, better = self._is_better(metrics)
            self._record({"kind": "val", "step": self.step, **metrics}, self.val_csv)
            if better:
                self.best = {"metric": key, "value": value, "step": self.step}
                self.save_checkpoint("best")
                self.export("generator_best")
            log.info("step %d validation %s (best %s %.4f at step %s)", self.step,
                     ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), key, self.best["value"],
                     self.best["step"])
        if self.distributed:
            torch.distributed.barrier()

    def run(self) -> int:
        from tqdm import tqdm

        cfg = self.cfg
        total = cfg["steps"]
        if self.step >= total:
            log.info("already at step %d of %d", self.step, total)
            return 0
        show_bar = self.is_main and not self.quiet and sys.stderr.isatty()
        bar = tqdm(total=total, initial=self.step, desc=f"train {cfg['mode']}", unit="step", dynamic_ncols=True,
                   disable=not show_bar, file=sys.stderr)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        t0 = time.perf_counter()
        interrupted = False
        self.generator.train()
        try:
            for batch in self.loader:
                terms = self.train_step(batch)
                self.step += 1
                count += 1
                for k, v in terms.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                bar.update(1)
                if self.step % cfg["log_every"] == 0 or self.step == total:
                    means = self._reduce(sums, count)
                    now = time.perf_counter()
                    self.wall_s += now - t0
                    rate = count / max(now - t0, 1e-9)
                    t0, sums, count = now, {}, 0
                    lr_now = self.g_opt.param_groups[0]["lr"]
                    self._record({"kind": "train", "step": self.step, "lr": lr_now, "it_s": rate, **means},
                                 self.train_csv if self.is_main else None)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()})
                    if not show_bar:  # a log file gets one line per log step instead of a bar
                        eta = (total - self.step) / max(rate, 1e-9)
                        log.info("step %d/%d %s | %.2f it/s, ETA %s", self.step, total,
                                 " ".join(f"{k} {v:.4g}" for k, v in means.items()), rate,
                                 time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 86400 else f"{eta / 3600:.0f} h")
                if self.step % cfg["val"]["every"] == 0 or self.step == total:
                    self._run_validation()
                    t0 = time.perf_counter()  # validation time is not training time
                if self.step % cfg["checkpoint_every"] == 0 and self.step != total:
                    self.save_checkpoint("last")
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        self.wall_s += time.perf_counter() - t0
        self.save_checkpoint("last")
        if interrupted:
            log.warning("interrupted at step %d: saved %s (continue with --resume)", self.step, self.out / "last.pt")
            return 130
        self.export("generator")
        if self.is_main:
            log.info("done: %d steps, checkpoints in %s", self.step, self.out)
        return 0

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":  # `python -m mgbp.train ...` (and under torchrun): the `mgbp train` command itself
    from mgbp.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
