"""`mgbp upscale`: the generator's forward pass (Algorithm 1) on image files, folders, globs and videos.

Images go through `mgbp.image_files` (the library's one image path: memory checked from the header, tiled exact
inference, an optional resize to --outscale / --size, alpha, 16-bit, grey, ICC and EXIF kept, PNG / JPEG / WebP
/ TIFF written atomically); videos and frame folders through `mgbp.video` (the paper's "Video Inference":
overlapping windows of frames, overlap-add). What can be checked before any work is (options, encoders, alpha
into JPEG); a file that fails later is reported on one line and skipped; the command finishes the rest and
exits 1 with a summary. Existing outputs are skipped ("skipped (exists)"), never overwritten unless
`--overwrite` is given; inputs never. In a folder that holds its own outputs, mgbp's earlier outputs are not
inputs. Which input becomes which output, and those protections, are planned in
`mgbp.commands.upscale_jobs`; this module is the command: options, models and devices, running the jobs here
or on Ray, progress and the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import threading
from pathlib import Path

from mgbp.commands.upscale_jobs import (
    Job,
    check_frame_folders,
    expand_inputs,
    is_video_path,
    plan_jobs,
    remove_stale_temporaries,
    report,
    say,
    skip_existing,
    writes_frames,
)
from mgbp.errors import ConfigError, MgbpError
from mgbp.image_files import upscale_image_file
from mgbp.io import IMAGE_EXTENSIONS, list_files
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
    parser.add_argument("--ext", default="auto",
                        help="output image format: png, jpg, webp, tiff or auto (the input's own where it can be "
                             "written, else png). PNG and TIFF keep 16-bit inputs 16-bit; JPEG and WebP are 8-bit; "
                             "WebP stores grey as RGB. An input with alpha and --ext jpg is refused before any work")
    parser.add_argument("--quality", type=int, metavar="Q",
                        help="JPEG and WebP quality, 1-100 (default: JPEG 95, WebP lossless)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--outscale", type=float, metavar="F",
                      help="images come out F times the input's size (any F > 0, e.g. 3.5): the model of the "
                           "nearest shipped scale runs (or the one -s/-m names), then MATLAB bicubic resizes its "
                           "output; the scale used is printed")
    size.add_argument("--size", metavar="WxH",
                      help="images come out as large as fits inside WIDTHxHEIGHT, aspect kept: the model of the "
                           "shipped scale nearest to the largest factor needed runs (or -s/-m), then MATLAB "
                           "bicubic; outputs are named NAME_WxH")
    parser.add_argument("--suffix", default="", help="added to output file names before the extension; inputs "
                        "that would share an output name keep their full names (x.png, x.tiff -> x.png_x4.png, "
                        "x.tiff_x4.png)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true",
                          help="skip inputs whose output exists (the default; the flag is kept for scripts)")
    existing.add_argument("--overwrite", action="store_true",
                          help="replace existing outputs (and allow writing over an input)")
    parser.add_argument("--consistent", action="store_true",
                        help="enforce S_f(output) = input by back-projection (paper eqs. 4-5)")
    parser.add_argument("--consistent-steps", type=int, metavar="N",
                        help="with --consistent: N back-projection iterations (each one bicubic "
                             "downscale and upscale; default: until S_f(output) = input to half a grey level)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="average the outputs for the 8 flips/rotations of the input (W = 0 only; "
                             "8x slower; about 0.1 dB higher PSNR-Y at x4)")
    video = parser.add_argument_group("video")
    video.add_argument("--codec", default=None,
                       help="video encoder (default: libx264, else mpeg4); hardware ones where PyAV's FFmpeg and "
                            "the machine have them (h264_nvenc, hevc_nvenc, h264_qsv, ...): checked before any work")
    video.add_argument("--crf", type=int, default=18, help="constant rate factor (x264/x265/vp9/av1)")
    video.add_argument("--preset", help="encoder preset (libx264/libx265: ultrafast ... veryslow; NVENC: p1 ... p7)")
    video.add_argument("--encoder-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option passed to the encoder as it is (repeatable), e.g. tune=film, g=48, "
                            "x265-params=aq-mode=3; values are checked when the encoder opens, before any work")
    video.add_argument("--video-model", metavar="NAME",
                       help="model for videos and frame folders (a shipped video model or weight file), e.g. "
                            "mgbp-x4-video; default: the shipped video model when every input is a video file, "
                            "else the image model frame by frame (said for each frame folder)")
    video.add_argument("--pix-fmt", default="yuv420p", help="output pixel format")
    video.add_argument("--window", type=int, help="frames per window (default: the model's clip length)")
    video.add_argument("--stride", type=int, help="frames between windows (default: half the frames a window "
                       "produces, at most 5 as the paper)")
    video.add_argument("--max-frames", type=int, help="only the first N frames (audio cut to match)")
    video.add_argument("--fps", type=float, default=25.0, help="frame rate of frame-folder inputs")
    video.add_argument("--to-frames", action="store_true", help="write video outputs as folders of PNG frames")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars, and no encoder log (libav's, x265's and SVT-AV1's)")
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


def run(args: argparse.Namespace) -> int:
    from mgbp.allocator import reuse_unless_opted_out
    from mgbp.device import bf16_is_emulated, resolve_device
    from mgbp.inference import resolve_model
    from mgbp.tiling import default_overlap

    _check_args(args)
    reuse_unless_opted_out()  # tiles' buffers are reused instead of faulted in again (mgbp.allocator)
    on_ray = _connect_ray(args)  # before any work: a wrong address or a missing extra is one line
    device = "cpu" if on_ray else str(resolve_device(args.device))  # on Ray, workers load their own copy
    dtype = "half" if args.half else "bf16" if args.bf16 else None
    if args.bf16 and not on_ray and bf16_is_emulated(device):
        _warn("--bf16: this CPU has neither AVX512-BF16 nor AMX, so bfloat16 is emulated and slower than float32")
    if not on_ray:
        _limit_gpu_memory(args.max_gpu_memory, device)
    if device.startswith("cuda"):
        import torch

        # The tiles of a run share a few shapes: cuDNN times its algorithms once per shape and reuses the fastest
        # (the GPU figures in the README are measured so); a process-wide switch, set by the command, not the library
        torch.backends.cudnn.benchmark = True
    video_model = _load_video_model(args, device, dtype)
    scale = _requested_scale(args, video_model)
    videos_only = all(is_video_path(Path(p)) for p in args.inputs)  # then a shipped video model is preferred
    model = resolve_model(args.model, scale, device=device, dtype=dtype, video=videos_only)
    if video_model is not None and int(video_model.scale) != int(model.scale):
        raise ConfigError(f"--video-model {args.video_model} upscales x{int(video_model.scale)}, the image model "
                          f"x{int(model.scale)}: give -s or -m of the same scale")
    overlap = default_overlap(model, args.noise) if args.tile_overlap is None else args.tile_overlap
    if args.tile is not None and args.tile <= overlap:
        raise ConfigError(f"--tile {args.tile} must exceed the tile overlap ({overlap} LR pixels for this model)")
    jobs, failures = plan_jobs(args, video_model=model.is_video, scale=int(model.scale))
    _check_before_work(jobs, args, model, video_model)
    if not jobs and failures:  # nothing to do: each reason is on its line already
        return 1
    _say_output_size(args, model, jobs)
    remove_stale_temporaries(jobs)
    jobs, skipped = skip_existing(jobs, args)
    with sigterm_as_interrupt():  # a scheduler's SIGTERM, like Ctrl-C, removes the temporary output
        if on_ray:
            from mgbp.distributed import ModelSpec  # what each worker loads: the spec this command got

            spec = ModelSpec(args.model, scale, args.device, dtype, videos_only, args.max_gpu_memory)
            done, _ = _run_jobs_on_ray(jobs, spec, model, args, failures)
        else:
            done = _run_jobs(jobs, {"image": model, "video": video_model or model}, args, failures)
    print(f"mgbp upscale: {done} written, {skipped} skipped (exists), {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


def _run_jobs(jobs: list[Job], models: dict, args, failures: list[str]) -> int:
    """Run every job (`models`: "image" for images, "video" for videos and frame folders); one file's failure
    (a bad file, NaN outputs, memory) is a line in `failures`, never the end of the run. Returns the number
    written."""
    done = 0
    for job in _progress(jobs, args, desc="files", unit="file"):
        try:
            _run_job(job, models["image" if job.kind == "image" else "video"], args)
            done += 1
        except (MgbpError, OSError) as exc:
            failures.append(f"{job.source}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            report(failures[-1])
        except (MemoryError, RuntimeError) as exc:
            if not isinstance(exc, MemoryError) and not _is_host_out_of_memory(exc):
                raise
            failures.append(f"{job.source}: not enough memory ({type(exc).__name__}); try a smaller --tile, "
                            f"or a machine with more memory")
            report(failures[-1])
    return done


def _load_video_model(args, device: str, dtype):
    """--video-model: the model of videos and frame folders (a video model: checked), or None."""
    if args.video_model is None:
        return None
    from mgbp.inference import resolve_model

    model = resolve_model(args.video_model, args.scale, device=device, dtype=dtype, video=True)
    if not model.is_video:
        raise ConfigError(f"--video-model {args.video_model} is an image model; name a video (3D) model, "
                          f"e.g. mgbp-x4-video (an image model is the default for frame folders anyway)")
    return model


def _requested_scale(args, video_model) -> int | None:
    """The model scale to load: -s; else -m's own (None); else, for --outscale / --size, the shipped image scale
    nearest to the factor asked for (a tie: the larger); else --video-model's; else the default."""
    if args.scale is not None or args.model is not None:
        return args.scale
    if args.outscale is not None:
        return nearest_shipped_scale(args.outscale)
    if args.size is not None:
        factor = _largest_size_factor(args)
        if factor is not None:
            return nearest_shipped_scale(factor)
    if video_model is not None:
        return int(video_model.scale)
    return DEFAULT_SCALE


