"""Figures (`mgbp.plotting`): the W labels of the perception-distortion trajectory are readable."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("matplotlib")

from matplotlib.text import Text

from mgbp.plotting import perception_distortion_figure, plot_perception_distortion

W = [0, 0.25, 0.5, 0.75, 1]
# BOE-R1-like: three points within a few hundredths of each other; a second curve crossing the first
CURVES = {
    "model-a": {"rmse": [11.14, 11.2, 11.41, 11.8, 12.36], "niqe": [6.85, 6.6, 5.68, 4.6, 3.73]},
    "model-b": {"rmse": [10.7, 13.25, 13.71, 13.73, 13.76], "niqe": [6.5, 3.36, 3.33, 3.35, 3.36]},
}


def label_boxes(figure):
    axis = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    for text in axis.texts:
        text.update_positions(renderer)
    return axis, [(t.get_text(), Text.get_window_extent(t, renderer)) for t in axis.texts]


def test_labels_do_not_overlap_each_other_the_points_or_the_axes_edge():
    figure = perception_distortion_figure(CURVES, W, title="test")
    axis, boxes = label_boxes(figure)
    frame = axis.get_window_extent(figure.canvas.get_renderer())
    for (name_a, a), (name_b, b) in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), f"{name_a!r} overlaps {name_b!r}"
    for name, box in boxes:
        assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1), f"{name!r} leaves the axes"
        for line in axis.lines:
            for x, y in axis.transData.transform(line.get_xydata()):
                assert not box.contains(x, y), f"{name!r} covers a data point"


def test_every_w_is_labelled_once_per_curve_and_near_coincident_points_share_a_label():
    figure = perception_distortion_figure(CURVES, W)
    texts = [name for name, _ in label_boxes(figure)[1]]
    assert "W=0.5, 0.75, 1" in texts  # model-b's cluster
    assert sorted(texts[:5]) == sorted(f"W={w:g}" for w in W)  # model-a: five separate labels
    assert sum(t.count(",") + 1 for t in texts) == 2 * len(W)


def test_figure_is_written_as_png_and_svg(tmp_path):
    paths = plot_perception_distortion(CURVES, W, tmp_path / "sweep")
    assert [p.name for p in paths] == ["sweep.png", "sweep.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
