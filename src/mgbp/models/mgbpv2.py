"""MGBPv2 and MGBP-3D: the Multi-Grid Back-Projection generator of Algorithm 1 (Section III-A, Figure 4).

Paper (`../shared/paper/mgbp-paper.txt`): Algorithm 1 (MGBPv2 and the recursive back-projection BP^mu_k),
the Cube-to-Cube property (Figure 5), the complexity recurrence p(n) = f(n) + mu p(n/4) (eq. 6) and the
configurations of Table I. MGBP-3D is the same algorithm with 3D convolutions over (N, C, T, H, W): spatial
factor f, temporal factor 1 (Section III-A, "Generator Architecture").

Algorithm 1, with levels numbered k = 1 (lowest resolution) .. L (output resolution):
    x = [X, W N(0,1)]                                  X: the bicubic-upscaled input
    y_k = Analysis_k(x)                  k = 1..L      one strided convolution to level k's grid
    y = BP^mu_L(y_L | y_1..y_{L-1})
    Y = Synthesis(y)                                   (+ X when `residual`)
    BP^mu_k(u):  out = u; if k > 1: repeat mu times:
        LR  = Downscale_tag(out)                       strided convolution, level k -> k-1
        c   = BP^mu_{k-1}(LR)
        out = out + Upscale_tag([y_{k-1}, c])          ReLU, then strided transposed convolution
Our extension of line 1 (off unless the config sets `noise_mask`): x = [X, W m(X) N(0,1)], the noise shaped by
the input's local texture (`mgbp.models.noise_mask`). Our extension after line 9 (off unless the config sets
`output_projection`): a fixed number of back-projection steps (eqs. 4-5) of Y onto the input
(`mgbp.models.output_projection`).
Every call site (tag) of Downscale/Upscale owns its weights. They are created once, at construction, by a
"dry run" of the recursion that nests the modules exactly as the calls nest, so `named_modules()` shows the
W-cycle: `bp.L4.s2.L3.s1.down` is the Downscale of step 1 of BP_3 inside step 2 of BP_4. There are
mu + mu^2 + ... + mu^(L-1) Downscale/Upscale pairs. The forward pass only walks this tree: no module is
built, no tag string is formed, no dictionary is searched per call.

Channels: `config.channels[k-1]` is the width of level k, so the list runs from the LOWEST resolution to
the highest. This is the order of the authors' code (public repository `pnavarre/mgbpv2`, `model.py`:
`channels[0]` feeds the Analysis of largest stride, `channels[-1]` the 1x1 Synthesis) and the order of
Table I: 192-128-64-32 (x4) has 192 features on the coarsest grid and 32 at the output resolution, which
is what keeps the cost per level falling (the paper's O(log n) argument) and what reproduces the 46.5 M
parameters of the authors' x4 configuration (see `tests/test_models.py`).

Details the paper leaves out, taken from the authors' code (facts only, our own implementation):
- Analysis_k has kernel (K-1)(s-1)+1 at stride s = 2^(L-k) (the footprint of L-k stacked stride-2
  K-convolutions, so it lands on exactly the grid the Downscales reach); Analysis_L and Synthesis are 1x1.
- `noise_features > 0`: the noise is not mixed into Analysis_k but analysed per level by its own
  convolution (AnalysisN_k, same geometry, always biased) whose `noise_features` maps are concatenated into
  every Upscale of that level: Upscale([y_{k-1}, c, z_{k-1}]). Only levels 1..L-1 feed an Upscale, so there
  is no AnalysisN_L (the authors' code builds one that is never used: 2 dead parameters per noise feature). `noise_features = 0` is Algorithm 1 as
  printed: x = [X, W N] enters every Analysis_k.
- `padding="valid"`: unpadded convolutions; the input is reflection-padded once to the nearest size n that
  the grid hierarchy divides exactly (n = 2^(L-1)(m-1) + (K-1)(2^(L-1)-1) + 1) and the output cropped back.
  `padding="same"`: zero-padded convolutions, the input padded to a multiple of 2^(L-1). The Table I
  presets use "valid" with one noise feature per level, as the authors' code does.

MGBP-3D: kernels (Kt, K, K), strides (1, s, s); Analysis_k's temporal kernel is 1 + (L-k)(Kt-1), again
the footprint of the Downscale chain. `temporal_padding="same"` keeps T frames at every level (Cube-to-Cube:
T frames in, T out). `temporal_padding="none"` pads nothing in time: each level down loses Kt-1 frames, so
level k holds T - (L-k)(Kt-1) frames (37 -> 29 at the lowest level for Kt = 3 needs 4 level steps, i.e. the
authors' 5-level x16 network; the 6-level Table I preset gives 37 -> 27). By Cube-to-Cube the top level still
has T frames, but its first and last `frames_consumed` = (L-1)(Kt-1)/2 frames have no counterpart on the
lowest grid, so the output is cropped to the T - 2 * frames_consumed frames that every level covers.
`config.frames` records the clip length T a 3D model was trained on (the paper's "Video Inference" cuts streams
into patches of the training size; `mgbp.video` reads it through `model.clip_length`).

Tiling (`mgbp.tiling.run_model`): the stride-2 grids make the network equivariant only to shifts by whole
cells of the lowest grid (2^(L-1) output pixels), and the reflection padding to `valid_size` depends on the
input size. A tile therefore tells `forward` where it lies in the whole image (`placement`): it is then padded
so that its grids line up with the whole image's, and at a true image border exactly as the whole image is.
The noise map N(0,1) is an input like X (same grid, padded with it), so a tile given the crop of the whole
image's noise map (`crop_noise`) reproduces the untiled output at any W.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mgbp.errors import ConfigError
from mgbp.models import onednn
from mgbp.models.contract import Capabilities
from mgbp.models.noise_mask import NoiseMask, noise_mask
from mgbp.models.output_projection import OutputProjection, project_output
from mgbp.resize import upscale_integer

PADDINGS = ("valid", "same")
TEMPORAL_PADDINGS = ("same", "none")
# Clip length of a 3D model whose config does not say (weight files written before `frames` existed, and our
# presets): the trainer's default `data.frames` (plus the frames a network without temporal padding consumes).
# The paper trained its x16 MGBP-3D on 37-frame clips with no temporal padding (Section III-A, 37 -> 29 frames
# at the lowest level); the `mgbp3d-x16` preset records that.
DEFAULT_CLIP_FRAMES = 5


@dataclasses.dataclass
class MGBPv2Config:
    """Hyper-parameters of MGBPv2 (dims=2) and MGBP-3D (dims=3). Defaults: Table I x4 MGBPv2."""

    scale: int = 4  # spatial upscaling factor f (the network itself runs at the output resolution)
    levels: int = 4  # L
    mu: int = 4  # back-projection steps per level
    channels: tuple[int, ...] = (192, 128, 64, 32)  # per level, LOWEST resolution first
    kernel_size: int = 3  # K of Downscale/Upscale (odd)
    image_channels: int = 3
    noise_channels: int = 1  # channels of W N(0,1) concatenated to the input (Algorithm 1, line 1)
    noise_features: int = 1  # >0: authors' per-level noise analysis into every Upscale; 0: noise in Analysis
    bias: bool = True
    padding: str = "valid"  # "valid" (authors') or "same"
    residual: bool = True  # output = Synthesis(y) + bicubic input
    dims: int = 2  # 2: MGBPv2 on images, 3: MGBP-3D on clips
    temporal_kernel: int = 3  # Kt (dims=3 only)
    temporal_padding: str = "same"  # "same" (T frames in and out) or "none" (dims=3 only)
    frames: int | None = None  # dims=3: training clip length T (None: DEFAULT_CLIP_FRAMES out); dims=2: None
    noise_mask: NoiseMask | None = None  # x = [X, W m(X) N(0,1)] (`mgbp.models.noise_mask`); None: Algorithm 1
    output_projection: OutputProjection | None = None  # back-projection steps after Synthesis; None: Algorithm 1

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        for name in ("scale", "levels", "mu", "kernel_size", "image_channels", "temporal_kernel"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"MGBPv2 {name} must be >= 1, got {getattr(self, name)}")
        if self.noise_channels < 0 or self.noise_features < 0:
            raise ConfigError("MGBPv2 noise_channels and noise_features must be >= 0")
        if self.noise_features > 0 and self.noise_channels == 0:
            raise ConfigError("MGBPv2 noise_features > 0 needs noise_channels > 0")
        if len(self.channels) != self.levels or min(self.channels, default=0) < 1:
            raise ConfigError(
                f"MGBPv2 needs one positive channel count per level: levels={self.levels}, "
                f"channels={list(self.channels)}"
            )
        if self.kernel_size % 2 == 0 or self.temporal_kernel % 2 == 0:
            raise ConfigError("MGBPv2 kernel_size and temporal_kernel must be odd")
        if self.padding not in PADDINGS:
            raise ConfigError(f"MGBPv2 padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.temporal_padding not in TEMPORAL_PADDINGS:
            raise ConfigError(
                f"MGBPv2 temporal_padding must be one of {TEMPORAL_PADDINGS}, got {self.temporal_padding!r}"
            )
        if self.dims not in (2, 3):
            raise ConfigError(f"MGBPv2 dims must be 2 (images) or 3 (video), got {self.dims}")
        self._check_frames()
        self.noise_mask = NoiseMask.from_any(self.noise_mask)
        if self.noise_mask is not None and (self.dims != 2 or self.noise_channels == 0):
            raise ConfigError("MGBPv2 noise_mask is for image models (dims=2) with a noise input")
        self.output_projection = OutputProjection.from_any(self.output_projection)
        if self.output_projection is not None and self.dims != 2:
            raise ConfigError("MGBPv2 output_projection is for image models (dims=2)")

    def _check_frames(self) -> None:
        """`frames` belongs to 3D models; it must leave at least one output frame without temporal padding."""
        if self.dims == 2:
            if self.frames is not None:
                raise ConfigError(f"MGBPv2 frames (a clip length) is for dims=3 models, got frames={self.frames}")
            return
        consumed = (self.levels - 1) * (self.temporal_kernel - 1) if self.temporal_padding == "none" else 0
        # default: a clip that yields DEFAULT_CLIP_FRAMES output frames (all of it with temporal padding)
        self.frames = DEFAULT_CLIP_FRAMES + consumed if self.frames is None else int(self.frames)
        if self.frames - consumed < 1:
            raise ConfigError(
                f"MGBP-3D clips of {self.frames} frames are too short: without temporal padding this network "
                f"consumes {consumed} frames"
            )

    @property
    def family(self) -> str:
        return "mgbpv2" if self.dims == 2 else "mgbp3d"

    def width(self, level: int) -> int:
        """Feature channels of level k (1 = lowest resolution, L = output resolution)."""
        return self.channels[level - 1]

    def stride_to(self, level: int) -> int:
        """Grid spacing of level k in output pixels: 2^(L-k)."""
        return 2 ** (self.levels - level)


# --------------------------------------------------------------------------------------------------------
# Convolution geometry: one place that knows 2D vs 3D and 'valid' vs 'same'.


class _Geometry:
    """Builds the convolutions of one configuration (2D or 3D, padded or not)."""

    def __init__(self, cfg: MGBPv2Config):
        self.cfg = cfg
        self.conv = nn.Conv2d if cfg.dims == 2 else nn.Conv3d
        self.conv_t = nn.ConvTranspose2d if cfg.dims == 2 else nn.ConvTranspose3d

    def _shape(self, spatial: int, temporal: int):
        return spatial if self.cfg.dims == 2 else (temporal, spatial, spatial)

    def _pad(self, spatial_kernel: int, temporal_kernel: int):
        spatial = (spatial_kernel - 1) // 2 if self.cfg.padding == "same" else 0
        temporal = (temporal_kernel - 1) // 2 if self.cfg.temporal_padding == "same" else 0
        return self._shape(spatial, temporal)

    def analysis(self, in_channels: int, out_channels: int, level: int, bias: bool) -> nn.Module:
        """Analysis_k: kernel (K-1)(s-1)+1 at stride s = 2^(L-k); temporally 1 + (L-k)(Kt-1), stride 1."""
        cfg = self.cfg
        s = cfg.stride_to(level)
        kernel = (cfg.kernel_size - 1) * (s - 1) + 1
        t_kernel = 1 + (cfg.levels - level) * (cfg.temporal_kernel - 1)
        return self.conv(
            in_channels,
            out_channels,
            self._shape(kernel, t_kernel),
            stride=self._shape(s, 1),
            padding=self._pad(kernel, t_kernel),
            bias=bias,
        )

    def downscale(self, in_channels: int, out_channels: int) -> nn.Module:
        k, kt = self.cfg.kernel_size, self.cfg.temporal_kernel
        return self.conv(
            in_channels,
            out_channels,
            self._shape(k, kt),
            stride=self._shape(2, 1),
            padding=self._pad(k, kt),
            bias=self.cfg.bias,
        )

    def upscale(self, in_channels: int, out_channels: int) -> nn.Module:
        """The transpose of `downscale`'s geometry (Cube-to-Cube: it restores the exact size)."""
        k, kt = self.cfg.kernel_size, self.cfg.temporal_kernel
        output_padding = 1 if self.cfg.padding == "same" else 0
        return self.conv_t(
            in_channels,
            out_channels,
            self._shape(k, kt),
            stride=self._shape(2, 1),
            padding=self._pad(k, kt),
            output_padding=self._shape(output_padding, 0),
            bias=self.cfg.bias,
        )

    def pointwise(self, in_channels: int, out_channels: int, bias: bool) -> nn.Module:
        return self.conv(in_channels, out_channels, 1, bias=bias)


