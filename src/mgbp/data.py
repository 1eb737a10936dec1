"""Training data for Section IV: HR patches X with their bicubic LR S_f(X) (eqs. 1, 9), image and video.

The degradation is the paper's: MATLAB-exact bicubic downscaling by f (`mgbp.resize.imresize`), with the
LR rounded to 8 bits as in the evaluation protocol (`../shared/data/README.md`).

Design, chosen for exact resumption and for speed on a GPU:
- A sample is a pure function of its global sample number n (and the seed): the image is taken from a
  per-epoch permutation, the crop and the 8 flips/rotations from a generator seeded by (seed, n). Step s of a
  run with global batch B uses samples s*B ... s*B+B-1, rank r of a DistributedDataParallel run takes its own
  contiguous share. So `--resume` only needs the step, and 1 process or N processes see the same data.
- Datasets return uint8 HR crops (cheap slicing of an in-memory uint8 cache). On-the-fly LR is made on the
  training device for the whole batch (`make_training_pair`). To make the LR of a crop identical to the crop
  of the whole image's LR, the HR crop carries a margin of `MARGIN` LR pixels on each side (the antialiased
  bicubic kernel reaches 2 LR pixels), filled by symmetric reflection at image borders exactly as MATLAB's
  imresize pads; the margin is dropped after downscaling.
- Bad inputs (unreadable, smaller than a patch, empty folders) raise errors naming the files; `skip_bad`
  skips them instead and counts them.
- Video clips come from frame folders and video files, and optionally from still photographs panned across
  (`PanningClipDataset`): frame t is the same crop moved by t (vy, vx) HR pixels, a global motion that is
  sub-pixel on the LR grid, which is what lets a 3D network gain from its neighbouring frames (the camera
  pans of Vid4 are of this kind). `MixedClipDataset` draws each clip from one or the other.
"""

from __future__ import annotations

import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mgbp.errors import ConfigError, ImageReadError
from mgbp.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_hidden, list_files, list_frames, round_levels
from mgbp.resize import imresize, imresize_uint8, modcrop

log = logging.getLogger(__name__)

MARGIN = 2  # LR pixels of context around an on-the-fly patch: half the support of the x1/f bicubic kernel


# ----------------------------------------------------------------------------------------------- files
def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted (`mgbp.io.list_files`: hidden files never); a missing
    folder is a ConfigError."""
    folder = Path(folder)
    if not folder.exists():
        raise ConfigError(f"data folder not found: {folder}")
    if folder.is_file():
        return [folder]
    return list_files(folder, IMAGE_EXTENSIONS, recursive=True)


def read_rgb_uint8(path: str | Path) -> np.ndarray:
    """An image file as an HxWx3 uint8 array (grey is replicated, alpha dropped, 16-bit scaled)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64) / 257.0
                arr = round_levels(arr).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            arr = np.array(img.convert("RGB"))  # a writable copy (torch.from_numpy wants one)
    except Exception as exc:  # PIL raises many types for bad files; the user needs the name
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    if arr.size == 0:
        raise ImageReadError(f"empty image {path}")
    return arr


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the header only; errors are ImageReadError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
    except Exception as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    return h, w


@dataclass
class ScanResult:
    paths: list[Path]
    arrays: list[np.ndarray | None]
    sizes: list[tuple[int, int]]
    skipped: list[str] = field(default_factory=list)


def scan_images(paths: list[Path], min_hw: int, cache: bool, skip_bad: bool, what: str) -> ScanResult:
    """Check (and optionally load) every image; collect the bad ones and fail or skip them."""
    from tqdm import tqdm

    result = ScanResult([], [], [])
    bad: list[str] = []
    quiet = len(paths) < 50 or not sys.stderr.isatty()
    for path in tqdm(paths, desc=f"loading {what}", unit="img", disable=quiet, leave=False):
        try:
            arr = read_rgb_uint8(path) if cache else None
            hw = arr.shape[:2] if arr is not None else image_size(path)
        except ImageReadError as exc:
            bad.append(f"{path} (unreadable: {exc.__cause__ or exc})")
            continue
        if min(hw) < min_hw:
            bad.append(f"{path} ({hw[1]}x{hw[0]} is smaller than the {min_hw}x{min_hw} patch)")
            continue
        result.paths.append(path)
        result.arrays.append(arr)
        result.sizes.append(tuple(hw))
    if bad and not skip_bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ImageReadError(f"{len(bad)} bad {what} file(s) (set data.skip_bad=true to skip them): {shown}")
    if bad:
        log.warning("skipped %d bad %s file(s): %s", len(bad), what, "; ".join(bad[:5]))
    result.skipped = bad
    if not result.paths:
        raise ConfigError(f"no usable {what} images" + (f" ({len(bad)} skipped)" if bad else ""))
    return result


