"""`mgbp upscale` on a Ray cluster: the generator's forward pass (Algorithm 1, tiled exactly by `mgbp.inference`)
over archives of images and long videos (the paper's "Video Inference", Section IV, Fig. 6), on many machines.

A Ray Data pipeline (https://docs.ray.io/en/latest/data/) does the work; this process plans it and reports:

    jobs (source, target) --from_items--> read (Ray tasks: the file's bytes, from any filesystem pyarrow
    understands) --> upscale (an actor pool: each actor loads the model once, from the same spec as the
    command; same-size images of a batch go through the network together at W = 0; outputs are written by the
    actor, atomically) --> one result row per job --> the same report and summary as one process.

Images come out byte-identical to `mgbp upscale` without `--ray` on the same kind of device (same reader,
tiling, rounding and writer; on CPU each tile's forward pass is the same computation whatever the batch).
Long videos are cut at keyframes into time segments (`mgbp.video_segments`) that run as rows of the same
pipeline; each segment reads the context frames its windows need, so the joined frames equal the single pass;
this process then joins each video's segments (packets copied, not re-encoded) with the source's audio.

Faults: Ray Data restarts an actor whose process dies and retries its tasks (its defaults for actor pools:
`max_restarts=-1`, `max_task_retries=-1`). Every output is written under a temporary name and renamed, so a
retried job never leaves a half-written file; temporaries of killed attempts are swept at the end. A rerun with
`skip_existing` finishes an interrupted job: finished images are skipped, finished video segments reused.

Inputs and outputs: local paths (on a cluster: a filesystem every node mounts, e.g. NFS) or, for images, URIs
such as `s3://bucket/key` or `gs://...` that pyarrow.fs opens when the library and credentials are present on
every node. Videos and frame folders need paths (PyAV opens files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from mgbp.errors import ConfigError, MgbpError
from mgbp.stderr import native_stderr_silenced

READ_CPUS = 0.25  # logical CPUs a read task reserves: reading is I/O, and must fit beside a full actor pool
GPU_BATCH_SIZE = 8  # rows per actor call on GPU workers (same-size images share a forward pass)
MAX_BLOCKS = 10_000  # at most this many blocks of job rows (a few rows each for millions of jobs)
CONNECT_TIMEOUT_S = 5.0


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
                                consistent=self.consistent, self_ensemble=self.self_ensemble,
                                allow_extrapolation=self.allow_extrapolation)

    def output(self):
        """The `mgbp.image_files.OutputOptions` of images."""
        from mgbp.image_files import OutputOptions

        return OutputOptions(quality=self.quality, outscale=self.outscale, size=self.size)

    def video_options(self):
        from mgbp.video import VideoOptions

        return VideoOptions(codec=self.codec, crf=self.crf, pix_fmt=self.pix_fmt, window=self.window,
                            stride=self.stride, max_frames=self.max_frames, fps=self.fps, noise=self.noise,
                            allow_extrapolation=self.allow_extrapolation, seed=self.seed, tile=self.tile,
                            overlap=self.tile_overlap, consistent=self.consistent,
                            self_ensemble=self.self_ensemble, progress=False, preset=self.preset,
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


# ------------------------------------------------------------------------------------------------ connecting


def import_ray():
    """Ray and Ray Data, or a one-line MgbpError naming the extra to install."""
    try:
        import ray
        import ray.data  # the pipeline half of the extra
    except ImportError as exc:
        raise MgbpError(f"--ray needs Ray Data: pip install 'mgbp[ray]' ({exc})") from None
    return ray


def connect(address: str = "local") -> bool:
    """Join (or start, for "local") a Ray cluster, or raise a one-line MgbpError before any work. Returns True
    when this call started Ray (the caller may `ray.shutdown()`); a process already connected (a notebook, a
    test session) keeps its connection."""
    ray = import_ray()
    address = (address or "local").strip()
    if address not in ("local", "auto"):
        _check_reachable(address)
    _quiet_ray_data()
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    # Ray's C++ core logs at "error" level a caveat of every Ray Data actor pool (constructor arguments kept in
    # the object store), which is not an error of ours; RAY_BACKEND_LOG_LEVEL=info brings its logs back.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        if address == "local":
            with native_stderr_silenced():  # the core's start-up chatter (errors still raise, see below)
                ray.init(**quiet)
        elif address.startswith("ray://"):
            _import_ray_client()
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        hint = " (start one with `ray start --head`, or use --ray local)" if address == "auto" else ""
        raise MgbpError(f"cannot connect to the Ray cluster at {address!r}: {_first_line(exc)}{hint}") from None
    return True


def _check_reachable(address: str) -> None:
    """A TCP connection to host:port, so that a wrong address fails in seconds, with one line."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray: expected local, auto, ray://HOST:PORT or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise MgbpError(f"cannot reach the Ray cluster at {address} ({_first_line(exc)})") from None


