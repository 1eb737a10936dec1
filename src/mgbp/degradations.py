"""The second-order degradation model of Real-ESRGAN (Wang et al., "Real-ESRGAN: Training Real-World Blind
Super-Resolution with Pure Synthetic Data", ICCVW 2021, Section 3 and Fig. 2), on batched tensors, and the
fixed degradations of degraded test sets (`mgbp eval --degrade`).

The paper's LR is S_f(X), a clean bicubic downscale (eqs. 1, 9). Photos people have are also blurred, noisy,
resized by unknown software and JPEG-compressed, several times over. Real-ESRGAN's model applies the classical
chain twice, then resizes to the LR size:

    first order:   blur k1 -> resize (random scale r1 of the HR size) -> noise n1 -> JPEG q1
    second order:  blur k2 -> resize (random scale r2 of the LR size) -> noise n2
    final:         [resize to the LR size -> sinc filter] and JPEG q2, in random order

with (the defaults of `DegradationConfig`, Real-ESRGAN's x4 settings):

| step | first order | second order |
| --- | --- | --- |
| blur, probability | 1.0 | 0.8 |
| kernel size | odd 7..21 | odd 7..21 |
| kernel type | iso 0.45, aniso 0.25, generalised iso 0.12 / aniso 0.03, plateau iso 0.12 / aniso 0.03 | same |
| sinc (ringing) kernel instead, probability | 0.1 (cut-off pi/3..pi, pi/5..pi for sizes >= 13) | 0.1 |
| sigma (HR pixels), rotation | 0.2..3, uniform angle (anisotropic) | 0.2..1.5 |
| beta: generalised, plateau | 0.5..4, 1..2 (half the draws below 1, half above) | same |
| resize up / down / keep | 0.2 / 0.7 / 0.1, scale 0.15..1.5 (of HR) | 0.3 / 0.4 / 0.3, scale 0.3..1.2 (of LR) |
| resize mode | bicubic, bilinear, area (equally likely) | same |
| noise: Gaussian (else Poisson) | 0.5: sigma 1..30 (0-255) | 0.5: sigma 1..25 |
| Poisson scale | 0.05..3 | 0.05..2.5 |
| grey noise (same on R, G, B) | 0.4 | 0.4 |
| JPEG quality | 30..95 | 30..95 (final) |
| final sinc filter | - | 0.8 (sizes 7..21, cut-off pi/3..pi) |

Kernels: Q(x) = x^T Sigma^-1 x on the kernel grid, Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T
(sigma_y = sigma_x and theta = 0 for isotropic kernels); Gaussian exp(-Q/2), generalised Gaussian
exp(-Q^beta/2), plateau 1/(1 + Q^beta); sinc (a circular ideal low-pass) w J1(w r) / (2 pi r); each normalised
to sum 1. Noise: Gaussian N(0, sigma^2); Poisson (the shot noise of a sensor that counts 255 photons at full
scale): (Poisson(255 x) / 255 - x) * scale. JPEG: `mgbp.jpeg` (libjpeg's codec on tensors, 4:2:0).
Resizes: `torch.nn.functional.interpolate` without antialiasing (the aliasing is a degradation too), plus
`matlab` (`mgbp.resize.imresize`, the antialiased bicubic of the evaluation protocol) as an optional mode.

Our additions, documented as such: per-operation probabilities `noise_prob` and `jpeg_prob` (Real-ESRGAN: 1),
`second_order_prob` (1: always twice), and `clean_prob`, the share of samples whose LR is the paper's clean
bicubic S_f(X) (0 in Real-ESRGAN). Everything random is drawn per sample (kernel, noise, quality, which steps
apply) except what fixes the tensor's size: the resize scales and modes and the order of the final step are
drawn per batch, as Real-ESRGAN does. All draws come from one `torch.Generator`: the same seed gives the same
LR batch, on any thread count.

MGBP's noise input W (Algorithm 1, line 1; eq. 11) is a different noise: the degradation noise above is part
of the *input* and the network must learn to remove it, while W * N(0, 1) is injected *inside* the network to
make up the detail the LR no longer holds. Training the perceptual stage (eq. 11) on degraded LR keeps the
two apart: Y_{W=0} is pulled to the clean HR (L1 and cycle terms), Y_{W=1} to realistic texture (GAN), so
W still moves a restored photo from clean to textured, whatever noise the photo had.

Cost (one CPU thread, x86_64 2-core machine, torch 2.13 CPU), a batch of 16 HR patches of 96x96 (plus the
2-LR-pixel margin of `mgbp.data`: 112x112) against one fidelity training step of the default model's config
(configs/cpu-x4.yaml), both timed by `PYTHONPATH=src python benchmarks/bench_degradations.py [--degradation
configs/cpu-x4-real.yaml]`. The machine was shared with 2-3 training runs and other jobs (load 10-20 on 2
cores), so the absolute times are inflated and only the ratio is meaningful; three runs gave the pipeline
15-17 % of (pipeline + step): defaults 317 ms vs step 1631 ms and 1045 ms vs 5680 ms; the mgbp-x4-real
settings 835 ms vs 4033 ms. It does not dominate a step; the JPEG at the HR size is the largest part.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mgbp.errors import ConfigError
from mgbp.jpeg import jpeg_compress
from mgbp.resize import imresize

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("bicubic", "bilinear", "area", "matlab")
_SHAPE_GAUSSIAN, _SHAPE_GENERALIZED, _SHAPE_PLATEAU = 0, 1, 2


# ------------------------------------------------------------------------------------------------ config
@dataclass
class OrderConfig:
    """The ranges of one order of degradation (blur, resize, noise, JPEG). Ranges are [low, high]."""

    blur_prob: float = 1.0
    kernel_size: tuple = (7, 21)  # odd sizes in this range, uniformly
    kernel_probs: dict = field(default_factory=lambda: dict(zip(KERNEL_TYPES, (0.45, 0.25, 0.12, 0.03, 0.12, 0.03))))
    sinc_prob: float = 0.1
    blur_sigma: tuple = (0.2, 3.0)
    betag: tuple = (0.5, 4.0)  # generalised Gaussian shape
    betap: tuple = (1.0, 2.0)  # plateau shape
    resize_probs: dict = field(default_factory=lambda: {"up": 0.2, "down": 0.7, "keep": 0.1})
    resize_range: tuple = (0.15, 1.5)
    resize_modes: dict = field(default_factory=lambda: {"bicubic": 1.0, "bilinear": 1.0, "area": 1.0})
    noise_prob: float = 1.0
    gaussian_noise_prob: float = 0.5  # else Poisson
    noise_sigma: tuple = (1.0, 30.0)  # 0-255
    poisson_scale: tuple = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 1.0
    jpeg_quality: tuple = (30, 95)


def _second_order_defaults() -> OrderConfig:
    return OrderConfig(blur_prob=0.8, blur_sigma=(0.2, 1.5), resize_probs={"up": 0.3, "down": 0.4, "keep": 0.3},
                       resize_range=(0.3, 1.2), noise_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5))


@dataclass
class DegradationConfig:
    """Real-ESRGAN's second-order model (module docstring); `data.degradation` of a training config."""

    first: OrderConfig = field(default_factory=OrderConfig)
    second: OrderConfig = field(default_factory=_second_order_defaults)
    second_order_prob: float = 1.0
    final_sinc_prob: float = 0.8
    final_resize_modes: dict = field(default_factory=lambda: {"bicubic": 1.0, "bilinear": 1.0, "area": 1.0})
    clean_prob: float = 0.0

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "data.degradation") -> DegradationConfig:
        """A validated config from a (possibly partial) mapping; the defaults fill the rest."""
        d = {} if d is None else d
        if not isinstance(d, dict):
            raise ConfigError(f"{where} must be a mapping of degradation settings, got {d!r}")
        defaults = cls()
        values = {}
        for key, value in d.items():
            if key not in {f.name for f in dataclasses.fields(cls)}:
                raise ConfigError(f"unknown config key '{where}.{key}'")
            if key in ("first", "second"):
                values[key] = _order_from_dict(value, getattr(defaults, key), f"{where}.{key}")
            else:
                values[key] = value
        config = dataclasses.replace(defaults, **values)
        for key in ("second_order_prob", "final_sinc_prob", "clean_prob"):
            _check_probability(getattr(config, key), f"{where}.{key}")
        config.final_resize_modes = _check_choices(config.final_resize_modes, RESIZE_MODES,
                                                   f"{where}.final_resize_modes")
        return config


