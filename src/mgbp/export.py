"""ONNX export of MGBPv2 generators: Algorithm 1 as one graph with dynamic batch, height and width.

The whole of Algorithm 1 is in the graph: the MATLAB bicubic upscale X of the input (`mgbp.resize`'s polyphase
convolution, size-independent), line 1's x = [X, W N(0,1)], the reflection padding to the nearest size the
grid hierarchy divides ("valid" padding, see `mgbp.models.mgbpv2`), the Analysis / W-cycle / Synthesis of lines
2-9 (`MGBPv2.network`), the crop back to f h x f w and a clamp to [0, 1]. What makes it exportable with
dynamic sizes is that nothing depends on the size through Python arithmetic the tracer cannot see: the bicubic
has no size-dependent tables, and the padding here is written with integer `%` and `//` on the traced size
(the model's own `valid_size` uses `math.ceil` and `max`, which a tracer turns into constants).

Two forms:
- full (default): inputs `image` (N, 3, H, W) RGB in [0, 1], `noise_amp` (N,) the amplitude W of each image,
  and `noise` (N, 1, f H, f W) the standard-normal map N(0,1) of line 1, given by the caller (so a run is
  reproducible and the export is checked exactly against torch at any W); output `output` (N, 3, f H, f W).
- image-only (`image_only=True`): the one input `image`, W fixed at export time, the noise map drawn inside
  the graph (ONNX RandomNormalLike) when W > 0: the form one-input tools such as chaiNNer load.

The exporter is PyTorch's TorchScript-based one by default (`exporter="torchscript"`): it records the size
arithmetic as graph ops, exports in seconds and writes any opset from 13 to 20 (17 by default, which older
ONNX Runtime and TensorRT builds read). `exporter="dynamo"` uses `torch.export` (opsets 18-23): the same graph
and results, but about a minute even for a tiny network on the 2-core dev machine.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mgbp.atomic import atomic_path
from mgbp.errors import ConfigError, MgbpError
from mgbp.resize import imresize

EXPORTERS = {"torchscript": (13, 20), "dynamo": (18, 23)}  # exporter -> opsets it writes (lowest, highest)
DEFAULT_OPSET = 17
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}  # ONNX Runtime against torch float32, after the clamp
CHECK_SEED = 0


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What `export_onnx` writes. `static_size` is the LR (height, width) of a fixed-size model (None:
    dynamic); `noise_amp` is the W an image-only model bakes in."""

    opset: int = DEFAULT_OPSET
    half: bool = False
    static_size: tuple[int, int] | None = None
    image_only: bool = False
    noise_amp: float = 0.0
    exporter: str = "torchscript"

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.half else torch.float32


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What was written: the file, the graph's inputs, the smallest LR side it takes, and the ONNX Runtime
    check (None when not run): the largest |ONNX - torch| at `checked_shape`."""

    path: Path
    scale: int
    inputs: tuple[str, ...]
    min_side: int
    max_difference: float | None = None
    checked_shape: tuple[int, ...] | None = None
    check_note: str = ""


# ------------------------------------------------------------------------------------------------ geometry


def padding_geometry(config) -> tuple[int, int]:
    """(base, step) of the valid sizes of an MGBPv2 config: the sizes n = base + step m (m >= 0).

    'valid': step = 2^(L-1), base = (K-1)(step-1)+1 (one pixel on the lowest grid, `MGBPv2.valid_size`);
    'same': multiples of step (base 0)."""
    step = 2 ** (config.levels - 1)
    base = (config.kernel_size - 1) * (step - 1) + 1 if config.padding == "valid" else 0
    return base, step


def valid_padding(length, base: int, step: int):
    """(before, after) reflection padding that takes `length` >= base to the next valid size, larger half
    first (as `MGBPv2._axis_padding` for a whole image). Integer `%` and `//` only, so `length` may be an int,
    a traced size or a symbolic size and the result follows it."""
    extra = (base - length) % step
    return extra - extra // 2, extra // 2


def smallest_side(model) -> int:
    """The smallest LR side the exported graph takes: f h must reach one valid size (so the padding is at
    most step - 1 pixels), and exceed the larger half of that padding, so reflection (which needs padding <
    length) always applies."""
    base, step = padding_geometry(model.config)
    return max(1, math.ceil(base / model.scale), math.ceil((step // 2 + 1) / model.scale))


# ------------------------------------------------------------------------------------------------ modules


class OnnxGenerator(nn.Module):
    """forward(image, noise_amp, noise) -> output: `MGBPv2.forward` for a whole image, clamped to [0, 1], with
    the padding in traceable ops."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.base, self.step = padding_geometry(model.config)

    def forward(self, image: torch.Tensor, noise_amp: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        X = imresize(image, scale=self.model.scale)  # the polyphase bicubic: no size-dependent tables
        if noise is None:
            return self.network_output(image, X, X, 0.0)
        scaled = noise_amp.reshape(-1, 1, 1, 1).to(X.dtype) * noise  # line 1: x = [X, W N(0,1)]
        return self.network_output(image, X, torch.cat([X, self.model.shape_noise(X, scaled)], dim=1), noise_amp)

    def network_output(self, image: torch.Tensor, X: torch.Tensor, x: torch.Tensor, noise_amp) -> torch.Tensor:
        """The network on x (X with its noise channels, or X alone), padded and cropped to X's size, projected
        onto `image` when the config asks (`MGBPv2.project`, W = `noise_amp`), clamped."""
        height, width = X.shape[-2], X.shape[-1]
        top, bottom = valid_padding(height, self.base, self.step)
        left, right = valid_padding(width, self.base, self.step)
        x = F.pad(x, (left, right, top, bottom), mode="reflect")
        Y = self.model.network(x)[..., top : top + height, left : left + width]
        return self.model.project(image, Y, noise_amp).clamp(0.0, 1.0)


class OnnxImageOnlyGenerator(OnnxGenerator):
    """forward(image) -> output with W fixed; the noise map is drawn in the graph when W > 0."""

    def __init__(self, model: nn.Module, noise_amp: float = 0.0):
        super().__init__(model)
        self.noise_amp = float(noise_amp)
        self.with_noise = model.noise_channels > 0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not self.with_noise:
            return super().forward(image)
        f = self.model.scale
        if self.noise_amp == 0.0:  # W = 0: a zero map, no random op (deterministic) and no noise mask in the graph
            X = imresize(image, scale=f)
            return self.network_output(image, X, torch.cat([X, X.new_zeros(X.shape[0], self.model.noise_channels,
                                                                           *X.shape[2:])], dim=1), 0.0)
        noise = torch.randn_like(F.interpolate(image[:, :1], scale_factor=f, mode="nearest"))
        amp = torch.full_like(image[:, 0, 0, 0], self.noise_amp)
        return super().forward(image, amp, noise)


# ------------------------------------------------------------------------------------------------ checks


def check_exportable(model: nn.Module) -> None:
    """Only image MGBPv2 models export (their graph has no data-dependent control flow)."""
    family = model.family
    if family != "mgbpv2" or not hasattr(model, "network"):
        raise ConfigError(f"ONNX export supports image MGBPv2 models; this one is {family} "
                          "(MGBP-3D video and MGBPv1 models are not exported)")


def check_options(options: ExportOptions, model: nn.Module) -> None:
    """One-line errors for options that cannot be honoured, before any work."""
    if options.exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {', '.join(EXPORTERS)}, got {options.exporter!r}")
    low, high = EXPORTERS[options.exporter]
    if not low <= int(options.opset) <= high:
        raise ConfigError(f"--opset {options.opset}: the {options.exporter} exporter writes opsets {low} to {high}")
    if not (math.isfinite(options.noise_amp) and options.noise_amp >= 0):
        raise ConfigError(f"-W must be a finite number >= 0, got {options.noise_amp}")
    if options.noise_amp != 0 and not options.image_only:
        raise ConfigError("-W sets the noise amplitude of an --image-only model; the full model takes W as its "
                          "`noise_amp` input")
    if options.static_size is not None:
        smallest = smallest_side(model)
        if min(options.static_size) < smallest:
            h, w = options.static_size
            raise ConfigError(f"--static {h}x{w}: this x{model.scale} model needs at least {smallest} pixels "
                              "per side")


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' (e.g. '270x480') -> (270, 480)."""
    parts = str(text).lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"size must be HEIGHTxWIDTH in pixels, e.g. 270x480, got {text!r}") from None
    if min(height, width) < 1:
        raise ConfigError(f"size must be positive, got {text!r}")
    return height, width


