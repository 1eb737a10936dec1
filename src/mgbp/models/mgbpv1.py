"""MGBPv1: the recursive Multi-Grid Back-Projection generator of the authors' PIRM-SR 2018 entry (G-MGBP).

Paper (`../shared/paper/mgbp-paper.txt`): Section III-A, "Generator Architecture" and Figure 3 (MGBPv1 starts
at the lowest resolution and enters the multigrid cycle at each resolution after a classic bicubic upscale),
the complexity recurrence of eq. 6 (p(n) = f(n) + mu p(n/4), mu = 2 here), Section IV-A "Configurations"
(4-layer DenseNets, 48 features, growth rate 16, a trainable bicubic "classic upscaler", one i.i.d. noise
channel per resolution level) and Table V (the released x4 networks, 281,084 parameters).

The paper leaves out details that only the authors' released code fixes (public repository
`pnavarre/pirm-sr-2018`, `models.py`, `layers.py`, `main.py`); this module re-implements them so that the
released `.model` state dicts load strictly and reproduce the reference outputs:

- One set of modules `Analysis`, `Upscaling`, `Downscaling`, `Synthesis` and `ClassicUpscale` is shared by
  every level and every call site of the W-cycle (this is what makes MGBPv1 recursive).
- Every 3x3 convolution has no bias; each activation is a learnable per-channel bias followed by ReLU
  (`LEAK0.0`); the only biased convolution is the last one of `Synthesis`.
- A DenseNet block of depth d on F features: d layers [bias+ReLU, 1x1 conv to 4*growth, bias+ReLU, 3x3 conv to
  growth], each concatenating its output to its input, then a transition [bias+ReLU, 1x1 conv back to F].
- Forward (factor 2^L, mu = 2): x0 = LR; f0 = Analysis(x0); y0 = x0 + Synthesis(f0). Then for k = 1..L:
  y_k = ClassicUpscale(y_{k-1}); f_k = Upscaling([f_{k-1}, Downscaling(Analysis(y_k)), W n_{k-1}]);
  f_k = BP_k(f_k); y_k = y_k + Synthesis(f_k). The back-projection BP_k(h) repeats mu times
  h <- h + Upscaling([f_{k-1}, BP_{k-1}(Downscaling(h)), W n_{k-1}]), and BP_0 is the identity (the authors'
  `max_levels` = 3 also stops the recursion 3 levels below the current one, which matters only from x16).
- Noise: n_k is a standard-normal map of one channel at level k's resolution; the original code draws
  n_0 first (before level 1), then n_k right after level k has been computed, so it draws L + 1 maps of which
  the last one is never used.
- Inference as in `main.py` (`pad=True`): the LR image is reflection-padded by `scale` pixels at every side,
  `ClassicUpscale` replicates one pixel at the border, and `scale**2` HR pixels are cut from every side of the
  result. With `pad=False` nothing is padded or cut and `ClassicUpscale` pads with zeros (the authors'
  training mode).
- Tiling (`mgbp.tiling.run_model`): every convolution is 'same' and every level is exactly twice the one
  below, so the network is equivariant to whole-LR-pixel shifts. Level k's noise map covers the padded input
  at 2^k samples per LR pixel, so the maps of a tile of LR rows [a, b) are rows [2^k a, 2^k (b + 2 pad)) of the
  whole image's (`crop_noise`; pad = `scale` or 0): tiled = untiled at any W with the same noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mgbp.errors import ConfigError, WeightFileError
from mgbp.models import onednn
from mgbp.models.contract import Capabilities

# Keys that only the authors' PIRM-2018 G-MGBP state dicts carry (one per shared module).
_AUTHORS_SIGNATURE_KEYS = (
    "ClassicUpscale.weight",
    "Analysis.conv1.weight",
    "Upscaling.conv_up.weight",
    "Downscaling.conv_down.weight",
)


@dataclasses.dataclass
class MGBPv1Config:
    """Hyper-parameters of MGBPv1; the defaults are the released PIRM-2018 x4 networks.

    The layer counts follow the authors' model names (`Analysis#L4`, `Upscaling#L4#M3`, `Downscaling#L4#M0`,
    `Synthesis#L4`): a module with L layers and M of them before the strided convolution.
    """

    scale: int = 4
    channels: int = 3
    features: int = 48
    growth_rate: int = 16
    bottleneck_factor: int = 4
    analysis_layers: int = 4
    upscaling_layers: int = 4
    upscaling_pre_layers: int = 3
    downscaling_layers: int = 4
    downscaling_pre_layers: int = 0
    synthesis_layers: int = 4
    mu: int = 2
    recursion_depth: int = 3  # the authors' `max_levels`: back-projection descends at most this many levels
    leak: float = 0.0
    pad: bool = True

    def __post_init__(self):
        if self.scale < 2 or (self.scale & (self.scale - 1)) != 0:
            raise ConfigError(f"MGBPv1 scale must be a power of two >= 2, got {self.scale}")
        positive = (
            "channels",
            "features",
            "growth_rate",
            "bottleneck_factor",
            "analysis_layers",
            "upscaling_layers",
            "downscaling_layers",
            "synthesis_layers",
            "mu",
            "recursion_depth",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"MGBPv1 {name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.upscaling_pre_layers <= self.upscaling_layers:
            raise ConfigError("MGBPv1 upscaling_pre_layers must lie in [0, upscaling_layers]")
        if not 0 <= self.downscaling_pre_layers <= self.downscaling_layers:
            raise ConfigError("MGBPv1 downscaling_pre_layers must lie in [0, downscaling_layers]")
        if self.leak < 0:
            raise ConfigError(f"MGBPv1 leak must be >= 0, got {self.leak}")

    @property
    def levels(self) -> int:
        """Number of x2 levels (log2 of the scale)."""
        return int(math.log2(self.scale))


# --------------------------------------------------------------------------------------------------------
# Building blocks. Attribute names follow the authors' state-dict keys so that their files load unchanged.


class ChannelBias(nn.Module):
    """Adds a learnable bias per channel (the `norm` of the authors' `Activ` when batch norm is off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, 1, 1)


class BiasReLU(nn.Module):
    """Per-channel learnable bias followed by ReLU (leaky when `leak` > 0): the authors' `Activ`."""

    def __init__(self, channels: int, leak: float = 0.0):
        super().__init__()
        self.norm = ChannelBias(channels)
        self.leak = float(leak)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = self.norm(x)
        if self.leak > 0:
            return F.leaky_relu(shifted, self.leak)
        return F.relu(shifted)


def _conv(in_channels: int, out_channels: int, kernel: int) -> nn.Conv2d:
    """Bias-free 'same' convolution with an odd kernel."""
    return nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)