def _import_ray_client() -> None:
    try:
        import grpc  # noqa: F401 - Ray Client speaks gRPC
    except ImportError:
        raise MgbpError("ray:// addresses need Ray Client: pip install 'ray[client]' (or run on the cluster "
                        "with --ray auto)") from None


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or execution logs on the terminal: the command shows its own progress."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its log file in the session folder keeps all


# ------------------------------------------------------------------------------------------------ the command


def run_jobs(jobs: Iterable[JobLike], spec: ModelSpec, settings: UpscaleSettings,
             cluster: ClusterOptions = ClusterOptions(), report: Callable[[str], None] | None = None,
             progress: bool = False, model=None) -> Outcome:
    """Run `mgbp upscale`'s jobs on the cluster: the counts and failure lines of the single-process loop
    (`report` gets each failure line as it happens). `model`: the driver's copy, for planning video windows
    (None: loaded on the CPU here)."""
    jobs = list(jobs)
    outcome = Outcome()
    bar = _file_bar(len(jobs), progress)
    for result in iter_results(jobs, spec, settings, cluster, model=model):
        if result.status == "written":
            outcome.written += 1
        elif result.status == "skipped":
            outcome.skipped += 1
        else:
            outcome.failures.append(result.message)
            if report is not None:
                report(result.message)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return outcome


def iter_results(jobs: Iterable[JobLike], spec: ModelSpec, settings: UpscaleSettings,
                 cluster: ClusterOptions = ClusterOptions(), model=None) -> Iterator[JobResult]:
    """One JobResult per job, as jobs finish (images as soon as written; a video once its segments are
    joined). Connects to `cluster.address` if this process is not connected yet."""
    cluster.check()
    connect(cluster.address)
    jobs = list(jobs)
    if spec.model is not None and os.path.isfile(spec.model):
        spec = replace(spec, model=os.path.abspath(spec.model))
    if model is None and any(job.kind != "image" for job in jobs):
        model = spec.load(device="cpu")
    plan = _plan(jobs, model, settings, cluster)
    yield from plan.early
    videos = dict(plan.videos)
    for number in [n for n, video in videos.items() if not video.pending]:
        yield _finish_video(videos.pop(number))  # every segment done by an earlier run
    if plan.rows:
        for row in _execute(plan.rows, spec, settings, cluster):
            number, error, worker = int(row["number"]), str(row["error"]), int(row["worker"])
            job = jobs[number]
            if row["kind"] != "segment":
                yield _result(job, error, worker)
                continue
            video = videos.get(number)
            if video is None:  # already failed by another of its segments
                continue
            if error:
                del videos[number]
                yield _result(job, error, worker)
                continue
            video.pending.discard(int(row["segment"]))
            if not video.pending:
                yield _finish_video(videos.pop(number))
    for video in videos.values():  # cannot happen unless a row went missing
        yield _result(video.job, f"{len(video.pending)} segment(s) never came back", None)
    _sweep_temporaries(job.target for job in jobs if job.kind == "image")


def _result(job: JobLike, error: str, worker: int | None) -> JobResult:
    """The job's result; a failure's line names its files as the job does (workers saw absolute paths)."""
    status = "failed" if error else "written"
    for path in (job.source, job.target):
        error = error.replace(_absolute(path), str(path))
    message = f"{job.source}: {error}" if error else ""
    return JobResult(str(job.source), str(job.target), status, message, worker)


def _file_bar(total: int, progress: bool):
    if not progress or total < 2:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="files", unit="file")


# ------------------------------------------------------------------------------------------------ planning


@dataclass
class _Video:
    """A video cut into segments: its job, its part files, the segments still to come."""

    job: JobLike
    folder: Path  # hidden, beside the target: the parts, kept until the join (a rerun reuses them)
    parts: list[Path]
    to_folder: bool
    cut: float | None  # seconds where --max-frames cuts the audio
    pending: set[int]