# ----------------------------------------------------------------------------------------- sampling
def reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices start..stop-1 folded into [0, length) by symmetric reflection (edge repeated: MATLAB's)."""
    idx = np.mod(np.arange(start, stop), 2 * length)
    return np.where(idx < length, idx, 2 * length - 1 - idx)


def dihedral(arr: np.ndarray, code: int, axes=(0, 1)) -> np.ndarray:
    """One of the 8 flips/rotations (code 0..7) on the two spatial `axes`."""
    if code >= 4:
        arr = np.flip(arr, axis=axes[1])
    return np.rot90(arr, code % 4, axes=axes)


class SampleIndexer:
    """Global sample number n -> (item index, numpy Generator for its crop/augmentation)."""

    def __init__(self, count: int, seed: int):
        self.count = count
        self.seed = seed
        self._epoch, self._perm = None, None  # the last epoch's permutation (consecutive samples share it)

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, 0, epoch]).permutation(self.count)
            self._epoch = epoch
        return self._perm

    def __call__(self, n: int) -> tuple[int, np.random.Generator]:
        item = int(self.permutation(n // self.count)[n % self.count])
        return item, np.random.default_rng([self.seed, 1, n])


class StepBatchSampler:
    """Yields, for steps start..total-1, this rank's list of global sample numbers (see module doc)."""

    def __init__(self, start_step: int, total_steps: int, global_batch: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ConfigError(f"data.batch={global_batch} is not divisible by the {world} processes")
        self.start, self.total = start_step, total_steps
        self.global_batch, self.local = global_batch, global_batch // world
        self.rank = rank

    def __len__(self):
        return max(0, self.total - self.start)

    def __iter__(self):
        for step in range(self.start, self.total):
            base = step * self.global_batch + self.rank * self.local
            yield list(range(base, base + self.local))


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: derive numpy/random seeds from torch's per-worker seed (never shared)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ------------------------------------------------------------------------------------------ images
class ImagePatchDataset(Dataset):
    """Random HR patches from folders of images; returns {"hr": uint8 (3, H, W)} plus "lr" when paired.

    On-the-fly mode: the HR crop is (patch + 2 MARGIN) * scale wide (see module doc); pass the batch to
    `make_training_pair`. Paired mode (`lr_folders`): LR files matched by relative path and stem (a trailing
    `x{scale}` in the LR stem is ignored); HR patch*scale and LR patch crops, no margin.
    """

    def __init__(self, folders, scale: int, patch: int = 48, augment: bool = True, cache: bool = True,
                 lr_folders=None, skip_bad: bool = False, seed: int = 0):
        self.scale, self.patch, self.augment, self.cache = int(scale), int(patch), augment, cache
        folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
        paths = [p for folder in folders for p in list_images(folder)]
        if not paths:
            raise ConfigError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, folders))}")
        self.paired = lr_folders is not None
        scan = scan_images(paths, self.patch * self.scale, cache, skip_bad, "training")
        self.paths, self.arrays, self.sizes, self.skipped = scan.paths, scan.arrays, scan.sizes, scan.skipped
        if self.paired:
            self._pair_lr(folders, lr_folders, skip_bad)
        self.indexer = SampleIndexer(len(self.paths), seed)
        self.margin = 0 if self.paired else MARGIN

    def _pair_lr(self, folders, lr_folders, skip_bad):
        lr_folders = [lr_folders] if isinstance(lr_folders, (str, Path)) else list(lr_folders)
        lr_by_key = {}
        for folder in lr_folders:
            for p in list_images(folder):
                stem = p.stem.removesuffix(f"x{self.scale}")
                lr_by_key[stem.rstrip("_-")] = p
        self.lr_paths, self.lr_arrays, keep, missing = [], [], [], []
        for i, path in enumerate(self.paths):
            lr_path = lr_by_key.get(path.stem)
            if lr_path is None:
                missing.append(str(path))
                continue
            arr = read_rgb_uint8(lr_path) if self.cache else None
            keep.append(i)
            self.lr_paths.append(lr_path)
            self.lr_arrays.append(arr)
        if missing and not skip_bad:
            raise ImageReadError(f"no LR image in {', '.join(map(str, lr_folders))} for {len(missing)} HR "
                                 f"file(s): {'; '.join(missing[:5])}")
        self.skipped += [f"{m} (no LR pair)" for m in missing]
        self.paths = [self.paths[i] for i in keep]
        self.arrays = [self.arrays[i] for i in keep]
        self.sizes = [self.sizes[i] for i in keep]
        if not self.paths:
            raise ConfigError("no HR/LR pairs found")

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, i: int) -> np.ndarray:
        return self.arrays[i] if self.arrays[i] is not None else read_rgb_uint8(self.paths[i])

    def _lr_image(self, i: int) -> np.ndarray:
        return self.lr_arrays[i] if self.lr_arrays[i] is not None else read_rgb_uint8(self.lr_paths[i])

    def __getitem__(self, n: int) -> dict[str, torch.Tensor]:
        i, rng = self.indexer(int(n))
        image = self._image(i)
        f, p, m = self.scale, self.patch, self.margin
        lr_h, lr_w = image.shape[0] // f, image.shape[1] // f  # the modcropped grid
        y = int(rng.integers(0, lr_h - p + 1))
        x = int(rng.integers(0, lr_w - p + 1))
        code = int(rng.integers(0, 8)) if self.augment else 0
        rows = reflect_indices((y - m) * f, (y + p + m) * f, lr_h * f)
        cols = reflect_indices((x - m) * f, (x + p + m) * f, lr_w * f)
        item = {"hr": _to_chw(dihedral(image[rows][:, cols], code))}
        if self.paired:
            lr = self._lr_image(i)
            if lr.shape[0] < lr_h or lr.shape[1] < lr_w:
                raise ImageReadError(f"LR image {self.lr_paths[i]} is {lr.shape[1]}x{lr.shape[0]}, expected at "
                                     f"least {lr_w}x{lr_h} for x{f} of {self.paths[i]}")
            item["lr"] = _to_chw(dihedral(lr[y: y + p, x: x + p], code))
        return item


