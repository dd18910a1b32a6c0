"""Three-orthogonal-plane PNGs of volumes (QC rejects, predictions, parcellations)."""

from __future__ import annotations

import io as _io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from monai_t1t2.io import atomic_write_bytes


def _as_array(volume: np.ndarray | torch.Tensor) -> np.ndarray:
    array = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    while array.ndim > 3:
        array = array[0]
    return array.astype(np.float32, copy=False)


def _planes(array: np.ndarray, center: Sequence[int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices through ``center`` of a RAS-ordered ``(X, Y, Z)`` array."""
    x, y, z = center
    return [array[:, :, z].T, array[:, y, :].T, array[x, :, :].T]


def save_three_plane_png(
    path: str | Path,
    volumes: Sequence[np.ndarray | torch.Tensor],
    titles: Sequence[str],
    title: str = "",
    overlays: Sequence[np.ndarray | torch.Tensor | None] | None = None,
    center: Sequence[int] | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
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
    figure, axes = plt.subplots(len(arrays), 3, figsize=(9, 3 * len(arrays)), squeeze=False)
    for row, (array, label, overlay) in enumerate(zip(arrays, titles, overlay_arrays)):
        low, high = np.percentile(array, [0.5, 99.5]) if array.max() > array.min() else (0.0, 1.0)
        for column, plane in enumerate(_planes(array, center)):
            axis = axes[row, column]
            axis.imshow(plane, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), origin="lower",
                        aspect=aspects[column], interpolation="nearest")
            if overlay is not None:
                labels = _planes(overlay, center)[column]
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
    # tight_layout leaves the suptitle out of its sums: keep 0.35 inch on top for it, or it covers the column titles
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / figure.get_figheight()) if title else None)
    buffer = _io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return atomic_write_bytes(buffer.getvalue(), path)
