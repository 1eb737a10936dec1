"""The work behind `mgbp serve`'s page, free of any web framework (tested directly): the generator's forward
pass (Algorithm 1) through the same library calls as `mgbp upscale`, so the page's files equal the command's.

- images: `mgbp.image_files.upscale_image_file` (the command's reader, tiling, writer), noise seeded with the
  command's default seed, so a PNG from the page equals `mgbp upscale -W w` pixel for pixel;
- the live preview: `mgbp.region.upscale_region`, a crop with its context and the crop of the whole image's
  noise map, equal to the same region of the full render;
- the image's own perception curve: NIQE (`mgbp.metrics.niqe`, the paper's perception index, eq. 14) of a
  region against W (the knob of Algorithm 1 line 1 that trades distortion for perception, Fig. 14);
- videos: `mgbp.video.upscale_video` (windows of frames, audio re-muxed).

Outputs go into one folder per job under the engine's work folder; folders older than JOB_DIR_LIFETIME_S are
removed when a new job starts (the web framework has served or copied them by then), all of them on `close`.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgbp.atomic import atomic_path
from mgbp.device import resolve_device
from mgbp.errors import ConfigError
from mgbp.image_files import image_planes, output_name, upscale_image_file
from mgbp.inference import InferenceOptions, check_noise_amplitude, resolve_model
from mgbp.io import read_image
from mgbp.region import Region, draw_image_noise, upscale_region
from mgbp.resize import imresize
from mgbp.tiling import crops_noise, model_scale
from mgbp.web.jobs import DeviceQueue, Job

AUTO_MODEL = "auto"  # the shipped model for the chosen scale, as `mgbp upscale -s` picks it
WEIGHT_FILE = "weight file"  # the model comes from an uploaded weight file
SEED = 0  # `mgbp upscale`'s default --seed: the page's noise is the command's
PREVIEW_SIDE = 64  # LR pixels on a side of the live preview's region
CURVE_OUTPUT_SIDE = 480  # output pixels on a side of the NIQE curve's region: 25 of NIQE's 96-pixel blocks
NIQE_BLOCK = 96
CURVE_AMPLITUDES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
JOB_DIR_LIFETIME_S = 600
CACHED_MODELS = 4  # uploaded weight files kept loaded (shipped models are always kept)
CRF_RANGE = (0, 51)  # x264's constant rate factor


@dataclass
class ImageRender:
    outputs: list[Path]  # one per input, named as `mgbp upscale` names them
    download: Path  # the output itself when there is one, else a zip of them all
    before: Path  # bicubic upscale of the first input (8-bit PNG), for the comparison slider
    after: Path  # the first output


@dataclass
class Preview:
    before: np.ndarray  # uint8 HxWx3 (or x4 with alpha): bicubic upscale of the region
    after: np.ndarray  # the region of the full render
    region: Region  # in LR pixels
    exact: bool  # False for models whose noise cannot be cropped from the whole image's (at W > 0)


@dataclass
class Curve:
    amplitudes: list[float]
    niqe: list[float]
    current: tuple[float, float]  # (W, NIQE) of the current setting
    region: Region  # in LR pixels
    figure: Path


class Engine:
    """Models, images and jobs of one server: one device, one job at a time on it."""

    def __init__(self, device: str | None = None, work_root: str | Path | None = None):
        self.device = str(resolve_device(device))  # `mgbp serve --device`: checked before the server starts
        self.queue = DeviceQueue(self.device)
        self.work_root = Path(work_root) if work_root else Path(tempfile.mkdtemp(prefix="mgbp-serve-"))
        self.jobs_root = self.work_root / "jobs"
        self.jobs_root.mkdir(parents=True, exist_ok=True)
        self._models: OrderedDict[tuple, torch.nn.Module] = OrderedDict()
        self._images: OrderedDict[tuple, tuple] = OrderedDict()
        self._noise: tuple[tuple, object] | None = None  # (key, whole-image noise map) of the last preview
        self._digests: dict[tuple, str] = {}  # (path, size, mtime) -> sha256 of uploaded weight files
        self._lock = threading.Lock()

    def close(self) -> None:
        shutil.rmtree(self.work_root, ignore_errors=True)

    # ---------------------------------------------------------------------------------------------- models

    def model(self, choice: str | None, scale: int | None = None, weight_file: str | Path | None = None,
              video: bool = False):
        """A ready generator: a shipped name, AUTO_MODEL (the shipped model for `scale`, the video model for
        videos) or WEIGHT_FILE (`weight_file`, read as `mgbp upscale -m FILE` reads it: safetensors, or the
        authors' .model through the weights-only loader); ConfigError/WeightFileError for a bad choice or a
        scale the model does not have."""
        from mgbp.models import SHIPPED, default_model_for_scale, load_model

        choice = (choice or AUTO_MODEL).strip()
        scale = _optional_int(scale, "scale")
        if choice == WEIGHT_FILE:
            if not weight_file:
                raise ConfigError("upload a weight file (.safetensors, or the authors' .model) or pick a model")
            key, source = ("file", self._file_digest(Path(weight_file))), str(weight_file)
        else:
            name = default_model_for_scale(scale or _default_scale(), video) if choice == AUTO_MODEL else choice
            if name not in SHIPPED:
                raise ConfigError(f"unknown model {choice!r}: choose {AUTO_MODEL!r}, one of {', '.join(SHIPPED)}, "
                                  f"or {WEIGHT_FILE!r}")
            key, source = ("shipped", name), name
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = load_model(source)
                self._models[key] = model
                uploaded = [k for k in self._models if k[0] == "file"]
                for old in uploaded[:-CACHED_MODELS]:
                    del self._models[old]
            self._models.move_to_end(key)
        return resolve_model(model, scale, device=self.device)

    def _file_digest(self, path: Path) -> str:
        """sha256 of an uploaded weight file, remembered while the file is unchanged (previews ask often)."""
        try:
            stat = path.stat()
        except OSError as exc:
            raise ConfigError(f"{path.name}: cannot read the weight file ({exc.strerror or exc})") from None
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = _sha256(path)
        return self._digests[key]

    # ---------------------------------------------------------------------------------------------- images

    def image(self, path: str | Path):
        """(LoadedImage, planes (1, C, H, W)) of an image file, cached for the previews that follow."""
        path = Path(path)
        stat = path.stat() if path.is_file() else None
        key = (str(path), stat.st_mtime_ns if stat else None, stat.st_size if stat else None)
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        loaded = read_image(path)
        entry = (loaded, image_planes(loaded))
        with self._lock:
            self._images[key] = entry
            while len(self._images) > 2:
                self._images.popitem(last=False)
        return entry

    def source_view(self, path: str | Path, point: tuple[float, float] | None = None) -> tuple[np.ndarray, Region]:
        """The image as 8-bit RGB with the preview region outlined, and that region."""
        _, planes = self.image(path)
        region = self.preview_region(planes, point)
        view = to_display(planes)[..., :3].copy()
        outline = max(1, min(view.shape[:2]) // 200)
        rows, cols = region.slices()
        for band in (slice(region.top, region.top + outline), slice(region.bottom - outline, region.bottom)):
            view[band, cols] = (255, 64, 0)
        for band in (slice(region.left, region.left + outline), slice(region.right - outline, region.right)):
            view[rows, band] = (255, 64, 0)
        return view, region

    @staticmethod
    def preview_region(planes: torch.Tensor, point: tuple[float, float] | None, side: int = PREVIEW_SIDE) -> Region:
        height, width = planes.shape[-2:]
        y, x = point if point is not None else (height / 2, width / 2)
        return Region.centred(y, x, side, height, width)

    def preview(self, path: str | Path, model, noise: float, point: tuple[float, float] | None = None,
                session: str | None = None) -> Preview:
        """The region around `point` (row, column; default the centre) of the full render at W = `noise`, and the
        bicubic upscale of the same region."""
        check_noise_amplitude(noise)
        _, planes = self.image(path)
        region = self.preview_region(planes, point)
        with self.queue.run(model, session=session):
            noise_map = self._noise_map(path, model, planes) if noise > 0 else None
            after = upscale_region(model, planes, region, noise, SEED, noise_map)
        before = bicubic_region(planes, region, model_scale(model))
        exact = noise == 0 or crops_noise(model)
        return Preview(to_display(before), to_display(after), region, exact)

    def _noise_map(self, path, model, planes):
        """The whole image's standard-normal map (W only scales it), kept while the image and model stay."""
        key = (str(path), tuple(planes.shape), id(model))
        if self._noise is None or self._noise[0] != key:
            self._noise = None  # free the old map before drawing the new one
            self._noise = (key, draw_image_noise(model, planes, 1.0, SEED))
        return self._noise[1]

    def render(self, paths: list[str | Path], model, noise: float, session: str | None = None,
               job: Job | None = None, on_image=None, progress: bool = True) -> ImageRender:
        """Upscale every image as `mgbp upscale` does (same files), into a fresh job folder. `session`: who may
        cancel it (`DeviceQueue.cancel`); `job`: its cancel flag and progress callback; `on_image(index, count,
        name)` before each image; `progress`: the library's tqdm bar of tiles."""
        check_noise_amplitude(noise)
        if not paths:
            raise ConfigError("upload one or more images first")
        scale = model_scale(model)
        job_dir = self.new_job_dir()
        try:
            targets = _unique_targets([Path(p) for p in paths], job_dir, scale)
            with self.queue.run(model, job=job, session=session):
                for index, (path, target) in enumerate(zip(paths, targets)):
                    if on_image is not None:
                        on_image(index, len(paths), Path(path).name)
                    upscale_image_file(path, target, model, InferenceOptions(noise=noise, seed=SEED,
                                                                             progress=progress))
            download = targets[0] if len(targets) == 1 else zip_files(targets, job_dir / f"mgbp_x{scale}.zip")
            _, planes = self.image(paths[0])
            before = job_dir / "bicubic" / f"{Path(paths[0]).stem}_bicubic.png"
            write_display_png(before, imresize(planes, scale=scale).clamp(0.0, 1.0))
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        return ImageRender(targets, download, before, targets[0])

    def curve(self, path: str | Path, model, noise: float, point: tuple[float, float] | None = None,
              session: str | None = None, amplitudes=CURVE_AMPLITUDES) -> Curve:
        """NIQE of a region around `point` at each W of `amplitudes` and at `noise`, with a figure."""
        from mgbp.metrics import niqe

        check_noise_amplitude(noise)
        _, planes = self.image(path)
        scale = model_scale(model)
        region = self.preview_region(planes, point, side=math.ceil(CURVE_OUTPUT_SIDE / scale))
        if scale * min(region.height, region.width) < NIQE_BLOCK:
            raise ConfigError(f"the image is too small for NIQE: its upscaled size must be at least "
                              f"{NIQE_BLOCK}x{NIQE_BLOCK} pixels")
        values = {}
        with self.queue.run(model, session=session):
            noise_map = self._noise_map(path, model, planes) if crops_noise(model) else None
            for w in sorted({float(a) for a in amplitudes} | {float(noise)}):
                out = upscale_region(model, planes, region, w, SEED, noise_map if w > 0 else None)
                colour = out[:, :1] if planes.shape[1] in (1, 2) else out[:, :3]
                values[w] = float(niqe(colour)[0])
        grid = [float(a) for a in amplitudes]
        job_dir = self.new_job_dir()
        result = Curve(grid, [values[w] for w in grid], (float(noise), values[float(noise)]), region,
                       job_dir / "niqe_curve.png")
        try:
            plot_curve(result, result.figure)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        return result

    # ---------------------------------------------------------------------------------------------- videos

    def render_video(self, path: str | Path, model, noise: float, crf: int = 18, max_frames: int | None = None,
                     session: str | None = None, job: Job | None = None, progress: bool = True) -> Path:
        """`mgbp upscale VIDEO` with this W and CRF: frames through the model, audio and subtitles re-muxed."""
        from mgbp.video import upscale_video
        from mgbp.video_options import VideoOptions

        check_noise_amplitude(noise)
        crf = _optional_int(crf, "quality (CRF)")
        if crf is None or not CRF_RANGE[0] <= crf <= CRF_RANGE[1]:
            raise ConfigError(f"quality (CRF) must be an integer from {CRF_RANGE[0]} to {CRF_RANGE[1]}, got {crf}")
        max_frames = _optional_int(max_frames, "frames") or None
        if max_frames is not None and max_frames < 0:
            raise ConfigError(f"frames must be 0 (all) or more, got {max_frames}")
        source = Path(path)
        job_dir = self.new_job_dir()
        target = job_dir / f"{source.stem}_x{model_scale(model)}{source.suffix.lower() or '.mp4'}"
        options = VideoOptions(crf=crf, noise=noise, seed=SEED, max_frames=max_frames, progress=progress)
        try:
            with self.queue.run(model, job=job, session=session):
                upscale_video(source, target, model, options)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        return target

    # ---------------------------------------------------------------------------------------------- files

    def new_job_dir(self) -> Path:
        """A fresh folder for one job's outputs; folders older than JOB_DIR_LIFETIME_S go first."""
        cutoff = time.time() - JOB_DIR_LIFETIME_S
        for old in self.jobs_root.iterdir():
            try:
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:  # removed by a concurrent job
                pass
        return Path(tempfile.mkdtemp(prefix="job-", dir=self.jobs_root))


def to_display(planes: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in [0, 1] -> uint8 HxWx3 (grey repeated) or HxWx4 (with alpha), rounded."""
    channels = planes.shape[1]
    colour = planes[:, :1].expand(-1, 3, -1, -1) if channels in (1, 2) else planes[:, :3]
    layers = [colour, planes[:, -1:]] if channels in (2, 4) else [colour]
    image = torch.cat(layers, dim=1)[0].permute(1, 2, 0).clamp(0.0, 1.0)
    return (image * 255.0).round().to(torch.uint8).numpy()


def write_display_png(path: Path, planes: torch.Tensor) -> Path:
    from PIL import Image

    pixels = to_display(planes)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB").save(temporary, format="PNG")
    return path


def bicubic_region(planes: torch.Tensor, region: Region, scale: int) -> torch.Tensor:
    """MATLAB bicubic upscale of `region`, cut from a crop with 2 pixels of context (the kernel's reach), so it
    equals the region of the whole image's bicubic upscale."""
    height, width = planes.shape[-2:]
    top, left = max(0, region.top - 2), max(0, region.left - 2)
    crop = planes[..., top:min(height, region.bottom + 2), left:min(width, region.right + 2)]
    up = imresize(crop.float(), scale=scale).clamp(0.0, 1.0)
    inner = Region(region.top - top, region.left - left, region.height, region.width).scaled(scale)
    rows, cols = inner.slices()
    return up[..., rows, cols]


def zip_files(paths: list[Path], target: Path) -> Path:
    """A zip of `paths` under their names (stored: PNG and JPEG are compressed already), written atomically."""
    with atomic_path(target) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as archive:
        for path in paths:
            archive.write(path, arcname=path.name)
    return target


def plot_curve(curve: Curve, path: Path) -> Path:
    """NIQE against W, the current W marked."""
    from mgbp.plotting import require_pyplot, save_figure

    plt = require_pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.4))
    try:
        axis.plot(curve.amplitudes, curve.niqe, "-o", markersize=4, label="NIQE")
        axis.plot(*curve.current, "*", markersize=14, color="tab:red", label=f"current W = {curve.current[0]:g}")
        axis.set_xlabel("noise amplitude W (0: fidelity, 1: perception)")
        axis.set_ylabel("NIQE (lower looks more natural)")
        r = curve.region
        axis.set_title(f"this image's {r.height}x{r.width} region at ({r.top}, {r.left})", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        save_figure(figure, path, dpi=110)
    finally:
        plt.close(figure)
    return path


def _unique_targets(paths: list[Path], job_dir: Path, scale: int) -> list[Path]:
    """Output paths named as `mgbp upscale` names them; a repeated name gets a counter."""
    targets, seen = [], set()
    for path in paths:
        name = output_name(path, scale)
        stem, suffix, count = Path(name).stem, Path(name).suffix, 1
        while name.lower() in seen:
            count += 1
            name = f"{stem}-{count}{suffix}"
        seen.add(name.lower())
        targets.append(job_dir / name)
    return targets


def _optional_int(value, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{what} must be a whole number, got {value!r}")
    return int(number)


def _default_scale() -> int:
    from mgbp.models.weights import DEFAULT_SCALE

    return DEFAULT_SCALE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ConfigError(f"{path.name}: cannot read the weight file ({exc.strerror or exc})") from None
    return digest.hexdigest()
