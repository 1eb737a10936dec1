"""The evaluation protocol of `shared/data/README.md` and the methods it compares (Table II, Figs. 11, 14, 16).

Protocol, as the paper's benchmark tables are measured (and as reproduces the published bicubic figures):
HR -> modcrop(f) -> LR = MATLAB `imresize(HR, 1/f, 'bicubic')` on uint8 (or a paired LR image of a benchmark
folder) -> method -> round to uint8 (half away from zero, MATLAB's rule) -> scores on the Y channel of MATLAB's
`rgb2ycbcr` with `f` pixels ignored at every border: PSNR-Y and SSIM-Y (Table II) and RMSE on the rounded uint8
Y (the PIRM-SR 2018 scripts behind Figs. 11 and 14). Grey images are replicated to RGB, alpha is ignored.

Methods: the bicubic baseline (MATLAB's bicubic upscale of the uint8 LR image, wrapped as a generator-like
module so the research tools treat it like a network), shipped model names, our weight files and the authors'
`.model` files (`mgbp.models.load_model`). A method runs at noise amplitude W (Algorithm 1, line 1: noise
inputs W * N(0, 1)) with torch's RNG re-seeded for the forward pass, inside `torch.random.fork_rng` so the
caller's RNG is untouched: a generator that draws its standard-normal maps from torch's RNG and scales them by
W (every MGBP family does, and so does tiled inference, tile by tile in a fixed order) sees the same maps at
every W, so metrics are smooth functions of W.

Used by `mgbp eval` (`mgbp.evaluate`), `mgbp sweep`, `mgbp consistency` and `mgbp linearscope`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgbp.backprojection import back_project
from mgbp.errors import ConfigError, ImageReadError, MgbpError
from mgbp.io import IMAGE_EXTENSIONS, list_files, quantise, read_image
from mgbp.models.contract import Capabilities, check_generator
from mgbp.resize import imresize, imresize_uint8, modcrop
from mgbp.tiling import model_device

BICUBIC = "bicubic"
SSIM_WINDOW = 11  # the SSIM window of the protocol (11x11 Gaussian)


# ------------------------------------------------------------------------------------------------- data


def list_images(path: Path) -> list[Path]:
    """The images of a folder (sorted by name), or the one image file given.

    A missing path, a file that is not an image, or a folder without images is a `ConfigError` (a wrong
    argument), so it is never mistaken for one unreadable image (`ImageReadError`), which callers may skip.
    """
    path = Path(path)
    extensions = ", ".join(IMAGE_EXTENSIONS)
    if not path.exists():
        raise ConfigError(f"{path} does not exist (expected a folder of images or an image file)")
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ConfigError(f"{path} is neither a folder nor an image ({extensions})")
        return [path]
    if not path.is_dir():
        raise ConfigError(f"{path} is neither a folder nor an image file")
    images = list_files(path, IMAGE_EXTENSIONS)
    if not images:
        raise ConfigError(f"folder {path} holds no images ({extensions})")
    return images


def find_paired_lr(lr_root: Path, hr_path: Path, scale: int) -> Path:
    """The LR image of `hr_path` in a paired folder: `X4/`-style subfolder or the folder itself, and the
    HR stem with or without the usual `x4` / `_x4` / `_LR` suffixes (DIV2K, Set5 benchmark layouts)."""
    lr_root, hr_path = Path(lr_root), Path(hr_path)
    folders = [lr_root / f"X{scale}", lr_root / f"x{scale}", lr_root]
    stems = [hr_path.stem, f"{hr_path.stem}x{scale}", f"{hr_path.stem}_x{scale}", f"{hr_path.stem}_LR",
             f"{hr_path.stem}_LRBI_x{scale}"]
    for folder in folders:
        if not folder.is_dir():
            continue
        for stem in stems:
            for extension in IMAGE_EXTENSIONS:
                for candidate in (folder / f"{stem}{extension}", folder / f"{stem}{extension.upper()}"):
                    if candidate.is_file():
                        return candidate
    raise ImageReadError(f"{hr_path}: no paired LR image for x{scale} in {lr_root}")


def output_stems(stem: str, scale: int) -> list[str]:
    """The names other tools give their output of the image `stem` (`baby`): `baby` itself, `baby_x4` /
    `babyx4` (benchmark folders), `baby_SR` and `baby_x4_SR` (EDSR and others), `baby_out` (Real-ESRGAN's
    default suffix), `baby_SwinIR` (SwinIR's). Compared without regard to case."""
    return [stem, f"{stem}_x{scale}", f"{stem}x{scale}", f"{stem}_SR", f"{stem}_x{scale}_SR", f"{stem}_out",
            f"{stem}_SwinIR"]


def find_method_output(sr_root: Path, hr_path: Path, scale: int) -> Path:
    """The output another tool made for `hr_path` in the folder `sr_root`: in `sr_root/<HR folder name>/` when
    that exists (one subfolder per dataset), else in `sr_root` itself, named as `output_stems` lists, any
    image extension. None found, or more than one, is an `ImageReadError` (that image is skipped)."""
    sr_root, hr_path = Path(sr_root), Path(hr_path)
    folder = sr_root / hr_path.parent.name
    folder = folder if folder.is_dir() else sr_root
    wanted = {f"{stem}{extension}".lower() for stem in output_stems(hr_path.stem, scale)
              for extension in IMAGE_EXTENSIONS}
    found = sorted(p for p in folder.iterdir() if p.name.lower() in wanted and p.is_file())
    if len(found) > 1:
        raise ImageReadError(f"{hr_path.name}: {len(found)} outputs match in {folder} "
                             f"({', '.join(p.name for p in found)}); keep one")
    if not found:
        raise ImageReadError(f"{hr_path.name}: no output in {folder} (looked for {hr_path.stem}, "
                             f"{hr_path.stem}_x{scale}, {hr_path.stem}_SR, {hr_path.stem}_out, ... with an image "
                             "extension)")
    return found[0]


def smallest_hr_side(scale: int, window: int = 0) -> int:
    """Smallest HR side the protocol accepts at x`scale`: one LR pixel; when scores are measured, a
    `window`-pixel square must remain after modcrop and the `scale`-pixel border shave."""
    if window <= 0:
        return scale
    return -(-(window + 2 * scale) // scale) * scale  # ceil((window + 2 f) / f) * f


def protocol_pair(hr: np.ndarray, scale: int, lr: np.ndarray | Path | None = None, source: str | Path = "image",
                  window: int = SSIM_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(modcropped HR, LR) uint8 HxWx3 arrays: LR made by the MATLAB-exact bicubic 1/f, or the paired `lr`
    (an array, or the path of an image file), checked against the HR size. `window`: see `smallest_hr_side`
    (SSIM's 11 by default, 0 when nothing is scored). A too small HR (named `source` in the message) or a
    mismatched LR is an `ImageReadError`."""
    smallest = smallest_hr_side(scale, window)
    if min(hr.shape[:2]) < smallest:
        raise ImageReadError(f"{source}: {hr.shape[1]}x{hr.shape[0]} is too small for the x{scale} protocol "
                             f"(needs at least {smallest}x{smallest})")
    hr = modcrop(hr, scale)
    if lr is None:
        return hr, imresize_uint8(hr, scale=1.0 / scale)
    lr_source = f"{source} (paired LR)"
    if not isinstance(lr, np.ndarray):
        lr_source, lr = Path(lr), read_image(lr).rgb_uint8()
    if (lr.shape[0] * scale, lr.shape[1] * scale) != hr.shape[:2]:
        raise ImageReadError(f"{lr_source}: LR {lr.shape[1]}x{lr.shape[0]} times {scale} does not match HR "
                             f"{Path(source).name} {hr.shape[1]}x{hr.shape[0]} (after modcrop)")
    return hr, lr


# ------------------------------------------------------------------------------------------------- tensors


def from_uint8(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 HxWx3 -> (1,3,H,W) in [0,1]. Divides in `dtype` (unlike `mgbp.io.to_tensor`, which is float32
    only), so float64 holds k/255 exactly for the metrics."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].to(dtype) / 255.0


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) float in [0,1] -> uint8 HxWx3, rounded half away from zero and clipped (`mgbp.io.quantise`)."""
    return quantise(image.detach()[0].permute(1, 2, 0))


# ------------------------------------------------------------------------------------------------- scores


def psnr_y(output: torch.Tensor, reference: torch.Tensor, scale: int) -> float:
    """PSNR-Y (dB) of one image, `scale` border pixels ignored (Table II)."""
    from mgbp.metrics import psnr

    return float(psnr(output, reference, crop=scale, y_channel=True)[0])


def ssim_y(output: torch.Tensor, reference: torch.Tensor, scale: int) -> float:
    """SSIM-Y of one image, `scale` border pixels ignored (Table II)."""
    from mgbp.metrics import ssim

    return float(ssim(output, reference, crop=scale, y_channel=True)[0])


def rmse_y(output: torch.Tensor, reference: torch.Tensor, scale: int) -> float:
    """RMSE (0-255) of one image as the PIRM-2018 scripts behind Figs. 11 and 14 measure it: Y of MATLAB's
    uint8 `rgb2ycbcr` (rounded), `scale` border pixels ignored."""
    from mgbp.metrics import rmse

    return float(rmse(output, reference, crop=scale, y_channel=True, round_y=True)[0])


def niqe_y(output: torch.Tensor, reference: torch.Tensor | None, scale: int) -> float:
    """NIQE (eq. 14; no reference: `reference` is unused, the argument keeps the scores' signature) of one image
    as the PIRM-2018 scripts behind Figs. 11 and 14 measure it: Y of MATLAB's uint8 `rgb2ycbcr`, `scale` border
    pixels shaved like every other score here. The one NIQE of `mgbp eval` and `mgbp sweep`. ConfigError when
    the shaved image is smaller than NIQE's 96x96 blocks."""
    from mgbp.metrics import niqe

    return float(niqe(output[..., scale:-scale, scale:-scale] if scale > 0 else output)[0])


NIQE_BLOCK = 96  # NIQE's block side (niqe_release)
NIQE_FEW_BLOCKS = 4  # fewer 96x96 blocks than this: a NIQE figure worth a warning


def niqe_block_count(height: int, width: int, scale: int) -> int:
    """How many 96x96 blocks `niqe_y` measures on a height x width output (its `scale` border shaved): NIQE
    fits its statistics over them, so a figure from very few blocks is unreliable."""
    return max(0, (height - 2 * scale) // NIQE_BLOCK) * max(0, (width - 2 * scale) // NIQE_BLOCK)


# ------------------------------------------------------------------------------------------------- methods


@dataclass
class BicubicConfig:
    scale: int


class BicubicUpscaler(torch.nn.Module):
    """MATLAB bicubic upscaling as a generator (the baseline of every table, and the linear reference of
    Linearscope): same interface as the MGBP generators, no noise, exactly linear."""

    family = "bicubic"
    is_video = False
    noise_channels = 0
    border_lr = 3  # 4-tap kernel plus the symmetric boundary
    capabilities = Capabilities(whole_image_noise=False, placement=False)  # no noise; shift-equivariant

    def __init__(self, scale: int = 4):
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ConfigError(f"bicubic scale must be an integer >= 1, got {scale}")
        self.scale = int(scale)
        self.config = BicubicConfig(self.scale)

    def forward(self, lr: torch.Tensor, noise_amp=0.0, noise=None) -> torch.Tensor:
        return imresize(lr, scale=float(self.scale))


def is_bicubic(spec: str) -> bool:
    return str(spec).lower() == BICUBIC


def method_label(spec: str) -> str:
    """`Bicubic` (as in Table II), a shipped model's name, or a weight file's stem."""
    if is_bicubic(spec):
        return "Bicubic"
    path = Path(spec)
    return path.stem if path.suffix else str(spec)


def method_labels(specs: Sequence[str]) -> list[str]:
    """One label per method; two weight files with the same stem are told apart by their paths. The same
    method given twice is a `ConfigError`."""
    specs = [str(s) for s in specs]
    keys = [BICUBIC if is_bicubic(s) else s for s in specs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ConfigError(f"method {repeated[0]!r} given twice")
    labels = [method_label(s) for s in specs]
    return [spec if labels.count(label) > 1 else label for spec, label in zip(specs, labels)]


def resolve_device(device: str | None = None) -> str:
    """The device to run on: as given (checked usable, `mgbp.device.resolve_device`), else cuda when available,
    else cpu."""
    from mgbp.device import resolve_device as usable_device

    return str(usable_device(device))


def load_generator(spec: str, scale: int | None = None, device: str | None = None) -> torch.nn.Module:
    """`bicubic` (at `scale`, default 4) or a generator `mgbp.models.load_model` accepts, in eval mode on
    `device` (see `resolve_device`). With `scale`, a generator of another scale is a `ConfigError`."""
    if is_bicubic(spec):
        return BicubicUpscaler(scale or 4)
    from mgbp.models import load_model  # imported late: bicubic needs no model code

    model = load_model(spec, device=resolve_device(device))
    check_generator(model)
    if scale is not None and int(model.scale) != int(scale):
        raise ConfigError(f"method {spec} upscales x{model.scale}, not x{scale}")
    model.eval()
    return model


@contextlib.contextmanager
def seeded_rng(seed: int, model: torch.nn.Module) -> Iterator[None]:
    """torch's RNG (CPU, and the model's GPU) seeded to `seed` inside the block, restored after it."""
    device, _ = model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def forward_with_noise(model: torch.nn.Module, lr: torch.Tensor, noise_amp: float, seed: int = 0,
                       tile: int | None = None, overlap: int | None = None, out_device=None,
                       self_ensemble: bool = False) -> torch.Tensor:
    """One forward pass at noise amplitude W with the noise seeded by `seed` (the same standard-normal maps
    at every W), through `mgbp.tiling.run_model`: tiles of `tile` LR pixels (None: automatic, the whole
    image unless it is large), float32 output on `out_device` (default: lr's device), not clamped.

    Generators whose noise `run_model` draws for the whole image take it from a CPU generator seeded with
    `seed` (the same maps on every device, as `mgbp upscale --seed` draws them); the others draw their own from
    torch's RNG, seeded likewise for the call. `self_ensemble`: the 8-symmetry mean (W = 0; `run_model`)."""
    from mgbp.tiling import run_model

    with seeded_rng(seed, model):
        return run_model(model, lr, float(noise_amp), tile, overlap, out_device=out_device,
                         generator=torch.Generator().manual_seed(int(seed)), self_ensemble=self_ensemble)


def upscale_uint8(model: torch.nn.Module, lr: np.ndarray, noise_amp: float = 0.0, seed: int = 0,
                  tile: int | None = None, self_ensemble: bool = False, consistent: bool = False,
                  consistent_steps: int | None = None) -> np.ndarray:
    """The method's output for a uint8 HxWx3 LR image, rounded to uint8 as the protocol says. `consistent`: the
    output projected onto S_f(Y) = LR first (classic back-projection, eqs. 4-5), as `mgbp upscale --consistent`
    writes it; `consistent_steps`: that many back-projection iterations (None: until converged)."""
    scale, x = int(model.scale), from_uint8(lr)
    if isinstance(model, BicubicUpscaler):
        # MATLAB's imresize of the uint8 image: float64 on the integer values, rounded once
        bicubic = imresize_uint8(lr, scale=float(scale))
        if not consistent:
            return bicubic
        output = from_uint8(bicubic)
    else:
        output = forward_with_noise(model, x, noise_amp, seed=seed, tile=tile, out_device="cpu",
                                    self_ensemble=self_ensemble)
        expected = (1, 3, scale * lr.shape[0], scale * lr.shape[1])
        if tuple(output.shape) != expected:
            raise MgbpError(f"the x{scale} model returned shape {tuple(output.shape)} for a {lr.shape[1]}x"
                            f"{lr.shape[0]} input, expected {expected}")
    return to_uint8(back_project(x, output, scale, consistent_steps) if consistent else output)
