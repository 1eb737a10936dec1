"""`mgbp eval`: the quantitative evaluation of the paper's Table II (PSNR-Y / SSIM-Y), with NIQE and RMSE
(the perception and distortion axes of Fig. 14) on request.

The protocol and the methods are those of `mgbp.protocol` (`shared/data/README.md`): HR -> modcrop(scale) ->
LR = MATLAB bicubic 1/scale on uint8 (or a paired LR image) -> method -> round to uint8 -> PSNR-Y, SSIM-Y and
RMSE (PIRM-2018: rounded uint8 Y) with `scale` pixels ignored at every border, NIQE likewise (PIRM-2018: Y,
`scale` pixels shaved; `mgbp.protocol.niqe_y`, as `mgbp sweep` measures it). Scores are averaged over the images of a dataset. Methods run through `mgbp.tiling.run_model` (tiled for large
images); with noise W > 0, image i draws its noise with torch's RNG seeded to `seed + i`, so results do not
depend on the order of evaluation. An image too small for the protocol, or unreadable, is skipped.

Other tools' outputs (`--sr DIR ...`, one method per folder, labelled by its name): the images another program
made from the protocol's LR images (`--save-lr` writes them) are matched to the HR images by name
(`mgbp.protocol.output_stems`: `baby.png`, `baby_x4.png`, `babyx4.png`, `baby_SR.png`, `baby_x4_SR.png`,
`baby_out.png`, `baby_SwinIR.png`, any image extension and case, in DIR/<dataset folder name>/ or DIR) and
scored with the same protocol; an output of the wrong size, missing or ambiguous skips that image for that
method with a one-line warning. NIQE on fewer than `NIQE_FEW_BLOCKS` 96x96 blocks gets a warning. LPIPS and
DISTS (`--lpips`, `--dists`, `mgbp.metrics.learned`) run through pyiqa only when it and its weight files are
already installed; otherwise they are skipped with the reason.

Degraded test sets (`--degrade SPEC ...`, `mgbp.degradations.parse_degrade_spec`: `jpeg:40`, `noise:10`,
`blur:1.2`, combined with `+`, `none` for the clean protocol): the protocol's uint8 LR is degraded after the
MATLAB bicubic downscale (JPEG with Pillow at 4:2:0; noise seeded per image by its name and `--seed`), then the
same methods and scores; each spec is a dataset of its own in the tables, labelled `Set14 [jpeg:40]`.

The command line (options, printed tables, output files) is `mgbp.commands.eval`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mgbp.backprojection import check_steps
from mgbp.errors import ConfigError, ImageReadError, MgbpError
from mgbp.io import read_image, write_image
from mgbp.protocol import (
    BICUBIC,
    NIQE_FEW_BLOCKS,
    BicubicUpscaler,
    find_method_output,
    find_paired_lr,
    from_uint8,
    is_bicubic,
    list_images,
    load_generator,
    method_labels,
    niqe_block_count,
    niqe_y,
    protocol_pair,
    psnr_y,
    resolve_device,
    rmse_y,
    ssim_y,
    upscale_uint8,
)
from mgbp.resize import modcrop
from mgbp.tiling import check_self_ensemble

PROTOCOL = ("HR -> modcrop(scale) -> LR = MATLAB bicubic 1/scale on uint8 (or paired LR) -> method -> round "
            "to uint8; PSNR-Y / SSIM-Y (MATLAB rgb2ycbcr Y, 11x11 Gaussian SSIM) and RMSE (0-255, rounded "
            "uint8 Y as in PIRM-2018) and NIQE (Y, as in PIRM-2018) ignoring `scale` border pixels; means over "
            "images")


@dataclass
class ImageScore:
    dataset: str
    scale: int
    method: str
    image: str
    psnr_y: float
    ssim_y: float
    niqe: float | None = None
    rmse: float | None = None
    lpips: float | None = None
    dists: float | None = None


@dataclass
class Summary:
    dataset: str
    scale: int
    method: str
    count: int
    psnr_y: float
    ssim_y: float
    niqe: float | None = None
    rmse: float | None = None
    lpips: float | None = None
    dists: float | None = None


@dataclass
class EvalResults:
    """Everything one evaluation produced; `to_dict()` is the JSON document."""

    images: list[ImageScore] = field(default_factory=list)
    summary: list[Summary] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}
    image_counts: dict[str, int] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def mean(self, dataset: str, scale: int, method: str) -> Summary:
        for row in self.summary:
            if (row.dataset, row.scale, row.method) == (dataset, scale, method):
                return row
        raise KeyError((dataset, scale, method))

    def to_dict(self) -> dict:
        return {
            "protocol": PROTOCOL,
            "settings": self.settings,
            "image_counts": self.image_counts,
            "summary": [asdict(s) for s in self.summary],
            "images": [asdict(s) for s in self.images],
            "skipped": self.skipped,
        }


# ------------------------------------------------------------------------------------------------- methods


@dataclass
class Method:
    """A way to upscale a uint8 LR image: bicubic (`model` None: any scale), or a generator of one scale."""

    label: str
    spec: str
    model: torch.nn.Module | None = None
    self_ensemble: bool = False  # the mean over the 8 flips/rotations (label ends in SELF_ENSEMBLE_SUFFIX)
    consistent: bool = False  # projected onto S_f(Y) = LR (label ends in CONSISTENT_SUFFIX)
    consistent_steps: int | None = None  # this many back-projection iterations (label: +BP<steps>)
    outputs: Path | None = None  # a folder of another tool's outputs, read instead of upscaling (`--sr`)

    def supports(self, scale: int) -> bool:
        return self.model is None or int(self.model.scale) == scale

    def upscale(self, lr: np.ndarray, scale: int, noise: float, tile: int | None, seed: int) -> np.ndarray:
        """uint8 HxWx3 LR -> uint8 (scale*H)x(scale*W)x3 output, rounded as MATLAB rounds to uint8."""
        model = BicubicUpscaler(scale) if self.model is None else self.model
        return upscale_uint8(model, lr, noise, seed=seed, tile=tile, self_ensemble=self.self_ensemble,
                             consistent=self.consistent, consistent_steps=self.consistent_steps)

    def output_for(self, hr_path: Path, hr: np.ndarray, lr: np.ndarray, scale: int, noise: float,
                   tile: int | None, seed: int) -> np.ndarray:
        """The uint8 output to score for one image: another tool's, read from `outputs`, or `upscale`'s."""
        if self.outputs is None:
            return self.upscale(lr, scale, noise, tile, seed)
        return read_method_output(self.outputs, hr_path, hr, scale)


def read_method_output(folder: Path, hr_path: Path, hr: np.ndarray, scale: int) -> np.ndarray:
    """Another tool's output of `hr_path` (`mgbp.protocol.find_method_output`) as uint8 RGB, the size of the
    modcropped HR `hr`; an output of the un-modcropped HR's size is modcropped the same way (top-left grid).
    Any other size is an `ImageReadError`."""
    path = find_method_output(folder, hr_path, scale)
    output = read_image(path).rgb_uint8()
    if output.shape[:2] != hr.shape[:2] and modcrop(output, scale).shape[:2] == hr.shape[:2]:
        output = modcrop(output, scale)
    if output.shape[:2] != hr.shape[:2]:
        raise ImageReadError(f"{path}: {output.shape[1]}x{output.shape[0]} does not match the x{scale} HR "
                             f"{hr_path.name} {hr.shape[1]}x{hr.shape[0]} (after modcrop)")
    return output


def output_folder_methods(folders: Sequence, scales: Sequence[int], taken: set[str]) -> list[Method]:
    """One method per folder of another tool's outputs, labelled by the folder's name (its path when that
    name is already a method's). Checked before any work: the folders exist, one scale is evaluated."""
    folders = [Path(f) for f in folders]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"--sr {folder}: not a folder of images")
    if folders and len(scales) != 1:
        raise ConfigError(f"--sr scores outputs of one scale; give one --scale (got {', '.join(map(str, scales))})")
    labels = dataset_names(folders)
    return [Method(str(folder) if label in taken else label, str(folder), outputs=folder)
            for folder, label in zip(folders, labels)]


