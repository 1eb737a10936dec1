"""Back-projection of the generator's output onto its input (paper eqs. 4-5), as the network's last layer.

The prior behind MGBP (Section II, eq. 1; Section III-A, eq. 3) is S_f(Y) = x: the output, downscaled by the
degradation that made the input (MATLAB bicubic), gives the input back. `mgbp.backprojection` enforces it
after the fact (`mgbp upscale --consistent`). Here a fixed number of its iterations become part of the model,

    Y_0 = clamp(Y, 0, 1),    Y_{k+1} = Y_k + step * P(x - S_f(Y_k)),    k = 0 .. steps - 1,

with P the bicubic upscale by f and `step` the back-projection's 1.6, so that every path that runs the model
(tiles, video windows, the web app, ONNX, training) gives the projected output. The first clamp is what a saved
image keeps, so one step equals `back_project(lr, clamp(Y), f, steps=1)` before its final clip (the output
is clipped when saved). It is local: S_f reads 2f - 1 output pixels either side of an LR pixel's centre and P
2 LR pixels, so a change of one output pixel (a tile's mirrored edge) moves the step's result up to 3.5 LR pixels
away (f = 4); a tile gets `OutputProjection.reach_lr` = 4 more LR pixels of context per step.

`noise_only`: the step runs only for samples whose noise amplitude W is not 0. A fidelity generator's output is
nearly consistent already, while the noise at W > 0 also moves the low frequencies, which the step takes back;
with `noise_only` the W = 0 call costs nothing more.

Works in float32 (float64 for float64 outputs), also under autocast: the mismatch x - S_f(Y) is a small
difference of large sums, which bf16 or fp16 would round away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import torch

from mgbp.backprojection import projection_step
from mgbp.errors import ConfigError
from mgbp.models.config_sections import section_from_any, with_section
from mgbp.resize import PHASE_PAD, downscale_taps


@dataclasses.dataclass(frozen=True)
class OutputProjection:
    """How many back-projection steps end the network, and whether only at W > 0."""

    steps: int = 1
    noise_only: bool = False

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"output_projection steps must be a whole number >= 1, got {self.steps!r}")
        if not isinstance(self.noise_only, bool):
            raise ConfigError(f"output_projection noise_only must be true or false, got {self.noise_only!r}")

    @classmethod
    def from_any(cls, value) -> OutputProjection | None:
        """None, an OutputProjection, or its dict (as stored in a weight file's config) -> one or None."""
        return section_from_any(cls, value, "output_projection")

    def reach_lr(self, scale: int) -> int:
        """LR pixels of context the projection adds to a tile's border."""
        return self.steps * (math.ceil(-downscale_taps(int(scale))[0] / scale) + PHASE_PAD)


def _full_precision(device_type: str):
    """Autocast off inside (only entered when it is on: a plain trace sees no context)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def project_output(lr: torch.Tensor, output: torch.Tensor, scale: int, steps: int,
                   active: torch.Tensor | None = None) -> torch.Tensor:
    """`steps` back-projection steps of `output` (N,C,f h,f w) onto `lr` (N,C,h,w), from the clamped output.

    `active`: an (N,) bool/0-1 tensor; samples where it is 0 are returned as they came (not even clamped).
    """
    dtype = torch.float64 if output.dtype == torch.float64 else torch.float32
    with _full_precision(output.device.type):
        x, y = lr.to(dtype), output.to(dtype).clamp(0.0, 1.0)
        for _ in range(steps):
            y = projection_step(x, y, scale)  # mgbp.backprojection: the iteration `back_project` runs
        if active is not None:
            keep = active.to(dtype).reshape(-1, *([1] * (y.dim() - 1)))
            y = keep * y + (1 - keep) * output.to(dtype)
    return y.to(output.dtype)


def with_output_projection(model, projection: OutputProjection | None):
    """An image MGBPv2 with the same weights under a config whose `output_projection` is `projection` (None:
    removed)."""
    return with_section(model, "output_projection", projection)
