"""Image I/O at the package boundary: files <-> float arrays in [0, 1].

This is not a paper equation but the boundary every experiment of the paper crosses: the benchmarks
(Table II) read 8-bit PNG ground truth, and the inference outputs (Figs. 1, 10-13) are written back as
images. Pixels leave this module as float32 HxWxC arrays in [0, 1] (C = 3 for colour, 1 for grey), with the
alpha channel, the bit depth, the ICC profile and the EXIF block kept beside them so that an upscaled image
can be written back with the same metadata.

What Pillow does not do for us, and how it is handled:
- EXIF orientation is applied to the pixels here (one numpy transform per orientation tag) and reset to 1 in
  the EXIF block we keep, so a written output is neither rotated twice nor shown sideways.
- 16-bit RGB / RGBA / grey+alpha PNGs: Pillow decodes them to 8 bits. The PNG decoder (zlib + unfiltering,
  Adam7 included) is fine; only its final "unpack" step keeps the high byte of every sample. We decode twice,
  once keeping the high bytes and once the low bytes, and join them: exact, and all the work stays in C.
- 16-bit PNG writing (any channel count) uses a small numpy + zlib encoder (PNG spec, "Up" filter).
All writes are atomic: a temporary file in the target folder, then `os.replace`.

This module owns the pixel boundary for the whole package, so that every command agrees on it:
- the file kinds: `IMAGE_EXTENSIONS` (what `read_image` reads), `VIDEO_EXTENSIONS` (what PyAV reads, for
  `mgbp upscale` and training alike), `WRITE_EXTENSIONS` (what `write_image` writes);
- the one folder lister, `list_files` (and `list_frames`, in frame order): hidden files and folders, among them
  the `.NAME.tmp-*` temporaries of `mgbp.atomic`, are never listed;
- the one conversion of float pixels to integers, `quantise` (`round_levels` on the integer scale): clipped and
  rounded half away from zero, as MATLAB's uint8()/uint16() and so the evaluation protocol
  (`../shared/data/README.md`) round, whatever writes the result (an image, a video frame, a score).
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mgbp.atomic import atomic_path
from mgbp.errors import ConfigError, ImageReadError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".y4m")
WRITE_EXTENSIONS = (".png", ".jpg", ".jpeg")

EXIF_ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# 16-bit PNG rawmodes Pillow unpacks to 8 bits (high byte) -> a rawmode with the same bits per pixel that
# yields the low bytes instead (or, for grey+alpha, all four bytes verbatim into an RGBA image).
_LOW_BYTE_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}


@dataclass
class LoadedImage:
    """A decoded image: `rgb` float32 HxWx3 (or HxWx1 for grey) in [0, 1] and what to write it back with."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    mode: str
    icc_profile: bytes | None
    exif: bytes | None

    def rgb_uint8(self) -> np.ndarray:
        """HxWx3 uint8 (grey repeated to three channels; 16-bit rounded to 8 bits), as benchmarks use."""
        image = quantise(self.rgb)
        return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


# ----------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, without decoding its pixels."""

    width: int
    height: int
    planes: int  # decoded colour planes (1 grey, 3 colour; palettes are colour) plus 1 for alpha
    bit_depth: int  # 8 or 16, as `read_image` returns it
    frames: int  # > 1 for animated GIF / PNG / WebP; `read_image` decodes the first


