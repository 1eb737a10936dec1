"""Inference: the public upscale API, the generator's forward pass (Algorithm 1, eq. 5) on numpy arrays, PIL
images and tensors of any size.

`upscale` (`mgbp.upscale`) and `upscale_tensor` take images in the package's pixel convention (float in [0, 1],
uint8, uint16; checked before any work), resolve the model (`resolve_model`: a module, a shipped name or weight
file, the default for a scale; device and dtype) and the settings every front end shares (`InferenceOptions`:
W in [0, 1] of Algorithm 1, line 1, its seed, tiles, back-projection onto the input, eqs. 4-5, self-ensemble),
run the model and return the same kind they were given. Grey and alpha channels are handled here: grey runs as
RGB, alpha is upscaled with MATLAB bicubic.

How the model runs, exactly tiled so that any image fits in memory, is an execution detail that lives in
`mgbp.tiling` (`run_model`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from mgbp.backprojection import back_project, check_steps
from mgbp.errors import ConfigError
from mgbp.io import quantise
from mgbp.resize import imresize
from mgbp.tiling import check_self_ensemble, model_scale, run_model

# ---------------------------------------------------------------------------------------------------------------
# Python API: numpy arrays, PIL images and tensors in, the same kind out.


def check_noise_amplitude(noise_amp, allow_extrapolation: bool = False, name: str = "noise") -> None:
    """W (Algorithm 1, line 1: x = [X, W N(0,1)]) must be finite and in [0, 1], the range the generators are
    trained on (W = 0 fidelity, W = 1 perception, eq. 11); `allow_extrapolation` also permits W > 1.
    ConfigError otherwise: a NaN or infinite W would turn every output pixel into NaN (written black)."""
    values = noise_amp.detach().double().flatten().tolist() if torch.is_tensor(noise_amp) else [noise_amp]
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} (the noise amplitude W) must be a number, got {noise_amp!r}") from None
    top = math.inf if allow_extrapolation else 1.0
    for value in values:
        if not (math.isfinite(value) and 0.0 <= value <= top):
            allowed = "finite and >= 0" if allow_extrapolation else \
                "finite and in [0, 1] (W > 1 extrapolates beyond training: --allow-extrapolation permits it)"
            raise ConfigError(f"{name} (the noise amplitude W) must be {allowed}, got {value}")


def resolve_model(model=None, scale: int | None = None, device=None, dtype=None, video: bool = False):
    """A ready generator: a module as given, a shipped name / weight file, or the default for `scale` (for
    videos, `video=True`: the shipped video model of that scale if there is one). A module must keep the
    generator contract (`mgbp.models.contract`) and support the dtype asked for (its `capabilities`)."""
    from mgbp.models.contract import check_generator

    if model is None:
        model = default_model_for_scale(scale, video)
    elif isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from mgbp.models import load_model

        model = load_model(str(model))
    check_generator(model)
    wanted = resolve_dtype(dtype)
    for reduced, supported in ((torch.float16, model.capabilities.half), (torch.bfloat16, model.capabilities.bf16)):
        if wanted == reduced and not supported:
            raise ConfigError(f"{model.family} models do not run in {str(reduced).removeprefix('torch.')}")
    if scale is not None and int(scale) != model_scale(model):
        raise ConfigError(f"the model upscales x{model_scale(model)}, not x{scale}; pick a model for x{scale}")
    model.eval()
    if device is not None or dtype is not None:
        from mgbp.device import resolve_device

        try:
            model.to(device=resolve_device(device, "device") if device is not None else None,  # not meta...
                     dtype=resolve_dtype(dtype))
        except (RuntimeError, AssertionError) as exc:  # no such device, or torch built without it
            raise ConfigError(f"cannot use device {device!r}: {str(exc).splitlines()[0]}") from None
    return model


def default_model_for_scale(scale: int | None, video: bool = False):
    """The shipped model for `scale` (first of `mgbp.models.SHIPPED` with that scale), or an MgbpError that says
    which shipped weights exist."""
    from mgbp.models import default_model_for_scale as shipped_name_for
    from mgbp.models import load_model
    from mgbp.models.weights import DEFAULT_SCALE

    return load_model(shipped_name_for(int(scale if scale is not None else DEFAULT_SCALE), video=video))


def resolve_dtype(dtype):
    """None / torch dtype / 'half' 'fp16' 'float16' 'bf16' 'bfloat16' 'float32' -> torch dtype or None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"half": torch.float16, "fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "float": torch.float32, "float32": torch.float32, "fp32": torch.float32}
    if str(dtype).lower() not in names:
        raise ConfigError(f"unknown dtype {dtype!r} (use one of {', '.join(names)})")
    return names[str(dtype).lower()]