class DenseLayer(nn.Module):
    """Bottleneck DenseNet layer: returns [x, conv3x3(act(conv1x1(act(x))))] along channels."""

    def __init__(self, in_channels: int, growth_rate: int, bottleneck_factor: int, leak: float):
        super().__init__()
        width = bottleneck_factor * growth_rate
        self.act_1 = BiasReLU(in_channels, leak)
        self.conv_1 = _conv(in_channels, width, 1)
        self.act_2 = BiasReLU(width, leak)
        self.conv_2 = _conv(width, growth_rate, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.new_features(x)], 1)

    def new_features(self, x: torch.Tensor) -> torch.Tensor:
        """conv_2(act_2(conv_1(act_1(x)))), the growth_rate channels this layer adds."""
        if self.act_1.leak > 0:
            return self.conv_2(self.act_2(self.conv_1(self.act_1(x))))
        # act_2's bias joins conv_1's and its ReLU is fused into it (see `biased_pointwise`)
        return self.conv_2(biased_pointwise(x, self.act_1, self.conv_1, self.act_2.norm.bias, relu=True))


class Transition(nn.Module):
    """Back from the grown channel count to the block's width: bias+ReLU, then a 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, leak: float):
        super().__init__()
        self.act = BiasReLU(in_channels, leak)
        self.conv = _conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, next_activation: BiasReLU | None = None) -> torch.Tensor:
        """conv(act(x)), followed by `next_activation` (the BiasReLU that comes next) when given."""
        if self.act.leak > 0:
            out = self.conv(self.act(x))
            return out if next_activation is None else next_activation(out)
        if next_activation is None:
            return biased_pointwise(x, self.act, self.conv)
        return biased_pointwise(x, self.act, self.conv, next_activation.norm.bias, relu=True)


def biased_pointwise(x: torch.Tensor, act: BiasReLU, conv: nn.Conv2d, next_bias=None, relu: bool = False):
    """conv(ReLU(x + b)) [+ next_bias, then ReLU] for a bias-free 1x1 `conv`: one pass over x, one convolution.

    ReLU(x + b) = max(x, -b) + b, and a 1x1 convolution W is linear, so conv(ReLU(x + b)) = conv(max(x, -b)) + W b:
    the activation's add and ReLU (two passes over x, two allocations) become one `maximum`, and W b (plus the
    bias of the activation that follows, whose ReLU is fused into the convolution: `onednn.conv2d`) rides in the
    convolution's own bias. Exact up to float rounding; it does not hold for a 3x3 convolution (its zero padding
    would see W b too), nor for a leaky ReLU.
    """
    b = act.norm.bias
    weight = conv.weight
    bias = weight.flatten(1) @ b
    if next_bias is not None:
        bias = bias + next_bias
    return onednn.conv2d(torch.maximum(x, -b.view(1, -1, 1, 1)), weight, bias, relu=relu)


class DenseStage(nn.Module):
    """`depth` DenseNet layers on `width` features plus a transition back to `width` (width in == out)."""

    def __init__(self, depth: int, width: int, growth_rate: int, bottleneck_factor: int, leak: float):
        super().__init__()
        layers = OrderedDict(
            (f"denselayer{i + 1}", DenseLayer(width + i * growth_rate, growth_rate, bottleneck_factor, leak))
            for i in range(depth)
        )
        self.dense = nn.Sequential(layers)
        self.transition = Transition(width + depth * growth_rate, width, leak)
        self.growth_rate = growth_rate

    def forward(self, x: torch.Tensor | list[torch.Tensor], next_activation: BiasReLU | None = None) -> torch.Tensor:
        """The stage on x (or on the concatenation of a list of pieces), then `next_activation` if given.

        Without autograd the growing concatenation is one buffer: each layer writes only its new channels
        (torch.cat would copy all of them again, layer after layer). With autograd, layers concatenate: a
        buffer written after it was read would invalidate what backward saved.
        """
        pieces = [x] if torch.is_tensor(x) else list(x)
        if torch.is_grad_enabled() or (len(pieces) == 1 and len(self.dense) == 0):
            x = pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)
            for layer in self.dense:
                x = torch.cat([x, layer.new_features(x)], 1)
            return self.transition(x, next_activation)
        grown = sum(p.shape[1] for p in pieces) + len(self.dense) * self.growth_rate
        first = pieces[0]
        layout = (torch.channels_last if first.is_contiguous(memory_format=torch.channels_last)
                  and not first.is_contiguous() else torch.contiguous_format)
        buffer = torch.empty((first.shape[0], grown, *first.shape[2:]), dtype=first.dtype, device=first.device,
                             memory_format=layout)
        filled = 0
        for piece in pieces:
            buffer[:, filled:filled + piece.shape[1]].copy_(piece)
            filled += piece.shape[1]
        for layer in self.dense:
            buffer[:, filled:filled + self.growth_rate].copy_(layer.new_features(buffer[:, :filled]))
            filled += self.growth_rate
        return self.transition(buffer, next_activation)


def keys_cubic(distance: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5), the kernel of the bicubic classic upscaler."""
    d = np.abs(distance)
    near = 1.5 * d**3 - 2.5 * d**2 + 1.0
    far = -0.5 * d**3 + 2.5 * d**2 - 4.0 * d + 2.0
    return np.where(d < 1, near, np.where(d < 2, far, 0.0))


