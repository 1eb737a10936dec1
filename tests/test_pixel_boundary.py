"""One owner of the pixel boundary (`mgbp.io`): one list of file kinds, one folder lister, one float -> integer
rounding rule (MATLAB's: half away from zero), used by every command alike."""

from __future__ import annotations

import ast
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgbp import data, io, models, protocol
from mgbp.cli import main
from mgbp.commands import upscale_jobs
from mgbp.inference import upscale
from mgbp.models.contract import Capabilities

SOURCE = Path(__file__).resolve().parents[1] / "src" / "mgbp"


def matlab_round(value: Fraction, top: int = 255) -> int:
    """MATLAB's uint8()/uint16() of an exact value: round half away from zero, saturate (rational arithmetic)."""
    rounded = math.floor(abs(value) + Fraction(1, 2)) * (1 if value >= 0 else -1)
    return min(max(rounded, 0), top)


# ---- the rounding rule ---------------------------------------------------------------------------------------


def test_round_levels_at_halves_and_near_them_against_exact_arithmetic():
    below_half = np.nextafter(0.5, 0.0)  # 0.49999999999999994: floor(x + 0.5) gets this one wrong
    values = np.concatenate([np.arange(-2, 258) + 0.5, [below_half, 1 + below_half, 254.5000001, -0.0, 300.0],
                             np.random.default_rng(0).uniform(-3, 260, 500)])
    expected = [matlab_round(Fraction(float(v))) for v in values]
    assert io.round_levels(values).tolist() == expected
    assert io.round_levels(torch.from_numpy(values)).tolist() == expected
    sixteen = np.arange(65530, 65540) + 0.5
    assert io.round_levels(sixteen, 65535).tolist() == [matlab_round(Fraction(float(v)), 65535) for v in sixteen]


def ties_of_the_double_product(top: int = 255) -> np.ndarray:
    """Float64 pixels x in [0, 1] whose double product x * top is exactly k + 1/2 (a tie), found by search."""
    found = []
    for k in range(top if top == 255 else 64):
        x = (k + 0.5) / top
        for candidate in (x, np.nextafter(x, 0.0), np.nextafter(x, 1.0)):
            if float(candidate) * top == k + 0.5:
                found.append(candidate)
                break
    return np.array(found)


def test_quantise_rounds_ties_away_from_zero_like_matlab():
    ties = ties_of_the_double_product()
    assert len(ties) > 100  # most k have one; evens and odds both
    expected = [matlab_round(Fraction(float(x) * 255)) for x in ties]  # MATLAB: uint8(x * 255) in doubles
    assert io.quantise(ties).tolist() == expected
    assert io.quantise(torch.from_numpy(ties)).tolist() == expected
    assert sum(e % 2 == 1 for e in expected) > 50  # numpy's half-to-even would be off on these
    sixteen = ties_of_the_double_product(65535)
    assert io.quantise(sixteen, 16).tolist() == [matlab_round(Fraction(float(x) * 65535), 65535) for x in sixteen]
    assert io.quantise(np.array([-0.2, 1.7, np.nan])).tolist() == [0, 255, 0]


def test_written_images_and_protocol_outputs_use_the_rule(tmp_path):
    """`mgbp upscale` writes through `write_image`, `mgbp eval` scores `protocol.to_uint8`: the same integers."""
    ties = ties_of_the_double_product()
    expected = np.array([matlab_round(Fraction(float(x) * 255)) for x in ties], dtype=np.uint8)
    pixels = np.repeat(ties[None, :, None], 3, axis=2)
    io.write_image(tmp_path / "ties.png", pixels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "ties.png"))[0, :, 0], expected)
    as_tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    np.testing.assert_array_equal(protocol.to_uint8(as_tensor)[0, :, 0], expected)


class ConstantGenerator(torch.nn.Module):
    """A x1 'generator' whose output is a fixed row of pixels (to feed the API's uint8 conversion exact values)."""

    family, is_video, noise_channels, border_lr, scale, config = "constant", False, 0, 0, 1, None
    capabilities = Capabilities(whole_image_noise=False, placement=False)

    def __init__(self, row: torch.Tensor):
        super().__init__()
        self.row = row

    def forward(self, lr, noise_amp=0.0, noise=None):
        return self.row.expand(lr.shape[0], 3, *lr.shape[-2:]).clone()


def float32_ties_below_the_half() -> np.ndarray:
    """Float32 pixels v whose float32 product v * 255 rounds to a tie k + 1/2 (k odd) while the exact product
    lies below it: MATLAB's rule (on the exact value) gives k, rounding the float32 product half-to-even k + 1."""
    found = []
    for k in range(1, 255, 2):
        centre = np.float32((k + 0.5) / 255)
        for step in range(-3, 4):
            v = np.float32(centre + step * np.spacing(centre))
            if float(v * np.float32(255)) == k + 0.5 and Fraction(float(v)) * 255 < k + 0.5:
                found.append(v)
                break
    return np.array(found, dtype=np.float32)


