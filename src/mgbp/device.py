"""The compute device a command runs on: `--device` (or a config's `device`) checked before any work.

Not a paper equation but the boundary between what a user types and torch: a name torch parses may still be
unusable. "meta" tensors hold no data (a model moved there computes nothing and fails later with a traceback),
a CUDA index may not exist, a backend may be compiled out. `resolve_device` refuses these with a one-line
ConfigError and proves the device works with one tiny allocation.
"""

from __future__ import annotations

import torch

from mgbp.errors import ConfigError

COMPUTE_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")  # devices whose tensors hold data


def default_device() -> torch.device:
    """CUDA when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_is_emulated(device: str | torch.device) -> bool:
    """True on a CPU without AVX512-BF16 or AMX (torch's own probes), where bfloat16 convolutions are emulated and
    run slower than float32 (seen on a 2-core Xeon without them: `amp: bf16` training took more than twice as
    long per step as float32); False on other devices, or where torch cannot tell."""
    if torch.device(device).type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is None for probe in probes):  # a torch without the probes: say nothing
        return False
    return not any(probe() for probe in probes)


def resolve_device(name: str | torch.device | None = None, option: str = "--device") -> torch.device:
    """The device `name` names (None or "auto": `default_device`), checked usable; ConfigError naming `option`
    otherwise."""
    if name is None or str(name) == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{option} {name}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type not in COMPUTE_DEVICE_TYPES:
        raise ConfigError(f"{option} {name}: {device.type} tensors hold no data to compute with; use cpu, cuda or "
                          f"cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {name}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{option} {name}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    try:
        (torch.zeros(1, device=device) + 1).cpu()
    except (RuntimeError, AssertionError, TypeError) as exc:  # a backend compiled out, a device gone
        raise ConfigError(f"{option} {name}: cannot be used ({_first_line(exc)})") from None
    return device


def _first_line(exc: BaseException, limit: int = 120) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit].rstrip() + "..."