def _to_chw(arr: np.ndarray) -> torch.Tensor:
    """HxWxC (or TxHxWxC) uint8 -> C-first uint8 tensor."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.permute(2, 0, 1) if t.dim() == 3 else t.permute(3, 0, 1, 2)


# ------------------------------------------------------------------------------------------- video
def discover_sequences(source: str | Path) -> list[Path]:
    """Frame folders and video files under `source`: a folder holding images is one sequence."""
    source = Path(source)
    if not source.exists():
        raise ConfigError(f"video source not found: {source}")
    if source.is_file():
        return [source]
    found = []
    if list_files(source, IMAGE_EXTENSIONS):
        found.append(source)
    for p in sorted(source.iterdir()):
        if is_hidden(p):
            continue
        if p.is_dir():
            found += discover_sequences(p)
        elif p.suffix.lower() in VIDEO_EXTENSIONS:
            found.append(p)
    return found


def read_sequence(path: Path, max_frames: int | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 from a frame folder (`mgbp.io.list_frames`: frame order, as `mgbp upscale` reads it) or
    a video file (PyAV, imported here only)."""
    if path.is_dir():
        frames = [read_rgb_uint8(p) for p in list_frames(path)]
        frames = frames[:max_frames] if max_frames else frames
        if len({f.shape for f in frames}) > 1:
            raise ImageReadError(f"frames in {path} do not all have the same size")
        return np.stack(frames)
    try:
        import av
    except ImportError as exc:
        raise ConfigError(f"reading video file {path} needs PyAV (pip install av)") from exc
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames and len(frames) >= max_frames:
                    break
    except Exception as exc:
        raise ImageReadError(f"cannot decode video {path}: {exc}") from exc
    if not frames:
        raise ImageReadError(f"no frames in video {path}")
    return np.stack(frames)


