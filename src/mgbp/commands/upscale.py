"""`mgbp upscale`: the generator's forward pass (Algorithm 1) on image files, folders, globs and videos.

Images go through `mgbp.inference` (tiled, exact) with the package's I/O (`mgbp.io`: alpha, 16-bit, grey, ICC
and EXIF kept); videos and frame folders through `mgbp.video` (the paper's "Video Inference": overlapping
windows of frames, overlap-add). A file that fails is reported on one line and skipped; the command finishes
the rest and exits 1 with a summary. Inputs are never overwritten unless `--overwrite` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import glob
import math
import os
import shutil
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from mgbp.errors import ConfigError, MgbpError
from mgbp.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, WRITE_EXTENSIONS, list_files
from mgbp.models.weights import DEFAULT_SCALE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image/video files, folders (recursive), globs")
    parser.add_argument("-o", "--output",
                        help="output file (one input) or folder (several inputs; folder structure kept); "
                             "default: beside each input, named NAME_x<scale> (a folder: FOLDER_x<scale>)")
    parser.add_argument("-s", "--scale", type=int,
                        help=f"upscaling factor: picks the shipped model for it (default x{DEFAULT_SCALE} "
                             "when no -m is given)")
    parser.add_argument("-m", "--model", help="shipped model name or weight file")
    parser.add_argument("-W", "--noise", type=float, default=0.0,
                        help="noise amplitude W in [0, 1] (0: best PSNR; 1: the perceptual end, for models "
                             "trained with noise)")
    parser.add_argument("--allow-extrapolation", action="store_true",
                        help="permit W > 1 (beyond the range the models are trained on; finite, >= 0)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the noise at W > 0 (default 0): the same seed gives the same output, "
                        "whatever the tiling or device")
    parser.add_argument("--tile", type=int, help="LR tile side in pixels (default: automatic from memory)")
    parser.add_argument("--tile-overlap", type=int, help="LR pixels shared by neighbouring tiles "
                        "(default: 2 * the model's border + 8)")
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--half", action="store_true", help="run the model in float16")
    precision.add_argument("--bf16", action="store_true", help="run the model in bfloat16")
    parser.add_argument("--max-gpu-memory", type=float, metavar="GIB",
                        help="GPU memory this run may use in all (GiB); tiles are sized to fit it")
    parser.add_argument("--max-memory", type=float, metavar="GIB",
                        help="host memory one image may need (GiB, estimated from its header before decoding; "
                             "default: the memory available); a bigger image fails, the others go on")
    parser.add_argument("--ext", default="auto", help="output image format: png, jpg or auto (same as the "
                        "input where it can be written, else png)")
    parser.add_argument("--suffix", default="", help="added to output file names before the extension; inputs "
                        "that would share an output name keep their full names (x.png, x.tiff -> x.png_x4.png, "
                        "x.tiff_x4.png)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true", help="skip inputs whose output exists")
    existing.add_argument("--overwrite", action="store_true",
                          help="replace existing outputs (and allow writing over an input)")
    parser.add_argument("--consistent", action="store_true",
                        help="enforce S_f(output) = input by back-projection (paper eqs. 4-5)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="average the outputs for the 8 flips/rotations of the input (W = 0 only; "
                             "8x slower; about 0.1 dB higher PSNR-Y at x4)")
    video = parser.add_argument_group("video")
    video.add_argument("--codec", default=None, help="video codec (default: libx264, else mpeg4)")
    video.add_argument("--crf", type=int, default=18, help="constant rate factor (x264/x265/vp9)")
    video.add_argument("--pix-fmt", default="yuv420p", help="output pixel format")
    video.add_argument("--window", type=int, help="frames per window (default: the model's clip length)")
    video.add_argument("--stride", type=int, help="frames between windows (default: half the frames a window "
                       "produces, at most 5 as the paper)")
    video.add_argument("--max-frames", type=int, help="only the first N frames (audio cut to match)")
    video.add_argument("--fps", type=float, default=25.0, help="frame rate of frame-folder inputs")
    video.add_argument("--to-frames", action="store_true", help="write video outputs as folders of PNG frames")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    cluster = parser.add_argument_group("cluster (Ray; docs/CLUSTER.md)")
    cluster.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                         help="run on Ray (extra mgbp[ray]): local (start Ray here; the default), auto (the "
                              "running cluster), ray://HOST:PORT or HOST:PORT")
    cluster.add_argument("--ray-workers", type=int, metavar="N",
                         help="model workers (default: as many as the cluster's GPUs, or CPUs, allow)")
    cluster.add_argument("--ray-gpus-per-worker", type=float, metavar="F",
                         help="GPUs per worker, fractions share a GPU (default: 1 if the cluster has GPUs)")
    cluster.add_argument("--ray-batch-size", type=int, metavar="N",
                         help="files per worker call; same-size images share a forward pass at W = 0 "
                              "(default: 1 on CPU workers, 8 on GPU workers)")
    cluster.add_argument("--ray-segment-frames", type=int, metavar="N",
                         help="long videos are cut at keyframes into segments of about N frames that run in "
                              "parallel (default 600)")


@dataclass
class Job:
    source: Path
    target: Path
    kind: str  # "image", "video" (a video file) or "frames" (a folder of frames treated as a clip)


def run(args: argparse.Namespace) -> int:
    from mgbp.device import resolve_device
    from mgbp.inference import default_overlap, resolve_model

    _check_args(args)
    on_ray = _connect_ray(args)  # before any work: a wrong address or a missing extra is one line
    device = "cpu" if on_ray else str(resolve_device(args.device))  # on Ray, workers load their own copy
    dtype = "half" if args.half else "bf16" if args.bf16 else None
    scale = args.scale if (args.scale is not None or args.model is not None) else DEFAULT_SCALE
    videos_only = all(_is_video_path(Path(p)) for p in args.inputs)  # then a shipped video model is preferred
    if not on_ray:
        _limit_gpu_memory(args.max_gpu_memory, device)
    model = resolve_model(args.model, scale, device=device, dtype=dtype, video=videos_only)
    overlap = default_overlap(model) if args.tile_overlap is None else args.tile_overlap
    if args.tile is not None and args.tile <= overlap:
        raise ConfigError(f"--tile {args.tile} must exceed the tile overlap ({overlap} LR pixels for this model)")
    jobs, failures = plan_jobs(args, video_model=model.is_video, scale=int(model.scale))
    _check_frame_folders(jobs, args)
    if not jobs and failures:  # nothing to do: each reason is on its line already
        return 1
    remove_stale_temporaries(jobs)
    with sigterm_as_interrupt():  # a scheduler's SIGTERM, like Ctrl-C, removes the temporary output
        if on_ray:
            from mgbp.distributed import ModelSpec  # what each worker loads: the spec this command got

            spec = ModelSpec(args.model, scale, args.device, dtype, videos_only, args.max_gpu_memory)
            done, skipped = _run_jobs_on_ray(jobs, spec, model, args, failures)
        else:
            done, skipped = _run_jobs(jobs, model, args, failures)
    print(f"mgbp upscale: {done} written, {skipped} skipped (existing), {len(failures)} failed",
          file=sys.stderr)
    return 1 if failures else 0


def _run_jobs(jobs: list[Job], model, args, failures: list[str]) -> tuple[int, int]:
    """Run every job; one file's failure (a bad file, NaN outputs, memory) is a line in `failures`, never the
    end of the run. Returns (written, skipped)."""
    done = skipped = 0
    for job in _progress(jobs, args, desc="files", unit="file"):
        if job.target.exists() and not args.overwrite:
            if args.skip_existing:
                skipped += 1
                continue
            failures.append(f"{job.target}: output exists (use --overwrite or --skip-existing)")
            _report(failures[-1])
            continue
        try:
            _run_job(job, model, args)
            done += 1
        except (MgbpError, OSError) as exc:
            failures.append(f"{job.source}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            _report(failures[-1])
        except (MemoryError, RuntimeError) as exc:
            if not isinstance(exc, MemoryError) and not _is_host_out_of_memory(exc):
                raise
            failures.append(f"{job.source}: not enough memory ({type(exc).__name__}); try a smaller --tile, "
                            f"or a machine with more memory")
            _report(failures[-1])
    return done, skipped


def _connect_ray(args) -> bool:
    """With --ray: connect (or start Ray) now, so that a wrong address or a missing extra fails first."""
    ray_only = [flag for flag in ("ray_workers", "ray_gpus_per_worker", "ray_batch_size", "ray_segment_frames")
                if getattr(args, flag, None) is not None]
    if getattr(args, "ray", None) is None:
        if ray_only:
            raise ConfigError(f"--{ray_only[0].replace('_', '-')} needs --ray")
        return False
    from mgbp.distributed import ClusterOptions, connect

    cluster = ClusterOptions.from_args(args)
    cluster.check()
    connect(cluster.address)
    return True


def _run_jobs_on_ray(jobs: list[Job], spec, model, args, failures: list[str]) -> tuple[int, int]:
    """`_run_jobs` on a Ray cluster (`mgbp.distributed`): the same outputs, report lines and counts."""
    from mgbp.distributed import ClusterOptions, UpscaleSettings, run_jobs

    outcome = run_jobs(jobs, spec, UpscaleSettings.from_args(args), ClusterOptions.from_args(args),
                       report=lambda line: (failures.append(line), _report(line)), progress=not args.quiet,
                       model=model)
    return outcome.written, outcome.skipped


def _is_host_out_of_memory(exc: BaseException) -> bool:
    """PyTorch's CPU allocator raises a RuntimeError, not a MemoryError, when an allocation fails."""
    text = str(exc)
    return "can't allocate memory" in text or "DefaultCPUAllocator" in text


