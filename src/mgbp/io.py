"""Image I/O at the package boundary: files <-> float arrays in [0, 1].

This is not a paper equation but the boundary every experiment of the paper crosses: the benchmarks
(Table II) read 8-bit PNG ground truth, and the inference outputs (Figs. 1, 10-13) are written back as
images. Pixels leave this module as float32 HxWxC arrays in [0, 1] (C = 3 for colour, 1 for grey), with the
alpha channel, the bit depth, the ICC profile and the EXIF block kept beside them so that an upscaled image
can be written back with the same metadata.

What Pillow does not do for us, and how it is handled:
- EXIF orientation is applied to the pixels here (one numpy transform per orientation tag) and reset to 1 in
  the EXIF block we keep, so a written output is neither rotated twice nor shown sideways.
- 16-bit RGB / RGBA / grey+alpha PNGs and 16-bit RGB / RGBA TIFFs: Pillow decodes them to 8 bits. Its decoders
  (zlib + unfiltering, Adam7 included; libtiff) are fine; only the final "unpack" step keeps the high byte of
  every sample. We decode twice, once keeping the high bytes and once the low bytes (the unpacker of the other
  byte order), and join them: exact, and all the work stays in C.
- 16-bit PNG writing (any channel count) uses a small numpy + zlib encoder (PNG spec, "Up" filter); 16-bit TIFF
  writing, and 8-bit TIFF writing (TIFF 6.0: one Deflate strip, horizontal predictor) lay out the pixels with numpy
  and let Pillow's `ImageFileDirectory_v2` write the tags (ICC profile and EXIF with its nested IFDs, which
  Pillow's libtiff writer cannot store). WebP (lossless, or lossy with a
  quality) and JPEG are 8-bit only; WebP has no grey mode (grey is stored as RGB).
- Every written PNG, JPEG and TIFF carries the marker `SOFTWARE` (a PNG tEXt "Software" chunk, a JPEG comment,
  the TIFF Software tag), so that `mgbp upscale` recognises its own earlier outputs (`is_mgbp_output`).
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
import sys
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image, TiffTags

from mgbp.atomic import atomic_path
from mgbp.errors import ConfigError, ImageReadError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".y4m")
WRITE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
BIT_DEPTHS = {"PNG": (8, 16), "TIFF": (8, 16), "JPEG": (8,), "WEBP": (8,)}  # what each written format holds
LOSSY_FORMATS = ("JPEG", "WEBP")  # the formats `quality` applies to
DEFAULT_JPEG_QUALITY = 95  # WebP without a quality is lossless
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500}  # the largest side each format's encoder takes
SOFTWARE = "mgbp"  # the marker of our outputs (see the module docstring)

EXIF_ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# 16-bit PNG / TIFF rawmodes Pillow unpacks to 8 bits (high byte) -> a rawmode with the same bits per pixel that
# yields the low bytes instead: the other byte order's unpacker (or, for PNG grey+alpha, all four bytes verbatim
# into an RGBA image). "N" is the machine's order (libtiff hands over native samples).
_OTHER_ORDER = {"L": "B", "B": "L", "N": "B" if sys.byteorder == "little" else "L"}
_LOW_BYTE_RAWMODES = {f"{mode};16{order}": f"{mode};16{other}" for mode in ("RGB", "RGBA", "RGBX")
                      for order, other in _OTHER_ORDER.items()} | {"LA;16B": "RGBA"}


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
                mode, rawmode = image.mode, _pending_rawmode(image)
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
            rawmode = _pending_rawmode(image)
            image.load()
            if min(image.size) < 1:
                raise ImageReadError(f"{path}: image has zero size {image.size[0]}x{image.size[1]}")
            if rawmode in _LOW_BYTE_RAWMODES:
                samples, alpha, bit_depth = _read_16_bit_two_pass(path, np.asarray(image), rawmode)
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


def _pending_rawmode(image: Image.Image) -> str | None:
    """Before `load()`: the rawmode Pillow will unpack a PNG or TIFF with (None for other formats, and for
    files whose tiles differ)."""
    tiles = getattr(image, "tile", None) or []
    if image.format not in ("PNG", "TIFF") or not tiles:
        return None
    modes = {_tile_rawmode(tile) for tile in tiles}
    return modes.pop() if len(modes) == 1 else None


def _tile_rawmode(tile) -> str | None:
    args = tile[3]  # PNG: the rawmode; TIFF (raw and libtiff decoders): a tuple that starts with it
    if isinstance(args, str):
        return args
    return args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else None


def _with_rawmode(tile, rawmode: str):
    args = rawmode if isinstance(tile[3], str) else (rawmode, *tile[3][1:])
    replaced = (tile[0], tile[1], tile[2], args)
    # Pillow >= 11 keeps tiles as a namedtuple, older versions as a plain tuple.
    return type(tile)._make(replaced) if hasattr(type(tile), "_make") else replaced


def _decode_with_rawmode(path: Path, rawmode: str) -> np.ndarray:
    """Decode the PNG / TIFF at `path` with another unpacker (same bits per pixel, so the same decoding)."""
    with Image.open(path) as image:
        image.tile = [_with_rawmode(tile, rawmode) for tile in image.tile]
        image.load()
        return np.asarray(image)


def _read_16_bit_two_pass(path: Path, high: np.ndarray, rawmode: str):
    """16-bit samples from Pillow's high-byte decode `high` plus a second, low-byte decode."""
    low = _decode_with_rawmode(path, _LOW_BYTE_RAWMODES[rawmode])
    if rawmode == "LA;16B":  # verbatim bytes: grey hi, grey lo, alpha hi, alpha lo
        grey = low[..., 0].astype(np.uint16) << 8 | low[..., 1]
        alpha = low[..., 2].astype(np.uint16) << 8 | low[..., 3]
        if not np.array_equal(grey >> 8, high[..., 0]):
            raise ImageReadError(f"{path}: inconsistent 16-bit grey+alpha PNG decode")
        return grey[..., None], alpha, 16
    values = high.astype(np.uint16) << 8 | low
    if values.shape[2] == 4:
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
                exif: bytes | None = None, quality: int | None = None) -> Path:
    """Write HxWx3 / HxWx1 / HxW pixels (float in [0, 1], or uint8/uint16) as PNG or TIFF (8/16-bit), JPEG or
    WebP (8-bit).

    The format comes from the extension (`WRITE_FORMATS`). `quality` (1-100) applies to JPEG (default
    `DEFAULT_JPEG_QUALITY`) and WebP (default: lossless; a quality makes it lossy); PNG and TIFF are lossless
    and ignore it. JPEG cannot hold alpha. The file appears atomically (temporary file, then rename).
    """
    path = Path(path)
    pil_format = write_format(path)
    if bit_depth not in BIT_DEPTHS[pil_format]:
        kinds = " or ".join(str(depth) for depth in BIT_DEPTHS[pil_format])
        raise ConfigError(f"{path}: {pil_format} holds {kinds}-bit samples, not {bit_depth} (16-bit: .png or .tiff)")
    if pil_format == "JPEG" and alpha is not None:
        raise ConfigError(f"{path}: JPEG cannot store an alpha channel (use .png, .webp or .tiff)")
    if quality is not None and not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 100):
        raise ConfigError(f"{path}: quality must be a whole number from 1 to 100, got {quality!r}")
    samples = _quantise(_as_hwc(rgb, path), bit_depth)
    check_size_fits(path, *samples.shape[:2])
    alpha_samples = None
    if alpha is not None:
        alpha = np.asarray(alpha)
        alpha = alpha[..., 0] if alpha.ndim == 3 and alpha.shape[2] == 1 else alpha
        if alpha.shape != samples.shape[:2]:
            raise ConfigError(f"{path}: alpha shape {alpha.shape} does not match image {samples.shape[:2]}")
        alpha_samples = _quantise(alpha[..., None], bit_depth)[..., 0]
    if pil_format == "TIFF" or bit_depth == 16:
        encode = encode_tiff if pil_format == "TIFF" else encode_png16
        payload = encode(samples, alpha_samples, icc_profile, exif)
        return write_atomically(path, lambda handle: handle.write(payload))
    pil_image = _pil_image_8bit(samples, alpha_samples)
    options = _pil_options(pil_format, icc_profile, exif, quality)
    return write_atomically(path, lambda handle: pil_image.save(handle, format=pil_format, **options))