def peek_image(path) -> ImageHeader:
    """Size, planes, bit depth and frame count from the header alone (Pillow opens files lazily), so that a
    caller can refuse a file that would not fit in memory before decoding it. ImageReadError as `read_image`."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller checks the size itself
            with Image.open(path) as image:
                mode, rawmode = image.mode, _pending_png_rawmode(image)
                alpha = "A" in mode or "a" in mode or (mode in ("P", "PA") and "transparency" in image.info)
                colour = 1 if mode in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F") else 3
                deep = mode.startswith("I") or rawmode in _LOW_BYTE_RAWMODES
                return ImageHeader(image.size[0], image.size[1], colour + int(alpha), 16 if deep else 8,
                                   int(getattr(image, "n_frames", 1) or 1))
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise ImageReadError(f"{path}: cannot read image ({_one_line(exc)})") from None


def read_image(path) -> LoadedImage:
    """Read PNG/JPEG/BMP/TIFF/WebP (8/16-bit, grey, RGBA, palette) with EXIF orientation applied.

    Raises `ImageReadError` (one line naming the file) for a missing, non-image, truncated, empty or
    unsupported file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with Image.open(path) as image:
            rawmode = _pending_png_rawmode(image)
            image.load()
            if min(image.size) < 1:
                raise ImageReadError(f"{path}: image has zero size {image.size[0]}x{image.size[1]}")
            if rawmode in _LOW_BYTE_RAWMODES:
                samples, alpha, bit_depth = _read_png16_two_pass(path, np.asarray(image), rawmode)
            else:
                samples, alpha, bit_depth = _samples_of(path, image)
            icc_profile = image.info.get("icc_profile") or None
            exif_block = image.getexif()
            orientation = int(exif_block.get(EXIF_ORIENTATION, 1) or 1)
            exif = _exif_bytes_without_orientation(exif_block)
            mode = image.mode
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise ImageReadError(f"{path}: cannot read image ({_one_line(exc)})") from None
    samples = apply_orientation(samples, orientation)
    alpha = None if alpha is None else apply_orientation(alpha, orientation)
    scale = 255.0 if bit_depth == 8 else 65535.0
    rgb = (samples.astype(np.float32) / np.float32(scale))
    alpha = None if alpha is None else alpha.astype(np.float32) / np.float32(scale)
    return LoadedImage(rgb=rgb, alpha=alpha, bit_depth=bit_depth, mode=mode, icc_profile=icc_profile,
                       exif=exif)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _samples_of(path: Path, image: Image.Image):
    """Integer samples HxWxC (C = 1 or 3), alpha HxW or None, and the bit depth (8 or 16)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image).astype(np.uint16)[..., None], None, 16
    if mode == "I":
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageReadError(f"{path}: 32-bit integer image with values outside 0..65535 is unsupported")
        return values.astype(np.uint16)[..., None], None, 16
    if mode == "1":
        return (np.asarray(image).astype(np.uint8) * 255)[..., None], None, 8
    if mode == "L":
        return np.asarray(image)[..., None], None, 8
    if mode == "LA" or mode == "La":
        values = np.asarray(image.convert("LA") if mode == "La" else image)
        return values[..., :1], values[..., 1], 8
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in ("RGBA", "RGBa"):
        values = np.asarray(image.convert("RGBA") if mode == "RGBa" else image)
        return values[..., :3], values[..., 3], 8
    if mode in ("RGB", "RGBX", "CMYK", "YCbCr"):
        return np.asarray(image.convert("RGB") if mode != "RGB" else image), None, 8
    raise ImageReadError(f"{path}: unsupported image mode {mode!r}")


def _pending_png_rawmode(image: Image.Image) -> str | None:
    """Before `load()`: the rawmode Pillow will unpack a PNG with (None for other formats)."""
    tile = getattr(image, "tile", None) or []
    if image.format != "PNG" or len(tile) != 1 or not isinstance(tile[0][3], str):
        return None
    return tile[0][3]


def _decode_png_with_rawmode(path: Path, rawmode: str) -> np.ndarray:
    """Decode the PNG at `path` with another unpacker (same bits per pixel, so the same unfiltering)."""
    with Image.open(path) as image:
        tile = image.tile[0]
        replaced = (tile[0], tile[1], tile[2], rawmode)
        # Pillow >= 11 keeps tiles as a namedtuple, older versions as a plain tuple.
        image.tile = [type(tile)._make(replaced) if hasattr(type(tile), "_make") else replaced]
        image.load()
        return np.asarray(image)


def _read_png16_two_pass(path: Path, high: np.ndarray, rawmode: str):
    """16-bit samples from Pillow's high-byte decode `high` plus a second, low-byte decode."""
    low = _decode_png_with_rawmode(path, _LOW_BYTE_RAWMODES[rawmode])
    if rawmode == "LA;16B":  # verbatim bytes: grey hi, grey lo, alpha hi, alpha lo
        grey = low[..., 0].astype(np.uint16) << 8 | low[..., 1]
        alpha = low[..., 2].astype(np.uint16) << 8 | low[..., 3]
        if not np.array_equal(grey >> 8, high[..., 0]):
            raise ImageReadError(f"{path}: inconsistent 16-bit grey+alpha PNG decode")
        return grey[..., None], alpha, 16
    values = high.astype(np.uint16) << 8 | low
    if rawmode == "RGBA;16B":
        return values[..., :3], values[..., 3], 16
    return values, None, 16


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF orientation 1..8 upright (HxW or HxWxC arrays)."""
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],                       # mirrored left-right
        3: lambda a: a[::-1, ::-1],                    # rotated 180
        4: lambda a: a[::-1, :],                       # mirrored top-bottom
        5: lambda a: np.swapaxes(a, 0, 1),             # transposed
        6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],    # needs 90 degrees clockwise
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],  # transversed
        8: lambda a: np.swapaxes(a, 0, 1)[::-1, :],    # needs 90 degrees counter-clockwise
    }
    return np.ascontiguousarray(transforms.get(orientation, transforms[1])(array))


def _exif_bytes_without_orientation(exif_block) -> bytes | None:
    if len(exif_block) == 0:
        return None
    if EXIF_ORIENTATION in exif_block:
        exif_block[EXIF_ORIENTATION] = 1
    return exif_block.tobytes()


# ----------------------------------------------------------------------------------------------- writing


def write_image(path, rgb, bit_depth: int = 8, alpha=None, icc_profile: bytes | None = None,
                exif: bytes | None = None, quality: int = 95) -> Path:
    """Write HxWx3 / HxWx1 / HxW pixels (float in [0, 1], or uint8/uint16) as PNG (8/16-bit) or JPEG.

    The format comes from the extension. The file appears atomically (temporary file, then rename).
    """
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in WRITE_EXTENSIONS:
        raise ConfigError(f"{path}: cannot write {extension or 'extensionless'} files "
                          f"(choose one of {', '.join(WRITE_EXTENSIONS)})")
    if bit_depth not in (8, 16):
        raise ConfigError(f"{path}: bit depth must be 8 or 16, got {bit_depth}")
    is_jpeg = extension in (".jpg", ".jpeg")
    if is_jpeg and bit_depth != 8:
        raise ConfigError(f"{path}: JPEG is 8-bit only (use .png for 16-bit output)")
    if is_jpeg and alpha is not None:
        raise ConfigError(f"{path}: JPEG cannot store an alpha channel (use .png)")
    samples = _quantise(_as_hwc(rgb, path), bit_depth)
    alpha_samples = None
    if alpha is not None:
        alpha = np.asarray(alpha)
        alpha = alpha[..., 0] if alpha.ndim == 3 and alpha.shape[2] == 1 else alpha
        if alpha.shape != samples.shape[:2]:
            raise ConfigError(f"{path}: alpha shape {alpha.shape} does not match image {samples.shape[:2]}")
        alpha_samples = _quantise(alpha[..., None], bit_depth)[..., 0]
    if bit_depth == 16:
        payload = encode_png16(samples, alpha_samples, icc_profile, exif)
        return write_atomically(path, lambda handle: handle.write(payload))
    pil_image = _pil_image_8bit(samples, alpha_samples)
    options = {"icc_profile": icc_profile} if icc_profile else {}
    if exif:
        options["exif"] = exif
    if is_jpeg:
        options.update(quality=int(quality))
    pil_format = "JPEG" if is_jpeg else "PNG"
    return write_atomically(path, lambda handle: pil_image.save(handle, format=pil_format, **options))


def _as_hwc(rgb, path: Path) -> np.ndarray:
    array = np.asarray(rgb)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or min(array.shape[:2]) < 1:
        raise ConfigError(f"{path}: expected HxWx3, HxWx1 or HxW pixels, got shape {array.shape}")
    return array


def _quantise(array: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float in [0, 1] (clipped) or uint8/uint16 -> integers of `bit_depth` bits."""
    if array.dtype == np.uint8:
        return array if bit_depth == 8 else array.astype(np.uint16) * 257
    if array.dtype == np.uint16:
        return array if bit_depth == 16 else round_levels(array / 257.0).astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise ConfigError(f"pixels must be float in [0, 1], uint8 or uint16, got {array.dtype}")
    return quantise(array, bit_depth)