def upscale(image, model=None, scale: int | None = None, noise: float = 0.0, tile: int | None = None,
            device=None, dtype=None, overlap: int | None = None, progress: bool = False, seed: int | None = None,
            self_ensemble: bool = False, allow_extrapolation: bool = False, consistent: bool = False,
            consistent_steps: int | None = None):
    """Upscale a numpy array (HxW, HxWxC, NxHxWxC; uint8, uint16 or float in [0,1]), a PIL image or a float
    tensor ((C,H,W) or (N,C,H,W) in [0,1]) and return the same kind, clamped to the valid range.

    Float pixels must be finite and in [0, 1] (else a ConfigError: 0..255 data is never guessed); a PIL "F"
    (32-bit float) image is taken as 0..1 too and comes back as "F". Read-only arrays (`np.asarray` of a PIL
    image) are copied, never handed to torch as they are.
    `noise` is the amplitude W, finite and in [0, 1] (`allow_extrapolation=True` permits W > 1); `seed` (int)
    makes its noise reproducible, on any device and with any tiling (None: torch's RNG). Grey inputs run through
    the model as RGB and come back grey (channel mean); an alpha channel is upscaled separately with MATLAB
    bicubic (`mgbp.resize.imresize`). PIL palette images come back RGB or RGBA. `self_ensemble` (W = 0):
    average over the 8 flips/rotations (8x slower, about +0.1 dB). `consistent`: the output projected onto
    S_f(Y) = input by back-projection (eqs. 4-5), as `mgbp upscale --consistent`, in `consistent_steps`
    iterations when given (one iteration: one bicubic downscale and upscale). The settings are those of
    `InferenceOptions`.
    """
    options = InferenceOptions(noise=noise, seed=seed, tile=tile, overlap=overlap, self_ensemble=self_ensemble,
                               allow_extrapolation=allow_extrapolation, progress=progress, consistent=consistent,
                               consistent_steps=consistent_steps)
    options.check()
    to_kind, x = _from_any(image)
    model = resolve_model(model, scale, device, dtype)
    return to_kind(upscale_tensor(model, x, options))


@dataclass(frozen=True)
class InferenceOptions:
    """How the generator runs on an image, the settings every front end shares (`mgbp.upscale`, `mgbp upscale`,
    `mgbp serve`, the Ray workers, `mgbp.image_files`): W = `noise` (Algorithm 1, line 1; in [0, 1] unless
    `allow_extrapolation`), the `seed` of its noise (None: torch's RNG), the LR `tile` side and `overlap` (None:
    automatic), back-projection onto the input (`consistent`, eqs. 4-5), the geometric `self_ensemble` (W = 0),
    and a tqdm bar of tiles (`progress`). The device and dtype belong to the model (`resolve_model`)."""

    noise: float = 0.0
    seed: int | None = None
    tile: int | None = None
    overlap: int | None = None
    consistent: bool = False
    consistent_steps: int | None = None  # this many back-projection iterations (None: until converged)
    self_ensemble: bool = False
    allow_extrapolation: bool = False
    progress: bool = False

    def check(self, noise_name: str = "noise") -> None:
        """ConfigError, before any work, for a W out of range or a self-ensemble at W > 0."""
        check_noise_amplitude(self.noise, self.allow_extrapolation, name=noise_name)
        check_steps(self.consistent, self.consistent_steps)
        if self.self_ensemble:
            check_self_ensemble(self.noise)


def seeded_generator(seed: int | None) -> torch.Generator | None:
    """A CPU generator for the noise maps (None: use torch's RNG)."""
    return None if seed is None else torch.Generator().manual_seed(int(seed))


def upscale_tensor(model, x: torch.Tensor, options: InferenceOptions | None = None, **settings) -> torch.Tensor:
    """(N,C,H,W) float in [0,1], C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) -> upscaled, clamped.

    `options` (`InferenceOptions`; keywords of the same names, e.g. `noise=0.5, seed=0`, replace its fields).
    Grey runs through the model as RGB and comes back as the channel mean; alpha is upscaled with MATLAB
    bicubic and re-attached. `consistent`: project the output onto S_f(Y) = x (classic back-projection,
    eqs. 4-5, `mgbp.backprojection.back_project`) before clamping. W is checked by `check_noise_amplitude`;
    `self_ensemble`: see `run_model`.
    """
    options = replace(options or InferenceOptions(), **settings)
    check_noise_amplitude(options.noise, options.allow_extrapolation)
    rgb, alpha, grey = _split_channels(x)
    out = run_model(model, rgb, noise_amp=options.noise, tile=options.tile, overlap=options.overlap,
                    progress=options.progress, out_device=rgb.device, generator=seeded_generator(options.seed),
                    self_ensemble=options.self_ensemble)
    if options.consistent:
        out = back_project(rgb, out, model_scale(model), options.consistent_steps)
    if alpha is not None:
        alpha = imresize(alpha.float(), scale=model_scale(model)).clamp(0.0, 1.0)
    return _merge_channels(out.clamp(0.0, 1.0), alpha, grey)