# --------------------------------------------------------------------------------------------------------
# The W-cycle, built once by a dry run of BP^mu_k.


class BackProjectionStep(nn.Module):
    """One pass of the loop of BP^mu_k (lines 4-7): Downscale, recurse, Upscale([y_{k-1}, c]), add."""

    def __init__(self, level: int, cfg: MGBPv2Config, geometry: _Geometry, tag: str):
        super().__init__()
        self.tag = tag
        self.context_index = level - 2  # index of y_{k-1} in the list of level features
        self.down = geometry.downscale(cfg.width(level), cfg.width(level - 1))
        inner = BackProjection(level - 1, cfg, geometry, tag) if level - 1 > 1 else None
        if inner is not None:  # registered under the level's name, so the tag reads bp.L4.s1.L3.s2...
            self.add_module(f"L{level - 1}", inner)
        object.__setattr__(self, "inner", inner)  # plain alias for forward, not a second registration
        upscale_in = 2 * cfg.width(level - 1) + cfg.noise_features
        self.up = geometry.upscale(upscale_in, cfg.width(level))

    def forward(self, out: torch.Tensor, lift: UpscaleInputs):
        """`lift(k, c)`: ReLU([y_k, c, z_k]), the input of an Upscale from level k (see UpscaleInputs)."""
        lr = self.down(out)  # line 5: LR = Downscale_tag(out)
        c = lr if self.inner is None else self.inner(lr, lift)  # line 6: c = BP_{k-1}(LR)
        # line 7: out += Upscale_tag([y_{k-1}, c]), Upscale = transposed convolution of the ReLU
        return add_transposed_convolution(out, self.up, lift(self.context_index, c))