def require_onnx():
    """The `onnx` package (for the graph's metadata and checks), or a one-line error saying how to get it."""
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'mgbp[onnx]'") from None
    return onnx


# ------------------------------------------------------------------------------------------------ export


def input_names(model: nn.Module, options: ExportOptions) -> tuple[str, ...]:
    if options.image_only or model.noise_channels == 0:
        return ("image",)
    return ("image", "noise_amp", "noise")


def example_inputs(model: nn.Module, names, size: tuple[int, int], batch: int = 1, noise_amp: float = 1.0,
                   dtype: torch.dtype = torch.float32, seed: int = CHECK_SEED) -> tuple[torch.Tensor, ...]:
    """Seeded inputs for `names` at LR `size`: an image in [0, 1], W = `noise_amp`, a standard-normal map."""
    generator = torch.Generator().manual_seed(seed)
    h, w = size
    f = model.scale
    values = {
        "image": torch.rand(batch, 3, h, w, generator=generator),
        "noise_amp": torch.full((batch,), float(noise_amp)),
        "noise": torch.randn(batch, model.noise_channels, f * h, f * w, generator=generator),
    }
    return tuple(values[name].to(dtype) for name in names)


def _wrapper(model: nn.Module, options: ExportOptions) -> nn.Module:
    """The exported module, on CPU in the export precision (the caller's model is not changed)."""
    model = copy.deepcopy(model).to(device="cpu", dtype=options.dtype).eval()
    if options.image_only or model.noise_channels == 0:
        return OnnxImageOnlyGenerator(model, options.noise_amp)
    return OnnxGenerator(model)


