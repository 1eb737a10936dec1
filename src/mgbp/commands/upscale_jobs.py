"""Which outputs an `mgbp upscale` run writes, and the rules that protect its inputs and earlier outputs: one
`Job` (source, target, kind) per output, planned from the inputs (files, folders, globs) and -o / --suffix /
--outscale / --size before any work; `mgbp.commands.upscale` runs the jobs.

No paper equation: the outputs of the paper's inference (Algorithm 1; "Video Inference" for videos) need file
names, and these naming rules are ours. Globs are Python's `glob` (`**` recursive); an output goes beside its
input under a suffix, as Real-ESRGAN's and chaiNNer's users expect, and the default tag (`output_tag`: _x4,
_x3.5, _1920x1080) is ours. The protections: an input is never written over unless --overwrite
(`_not_an_input`), an existing output is skipped (`skip_existing`), inputs that would share an output keep their
full names or are refused (`keep_outputs_apart`), mgbp's earlier outputs in an input folder are not inputs
(`earlier_outputs`), a frame folder --overwrite would write into is checked (`check_frame_folders`), and what a
killed run left beside an output is removed (`remove_stale_temporaries`: the hidden temporaries of
`mgbp.atomic` and `mgbp.video`). `say` and `report` are the command's message lines, here because planning
says them first.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from mgbp.errors import ConfigError
from mgbp.image_files import output_extension
from mgbp.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_files


@dataclass
class Job:
    source: Path
    target: Path
    kind: str  # "image", "video" (a video file) or "frames" (a folder of frames treated as a clip)


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
    NAME_x<scale>.EXT (or with --suffix; NAME_x3.5 with --outscale 3.5, NAME_WxH with --size), a folder as a
    sibling FOLDER_x<scale>. Inputs that would share an output name keep their full names
    (`keep_outputs_apart`). Files found in a folder or by a glob that are mgbp's earlier outputs written into
    that same folder are left out (`earlier_outputs`), so a rerun never upscales its own outputs."""
    if args.output is None:
        jobs, failures = _plan_jobs_beside_inputs(args, video_model, scale)
    else:
        jobs, failures = _plan_jobs_into_output(args, video_model)
    jobs = keep_outputs_apart(jobs)
    ours = earlier_outputs(jobs, args)
    if ours:
        shown = ", ".join(path.name for path in ours[:3]) + (f", ... ({len(ours)} in all)" if len(ours) > 3 else "")
        say(f"left out {len(ours)} earlier output(s) of mgbp in their own input folder ({shown})")
        jobs = [job for job in jobs if job.source not in ours]
    return [job for job in jobs if _not_an_input(job, args, failures)], failures


OUTPUT_TAG = re.compile(r"_(x\d+(\.\d+)?|\d+x\d+)$")  # the end of our default names: _x4, _x3.5, _1920x1080


def output_tag(args, scale: int) -> str:
    """What a default output name adds to its input's: _x<scale>, _x<F> with --outscale F, _WxH with --size."""
    if args.outscale is not None:
        return f"_x{args.outscale:g}"
    if args.size is not None:
        return f"_{args.size[0]}x{args.size[1]}"
    return f"_x{scale}"


def earlier_outputs(jobs: list[Job], args) -> list[Path]:
    """Sources that are mgbp's own earlier outputs, when output and input share a folder: the target of another
    job of this run, a name ending in our tag (`OUTPUT_TAG`, or --suffix) beside an image of the name before
    it, or an image carrying our marker (`mgbp.io.is_mgbp_output`). Only files found in a folder or by a glob:
    an input named on the command line is always upscaled."""
    from mgbp.io import is_mgbp_output

    named = {os.path.abspath(text) for text in args.inputs if Path(text).is_file()}
    targets = {os.path.abspath(job.target): job for job in jobs}
    stems: dict[Path, set[str]] = {}  # folder -> the stems (and names) of its images
    found = []
    for job in jobs:
        source = Path(os.path.abspath(job.source))
        if job.kind != "image" or str(source) in named or Path(os.path.abspath(job.target)).parent != source.parent:
            continue
        if source.parent not in stems:
            images = list_files(source.parent, IMAGE_EXTENSIONS)
            stems[source.parent] = {p.stem for p in images} | {p.name for p in images}
        if targets.get(str(source), job) is not job or _named_like_output(source, args.suffix, stems[source.parent]) \
                or is_mgbp_output(source):
            found.append(job.source)
    return found