def nearest_shipped_scale(factor: float) -> int:
    """The scale of a shipped image model nearest to `factor` (a tie: the larger one, which then shrinks)."""
    from mgbp.models import SHIPPED

    scales = sorted({entry.scale for entry in SHIPPED.values() if not entry.video}) or [DEFAULT_SCALE]
    return min(scales, key=lambda scale: (abs(scale - factor), -scale))


def _largest_size_factor(args) -> float | None:
    """The largest output/input factor --size asks of any image input (headers only), None without images."""
    from mgbp.image_files import OutputOptions
    from mgbp.io import peek_image

    output = OutputOptions(size=args.size)
    sources, _ = expand_inputs(args.inputs)
    factors = []
    for path in sources:
        files = list_files(path, IMAGE_EXTENSIONS, recursive=True) if path.is_dir() else [path]
        for file in files:
            if file.suffix.lower() in IMAGE_EXTENSIONS:
                with contextlib.suppress(MgbpError):
                    header = peek_image(file)
                    factors.append(output.factor(header.height, header.width, DEFAULT_SCALE))
    return max(factors) if factors else None


def _say_output_size(args, model, jobs: list[Job]) -> None:
    """Which model scale --outscale / --size runs, and that videos keep the model's scale."""
    if args.outscale is None and args.size is None or not any(job.kind == "image" for job in jobs):
        return
    wanted = f"x{args.outscale:g}" if args.outscale is not None else f"fit inside {args.size[0]}x{args.size[1]}"
    say(f"{'--outscale' if args.outscale is not None else '--size'}: the x{int(model.scale)} model runs, then "
         f"MATLAB bicubic resizes its output to {wanted}")


