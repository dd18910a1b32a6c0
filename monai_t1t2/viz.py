"""Three-orthogonal-plane PNGs of volumes (QC rejects, predictions, parcellations)."""

from __future__ import annotations

import io as _io
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from monai_t1t2.io import atomic_write_bytes

LEGEND_COLUMNS = 4
OVERLAY_ALPHA = 0.5


def _as_array(volume: np.ndarray | torch.Tensor) -> np.ndarray:
    array = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    while array.ndim > 3:
        array = array[0]
    return array.astype(np.float32, copy=False)


def _planes(array: np.ndarray, center: Sequence[int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices through ``center`` of a RAS-ordered ``(X, Y, Z)`` array."""
    x, y, z = center
    return [array[:, :, z].T, array[:, y, :].T, array[x, :, :].T]


def _painted(labels: np.ndarray, legend: Mapping[int, tuple[str, str]]) -> np.ndarray:
    """An RGBA image of a label plane: each value of ``legend`` in its colour, everything else transparent."""
    from matplotlib.colors import to_rgba

    painted = np.zeros((*labels.shape, 4), dtype=np.float32)
    for value, (_, colour) in legend.items():
        painted[labels == value] = to_rgba(colour, OVERLAY_ALPHA)
    return painted


def save_three_plane_png(
    path: str | Path,
    volumes: Sequence[np.ndarray | torch.Tensor],
    titles: Sequence[str],
    title: str = "",
    overlays: Sequence[np.ndarray | torch.Tensor | None] | None = None,
    center: Sequence[int] | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    legend: Mapping[int, tuple[str, str]] | None = None,
    dpi: int = 90,
) -> Path:
    """Write a PNG: one row per volume, columns axial / coronal / sagittal.

    Args:
        path: output PNG, written atomically.
        volumes: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` arrays on one grid, best in RAS order.
        titles: one row label per volume.
        title: figure title (e.g. the QC reason).
        overlays: optional label maps (same grid) drawn in colour over each row.
        center: voxel to slice through; default the centre of the first volume's foreground.
        spacing: voxel size, so anisotropic volumes are drawn with the right aspect.
        legend: ``{value: (name, colour)}`` for label overlays: each value is painted in its own colour
            and named in a legend under the figure (values not in it are not painted). Without it an
            overlay is a continuous map (``nipy_spectral``).
        dpi: pixels per inch; each row of planes is 3 inches high (at 90, a plane about 200-250 px wide).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = [_as_array(v) for v in volumes]
    overlay_arrays = [None if o is None else _as_array(o) for o in (overlays or [None] * len(arrays))]
    if center is None:
        foreground = np.argwhere(arrays[0] > np.percentile(arrays[0], 60))
        center = foreground.mean(axis=0).astype(int) if len(foreground) else np.array(arrays[0].shape) // 2
    aspects = [spacing[1] / spacing[0], spacing[2] / spacing[0], spacing[2] / spacing[1]]
    legend_rows = math.ceil(len(legend) / LEGEND_COLUMNS) if legend else 0
    legend_height = 0.3 * legend_rows + 0.15 if legend else 0.0  # inches under the planes
    figure, axes = plt.subplots(len(arrays), 3, figsize=(9, 3 * len(arrays) + legend_height), squeeze=False)
    for row, (array, label, overlay) in enumerate(zip(arrays, titles, overlay_arrays)):
        low, high = np.percentile(array, [0.5, 99.5]) if array.max() > array.min() else (0.0, 1.0)
        for column, plane in enumerate(_planes(array, center)):
            axis = axes[row, column]
            axis.imshow(plane, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), origin="lower",
                        aspect=aspects[column], interpolation="nearest")
            if overlay is not None:
                labels = _planes(overlay, center)[column]
                if legend:
                    axis.imshow(_painted(labels, legend), origin="lower", aspect=aspects[column], interpolation="nearest")
                else:
                    axis.imshow(np.ma.masked_where(labels == 0, labels), cmap="nipy_spectral", alpha=0.45,
                                origin="lower", aspect=aspects[column], interpolation="nearest",
                                vmin=0, vmax=max(float(overlay.max()), 1.0))
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(label)
    for column, name in enumerate(("axial", "coronal", "sagittal")):
        axes[0, column].set_title(name)
    if title:
        figure.suptitle(title)
    if legend:
        from matplotlib.patches import Patch

        figure.legend(handles=[Patch(facecolor=colour, edgecolor="none", label=name) for name, colour in legend.values()],
                      loc="lower center", ncol=min(len(legend), LEGEND_COLUMNS), frameon=False, fontsize=9)
    # tight_layout leaves the suptitle and the legend out of its sums: keep 0.35 inch on top for the title, or it
    # covers the column titles, and the legend's height at the bottom
    height = figure.get_figheight()
    figure.tight_layout(rect=(0, legend_height / height, 1, 1 - (0.35 / height if title else 0)))
    buffer = _io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return atomic_write_bytes(buffer.getvalue(), path)