@dataclass
class _Plan:
    rows: list[dict]
    early: list[JobResult]  # skipped, and failed before any work (existing outputs, unreadable videos)
    videos: dict[int, _Video]


def _plan(jobs: list[JobLike], model, settings: UpscaleSettings, cluster: ClusterOptions) -> _Plan:
    plan = _Plan([], [], {})
    for number, job in enumerate(jobs):
        if _exists(job.target) and not settings.overwrite:
            if settings.skip_existing:
                plan.early.append(JobResult(str(job.source), str(job.target), "skipped"))
            else:
                message = f"{job.target}: output exists (use --overwrite or --skip-existing)"
                plan.early.append(JobResult(str(job.source), str(job.target), "failed", message))
            continue
        if job.kind == "image":
            plan.rows.append(_row(number, "image", job))
            continue
        try:
            _plan_video(number, job, model, settings, cluster, plan)
        except (MgbpError, OSError) as exc:
            plan.early.append(_result(job, _first_line(exc), None))
    return plan


def _row(number: int, kind: str, job: JobLike, segment: int = -1, task: bytes = b"") -> dict:
    """A job as the workers see it: local paths made absolute (a worker's folder is not this one's)."""
    return {"number": number, "kind": kind, "source": _absolute(job.source), "target": _absolute(job.target),
            "segment": segment, "task": task}


def _absolute(path) -> str:
    return str(path) if _is_uri(str(path)) else os.path.abspath(path)


def _plan_video(number: int, job: JobLike, model, settings: UpscaleSettings, cluster: ClusterOptions,
                plan: _Plan) -> None:
    """A short (or unsplittable) video is one row, run whole by `mgbp.video.upscale_video`; a long one is one
    row per segment not done yet, its parts in a hidden folder beside the target."""
    from mgbp import video_segments as segments
    from mgbp.video import _format_for, check_frames_target

    options = settings.video_options()
    source, target = Path(job.source), Path(job.target)
    to_folder = settings.to_frames or not target.suffix
    if to_folder:
        check_frames_target(source, target)
    probe = segments.probe_video(source, options)
    geometry = segments.geometry_for(model, options, probe)
    cuts = segments.plan_segments(geometry, list(probe.keyframes), cluster.segment_frames) \
        if probe.splittable else []
    if len(cuts) < 2:
        plan.rows.append(_row(number, "video", job))
        return
    folder = target.parent / f".{target.name}.parts-{_fingerprint(job, model, settings, geometry, cuts)}"
    parts = [folder / (f"seg-{cut.number:05d}" + ("" if to_folder else target.suffix)) for cut in cuts]
    pending = {cut.number for cut, part in zip(cuts, parts) if not part.exists()}
    cut_at = None if to_folder else segments.end_time(source, probe, options)
    plan.videos[number] = _Video(job, folder, parts, to_folder, cut_at, set(pending))
    folder.mkdir(parents=True, exist_ok=True)
    for cut, part in zip(cuts, parts):
        if cut.number in pending:
            pts = None if probe.pts is None else probe.pts[cut.seek_frame:cut.read_to]
            task = segments.SegmentJob(_absolute(source), _absolute(part), to_folder, _format_for(target), geometry, cut,
                                       pts, cut.seek_frame)
            plan.rows.append(_row(number, "segment", job, cut.number, pickle.dumps(task)))


def _fingerprint(job: JobLike, model, settings: UpscaleSettings, geometry, cuts) -> str:
    """Names the parts folder after everything the parts depend on, so a rerun reuses only matching parts."""
    source = Path(job.source).resolve()
    stat = source.stat()
    weights = {name: (tuple(t.shape), float(t.double().sum())) for name, t in model.state_dict().items()}
    pixels = {k: v for k, v in asdict(settings).items() if k not in ("skip_existing", "overwrite")}
    described = json.dumps([str(source), stat.st_size, stat.st_mtime_ns, str(job.target), pixels,
                            repr(weights), repr(geometry), [(c.first, c.end) for c in cuts]], default=str)
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def _finish_video(video: _Video) -> JobResult:
    """Join a video's parts into its target (this process: packets are copied, nothing is decoded)."""
    from mgbp import video_segments as segments

    job = video.job
    try:
        if video.to_folder:
            segments.join_frame_folders(video.parts, Path(job.source), Path(job.target))
        else:
            segments.join_video_files(video.parts, Path(job.source), Path(job.target), video.cut)
    except (MgbpError, OSError) as exc:
        return _result(job, _first_line(exc), None)
    segments.remove_parts(video.folder)
    return _result(job, "", None)