def write_format(path) -> str:
    """Pillow's name of the format `write_image` writes at `path` ("PNG", "JPEG", "WEBP", "TIFF"), from its
    extension; ConfigError for any other."""
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in WRITE_FORMATS:
        raise ConfigError(f"{path}: cannot write {extension or 'extensionless'} files "
                          f"(choose one of {', '.join(WRITE_EXTENSIONS)})")
    return WRITE_FORMATS[extension]


def written_bit_depth(path, source_bit_depth: int) -> int:
    """The bit depth an output at `path` keeps of a `source_bit_depth` source: the same where the format holds
    it (PNG, TIFF), else 8 (JPEG, WebP)."""
    return source_bit_depth if source_bit_depth in BIT_DEPTHS[write_format(path)] else 8


def check_size_fits(path, height: int, width: int) -> None:
    """ConfigError when an image of this size cannot be stored in `path`'s format (WebP: 16383 pixels a side,
    JPEG: 65500), before anything is written."""
    pil_format = write_format(path)
    limit = MAX_SIDE.get(pil_format)
    if limit is not None and max(height, width) > limit:
        raise ConfigError(f"{Path(path).name}: {width}x{height} is larger than {pil_format} can store ({limit} pixels "
                          f"a side); use png or tiff")


def holds_alpha(path) -> bool:
    """Whether the format written at `path` can store an alpha channel (all but JPEG)."""
    return write_format(path) != "JPEG"