def _dynamic_axes(names, scale: int) -> dict:
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "noise_amp": {0: "batch"},
            "noise": {0: "batch", 2: f"height_x{scale}", 3: f"width_x{scale}"},
            "output": {0: "batch", 2: f"height_x{scale}", 3: f"width_x{scale}"}}
    return {name: axes[name] for name in (*names, "output")}


def _dynamic_shapes(names, scale: int, min_side: int) -> dict:
    from torch.export import Dim

    batch = Dim("batch", min=1, max=4096)
    height, width = Dim("height", min=min_side, max=65536), Dim("width", min=min_side, max=65536)
    shapes = {"image": {0: batch, 2: height, 3: width}, "noise_amp": {0: batch},
              "noise": {0: batch, 2: scale * height, 3: scale * width}}
    return {name: shapes[name] for name in names}


def _trace_to_file(module: nn.Module, args, names, path: Path, options: ExportOptions, scale: int,
                   min_side: int) -> None:
    dynamic = options.static_size is None
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter's deprecation notice and its tracer's notes on constant checks
        warnings.simplefilter("ignore")
        try:
            _export_with(module, args, names, path, options, scale, min_side, dynamic)
        except (RuntimeError, ValueError) as exc:  # inside PyTorch's exporter: one line, nothing written
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise MgbpError(f"the {options.exporter} exporter failed: {first.strip()[:300]}") from None


def _export_with(module, args, names, path: Path, options: ExportOptions, scale: int, min_side: int,
                 dynamic: bool) -> None:
    if options.exporter == "torchscript":
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=int(options.opset),
                          input_names=list(names), output_names=["output"],
                          dynamic_axes=_dynamic_axes(names, scale) if dynamic else None)
    else:
        torch.onnx.export(module, args, str(path), dynamo=True, opset_version=int(options.opset),
                          input_names=list(names), output_names=["output"], verbose=False,
                          dynamic_shapes=_dynamic_shapes(names, scale, min_side) if dynamic else None)


def _describe(path: Path, model: nn.Module, names, options: ExportOptions, min_side: int, label: str) -> None:
    """Fix the output's channel count in the graph (shape inference leaves it symbolic after the clamp),
    record what the graph is in its metadata, and check it with onnx's checker."""
    onnx = require_onnx()
    graph_model = onnx.load(str(path))
    graph_model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 3
    f = model.scale
    noise = ("W = 0" if options.noise_amp == 0 else f"W = {options.noise_amp:g}, noise drawn in the graph"
             ) if len(names) == 1 else "noise_amp (N,) = W, noise (N,1,fH,fW) = N(0,1) map"
    props = {
        "mgbp_model": label, "scale": str(f), "inputs": ", ".join(names), "noise": noise,
        "image": "RGB, NCHW, values in [0, 1]; output clamped to [0, 1]",
        "min_input_side": str(min_side),
        "precision": "float16" if options.half else "float32",
    }
    del graph_model.metadata_props[:]
    for key, value in props.items():
        graph_model.metadata_props.add(key=key, value=value)
    graph_model.doc_string = f"mgbp {label}: MGBPv2 x{f} super-resolution (Algorithm 1)"
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(path))