def _check_args(args) -> None:
    from mgbp.inference import check_noise_amplitude

    check_noise_amplitude(args.noise, args.allow_extrapolation, name="-W/--noise")
    if args.self_ensemble:
        from mgbp.inference import check_self_ensemble

        check_self_ensemble(args.noise)
    if args.ext.lower().lstrip(".") not in ("auto", "png", "jpg", "jpeg"):
        raise ConfigError(f"--ext must be png, jpg or auto, got {args.ext!r}")
    if args.max_memory is not None and not (math.isfinite(args.max_memory) and args.max_memory > 0):
        raise ConfigError(f"--max-memory must be a positive number of GiB, got {args.max_memory}")
    for name in ("tile", "window", "stride", "max_frames"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")


def _limit_gpu_memory(gib: float | None, device: str) -> None:
    """Cap this process's GPU memory (PyTorch's per-process fraction); the tile planner reads the cap."""
    if gib is None:
        return
    import torch

    if gib <= 0:
        raise ConfigError(f"--max-gpu-memory must be positive, got {gib}")
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        raise ConfigError("--max-gpu-memory needs a CUDA device (--device cuda)")
    index = torch.device(device).index or 0
    total = torch.cuda.get_device_properties(index).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), index)


def _report(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"mgbp upscale: skipped {message}", file=sys.stderr)  # above the progress bar, if any