def _check_before_work(jobs: list[Job], args, model, video_model) -> None:
    """What would fail a file later and can be known now ends the run here, with one line (ConfigError):
    --outscale / --size of a video, alpha into JPEG, an output too large for WebP / JPEG, an encoder that cannot
    open. A frame folder that would be
    upscaled by an image model is said once (--video-model picks a video model)."""
    from mgbp.image_files import check_target_fits

    for job in jobs:
        if job.kind != "image" and (args.outscale is not None or args.size is not None):
            raise ConfigError(f"{job.source}: --outscale and --size resize images; videos and frame folders come "
                              f"out at the model's scale (x{int(model.scale)})")
        if job.kind == "image" and (args.overwrite or not job.target.exists()):  # else skipped
            check_target_fits(job.source, job.target, int(model.scale), _output_options(args))
    check_frame_folders(jobs, args)
    videos = [job for job in jobs if job.kind != "image"]
    if videos and args.quiet:
        from mgbp.video import silence_encoder_logs

        silence_encoder_logs()
    encoders = {_video_codec(job, args) for job in videos if not writes_frames(job, args)}
    if encoders:
        from mgbp.video import check_encoder

        options = _video_options(args)
        for codec in sorted(encoders):
            check_encoder(codec, options)
    if video_model is None and not model.is_video:
        for job in videos:
            if job.kind == "frames":
                say(f"{job.source}: frames upscaled one by one by the image model (--video-model NAME for a "
                     f"video model)")


def _video_codec(job: Job, args) -> str:
    from mgbp.video import _import_av, default_codec

    return args.codec or default_codec(job.target, _import_av().codecs_available)