SELF_ENSEMBLE_SUFFIX = "+SE"  # as EDSR's "+" models: the same weights, averaged over the 8 symmetries
CONSISTENT_SUFFIX = "+BP"  # the output back-projected onto S_f(Y) = LR (`mgbp upscale --consistent`)


def load_methods(specs: Sequence[str], device: str | None, self_ensemble: bool = False,
                 consistent: bool = False, consistent_steps: int | None = None) -> list[Method]:
    """Methods for the specs; with `self_ensemble` every generator runs as its 8-symmetry mean (bicubic, which
    is symmetric already, stays as it is); with `consistent` every method's output, bicubic's too, is projected
    onto S_f(Y) = LR (in `consistent_steps` iterations when given: labels `+BP<steps>`)."""
    methods = []
    bp = (CONSISTENT_SUFFIX + ("" if consistent_steps is None else str(consistent_steps))) if consistent else ""
    for spec, label in zip(specs, method_labels(specs)):
        if is_bicubic(spec):
            methods.append(Method(label + bp, spec, consistent=consistent, consistent_steps=consistent_steps))
        else:
            suffix = (SELF_ENSEMBLE_SUFFIX if self_ensemble else "") + bp
            methods.append(Method(label + suffix, spec, load_generator(spec, device=device), self_ensemble,
                                  consistent=consistent, consistent_steps=consistent_steps))
    return methods


