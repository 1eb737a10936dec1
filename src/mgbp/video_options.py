"""The options of one streaming video pass (`mgbp.video.upscale_video`, the paper's "Video Inference", Sec. IV).

One dataclass, shared by the temporal windows (`mgbp.video_windows`: window length, stride, the noise amplitude W
and its seed, spatial tiles, self-ensemble, back-projection), the encoder (`mgbp.video`: codec, CRF, preset,
encoder options) and the callers that fill it (`mgbp upscale`, `mgbp serve`, the Ray pipeline). It lives apart
so that the windows and the encoder can each import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VideoOptions:
    codec: str | None = None
    crf: int | None = 18
    pix_fmt: str = "yuv420p"
    window: int | None = None
    stride: int | None = None  # None: default_stride
    max_frames: int | None = None
    fps: float = 25.0  # for frame-folder inputs
    noise: float = 0.0  # W, in [0, 1] unless allow_extrapolation (`mgbp.inference.check_noise_amplitude`)
    allow_extrapolation: bool = False
    seed: int | None = None  # seeds the noise of the whole video (None: torch's RNG)
    tile: int | None = None
    overlap: int | None = None
    consistent: bool = False
    consistent_steps: int | None = None  # this many back-projection iterations (None: until converged)
    self_ensemble: bool = False  # mean over the 8 flips/rotations of each window (W = 0 only)
    progress: bool = True
    preset: str | None = None  # the encoder's speed/size preset (libx264/x265 "slow", NVENC "p7", ...)
    encoder_options: dict[str, str] = field(default_factory=dict)  # passed to the encoder as they are
    encoder_log: bool = True  # False: encoders that print on their own (x265, SVT-AV1) print errors only

