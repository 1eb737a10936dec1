"""Figures of the research tools: the perception-distortion trajectory (paper Fig. 14, Fig. 11) and the
Linearscope panels (Fig. 16).

matplotlib is an optional extra (`mgbp[plot]`); it is imported lazily with the non-interactive Agg backend
so the package and every non-plotting command work without it. Figures are written atomically.
"""

from __future__ import annotations

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


def plot_perception_distortion(curves: dict[str, dict[str, Sequence[float]]], amplitudes: Sequence[float],
                               stem: Path, title: str = "") -> list[Path]:
    """Fig. 14-style figure: (left) NIQE against RMSE, one trajectory per model with each point labelled by W;
    (right) RMSE and NIQE against W. Writes `stem`.png and `stem`.svg and returns their paths."""
    plt = require_pyplot()
    figure, (trajectory, evolution) = plt.subplots(1, 2, figsize=(12, 5))
    niqe_axis = evolution.twinx()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, metrics) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        rmse, niqe = np.asarray(metrics["rmse"]), np.asarray(metrics["niqe"])
        trajectory.plot(rmse, niqe, "-o", color=colour, markersize=4, label=label)
        for i in _label_indices(len(amplitudes)):
            trajectory.annotate(f"W={amplitudes[i]:g}", (rmse[i], niqe[i]), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color=colour)
        evolution.plot(amplitudes, rmse, "-o", color=colour, markersize=3, label=f"{label} RMSE")
        niqe_axis.plot(amplitudes, niqe, "--s", color=colour, markersize=3, label=f"{label} NIQE")
    trajectory.set_xlabel("RMSE (distortion, lower is better)")
    trajectory.set_ylabel("NIQE (perception, lower is better)")
    trajectory.set_title("perception-distortion trajectory")
    trajectory.grid(alpha=0.3)
    trajectory.legend(fontsize=8)
    evolution.set_xlabel("noise amplitude W")
    evolution.set_ylabel("RMSE (solid)")
    niqe_axis.set_ylabel("NIQE (dashed)")
    evolution.set_title("metrics against W")
    evolution.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    paths = [Path(f"{stem}.png"), Path(f"{stem}.svg")]
    try:
        for path in paths:
            save_figure(figure, path)
    finally:
        plt.close(figure)
    return paths


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
