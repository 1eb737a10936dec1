"""`mgbp upscale` on images and folders: metadata round trips, folder mode, bad files, never overwriting inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mgbp import io, models
from mgbp.cli import main
from mgbp.resize import imresize


def expected_rgb(network, rgb: np.ndarray) -> np.ndarray:
    """Independent path: the network's forward pass on the whole float image, clamped."""
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        return network(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()


def upscale(*args) -> int:
    return main(["upscale", "-q", *map(str, args)])


def random_image(shape, dtype=np.uint8, seed=0):
    top = 255 if dtype == np.uint8 else 65535
    return np.random.default_rng(seed).integers(0, top + 1, shape, dtype=dtype)


def test_rgba_png_keeps_alpha(tmp_path, weights, network):
    pixels = random_image((10, 12, 4))
    Image.fromarray(pixels, "RGBA").save(tmp_path / "in.png")
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "out.png", "-m", weights) == 0
    out = io.read_image(tmp_path / "out.png")
    assert out.rgb.shape == (40, 48, 3) and out.alpha is not None
    alpha = imresize(torch.from_numpy(pixels[..., 3] / 255.0), scale=4).clamp(0, 1).numpy()
    assert np.abs(out.alpha - alpha).max() <= 1 / 255 + 1e-6
    assert np.abs(out.rgb - expected_rgb(network, pixels[..., :3] / 255.0)).max() <= 1 / 255 + 1e-6


def test_16_bit_stays_16_bit(tmp_path, weights, network):
    pixels = random_image((9, 11, 3), np.uint16)
    io.write_image(tmp_path / "deep.png", pixels, bit_depth=16)
    assert upscale(tmp_path / "deep.png", "-o", tmp_path / "out.png", "-m", weights) == 0
    out = io.read_image(tmp_path / "out.png")
    assert out.bit_depth == 16
    assert np.abs(out.rgb - expected_rgb(network, pixels / 65535.0)).max() <= 1 / 65535 + 1e-6


def test_grey_stays_grey_and_palette_becomes_rgb(tmp_path, weights, network):
    grey = random_image((8, 10))
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    palette = Image.fromarray(random_image((8, 10, 3), seed=1)).convert("P", palette=Image.Palette.ADAPTIVE,
                                                                        colors=8)
    palette.save(tmp_path / "palette.png")
    assert upscale(tmp_path / "grey.png", tmp_path / "palette.png", "-o", tmp_path / "out", "-m", weights) == 0
    grey_out = io.read_image(tmp_path / "out" / "grey.png")
    assert grey_out.rgb.shape == (32, 40, 1)
    expected = expected_rgb(network, np.repeat(grey[..., None] / 255.0, 3, axis=2)).mean(axis=2)
    assert np.abs(grey_out.rgb[..., 0] - expected).max() <= 1 / 255 + 1e-6
    palette_out = io.read_image(tmp_path / "out" / "palette.png")
    expected = expected_rgb(network, np.asarray(palette.convert("RGB")) / 255.0)
    assert np.abs(palette_out.rgb - expected).max() <= 1 / 255 + 1e-6


def test_icc_profile_and_exif_are_kept(tmp_path, weights):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "mgbp-test-camera"  # Make
    Image.fromarray(random_image((8, 8, 3))).save(tmp_path / "in.jpg", icc_profile=icc, exif=exif)
    assert upscale(tmp_path / "in.jpg", "-o", tmp_path / "out", "-m", weights) == 0
    with Image.open(tmp_path / "out" / "in.jpg") as out:
        assert out.info.get("icc_profile") == icc
        assert out.getexif().get(0x010F) == "mgbp-test-camera"
        assert out.size == (32, 32)