class VideoClipDataset(Dataset):
    """Random (3, T, H, W) uint8 HR cubes (same crop and flip/rotation on every frame) from sequences.

    Sequences are decoded into memory once. The HR crop carries the same LR margin as images, so
    `make_training_pair` gives each frame's LR exactly as the whole frame's bicubic downscale would.
    """

    def __init__(self, sources, scale: int, patch: int = 48, frames: int = 5, augment: bool = True,
                 skip_bad: bool = False, seed: int = 0, max_frames: int | None = None):
        self.scale, self.patch, self.frames, self.augment = int(scale), int(patch), int(frames), augment
        sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
        paths = [p for s in sources for p in discover_sequences(s)]
        if not paths:
            raise ConfigError(f"no frame folders or video files found in {', '.join(map(str, sources))}")
        self.paths, self.clips, self.skipped = [], [], []
        for path in paths:
            try:
                clip = read_sequence(path, max_frames)
            except ImageReadError as exc:
                if not skip_bad:
                    raise
                self.skipped.append(str(exc))
                continue
            reason = None
            if clip.shape[0] < self.frames:
                reason = f"{path} has {clip.shape[0]} frames, fewer than {self.frames}"
            elif min(clip.shape[1:3]) < self.patch * self.scale:
                reason = f"{path} frames are smaller than the {self.patch * self.scale} patch"
            if reason and not skip_bad:
                raise ImageReadError(reason + " (set data.skip_bad=true to skip it)")
            if reason:
                self.skipped.append(reason)
                continue
            self.paths.append(path)
            self.clips.append(clip)
        if not self.clips:
            raise ConfigError("no usable video sequences" + (f": {'; '.join(self.skipped)}" if self.skipped else ""))
        self.indexer = SampleIndexer(len(self.clips), seed)
        self.margin = MARGIN
        self.paired = False

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, n: int) -> dict[str, torch.Tensor]:
        i, rng = self.indexer(int(n))
        clip = self.clips[i]
        f, p, m = self.scale, self.patch, self.margin
        lr_h, lr_w = clip.shape[1] // f, clip.shape[2] // f
        t = int(rng.integers(0, clip.shape[0] - self.frames + 1))
        y = int(rng.integers(0, lr_h - p + 1))
        x = int(rng.integers(0, lr_w - p + 1))
        code = int(rng.integers(0, 8)) if self.augment else 0
        rows = reflect_indices((y - m) * f, (y + p + m) * f, lr_h * f)
        cols = reflect_indices((x - m) * f, (x + p + m) * f, lr_w * f)
        cube = clip[t: t + self.frames][:, rows][:, :, cols]
        return {"hr": _to_chw(dihedral(cube, code, axes=(1, 2)))}


class PanningClipDataset(ImagePatchDataset):
    """Clips made from still images: the crop moves by (vy, vx) HR pixels per frame, |v| <= `pan`, so its
    LR frames see the scene at sub-pixel offsets. The middle frame is an ordinary patch of the image."""

    def __init__(self, folders, scale: int, patch: int = 48, frames: int = 5, pan: int = 3,
                 augment: bool = True, cache: bool = True, skip_bad: bool = False, seed: int = 0):
        super().__init__(folders, scale, patch, augment, cache, None, skip_bad, seed)
        self.frames, self.pan = int(frames), int(pan)

    def __getitem__(self, n: int) -> dict[str, torch.Tensor]:
        i, rng = self.indexer(int(n))
        image = self._image(i)
        f, p, m = self.scale, self.patch, self.margin
        lr_h, lr_w = image.shape[0] // f, image.shape[1] // f
        y = int(rng.integers(0, lr_h - p + 1))
        x = int(rng.integers(0, lr_w - p + 1))
        vy, vx = (int(v) for v in rng.integers(-self.pan, self.pan + 1, size=2))
        code = int(rng.integers(0, 8)) if self.augment else 0
        cube = []
        for t in range(self.frames):  # a handful of frames: slicing, not pixel loops
            dy, dx = (t - self.frames // 2) * vy, (t - self.frames // 2) * vx
            rows = reflect_indices((y - m) * f + dy, (y + p + m) * f + dy, lr_h * f)
            cols = reflect_indices((x - m) * f + dx, (x + p + m) * f + dx, lr_w * f)
            cube.append(image[rows][:, cols])
        return {"hr": _to_chw(dihedral(np.stack(cube), code, axes=(1, 2)))}


class MixedClipDataset(Dataset):
    """Each clip from `stills` (a PanningClipDataset) with probability `fraction`, else from `videos`."""

    def __init__(self, videos: Dataset | None, stills: Dataset, fraction: float, seed: int = 0):
        if videos is None:
            fraction = 1.0
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"data.stills_fraction must be in [0, 1], got {fraction}")
        self.videos, self.stills, self.fraction, self.seed = videos, stills, float(fraction), seed
        self.margin, self.paired = stills.margin, False

    def __len__(self) -> int:
        return len(self.stills) + (len(self.videos) if self.videos is not None else 0)

    def __getitem__(self, n: int) -> dict[str, torch.Tensor]:
        from_stills = np.random.default_rng([self.seed, 2, int(n)]).random() < self.fraction
        return self.stills[n] if from_stills else self.videos[n]


