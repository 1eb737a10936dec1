"""The automatic CPU tile plan (`mgbp.tiling.balanced_tiles`): equal tiles within the pixel budget that cover the
image with the fewest pixels computed, checked against a brute-force search over every tile shape; tiled output
with the automatic rectangles equals the untiled one."""

from __future__ import annotations

import pytest
import torch

from mgbp import tiling
from mgbp.inference import upscale_tensor
from mgbp.models import build_model
from mgbp.tiling import balanced_tiles, default_overlap, min_tile, tile_starts


def computed_pixels(height, width, rows, cols, overlap):
    return len(tile_starts(height, rows, overlap)) * len(tile_starts(width, cols, overlap)) * rows * cols


@pytest.mark.parametrize(("height", "width", "budget", "overlap"), [
    (54, 96, 2000, 6), (61, 37, 900, 10), (40, 40, 5000, 8), (90, 33, 700, 4),
])
def test_balanced_tiles_are_the_cheapest_that_fit(height, width, budget, overlap):
    rows, cols = balanced_tiles(height, width, budget, overlap)
    assert rows * cols <= budget and rows <= height and cols <= width
    assert min(rows, cols) >= min(min_tile(overlap), height, width)
    best = min(computed_pixels(height, width, r, c, overlap)
               for r in range(min(min_tile(overlap), height), height + 1)
               for c in range(min(min_tile(overlap), width), width + 1) if r * c <= budget)
    # one tile's fixed cost (256 pixels) may buy a cheaper count of tiles; never more than that per tile
    tiles = len(tile_starts(height, rows, overlap)) * len(tile_starts(width, cols, overlap))
    assert computed_pixels(height, width, rows, cols, overlap) <= best + 256 * tiles


def test_the_4k_case_wastes_little():
    """960x540 in square 512-pixel tiles (the old plan) computed 2.02x the image; these rectangles ~1.1x."""
    rows, cols = balanced_tiles(540, 960, 1448 * 1448 // 16, 30)
    assert computed_pixels(540, 960, rows, cols, 30) / (540 * 960) < 1.15
    assert computed_pixels(540, 960, 512, 512, 30) / (540 * 960) > 2.0


def test_automatic_rectangular_tiles_equal_the_untiled_output(monkeypatch):
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    lr = torch.rand(1, 3, 45, 70, generator=torch.Generator().manual_seed(1))
    whole = upscale_tensor(model, lr, tile=512)
    overlap = default_overlap(model)
    monkeypatch.setattr(tiling, "CPU_OUTPUT_PIXEL_BUDGET", 16 * (overlap + 14) * (overlap + 30))
    plan = tiling.auto_plan(model, lr, None, overlap, 0.0)
    assert plan.tile != plan.tile_width and len(tile_starts(70, plan.tile_width, overlap)) > 1
    assert (upscale_tensor(model, lr) - whole).abs().max().item() < 1 / 255