def _order_from_dict(d, defaults: OrderConfig, where: str) -> OrderConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {d!r}")
    names = {f.name for f in dataclasses.fields(OrderConfig)}
    for key in d:
        if key not in names:
            raise ConfigError(f"unknown config key '{where}.{key}'")
    config = dataclasses.replace(defaults, **d)
    for key in ("blur_prob", "sinc_prob", "noise_prob", "gaussian_noise_prob", "gray_noise_prob", "jpeg_prob"):
        _check_probability(getattr(config, key), f"{where}.{key}")
    config.kernel_size = _check_range(config.kernel_size, f"{where}.kernel_size", 3, 41, integer=True)
    if config.kernel_size[0] % 2 == 0 or config.kernel_size[1] % 2 == 0:
        raise ConfigError(f"{where}.kernel_size must be odd sizes, got {list(config.kernel_size)}")
    config.blur_sigma = _check_range(config.blur_sigma, f"{where}.blur_sigma", 0.05, 20.0)
    config.betag = _check_range(config.betag, f"{where}.betag", 0.1, 10.0)
    config.betap = _check_range(config.betap, f"{where}.betap", 0.1, 10.0)
    config.resize_range = _check_range(config.resize_range, f"{where}.resize_range", 0.05, 4.0)
    config.noise_sigma = _check_range(config.noise_sigma, f"{where}.noise_sigma", 0.0, 255.0)
    config.poisson_scale = _check_range(config.poisson_scale, f"{where}.poisson_scale", 0.0, 20.0)
    config.jpeg_quality = _check_range(config.jpeg_quality, f"{where}.jpeg_quality", 1, 100, integer=True)
    config.kernel_probs = _check_choices(config.kernel_probs, KERNEL_TYPES, f"{where}.kernel_probs")
    config.resize_probs = _check_choices(config.resize_probs, ("up", "down", "keep"), f"{where}.resize_probs")
    config.resize_modes = _check_choices(config.resize_modes, RESIZE_MODES, f"{where}.resize_modes")
    return config


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_probability(value, where: str) -> None:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where} must be a probability in [0, 1], got {value!r}")