def _pil_image_8bit(samples: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    """uint8 HxWx1 / HxWx3 (+ alpha) -> a Pillow image of mode L, LA, RGB or RGBA."""
    if alpha is not None:
        samples = np.concatenate([samples, alpha[..., None]], axis=2)
    return Image.fromarray(samples[..., 0] if samples.shape[2] == 1 else np.ascontiguousarray(samples))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(samples: np.ndarray, alpha: np.ndarray | None = None, icc_profile: bytes | None = None,
                 exif: bytes | None = None) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA) as bytes; every row uses the "Up" filter (type 2)."""
    height, width, channels = samples.shape
    planes = samples if alpha is None else np.concatenate([samples, alpha[..., None]], axis=2)
    colour_type = {(1, False): 0, (1, True): 4, (3, False): 2, (3, True): 6}[(channels, alpha is not None)]
    rows = planes.astype(">u2").reshape(height, -1).view(np.uint8)  # big-endian bytes, one row per line
    # "Up": each byte minus the byte above it, modulo 256 (the row above the first row is zero).
    previous = np.vstack([np.zeros((1, rows.shape[1]), np.uint8), rows[:-1]])
    filtered = rows - previous  # uint8 arithmetic wraps modulo 256
    scanlines = np.hstack([np.full((height, 1), 2, np.uint8), filtered])
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    if icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        # PNG's eXIf chunk holds the TIFF structure without JPEG's "Exif\0\0" preamble.
        chunks.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)))
    chunks.append(_png_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)


def write_atomically(path, write) -> Path:
    """Write through `write(handle)` (binary) into a temporary file beside `path`, then rename it into place.

    Readers never see a half-written file, and a failed write leaves any previous file untouched."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        write(handle)
    return Path(path)