def _pil_options(pil_format: str, icc_profile: bytes | None, exif: bytes | None, quality: int | None) -> dict:
    """Pillow's save options for an 8-bit file: metadata, the marker, compression and quality."""
    options: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if exif:
        options["exif"] = exif
    if pil_format == "PNG":
        from PIL.PngImagePlugin import PngInfo

        marker = PngInfo()
        marker.add_text("Software", SOFTWARE)
        options["pnginfo"] = marker
    elif pil_format == "JPEG":
        options.update(quality=int(quality or DEFAULT_JPEG_QUALITY), comment=SOFTWARE)
    elif quality is None:  # WebP: lossless, the colour under transparent pixels kept too
        options.update(lossless=True, exact=True)
    else:
        options.update(quality=int(quality))
    return options


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
    chunks.append(_png_chunk(b"tEXt", b"Software\x00" + SOFTWARE.encode()))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)))
    chunks.append(_png_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)


TIFF_SOFTWARE, TIFF_DEFLATE, TIFF_HORIZONTAL_PREDICTOR, TIFF_UNASSOCIATED_ALPHA = 305, 8, 2, 2


def encode_tiff(samples: np.ndarray, alpha: np.ndarray | None = None, icc_profile: bytes | None = None,
                exif: bytes | None = None) -> bytes:
    """An 8-bit (uint8 samples) or 16-bit (uint16) little-endian TIFF (grey, grey+alpha, RGB or RGBA; TIFF 6.0
    baseline tags) as bytes: one strip, Deflate-compressed after the horizontal predictor (each sample minus its
    left neighbour's, modulo 2^bits). The EXIF tags join the first IFD, their own IFDs nested. 16-bit grey with
    alpha is stored as RGBA (Pillow reads no 16-bit grey+alpha TIFF)."""
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    height, width, channels = samples.shape
    if channels == 1 and alpha is not None and samples.dtype == np.uint16:
        samples, channels = np.repeat(samples, 3, axis=2), 3  # 16-bit grey+alpha: RGBA, which Pillow can read
    planes = samples if alpha is None else np.concatenate([samples, alpha[..., None]], axis=2)
    count, bits = planes.shape[2], 8 * planes.dtype.itemsize
    predicted = planes.copy()
    predicted[:, 1:] -= planes[:, :-1]  # unsigned arithmetic wraps modulo 2^bits
    strip = zlib.compress(predicted.astype(f"<u{bits // 8}").tobytes(), 6)
    tags = ImageFileDirectory_v2(prefix=b"II")
    if exif:
        source = Image.Exif()
        source.load(exif)
        for tag in source:
            nested = tag in TiffTags.TAGS_V2_GROUPS  # the Exif / GPS / Interop IFDs
            tags[tag] = source.get_ifd(tag) if nested else source.get(tag)  # types follow the tag or value
    image_tags = {256: width, 257: height, 258: (bits,) * count, 259: TIFF_DEFLATE, 262: 1 if channels == 1 else 2,
                  273: (0,), 277: count, 278: height, 279: (len(strip),), 284: 1, 317: TIFF_HORIZONTAL_PREDICTOR,
                  339: (1,) * count, TIFF_SOFTWARE: SOFTWARE}
    for tag, value in image_tags.items():
        tags[tag] = value
    if alpha is not None:
        tags[338] = (TIFF_UNASSOCIATED_ALPHA,)  # ExtraSamples
    if icc_profile:
        tags[34675] = icc_profile
    buffer = BytesIO()
    tags.save(buffer)  # the header and the IFD; the strip offset is made to point right after them
    return buffer.getvalue() + strip


def is_mgbp_output(path) -> bool:
    """True for an image file that carries our marker (`SOFTWARE`, see `write_image`); False for any other file,
    an unreadable one included."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                if image.format == "PNG":
                    return image.info.get("Software") == SOFTWARE
                if image.format == "JPEG":
                    return image.info.get("comment") in (SOFTWARE, SOFTWARE.encode())
                if image.format == "TIFF":
                    return image.tag_v2.get(TIFF_SOFTWARE) == SOFTWARE
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError):
        pass
    return False


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
    # a writable copy where needed: torch.from_numpy warns on read-only arrays (np.asarray of a PIL image)
    array = np.ascontiguousarray(array, dtype=np.float32)
    tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
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

