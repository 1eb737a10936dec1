"""Speed and memory of the project against the authors' code and small peers, and training throughput (issue 13).

One process, interleaved rounds (every item once per round, in turn), the same inputs for every item; medians
over the rounds. Ratios are other / project time (above 1: the project is faster), per output pixel where the
sizes differ. Sections (`--only`):

  a  the project's MGBPv1 with the authors' BOE-R3 weights (`mgbp.load_model` + `mgbp.upscale`) against the
     authors' G-MGBP code (`../shared/reference/authors-code/pirm-sr-2018`), at W = 0 and W = 1
  b  the Table I presets (random weights) against the authors' MGBPv2 code (`authors-code/mgbpv2`) with the same
     configuration id (CH3_LE4_MU4_BIAS_NOISE1_FE192-128-64-32_Filter#K3_mgbp for x4), same output size
  c  every shipped model (`mgbp.models.SHIPPED`) against SPAN, SRVGGNetCompact and EDSR-baseline (their published
     architectures, written below from the papers; random weights: speed does not depend on them) and bicubic
  d  training throughput, HR pixels per second, of one fidelity step and one perceptual step (data loading
     included) of the recipes the shipped weights record (their `training` metadata), at their thread count;
     `--dtype bf16` runs them with `amp=bf16` (autocast)
  f  what each option of `mgbp upscale` costs (--bf16, --half, -W 1, --tile, --self-ensemble, --consistent) on
     the default model and MGBPv1 (BOE-R3), relative to the default call
  e  a large image (960x540 -> 3840x2160 by default) through `mgbp upscale`'s tiled path with the automatic tile
     plan and with fixed tiles, against the small-image rate of the same model

Every section runs with malloc keeping freed blocks for reuse, as the project's first inference call (and `mgbp
upscale`) sets it for the whole process (`mgbp.allocator`), set before the first item so that peers, the authors'
code and the baseline run under it too; `--malloc system` keeps malloc's defaults (MGBP_SYSTEM_MALLOC=1), what a
library caller who opts out gets.

The authors' code is imported at run time from `../shared` (never copied) and skipped, with the reason in the
output, when it is absent. `--baseline REV` also times the project as it was at git revision REV (its `src/mgbp`
loaded as the package `mgbp_base`) in the same rounds: "x times today's" figures. Memory: one extra, untimed call
per item; the peak growth of the process's resident memory during it (CPU; sampled every millisecond) or
`torch.cuda.max_memory_allocated` above what was allocated before (CUDA).

    python benchmarks/bench_speed.py                      # all sections, float32, CPU (minutes on 2 cores)
    python benchmarks/bench_speed.py --quick              # small sizes, 2 rounds (about 3 minutes here)
    python benchmarks/bench_speed.py --only a,b --dtype bf16
    python benchmarks/bench_speed.py --device cuda --dtype half --only b,c
    python benchmarks/bench_speed.py --baseline f0b6ca6 --only c,d,e
    python benchmarks/bench_speed.py --baseline fbf3485 --only g   # the resizes, mask and projection step

Writes OUT/bench_speed.json and OUT/bench_speed.md (`--out`, default out/bench_speed) and prints the Markdown.
Every table names the machine. Bad options (an unknown preset, model or size) are refused with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import importlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SECTIONS = "abcdfeg"
G_MGBP_ID = ("CH3_BIC_FE48_LEAK0.0_TR0_BN0_MX0_Analysis#L4#K3#D1_Upscaling#L4#M3#K3#D1_Downscaling#L4#M0#K3#D1"
             "_Synthesis#L4#K3#D1_v3_ms")  # the released BOE-R3 file's model id (authors-code/README.md)


class BenchError(Exception):
    """A bad option: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------------------------
# Peers: published architectures, written from the papers' descriptions (inference form), random weights.


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class _SPAB(nn.Module):
    """SPAN's block: three 3x3 convolutions with SiLU between, a parameter-free attention sigmoid(out3) - 0.5
    applied to out3 + input (Wan et al., "Swift Parameter-free Attention Network", CVPRW 2024)."""

    def __init__(self, channels: int):
        super().__init__()
        self.c1, self.c2, self.c3 = _conv3(channels, channels), _conv3(channels, channels), _conv3(channels, channels)

    def forward(self, x):
        first = self.c1(x)
        third = self.c3(F.silu(self.c2(F.silu(first))))
        return (third + x) * (torch.sigmoid(third) - 0.5), first