class ClassicUpscale(nn.Module):
    """Trainable x2 depthwise transposed convolution initialised as bicubic (weight (C, 1, 9, 9)).

    The x2 bicubic filter has 8 taps per axis at LR distances 1.75, 1.25, 0.75, 0.25, 0.25, ... (the two
    output phases interleaved); the authors store it in a 9x9 kernel (first row and column zero) scaled so that
    it sums to 1 and multiply it by stride**2 = 4 at run time, so that each output phase sums to 1. The input
    gets one border pixel (replicated when padding, zeros otherwise) and the transposed convolution's output is
    cropped back to exactly twice the input size.
    """

    stride = 2

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(self._bicubic_kernel(channels))

    @staticmethod
    def _bicubic_kernel(channels: int) -> torch.Tensor:
        offsets = np.arange(-3, 5) - 0.5  # LR-pixel offsets of the 8 taps, in HR units before /2
        taps = keys_cubic(offsets / 2.0)
        taps = taps / taps.sum()
        kernel = np.zeros((9, 9))
        kernel[1:, 1:] = np.outer(taps, taps)
        return torch.tensor(np.broadcast_to(kernel, (channels, 1, 9, 9)).copy(), dtype=torch.float32)

    def forward(self, x: torch.Tensor, replicate_border: bool = True) -> torch.Tensor:
        border = (1, 1, 1, 1)
        padded = F.pad(x, border, mode="replicate") if replicate_border else F.pad(x, border)
        kernel = self.weight * (self.stride * self.stride)
        out = F.conv_transpose2d(padded, kernel, stride=self.stride, groups=x.shape[1])
        # (h + 2 - 1) * 2 + 9 = 2h + 11 rows: drop 6 at the top and 5 at the bottom (same for columns).
        size = kernel.shape[-1]
        first = (2 * self.stride + size) // 2
        last = first - self.stride + 1
        return out[:, :, first:-last, first:-last]