def _check_range(value, where: str, low, high, integer: bool = False) -> tuple:
    kind = "integers" if integer else "numbers"
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_number(v) for v in value)
            or (integer and not all(float(v).is_integer() for v in value))):
        raise ConfigError(f"{where} must be a range [low, high] of {kind}, got {value!r}")
    a, b = value
    if not low <= a <= b <= high:
        raise ConfigError(f"{where} must satisfy {low} <= low <= high <= {high}, got {list(value)}")
    return (int(a), int(b)) if integer else (float(a), float(b))


def _check_choices(value, names: tuple, where: str) -> dict:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where} must be a mapping of {', '.join(names)} to weights, got {value!r}")
    for key, weight in value.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown choice {key!r} (valid: {', '.join(names)})")
        if not _is_number(weight) or weight < 0:
            raise ConfigError(f"{where}.{key} must be a weight >= 0, got {weight!r}")
    if sum(value.values()) <= 0:
        raise ConfigError(f"{where}: the weights must not all be 0")
    return dict(value)


# ---------------------------------------------------------------------------------------------- sampling
def _uniform(low: float, high: float, n: int, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def _bernoulli(p: float, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64) < p


def _choice(weights: dict, n: int, g: torch.Generator) -> list[str]:
    names = list(weights)
    w = torch.tensor([float(weights[k]) for k in names], dtype=torch.float64)
    return [names[i] for i in torch.multinomial(w, n, replacement=True, generator=g).tolist()]


def _odd_sizes(size_range: tuple, n: int, g: torch.Generator) -> torch.Tensor:
    low, high = size_range
    count = (high - low) // 2 + 1
    return low + 2 * torch.randint(0, count, (n,), generator=g)


def _beta(beta_range: tuple, n: int, g: torch.Generator) -> torch.Tensor:
    """Half the draws in [low, 1), half in [1, high] (Real-ESRGAN's rule: shapes near Gaussian are common)."""
    low, high = beta_range
    below = _uniform(low, min(1.0, high), n, g)
    above = _uniform(max(1.0, low), high, n, g)
    return torch.where(_bernoulli(0.5, n, g), below, above)


# ----------------------------------------------------------------------------------------------- kernels
def kernel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) float64 coordinates of a size x size kernel, centred: -(size // 2) .. size // 2."""
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    return ax[None, :].expand(size, size), ax[:, None].expand(size, size)


def gaussian_family_kernels(size: int, sigma_x, sigma_y, theta, beta, shape) -> torch.Tensor:
    """(N, size, size) float64 kernels, normalised: Q = x^T Sigma^-1 x with Sigma = R(theta) diag(sigma_x^2,
    sigma_y^2) R(theta)^T; shape 0: exp(-Q/2), 1: exp(-Q^beta/2) (generalised), 2: 1/(1 + Q^beta) (plateau).
    Parameters are (N,) tensors (or numbers)."""
    sx, sy, th, be, sh = (torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1, 1)
                          for v in (sigma_x, sigma_y, theta, beta, shape))
    x, y = kernel_grid(size)
    # rotate the grid into the kernel's principal axes: u = R^T (x, y)
    u = torch.cos(th) * x + torch.sin(th) * y
    v = -torch.sin(th) * x + torch.cos(th) * y
    q = (u / sx) ** 2 + (v / sy) ** 2
    qb = q ** be
    k = torch.where(sh == _SHAPE_GAUSSIAN, torch.exp(-0.5 * q),
                    torch.where(sh == _SHAPE_GENERALIZED, torch.exp(-0.5 * qb), 1.0 / (1.0 + qb)))
    return k / k.sum(dim=(1, 2), keepdim=True)


