"""The contracts of `mgbp upscale --ray` (`mgbp.distributed`): what the command hands the Ray pipeline and
what it gets back. An execution detail of the paper's inference (Algorithm 1 over images, "Video Inference" of
Section IV, Fig. 6), not an equation of its own.

- `JobLike`: one output to make (source, target, kind), as `mgbp upscale` plans it;
- `ModelSpec`: the model as the command line names it, loaded once by every actor;
- `UpscaleSettings`: the per-file options (the same as `mgbp upscale`'s flags);
- `ClusterOptions`: where and how wide the pipeline runs;
- `JobResult` (one per job, with the report line of a failure: `first_line`) and `Outcome` (the counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mgbp.errors import ConfigError

GPU_BATCH_SIZE = 8  # rows per actor call on GPU workers (same-size images share a forward pass)


class JobLike(Protocol):
    """One output to make, as `mgbp upscale` plans it: kind "image", "video" (a file) or "frames" (a folder).
    Paths, or strings for URIs (`pathlib` would fold the `//` of `s3://`)."""

    source: Path | str
    target: Path | str
    kind: str


@dataclass(frozen=True)
class ModelSpec:
    """The model as the command line names it; every actor loads it once (`mgbp.inference.resolve_model`)."""

    model: str | None = None  # shipped name or weight file (None: the default for `scale`)
    scale: int | None = None
    device: str | None = None  # None: cuda where the actor has a GPU, else cpu
    dtype: str | None = None  # None, "half" or "bf16"
    video: bool = False  # prefer a shipped video model (every input is a video)
    max_gpu_memory: float | None = None  # GiB per actor

    def load(self, device: str | None = None):
        import torch

        from mgbp.inference import resolve_model

        device = device or self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.max_gpu_memory is not None and str(device).startswith("cuda"):
            index = torch.device(device).index or 0
            total = torch.cuda.get_device_properties(index).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, self.max_gpu_memory * 2**30 / total), index)
        return resolve_model(self.model, self.scale, device=device, dtype=self.dtype, video=self.video)


@dataclass(frozen=True)
class UpscaleSettings:
    """`mgbp upscale`'s per-file options (names as its flags)."""

    noise: float = 0.0
    allow_extrapolation: bool = False
    seed: int | None = 0
    tile: int | None = None
    tile_overlap: int | None = None
    consistent: bool = False
    consistent_steps: int | None = None
    self_ensemble: bool = False
    skip_existing: bool = False
    overwrite: bool = False
    to_frames: bool = False
    codec: str | None = None
    crf: int | None = 18
    pix_fmt: str = "yuv420p"
    window: int | None = None
    stride: int | None = None
    max_frames: int | None = None
    fps: float = 25.0
    quality: int | None = None  # images: `mgbp.image_files.OutputOptions`
    outscale: float | None = None
    size: tuple[int, int] | None = None
    max_memory: float | None = None  # GiB one image may need (None: the worker's available memory)
    preset: str | None = None  # videos: the encoder's
    encoder_options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args) -> UpscaleSettings:
        """From `mgbp upscale`'s parsed arguments (attributes of the same names)."""
        return cls(**{name: getattr(args, name) for name in cls.__dataclass_fields__ if hasattr(args, name)})

    def inference(self):
        """The `mgbp.inference.InferenceOptions` of images, as `mgbp upscale` makes them."""
        from mgbp.inference import InferenceOptions

        return InferenceOptions(noise=self.noise, seed=self.seed, tile=self.tile, overlap=self.tile_overlap,
                                consistent=self.consistent, consistent_steps=self.consistent_steps,
                                self_ensemble=self.self_ensemble, allow_extrapolation=self.allow_extrapolation)

    def output(self):
        """The `mgbp.image_files.OutputOptions` of images."""
        from mgbp.image_files import OutputOptions

        return OutputOptions(quality=self.quality, outscale=self.outscale, size=self.size)

    def video_options(self):
        from mgbp.video_options import VideoOptions

        return VideoOptions(codec=self.codec, crf=self.crf, pix_fmt=self.pix_fmt, window=self.window,
                            stride=self.stride, max_frames=self.max_frames, fps=self.fps, noise=self.noise,
                            allow_extrapolation=self.allow_extrapolation, seed=self.seed, tile=self.tile,
                            overlap=self.tile_overlap, consistent=self.consistent,
                            consistent_steps=self.consistent_steps, self_ensemble=self.self_ensemble,
                            progress=False, preset=self.preset,
                            encoder_options=dict(self.encoder_options), encoder_log=False)


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide: `address` "local" (start Ray here), "auto" (a running cluster), "ray://host:port"
    (Ray Client) or "host:port" (a cluster's head); `workers` actors (None: as many as the GPUs, or CPUs,
    allow), each with `gpus_per_worker` GPUs (None: 1 when the cluster has GPUs, else 0; fractions share a
    GPU); `batch_size` rows per actor call (None: 1 on CPU, GPU_BATCH_SIZE on GPU); videos cut into segments
    of about `segment_frames` frames."""

    address: str = "local"
    workers: int | None = None
    gpus_per_worker: float | None = None
    batch_size: int | None = None
    segment_frames: int = 600

    @classmethod
    def from_args(cls, args) -> ClusterOptions:
        values = {"address": args.ray or "local", "workers": args.ray_workers,
                  "gpus_per_worker": args.ray_gpus_per_worker, "batch_size": args.ray_batch_size}
        if args.ray_segment_frames is not None:
            values["segment_frames"] = args.ray_segment_frames
        return cls(**values)

    def check(self) -> None:
        for name, value, low in (("--ray-workers", self.workers, 1), ("--ray-batch-size", self.batch_size, 1),
                                 ("--ray-segment-frames", self.segment_frames, 1)):
            if value is not None and value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if self.gpus_per_worker is not None and not 0 <= self.gpus_per_worker:
            raise ConfigError(f"--ray-gpus-per-worker must be >= 0, got {self.gpus_per_worker}")


@dataclass(frozen=True)
class JobResult:
    source: str
    target: str
    status: str  # "written", "skipped" or "failed"
    message: str = ""  # the report line of a failure
    worker: int | None = None  # process id of the actor that wrote it (None: this process)


@dataclass
class Outcome:
    written: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)


def first_line(exc: BaseException) -> str:
    """An error as a report line names it: its message's first line (its type's name when it has none)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