# ------------------------------------------------------------------------------------------------- data


def dataset_names(folders: Sequence[Path]) -> list[str]:
    """Folder names (an image file: its stem); when two share a name, their parent's name tells them apart."""
    names = [Path(f).resolve().stem if Path(f).is_file() else Path(f).resolve().name for f in folders]
    return [f"{Path(f).resolve().parent.name}/{n}" if names.count(n) > 1 else n for f, n in zip(folders, names)]


def read_pairs(path: Path, scales: Sequence[int], lr_root: Path | None) -> dict[int, tuple]:
    """{scale: (modcropped HR, LR)} uint8 arrays of one dataset image (LR paired from `lr_root` if given)."""
    hr = read_image(path).rgb_uint8()
    return {scale: protocol_pair(hr, scale, None if lr_root is None else find_paired_lr(lr_root, path, scale),
                                 source=path) for scale in scales}


# ------------------------------------------------------------------------------------------------- metrics


def score(output: np.ndarray, reference: np.ndarray, scale: int, with_niqe: bool, with_rmse: bool) -> dict:
    """PSNR-Y, SSIM-Y (and RMSE, NIQE) of one uint8 output against its uint8 reference.

    RMSE and NIQE are the PIRM-2018 ones (`mgbp.protocol.rmse_y`, `niqe_y`, as `mgbp sweep` measures them);
    NIQE is None when the image, its border shaved, is too small for it (96x96 blocks)."""
    out, ref = from_uint8(output, torch.float64), from_uint8(reference, torch.float64)
    values = {"psnr_y": psnr_y(out, ref, scale), "ssim_y": ssim_y(out, ref, scale)}
    if with_rmse:
        values["rmse"] = rmse_y(out, ref, scale)
    if with_niqe:
        try:
            values["niqe"] = niqe_y(out, ref, scale)
        except MgbpError:  # too small for NIQE's blocks: the other metrics still stand
            values["niqe"] = None
    return values


def summarise(images: Sequence[ImageScore]) -> list[Summary]:
    """Means over the images of each (dataset, scale, method), in first-seen order."""
    groups: dict[tuple, list[ImageScore]] = {}
    for row in images:
        groups.setdefault((row.dataset, row.scale, row.method), []).append(row)

    def mean(rows, key):  # over the images that have the metric (NIQE skips images below 96x96)
        values = [getattr(r, key) for r in rows if getattr(r, key) is not None]
        return float(np.mean(values)) if values else None

    return [Summary(d, s, m, len(rows), mean(rows, "psnr_y"), mean(rows, "ssim_y"), mean(rows, "niqe"),
                    mean(rows, "rmse"), mean(rows, "lpips"), mean(rows, "dists"))
            for (d, s, m), rows in groups.items()]


# ------------------------------------------------------------------------------------------------- API


