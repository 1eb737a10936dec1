"""Figures of the research tools: the perception-distortion trajectory (paper Fig. 14, Fig. 11) and the
Linearscope panels (Fig. 16).

matplotlib is an optional extra (`mgbp[plot]`); it is imported lazily with the non-interactive Agg backend
so the package and every non-plotting command work without it. Figures are written atomically.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mgbp.atomic import atomic_path
from mgbp.errors import ConfigError


def require_pyplot():
    """matplotlib.pyplot on the Agg backend, or a ConfigError telling how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'mgbp[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path, dpi: int = 150) -> None:
    """Write `figure` to `path` (format from the suffix) through a temp file in the same folder."""
    plt = require_pyplot()
    # svg.fonttype none: SVG text stays text (editable and searchable labels)
    with atomic_path(path) as temporary, plt.rc_context({"svg.fonttype": "none"}):
        figure.savefig(temporary, format=Path(path).suffix.lstrip("."), dpi=dpi, bbox_inches="tight")


def _label_indices(count: int, most: int = 11) -> list[int]:
    """Which points get a W label: all of them up to `most`, else an even subset with both ends."""
    if count <= most:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, most).round().astype(int).tolist()))


# Label offsets (points) tried in order: close to the point first, in 8 directions, then further out with a
# leader line, so a label lands where it covers no other label, data point, legend or the axes' edge.
_LABEL_RADII = (5, 14, 26, 40, 56)
_LABEL_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
_MERGE_PIXELS = 10.0  # points of one curve closer than this (on screen) share one label


def _group_close_points(screen: np.ndarray, indices: Sequence[int]) -> list[list[int]]:
    """Runs of consecutive labelled points that lie within `_MERGE_PIXELS` of the run's first point."""
    groups: list[list[int]] = []
    for i in indices:
        if groups and np.hypot(*(screen[i] - screen[groups[-1][0]])) < _MERGE_PIXELS:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _w_label(amplitudes: Sequence[float], group: Sequence[int]) -> str:
    return "W=" + ", ".join(f"{amplitudes[i]:g}" for i in group)


def _curve_boxes(axis, curves: Sequence[np.ndarray]) -> list:
    """Small display boxes covering each curve's markers and, every few pixels, its line segments."""
    from matplotlib.transforms import Bbox

    boxes = []
    for xy in curves:
        screen = axis.transData.transform(xy)
        boxes += [Bbox.from_bounds(x - 4, y - 4, 8, 8) for x, y in screen]
        for start, stop in itertools.pairwise(screen):
            steps = max(1, int(np.hypot(*(stop - start)) / 4))
            for t in np.linspace(0, 1, steps + 1):
                x, y = start + t * (stop - start)
                boxes.append(Bbox.from_bounds(x - 1.5, y - 1.5, 3, 3))
    return boxes


def _place_labels(axis, labels: list[tuple[str, tuple[float, float], str]], curves: Sequence[np.ndarray],
                  obstacles: list) -> None:
    """Annotate each (text, (x, y), colour) at the first candidate offset whose text box stays inside the axes
    and overlaps no placed label, no curve (`curves`: (n, 2) data-coordinate polylines, markers and lines) and
    no `obstacles` (display boxes, e.g. the legend). When no candidate is free, the least crowded one is used."""
    from matplotlib.text import Text

    renderer = axis.figure.canvas.get_renderer()
    frame = axis.get_window_extent(renderer)
    taken = list(obstacles) + _curve_boxes(axis, curves)
    for text, xy, colour in labels:
        best = None
        for radius in _LABEL_RADII:
            for dx, dy in _LABEL_DIRECTIONS:
                scale = radius / np.hypot(dx, dy)
                annotation = axis.annotate(
                    text, xy, xytext=(dx * scale, dy * scale), textcoords="offset points", fontsize=7,
                    color=colour, ha={1: "left", 0: "center", -1: "right"}[dx],
                    va={1: "bottom", 0: "center", -1: "top"}[dy],
                    arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.5, "shrinkA": 0, "shrinkB": 3}
                    if radius > _LABEL_RADII[0] else None)
                annotation.update_positions(renderer)  # where the text lands; then its box, without the line
                box = Text.get_window_extent(annotation, renderer).expanded(1.06, 1.15)
                clashes = sum(box.overlaps(other) for other in taken)
                inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                score = clashes + (0 if inside else 100)
                if best is None or score < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (score, annotation, box)
                else:
                    annotation.remove()
                if score == 0:
                    break
            if best[0] == 0:
                break
        taken.append(best[2])