def _progress(items, args, **kwargs):
    if args.quiet or len(items) < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, **kwargs)


# ------------------------------------------------------------------------------------------- what to do


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Every input path (globs expanded, recursive `**` allowed), and one error line per unmatched input."""
    found, errors = [], []
    for text in inputs:
        if Path(text).exists():
            paths = [Path(text)]
        elif glob.has_magic(text):
            paths = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
        else:
            paths = []
        if not paths:
            errors.append(f"{text}: no such file or folder")
        found.extend(paths)
    return found, errors


def plan_jobs(args, video_model: bool = False, scale: int = 4) -> tuple[list[Job], list[str]]:
    """One job per output. A folder is a tree of images (structure kept under -o), except that it is one clip
    of frames when the output is a video file, with --to-frames, or for a video (3D) model. Hidden files and
    folders (names starting with a dot, our temporary files among them) are never inputs.

    Without -o (as Real-ESRGAN's and chaiNNer's users expect), an output goes beside its input: a file as
    NAME_x<scale>.EXT (or with --suffix), a folder as a sibling FOLDER_x<scale>. Inputs that would share an
    output name keep their full names (`keep_outputs_apart`)."""
    if args.output is None:
        jobs, failures = _plan_jobs_beside_inputs(args, video_model, scale)
    else:
        jobs, failures = _plan_jobs_into_output(args, video_model)
    jobs = keep_outputs_apart(jobs)
    return [job for job in jobs if _not_an_input(job, args, failures)], failures


def keep_outputs_apart(jobs: list[Job]) -> list[Job]:
    """Every input its own output. Inputs that would write the same file (x.png, x.tiff and x.webp all give
    x_x4.png) keep their full file name in it instead: x.png_x4.png, x.tiff_x4.png, x.webp_x4.png. What still
    collides (x.png from two folders into one -o) is a ConfigError that lists it, before any work."""
    jobs = [_full_name(job) if _shares_target(job, jobs) else job for job in jobs]
    seen: dict[str, Job] = {}
    for job in jobs:
        key = os.path.abspath(job.target)
        if key in seen:
            raise ConfigError(f"{seen[key].source} and {job.source} would write the same output {job.target}; "
                              f"upscale them in separate runs or into separate folders (-o)")
        seen[key] = job
    return jobs


def _shares_target(job: Job, jobs: list[Job]) -> bool:
    key = os.path.abspath(job.target)
    return sum(os.path.abspath(other.target) == key for other in jobs) > 1


def _full_name(job: Job) -> Job:
    """NAME_x4.png -> NAME.EXT_x4.png: the source's extension kept (a source without one stays as it is)."""
    stem, name = job.source.stem, job.target.name
    if not job.source.suffix or not name.startswith(stem):
        return job
    return Job(job.source, job.target.with_name(job.source.name + name[len(stem):]), job.kind)