# ------------------------------------------------------------------------------------------------ executing


def _execute(rows: list[dict], spec: ModelSpec, settings: UpscaleSettings,
             cluster: ClusterOptions) -> Iterator[dict]:
    """The Ray Data pipeline over the job rows; yields the result rows as they come."""
    ray = import_ray()
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), MAX_BLOCKS)))
    dataset = dataset.map_batches(read_sources, batch_size=1, num_cpus=READ_CPUS)
    yield from _upscale_rows(dataset, spec, settings, cluster).iter_rows()


def _upscale_rows(dataset, spec: ModelSpec, settings: UpscaleSettings, cluster: ClusterOptions):
    """The actor pool stage: `cluster.workers` actors (None: what the cluster's GPUs or CPUs allow), each with
    `gpus_per_worker` GPUs and the CPUs left once a read task has its share."""
    ray = import_ray()
    resources = ray.cluster_resources()
    gpus = cluster.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    workers = cluster.workers or _default_workers(resources, gpus)
    actor_cpus = max(0.05, min(1.0, (resources.get("CPU", 1.0) - READ_CPUS) / workers))
    # as many actors as asked for; else from one up to what the cluster holds now (an autoscaler may add more)
    pool = ray.data.ActorPoolStrategy(size=workers) if cluster.workers else \
        ray.data.ActorPoolStrategy(min_size=1, max_size=workers)
    return dataset.map_batches(
        Upscaler, fn_constructor_kwargs={"spec": spec, "settings": settings},
        batch_size=cluster.batch_size or (GPU_BATCH_SIZE if gpus > 0 else 1),
        compute=pool, num_cpus=actor_cpus, num_gpus=gpus or None)


def _default_workers(resources: dict, gpus_per_worker: float) -> int:
    if gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) / gpus_per_worker))
    return max(1, int(resources.get("CPU", 1)))


def read_sources(batch: dict) -> dict:
    """Ray Data task: the bytes of each image row's source ("data"), or the reason it cannot be read
    ("error"); video rows pass through (their workers open the files)."""
    data, errors = [], []
    for kind, source in zip(batch["kind"], batch["source"]):
        payload, error = b"", ""
        if kind == "image":
            try:
                payload = _read_bytes(str(source))
            except (MgbpError, OSError) as exc:
                error = _first_line(exc)
        data.append(payload)
        errors.append(error)
    return {**batch, "data": data, "error": errors}


class Upscaler:
    """Ray Data actor: the model, loaded once; upscales the rows of each batch and writes their outputs."""

    def __init__(self, spec: ModelSpec, settings: UpscaleSettings):
        self.model, self.settings, self.pid = spec.load(), settings, os.getpid()

    def __call__(self, batch: dict) -> dict:
        count = len(batch["number"])
        errors = [str(e) for e in batch["error"]]
        images = [i for i in range(count) if batch["kind"][i] == "image" and not errors[i]]
        for i, error in self._images(images, batch).items():
            errors[i] = error
        for i in range(count):
            if batch["kind"][i] != "image":
                errors[i] = self._video(batch, i)
        return {"number": batch["number"], "kind": batch["kind"], "segment": batch["segment"],
                "source": batch["source"], "target": batch["target"], "error": errors,
                "worker": [self.pid] * count}

    def _video(self, batch: dict, i: int) -> str:
        from mgbp.video import upscale_video

        options = self.settings.video_options()
        try:
            if batch["kind"][i] == "segment":
                from mgbp.video_segments import upscale_segment

                upscale_segment(pickle.loads(batch["task"][i]), self.model, options)
            else:
                upscale_video(Path(str(batch["source"][i])), Path(str(batch["target"][i])), self.model, options,
                              to_frames=self.settings.to_frames)
        except BaseException as exc:  # noqa: BLE001 - sorted by _failure_line: reported, or raised again
            return _failure_line(exc)
        return ""

    def _images(self, positions: list[int], batch: dict) -> dict[int, str]:
        """Decode, group same-size images (W = 0: nothing random, a batch is the same computation), upscale,
        write. Returns the error line of each position ("" when written)."""
        errors, loaded = {}, {}
        for i in positions:
            try:
                loaded[i] = _decode(batch["data"][i], str(batch["source"][i]), self.model, self.settings)
            except BaseException as exc:  # noqa: BLE001
                errors[i] = _failure_line(exc)
        groups: dict[tuple, list[int]] = {}
        batchable = self.settings.noise == 0 and not self.settings.consistent
        for i, (image, _) in loaded.items():
            key = tuple(image.shape) if batchable else (i,)
            groups.setdefault(key, []).append(i)
        for group in groups.values():
            try:
                outs = self._upscale([loaded[i][0] for i in group])
            except BaseException as exc:  # noqa: BLE001
                if len(group) == 1:
                    errors[group[0]] = _failure_line(exc)
                    continue
                outs = None
            for k, i in enumerate(group):
                try:
                    out = outs[k:k + 1] if outs is not None else self._upscale([loaded[i][0]])
                    _write(str(batch["target"][i]), out, loaded[i][1], self.model, self.settings)
                    errors[i] = ""
                except BaseException as exc:  # noqa: BLE001
                    errors[i] = _failure_line(exc)
        return errors

    def _upscale(self, planes: list):
        """`mgbp upscale`'s upscaling (`mgbp.image_files.upscale_planes`), on one image or a stack of same-size
        ones."""
        import torch

        from mgbp.image_files import upscale_planes

        return upscale_planes(self.model, torch.cat(planes), self.settings.inference())