def evaluate(datasets: Sequence, scales: Sequence[int] = (4,), methods: Sequence[str] = (BICUBIC,),
             noise: float = 0.0, niqe: bool = False, rmse: bool = False, lr_dirs: Sequence | None = None,
             tile: int | None = None, device: str | None = None, save_images=None, seed: int = 0,
             strict: bool = False, progress: bool = True, warn=None, self_ensemble: bool = False,
             degrade: Sequence[str] | None = None, sr_dirs: Sequence | None = None,
             learned: Sequence[str] = (), save_lr=None, consistent: bool = False,
             consistent_steps: int | None = None) -> EvalResults:
    """Evaluate `methods` on every image of every dataset folder at every scale (see the module docstring).

    An unreadable image is skipped and listed in `results.skipped` (and passed to `warn`), unless `strict`,
    in which case it raises `ImageReadError`. Missing or empty folders and bad options raise `MgbpError`s.
    `self_ensemble`: generators run as the mean over the 8 flips/rotations (W = 0 only; labels get "+SE").
    `consistent`: every method's output is back-projected onto S_f(Y) = LR before scoring (labels get "+BP"),
    in `consistent_steps` iterations when given (labels "+BP<steps>").
    `degrade`: specs of degraded test sets (module docstring); each dataset is scored once per spec.
    `sr_dirs`: folders of other tools' outputs, scored as methods (module docstring). `learned`: "lpips" and/or
    "dists", measured when pyiqa and its local weights are there, else skipped with a warning. `save_lr`: a
    folder where the protocol's LR images are written (DIR/<dataset>/x<scale>/<image>.png), the inputs to give
    another tool.
    """
    folders = [Path(d) for d in datasets]
    scales = _check_options(folders, scales, noise, lr_dirs, tile)
    degradations = _parse_degradations(degrade)
    if self_ensemble:
        check_self_ensemble(noise)
    device = resolve_device(device)
    if sr_dirs and any(label is not None for label, _ in degradations):
        raise ConfigError("--sr scores outputs made elsewhere: --degrade does not apply to them")
    check_steps(consistent, consistent_steps)
    if consistent and sr_dirs:
        raise ConfigError("--sr scores outputs made elsewhere as they are: --consistent does not apply to them")
    loaded = load_methods(list(methods) or ([] if sr_dirs else [BICUBIC]), device, self_ensemble, consistent,
                          consistent_steps)
    loaded += output_folder_methods(sr_dirs or [], scales, {m.label for m in loaded})
    jobs = _method_scale_jobs(loaded, scales)
    names = dataset_names(folders)
    listings = [list_images(f) for f in folders]  # fail fast on a bad folder, before any work
    results = EvalResults(settings={
        "datasets": [str(f) for f in folders], "scales": scales, "methods": [m.spec for m in loaded],
        "noise": float(noise), "seed": int(seed), "tile": tile, "device": device, "self_ensemble": self_ensemble,
        "consistent": consistent, "consistent_steps": consistent_steps,
        "lr_dirs": None if lr_dirs is None else [str(d) for d in lr_dirs],
        "degrade": [label for label, _ in degradations],
        "sr_dirs": [str(m.outputs) for m in loaded if m.outputs is not None],
    })
    warn = warn or (lambda message: print(f"mgbp eval: warning: {message}", file=sys.stderr))
    scorers = learned_scorers(learned, device, warn)
    results.settings["learned_metrics"] = sorted(scorers)
    for index, (dataset, paths) in enumerate(zip(names, listings)):
        lr_root = None if lr_dirs is None else Path(lr_dirs[index])
        for label, steps in degradations:
            name = dataset if label is None else f"{dataset} [{label}]"
            done = _evaluate_dataset(name, paths, jobs, lr_root, results, noise=noise, niqe=niqe, rmse=rmse,
                                     tile=tile, save_images=save_images, seed=seed, strict=strict,
                                     progress=progress, warn=warn, degrade=steps, scorers=scorers,
                                     save_lr=save_lr)
            if done == 0:
                raise ImageReadError(f"dataset {folders[index]}: none of its {len(paths)} images could be read")
            results.image_counts[name] = done
    results.summary = summarise(results.images)
    return results


