"""`mgbp.jpeg` (libjpeg's baseline codec on tensors) against Pillow's own JPEG encoder and decoder."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgbp.jpeg import jpeg_compress, quantisation_tables

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "mgbp" / "assets" / "sample.png"


def sample() -> np.ndarray:
    with Image.open(SAMPLE) as image:
        return np.array(image.convert("RGB"))


def pillow_roundtrip(rgb: np.ndarray, quality: int) -> tuple[np.ndarray, dict]:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=2)  # 2: 4:2:0
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.array(image.convert("RGB")), image.quantization


def ours(rgb: np.ndarray, quality) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].double() / 255.0
    out = jpeg_compress(x, quality)[0].permute(1, 2, 0).numpy() * 255.0
    assert np.allclose(out, np.round(out), atol=1e-6)  # 8-bit levels
    return np.round(out).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("quality", [1, 10, 25, 50, 51, 75, 95, 100])
def test_quantisation_tables_are_libjpegs(quality):
    _, tables = pillow_roundtrip(sample()[:16, :16], quality)
    luma, chroma = quantisation_tables(torch.tensor([quality]))
    assert luma[0].flatten().tolist() == list(tables[0])  # Pillow gives them in natural order
    assert chroma[0].flatten().tolist() == list(tables[1])


@pytest.mark.parametrize("quality", [10, 30, 40, 75, 95])
def test_matches_pillows_encoder_and_decoder(quality):
    image = sample()  # 128x128: whole 16x16 MCUs
    reference, _ = pillow_roundtrip(image, quality)
    result = ours(image, quality)
    assert psnr(result, reference) > 44.0
    # the compression error itself is far larger, and ours is the same size as Pillow's
    assert psnr(reference, image) < 40.0
    assert abs(psnr(result, image) - psnr(reference, image)) < 0.1


@pytest.mark.parametrize("size", [(100, 90), (37, 53), (17, 8), (24, 5)])
def test_sizes_that_are_not_whole_blocks(size):
    # (Images of at most 16 rows, a single row of MCUs, are decoded by libjpeg-turbo with another chroma
    # upsampling at the top and bottom edges; not reproduced, so not tested here.)
    image = sample()[: size[0], : size[1]]
    reference, _ = pillow_roundtrip(image, 40)
    result = ours(image, 40)
    assert result.shape == image.shape
    assert psnr(result, reference) > 40.0


def blockiness(image: np.ndarray) -> float:
    """Mean absolute step across the 8x8 block boundaries over the mean step elsewhere (1: no blocks)."""
    grey = image.astype(np.float64).mean(axis=2)
    steps = np.abs(np.diff(grey, axis=1))  # steps[:, j] is between columns j and j + 1
    boundary = np.zeros(steps.shape[1], dtype=bool)
    boundary[7::8] = True
    return steps[:, boundary].mean() / steps[:, ~boundary].mean()


def test_block_artefacts_are_there_as_in_pillows():
    # a smooth diagonal gradient: no edges of its own, so any step at a block boundary is the codec's
    y, x = np.mgrid[0:128, 0:128]
    image = np.stack([(x + y) * 0.9, 200 - x * 0.7, 60 + y * 0.5], axis=2)
    image = np.clip(image + (12 * np.sin(x / 5.0) * np.cos(y / 7.0))[..., None], 0, 255).astype(np.uint8)
    reference, _ = pillow_roundtrip(image, 15)
    result = ours(image, 15)
    assert blockiness(image) < 1.2
    assert blockiness(reference) > 1.5
    assert blockiness(result) > 1.5
    assert abs(blockiness(result) - blockiness(reference)) < 0.15 * blockiness(reference)


def test_quality_per_image_in_a_batch():
    image = sample()[:64, :64]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    batch = jpeg_compress(torch.cat([x, x, x]), torch.tensor([20, 60, 90]))
    for i, quality in enumerate((20, 60, 90)):
        assert torch.equal(batch[i], jpeg_compress(x, quality)[0])
    assert not torch.equal(batch[0], batch[2])
    assert batch.dtype == torch.float32 and batch.min() >= 0 and batch.max() <= 1