def test_the_python_api_returns_integers_rounded_by_the_rule():
    values = float32_ties_below_the_half()
    assert len(values) > 10
    model = ConstantGenerator(torch.from_numpy(values)[None, None, None, :])
    out = upscale(np.zeros((1, len(values), 3), np.uint8), model=model)
    expected = [matlab_round(Fraction(float(v)) * 255) for v in values]
    assert out[0, :, 0].tolist() == expected


# ---- one folder lister: hidden files never, frames in frame order ---------------------------------------------


def write_png(path: Path, value: int, size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    """a.png, b.png, sub/d.png, and hidden things a killed run (or the system) leaves: never inputs."""
    root = tmp_path / "in"
    for name, value in (("a.png", 10), ("b.PNG", 20), ("sub/d.png", 30), (".a.tmp-x1.png", 40),
                        (".hidden/e.png", 50), (".DS_Store", 0)):
        write_png(root / name, value) if name.lower().endswith(".png") else (root / name).write_bytes(b"x")
    return root


def test_every_lister_of_the_package_skips_hidden_files(folder):
    top = [folder / "a.png", folder / "b.PNG"]
    assert io.list_files(folder, io.IMAGE_EXTENSIONS) == top
    assert io.list_files(folder, io.IMAGE_EXTENSIONS, recursive=True) == top + [folder / "sub" / "d.png"]
    assert protocol.list_images(folder) == top  # mgbp eval, sweep, consistency
    assert data.list_images(folder) == top + [folder / "sub" / "d.png"]  # mgbp train
    assert data.read_sequence(folder).shape[0] == 2  # training clips from a frame folder
    from mgbp.video import FolderSource

    assert FolderSource(folder, 25.0, None).files == top  # mgbp upscale of a frame folder


def test_upscale_of_a_folder_skips_hidden_files(folder, tmp_path):
    weights = tmp_path / "tiny.safetensors"
    models.save_model(models.build_model("tiny"), weights)
    assert main(["upscale", str(folder), "-o", str(tmp_path / "out"), "-m", str(weights), "--quiet"]) == 0
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["a.png", "b.png", "sub/d.png"]


def test_frame_folders_play_in_frame_order_for_training_and_upscaling(tmp_path):
    for number, value in ((1, 10), (2, 20), (10, 30)):
        write_png(tmp_path / "frames" / f"f{number}.png", value)
    from mgbp.video import FolderSource

    assert [p.name for p in FolderSource(tmp_path / "frames", 25.0, None).files] == ["f1.png", "f2.png", "f10.png"]
    assert data.read_sequence(tmp_path / "frames")[:, 0, 0, 0].tolist() == [10, 20, 30]


# ---- one list of file kinds ------------------------------------------------------------------------------------


def _extension_lists(path: Path) -> list[int]:
    """Lines of tuple/list/set literals that list 3 or more image or video extensions."""
    kinds = set(io.IMAGE_EXTENSIONS + io.VIDEO_EXTENSIONS)
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            named = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in kinds]
            if len(named) >= 3:
                lines.append(node.lineno)
    return lines


def test_file_kinds_are_listed_once_in_mgbp_io():
    elsewhere = {str(p.relative_to(SOURCE)): lines for p in sorted(SOURCE.rglob("*.py"))
                 if p.name != "io.py" and (lines := _extension_lists(p))}
    assert not elsewhere, f"extension lists outside mgbp.io (import them from there): {elsewhere}"
    assert upscale_jobs.VIDEO_EXTENSIONS is io.VIDEO_EXTENSIONS and data.VIDEO_EXTENSIONS is io.VIDEO_EXTENSIONS


def make_y4m(path: Path, frames: int = 3, size=(16, 16)) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        for index in range(frames):
            image = np.full((*size, 3), 40 * index + 20, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_a_y4m_clip_trains_and_upscales(tmp_path):
    """A kind the trainer reads, `mgbp upscale` reads too (and writes back: raw video in YUV4MPEG)."""
    import av

    clip = make_y4m(tmp_path / "clip.y4m")
    assert data.discover_sequences(tmp_path) == [clip] and data.read_sequence(clip).shape == (3, 16, 16, 3)
    weights = tmp_path / "tiny.safetensors"
    models.save_model(models.build_model("tiny"), weights)
    assert main(["upscale", str(clip), "-m", str(weights), "--quiet"]) == 0
    with av.open(str(tmp_path / "clip_x4.y4m")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