def _check_options(folders, scales, noise, lr_dirs, tile) -> list[int]:
    if not folders:
        raise ConfigError("give at least one dataset folder")
    scales = list(dict.fromkeys(int(s) for s in scales))
    if not scales or min(scales) < 1:
        raise ConfigError(f"scales must be integers >= 1, got {scales}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ConfigError(f"--noise must be a finite number >= 0, got {noise}")
    if lr_dirs is not None and len(lr_dirs) != len(folders):
        raise ConfigError(f"--lr needs one folder per --data folder ({len(folders)}), got {len(lr_dirs)}")
    if lr_dirs is not None:
        for folder in lr_dirs:
            if not Path(folder).is_dir():
                raise ConfigError(f"paired LR folder {folder} does not exist")
    if tile is not None and tile < 1:
        raise ConfigError(f"--tile must be a positive number of LR pixels, got {tile}")
    return scales


def learned_scorers(names: Sequence[str], device: str, warn) -> dict:
    """{name: scorer} of the learned metrics that can run here without a download; the others are skipped
    with their reason passed to `warn` (`mgbp.metrics.learned`)."""
    from mgbp.metrics.learned import LearnedScorer, unavailable

    scorers = {}
    for name in dict.fromkeys(names):
        reason = unavailable(name)
        if reason is None:
            scorers[name] = LearnedScorer(name, device)
        else:
            warn(reason)
    return scorers


def _parse_degradations(specs: Sequence[str] | None) -> list[tuple[str | None, tuple]]:
    """[(label, steps)] for the `--degrade` specs; `none` (or no specs) is the clean protocol (label None)."""
    from mgbp.degradations import parse_degrade_spec, spec_label

    parsed = []
    for spec in specs or ["none"]:
        if str(spec).strip().lower() in ("none", "clean"):
            parsed.append((None, ()))
        else:
            steps = parse_degrade_spec(spec)
            parsed.append((spec_label(steps), steps))
    labels = [label for label, _ in parsed]
    repeated = sorted({str(label) for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"--degrade {repeated[0]} given twice")
    return parsed


def _method_scale_jobs(methods: Sequence[Method], scales: Sequence[int]) -> list[tuple[int, Method]]:
    """(scale, method) pairs to run: a generator runs only at its own scale."""
    for method in methods:
        if not any(method.supports(s) for s in scales):
            raise ConfigError(f"method {method.label} upscales x{method.model.scale}, but the scales asked "
                              f"for are {', '.join(f'x{s}' for s in scales)}")
    return [(s, m) for s in scales for m in methods if m.supports(s)]


def _evaluate_dataset(name, paths, jobs, lr_root, results: EvalResults, *, noise, niqe, rmse, tile,
                      save_images, seed, strict, progress, warn, degrade=(), scorers=None, save_lr=None) -> int:
    """Score every (image, scale, method) of one dataset into `results`; returns the images evaluated."""
    from tqdm import tqdm

    done, warned = 0, set()
    bar = tqdm(paths, desc=name, unit="img", disable=True if not progress else None, file=sys.stderr)
    for index, path in enumerate(bar):
        try:
            pairs = read_pairs(path, list(dict.fromkeys(s for s, _ in jobs)), lr_root)
        except ImageReadError as exc:
            if strict:
                raise
            results.skipped.append({"path": str(path), "reason": str(exc)})
            warn(f"skipped: {exc}")
            continue
        for scale, method in jobs:
            hr, lr = pairs[scale]
            if degrade:  # after the protocol's downscale; seeded by the image, not by its place in the folder
                from mgbp.degradations import degrade_uint8, image_seed

                lr = degrade_uint8(lr, degrade, image_seed(path.stem, seed))
            if save_lr is not None:
                write_image(Path(save_lr) / name / f"x{scale}" / f"{path.stem}.png", lr)
            try:
                output = method.output_for(path, hr, lr, scale, noise, tile, seed + index)
            except ImageReadError as exc:  # another tool's output missing or mismatched: this method only
                if strict:
                    raise
                results.skipped.append({"path": str(path), "method": method.label, "reason": str(exc)})
                warn(f"skipped for {method.label}: {exc}")
                continue
            values = score(output, hr, scale, niqe, rmse)
            if niqe and values["niqe"] is not None:
                _warn_few_niqe_blocks(path, output, scale, warn, warned)
            for metric, scorer in (scorers or {}).items():
                values[metric] = scorer(from_uint8(output), from_uint8(hr), scale)
            if niqe and values["niqe"] is None:
                warn(f"{path}: x{scale} {method.label} output is too small for NIQE (needs 96x96 after the "
                     f"{scale}-pixel border shave); left out")
            results.images.append(ImageScore(name, scale, method.label, path.stem, **values))
            if save_images is not None:
                target = Path(save_images) / name / f"x{scale}" / method.label / f"{path.stem}.png"
                write_image(target, output)
        done += 1
    bar.close()
    return done


def _warn_few_niqe_blocks(path: Path, output: np.ndarray, scale: int, warn, warned: set) -> None:
    """Once per (image, scale): NIQE fits its statistics over the 96x96 blocks of the shaved output."""
    blocks = niqe_block_count(output.shape[0], output.shape[1], scale)
    if blocks < NIQE_FEW_BLOCKS and (path, scale) not in warned:
        warned.add((path, scale))
        warn(f"{path}: x{scale} NIQE rests on {blocks} block(s) of 96x96 ({output.shape[1]}x{output.shape[0]} "
             f"output, {scale}-pixel border shaved): too few for a stable figure")