def _named_like_output(path: Path, suffix: str, stems: set[str]) -> bool:
    """NAME<tag>.EXT (or NAME.EXT<tag>.EXT, the full-name form) where an image NAME.* (or NAME.EXT) exists."""
    match = OUTPUT_TAG.search(path.stem)
    if suffix and path.stem.endswith(suffix) and len(path.stem) > len(suffix):
        base = path.stem[: -len(suffix)]
    elif match and match.start() > 0:
        base = path.stem[: match.start()]
    else:
        return False
    return base in stems


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
        report(line)
    output = Path(args.output)
    single = len(sources) == 1
    jobs = []
    for path in sources:
        if path.is_dir() and (is_video_path(output) or args.to_frames or video_model):
            jobs.append(Job(path, output if single else output / f"{path.name}{args.suffix}", "frames"))
        elif path.is_dir():
            files = list_files(path, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS, recursive=True)  # hidden never
            if not files:
                failures.append(f"{path}: no images or videos in the folder")
                report(failures[-1])
            for file in files:
                jobs.append(_file_job(file, output / file.parent.relative_to(path), None, args))
        else:
            # one input: -o names the output file (or, with --to-frames, the frame folder) unless it is a folder
            names_target = output.suffix and not output.is_dir() or (args.to_frames and is_video_path(path))
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
            one.output = str(path.parent / f"{path.name}{output_tag(args, scale)}")
        else:
            one.output = str(path.parent)
            one.suffix = args.suffix or output_tag(args, scale)
        more_jobs, more_failures = _plan_jobs_into_output(one, video_model)
        jobs += more_jobs
        failures += more_failures
    missing = expand_inputs(args.inputs)[1]
    for line in missing:
        report(line)
    return jobs, failures + missing


def _file_job(path: Path, out_dir: Path, target: Path | None, args) -> Job:
    kind = "video" if is_video_path(path) else "image"
    if target is None:
        if kind == "video":
            extension = "" if args.to_frames else path.suffix
        else:
            extension = output_extension(path, args.ext)
        target = out_dir / f"{path.stem}{args.suffix}{extension}"
    return Job(path, target, kind)


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _not_an_input(job: Job, args, failures: list[str]) -> bool:
    """Refuse to write over the input itself unless --overwrite."""
    if args.overwrite or not job.target.exists():
        return True
    if os.path.samefile(job.source, job.target):
        failures.append(f"{job.source}: output would overwrite the input (use --suffix or another -o)")
        report(failures[-1])
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


def skip_existing(jobs: list[Job], args) -> tuple[list[Job], int]:
    """The jobs still to do, and how many were skipped because their output exists (each said on its line,
    unless -q). With --overwrite, none is skipped."""
    if args.overwrite:
        return jobs, 0
    todo = [job for job in jobs if not job.target.exists()]
    if not args.quiet:
        for job in jobs:
            if job.target.exists():
                say(f"{job.target}: skipped (exists)")
    return todo, len(jobs) - len(todo)


def writes_frames(job: Job, args) -> bool:
    """True when the job's output is a folder of frames (`mgbp.video.upscale_video`'s rule)."""
    return job.kind != "image" and (args.to_frames or not job.target.suffix)


def check_frame_folders(jobs: list[Job], args) -> None:
    """Before any work: a frame folder that --overwrite would write into must hold only frames of an earlier
    run, and never the input (`mgbp.video.check_frames_target`); a refusal ends the run (ConfigError)."""
    if not args.overwrite:
        return  # an existing output is skipped or reported, never written into
    from mgbp.video import check_frames_target

    for job in jobs:
        if writes_frames(job, args):
            check_frames_target(job.source, job.target)


# ------------------------------------------------------------------------------------------- the command's lines


def report(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"mgbp upscale: skipped {message}", file=sys.stderr)  # above the progress bar, if any


def say(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"mgbp upscale: {message}", file=sys.stderr)