class SPAN(nn.Module):
    """SPAN (48 features, 6 blocks) in its deployed form: each reparameterisable Conv3XC is the single 3x3
    convolution it folds into at inference (the training-time branches give the 2.2 M parameters often quoted;
    0.43 M remain). Features of the head, block 1, block 6 (and block 6's first convolution) are concatenated,
    mixed by a 1x1 convolution and upsampled by a 3x3 convolution + pixel shuffle."""

    def __init__(self, scale: int, features: int = 48, blocks: int = 6):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1))
        self.head = _conv3(3, features)
        self.blocks = nn.ModuleList(_SPAB(features) for _ in range(blocks))
        self.conv_2 = _conv3(features, features)
        self.mix = nn.Conv2d(4 * features, features, 1)
        self.up = nn.Sequential(_conv3(features, 3 * scale * scale), nn.PixelShuffle(scale))

    def forward(self, x):
        head = self.head((x - self.mean) * 255.0)
        h, first_of_last = head, None
        outputs = []
        for block in self.blocks:
            h, first_of_last = block(h)
            outputs.append(h)
        mixed = self.mix(torch.cat([head, self.conv_2(h), outputs[0], first_of_last], 1))
        return self.up(mixed) / 255.0 + self.mean


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact network (realesr-general-x4v3: 64 features, 32 body convolutions, PReLU), a pixel
    shuffle, plus the nearest-neighbour upscaled input (Wang et al., Real-ESRGAN, ICCVW 2021)."""

    def __init__(self, scale: int, features: int = 64, convs: int = 32):
        super().__init__()
        layers = [_conv3(3, features), nn.PReLU(features)]
        for _ in range(convs):
            layers += [_conv3(features, features), nn.PReLU(features)]
        layers += [_conv3(features, 3 * scale * scale), nn.PixelShuffle(scale)]
        self.body = nn.Sequential(*layers)
        self.scale = scale

    def forward(self, x):
        return self.body(x) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


class _ResBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.c1, self.c2 = _conv3(features, features), _conv3(features, features)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x)))


class EDSRBaseline(nn.Module):
    """EDSR-baseline (Lim et al., CVPRW 2017): 16 residual blocks of 64 features without batch norm, global skip,
    sub-pixel upsampler (x2 stages for powers of two, one x3 stage), mean shift on a 0..255 range."""

    def __init__(self, scale: int, features: int = 64, blocks: int = 16):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1))
        self.head = _conv3(3, features)
        self.body = nn.Sequential(*[_ResBlock(features) for _ in range(blocks)], _conv3(features, features))
        stages = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                stages += [_conv3(features, 4 * features), nn.PixelShuffle(2)]
        else:
            stages += [_conv3(features, scale * scale * features), nn.PixelShuffle(scale)]
        self.tail = nn.Sequential(*stages, _conv3(features, 3))

    def forward(self, x):
        head = self.head((x - self.mean) * 255.0)
        return self.tail(head + self.body(head)) / 255.0 + self.mean


PEERS = {"SPAN": SPAN, "SRVGGNetCompact": SRVGGNetCompact, "EDSR-baseline": EDSRBaseline}


# ---------------------------------------------------------------------------------------------------------------
# Measuring.


@dataclasses.dataclass
class Item:
    section: str
    name: str  # row label
    run: Callable[[], object] | None  # one call (None: skipped, `note` says why)
    shape: str = ""  # "input -> output"
    pixels: int = 0  # output pixels per call (HR pixels per step for training)
    role: str = "project"  # "project", "other" or "baseline"
    group: str = ""  # ratios compare items of one group
    threads: int | None = None  # intra-op threads for this item (None: the benchmark's)
    params: int | None = None
    note: str = ""
    repeat: int = 1  # calls per timed sample (short training steps)
    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)
    peak_mib: float | None = None
    error: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.wall) if self.wall else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None


class PeakMemory:
    """Peak growth of resident memory (CPU, sampled) or of CUDA allocations while the block runs, in MiB."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib: float | None = None

    @staticmethod
    def _rss_bytes() -> int | None:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self):
        gc.collect()
        _release_free_heap()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._base = self._rss_bytes()
        self._peak = self._base
        self._stop = threading.Event()
        if self._base is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss_bytes() or 0)
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._rss_bytes() or 0)
            self.peak_mib = (self._peak - self._base) / 2**20
        return False


def _release_free_heap() -> None:
    """Give freed heap memory back to the OS (glibc's malloc_trim), so that resident-memory growth measures what
    a call needs rather than what earlier calls left in the allocator's free lists."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def intra_op_threads(count: int | None):
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(item: Item, device: torch.device) -> tuple[float, float]:
    with intra_op_threads(item.threads):
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(item.repeat):
            item.run()
        synchronize(device)
        return (time.perf_counter() - wall) / item.repeat, (time.process_time() - cpu) / item.repeat


def run_section(items: list[Item], rounds: int, device: torch.device, progress) -> None:
    """One untimed warm-up call per item (it measures the memory), then `rounds` interleaved timed rounds."""
    for item in items:
        if item.run is None:
            continue
        try:
            with intra_op_threads(item.threads), PeakMemory(device) as memory:
                item.run()
            item.peak_mib = memory.peak_mib
        except Exception as exc:  # noqa: BLE001 (an item that cannot run is reported, not fatal to the run)
            item.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            item.run = None
    live = [item for item in items if item.run is not None]
    for r in range(rounds):
        for item in live:
            wall, cpu = time_call(item, device)
            item.wall.append(wall)
            item.cpu.append(cpu)
        progress(f"  round {r + 1}/{rounds} done")


# ---------------------------------------------------------------------------------------------------------------
# Inputs, options, machine.


def parse_size(text: str, what: str) -> tuple[int, int]:
    """'WxH' -> (H, W); one-line BenchError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise BenchError(f"{what} must be WIDTHxHEIGHT with positive integers, got {text!r}")
    return int(match.group(2)), int(match.group(1))


