"""Linearscope: the adaptive upscaling filter of a ReLU network at an input pixel (Section VI-C, Fig. 16).

With every ReLU frozen in the state that the image x puts it in (on/off masks fixed), a generator made of
convolutions, ReLUs, additions, concatenations and (un)shuffles becomes an affine map of its input:
    F_x(z) = J z + b,    J = dF/dx at x,    b = F(x) - J x.
The impulse response at input pixel p is the column J e_p: one Jacobian-vector product at the image in the
direction of the impulse e_p (forward-mode AD, `torch.func.jvp`; `torch.autograd.functional.jvp` is the
fallback for operators without a forward-mode formula). For a piecewise-linear network this is exact, not an
approximation: J e_p equals the difference F_x(x + e_p) - F_x(x) of the masked network. The affine offset
b (what the network adds that does not scale with the input, e.g. biases, and the noise inputs when W > 0)
costs one more JVP, in the direction x.

In flat areas the filter of a good SR network looks like an isotropic, bicubic-like kernel; near edges and
textures it follows the geometry of the content (Fig. 16). The figure shows the LR crop with the pixel
marked, the network's filter at output resolution and MATLAB's bicubic filter at the same pixel beside it.

The impulse is placed in the RGB channels chosen by `channel` ("all": the same unit impulse in R, G and B,
a grey impulse); the response keeps its three output channels (the .npy array is (3, H, W)), the figure shows
their mean. The command line (arrays, summary and figures) is `mgbp.commands.linearscope`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mgbp.errors import ConfigError
from mgbp.protocol import model_device, seeded_rng

CHANNELS = {"all": (0, 1, 2), "r": (0,), "g": (1,), "b": (2,)}


@dataclass
class ImpulseResponse:
    """J e_p at output resolution, (3, fH, fW), the output F(x) and, if asked, the offset b = F(x) - J x."""

    pixel: tuple[int, int]  # (x, y) = (column, row) in the LR input
    response: torch.Tensor
    output: torch.Tensor
    offset: torch.Tensor | None = None



def impulse(lr: torch.Tensor, pixel: tuple[int, int], channel: str = "all") -> torch.Tensor:
    """A unit impulse e_p shaped like `lr` (1,3,h,w) at pixel (x, y) in the chosen channels."""
    if channel not in CHANNELS:
        raise ConfigError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    x, y = pixel
    height, width = lr.shape[-2:]
    if not (0 <= x < width and 0 <= y < height):
        raise ConfigError(f"pixel ({x},{y}) is outside the {width}x{height} input")
    delta = torch.zeros_like(lr)
    delta[0, list(CHANNELS[channel]), y, x] = 1.0
    return delta


def _seeded_forward(model: torch.nn.Module, noise_amp: float, seed: int):
    """x -> F(x) with the noise maps fixed: the RNG is re-seeded on each call (caller's RNG untouched)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        with seeded_rng(seed, model):
            return model(x, noise_amp=float(noise_amp))

    return forward


def jvp(function, primal: torch.Tensor, tangent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F(x), J v) by forward-mode AD, with the double-backward trick as a fallback."""
    try:
        return torch.func.jvp(function, (primal,), (tangent,))
    except (RuntimeError, NotImplementedError):  # an operator without a forward-mode derivative
        with torch.enable_grad():
            output, product = torch.autograd.functional.jvp(function, primal, tangent)
        return output.detach(), product.detach()


def impulse_response(model: torch.nn.Module, lr: torch.Tensor, pixel: tuple[int, int], noise_amp: float = 0.0,
                     seed: int = 0, channel: str = "all", offset: bool = False) -> ImpulseResponse:
    """Linearscope at one pixel of `lr` (1,3,h,w): J e_p (and b = F(x) - J x when `offset`)."""
    if lr.dim() != 4 or lr.shape[0] != 1 or lr.shape[1] != 3:
        raise ConfigError(f"linearscope expects one RGB image (1,3,h,w), got {tuple(lr.shape)}")
    if next(iter(model.parameters()), None) is not None:  # a parameterless model (bicubic) keeps lr's dtype
        device, dtype = model_device(model)
        lr = lr.to(device=device, dtype=dtype)
    function = _seeded_forward(model, noise_amp, seed)
    output, response = jvp(function, lr, impulse(lr, pixel, channel))
    bias = None
    if offset:
        _, linear_part = jvp(function, lr, lr)
        bias = (output - linear_part).detach()[0]
    return ImpulseResponse(pixel=pixel, response=response.detach()[0], output=output.detach()[0], offset=bias)


def bicubic_response(shape_hw: tuple[int, int], pixel: tuple[int, int], scale: int, channel: str = "all",
                     dtype=torch.float64) -> torch.Tensor:
    """MATLAB bicubic upscaling's impulse response at `pixel`: imresize of the one-hot image, (3, fH, fW)."""
    from mgbp.resize import imresize

    delta = impulse(torch.zeros((1, 3) + tuple(shape_hw), dtype=dtype), pixel, channel)
    return imresize(delta, scale=float(scale))[0]


def filter_statistics(response: np.ndarray, pixel: tuple[int, int], scale: int) -> dict[str, float]:
    """Summary of a (H, W) filter at output resolution: DC gain (sum / f^2; 1 for bicubic in flat areas),
    peak, the centroid's shift from the pixel's centre and the RMS radius of |response|, in output pixels."""
    height, width = response.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    # the centre of LR pixel (x, y) at output resolution (MATLAB's pixel-centre convention)
    centre_x, centre_y = (pixel[0] + 0.5) * scale - 0.5, (pixel[1] + 0.5) * scale - 0.5
    weight = np.abs(response)
    total = float(weight.sum()) or 1.0
    mean_x, mean_y = float((weight * cols).sum() / total), float((weight * rows).sum() / total)
    radius = float(np.sqrt((weight * ((cols - mean_x) ** 2 + (rows - mean_y) ** 2)).sum() / total))
    return {"gain": float(response.sum()) / scale**2, "peak": float(response.max()),
            "centroid_shift": float(np.hypot(mean_x - centre_x, mean_y - centre_y)), "rms_radius": radius}