def sinc_kernels(size: int, cutoff) -> torch.Tensor:
    """(N, size, size) float64 circular low-pass (ringing) kernels w J1(w r) / (2 pi r), centre w^2 / (4 pi),
    normalised to sum 1; `cutoff` w in radians per pixel, (N,)."""
    w = torch.as_tensor(cutoff, dtype=torch.float64).reshape(-1, 1, 1)
    x, y = kernel_grid(size)
    r = torch.sqrt(x * x + y * y)[None]
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    k = torch.where(r == 0, w * w / (4 * math.pi), w * torch.special.bessel_j1(w * safe_r) / (2 * math.pi * safe_r))
    return k / k.sum(dim=(1, 2), keepdim=True)


def _mask_to_size(kernels: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Zero each kernel outside its own (odd) size, centred in the common grid, and renormalise."""
    size = kernels.shape[-1]
    x, y = kernel_grid(size)
    radius = (sizes.to(torch.float64) // 2).view(-1, 1, 1)
    inside = (x.abs() <= radius) & (y.abs() <= radius)
    k = kernels * inside
    return k / k.sum(dim=(1, 2), keepdim=True)


def random_kernels(order: OrderConfig, n: int, g: torch.Generator) -> torch.Tensor:
    """(N, K, K) float64 blur kernels of one order, K the largest size of the batch (smaller kernels are zero
    around): per sample a sinc kernel with probability `sinc_prob`, else a Gaussian-family one."""
    sizes = _odd_sizes(order.kernel_size, n, g)
    size = int(sizes.max())
    kinds = _choice(order.kernel_probs, n, g)
    sigma_x = _uniform(*order.blur_sigma, n, g)
    sigma_y = _uniform(*order.blur_sigma, n, g)
    theta = _uniform(-math.pi, math.pi, n, g)
    isotropic = torch.tensor([k.endswith("iso") and not k.endswith("aniso") for k in kinds])
    sigma_y = torch.where(isotropic, sigma_x, sigma_y)
    theta = torch.where(isotropic, torch.zeros_like(theta), theta)
    shape = torch.tensor([_SHAPE_GENERALIZED if k.startswith("generalized") else
                          _SHAPE_PLATEAU if k.startswith("plateau") else _SHAPE_GAUSSIAN for k in kinds])
    beta = torch.where(shape == _SHAPE_PLATEAU, _beta(order.betap, n, g), _beta(order.betag, n, g))
    kernels = gaussian_family_kernels(size, sigma_x, sigma_y, theta, beta, shape)
    use_sinc = _bernoulli(order.sinc_prob, n, g)
    cutoff = torch.where(sizes < 13, _uniform(math.pi / 3, math.pi, n, g), _uniform(math.pi / 5, math.pi, n, g))
    kernels = torch.where(use_sinc.view(-1, 1, 1), sinc_kernels(size, cutoff), kernels)
    return _mask_to_size(kernels, sizes)


def identity_kernels(n: int, size: int) -> torch.Tensor:
    k = torch.zeros(n, size, size, dtype=torch.float64)
    k[:, size // 2, size // 2] = 1.0
    return k


# ------------------------------------------------------------------------------------------- operations
def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter each image of (N, C, H, W) with its own (N, K, K) kernel, borders reflected (replicated when the
    image is smaller than the kernel's radius). Computed as a product of 2-D FFTs of the padded image (a
    21x21 grouped convolution costs ~10x more on a CPU); the circular wrap only reaches the padding, which is
    cut off. The kernels here are point symmetric, so correlation and convolution agree."""
    n, _, h, w = x.shape
    size = kernels.shape[-1]
    pad = size // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode) if pad else x
    ph, pw = padded.shape[-2:]
    k = kernels.to(device=x.device, dtype=torch.float32)
    # the kernel's centre at (0, 0) of a ph x pw canvas, the rest wrapped around
    canvas = torch.zeros(n, ph, pw, device=x.device, dtype=torch.float32)
    canvas[:, :size, :size] = k
    canvas = torch.roll(canvas, shifts=(-pad, -pad), dims=(1, 2))
    spectrum = torch.fft.rfft2(padded.float()) * torch.fft.rfft2(canvas)[:, None]
    out = torch.fft.irfft2(spectrum, s=(ph, pw))[..., pad: pad + h, pad: pad + w]
    return out.to(x.dtype).contiguous()


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize (N, C, H, W) to `size`: torch's bicubic / bilinear (half-pixel centres, no antialiasing) or area
    interpolation, or `matlab` (MATLAB's antialiased bicubic, `mgbp.resize.imresize`)."""
    size = (max(1, int(size[0])), max(1, int(size[1])))
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "matlab":
        return imresize(x, size=size)
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def gaussian_noise(shape, sigma: torch.Tensor, gray: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N, C, H, W) float32 noise N(0, sigma^2), sigma (N,) on the [0, 1] scale; where `gray`, one map for all
    channels."""
    n, c, h, w = shape
    noise = torch.empty((n, c, h, w))
    colour, grey = ~gray, gray
    if bool(colour.any()):
        noise[colour] = torch.randn((int(colour.sum()), c, h, w), generator=g)
    if bool(grey.any()):
        noise[grey] = torch.randn((int(grey.sum()), 1, h, w), generator=g).expand(-1, c, h, w)
    return noise * sigma.float().view(-1, 1, 1, 1)


def poisson_noise(x: torch.Tensor, scale: torch.Tensor, gray: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N, C, H, W) shot noise of an 8-bit sensor, (Poisson(255 x) / 255 - x) * scale, computed on the CPU
    from generator `g`; where `gray`, on the luminance (BT.601) and the same for all channels."""
    xc = x.detach().float().cpu().clamp(0, 1)
    noise = torch.empty_like(xc)
    colour, grey = ~gray, gray
    if bool(colour.any()):
        counts = xc[colour] * 255.0
        noise[colour] = (torch.poisson(counts, generator=g) - counts) / 255.0
    if bool(grey.any()):
        part = xc[grey]
        counts = (0.299 * part[:, 0:1] + 0.587 * part[:, 1:2] + 0.114 * part[:, 2:3]) * 255.0
        noise[grey] = ((torch.poisson(counts, generator=g) - counts) / 255.0).expand_as(part)
    return noise * scale.float().view(-1, 1, 1, 1)


def add_noise(x: torch.Tensor, order: OrderConfig, g: torch.Generator) -> torch.Tensor:
    """One order's noise: per sample none (1 - noise_prob), Gaussian or Poisson, colour or grey; clamped.
    Only the noise a sample gets is drawn."""
    n = x.shape[0]
    apply = _bernoulli(order.noise_prob, n, g)
    is_gaussian = _bernoulli(order.gaussian_noise_prob, n, g)
    gray = _bernoulli(order.gray_noise_prob, n, g)
    sigma = _uniform(*order.noise_sigma, n, g) / 255.0
    scale = _uniform(*order.poisson_scale, n, g)
    noise = torch.zeros(x.shape)
    gaussian, poisson = apply & is_gaussian, apply & ~is_gaussian
    if bool(gaussian.any()):
        noise[gaussian] = gaussian_noise((int(gaussian.sum()), *x.shape[1:]), sigma[gaussian], gray[gaussian], g)
    if bool(poisson.any()):
        index = poisson.nonzero()[:, 0]
        noise[poisson] = poisson_noise(x[index.to(x.device)], scale[poisson], gray[poisson], g)
    if not bool(apply.any()):
        return x
    return (x + noise.to(x.device, x.dtype)).clamp(0, 1)


def random_jpeg(x: torch.Tensor, order: OrderConfig, g: torch.Generator) -> torch.Tensor:
    """JPEG at a quality drawn per sample from `jpeg_quality`, applied with probability `jpeg_prob`."""
    n = x.shape[0]
    apply = _bernoulli(order.jpeg_prob, n, g)
    low, high = order.jpeg_quality
    quality = torch.randint(low, high + 1, (n,), generator=g)
    if not bool(apply.any()):
        return x
    out = x.clamp(0, 1).clone()
    index = apply.nonzero()[:, 0].to(x.device)
    out[index] = jpeg_compress(out[index], quality[apply].to(x.device))
    return out


# ------------------------------------------------------------------------------------------------ pipeline
class Degradation:
    """`Degradation(config)(hr, scale, generator)`: the LR (N, 3, H/f, W/f) of HR images (N, 3, H, W) in
    [0, 1] (H, W multiples of f) by the second-order model, rounded to 8-bit levels like the protocol's LR."""

    def __init__(self, config: DegradationConfig | dict | None = None):
        if not isinstance(config, DegradationConfig):
            config = DegradationConfig.from_dict(config)
        self.config = config

    def __call__(self, hr: torch.Tensor, scale: int, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = hr.shape
        lr_size = (h // scale, w // scale)
        cfg, g = self.config, generator
        x = self._order(hr, cfg.first, (h, w), g, first=True)
        second = _bernoulli(cfg.second_order_prob, n, g)
        y = self._order(x, cfg.second, lr_size, g, first=False, apply=second)
        y = self._final(y, lr_size, g)
        clean = _bernoulli(cfg.clean_prob, n, g).to(hr.device)
        if bool(clean.any()):
            y = torch.where(clean.view(-1, 1, 1, 1), imresize(hr, size=lr_size), y)
        return _quantise(y)

    def _order(self, x, order: OrderConfig, reference: tuple[int, int], g, first: bool, apply=None):
        """Blur, resize (to a random scale of `reference`: the HR size first, the LR size second), noise,
        and in the first order JPEG. `apply` (N,) bool: samples that skip this order keep the resize only."""
        n = x.shape[0]
        apply = torch.ones(n, dtype=torch.bool) if apply is None else apply
        do_blur = _bernoulli(order.blur_prob, n, g) & apply
        kernels = random_kernels(order, n, g)
        if bool(do_blur.any()):
            kernels = torch.where(do_blur.view(-1, 1, 1), kernels, identity_kernels(n, kernels.shape[-1]))
            x = blur(x, kernels)
        direction = _choice(order.resize_probs, 1, g)[0]
        low, high = order.resize_range
        factor = {"up": _uniform(1.0, max(1.0, high), 1, g), "down": _uniform(min(1.0, low), 1.0, 1, g),
                  "keep": torch.ones(1, dtype=torch.float64)}[direction].item()
        mode = _choice(order.resize_modes, 1, g)[0]
        x = resize(x, (int(reference[0] * factor), int(reference[1] * factor)), mode)
        x = torch.where(apply.to(x.device).view(-1, 1, 1, 1), add_noise(x, order, g), x.clamp(0, 1))
        if first:
            x = random_jpeg(x, order, g)
        return x

    def _final(self, x, lr_size, g):
        """Resize to the LR size and a sinc filter (probability `final_sinc_prob`), and the second order's
        JPEG, in random order (per batch)."""
        n = x.shape[0]
        cfg = self.config
        sizes = _odd_sizes((7, 21), n, g)
        cutoff = _uniform(math.pi / 3, math.pi, n, g)
        use_sinc = _bernoulli(cfg.final_sinc_prob, n, g)
        kernels = torch.where(use_sinc.view(-1, 1, 1), _mask_to_size(sinc_kernels(21, cutoff), sizes),
                              identity_kernels(n, 21))
        mode = _choice(cfg.final_resize_modes, 1, g)[0]
        jpeg_first = bool(_bernoulli(0.5, 1, g))
        if jpeg_first:
            x = random_jpeg(x, cfg.second, g)
        x = resize(x, lr_size, mode)
        if bool(use_sinc.any()):
            x = blur(x, kernels)
        if not jpeg_first:
            x = random_jpeg(x, cfg.second, g)
        return x.clamp(0, 1)


def _quantise(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8-bit levels (half away from zero, as the protocol's uint8 LR)."""
    return torch.floor(x.clamp(0, 1) * 255.0 + 0.5) / 255.0


# ------------------------------------------------------------------------------ degraded test sets (eval)
TEST_DEGRADATIONS = {
    "jpeg": "jpeg:Q  JPEG at quality Q (1-100) with Pillow's encoder, 4:2:0 chroma",
    "noise": "noise:S  Gaussian noise of sigma S (0-255 scale) on R, G, B independently, rounded",
    "blur": "blur:S  Gaussian blur of sigma S LR pixels (scipy, symmetric borders), rounded",
}


@dataclass(frozen=True)
class TestDegradation:
    """One step of a `--degrade` spec: kind (jpeg, noise, blur) and its value."""

    kind: str
    value: float

    def __str__(self) -> str:
        value = int(self.value) if float(self.value).is_integer() else self.value
        return f"{self.kind}:{value}"


def valid_specs() -> str:
    return "; ".join(TEST_DEGRADATIONS.values()) + "; combine with '+', e.g. jpeg:40+noise:10"


def parse_degrade_spec(spec: str) -> tuple[TestDegradation, ...]:
    """`jpeg:40+noise:10` -> steps applied left to right; a bad spec is a one-line ConfigError."""
    steps = []
    for part in str(spec).split("+"):
        kind, _, raw = part.strip().partition(":")
        kind = kind.strip().lower()
        if kind not in TEST_DEGRADATIONS:
            raise ConfigError(f"unknown degradation {part.strip()!r} in --degrade {spec!r} (valid: {valid_specs()})")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"--degrade {spec!r}: {kind} needs a number, as in {TEST_DEGRADATIONS[kind].split()[0]} "
                              f"(valid: {valid_specs()})") from None
        if kind == "jpeg" and not (value.is_integer() and 1 <= value <= 100):
            raise ConfigError(f"--degrade {spec!r}: JPEG quality must be an integer 1-100, got {raw}")
        if kind in ("noise", "blur") and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"--degrade {spec!r}: {kind} sigma must be a number >= 0, got {raw}")
        steps.append(TestDegradation(kind, value))
    return tuple(steps)


def spec_label(steps: tuple[TestDegradation, ...]) -> str:
    return "+".join(str(s) for s in steps)


def image_seed(name: str, seed: int = 0) -> int:
    """The noise seed of one test image: its name and the run's seed (independent of the order of images)."""
    return (zlib.crc32(name.encode("utf-8")) + 1_000_003 * int(seed)) % 2**32


def degrade_uint8(lr: np.ndarray, steps: tuple[TestDegradation, ...], seed: int) -> np.ndarray:
    """Apply the steps to a uint8 HxWx3 LR image (numpy / Pillow / scipy, float64), each step ending on uint8."""
    rng = np.random.default_rng(seed)
    out = np.ascontiguousarray(lr, dtype=np.uint8)
    for step in steps:
        if step.kind == "jpeg":
            out = pillow_jpeg(out, int(step.value))
        elif step.kind == "noise":
            noisy = out.astype(np.float64) + rng.standard_normal(out.shape) * step.value
            out = np.clip(np.floor(noisy + 0.5), 0, 255).astype(np.uint8)
        elif step.kind == "blur" and step.value > 0:
            from scipy.ndimage import gaussian_filter

            blurred = gaussian_filter(out.astype(np.float64), sigma=(step.value, step.value, 0), mode="reflect",
                                      truncate=4.0)
            out = np.clip(np.floor(blurred + 0.5), 0, 255).astype(np.uint8)
    return out


def pillow_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode a uint8 HxWx3 image with Pillow (libjpeg) at `quality`, 4:2:0, and decode it."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=int(quality), subsampling=2)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.array(image.convert("RGB"))