def parse_side(text: str, what: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", str(text)) or int(text) < 8:
        raise BenchError(f"{what} must be an integer >= 8, got {text!r}")
    return int(text)


def parse_list(text: str, known, what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise BenchError(f"unknown {what} {', '.join(map(repr, unknown)) or repr(text)} "
                         f"(choose from {', '.join(known)})")
    return names


def machine_description(device: torch.device) -> dict:
    cpu_name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu_name,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def machine_line(info: dict) -> str:
    gpu = f", {info['gpu']}" if "gpu" in info else ""
    return (f"{info['cpu']} ({info['machine']}, {info['cores']} cores), {info['threads']} threads, torch "
            f"{info['torch']}{gpu}; malloc {info.get('malloc', 'system')}; load average at start "
            f"{info.get('load_average_at_start', '?')}")


def random_image(shape, seed: int, device, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator).to(device=device, dtype=dtype)


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(seed)
    return build()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def prepare(module: nn.Module, device, dtype) -> nn.Module:
    return module.to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------------------------
# The authors' code and the baseline revision, imported at run time.


def import_authors(folder_name: str, module_name: str, shared: Path):
    """The authors' module from ../shared (never copied), or (None, reason)."""
    folder = shared / "reference" / "authors-code" / folder_name
    if not (folder / f"{module_name}.py").is_file():
        return None, f"../shared is absent ({folder} not found): the authors' code is skipped"
    if not hasattr(np, "int"):
        np.int = int  # their code uses np.int, which numpy >= 1.24 removed (authors-code/README.md)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module_name), ""
    finally:
        sys.path.remove(str(folder))


def load_baseline(rev: str):
    """The package as it was at git revision `rev`, importable as `mgbp_base` (imports rewritten)."""
    target = Path(tempfile.mkdtemp(prefix="mgbp_base_"))
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src/mgbp"], capture_output=True,
                                 check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"--baseline {rev}: cannot read src/mgbp at that revision ({exc})") from None
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    package = target / "mgbp_base"
    shutil.move(str(target / "src" / "mgbp"), str(package))
    # import statements, and module paths in strings ("mgbp.commands.upscale"); never the bare string "mgbp",
    # which is data (the weight files' format name) and must stay as it is
    pattern = re.compile(r"(\bfrom\s+|\bimport\s+)mgbp(?=[.\s])|([\"'])mgbp(?=\.)")
    for path in package.rglob("*.py"):
        path.write_text(pattern.sub(lambda m: (m.group(1) or m.group(2)) + "mgbp_base", path.read_text()))
    sys.path.insert(0, str(target))
    return importlib.import_module("mgbp_base")


# ---------------------------------------------------------------------------------------------------------------
# Sections.


def section_a(args, device, dtype) -> list[Item]:
    import mgbp

    h, w = args.size_a
    x = random_image((1, 3, h, w), 1, device, dtype)
    weights = args.shared / "reference" / "pirm2018" / "BOE-R3.model"
    shape = f"{w}x{h} -> {4 * w}x{4 * h}"
    items = []
    ours = prepare(mgbp.load_model(weights), device, dtype) if weights.is_file() else None
    authors, reason = import_authors("pirm-sr-2018", "models", args.shared)
    theirs = None
    if authors is not None and weights.is_file():
        theirs = authors.G_MGBP(G_MGBP_ID, name="gmgbp", vlevel=0)
        theirs.set_factor([4, 4])
        theirs.set_mu(2)
        theirs.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        theirs = prepare(theirs, device, dtype)
    elif authors is not None:
        reason = f"../shared is absent ({weights} not found): MGBPv1 with BOE-R3 is skipped"
    for amp in (0.0, 1.0):
        group = f"a/W={amp:g}"
        items.append(Item("a", f"mgbp MGBPv1, BOE-R3, W={amp:g}", ours and (
            lambda amp=amp: mgbp.upscale(x, model=ours, noise=amp)), shape, 16 * h * w, "project", group,
            params=ours and parameter_count(ours), note="" if ours is not None else reason))

        def run_theirs(amp=amp):
            with torch.inference_mode():
                return theirs(x, noise_amp=torch.tensor(amp, device=device, dtype=dtype), pad=True)

        items.append(Item("a", f"authors' G-MGBP, BOE-R3, W={amp:g}", theirs and run_theirs, shape, 16 * h * w,
                          "other", group, params=theirs and parameter_count(theirs), note=reason))
    return items


def authors_mgbpv2_id(cfg) -> str:
    """The authors' model id for an MGBPv2 configuration (their `model.py` parses these fields)."""
    bias = "BIAS_" if cfg.bias else ""
    channels = "-".join(str(c) for c in cfg.channels)
    return f"CH{cfg.image_channels}_LE{cfg.levels}_MU{cfg.mu}_{bias}NOISE{cfg.noise_features}_FE{channels}" \
           f"_Filter#K{cfg.kernel_size}_mgbp"


def section_b(args, device, dtype) -> list[Item]:
    import mgbp
    from mgbp.models import PRESETS, build_model

    authors, reason = import_authors("mgbpv2", "model", args.shared)
    items = []
    for name in args.presets:
        model = prepare(seeded(0, lambda name=name: build_model(name)), device, dtype)
        f, (out_h, out_w) = model.scale, args.size_b
        lr_h, lr_w = max(1, round(out_h / f)), max(1, round(out_w / f))
        x = random_image((1, 3, lr_h, lr_w), 2, device, dtype)
        shape = f"{lr_w}x{lr_h} -> {f * lr_w}x{f * lr_h}"
        group = f"b/{name}"
        items.append(Item("b", f"mgbp `{name}` ({PRESETS[name].source})", lambda m=model, x=x: mgbp.upscale(x, model=m),
                          shape, f * f * lr_h * lr_w, "project", group, params=parameter_count(model)))
        theirs, run = None, None
        model_id = authors_mgbpv2_id(model.config)
        if authors is not None:
            theirs = prepare(seeded(0, lambda model_id=model_id: authors.MGBPv2(model_id)), device, dtype)
            theirs.init_border((f * lr_h, f * lr_w))  # once per size, as their run.py does

            def run(theirs=theirs, x=x, f=f):
                with torch.inference_mode():
                    up = F.interpolate(x, scale_factor=f, mode="bicubic")
                    return theirs(up, noise=torch.zeros_like(up))

        items.append(Item("b", f"authors' MGBPv2 `{model_id}`", run, shape, f * f * lr_h * lr_w, "other", group,
                          params=theirs and parameter_count(theirs), note=reason))
    return items


def _peer_items(scale: int, lr_hw, device, dtype, group: str, layout) -> list[Item]:
    h, w = lr_hw
    x = random_image((1, 3, h, w), 3, device, dtype).contiguous(memory_format=layout)
    shape = f"{w}x{h} -> {scale * w}x{scale * h}"
    items = []
    for seed, (name, cls) in enumerate(PEERS.items()):
        peer = prepare(seeded(seed, lambda cls=cls: cls(scale)), device, dtype).to(memory_format=layout)

        def run(peer=peer):
            with torch.inference_mode():
                return peer(x)

        items.append(Item("c", f"{name} x{scale}", run, shape, scale * scale * h * w, "other", group,
                          params=parameter_count(peer)))

    def torch_bicubic():
        with torch.inference_mode():
            return F.interpolate(x, scale_factor=scale, mode="bicubic")

    def matlab_bicubic():
        import mgbp

        with torch.inference_mode():
            return mgbp.imresize(x, scale=scale)

    items.append(Item("c", f"bicubic (torch) x{scale}", torch_bicubic, shape, scale * scale * h * w, "other",
                      group, params=0))
    items.append(Item("c", f"bicubic (MATLAB, mgbp.imresize) x{scale}", matlab_bicubic, shape,
                      scale * scale * h * w, "other", group, params=0))
    return items


def _shipped_call(package, model, x):
    """The public path: `mgbp.upscale` for images, the tiled forward of `mgbp.video` for clips."""
    # `run_model` lives in mgbp.tiling now; mgbp.inference imports it (and uses it), and baselines from before
    # that split define it in mgbp.inference, so `inference.run_model` times the same function at any commit
    inference = importlib.import_module(f"{package.__name__}.inference")
    if x.dim() == 5:
        return lambda: inference.run_model(model, x)
    return lambda: inference.upscale(x, model=model)


def section_c(args, device, dtype, baseline) -> list[Item]:
    import mgbp
    import mgbp.inference
    from mgbp.models import SHIPPED

    items, peers_done = [], set()
    layout = torch.channels_last if args.peer_layout == "nhwc" else torch.contiguous_format
    for name in args.models:
        model = prepare(mgbp.load_model(name), device, dtype)
        f = model.scale
        side = max(1, args.size_c // f)
        frames = model.clip_length if model.is_video else None
        shape = (1, 3, frames, side, side) if frames else (1, 3, side, side)
        x = random_image(shape, 4, device, dtype)
        out_frames = frames or 1
        group = f"c/x{f}" + ("/video" if frames else "")
        label = f"{side}x{side} -> {f * side}x{f * side}" + (f", {frames} frames" if frames else "")
        items.append(Item("c", f"mgbp `{name}`" + (" (per frame)" if frames else ""), _shipped_call(mgbp, model, x),
                          label, out_frames * (f * side) ** 2, "project", group, params=parameter_count(model),
                          note=SHIPPED[name].description.split(";")[0]))
        if baseline is not None:
            try:
                old = prepare(baseline.load_model(name), device, dtype)
                call = _shipped_call(baseline, old, x)
                note = f"the project at {args.baseline}"
            except Exception as exc:  # noqa: BLE001 (a model the baseline did not ship, or could not load)
                call, note = None, f"not available at {args.baseline}: {exc}"
            items.append(Item("c", f"mgbp `{name}` at {args.baseline}", call, label, out_frames * (f * side) ** 2,
                              "baseline", group, note=note))
        key = (f, bool(frames))
        if key not in peers_done:
            peers_done.add(key)
            peer_items = _peer_items(f, (side, side), device, dtype, group, layout)
            if frames:  # peers upscale the clip frame by frame
                for item in peer_items:
                    single = item.run
                    item.run = (lambda single=single, n=out_frames: [single() for _ in range(n)])
                    item.pixels *= out_frames
                    item.shape += f", {out_frames} frames"
            items += peer_items
    return items


def _stage_recipes(model_name: str) -> list[dict]:
    from safetensors import safe_open

    from mgbp.models import SHIPPED

    with safe_open(str(SHIPPED[model_name].path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    stages = json.loads(metadata.get("training", "null")) or []
    stages = stages if isinstance(stages, list) else [stages]
    return [stage.get("config", stage) for stage in stages]  # each stage: {config, device, mode, run, steps}


def _training_config(recipe: dict, mode: str, device: torch.device, package, amp: str = "auto") -> dict:
    """A recipe recorded in a weight file, made runnable here: defaults for keys it predates, random start,
    no validation or export, a temporary output folder."""
    cfg = package.train_config.load_config(None)

    def merge(base: dict, update: dict) -> None:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "overrides":
                merge(base[key], value)
            elif key in base:
                base[key] = copy.deepcopy(value)

    merge(cfg, recipe)
    for key in ("train", "stills"):  # the recipes' folders are relative to the repository root
        if cfg["data"].get(key):
            cfg["data"][key] = [str(REPO / path) for path in cfg["data"][key]]
    cfg.update(mode=mode, init_from=None, export=False, steps=10**6, output_dir=tempfile.mkdtemp(prefix="bench_"),
               device=device.type, checkpoint_every=10**6, log_every=10**6, amp=amp)
    cfg["val"]["folder"] = None
    package.train_config.validate_config(cfg)
    return cfg


def _training_item(model_name: str, recipe: dict, mode: str, device, package, label: str, role: str,
                   group: str, amp: str) -> Item:
    cfg = _training_config(recipe, mode, device, package, amp)
    data = cfg["data"]
    for folder in list(data.get("train") or []) + list(data.get("stills") or []):
        if not Path(folder).exists():
            return Item("d", label, None, role=role, group=group,
                        note=f"../shared is absent ({folder} not found): training data missing")
    with intra_op_threads(cfg["cpu_threads"]):
        trainer = package.train.Trainer(cfg, quiet=True)
    trainer.generator.train()
    batches = iter(trainer.loader)
    scale = trainer.scale
    frames = data["frames"] if trainer.is_video else 1
    hr_pixels = data["batch"] * frames * (data["patch"] * scale) ** 2

    def step():
        trainer.train_step(next(batches))
        trainer.step += 1

    shape = f"batch {data['batch']} x {data['patch'] * scale}^2 HR" + (f" x {frames} frames" if frames > 1 else "")
    return Item("d", label, step, shape, hr_pixels, role, group, threads=cfg["cpu_threads"],
                params=parameter_count(trainer.generator), repeat=2,
                note=f"{mode} step of {model_name}'s recipe ({cfg['cpu_threads']} threads, batch {data['batch']})")


def section_d(args, device, dtype, baseline, progress) -> list[Item]:
    items = []
    import mgbp.train  # noqa: F401 (sys.modules["mgbp"].train, .train_config below)

    # --dtype bf16 / half: the recipes' mixed precision (amp), as `mgbp train ... amp=bf16` runs them
    amp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "auto")
    packages = [(sys.modules["mgbp"], "project", "")]
    if baseline is not None:
        importlib.import_module("mgbp_base.train")
        packages.append((baseline, "baseline", f" at {args.baseline}"))
    for name in args.models:
        stages = _stage_recipes(name)
        fidelity = next((s for s in stages if s.get("mode") == "fidelity"), None)
        perceptual = next((s for s in reversed(stages) if s.get("mode") == "perceptual"), fidelity)
        is_video = bool(fidelity and fidelity.get("model", {}).get("overrides", {}).get("dims") == 3)
        for mode, recipe in (("fidelity", fidelity), ("perceptual", perceptual)):
            group = f"d/{name}/{mode}"
            for package, role, suffix in packages:
                label = f"`{name}` {mode} step{suffix}"
                if recipe is None:
                    items.append(Item("d", label, None, role=role, group=group, note="no recipe in the weight file"))
                    continue
                if mode == "perceptual" and is_video:
                    items.append(Item("d", label, None, role=role, group=group,
                                      note="perceptual training is for image models (the paper trains MGBP-3D for "
                                           "fidelity only)"))
                    continue
                progress(f"  building the trainer for {label}")
                try:
                    items.append(_training_item(name, recipe, mode, device, package, label, role, group, amp))
                except Exception as exc:  # noqa: BLE001 (a recipe the code cannot build: reported, not fatal)
                    items.append(Item("d", label, None, role=role, group=group,
                                      note=f"cannot build: {type(exc).__name__}: {str(exc).splitlines()[0]}"[:300]))
    return items


def section_f(args, device, dtype) -> list[Item]:
    """What each option of `mgbp upscale` costs, through `mgbp.upscale`: time relative to the default call."""
    import mgbp
    from mgbp.models.noise_mask import with_noise_mask
    from mgbp.models.output_projection import with_output_projection

    weights = args.shared / "reference" / "pirm2018" / "BOE-R3.model"
    side = 64 if args.quick else 256
    cases = [("mgbp-x4", side)] + ([(str(weights), max(16, side // 4))] if weights.is_file() else [])
    items = []
    for name, lr_side in cases:
        label = Path(name).name
        base = prepare(mgbp.load_model(name), device, torch.float32)
        x = random_image((1, 3, lr_side, lr_side), 7, device)
        f = base.scale
        shape = f"{lr_side}x{lr_side} -> {f * lr_side}x{f * lr_side}"
        pixels = f * f * lr_side * lr_side
        group = f"f/{label}"
        options = [("default (float32, W=0, automatic tiles)", base, {}, "project"),
                   ("--bf16", prepare(mgbp.load_model(name), device, torch.bfloat16), {}, "other"),
                   ("--half", prepare(mgbp.load_model(name), device, torch.float16), {}, "other"),
                   ("-W 1", base, {"noise": 1.0}, "other"),
                   ("--tile 64", base, {"tile": 64}, "other"),
                   ("--tile 128", base, {"tile": 128}, "other"),
                   ("--self-ensemble", base, {"self_ensemble": True}, "other"),
                   ("--consistent", base, {"consistent": True}, "other"),
                   ("--consistent, 1 step", base, {"consistent": True, "consistent_steps": 1}, "other")]
        if name == "mgbp-x4":  # what its W > 0 extensions (noise mask, output projection) cost: the same without
            plain = with_output_projection(with_noise_mask(base, None), None)
            options.append(("-W 1, Algorithm 1 as printed (`mgbp convert --noise-mask off --output-projection off`)",
                            plain, {"noise": 1.0}, "other"))
        for option, model, kwargs, role in options:
            items.append(Item("f", f"`{label}` {option}", lambda m=model, k=kwargs, x=x: mgbp.upscale(x, model=m, **k),
                              shape, pixels, role, group))
    return items


def section_e(args, device, dtype, baseline) -> list[Item]:
    import mgbp
    from mgbp.inference import upscale_tensor
    from mgbp.models.weights import DEFAULT_SCALE, default_model_for_scale

    name = default_model_for_scale(DEFAULT_SCALE)
    model = prepare(mgbp.load_model(name), device, dtype)
    f = model.scale
    h, w = args.size_e
    big = random_image((1, 3, h, w), 5, "cpu")  # image and output stay in CPU memory, as in `mgbp upscale`
    small = random_image((1, 3, 128, 128), 6, "cpu")
    big_shape = f"{w}x{h} -> {f * w}x{f * h}"
    # The small image is the reference of this section: ratios are (large per pixel) / (small per pixel)
    items = [Item("e", f"`{name}` small image (reference)", lambda: upscale_tensor(model, small),
                  f"128x128 -> {128 * f}x{128 * f}", 128 * 128 * f * f, "project", "e", note="the small-image rate")]
    items.append(Item("e", f"`{name}` automatic tiles", lambda: upscale_tensor(model, big), big_shape,
                      h * w * f * f, "other", "e", note="mgbp upscale's default"))
    for tile in args.tiles:
        items.append(Item("e", f"`{name}` --tile {tile}", lambda tile=tile: upscale_tensor(model, big, tile=tile),
                          big_shape, h * w * f * f, "other", "e"))
    if baseline is not None:
        try:
            old = prepare(baseline.load_model(name), device, dtype)
            old_inference = importlib.import_module("mgbp_base.inference")
            call, note = (lambda: old_inference.upscale_tensor(old, big)), f"the project at {args.baseline}"
        except Exception as exc:  # noqa: BLE001 (as in section c: reported in the table, not fatal)
            call, note = None, f"not available at {args.baseline}: {exc}"
        items.append(Item("e", f"`{name}` automatic tiles at {args.baseline}", call, big_shape, h * w * f * f,
                          "baseline", "e", note=note))
    return items


def section_g(args, device, baseline) -> list[Item]:
    """The parameter-free pieces `mgbp-x4` runs around its network, on a 1024x1024 output (256 with --quick):
    MATLAB's bicubic by 1/4 (the output projection's S_4, the training losses' S_k) and by 4 (the input X, the
    projection's P), the noise mask m(X) of its W > 0 call and one output projection step; each against the
    same call in `--baseline REV` when given (ratios: baseline / today)."""
    side = 256 if args.quick else 1024
    hr = random_image((1, 3, side, side), 8, device)
    lr = random_image((1, 3, side // 4, side // 4), 9, device)
    pieces = [
        ("MATLAB bicubic 1/4 (`imresize`, antialiased)", f"{side}x{side} -> {side // 4}x{side // 4}",
         (side // 4) ** 2, "resize", lambda m: lambda: m.imresize(hr, scale=0.25)),
        ("MATLAB bicubic x4 (`imresize`)", f"{side // 4}x{side // 4} -> {side}x{side}", side**2, "resize",
         lambda m: lambda: m.imresize(lr, scale=4.0)),
        ("noise mask m(X), `mgbp-x4`'s 2,10,0.5,1.25", f"{side}x{side}", side**2, "models.noise_mask",
         lambda m: lambda: m.noise_mask(hr, m.NoiseMask(2.0, 10.0, 0.5, 1.25))),
        ("one output projection step, x4", f"{side // 4}x{side // 4} -> {side}x{side}", side**2,
         "models.output_projection", lambda m: lambda: m.project_output(lr, hr, 4, 1)),
    ]
    packages = [("mgbp", "project", "")] + ([("mgbp_base", "baseline", f" at {args.baseline}")] if baseline else [])
    items = []
    for label, shape, pixels, module, call in pieces:
        for package, role, suffix in packages:
            try:
                run, note = call(importlib.import_module(f"{package}.{module}")), ""
            except Exception as exc:  # noqa: BLE001 (a piece the baseline did not have: reported, not fatal)
                run, note = None, f"not available{suffix}: {type(exc).__name__}: {exc}"[:300]
            items.append(Item("g", f"{label}{suffix}", run, shape, pixels, role, f"g/{label}", note=note))
    return items


# ---------------------------------------------------------------------------------------------------------------
# Report.


def ratios(items: list[Item]) -> list[dict]:
    """other / project time per output pixel within each group (and baseline / project)."""
    out = []
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    for group, members in groups.items():
        project = next((i for i in members if i.role == "project" and i.median), None)
        if project is None:
            continue
        for other in members:
            if other is project or not other.median:
                continue
            per_pixel = (other.median / other.pixels) / (project.median / project.pixels)
            out.append({"group": group, "project": project.name, "other": other.name, "role": other.role,
                        "ratio": round(per_pixel, 3),
                        "cpu_ratio": round((other.cpu_median / other.pixels) / (project.cpu_median / project.pixels), 3)
                        if other.cpu_median and project.cpu_median else None})
    return out


def summary_e(items: list[Item]) -> dict:
    """Section e's verdicts: automatic plan per pixel against the small image and against the best fixed tile;
    its peak memory against the best tile's and the baseline's."""
    members = [i for i in items if i.section == "e" and i.median]
    small = next((i for i in members if i.role == "project"), None)
    auto = next((i for i in members if i.name.endswith("automatic tiles")), None)
    fixed = [i for i in members if "--tile" in i.name]
    old = next((i for i in members if i.role == "baseline"), None)
    if small is None or auto is None:
        return {}

    def per_pixel(item):
        return item.median / item.pixels

    out = {"auto_vs_small_per_pixel": round(per_pixel(auto) / per_pixel(small), 3), "auto_peak_mib": auto.peak_mib}
    if fixed:
        best = min(fixed, key=per_pixel)
        out.update(best_fixed=best.name, auto_vs_best_fixed=round(per_pixel(auto) / per_pixel(best), 3),
                   best_fixed_peak_mib=best.peak_mib)
    if old is not None:
        out.update(baseline_vs_auto=round(per_pixel(old) / per_pixel(auto), 3), baseline_peak_mib=old.peak_mib)
    return out


def _format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if value >= 0.1 else f"{1000 * value:.1f} ms"


def markdown(items: list[Item], machine: dict, args, section_titles: dict[str, str]) -> str:
    lines = [(f"Machine: {machine_line(machine)}. dtype {args.dtype}, {args.rounds} interleaved rounds, medians. "
              f"Ratio: other / project time per output pixel (above 1: the project is faster); CPU ratio the same "
              f"with process CPU time (steadier on a loaded machine).")]
    table_ratios = {(r["group"], r["other"]): r for r in ratios(items)}
    for section in SECTIONS:
        members = [i for i in items if i.section == section]
        if not members:
            continue
        training = section == "d"
        lines += ["", f"**{section}. {section_titles[section]}**", ""]
        rate = "HR Mpix/s" if training else "s per output Mpix"
        lines.append(f"| what | size | median | {rate} | CPU s | peak memory | params | ratio (CPU ratio) |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for item in members:
            if item.median is None:
                why = item.error or item.note or "skipped"
                lines.append(f"| {item.name} | {item.shape} | skipped: {why} | | | | | |")
                continue
            per = (item.pixels / item.median / 1e6) if training else (item.median / item.pixels * 1e6)
            ratio = table_ratios.get((item.group, item.name))
            ratio_text = "" if ratio is None else f"{ratio['ratio']:.2f}x ({ratio['cpu_ratio']:.2f}x)"
            if ratio and item.role == "baseline":
                ratio_text = f"today is {ratio['ratio']:.2f}x faster ({ratio['cpu_ratio']:.2f}x)"
            memory = "-" if item.peak_mib is None else f"{item.peak_mib:.0f} MiB"
            params = "-" if item.params is None else (f"{item.params / 1e6:.2f} M" if item.params >= 1e5
                                                       else f"{item.params / 1e3:.1f} k")
            lines.append(f"| {item.name} | {item.shape} | {_format_seconds(item.median)} | {per:.3g} | "
                         f"{item.cpu_median:.3f} | {memory} | {params} | {ratio_text} |")
        if section == "e" and summary_e(items):
            verdict = summary_e(items)
            text = f"automatic plan per pixel / small image per pixel: {verdict['auto_vs_small_per_pixel']:.2f}"
            if "auto_vs_best_fixed" in verdict:
                text += f"; / best fixed tile ({verdict['best_fixed']}): {verdict['auto_vs_best_fixed']:.2f}"
            if "baseline_vs_auto" in verdict:
                text += f"; the baseline's automatic plan takes {verdict['baseline_vs_auto']:.2f}x as long"
            lines += ["", text + "."]
    return "\n".join(lines) + "\n"


TITLES = {
    "a": "MGBPv1 (BOE-R3) against the authors' G-MGBP code",
    "b": "Table I presets against the authors' MGBPv2 code (same configuration id, random weights)",
    "c": "shipped models against SPAN, SRVGGNetCompact, EDSR-baseline and bicubic (random weights for peers)",
    "d": "training throughput of the shipped models' recipes (one step: data, forward, backward, optimiser, EMA)",
    "e": "a large image through mgbp upscale's tiled path (automatic plan vs fixed tiles vs the small-image rate)",
    "f": "what each option costs (time relative to the default call; above 1: slower)",
    "g": "the model-free pieces around the networks (MATLAB bicubic, noise mask, output projection) against a "
         "baseline revision",
}


# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    from mgbp.models import PRESETS, SHIPPED

    table_one = [name for name, preset in PRESETS.items()
                 if preset.source.startswith("Table I") and preset.config.get("dims", 2) == 2]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run, e.g. a,b (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes and 2 rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5; 3 for e)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bf16", "half"],
                        help="precision of every network (the project's --bf16 / --half)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--presets", default=",".join(table_one), help="Table I presets for section b")
    parser.add_argument("--models", default=",".join(SHIPPED), help="shipped models for sections c and d")
    parser.add_argument("--size-a", default=None, help="LR WxH of section a (default 96x96)")
    parser.add_argument("--size-b", default=None, help="output side (or WxH) of section b (default 160; the "
                        "GPU anchors: 1920x1080)")
    parser.add_argument("--size-c", default=None, help="output side of section c (default 512)")
    parser.add_argument("--size-e", default=None, help="LR WxH of section e (default 960x540)")
    parser.add_argument("--tiles", default=None, help="fixed LR tiles of section e (default 64,96,128,192,256)")
    parser.add_argument("--peer-layout", default="nchw", choices=["nchw", "nhwc"],
                        help="memory layout of the peers (nchw: as published)")
    parser.add_argument("--malloc", default="reuse", choices=["reuse", "system"],
                        help="reuse: for every item from the start, as the project's first inference call sets it "
                        "(mgbp.allocator); system: malloc's defaults, MGBP_SYSTEM_MALLOC=1 for the project")
    parser.add_argument("--baseline", default=None, metavar="REV", help="also time the project at git revision REV")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared folder (default ../shared)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench_speed", help="folder for the JSON and "
                        "Markdown results")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    chosen = parse_list(args.only, list(SECTIONS), "section")
    args.sections = [s for s in SECTIONS if s in chosen]  # in the order of SECTIONS
    args.presets = parse_list(args.presets, table_one, "preset")
    args.models = parse_list(args.models, list(SHIPPED), "shipped model")
    quick = args.quick
    args.rounds = args.rounds if args.rounds is not None else (2 if quick else 5)
    if args.rounds < 1:
        raise BenchError(f"--rounds must be >= 1, got {args.rounds}")
    args.size_a = parse_size(args.size_a or ("32x32" if quick else "96x96"), "--size-a")
    size_b = str(args.size_b or (64 if quick else 160))
    args.size_b = parse_size(size_b, "--size-b") if "x" in size_b.lower() else (parse_side(size_b, "--size-b"),) * 2
    args.size_c = parse_side(args.size_c or (128 if quick else 512), "--size-c")
    args.size_e = parse_size(args.size_e or ("320x180" if quick else "960x540"), "--size-e")
    tiles = args.tiles or ("96" if quick else "64,96,128,192,256")
    if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", tiles) or min(int(t) for t in tiles.split(",")) < 16:
        raise BenchError(f"--tiles must be a comma-separated list of LR tile sides >= 16, got {tiles!r}")
    args.tiles = [int(t) for t in tiles.split(",")]
    if quick and args.models == list(SHIPPED):
        args.models = list(SHIPPED)[:1]  # the default model only
    if quick and args.presets == table_one:
        args.presets = ["mgbpv2-x4"]
    try:
        args.torch_device = torch.device(args.device)
    except RuntimeError:
        raise BenchError(f"unknown device {args.device!r}") from None
    if args.torch_device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda but CUDA is not available")
    args.torch_dtype = {"float32": torch.float32, "bf16": torch.bfloat16, "half": torch.float16}[args.dtype]
    return args


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing
    try:
        args = parse_args(argv)
    except BenchError as exc:
        print(f"bench_speed: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    from mgbp.allocator import SYSTEM_MALLOC_VARIABLE, reuse_unless_opted_out

    if args.malloc == "system":
        os.environ[SYSTEM_MALLOC_VARIABLE] = "1"
    reuse_unless_opted_out()  # before anything is allocated: every item, peers and baseline included, runs alike
    if args.torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    device, dtype = args.torch_device, args.torch_dtype

    def progress(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    machine = machine_description(device)
    machine["malloc"] = args.malloc
    baseline = load_baseline(args.baseline) if args.baseline else None
    items: list[Item] = []
    for section in args.sections:
        progress(f"section {section}: {TITLES[section]}")
        started = time.perf_counter()
        if section == "a":
            section_items = section_a(args, device, dtype)
        elif section == "b":
            section_items = section_b(args, device, dtype)
        elif section == "c":
            section_items = section_c(args, device, dtype, baseline)
        elif section == "d":
            section_items = section_d(args, device, dtype, baseline, progress)
        elif section == "f":
            section_items = section_f(args, device, dtype)
        elif section == "g":
            section_items = section_g(args, device, baseline)
        else:
            section_items = section_e(args, device, dtype, baseline)
        rounds = args.rounds if section != "e" or args.rounds != 5 else 3
        run_section(section_items, rounds, device, progress)
        items += section_items
        progress(f"section {section}: {time.perf_counter() - started:.0f} s")

    report = markdown(items, machine, args, TITLES)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine,
        "options": {k: (str(v) if isinstance(v, (Path, torch.device, torch.dtype)) else v)
                    for k, v in vars(args).items()},
        "items": [{**{k: v for k, v in dataclasses.asdict(i).items() if k != "run"}, "median_s": i.median,
                   "cpu_median_s": i.cpu_median} for i in items],
        "ratios": ratios(items),
        "large_image": summary_e(items),
    }
    _write(args.out / "bench_speed.json", json.dumps(result, indent=1))
    _write(args.out / "bench_speed.md", report)
    print(report)
    return 0


def _write(path: Path, text: str) -> None:
    """Whole or nothing: a temporary file in the same folder, then os.replace."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


if __name__ == "__main__":
    sys.exit(main())