def _plan_jobs_into_output(args, video_model: bool) -> tuple[list[Job], list[str]]:
    sources, failures = expand_inputs(args.inputs)
    for line in failures:
        _report(line)
    output = Path(args.output)
    single = len(sources) == 1
    jobs = []
    for path in sources:
        if path.is_dir() and (_is_video_path(output) or args.to_frames or video_model):
            jobs.append(Job(path, output if single else output / f"{path.name}{args.suffix}", "frames"))
        elif path.is_dir():
            files = list_files(path, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS, recursive=True)  # hidden never
            if not files:
                failures.append(f"{path}: no images or videos in the folder")
                _report(failures[-1])
            for file in files:
                jobs.append(_file_job(file, output / file.parent.relative_to(path), None, args))
        else:
            # one input: -o names the output file (or, with --to-frames, the frame folder) unless it is a folder
            names_target = output.suffix and not output.is_dir() or (args.to_frames and _is_video_path(path))
            target = output if single and names_target else None
            jobs.append(_file_job(path, output, target, args))
    return jobs, failures


def _plan_jobs_beside_inputs(args, video_model: bool, scale: int) -> tuple[list[Job], list[str]]:
    sources, _ = expand_inputs(args.inputs)
    jobs, failures = [], []
    for path in sources:  # one planning pass per input, each with its own -o
        one = argparse.Namespace(**vars(args))
        one.inputs = [str(path)]
        if path.is_dir():
            one.output = str(path.parent / f"{path.name}_x{scale}")
        else:
            one.output = str(path.parent)
            one.suffix = args.suffix or f"_x{scale}"
        more_jobs, more_failures = _plan_jobs_into_output(one, video_model)
        jobs += more_jobs
        failures += more_failures
    missing = expand_inputs(args.inputs)[1]
    for line in missing:
        _report(line)
    return jobs, failures + missing


def _file_job(path: Path, out_dir: Path, target: Path | None, args) -> Job:
    kind = "video" if _is_video_path(path) else "image"
    if target is None:
        if kind == "video":
            extension = "" if args.to_frames else path.suffix
        else:
            extension = _image_extension(path, args.ext)
        target = out_dir / f"{path.stem}{args.suffix}{extension}"
    return Job(path, target, kind)


def _image_extension(path: Path, ext: str) -> str:
    ext = ext.lower().lstrip(".")
    if ext != "auto":
        return "." + ext
    return path.suffix.lower() if path.suffix.lower() in WRITE_EXTENSIONS else ".png"


def _is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _not_an_input(job: Job, args, failures: list[str]) -> bool:
    """Refuse to write over the input itself unless --overwrite."""
    if args.overwrite or not job.target.exists():
        return True
    if os.path.samefile(job.source, job.target):
        failures.append(f"{job.source}: output would overwrite the input (use --suffix or another -o)")
        _report(failures[-1])
        return False
    return True


def remove_stale_temporaries(jobs: list[Job]) -> None:
    """Remove what a killed earlier run left beside this run's outputs: the hidden `.NAME.tmp-*` files
    (`mgbp.atomic`, `mgbp.video`) and frame folders named after these very outputs, nothing else."""
    for job in jobs:
        target = Path(os.path.abspath(job.target))
        if not target.parent.is_dir():
            continue
        patterns = (glob.escape(f".{target.stem}.tmp-") + "*" + glob.escape(target.suffix),  # files
                    glob.escape(f".{target.name}.tmp-") + "*")  # frame folders (and suffixless files)
        for leftover in target.parent.iterdir():
            if any(fnmatch.fnmatchcase(leftover.name, pattern) for pattern in patterns):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (`timeout`, systemd, Kubernetes) raises KeyboardInterrupt as Ctrl-C does, so that the
    temporary outputs are removed on the way out; the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def writes_frames(job: Job, args) -> bool:
    """True when the job's output is a folder of frames (`mgbp.video.upscale_video`'s rule)."""
    return job.kind != "image" and (args.to_frames or not job.target.suffix)


def _check_frame_folders(jobs: list[Job], args) -> None:
    """Before any work: a frame folder that --overwrite would write into must hold only frames of an earlier
    run, and never the input (`mgbp.video.check_frames_target`); a refusal ends the run (ConfigError)."""
    if not args.overwrite:
        return  # an existing output is skipped or reported, never written into
    from mgbp.video import check_frames_target

    for job in jobs:
        if writes_frames(job, args):
            check_frames_target(job.source, job.target)