def export_onnx(model: nn.Module, path, options: ExportOptions = ExportOptions(), label: str = "model",
                check: bool = True) -> ExportReport:
    """Write `model` (an image MGBPv2) as an ONNX graph at `path` (atomically: nothing appears under that name
    unless the export and, with `check`, the ONNX Runtime comparison succeed).

    The check runs the file in ONNX Runtime at one odd size (the static size, if any) at W = 1 with a given
    noise map (W = 0 for an image-only model; W > 0 there draws its own noise, so only shape and range are
    checked) and compares it with the torch model in float32; it is skipped, with a note, when onnxruntime is
    not installed."""
    check_exportable(model)
    check_options(options, model)
    require_onnx()
    names = input_names(model, options)
    min_side = smallest_side(model)
    size = options.static_size or (min_side + 6, min_side + 3)  # odd and unequal: both paddings exercised
    module = _wrapper(model, options)
    # torch.export specialises a dimension whose example is 1, so a dynamic batch is traced with 2 images
    batch = 2 if options.exporter == "dynamo" and options.static_size is None else 1
    args = example_inputs(model, names, size, batch=batch, noise_amp=1.0, dtype=options.dtype)
    report = ExportReport(Path(path), int(model.scale), names, min_side)
    with atomic_path(path) as temporary:
        _trace_to_file(module, args, names, temporary, options, int(model.scale), min_side)
        _describe(temporary, model, names, options, min_side, label)
        if check:
            report = compare_with_torch(temporary, model, options, size, report)
    return report


# ------------------------------------------------------------------------------------------------ check


def onnx_session(path):
    """An ONNX Runtime CPU session for `path` (onnxruntime is the optional extra `mgbp[onnx]`)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no notes about the graph on stderr
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return session.run(["output"], inputs)[0]


def compare_with_torch(path, model: nn.Module, options: ExportOptions, size: tuple[int, int],
                       report: ExportReport) -> ExportReport:
    """Run the file in ONNX Runtime and the float32 torch model on the same inputs (see `export_onnx`)."""
    try:
        session = onnx_session(path)
    except ImportError:
        return dataclasses.replace(report, check_note="not checked: onnxruntime is not installed "
                                                      "(pip install 'mgbp[onnx]')")
    names = report.inputs
    noise_amp = 1.0 if len(names) == 3 else options.noise_amp
    args = example_inputs(model, names, size, noise_amp=noise_amp)
    feeds = {name: value.to(options.dtype).numpy() for name, value in zip(names, args)}
    output = run_onnx(session, feeds).astype(np.float32)
    shape = (1, 3, model.scale * size[0], model.scale * size[1])
    if output.shape != shape or not np.all(np.isfinite(output)):
        raise MgbpError(f"the exported graph returned shape {output.shape} (expected {shape}) or non-finite "
                        "values in ONNX Runtime; nothing written")
    if len(names) == 1 and options.noise_amp > 0:  # the graph draws its own noise: shape and range only
        note = f"ONNX Runtime ran it at {'x'.join(map(str, args[0].shape))} (W = {options.noise_amp:g}, own noise)"
        return dataclasses.replace(report, checked_shape=tuple(args[0].shape), check_note=note)
    reference = reference_output(model, args, names)
    difference = float(np.abs(output - reference).max())
    tolerance = TOLERANCE[options.dtype]
    if not difference <= tolerance:
        raise MgbpError(f"the exported graph differs from torch by {difference:.3g} (> {tolerance:g}) in ONNX "
                        "Runtime; nothing written")
    where = "x".join(map(str, args[0].shape))
    note = f"ONNX Runtime matches torch to {difference:.2g} at {where} (W = {noise_amp:g}"
    note += ", the same noise map)" if len(names) == 3 else ")"
    return dataclasses.replace(report, max_difference=difference, checked_shape=tuple(args[0].shape),
                               check_note=note)


def reference_output(model: nn.Module, args, names) -> np.ndarray:
    """The torch model's float32 output on CPU for the same inputs, clamped as the graph clamps."""
    model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    values = dict(zip(names, (a.float() for a in args)))
    with torch.no_grad():
        if "noise" in values:
            out = model(values["image"], noise_amp=values["noise_amp"], noise=values["noise"])
        else:
            out = model(values["image"], noise_amp=0.0)
    return out.clamp(0.0, 1.0).numpy()