def _failure_line(exc: BaseException) -> str:
    """The report line of a job that failed, as the single-process loop words it; other errors propagate."""
    if isinstance(exc, (MgbpError, OSError)):
        return _first_line(exc)
    text = str(exc)
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
            "can't allocate memory" in text or "DefaultCPUAllocator" in text)):
        return (f"not enough memory ({type(exc).__name__}); try a smaller --tile, or a machine with more "
                "memory")
    raise exc


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# ------------------------------------------------------------------------------------------------ files


def _is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _filesystem(uri: str):
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as exc:
        raise MgbpError(f"{uri}: {_first_line(exc)}") from None


def _exists(target) -> bool:
    text = str(target)
    if not _is_uri(text):
        return Path(text).exists()
    import pyarrow.fs

    filesystem, path = _filesystem(text)
    return filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def _read_bytes(source: str) -> bytes:
    if _is_uri(source):
        filesystem, path = _filesystem(source)
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    path = Path(source.removeprefix("file://"))
    if not path.is_file():
        from mgbp.io import read_image

        read_image(path)  # raises the single-process reader's error (no such file / not a file)
    return path.read_bytes()


def _decode(data: bytes, source: str, model, settings: UpscaleSettings):
    """(planes (1, C, H, W), LoadedImage) of an image file's bytes, read as `mgbp upscale` reads a file
    (`mgbp.image_files.read_source`: memory checked from the header first; errors name `source`)."""
    from mgbp.errors import ImageReadError
    from mgbp.image_files import image_planes, read_source

    with tempfile.TemporaryDirectory(prefix="mgbp-") as folder:
        local = Path(folder) / Path(source.rstrip("/")).name
        local.write_bytes(data)
        try:
            loaded = read_source(local, int(model.scale), settings.output(), settings.max_memory,
                                 warn=lambda message: print(f"mgbp upscale: warning: {message}".replace(
                                     str(local), source), file=sys.stderr))
        except MgbpError as exc:
            kind = ImageReadError if isinstance(exc, ImageReadError) else MgbpError
            raise kind(str(exc).replace(str(local), source)) from None
    return image_planes(loaded), loaded


def _write(target: str, out, loaded, model, settings: UpscaleSettings) -> None:
    """Write an upscaled (1, C, H, W) as `mgbp upscale` does (`mgbp.image_files.write_planes`: the output size,
    format, bit depth, alpha, ICC and EXIF; atomically; for a URI, a local file then one upload)."""
    from mgbp.image_files import write_planes

    if not _is_uri(target):
        write_planes(Path(target.removeprefix("file://")), out, loaded, settings.output(), int(model.scale))
        return
    with tempfile.TemporaryDirectory(prefix="mgbp-") as folder:
        local = write_planes(Path(folder) / ("out" + Path(target).suffix), out, loaded, settings.output(),
                             int(model.scale))
        filesystem, path = _filesystem(target)
        with filesystem.open_output_stream(path) as stream:  # an object store shows the object whole or not
            stream.write(local.read_bytes())