def plot_perception_distortion(curves: dict[str, dict[str, Sequence[float]]], amplitudes: Sequence[float],
                               stem: Path, title: str = "") -> list[Path]:
    """`perception_distortion_figure` written to `stem`.png and `stem`.svg; returns their paths."""
    plt = require_pyplot()
    figure = perception_distortion_figure(curves, amplitudes, title)
    paths = [Path(f"{stem}.png"), Path(f"{stem}.svg")]
    try:
        for path in paths:
            save_figure(figure, path)
    finally:
        plt.close(figure)
    return paths


def perception_distortion_figure(curves: dict[str, dict[str, Sequence[float]]], amplitudes: Sequence[float],
                                 title: str = ""):
    """Fig. 14-style figure: (left) NIQE against RMSE, one trajectory per model with its points labelled by W
    (labels placed clear of each other, of the curves and of the legend; points that nearly coincide share one
    label); (right) RMSE and NIQE against W."""
    plt = require_pyplot()
    figure, (trajectory, evolution) = plt.subplots(1, 2, figsize=(12, 5))
    niqe_axis = evolution.twinx()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    coloured = []
    for k, (label, metrics) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        rmse, niqe = np.asarray(metrics["rmse"], float), np.asarray(metrics["niqe"], float)
        trajectory.plot(rmse, niqe, "-o", color=colour, markersize=4, label=label)
        evolution.plot(amplitudes, rmse, "-o", color=colour, markersize=3, label=f"{label} RMSE")
        niqe_axis.plot(amplitudes, niqe, "--s", color=colour, markersize=3, label=f"{label} NIQE")
        coloured.append((colour, rmse, niqe))
    trajectory.set_xlabel("RMSE (distortion, lower is better)")
    trajectory.set_ylabel("NIQE (perception, lower is better)")
    trajectory.set_title("perception-distortion trajectory")
    trajectory.grid(alpha=0.3)
    trajectory.margins(0.12)  # room for the labels of the outermost points
    legend = trajectory.legend(fontsize=8)
    evolution.set_xlabel("noise amplitude W")
    evolution.set_ylabel("RMSE (solid)")
    niqe_axis.set_ylabel("NIQE (dashed)")
    evolution.set_title("metrics against W")
    evolution.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.canvas.draw()  # fixes the axes' limits and layout, so label boxes can be measured where they land
    labels, points = [], []
    for colour, rmse, niqe in coloured:
        xy = np.column_stack([rmse, niqe])
        points.append(xy)
        screen = trajectory.transData.transform(xy)
        for group in _group_close_points(screen, _label_indices(len(amplitudes))):
            labels.append((_w_label(amplitudes, group), tuple(xy[group[0]]), colour))
    renderer = figure.canvas.get_renderer()
    _place_labels(trajectory, labels, points, [legend.get_window_extent(renderer)])
    return figure


def plot_linearscope(crop: np.ndarray, marker_xy: tuple[float, float], response: np.ndarray,
                     bicubic: np.ndarray, path: Path, title: str = "", scale: int = 1) -> Path:
    """Fig. 16-style panel: the input crop with the pixel marked, the network's filter and the bicubic filter
    as heat maps at output resolution (one shared symmetric-log colour scale, so the two compare directly)."""
    plt = require_pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    axes[0].imshow(np.clip(crop, 0, 1), interpolation="nearest")
    axes[0].plot([marker_xy[0]], [marker_xy[1]], "o", markersize=10, markerfacecolor="none",
                 markeredgecolor="tab:blue", markeredgewidth=2)
    axes[0].set_title("input (LR crop)")
    from matplotlib.colors import SymLogNorm

    limit = float(max(np.abs(response).max(), np.abs(bicubic).max(), 1e-12))
    # symmetric log scale: linear within 1e-3 of the peak, logarithmic beyond, so the long, weak tails of an
    # adaptive filter (the receptive field of Fig. 16) show next to its core
    for axis, data, name in ((axes[1], response, "network filter (frozen ReLUs)"),
                             (axes[2], bicubic, f"bicubic x{scale} filter")):
        norm = SymLogNorm(linthresh=1e-3 * limit, vmin=-limit, vmax=limit)
        image = axis.imshow(data, cmap="RdBu_r", norm=norm, interpolation="nearest")
        axis.set_title(name)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title)
    try:
        save_figure(figure, path)
    finally:
        plt.close(figure)
    return Path(path)
