"""The evaluation protocol helpers (`mgbp.protocol`) against independent references: the LR written out step by
step, MATLAB's uint8 rounding by hand, grey -> RGB through Pillow, the PIRM-2018 RMSE and Table II PSNR-Y in
float64 numpy, and the seeded forward against explicitly drawn noise maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mgbp import models, protocol
from mgbp.errors import ConfigError, ImageReadError
from mgbp.io import read_image
from mgbp.resize import imresize_uint8
from tiny_mgbpv1 import tiny_mgbpv1


def random_uint8(height, width, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)


# ------------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_is_matlab_bicubic_of_the_modcropped_hr(scale):
    hr = random_uint8(31, 26, seed=scale)
    cropped, lr = protocol.protocol_pair(hr, scale)
    height, width = 31 - 31 % scale, 26 - 26 % scale  # modcrop written out
    np.testing.assert_array_equal(cropped, hr[:height, :width])
    np.testing.assert_array_equal(lr, imresize_uint8(hr[:height, :width], scale=1.0 / scale))
    assert lr.shape == (height // scale, width // scale, 3)


def test_paired_lr_is_checked_against_the_hr_size(tmp_path):
    hr = random_uint8(24, 20)
    lr = random_uint8(6, 5, seed=1)
    assert protocol.protocol_pair(hr, 4, lr)[1] is lr
    with pytest.raises(ImageReadError, match="does not match"):
        protocol.protocol_pair(hr, 4, random_uint8(6, 4))
    Image.fromarray(lr).save(tmp_path / "lr.png")  # or the path of the paired image
    np.testing.assert_array_equal(protocol.protocol_pair(hr, 4, tmp_path / "lr.png")[1], lr)


def test_too_small_images_are_image_errors():
    # x4 with SSIM's 11x11 window: 11 + 2 * 4 = 19 pixels must survive modcrop -> 20
    assert protocol.smallest_hr_side(4, 11) == 20 and protocol.smallest_hr_side(4, 0) == 4
    assert protocol.smallest_hr_side(3, 1) == 9  # PSNR alone: 1 + 2 * 3 = 7 -> 9
    protocol.protocol_pair(random_uint8(20, 20), 4)
    with pytest.raises(ImageReadError, match="40x19 is too small for the x4 protocol"):
        protocol.protocol_pair(random_uint8(19, 40), 4, source="small.png")
    assert protocol.protocol_pair(random_uint8(4, 5), 4, window=0)[1].shape == (1, 1, 3)


def test_grey_file_reads_as_its_rgb_copy(tmp_path):
    grey = random_uint8(9, 7)[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")  # mode L
    rgb = read_image(tmp_path / "grey.png").rgb_uint8()
    np.testing.assert_array_equal(rgb, np.asarray(Image.fromarray(grey).convert("RGB")))


def test_list_images_sorted_and_errors(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in protocol.list_images(tmp_path)] == ["a.JPG", "b.png"]
    assert protocol.list_images(tmp_path / "b.png") == [tmp_path / "b.png"]
    (tmp_path / "empty").mkdir()
    for path, message in ((tmp_path / "nowhere", "does not exist"), (tmp_path / "empty", "no images"),
                          (tmp_path / "notes.txt", "neither a folder nor an image")):
        with pytest.raises(ConfigError, match=message):
            protocol.list_images(path)


def test_paired_lr_layouts(tmp_path):
    (tmp_path / "X4").mkdir()
    (tmp_path / "X4" / "babyx4.png").write_bytes(b"")
    (tmp_path / "bird_LR.PNG").write_bytes(b"")
    assert protocol.find_paired_lr(tmp_path, tmp_path / "hr" / "baby.png", 4) == tmp_path / "X4" / "babyx4.png"
    assert protocol.find_paired_lr(tmp_path, tmp_path / "hr" / "bird.png", 4) == tmp_path / "bird_LR.PNG"
    with pytest.raises(ImageReadError, match="no paired LR image for x2"):
        protocol.find_paired_lr(tmp_path, tmp_path / "hr" / "baby.png", 2)


# ------------------------------------------------------------------------------------------------- tensors


def test_uint8_to_tensor_is_exactly_k_over_255():
    image = random_uint8(5, 6)
    tensor = protocol.from_uint8(image, torch.float64)
    assert tensor.shape == (1, 3, 5, 6)
    np.testing.assert_array_equal(tensor[0].permute(1, 2, 0).numpy(), image.astype(np.float64) / 255.0)


def test_to_uint8_rounds_half_away_from_zero_and_clips():
    levels = torch.tensor([0.5, 1.5, 2.5, 127.5, 254.5, 254.49, -0.6, 300.0, 3.2], dtype=torch.float64)
    image = (levels / 255.0).reshape(1, 1, 1, -1).expand(1, 3, 1, -1)
    assert torch.equal(image[0, 0, 0] * 255.0, levels)  # the ties really are ties after the scaling
    expected = [1, 2, 3, 128, 255, 254, 0, 255, 3]  # numpy's round-half-to-even would give 0, 2, 2, 128, 254
    assert protocol.to_uint8(image)[0, :, 0].tolist() == expected


# ------------------------------------------------------------------------------------------------- scores


def y_255(image: np.ndarray) -> np.ndarray:
    rgb = image.astype(np.float64) / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def test_rmse_and_psnr_y_against_float64_references():
    output, reference, scale = random_uint8(16, 18, 1), random_uint8(16, 18, 2), 3
    a, b = protocol.from_uint8(output, torch.float64), protocol.from_uint8(reference, torch.float64)
    inner = (slice(scale, -scale), slice(scale, -scale))
    rounded = np.floor(y_255(output) + 0.5)[inner] - np.floor(y_255(reference) + 0.5)[inner]  # PIRM-2018
    assert protocol.rmse_y(a, b, scale) == pytest.approx(np.sqrt(np.mean(rounded**2)), abs=1e-9)
    mse = np.mean((y_255(output)[inner] - y_255(reference)[inner]) ** 2)
    assert protocol.psnr_y(a, b, scale) == pytest.approx(10 * np.log10(255.0**2 / mse), abs=1e-9)


# ------------------------------------------------------------------------------------------------- methods


def test_labels():
    assert protocol.method_labels(["BICUBIC", "runs/a/best.safetensors", "x4-psnr"]) == \
        ["Bicubic", "best", "x4-psnr"]
    assert protocol.method_labels(["a/best.safetensors", "b/best.safetensors"]) == \
        ["a/best.safetensors", "b/best.safetensors"]
    for repeated in (["bicubic", "m.model", "m.model"], ["bicubic", "BICUBIC"]):
        with pytest.raises(ConfigError, match="given twice"):
            protocol.method_labels(repeated)


def test_devices():
    assert protocol.resolve_device("cpu") == "cpu"
    assert protocol.resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="--device gpu0"):
        protocol.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            protocol.resolve_device("cuda:1")


def test_bicubic_generator_and_scale_check(tmp_path):
    bicubic = protocol.load_generator("Bicubic", scale=3)
    assert isinstance(bicubic, protocol.BicubicUpscaler) and bicubic.scale == 3
    lr = random_uint8(5, 7)
    upscaled = protocol.upscale_uint8(bicubic, lr)  # MATLAB imresize(uint8 LR, 3)
    np.testing.assert_array_equal(upscaled, imresize_uint8(lr, scale=3.0))
    path = models.save_model(models.build_model("tiny"), tmp_path / "tiny.safetensors")
    scale = protocol.load_generator(str(path), device="cpu").scale
    with pytest.raises(ConfigError, match=f"upscales x{scale}, not x{scale + 1}"):
        protocol.load_generator(str(path), scale=scale + 1, device="cpu")


def test_mgbpv1_sees_the_same_standard_normal_maps_at_every_w():
    """The authors' per-level noise (MGBPv1): the seeded forward equals the model fed, explicitly, the maps
    drawn once from that seed in its documented drawing order, at every W; the caller's RNG is untouched."""
    model = tiny_mgbpv1()
    lr = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.manual_seed(5)
    if hasattr(model, "draw_noise") and hasattr(model, "crop_noise"):
        # run_model draws one set of maps for the whole image (CPU, float32) from a generator seeded with the
        # seed, which gives the same numbers as torch's RNG after torch.manual_seed(seed)
        maps = [m.double() for m in model.draw_noise(lr.shape)]
    else:  # the model draws its own maps, in its documented order
        maps = [torch.randn(shape, dtype=torch.float64) for shape in model.noise_shapes(lr.shape)]
    state = torch.get_rng_state()
    outputs = []
    for w in (0.3, 1.0):
        with torch.no_grad():
            explicit = model(lr, noise_amp=w, noise=maps)
        seeded = protocol.forward_with_noise(model, lr, w, seed=5)
        torch.testing.assert_close(seeded, explicit.float(), rtol=0, atol=0)  # run_model returns float32
        outputs.append(seeded)
    assert not torch.equal(outputs[0], outputs[1])
    assert torch.equal(torch.get_rng_state(), state)