def _reflect_indices(length: int, border: int, device) -> torch.Tensor:
    """Indices of a reflection pad (edge not repeated) of `border` on both sides of an axis of `length`.

    Equal to `ReflectionPad2d` whenever border < length; for shorter axes the reflection is repeated
    (period 2 * (length - 1)) instead of failing, so thumbnails smaller than the pad still work.
    """
    positions = torch.arange(-border, length + border, device=device)
    if length == 1:
        return torch.zeros_like(positions)
    period = 2 * (length - 1)
    folded = torch.remainder(positions, period)
    return torch.where(folded >= length, period - folded, folded)


def reflect_pad(x: torch.Tensor, border: int) -> torch.Tensor:
    """Reflection-pad the last two dims of `x` by `border` pixels on every side."""
    rows = _reflect_indices(x.shape[-2], border, x.device)
    cols = _reflect_indices(x.shape[-1], border, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


class Analysis(nn.Module):
    """Image (C channels) -> features: a 3x3 convolution then a DenseNet stage of L - 1 layers."""

    def __init__(self, cfg: MGBPv1Config):
        super().__init__()
        self.conv1 = _conv(cfg.channels, cfg.features, 3)
        self.block = DenseStage(
            cfg.analysis_layers - 1, cfg.features, cfg.growth_rate, cfg.bottleneck_factor, cfg.leak
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.conv1(x))


class Upscaling(nn.Module):
    """[features, correction, noise] (2F + 1 channels) at one level -> F features at twice the resolution.

    M DenseNet layers on 2F + 1 channels, bias+ReLU, a stride-2 transposed 3x3 convolution, and (only when
    L - M > 1, as in the authors' code) a DenseNet stage of L - M layers after it.
    """

    def __init__(self, cfg: MGBPv1Config):
        super().__init__()
        width = 2 * cfg.features + 1
        self.pre_up = DenseStage(
            cfg.upscaling_pre_layers, width, cfg.growth_rate, cfg.bottleneck_factor, cfg.leak
        )
        self.act_up = BiasReLU(width, cfg.leak)
        self.conv_up = nn.ConvTranspose2d(
            width, cfg.features, 3, stride=2, padding=1, output_padding=1, bias=False
        )
        post_layers = cfg.upscaling_layers - cfg.upscaling_pre_layers
        self.post_up = None
        if post_layers > 1:
            self.post_up = DenseStage(
                post_layers, cfg.features, cfg.growth_rate, cfg.bottleneck_factor, cfg.leak
            )

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """x: the (2F + 1)-channel input, or its pieces [features, correction, noise] (concatenated here)."""
        out = self.conv_up(self.pre_up(x, next_activation=self.act_up))
        return out if self.post_up is None else self.post_up(out)


class Downscaling(nn.Module):
    """F features -> F features at half the resolution: [M DenseNet layers], a stride-2 3x3 convolution,
    then a DenseNet stage of L - M layers."""

    def __init__(self, cfg: MGBPv1Config):
        super().__init__()
        self.pre_down = None
        if cfg.downscaling_pre_layers > 0:
            self.pre_down = DenseStage(
                cfg.downscaling_pre_layers, cfg.features, cfg.growth_rate, cfg.bottleneck_factor, cfg.leak
            )
        self.conv_down = nn.Conv2d(cfg.features, cfg.features, 3, stride=2, padding=1, bias=False)
        self.post_down = DenseStage(
            cfg.downscaling_layers - cfg.downscaling_pre_layers,
            cfg.features,
            cfg.growth_rate,
            cfg.bottleneck_factor,
            cfg.leak,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_down is not None:
            x = self.pre_down(x)
        return self.post_down(self.conv_down(x))


class Synthesis(nn.Module):
    """Features -> image residual: a DenseNet stage of L - 1 layers, bias+ReLU, a biased 3x3 convolution.

    The last two submodules are named `act{L}` / `conv{L}` as in the authors' files.
    """

    def __init__(self, cfg: MGBPv1Config):
        super().__init__()
        last = cfg.synthesis_layers
        self.block = DenseStage(last - 1, cfg.features, cfg.growth_rate, cfg.bottleneck_factor, cfg.leak)
        self.add_module(f"act{last}", BiasReLU(cfg.features, cfg.leak))
        self.add_module(f"conv{last}", nn.Conv2d(cfg.features, cfg.channels, 3, padding=1, bias=True))
        self._head = (f"act{last}", f"conv{last}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act, conv = (getattr(self, name) for name in self._head)
        return conv(self.block(x, next_activation=act))


# --------------------------------------------------------------------------------------------------------
# The generator.


class MGBPv1(nn.Module):
    """Recursive MGBPv1 generator (Figure 3), one shared set of modules for every level and call site."""

    family = "mgbpv1"
    is_video = False
    # Tiles crop the per-level noise maps (crop_noise); equivariant to whole LR pixels, so no placement.
    capabilities = Capabilities(whole_image_noise=True, placement=False)
    preset: str | None = None

    def __init__(self, config: MGBPv1Config | None = None):
        super().__init__()
        self.config = config if config is not None else MGBPv1Config()
        cfg = self.config
        self.scale = cfg.scale
        self.noise_channels = 1
        # Registration order = the authors' key order (ClassicUpscale first).
        self.ClassicUpscale = ClassicUpscale(cfg.channels)
        self.Analysis = Analysis(cfg)
        self.Upscaling = Upscaling(cfg)
        self.Downscaling = Downscaling(cfg)
        self.Synthesis = Synthesis(cfg)
        # Kernels in oneDNN's fast layout (NHWC); `forward` gives CPU activations the same (1.6x on CPU with
        # torch 2.13: the 3x3 and transposed convolutions are much faster there). State dicts are unchanged.
        self.to(memory_format=torch.channels_last)

    # ---- construction helpers -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping | MGBPv1Config) -> MGBPv1:
        """Rebuild from a config dict (e.g. the JSON metadata of our safetensors files)."""
        if isinstance(config, MGBPv1Config):
            return cls(config)
        known = {f.name for f in dataclasses.fields(MGBPv1Config)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"unknown MGBPv1 config keys: {', '.join(unknown)}")
        return cls(MGBPv1Config(**dict(config)))

    @property
    def border_lr(self) -> int:
        """LR pixels of context a tile needs so that its interior matches a whole-image pass.

        Measured with BOE-R1 on a baboon crop: a +0.3 change of one LR pixel moves x4 outputs by at most 0.39
        at the pixel, 1e-4 at 16 LR pixels and 1e-5 at 20 LR pixels away; `16 + scale` keeps tile seams
        far below one uint8 level.
        """
        return 16 + self.scale

    @property
    def levels(self) -> int:
        return self.config.levels

    def noise_shapes(self, lr_shape: Sequence[int], pad: bool | None = None) -> list[tuple[int, ...]]:
        """Shapes (N, 1, h_k, w_k) of the standard-normal maps the original code draws, in drawing order.

        There are `levels + 1` of them (the last one is drawn but never used); h_0, w_0 include the padding.
        """
        pad = self.config.pad if pad is None else pad
        n, _, h, w = lr_shape
        border = self.scale if pad else 0
        h, w = h + 2 * border, w + 2 * border
        return [(n, 1, h * 2**k, w * 2**k) for k in range(self.levels + 1)]

    def draw_noise(self, lr_shape: Sequence[int], generator: torch.Generator | None = None, device=None,
                   dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        """The `levels` standard-normal maps the forward uses (the unused last one is not drawn)."""
        return [
            torch.randn(shape, generator=generator, device=device, dtype=dtype)
            for shape in self.noise_shapes(lr_shape)[: self.levels]
        ]

    def crop_noise(self, noise: Sequence[torch.Tensor], rows: slice, cols: slice) -> list[torch.Tensor]:
        """The maps of the tile of LR `rows` x `cols`, cut from a whole image's maps (padding included)."""
        border = 2 * self.scale if self.config.pad else 0
        return [
            level_map[..., 2**k * rows.start : 2**k * (rows.stop + border),
                      2**k * cols.start : 2**k * (cols.stop + border)]
            for k, level_map in enumerate(noise)
        ]

    # ---- forward ------------------------------------------------------------------------------------------

    def forward(self, lr: torch.Tensor, noise_amp=0.0, noise=None, pad: bool | None = None) -> torch.Tensor:
        """LR (N, C, h, w) in [0, 1] -> (N, C, scale*h, scale*w), not clamped.

        `noise_amp` W: float or (N,) tensor. `noise`: optional list of standard-normal maps in the original
        drawing order (`noise_shapes`; the last, unused map may be omitted); when absent and W != 0 they are
        drawn with `torch.randn` in that order. `pad`: the authors' inference padding (default: config).
        """
        pad = self.config.pad if pad is None else pad
        if lr.dim() != 4 or lr.shape[1] != self.config.channels:
            raise ConfigError(
                f"MGBPv1 expects (N, {self.config.channels}, h, w) input, got {tuple(lr.shape)}"
            )
        x = self._pad_input(lr) if pad else lr
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        amp = self._noise_amplitude(noise_amp, x)
        maps = self._scaled_noise(x, amp, noise)

        features = [self.Analysis(x)]
        out = x + self.Synthesis(features[0])
        for level in range(1, self.levels + 1):
            out = self.ClassicUpscale(out, replicate_border=pad)
            correction = self.Downscaling(self.Analysis(out))
            lifted = self.Upscaling([features[level - 1], correction, maps[level - 1]])
            lowest = max(0, level - self.config.recursion_depth)
            features.append(self._back_project(lifted, level, lowest, features, maps))
            out = _accumulate(out, self.Synthesis(features[level]))

        if pad:
            cut = self.scale * self.scale
            out = out[:, :, cut:-cut, cut:-cut]
        return out

    def _back_project(self, hr: torch.Tensor, level: int, lowest: int, features, maps) -> torch.Tensor:
        """mu back-projection steps at `level` against the (fixed) features of the level below (eq. 6),
        recursing down to level `lowest` (identity there)."""
        if level <= lowest:
            return hr
        for _ in range(self.config.mu):
            update = self._back_project(self.Downscaling(hr), level - 1, lowest, features, maps)
            hr = _accumulate(hr, self.Upscaling([features[level - 1], update, maps[level - 1]]))
        return hr

    def _pad_input(self, lr: torch.Tensor) -> torch.Tensor:
        """Reflection pad of `scale` LR pixels (the authors' `ReflectionPad2d`), also for tiny images."""
        return reflect_pad(lr, self.scale)

    @staticmethod
    def _noise_amplitude(noise_amp, x: torch.Tensor) -> torch.Tensor | float:
        """W as a float, or as an (N, 1, 1, 1) tensor broadcasting over each sample's noise maps."""
        if not torch.is_tensor(noise_amp):
            return float(noise_amp)
        amp = noise_amp.to(device=x.device, dtype=x.dtype)
        if amp.dim() == 0:
            return amp
        if amp.shape != (x.shape[0],):
            raise ConfigError(f"noise_amp must be a float or an (N,) tensor, got shape {tuple(amp.shape)}")
        return amp.view(-1, 1, 1, 1)

    def _scaled_noise(self, x: torch.Tensor, amp, noise) -> list[torch.Tensor]:
        """W * n_k for the `levels` maps the forward uses (zeros without drawing when W is exactly 0)."""
        n, _, h, w = x.shape
        shapes = [(n, 1, h * 2**k, w * 2**k) for k in range(self.levels)]
        if noise is None:
            if not torch.is_tensor(amp) and amp == 0.0:
                return [x.new_zeros(s) for s in shapes]
            maps = [torch.randn(s, device=x.device, dtype=x.dtype) for s in shapes]
        else:
            maps = [noise] if torch.is_tensor(noise) else list(noise)
            if len(maps) < len(shapes):
                raise ConfigError(f"MGBPv1 needs {len(shapes)} noise maps, got {len(maps)}")
            for k, (given, shape) in enumerate(zip(maps, shapes)):
                if tuple(given.shape) != shape:
                    raise ConfigError(f"noise map {k} has shape {tuple(given.shape)}, expected {shape}")
            maps = [m.to(device=x.device, dtype=x.dtype) for m in maps[: len(shapes)]]
        return [amp * m for m in maps]


def _accumulate(total: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
    """total + term; in place on `term` (a fresh result nobody else holds) when autograd is off."""
    return total + term if torch.is_grad_enabled() else term.add_(total)


# --------------------------------------------------------------------------------------------------------
# The authors' released weights.


def is_authors_state_dict(state_dict: Mapping) -> bool:
    """True when the keys are those of the authors' G-MGBP (`*_v3_ms.model`) state dicts."""
    keys = set(state_dict.keys()) if isinstance(state_dict, Mapping) else set()
    return all(key in keys for key in _AUTHORS_SIGNATURE_KEYS)


def _mismatch_report(model: nn.Module, state_dict: Mapping) -> list[str]:
    """Lines naming missing, unexpected and mis-shaped keys (empty when the state dict fits exactly)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and (not torch.is_tensor(state_dict[k]) or state_dict[k].shape != v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    return problems


def from_authors_state_dict(
    state_dict: Mapping, strict: bool = True, config: MGBPv1Config | None = None
) -> MGBPv1:
    """Build an MGBPv1 (default: the PIRM-2018 x4 config) and load the authors' tensors into it.

    `strict=True` demands every key with its exact shape (68 tensors, 281,084 parameters for the PIRM files);
    `strict=False` still rejects mis-shaped tensors but tolerates missing / unexpected keys.
    """
    if not isinstance(state_dict, Mapping):
        raise WeightFileError(
            f"expected a state dict (a mapping of tensors), got {type(state_dict).__name__}"
        )
    model = MGBPv1(config)
    problems = _mismatch_report(model, state_dict)
    fatal = problems if strict else [p for p in problems if "mis-shaped" in p]
    if fatal:
        raise WeightFileError("MGBPv1 weights do not match the PIRM-2018 architecture: " + "; ".join(fatal))
    tensors = {k: v for k, v in state_dict.items() if k in model.state_dict()}
    model.load_state_dict(tensors, strict=strict)
    return model.eval()


def load_authors_file(path: str | Path, config: MGBPv1Config | None = None) -> MGBPv1:
    """Load one of the authors' `.model` files (a pickled state dict) without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"weight file not found: {path}")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
        raise WeightFileError(
            f"cannot read {path} as a PyTorch state dict: {exc}".replace("\n", " ")
        ) from exc
    if not is_authors_state_dict(state_dict):
        raise WeightFileError(f"{path} is not an authors' G-MGBP (PIRM-2018) state dict")
    return from_authors_state_dict(state_dict, strict=True, config=config)