# ------------------------------------------------------------------------------------------- doing it


def _run_job(job: Job, model, args) -> None:
    if job.kind == "image":
        if model.is_video:
            raise ConfigError("a video (3D) model upscales videos and frame folders, not single images")
        from mgbp.io import peek_image

        header = peek_image(job.source)  # before decoding: what does not fit is refused, not crashed on
        check_image_memory(header, int(model.scale), args.max_memory)
        if header.frames > 1:
            _warn(f"{job.source} has {header.frames} frames (animated): only the first frame is upscaled")
        upscale_image_file(job.source, job.target, model, args)
        return
    from mgbp.video import VideoOptions, upscale_video

    options = VideoOptions(codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt, window=args.window,
                           stride=args.stride, max_frames=args.max_frames, fps=args.fps,
                           noise=args.noise, tile=args.tile, overlap=args.tile_overlap,
                           consistent=args.consistent, progress=not args.quiet, seed=args.seed,
                           self_ensemble=args.self_ensemble, allow_extrapolation=args.allow_extrapolation)
    upscale_video(job.source, job.target, model, options, to_frames=args.to_frames)


# Host memory per output sample (colour planes plus alpha) of `upscale_image_file`: the float32 accumulator,
# its normalised and clamped copies, and the writer's float64 rounding. Measured at 36.9 (8-bit) and 36.1
# (16-bit) bytes on 8192x8192 RGB outputs by `benchmarks/bench_image_memory.py --lr-size 2048 --bit-depth 8|16`
# (x86_64, 2 cores, torch 2.13 CPU), rounded up. The tiles' activations are bounded by the tile size and not
# counted.
BYTES_PER_OUTPUT_SAMPLE = {8: 40, 16: 40}
BYTES_PER_INPUT_SAMPLE = 16  # the decoded samples and their float copies


def image_memory_bytes(header, scale: int) -> int:
    """Estimated host memory to upscale an image with this header (`mgbp.io.ImageHeader`) by `scale`: the
    model runs on 3 colour planes whatever the source (grey is repeated), plus alpha."""
    planes = 3 + (header.planes in (2, 4))
    pixels = header.width * header.height
    return pixels * planes * (scale * scale * BYTES_PER_OUTPUT_SAMPLE[header.bit_depth] + BYTES_PER_INPUT_SAMPLE)


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux's MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_image_memory(header, scale: int, max_memory_gib: float | None) -> None:
    """MgbpError (that file fails, the run goes on) when the estimate exceeds --max-memory, or by default the
    memory available now."""
    limit = max_memory_gib * 2**30 if max_memory_gib is not None else available_memory_bytes()
    needed = image_memory_bytes(header, scale)
    if limit is None or needed <= limit:
        return
    where = "allowed by --max-memory" if max_memory_gib is not None else "available (--max-memory sets the limit)"
    raise MgbpError(f"{header.width}x{header.height} at x{scale} needs about {needed / 2**30:.1f} GiB of memory, "
                    f"more than the {limit / 2**30:.1f} GiB {where}")


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"mgbp upscale: warning: {message}", file=sys.stderr)  # above the progress bar, if any


def upscale_image_file(source: Path, target: Path, model, args) -> None:
    """Read (alpha, 16-bit, grey, ICC, EXIF), upscale, write back with the same metadata."""
    import numpy as np
    import torch

    from mgbp.inference import upscale_tensor
    from mgbp.io import read_image, write_image

    loaded = read_image(source)
    planes = [loaded.rgb] if loaded.alpha is None else [loaded.rgb, loaded.alpha[..., None]]
    x = torch.from_numpy(np.concatenate(planes, axis=2)).permute(2, 0, 1)[None].float()
    out = upscale_tensor(model, x, noise=args.noise, tile=args.tile, overlap=args.tile_overlap,
                         progress=not args.quiet, consistent=args.consistent, seed=args.seed,
                         self_ensemble=args.self_ensemble, allow_extrapolation=args.allow_extrapolation)
    out = out[0].permute(1, 2, 0).numpy()
    colour_channels = loaded.rgb.shape[2]
    alpha = out[..., colour_channels] if loaded.alpha is not None else None
    jpeg = target.suffix.lower() in (".jpg", ".jpeg")
    if jpeg and alpha is not None:
        raise ConfigError(f"{source} has an alpha channel, which JPEG cannot store (use --ext png)")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_image(target, out[..., :colour_channels], bit_depth=8 if jpeg else loaded.bit_depth, alpha=alpha,
                icc_profile=loaded.icc_profile, exif=loaded.exif)
