"""The Ray Data pipeline of `mgbp upscale --ray` (`mgbp.distributed`), as this process plans and reports it:

    jobs (source, target) --from_items--> read (Ray tasks: the file's bytes, from any filesystem pyarrow
    understands) --> upscale (an actor pool: each actor loads the model once, from the same spec as the
    command; same-size images of a batch go through the network together at W = 0; outputs are written by the
    actor, atomically) --> one result row per job --> the same report and summary as one process.

Long videos are planned as rows of time segments cut at keyframes (`mgbp.video_segments`), each reading the
context frames its windows need; this process joins each video's segments once all are back (packets copied,
not re-encoded) with the source's audio. A rerun with `skip_existing` reuses the finished segments, found by a
fingerprint of everything they depend on. What runs on the workers is `mgbp.distributed.workers`. An
execution detail of the paper's inference (Algorithm 1; "Video Inference", Section IV, Fig. 6), not an
equation of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mgbp.distributed import storage
from mgbp.distributed.cluster import connect, import_ray
from mgbp.distributed.settings import (
    GPU_BATCH_SIZE,
    ClusterOptions,
    JobLike,
    JobResult,
    ModelSpec,
    Outcome,
    UpscaleSettings,
    first_line,
)
from mgbp.distributed.workers import Upscaler, read_sources
from mgbp.errors import MgbpError

READ_CPUS = 0.25  # logical CPUs a read task reserves: reading is I/O, and must fit beside a full actor pool
MAX_BLOCKS = 10_000  # at most this many blocks of job rows (a few rows each for millions of jobs)


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
    storage.sweep_temporaries(job.target for job in jobs if job.kind == "image")


def _result(job: JobLike, error: str, worker: int | None) -> JobResult:
    """The job's result; a failure's line names its files as the job does (workers saw absolute paths)."""
    status = "failed" if error else "written"
    for path in (job.source, job.target):
        error = error.replace(storage.absolute(path), str(path))
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
        if storage.exists(job.target) and not settings.overwrite:
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
            plan.early.append(_result(job, first_line(exc), None))
    return plan


def _row(number: int, kind: str, job: JobLike, segment: int = -1, task: bytes = b"") -> dict:
    """A job as the workers see it: local paths made absolute (a worker's folder is not this one's)."""
    return {"number": number, "kind": kind, "source": storage.absolute(job.source),
            "target": storage.absolute(job.target), "segment": segment, "task": task}


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
            task = segments.SegmentJob(storage.absolute(source), storage.absolute(part), to_folder,
                                       _format_for(target), geometry, cut, pts, cut.seek_frame)
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
        return _result(job, first_line(exc), None)
    segments.remove_parts(video.folder)
    return _result(job, "", None)


# ------------------------------------------------------------------------------------------------ executing


def _execute(rows: list[dict], spec: ModelSpec, settings: UpscaleSettings,
             cluster: ClusterOptions) -> Iterator[dict]:
    """The Ray Data pipeline over the job rows; yields the result rows as they come."""
    ray = import_ray()
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), MAX_BLOCKS)))
    dataset = dataset.map_batches(read_sources, batch_size=1, num_cpus=READ_CPUS)
    yield from upscale_rows(dataset, spec, settings, cluster).iter_rows()


def upscale_rows(dataset, spec: ModelSpec, settings: UpscaleSettings, cluster: ClusterOptions):
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