def test_folder_mode_keeps_structure_and_skips_a_broken_file(tmp_path, weights, capsys):
    source = tmp_path / "photos"
    (source / "trip" / "day1").mkdir(parents=True)
    Image.fromarray(random_image((6, 7, 3))).save(source / "a.png")
    Image.fromarray(random_image((6, 7, 3), seed=2)).save(source / "trip" / "day1" / "b.jpg")
    (source / "trip" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (source / "notes.txt").write_text("ignored")
    code = upscale(source, "-o", tmp_path / "big", "-m", weights, "--suffix", "_x4", "--ext", "png")
    assert code == 1  # one failure: non-zero at the end, after doing the rest
    assert (tmp_path / "big" / "a_x4.png").is_file()
    assert (tmp_path / "big" / "trip" / "day1" / "b_x4.png").is_file()
    assert not (tmp_path / "big" / "trip" / "broken_x4.png").exists()
    err = capsys.readouterr().err
    broken_lines = [line for line in err.splitlines() if "broken.png" in line]
    assert len(broken_lines) == 1 and "Traceback" not in err
    assert "2 written" in err and "1 failed" in err
    assert not list((tmp_path / "big").rglob("*.tmp*"))


def test_globs_existing_outputs_and_inputs_are_never_overwritten(tmp_path, weights, capsys):
    for name in ("x.png", "y.png"):
        Image.fromarray(random_image((5, 5, 3))).save(tmp_path / name)
    before = (tmp_path / "x.png").read_bytes()
    # same folder, no suffix: the outputs would be the inputs
    assert upscale(tmp_path / "*.png", "-o", tmp_path, "-m", weights) == 1
    assert (tmp_path / "x.png").read_bytes() == before
    assert "overwrite the input" in capsys.readouterr().err
    assert upscale(tmp_path / "*.png", "-o", tmp_path / "out", "-m", weights) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.png", "y.png"]
    output = tmp_path / "out" / "x.png"
    output.write_bytes(b"an earlier output")  # a rerun must leave it as it is
    capsys.readouterr()
    assert upscale(tmp_path / "x.png", "-o", tmp_path / "out", "-m", weights) == 0  # exists: skipped
    assert output.read_bytes() == b"an earlier output"
    assert "0 written, 1 skipped (exists), 0 failed" in capsys.readouterr().err
    assert upscale(tmp_path / "x.png", "-o", tmp_path / "out", "-m", weights, "--skip-existing") == 0
    assert output.read_bytes() == b"an earlier output"
    assert upscale(tmp_path / "x.png", "-o", tmp_path / "out", "-m", weights, "--overwrite") == 0
    assert Image.open(output).size == (20, 20)


def test_missing_input_and_missing_weights(tmp_path, weights, capsys):
    assert upscale(tmp_path / "nope.png", "-o", tmp_path / "out", "-m", weights) == 1
    assert "nope.png" in capsys.readouterr().err
    Image.fromarray(random_image((5, 5, 3))).save(tmp_path / "x.png")
    assert upscale(tmp_path / "x.png", "-o", tmp_path / "out", "-s", "5") == 2
    err = capsys.readouterr().err
    assert "x5" in err and "shipped" in err and len(err.strip().splitlines()) == 1
    assert upscale(tmp_path / "x.png", "-o", tmp_path / "o2", "-m", weights, "-s", "2") == 2


def test_consistent_output_downscales_to_the_input(tmp_path, weights):
    """--consistent: S_f(output) = input (eqs. 4-5), far closer than without it (mid-range pixels: no clamping)."""
    pixels = (0.3 + 0.4 * np.random.default_rng(3).random((8, 8, 3))).astype(np.float32)
    io.write_image(tmp_path / "in.png", pixels, bit_depth=16)
    lr = torch.from_numpy(io.read_image(tmp_path / "in.png").rgb).permute(2, 0, 1).double()
    errors = {}
    for flags in ((), ("--consistent",)):
        target = tmp_path / f"out{len(flags)}.png"
        assert upscale(tmp_path / "in.png", "-o", target, "-m", weights, *flags) == 0
        out = torch.from_numpy(io.read_image(target).rgb).permute(2, 0, 1).double()
        errors[flags] = float((imresize(out, scale=0.25) - lr).abs().max())
    assert errors[("--consistent",)] < 2 / 255 < 10 / 255 < errors[()]


def test_tile_flags(tmp_path, weights, network):
    pixels = random_image((30, 34, 3), seed=4)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "out.png", "-m", weights, "--tile", "32") == 0
    out = io.read_image(tmp_path / "out.png").rgb
    assert np.abs(out - expected_rgb(network, pixels / 255.0)).max() <= 1 / 255 + 1e-6
    assert upscale(tmp_path / "in.png", "-o", tmp_path / "o.png", "-m", weights, "--tile", "8") == 2


@pytest.fixture(scope="module")
def noisy_weights(tmp_path_factory):
    """A tiny MGBPv2 whose residual branch is strong (Synthesis x100), so that W > 0 visibly changes outputs."""
    path = tmp_path_factory.mktemp("weights") / "noisy-x4.safetensors"
    torch.manual_seed(0)
    model = models.build_model("tiny")
    with torch.no_grad():
        model.synthesis.weight.mul_(100.0)
    models.save_model(model, path, {})
    return path


def test_seed_makes_noisy_outputs_reproducible(tmp_path, noisy_weights):
    """-W 0.7: the same --seed gives the same file (tiled or not), another seed another one; the output is the
    network's whole-image pass with the noise map drawn from that seed."""
    pixels = random_image((18, 30, 3), seed=4)
    Image.fromarray(pixels).save(tmp_path / "in.png")

    def run(name, *flags):
        assert upscale(tmp_path / "in.png", "-o", tmp_path / name, "-m", noisy_weights, "-W", 0.7, *flags) == 0
        return np.asarray(Image.open(tmp_path / name)).astype(int)

    default, again = run("default.png"), run("seed0.png", "--seed", 0)
    assert np.array_equal(default, again)
    seven = run("seed7.png", "--seed", 7)
    assert np.array_equal(seven, run("seed7-again.png", "--seed", 7))
    network = models.load_model(str(noisy_weights)).eval()
    assert np.abs(run("seed7-tiled.png", "--seed", 7, "--tile", 2 * network.border_lr + 10) - seven).max() <= 1
    assert np.abs(seven - default).max() > 5
    x = torch.from_numpy(pixels / 255.0).float().permute(2, 0, 1)[None]
    noise = network.draw_noise(x.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        reference = network(x, noise_amp=0.7, noise=noise).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(seven - reference).max() <= 0.51


def test_without_output_flag_outputs_go_beside_the_inputs(tmp_path, weights, network):
    """No -o: a file becomes NAME_x<scale>.EXT beside it, a folder a sibling FOLDER_x<scale> (inputs untouched)."""
    rgb = random_image((6, 7, 3))
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    (tmp_path / "album" / "sub").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "album" / "sub" / "a.png")
    scale = network.scale
    assert upscale(tmp_path / "photo.png", "-m", weights) == 0
    out = io.read_image(tmp_path / f"photo_x{scale}.png").rgb
    assert np.abs(out - expected_rgb(network, rgb / 255.0)).max() <= 1 / 255 + 1e-6
    assert upscale(tmp_path / "album", "-m", weights) == 0
    assert (tmp_path / f"album_x{scale}" / "sub" / "a.png").is_file()
    assert sorted(p.name for p in (tmp_path / "album" / "sub").iterdir()) == ["a.png"]
    written = (tmp_path / f"photo_x{scale}.png").stat().st_mtime_ns
    assert upscale(tmp_path / "photo.png", "-m", weights) == 0  # exists now: skipped, not overwritten
    assert (tmp_path / f"photo_x{scale}.png").stat().st_mtime_ns == written
