"""Image I/O: round trips, 16-bit PNGs from an independent encoder (Octave), EXIF orientation, bad inputs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from mgbp.errors import ConfigError, ImageReadError
from mgbp.io import IMAGE_EXTENSIONS, from_tensor, read_image, to_tensor, write_image

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def as_int(values: np.ndarray, bit_depth: int) -> np.ndarray:
    top = 255 if bit_depth == 8 else 65535
    return np.round(values.astype(np.float64) * top).astype(np.int64)


def random_image(shape, bit_depth=8, seed=0) -> np.ndarray:
    top = 256 if bit_depth == 8 else 65536
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.random.default_rng(seed).integers(0, top, shape).astype(dtype)


def octave_fixture_values() -> np.ndarray:
    """The samples io_make_png16.m writes, recomputed here (row i, column j, channel c)."""
    i, j, c = np.meshgrid(np.arange(12), np.arange(16), np.arange(4), indexing="ij")
    return np.mod(i * 1021 + j * 517 + c * 3001 + np.mod(i * j * 31 + c * 7, 23), 65536)


# --------------------------------------------------------------------------------------- 16-bit PNG


@pytest.mark.parametrize("name", ["rgb", "rgba", "ga", "gray"])
def test_16bit_png_written_by_octave_reads_exactly(name):
    expected = octave_fixture_values()
    image = read_image(FIXTURES / f"io_png16_{name}.png")
    assert image.bit_depth == 16
    channels = 3 if name.startswith("rgb") else 1
    assert image.rgb.shape == (12, 16, channels) and image.rgb.dtype == np.float32
    np.testing.assert_array_equal(as_int(image.rgb, 16), expected[..., :channels])
    if name in ("rgba", "ga"):
        np.testing.assert_array_equal(as_int(image.alpha, 16), expected[..., channels])
    else:
        assert image.alpha is None


@pytest.mark.parametrize("channels,with_alpha", [(3, False), (3, True), (1, False), (1, True)])
def test_16bit_png_round_trip(tmp_path, channels, with_alpha):
    pixels = random_image((9, 13, channels), 16, seed=channels)
    alpha = random_image((9, 13), 16, seed=7) if with_alpha else None
    path = write_image(tmp_path / "out.png", pixels, bit_depth=16, alpha=alpha)
    back = read_image(path)
    assert back.bit_depth == 16
    np.testing.assert_array_equal(as_int(back.rgb, 16), pixels)
    if with_alpha:
        np.testing.assert_array_equal(as_int(back.alpha, 16), alpha)
    # Independent check of our encoder: Pillow's own decode keeps the high byte of each sample.
    with Image.open(path) as pil:
        high = np.asarray(pil.convert("RGBA" if with_alpha else ("RGB" if channels == 3 else "I")))
    if channels == 3:
        np.testing.assert_array_equal(high[..., :3], pixels >> 8)
    elif not with_alpha:
        np.testing.assert_array_equal(high, pixels[..., 0])


def adam7_png16(values: np.ndarray) -> bytes:
    """An interlaced (Adam7) 16-bit RGB(A) PNG written here from the PNG spec, rows unfiltered (type 0)."""
    height, width, channels = values.shape
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    raw = b""
    for y0, x0, dy, dx in passes:
        sub = values[y0::dy, x0::dx]
        if sub.size:
            rows = sub.astype(">u2").reshape(sub.shape[0], -1).view(np.uint8)
            raw += np.hstack([np.zeros((sub.shape[0], 1), np.uint8), rows]).tobytes()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [3, 4])
def test_interlaced_16bit_png_reads_exactly(tmp_path, channels):
    values = random_image((11, 13, channels), 16, seed=11)
    (tmp_path / "i.png").write_bytes(adam7_png16(values))
    image = read_image(tmp_path / "i.png")
    np.testing.assert_array_equal(as_int(image.rgb, 16), values[..., :3])
    if channels == 4:
        np.testing.assert_array_equal(as_int(image.alpha, 16), values[..., 3])


def test_16bit_float_input_is_quantised_to_nearest_level(tmp_path):
    levels = np.array([0, 1, 2, 32767, 65534, 65535], dtype=np.float64)
    pixels = (levels / 65535.0).reshape(1, 6, 1).repeat(3, axis=2).astype(np.float32)
    back = read_image(write_image(tmp_path / "f.png", pixels, bit_depth=16))
    np.testing.assert_array_equal(as_int(back.rgb, 16)[0, :, 0], levels.astype(np.int64))


# --------------------------------------------------------------------------------------- 8-bit formats


@pytest.mark.parametrize("channels,with_alpha", [(3, False), (3, True), (1, False), (1, True)])
def test_8bit_png_round_trip(tmp_path, channels, with_alpha):
    pixels = random_image((11, 7, channels), 8, seed=channels)
    alpha = random_image((11, 7), 8, seed=9) if with_alpha else None
    back = read_image(write_image(tmp_path / "out.png", pixels.astype(np.float32) / 255, alpha=alpha))
    assert back.bit_depth == 8
    np.testing.assert_array_equal(as_int(back.rgb, 8), pixels)
    if with_alpha:
        np.testing.assert_array_equal(as_int(back.alpha, 8), alpha)
    with Image.open(tmp_path / "out.png") as pil:  # what another reader sees
        assert pil.mode == {(3, False): "RGB", (3, True): "RGBA", (1, False): "L", (1, True): "LA"}[
            (channels, with_alpha)]


@pytest.mark.parametrize("fmt,ext", [("BMP", ".bmp"), ("TIFF", ".tif"), ("WEBP", ".webp"), ("PNG", ".png")])
def test_reads_formats_written_by_pillow(tmp_path, fmt, ext):
    pixels = random_image((10, 12, 3), 8, seed=3)
    options = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(pixels).save(tmp_path / f"x{ext}", format=fmt, **options)
    assert ext in IMAGE_EXTENSIONS
    np.testing.assert_array_equal(as_int(read_image(tmp_path / f"x{ext}").rgb, 8), pixels)


def test_reads_16bit_grey_tiff(tmp_path):
    pixels = random_image((6, 5), 16, seed=4)
    Image.fromarray(pixels).save(tmp_path / "g.tif")
    image = read_image(tmp_path / "g.tif")
    assert image.bit_depth == 16 and image.rgb.shape == (6, 5, 1)
    np.testing.assert_array_equal(as_int(image.rgb, 16)[..., 0], pixels)


def test_reads_32bit_integer_image_within_16bit_range(tmp_path):
    pixels = random_image((4, 6), 16, seed=5).astype(np.int32)
    Image.fromarray(pixels).save(tmp_path / "i.tif")  # Pillow mode "I"
    image = read_image(tmp_path / "i.tif")
    assert image.mode == "I" and image.bit_depth == 16
    np.testing.assert_array_equal(as_int(image.rgb, 16)[..., 0], pixels)


def test_palette_with_transparency_gives_rgb_and_alpha(tmp_path):
    palette = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30]], dtype=np.uint8)
    indices = np.random.default_rng(1).integers(0, 3, (8, 9)).astype(np.uint8)
    image = Image.frombytes("P", (9, 8), indices.tobytes())
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "p.png", transparency=1)
    loaded = read_image(tmp_path / "p.png")
    assert loaded.mode == "P"
    np.testing.assert_array_equal(as_int(loaded.rgb, 8), palette[indices])
    np.testing.assert_array_equal(as_int(loaded.alpha, 8), np.where(indices == 1, 0, 255))


def test_palette_without_transparency_has_no_alpha(tmp_path):
    image = Image.frombytes("P", (3, 2), bytes([0, 1, 0, 1, 1, 0]))
    image.putpalette([1, 2, 3, 200, 100, 50])
    image.save(tmp_path / "p.png")
    loaded = read_image(tmp_path / "p.png")
    assert loaded.alpha is None
    assert as_int(loaded.rgb, 8)[0, 1].tolist() == [200, 100, 50]


def test_bilevel_image_reads_as_black_and_white(tmp_path):
    bits = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    np.testing.assert_array_equal(as_int(read_image(tmp_path / "b.png").rgb, 8)[..., 0], bits * 255)


def test_jpeg_write_and_read(tmp_path):
    ramp = np.linspace(0, 1, 32, dtype=np.float32)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[None, ::-1]), axis=2)
    high = read_image(write_image(tmp_path / "q.jpg", pixels, quality=98))
    low = read_image(write_image(tmp_path / "q.jpeg", pixels, quality=10))
    error_high, error_low = np.abs(high.rgb - pixels).mean(), np.abs(low.rgb - pixels).mean()
    assert error_high < 0.01 and error_low > 2 * error_high  # `quality` reaches the encoder
    assert high.bit_depth == 8 and high.rgb.shape == (32, 32, 3)


def test_jpeg_refuses_alpha_and_16_bits(tmp_path):
    pixels = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ConfigError, match="alpha"):
        write_image(tmp_path / "a.jpg", pixels, alpha=np.ones((4, 4), np.float32))
    with pytest.raises(ConfigError, match="8-bit"):
        write_image(tmp_path / "a.jpg", pixels, bit_depth=16)
    with pytest.raises(ConfigError, match="cannot write"):
        write_image(tmp_path / "a.gif", pixels)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_icc_profile_and_exif_are_kept(tmp_path, bit_depth):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "mgbp-test-camera"  # Make
    pixels = random_image((5, 6, 3), bit_depth, seed=2)
    back = read_image(write_image(tmp_path / "m.png", pixels, bit_depth=bit_depth, icc_profile=profile,
                                  exif=exif.tobytes()))
    assert back.icc_profile == profile
    kept = Image.Exif()
    kept.load(back.exif)
    assert kept[0x010F] == "mgbp-test-camera"


# --------------------------------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    pixels = random_image((5, 8, 3), 8, seed=orientation)  # non-square, so rotations change the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "o.png", exif=exif.tobytes())
    with Image.open(tmp_path / "o.png") as pil:
        upright = np.asarray(ImageOps.exif_transpose(pil))
    loaded = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(as_int(loaded.rgb, 8), upright)
    kept = Image.Exif()
    kept.load(loaded.exif)
    assert kept.get(0x0112, 1) == 1  # pixels are upright now: the tag must not rotate them again


def test_exif_orientation_also_turns_alpha(tmp_path):
    rgba = random_image((3, 5, 4), 8, seed=8)
    exif = Image.Exif()
    exif[0x0112] = 6  # 90 degrees clockwise
    Image.fromarray(rgba).save(tmp_path / "o.png", exif=exif.tobytes())
    loaded = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(as_int(loaded.alpha, 8), np.rot90(rgba[..., 3], k=-1))


# --------------------------------------------------------------------------------------- bad inputs


def _png_bytes(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def _bad_inputs(folder: Path) -> dict[str, Path]:
    good = folder / "good.png"
    Image.fromarray(random_image((40, 40, 3), 8)).save(good)
    data = good.read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("this is not an image\n")
    (folder / "zero.png").write_bytes(_png_bytes(0, 5))
    Image.fromarray(np.zeros((3, 3), np.float32)).save(folder / "float.tif")  # mode F
    (folder / "adir.png").mkdir()
    return {name: folder / f"{name}" for name in
            ["missing.png", "truncated.png", "text.png", "zero.png", "float.tif", "adir.png"]}


@pytest.mark.parametrize("name", ["missing.png", "truncated.png", "text.png", "zero.png", "float.tif",
                                  "adir.png"])
def test_bad_input_raises_one_line_error_naming_the_file(tmp_path, name):
    path = _bad_inputs(tmp_path)[name]
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message


# --------------------------------------------------------------------------------------- atomic writes


def test_failed_write_leaves_no_temporary_file_and_keeps_old_target(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    write_image(target, np.zeros((4, 4, 3), np.float32))
    before = target.read_bytes()

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        write_image(target, np.ones((4, 4, 3), np.float32))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_write_creates_missing_folders(tmp_path):
    path = write_image(tmp_path / "a" / "b" / "c.png", np.zeros((2, 3), np.float32))
    assert read_image(path).rgb.shape == (2, 3, 1)


# --------------------------------------------------------------------------------------- tensors


def test_tensor_helpers():
    pixels = random_image((4, 5, 3), 8)
    tensor = to_tensor(pixels)
    assert tensor.shape == (1, 3, 4, 5) and tensor.dtype == torch.float32
    assert abs(float(tensor[0, 2, 1, 3]) - pixels[1, 3, 2] / 255.0) < 1e-7
    np.testing.assert_allclose(from_tensor(tensor), pixels / 255.0, atol=1e-7)
    assert to_tensor(random_image((4, 5), 16)).shape == (1, 1, 4, 5)
    with pytest.raises(ConfigError):
        from_tensor(torch.zeros(2, 3, 4, 5))