# ----------------------------------------------------------------------------------------------- integers


def round_levels(values, top: int = 255):
    """Values on the integer scale (0..`top`) rounded half away from zero and clipped to [0, `top`], MATLAB's
    conversion of doubles to uint8 (`top` 255) or uint16 (65535). A numpy array or a torch tensor; the same
    kind and float dtype come back, holding whole numbers.

    floor(x + 0.5) is not used: for x = 0.49999999999999994 the sum rounds up to 1.0 in floating point. The
    fractional part x - floor(x) is exact, so `frac >= 0.5` decides every tie and near-tie correctly; negative
    values end at 0 whichever way they round, so the clip makes "away from zero" below 0 moot.
    """
    library = torch if torch.is_tensor(values) else np
    whole = library.floor(values)
    rounded = whole + ((values - whole) >= 0.5)
    return library.clip(rounded, 0, top)


def quantise(pixels, bit_depth: int = 8) -> np.ndarray:
    """Float pixels in [0, 1] (numpy or torch, any shape) -> a uint8 (`bit_depth` 8) or uint16 (16) numpy array:
    scaled in float64 (exact for float32 input), rounded half away from zero and clipped (`round_levels`); NaN
    becomes 0. The package's one float -> integer conversion (images, video frames, evaluation)."""
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit depth must be 8 or 16, got {bit_depth}")
    top = 255 if bit_depth == 8 else 65535
    if torch.is_tensor(pixels):
        pixels = pixels.detach().to("cpu", torch.float64).numpy()
    values = np.nan_to_num(np.asarray(pixels, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0) * top
    return round_levels(values, top).astype(np.uint8 if bit_depth == 8 else np.uint16)


# ----------------------------------------------------------------------------------------------- folders


def is_hidden(path, root=None) -> bool:
    """A name starting with "." (a hidden file, or our `.NAME.tmp-*` temporaries), for `path` itself or, with
    `root`, for any part of it below `root`."""
    path = Path(path)
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return any(part.startswith(".") for part in parts)


def list_files(folder, extensions: Sequence[str], recursive: bool = False,
               key: Callable[[Path], object] | None = None) -> list[Path]:
    """The files in `folder` (and below it with `recursive`) whose extension, in any case, is one of
    `extensions`, sorted by path (or by `key`). Hidden files and folders are never listed (`is_hidden`): a
    killed run's temporaries are not inputs. The one folder lister of the package; what to do with an empty
    list or a missing folder is the caller's to say."""
    folder = Path(folder)
    wanted = {extension.lower() for extension in extensions}
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in candidates if p.suffix.lower() in wanted and not is_hidden(p, folder) and p.is_file()]
    return sorted(files, key=key)


def frame_order(path: Path) -> list:
    """Sort key of frame files: the name with its numbers compared as numbers (frame2 before frame10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_frames(folder) -> list[Path]:
    """The image files of a frame folder in frame order (`frame_order`), hidden files left out."""
    return list_files(folder, IMAGE_EXTENSIONS, key=frame_order)


# ----------------------------------------------------------------------------------------------- tensors


def to_tensor(array) -> torch.Tensor:
    """HxWxC (or HxW) array -> float32 tensor (1, C, H, W); uint8/uint16 are scaled to [0, 1]."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ConfigError(f"to_tensor expects HxWxC or HxW, got shape {array.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return tensor.permute(2, 0, 1).unsqueeze(0).contiguous()


def from_tensor(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) tensor -> float32 HxWxC numpy array (not clamped)."""
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ConfigError(f"from_tensor expects one image, got a batch of {tensor.shape[0]}")
        tensor = tensor[0]
    if tensor.dim() != 3:
        raise ConfigError(f"from_tensor expects (1, C, H, W) or (C, H, W), got {tuple(tensor.shape)}")
    return tensor.detach().to("cpu", torch.float32).permute(1, 2, 0).contiguous().numpy()