def clip_dataset(d: dict, scale: int, seed: int) -> Dataset:
    """The clips of a video model's training config `d` (`data.*`): from videos (`train`), from panned stills
    (`stills`), or a mix of both (`stills_fraction` of the clips from the stills)."""
    videos = (VideoClipDataset(d["train"], scale, d["patch"], d["frames"], d["augment"], d["skip_bad"], seed,
                               d["max_frames"]) if d["train"] else None)
    if not d["stills"]:
        if videos is None:
            raise ConfigError("a video model needs data.train (videos) or data.stills (image folders)")
        return videos
    stills = PanningClipDataset(d["stills"], scale, d["patch"], d["frames"], d["pan"], d["augment"], d["cache"],
                                d["skip_bad"], seed)
    return MixedClipDataset(videos, stills, d["stills_fraction"], seed)


# ------------------------------------------------------------------------------ batch -> (lr, hr)
def quantise(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels as MATLAB's uint8 conversion does (`mgbp.io.round_levels`; values stay in [0, 1])."""
    return round_levels(x * 255.0) / 255.0


def make_training_pair(batch: dict[str, torch.Tensor], scale: int, margin: int, device=None,
                       dtype=torch.float32, degradation=None, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 batch -> (LR, HR) float in [0, 1] on `device`; LR made here (on the GPU when training there):
    bicubic, or `degradation(hr, scale, generator)` (`mgbp.degradations.Degradation`, seeded by `generator`)."""
    hr = batch["hr"].to(device, non_blocking=True).to(dtype) / 255.0
    if "lr" in batch:
        return batch["lr"].to(device, non_blocking=True).to(dtype) / 255.0, hr
    if degradation is not None:  # on the whole crop, margin included: blur and resizes see real context
        lr = degradation(hr, scale, generator).to(dtype)
    else:
        lr = quantise(imresize(hr, scale=1.0 / scale))
    if margin:
        m, mf = margin, margin * scale
        lr = lr[..., m:-m, m:-m]
        hr = hr[..., mf:-mf, mf:-mf]
    return lr.contiguous(), hr.contiguous()


# ------------------------------------------------------------------------------------- validation
def load_validation_set(folder, scale: int, max_images: int | None = None
                        ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """[(name, LR (1,3,h,w), HR (1,3,fh,fw))] by the evaluation protocol: modcrop, uint8 MATLAB bicubic."""
    paths = list_images(folder)
    if not paths:
        raise ConfigError(f"no validation images in {folder}")
    out = []
    for path in paths[:max_images] if max_images else paths:
        hr = modcrop(read_rgb_uint8(path), scale)
        if min(hr.shape[:2]) < scale:
            raise ImageReadError(f"validation image {path} is smaller than the x{scale} factor")
        lr = imresize_uint8(hr, 1.0 / scale)
        out.append((path.stem, _to_chw(lr)[None].float() / 255.0, _to_chw(hr)[None].float() / 255.0))
    return out
