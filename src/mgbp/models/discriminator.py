"""The VN+SC layer (eqs. 7-8, Fig. 8) and the multiscale discriminator of Fig. 7 (Section III-B).

VN+SC: the BT.601 luminance I of an RGB image in [0, 255] is variance-normalised (eq. 7),
    I_hat = (I - mu) / (sigma + 1),  mu = G * I,  sigma^2 = G * I^2 - mu^2,
with G a 7x7 Gaussian of sigma 1.17 (replicated borders, as NIQE's `imfilter(..., 'replicate')`), and the
shift correlator (eq. 8) gives 49 channels V^{7(p+3)+q+3}_{i,j} = I_hat_{i,j} I_hat_{i+p,j+q},
p (rows), q (columns) in [-3, 3]; neighbours outside the image count as 0.

Discriminator (Fig. 7): the HR image enters first; after each stage (a 4-layer CNN of 3x3 convolutions,
stride 1 except the last, stride 2, LeakyReLU 0.2, stages do not share parameters) the features are at half
resolution and are concatenated with the VN+SC of the next bicubic downscale S_2, S_4, ... of the image.
A last 3x3 convolution gives the logit map C(.) used by the relativistic losses (eq. 12). The input is the
whole multiscale set of eq. 13 ([X, S_2(X), S_4(X), ...]). `vnsc=False` feeds RGB instead (ablation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# rgb2gray / BT.601 luma weights, as the NIQE implementation uses (the paper's "BT.609" is BT.601)
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)


VARIANCE_FLOOR = 1e-6  # grey levels^2, see VNSC.normalise


def gaussian_kernel(size: int = 7, sigma: float = 1.17) -> torch.Tensor:
    """Normalised 2-D Gaussian (size x size), float64."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r * r) / (2 * sigma * sigma))
    k = torch.outer(g, g)
    return k / k.sum()


class VNSC(nn.Module):
    """Variance Normalisation + Shift Correlator: (N, 3, H, W) RGB in [0, 1] -> (N, 49, H, W)."""

    out_channels = 49

    def __init__(self, window: int = 7, sigma: float = 1.17, shifts: int = 3):
        super().__init__()
        self.shifts = shifts
        self.register_buffer("gauss", gaussian_kernel(window, sigma)[None, None], persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA_WEIGHTS, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)

    def normalise(self, rgb: torch.Tensor) -> torch.Tensor:
        """Eq. 7 on the luminance of `rgb`, in [0, 255] units: (N, 1, H, W)."""
        dtype = torch.float32 if rgb.dtype in (torch.float16, torch.bfloat16) else rgb.dtype
        lum = (rgb.to(dtype) * self.luma.to(dtype)).sum(dim=1, keepdim=True) * 255.0
        kernel = self.gauss.to(dtype)
        pad = kernel.shape[-1] // 2
        mu = F.conv2d(F.pad(lum, (pad,) * 4, mode="replicate"), kernel)
        mu2 = F.conv2d(F.pad(lum * lum, (pad,) * 4, mode="replicate"), kernel)
        # sqrt has an infinite derivative at 0 (flat patches, e.g. clipped highlights), which turned the
        # generator's gradients into NaN; a tiny floor (1e-6 grey levels^2) keeps it finite and moves sigma by
        # at most 1e-3 grey levels where the numerator I - mu is ~0 anyway.
        sigma = ((mu2 - mu * mu).clamp_min(0.0) + VARIANCE_FLOOR).sqrt()
        return (lum - mu) / (sigma + 1.0)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        normalised = self.normalise(rgb)
        n, _, h, w = normalised.shape
        s = self.shifts
        side = 2 * s + 1
        # unfold yields the (2s+1)^2 neighbours in row-major order: channel 7(p+3)+(q+3) is I_hat(i+p, j+q)
        neighbours = F.unfold(F.pad(normalised, (s, s, s, s)), side).view(n, side * side, h, w)
        return (normalised * neighbours).to(rgb.dtype)


class Stage(nn.Module):
    """One CNN module of Fig. 7: 4 conv layers 3x3, stride 1 except the last (stride 2)."""

    def __init__(self, in_channels: int, features: int, layers: int = 4):
        super().__init__()
        convs: list[nn.Module] = []
        for i in range(layers):
            stride = 2 if i == layers - 1 else 1
            convs += [nn.Conv2d(in_channels if i == 0 else features, features, 3, stride, 1),
                      nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*convs)

    def forward(self, x):
        return self.body(x)


class MultiscaleDiscriminator(nn.Module):
    """Fig. 7: one stage per input scale, HR first; input [X, S_2 X, ..., S_f X]; output logits (N, 1, h, w)."""

    def __init__(self, scale: int = 4, features: int = 64, vnsc: bool = True, layers: int = 4):
        super().__init__()
        from mgbp.losses import cycle_factors  # the same set C as eq. 13

        self.scale = scale
        self.num_inputs = 1 + len(cycle_factors(scale))
        self.vnsc = VNSC() if vnsc else None
        in_ch = VNSC.out_channels if vnsc else 3
        self.stages = nn.ModuleList(
            Stage(in_ch if i == 0 else features + in_ch, features, layers) for i in range(self.num_inputs))
        self.head = nn.Conv2d(features, 1, 3, 1, 1)
        init_weights(self)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        return self.vnsc(image) if self.vnsc is not None else image * 2.0 - 1.0

    def forward(self, images: list[torch.Tensor], return_features: bool = False):
        if len(images) != self.num_inputs:
            raise ValueError(f"discriminator for x{self.scale} takes {self.num_inputs} scales, got {len(images)}")
        features_per_stage = []
        h = None
        for stage, image in zip(self.stages, images):
            e = self.embed(image)
            if h is not None:
                # bicubic downscales have ceil(H/2) rows, stride-2 convs too; crop defensively anyway
                hh, ww = min(h.shape[-2], e.shape[-2]), min(h.shape[-1], e.shape[-1])
                e = torch.cat([h[..., :hh, :ww], e[..., :hh, :ww]], dim=1)
            h = stage(e)
            features_per_stage.append(h)
        logits = self.head(h)
        return (logits, features_per_stage) if return_features else logits


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (LeakyReLU 0.2) convs with zero bias: a stable start for adversarial training."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            m.weight.data.mul_(1.0 / math.sqrt(2.0))
            nn.init.zeros_(m.bias)