def _sweep_temporaries(targets: Iterable) -> None:
    """Remove the `.NAME.tmp-*` files (`mgbp.atomic`) that killed attempts left beside these local outputs."""
    import fnmatch
    import glob

    folders: dict[Path, list[str]] = {}
    for target in targets:
        text = str(target)
        if _is_uri(text):
            continue
        path = Path(os.path.abspath(text))
        folders.setdefault(path.parent, []).append(glob.escape(f".{path.stem}.tmp-") + "*" +
                                                   glob.escape(path.suffix))
    for folder, patterns in folders.items():
        if not folder.is_dir():
            continue
        for leftover in folder.iterdir():
            if leftover.is_file() and any(fnmatch.fnmatchcase(leftover.name, p) for p in patterns):
                leftover.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ Python API


def upscale_dataset(dataset, output: str, spec: ModelSpec = ModelSpec(),
                    settings: UpscaleSettings = UpscaleSettings(), cluster: ClusterOptions = ClusterOptions(),
                    path_column: str = "path", bytes_column: str | None = "bytes", root: str | None = None,
                    ext: str = "auto", suffix: str = ""):
    """Upscale the images of a Ray Dataset you already hold, e.g.
    `ray.data.read_binary_files("s3://bucket/photos", include_paths=True)` (columns "bytes" and "path").

    Each row's output goes to `output` (a folder path or URI) under its path relative to `root` (default: its
    file name alone), named STEM + `suffix` + extension (`ext`: png, jpg or auto: the source's own where it
    can be written, else png), as `mgbp upscale -o FOLDER` names them. Returns a lazy Dataset with one row per
    image: "source", "target", "error" ("" when written) and "worker" (the actor's process id); iterate it or
    call `.materialize()` to run it. Existing outputs are replaced, unless `settings.skip_existing` (then they
    come back with error "skipped (existing)"). Connect first (`connect`), as for any Ray Dataset.
    """
    import_ray()
    cluster.check()
    from mgbp.inference import check_noise_amplitude

    check_noise_amplitude(settings.noise, settings.allow_extrapolation, name="noise")
    naming = {"output": output.rstrip("/"), "root": root, "ext": ext, "suffix": suffix,
              "path_column": path_column, "bytes_column": bytes_column, "skip_existing": settings.skip_existing}
    rows = dataset.map_batches(_dataset_rows, fn_kwargs={"naming": naming}, batch_size=1, num_cpus=READ_CPUS)
    return _upscale_rows(rows, spec, replace(settings, overwrite=True), cluster).map_batches(
        _dataset_results, batch_size=None, num_cpus=READ_CPUS)


def output_target(source: str, output: str, root: str | None = None, ext: str = "auto", suffix: str = "") -> str:
    """Where `upscale_dataset` writes `source`'s output (see there)."""
    import posixpath

    from mgbp.io import WRITE_EXTENSIONS

    ext = ext.lower().lstrip(".")
    own = posixpath.splitext(source)[1].lower()
    extension = "." + ext if ext != "auto" else (own if own in WRITE_EXTENSIONS else ".png")
    relative = posixpath.basename(source) if root is None else posixpath.relpath(source, root.rstrip("/"))
    return f"{output}/{posixpath.splitext(relative)[0]}{suffix}{extension}"


def _dataset_rows(batch: dict, naming: dict) -> dict:
    """Ray Data task: a user's rows (path[, bytes]) -> job rows with their bytes and targets."""
    sources = [str(p) for p in batch[naming["path_column"]]]
    column = naming["bytes_column"]
    out = {"number": list(range(len(sources))), "kind": ["image"] * len(sources), "source": sources,
           "target": [], "segment": [-1] * len(sources), "task": [b""] * len(sources), "data": [], "error": []}
    for k, source in enumerate(sources):
        target = output_target(source, naming["output"], naming["root"], naming["ext"], naming["suffix"])
        error, data = "", b""
        if naming["skip_existing"] and _exists(target):
            error = "skipped (existing)"
        else:
            try:
                data = bytes(batch[column][k]) if column and column in batch else _read_bytes(source)
            except (MgbpError, OSError) as exc:
                error = _first_line(exc)
        out["target"].append(target)
        out["data"].append(data)
        out["error"].append(error)
    return out


def _dataset_results(batch: dict) -> dict:
    return {"source": batch["source"], "target": batch["target"], "error": batch["error"],
            "worker": batch["worker"]}