class UpscaleInputs:
    """ReLU([y_k, c, z_k]) for the Upscales of level k: ReLU acts per channel and y_k, z_k (the level's Analysis
    features and noise features) are fixed during a forward pass, so only the c part changes from call site to
    call site. With autograd the parts are concatenated per call (ReLU(y_k), ReLU(z_k) computed once). Without
    it (eager inference), each level has one buffer holding ReLU(y_k) and ReLU(z_k), written once, into which
    every call writes only ReLU(c) (one pass, no concatenation): 10% of mgbp-x4's forward on CPU. A call's
    Upscale consumes the buffer before the next call of that level writes it (the W-cycle runs in order)."""

    def __init__(self, features: list[torch.Tensor], noise_features: list[torch.Tensor], like: torch.Tensor):
        self.features, self.noise, self.like = features, noise_features, like
        self.reuse = onednn.eager_inference()
        if not self.reuse:
            self.context = [F.relu(y) for y in features]
            self.noise = [_same_layout(F.relu(z), like) for z in noise_features]
        self.buffers: dict[int, torch.Tensor] = {}

    def __call__(self, k: int, c: torch.Tensor) -> torch.Tensor:
        if not self.reuse:
            return torch.cat([self.context[k], F.relu(c)] + self.noise[k : k + 1], dim=1)
        buffer = self.buffers.get(k)
        y, z = self.features[k], self.noise[k : k + 1]
        if buffer is None:
            channels = 2 * y.shape[1] + sum(t.shape[1] for t in z)
            layout = torch.channels_last if y.dim() == 4 and _is_channels_last(y) else torch.contiguous_format
            buffer = torch.empty((y.shape[0], channels, *y.shape[2:]), dtype=y.dtype, device=y.device,
                                 memory_format=layout)
            torch.clamp_min(y, 0, out=buffer[:, : y.shape[1]])
            if z:
                torch.clamp_min(z[0], 0, out=buffer[:, 2 * y.shape[1]:])
            self.buffers[k] = buffer
        torch.clamp_min(c, 0, out=buffer[:, y.shape[1] : 2 * y.shape[1]])
        return buffer


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _dense(t: torch.Tensor) -> torch.Tensor:
    """A channel slice of the channels-last input, copied once into its own channels-last tensor on CPU
    inference: oneDNN otherwise copies a strided input again for every convolution that reads it."""
    if t.dim() == 4 and onednn.can_fuse(t) and not _is_channels_last(t):
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _convolve(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv(x), through the one-primitive oneDNN call on CPU inference (`mgbp.models.onednn`) for a Conv2d: the
    1x1 Analysis_L and Synthesis otherwise take PyTorch's slow single-thread GEMM path at full resolution, with a
    separate pass that writes the bias (7% of mgbp-x4's forward, torch 2.13)."""
    plain = isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
    if plain and conv.groups == 1 and conv.dilation == (1, 1) and onednn.can_fuse(x):
        return onednn.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    return conv(x)


def _same_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`t` with channels-last strides when `like` has them. A one-channel map is 'contiguous' in both layouts,
    and torch.cat of channels-last features with it would fall back to a slow NCHW copy."""
    if t.dim() == 4 and _is_channels_last(like):
        return t.clone(memory_format=torch.channels_last)
    return t


def add_transposed_convolution(out: torch.Tensor, up: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """out + up(x) for a transposed convolution `up`, its bias added with `out` in place on the result.

    oneDNN's transposed convolution runs about half as fast on CPU when it adds the bias itself (measured with
    torch 2.13: 23 vs 46 GMAC/s for the 129 -> 32 channel Upscale of mgbp-x4), and the two in-place additions
    allocate nothing. Autograd is unaffected (a convolution's backward needs its input, not its output).
    """
    transposed = F.conv_transpose2d if isinstance(up, nn.ConvTranspose2d) else F.conv_transpose3d
    y = transposed(x, up.weight, None, up.stride, up.padding, up.output_padding, up.groups, up.dilation)
    y = y.add_(out)
    if up.bias is not None:
        y = y.add_(up.bias.view(1, -1, *([1] * (y.dim() - 2))))
    return y


class BackProjection(nn.Module):
    """BP^mu_k of Algorithm 1 for k > 1: mu steps, each with its own tagged Downscale/Upscale."""

    def __init__(self, level: int, cfg: MGBPv2Config, geometry: _Geometry, parent_tag: str = "bp"):
        super().__init__()
        self.level = level
        tag = f"{parent_tag}.L{level}"
        for s in range(1, cfg.mu + 1):  # line 3-4: for s = 1..mu, tag_{k-1} = s
            self.add_module(f"s{s}", BackProjectionStep(level, cfg, geometry, f"{tag}.s{s}"))
        self._steps = list(self.children())  # a plain list: iterated in forward without name look-ups

    def forward(self, out: torch.Tensor, lift: UpscaleInputs):
        for step in self._steps:
            out = step(out, lift)
        return out


# --------------------------------------------------------------------------------------------------------
# The generator.


def _padding_to(size: int, target: int) -> tuple[int, int]:
    """Split `target - size` into (before, after), the larger half first (as the authors' code)."""
    extra = target - size
    return extra - extra // 2, extra // 2


class MGBPv2(nn.Module):
    """MGBPv2 (dims=2, images (N,C,H,W)) and MGBP-3D (dims=3, clips (N,C,T,H,W)): Algorithm 1."""

    def __init__(self, config: MGBPv2Config | None = None):
        super().__init__()
        cfg = config if config is not None else MGBPv2Config()
        self.config = cfg
        self.scale = cfg.scale
        self.is_video = cfg.dims == 3
        self.family = cfg.family
        self.noise_channels = cfg.noise_channels
        geometry = _Geometry(cfg)
        L = cfg.levels

        # Analysis_k reads [X, W N] (Algorithm 1) or X alone when the noise has its own per-level analysis.
        analysis_in = cfg.image_channels + (cfg.noise_channels if cfg.noise_features == 0 else 0)
        self.analysis = nn.ModuleList(
            [
                geometry.analysis(analysis_in, cfg.width(k), k, cfg.bias)
                if k < L
                else geometry.pointwise(analysis_in, cfg.width(k), cfg.bias)
                for k in range(1, L + 1)
            ]
        )
        self.noise_analysis = nn.ModuleList(
            [geometry.analysis(cfg.noise_channels, cfg.noise_features, k, True) for k in range(1, L)]
            if cfg.noise_features > 0
            else []
        )
        # The dry run of BP^mu_L: builds every tagged Downscale/Upscale once.
        self.bp = nn.ModuleDict({f"L{L}": BackProjection(L, cfg, geometry)} if L > 1 else {})
        self.synthesis = geometry.pointwise(cfg.width(L), cfg.image_channels, cfg.bias)
        if cfg.residual:
            # Start close to the bicubic answer: a small residual branch at initialisation (not zero, so
            # gradients still reach every layer at step 0) spares a short training run its first phase.
            with torch.no_grad():
                self.synthesis.weight.mul_(0.01)
                if self.synthesis.bias is not None:
                    self.synthesis.bias.zero_()

        self.frames_consumed = (
            (L - 1) * (cfg.temporal_kernel - 1) // 2
            if self.is_video and cfg.temporal_padding == "none"
            else 0
        )
        self.border_lr = self._border_lr()
        self.border_lr_without_noise = self._border_lr(noise=False)
        self.border_frames = self._border_frames() if self.is_video else 0
        if cfg.dims == 2:
            # Kernels in oneDNN's / cuDNN's fast layout (NHWC); `network` gives the activations the same on CPU
            # (see there). Loading and saving are unaffected (copies keep the layout; weight files store
            # contiguous tensors).
            self.to(memory_format=torch.channels_last)

    # Tiles crop one noise map (draw_noise / crop_noise) and are placed (forward(..., placement=) lines a tile's
    # grids up with the whole image's): tiled = untiled at any W. Any H, W (padded to a valid size here).
    capabilities = Capabilities(whole_image_noise=True, placement=True, quiet_border=True)
    preset: str | None = None  # the PRESETS name it was built from (`build_model`, weight files)

    @property
    def clip_length(self) -> int | None:
        """Frames per clip the 3D model was trained on (`config.frames`); None for 2D models."""
        return self.config.frames if self.is_video else None

    @classmethod
    def from_config(cls, config: dict | MGBPv2Config) -> MGBPv2:
        """Rebuild from a config dataclass or its JSON dict (as stored in our weight files)."""
        return cls(config if isinstance(config, MGBPv2Config) else config_from_dict(dict(config)))

    # ---- Algorithm 1 ------------------------------------------------------------------------------------

    def forward(
        self,
        lr: torch.Tensor,
        noise_amp: float | torch.Tensor = 0.0,
        noise: torch.Tensor | None = None,
        upscaled: torch.Tensor | None = None,
        placement: tuple[int, int, int, int] | None = None,
    ) -> torch.Tensor:
        """LR (N,C,h,w) or clip (N,C,T,h,w) in [0,1] -> (N,C,f h,f w) or (N,C,T',f h,f w), not clamped.

        `noise_amp` W: float or (N,) tensor. `noise`: explicit N(0,1) tensor (N, noise_channels, [T,] f h, f w)
        for reproducibility; when absent it is drawn with `torch.randn` (not at all when W is the float 0).
        `upscaled`: an already bicubic-upscaled input, used instead of `imresize(lr, scale=f)`.
        `placement` (top, left, height, width) in LR pixels: `lr` is the crop at (top, left) of an image of
        that size (a tile); it is padded so that its grids line up with that image's (see the module
        docstring). T' = T - 2 * frames_consumed.
        """
        X = self._upscaled_input(lr, upscaled)
        x = torch.cat([X, self._scaled_noise(X, noise_amp, noise)], dim=1)  # line 1: x = [X, W N(0,1)]
        x, crop = self._pad_to_valid_size(x, placement)
        zero_noise = noise is None and not isinstance(noise_amp, torch.Tensor) and float(noise_amp) == 0.0
        return self.project(lr, self.network(x, zero_noise=zero_noise)[crop], noise_amp)

    def network(self, x: torch.Tensor, zero_noise: bool = False) -> torch.Tensor:
        """Lines 2-9 of Algorithm 1 on x = [X, W N(0,1)] already padded to a valid size; same size out.

        `forward` pads and crops around it; `mgbp.export` calls it with padding written in traceable ops.
        `zero_noise`: the caller knows the noise channels are zeros (W = 0)."""
        cfg = self.config
        if x.dim() == 4 and x.device.type == "cpu":
            # oneDNN's fast layout: 1.25x (Table I x4) to 1.6x (mgbp-x4) on CPU; its transposed convolutions
            # run on a much slower path in NCHW (torch 2.13; benchmarks/bench_speed.py)
            x = x.contiguous(memory_format=torch.channels_last)
        image, noise_map = x[:, : cfg.image_channels], x[:, cfg.image_channels :]

        analysis_input = _dense(image) if cfg.noise_features > 0 else x
        features = [_convolve(analysis, analysis_input) for analysis in self.analysis]  # lines 2-4: Analysis_k
        noise_features = self._noise_features(noise_map, features, zero_noise)
        lift = UpscaleInputs(features[:-1], noise_features, x)  # the Upscales' inputs [y_{k-1}, c, z_{k-1}]

        out = features[-1]  # lines 5-8: y = BP^mu_L(y_L | y_1..y_{L-1}); tags are fixed at construction
        for bp in self.bp.values():
            out = bp(out, lift)
        Y = _convolve(self.synthesis, out)  # line 9: Y = Synthesis(y)
        if cfg.residual:
            Y = Y + image
        return Y

    def project(self, lr: torch.Tensor, Y: torch.Tensor, noise_amp) -> torch.Tensor:
        """Y back-projected onto lr by the config's `output_projection` (Y as it is without one); with
        `noise_only`, only the samples whose W (float or (N,) tensor) is not 0."""
        projection = self.config.output_projection
        if projection is None:
            return Y
        active = None
        if projection.noise_only and not isinstance(noise_amp, torch.Tensor):
            if float(noise_amp) == 0.0:
                return Y
        elif projection.noise_only:
            active = (noise_amp.reshape(-1) != 0).expand(Y.shape[0])  # W: one value or one per sample
        return project_output(lr, Y, self.scale, projection.steps, active)

    def _noise_features(self, noise_map: torch.Tensor, features: list[torch.Tensor], zero_noise: bool):
        """z_k = AnalysisN_k(noise) for the levels that feed an Upscale. A zero map (W = 0) gives each its bias
        everywhere, exactly (unpadded or zero-padded convolutions of zeros), so eager inference takes the bias
        as it is instead of convolving the zeros (mgbp-x4's W = 0 call on CPU 1.05-1.06x faster: bench_speed
        section c, `--baseline 0c0ccf5`). With autograd the convolutions run: their weights then get zero
        gradients, which an optimiser does not skip as it skips absent ones."""
        if zero_noise and onednn.eager_inference():
            # in the features' dtype: under autocast the convolution would have given bf16/fp16 maps too
            biases = [analysis.bias.to(y.dtype).view(1, -1, *([1] * (y.dim() - 2)))
                      for analysis, y in zip(self.noise_analysis, features)]
            return [b.expand(y.shape[0], -1, *y.shape[2:]) for b, y in zip(biases, features)]
        noise_input = _dense(noise_map) if self.noise_analysis else noise_map  # one copy for every level
        return [_convolve(analysis, noise_input) for analysis in self.noise_analysis]

    # ---- input handling ---------------------------------------------------------------------------------

    def _upscaled_input(self, lr: torch.Tensor, upscaled: torch.Tensor | None) -> torch.Tensor:
        rank = 5 if self.is_video else 4
        source = lr if upscaled is None else upscaled
        layout = "(N, C, T, H, W)" if self.is_video else "(N, C, H, W)"
        if source.dim() != rank or source.shape[1] != self.config.image_channels:
            raise ConfigError(
                f"{self.family} expects {layout} input with C={self.config.image_channels}, "
                f"got shape {tuple(source.shape)}"
            )
        if upscaled is not None:
            return upscaled
        # The fixed polyphase convolution (size-independent: exports with dynamic H, W); its 5x5 kernel is
        # built per call in lr's dtype (microseconds), so it is exact in any dtype the model is cast to.
        return upscale_integer(lr, self.scale)

    def _scaled_noise(self, X: torch.Tensor, noise_amp, noise: torch.Tensor | None) -> torch.Tensor:
        """W N(0,1) with `noise_channels` channels on X's grid (zeros, not drawn, when W is the float 0)."""
        shape = (X.shape[0], self.noise_channels) + tuple(X.shape[2:])
        if noise is not None and tuple(noise.shape) != shape:
            raise ConfigError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        if isinstance(noise_amp, torch.Tensor):
            amp = noise_amp.to(X).reshape(-1, *([1] * (X.dim() - 1)))
            if amp.shape[0] not in (1, X.shape[0]):
                raise ConfigError(f"noise_amp must be a float or a ({X.shape[0]},) tensor")
        else:
            amp = float(noise_amp)
            if amp == 0.0 and noise is None:
                return X.new_zeros(shape)
        if noise is None:
            noise = torch.randn(shape, dtype=X.dtype, device=X.device)
        return self.shape_noise(X, amp * noise.to(X))

    def shape_noise(self, X: torch.Tensor, scaled_noise: torch.Tensor) -> torch.Tensor:
        """W N(0,1) -> W m(X) N(0,1) when the config has a `noise_mask` (else unchanged)."""
        mask = self.config.noise_mask
        return scaled_noise if mask is None else scaled_noise * noise_mask(X, mask)

    def valid_size(self, size: int) -> int:
        """Smallest spatial size >= `size` that every level's grid divides exactly."""
        step = 2 ** (self.config.levels - 1)
        if self.config.padding == "same":
            return step * math.ceil(size / step)
        # valid: n = step (m - 1) + (K - 1)(step - 1) + 1 with m >= 1 pixels on the lowest grid
        base = (self.config.kernel_size - 1) * (step - 1) + 1
        return base + step * max(0, math.ceil((size - base) / step))

    def _axis_padding(self, size: int, start: int = 0, full: int | None = None) -> tuple[int, int]:
        """(before, after) padding of one spatial axis (output pixels) of an input at `start` in a `full` axis.

        The whole axis gets `_padding_to(full, valid_size(full))`. A crop keeps those pads at the true borders
        it touches; at an inner edge it is padded just enough that (a) the whole axis's padded coordinate of
        each pixel and the crop's agree modulo the lowest grid's spacing, so every level's grid lines up, and
        (b) its padded length is a valid size.
        """
        full = size if full is None else full
        whole_before, whole_after = _padding_to(full, self.valid_size(full))
        step = 2 ** (self.config.levels - 1)
        before = whole_before if start == 0 else (whole_before + start) % step
        after = whole_after if start + size == full else self.valid_size(before + size) - before - size
        if self.valid_size(before + size + after) != before + size + after:
            raise ConfigError(f"a tile of {size} output pixels is too small for this {self.family} model")
        return before, after

    def tile_padding(self, size_hr: tuple[int, int], placement=None) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) padding of an input of `size_hr` = (H, W) output pixels placed as in
        `forward`'s `placement` (None: a whole image); tiles with equal padding can share a batch."""
        (h, w), f = size_hr, self.scale
        if placement is None:
            return self._axis_padding(w) + self._axis_padding(h)
        top, left, height, width = placement
        return self._axis_padding(w, f * left, f * width) + self._axis_padding(h, f * top, f * height)

    def _pad_mode(self, pads, h: int, w: int, placement) -> str:
        """Reflection, as the whole image gets it; replicate where reflection cannot reach (tiny inputs)."""
        whole = (h, w) if placement is None else (self.scale * placement[2], self.scale * placement[3])
        whole_pads = self.tile_padding(whole)
        reflect = max(whole_pads) < min(whole) and max(pads) < min(h, w)
        return "reflect" if reflect else "replicate"

    def _pad_to_valid_size(self, x: torch.Tensor, placement=None):
        """Reflection-pad H, W to a valid size (aligned with the whole image for a placed tile); return the
        padded input and the output crop."""
        h, w = x.shape[-2:]
        left, right, top, bottom = self.tile_padding((h, w), placement)
        frames = self.frames_consumed
        t_crop = (slice(frames, x.shape[2] - frames),) if self.is_video else ()
        if self.is_video and x.shape[2] - 2 * frames < 1:
            raise ConfigError(
                f"a clip of {x.shape[2]} frames is too short: this model consumes {frames} frames at each end"
            )
        crop = (slice(None), slice(None)) + t_crop + (slice(top, top + h), slice(left, left + w))
        pads = (left, right, top, bottom)
        if any(pads):
            # reflect needs pad < size; tiny inputs padded to a much larger grid fall back to replicate
            mode = self._pad_mode(pads, h, w, placement)
            x = F.pad(x, pads + ((0, 0) if self.is_video else ()), mode=mode)
        return x, crop

    # ---- noise maps for tiled inference ---------------------------------------------------------------------

    def noise_shape(self, lr_shape) -> tuple[int, ...]:
        """Shape of the N(0,1) map `forward` takes for an input of `lr_shape`: (N, noise_channels, [T,] fh, fw)."""
        f = self.scale
        return (lr_shape[0], self.noise_channels, *lr_shape[2:-2], f * lr_shape[-2], f * lr_shape[-1])

    def draw_noise(self, lr_shape, generator: torch.Generator | None = None, device=None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A standard-normal noise map for an input of `lr_shape` (from `generator`, else torch's RNG)."""
        return torch.randn(self.noise_shape(lr_shape), generator=generator, device=device, dtype=dtype)

    def crop_noise(self, noise: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        """The part of a whole image's noise map that the tile of LR `rows` x `cols` takes (same grid as X)."""
        f = self.scale
        return noise[..., f * rows.start : f * rows.stop, f * cols.start : f * cols.stop]

    # ---- receptive field, for tiling ----------------------------------------------------------------------

    def _receptive_radius_hr(self, noise: bool = True) -> int:
        """Exact-bound radius (output pixels) of the W-cycle's spatial receptive field.

        Sequential steps add their radii: a step at level k adds the Downscale's (K-1)/2 grid cells of
        level k, the inner cycle, and the Upscale's (K-1)/2 + 1 cells (the +1 covers the stride-2 phase);
        BP^mu_k repeats this mu times (the same recurrence as eq. 6). The widest Analysis adds its own.
        `noise`: False for a W = 0 call, where m(X) multiplies zeros and reads nothing.
        """
        cfg = self.config
        half = (cfg.kernel_size - 1) / 2
        radius = 0.0
        for level in range(2, cfg.levels + 1):
            d = cfg.stride_to(level)
            radius = cfg.mu * (half * d + radius + (half + 1) * d)
        analysis = half * (cfg.stride_to(1) - 1)
        # m(X) reads X around each noise pixel
        mask = cfg.noise_mask.radius if cfg.noise_mask is not None and noise else 0
        return math.ceil(radius + analysis) + mask

    def _border_lr(self, noise: bool = True) -> int:
        """LR context pixels for tiling: the receptive radius in LR pixels + 2 for the bicubic taps, and the
        output projection's reach (`noise` False: for a W = 0 call, which a noise-only projection skips)."""
        projection = self.config.output_projection
        runs = projection is not None and (noise or not projection.noise_only)
        reach = projection.reach_lr(self.scale) if runs else 0
        return math.ceil(self._receptive_radius_hr(noise) / self.scale) + 2 + reach

    def _border_frames(self) -> int:
        """Temporal receptive radius in frames (same recurrence in time, grid spacing 1)."""
        cfg = self.config
        half = (cfg.temporal_kernel - 1) // 2
        radius = 0
        for _ in range(2, cfg.levels + 1):
            radius = cfg.mu * (2 * half + radius)
        return radius + half * (cfg.levels - 1)

    # ---- introspection ------------------------------------------------------------------------------------

    def tags(self) -> list[str]:
        """Tags of every Downscale/Upscale pair, in call order (a pre-order walk of the W-cycle)."""
        return [m.tag for m in self.modules() if isinstance(m, BackProjectionStep)]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_output_pixel(cfg: MGBPv2Config) -> float:
    """Multiply-accumulates per output pixel (per output voxel for 3D), borders ignored.

    Level k holds 4^-(L-k) grid points per output pixel. Each of the mu^(L-k+1) pairs between levels k and
    k-1 runs a Downscale (c_k -> c_{k-1}) and an Upscale (2 c_{k-1} + n -> c_k) with one K^2 (K^2 Kt) kernel
    per level-(k-1) point; the Analyses run once per level, Synthesis once. The bicubic is not counted.
    """
    L, K = cfg.levels, cfg.kernel_size
    kt = cfg.temporal_kernel if cfg.dims == 3 else 1
    density = {k: 4.0 ** -(L - k) for k in range(1, L + 1)}
    analysis_in = cfg.image_channels + (cfg.noise_channels if cfg.noise_features == 0 else 0)
    total = cfg.width(L) * cfg.image_channels  # Synthesis, 1x1
    for k in range(1, L + 1):
        s = cfg.stride_to(k)
        volume = ((K - 1) * (s - 1) + 1) ** 2 * (1 + (L - k) * (kt - 1))
        noise_out = cfg.noise_features if k < L else 0  # no noise analysis at the top level
        total += density[k] * volume * (analysis_in * cfg.width(k) + cfg.noise_channels * noise_out)
    for k in range(2, L + 1):
        pairs = cfg.mu ** (L - k + 1)
        down = cfg.width(k) * cfg.width(k - 1)
        up = (2 * cfg.width(k - 1) + cfg.noise_features) * cfg.width(k)
        total += pairs * density[k - 1] * K * K * kt * (down + up)
    return total


def pair_count(mu: int, levels: int) -> int:
    """Downscale/Upscale pairs of the W-cycle: mu + mu^2 + ... + mu^(L-1)."""
    return sum(mu**j for j in range(1, levels))


def config_from_dict(values: dict) -> MGBPv2Config:
    """Rebuild a config from JSON (lists become tuples); unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(MGBPv2Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown MGBPv2 config keys: {', '.join(unknown)}")
    return MGBPv2Config(**values)


__all__: Sequence[str] = (
    "BackProjection",
    "BackProjectionStep",
    "MGBPv2",
    "MGBPv2Config",
    "config_from_dict",
    "count_parameters",
    "macs_per_output_pixel",
    "pair_count",
)