def _from_any(image):
    """(function mapping an (N,C,H,W) output back to the input's kind, the input as (N,C,H,W) float)."""
    if torch.is_tensor(image):
        return _from_tensor(image)
    if isinstance(image, np.ndarray):
        return _from_numpy(image)
    from PIL import Image

    if isinstance(image, Image.Image):
        return _from_pil(image)
    raise ConfigError(f"upscale expects a numpy array, a PIL image or a tensor, got {type(image).__name__}")


def _split_channels(x: torch.Tensor):
    """(N,C,H,W) with C in 1..4 -> (rgb (N,3,H,W), alpha or None, grey flag)."""
    channels = x.shape[1]
    if channels not in (1, 2, 3, 4):
        raise ConfigError(f"images must have 1 to 4 channels, got {channels}")
    grey = channels in (1, 2)
    colour = x[:, :1].expand(-1, 3, -1, -1) if grey else x[:, :3]
    alpha = x[:, channels - 1:] if channels in (2, 4) else None
    return colour.contiguous(), alpha, grey


def _merge_channels(rgb: torch.Tensor, alpha, grey: bool) -> torch.Tensor:
    colour = rgb.mean(dim=1, keepdim=True) if grey else rgb
    return colour if alpha is None else torch.cat([colour, alpha.to(colour.dtype)], dim=1)


def _from_tensor(image: torch.Tensor):
    batched = image.dim() == 4
    if image.dim() not in (3, 4):
        raise ConfigError(f"tensors must be (C,H,W) or (N,C,H,W), got shape {tuple(image.shape)}")
    x = image if batched else image[None]
    integer = not x.is_floating_point()
    if not integer:
        check_float_pixels(x, "a float tensor")
    x = x.float() / 255.0 if integer else x.float()

    def back(out):
        out = torch.from_numpy(quantise(out)).to(image.device, image.dtype) if integer else out.to(image.dtype)
        return out if batched else out[0]

    return back, x


def check_float_pixels(x, what: str) -> None:
    """Float pixels (a tensor or numpy array) must be finite and in [0, 1], the package's convention
    (docs/DEVELOPING.md): 0..255 data in a float array would be clamped to white, and a NaN would spread through
    every output pixel it reaches. ConfigError otherwise."""
    library = torch if torch.is_tensor(x) else np
    if (x.size if library is np else x.numel()) == 0:
        return
    finite = bool(library.isfinite(x).all())
    low, high = float(x.min()), float(x.max())
    if not finite or low < 0.0 or high > 1.0:
        found = "NaN/Inf values" if not finite else f"values from {low:g} to {high:g}"
        raise ConfigError(f"{what} must hold finite values in [0, 1], got {found}; divide 0..255 data by 255 (or "
                          f"pass uint8/uint16 pixels)")


def _from_numpy(image: np.ndarray):
    if image.ndim not in (2, 3, 4):
        raise ConfigError(f"arrays must be HxW, HxWxC or NxHxWxC, got shape {image.shape}")
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype)
    if peak is None and not np.issubdtype(image.dtype, np.floating):
        raise ConfigError(f"arrays must be uint8, uint16 or float, got {image.dtype}")
    if peak is None:
        check_float_pixels(image, "a float array")
    x = torch.from_numpy(np.ascontiguousarray(image).astype(np.float32) / (peak or 1.0))
    x = x[..., None] if image.ndim == 2 else x
    x = (x if image.ndim == 4 else x[None]).permute(0, 3, 1, 2)

    def back(out):
        arr = out.permute(0, 2, 3, 1).numpy()
        arr = arr if image.ndim == 4 else arr[0]
        arr = arr[..., 0] if image.ndim == 2 else arr
        if peak is None:
            return arr.astype(image.dtype)
        return quantise(arr, 8 if peak == 255 else 16)

    return back, x


def _from_pil(image):
    from PIL import Image

    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "F":  # 32-bit float: taken as 0..1 (checked), returned as "F"
        back, tensors = _from_numpy(np.asarray(image, dtype=np.float32))
        return (lambda out: Image.fromarray(back(out), mode="F")), tensors
    elif mode in ("I;16", "I;16B", "I;16L", "I"):
        if mode == "I" and not 0 <= int(np.asarray(image).min()) <= int(np.asarray(image).max()) <= 65535:
            raise ConfigError("a 32-bit integer PIL image (mode I) must hold values in 0..65535 (16-bit samples)")
        array = np.asarray(image).astype(np.uint16) if mode == "I" else np.asarray(image)
        back, tensors = _from_numpy(array.astype(np.uint16))
        return (lambda out: Image.fromarray(back(out))), tensors
    elif mode not in ("L", "LA", "RGB", "RGBA"):  # 1-bit comes back grey; CMYK, YCbCr, HSV... as RGB(A)
        image = image.convert("L" if mode == "1" else "RGBA" if "A" in mode else "RGB")
    back, tensors = _from_numpy(np.asarray(image))
    return (lambda out: Image.fromarray(back(out))), tensors