def _video_options(args):
    from mgbp.video_options import VideoOptions

    return VideoOptions(codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt, window=args.window,
                        stride=args.stride, max_frames=args.max_frames, fps=args.fps,
                        noise=args.noise, tile=args.tile, overlap=args.tile_overlap,
                        consistent=args.consistent, consistent_steps=args.consistent_steps,
                        progress=not args.quiet, seed=args.seed,
                        self_ensemble=args.self_ensemble, allow_extrapolation=args.allow_extrapolation,
                        preset=args.preset, encoder_options=dict(args.encoder_options),
                        encoder_log=not args.quiet)


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
    """`_run_jobs` on a Ray cluster (`mgbp.distributed`): the same outputs, report lines and counts. Returns
    (written, skipped)."""
    from mgbp.distributed import ClusterOptions, UpscaleSettings, run_jobs

    outcome = run_jobs(jobs, spec, UpscaleSettings.from_args(args), ClusterOptions.from_args(args),
                       report=lambda line: (failures.append(line), report(line)), progress=not args.quiet,
                       model=model)
    return outcome.written, outcome.skipped


def _is_host_out_of_memory(exc: BaseException) -> bool:
    """PyTorch's CPU allocator raises a RuntimeError, not a MemoryError, when an allocation fails."""
    text = str(exc)
    return "can't allocate memory" in text or "DefaultCPUAllocator" in text


OUTPUT_FORMATS = ("auto", "png", "jpg", "jpeg", "webp", "tif", "tiff")


def _check_args(args) -> None:
    """Every option checked before any work (ConfigError, one line); --size and --encoder-option parsed in
    place; existing outputs are skipped unless --overwrite."""
    from mgbp.image_files import parse_size

    _inference_options(args).check(noise_name="-W/--noise")
    ext = args.ext.lower().lstrip(".")
    if ext not in OUTPUT_FORMATS:
        raise ConfigError(f"--ext must be one of {', '.join(OUTPUT_FORMATS)}, got {args.ext!r}")
    if args.quality is not None and ext in ("png", "tif", "tiff"):
        raise ConfigError(f"--quality applies to jpg and webp outputs, not {ext} (lossless)")
    if args.video_model is not None and getattr(args, "ray", None) is not None:
        raise ConfigError("--video-model does not run on --ray yet: give the video model as -m")
    if args.size is not None and not isinstance(args.size, tuple):
        args.size = parse_size(args.size)
    _output_options(args).check()
    args.encoder_options = _parse_encoder_options(getattr(args, "encoder_option", None) or [])
    args.skip_existing = not args.overwrite  # the default; --skip-existing is kept for scripts
    if args.max_memory is not None and not (math.isfinite(args.max_memory) and args.max_memory > 0):
        raise ConfigError(f"--max-memory must be a positive number of GiB, got {args.max_memory}")
    for name in ("tile", "window", "stride", "max_frames"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")


def _parse_encoder_options(items: list[str]) -> dict[str, str]:
    """["tune=film", "g=48"] -> {"tune": "film", "g": "48"}; ConfigError for an item without a name and "="."""
    options = {}
    for item in items:
        key, equals, value = str(item).partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"--encoder-option must be KEY=VALUE, got {item!r}")
        options[key.strip()] = value
    return options


def _inference_options(args):
    """`mgbp.inference.InferenceOptions` from the flags, mapped as the Ray workers map them (one translation),
    with a tile bar unless -q."""
    from dataclasses import replace

    from mgbp.distributed import UpscaleSettings

    return replace(UpscaleSettings.from_args(args).inference(), progress=not args.quiet)


def _output_options(args):
    """`mgbp.image_files.OutputOptions` from the flags (--quality, --outscale, --size), as the Ray workers do."""
    from mgbp.distributed import UpscaleSettings

    return UpscaleSettings.from_args(args).output()


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


def _progress(items, args, **kwargs):
    if args.quiet or len(items) < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, **kwargs)


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


# ------------------------------------------------------------------------------------------- doing it


def _run_job(job: Job, model, args) -> None:
    if job.kind == "image":
        upscale_image_file(job.source, job.target, model, _inference_options(args), _output_options(args),
                           max_memory=args.max_memory, warn=_warn)
        return
    from mgbp.video import upscale_video

    upscale_video(job.source, job.target, model, _video_options(args), to_frames=args.to_frames)


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"mgbp upscale: warning: {message}", file=sys.stderr)  # above the progress bar, if any
