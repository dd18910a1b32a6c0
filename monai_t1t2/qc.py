"""Image-quality control: MRIQC-style metrics and keep / reject decisions with reasons."""

from __future__ import annotations

import numpy as np

# A slice whose brain area is below this fraction of the largest slice's brain area is too
# thin a cap of brain to learn from (patches centred there are mostly background).
MIN_BRAIN_FRACTION = 0.1


def brain_fraction_per_slice(brain: np.ndarray, axis: int = -1) -> np.ndarray:
    """Brain area of each slice along ``axis`` divided by the largest slice's brain area.

    Args:
        brain: boolean mask ``(X, Y, Z)``.
    Returns:
        ``(n_slices,)`` fractions in ``[0, 1]`` (all 0 for an empty mask).
    """
    brain = np.asarray(brain) > 0
    other = tuple(i for i in range(brain.ndim) if i != axis % brain.ndim)
    area = brain.sum(axis=other).astype(np.float64)
    peak = area.max() if area.size else 0.0
    return area / peak if peak > 0 else np.zeros_like(area)


def unusable_slices(brain: np.ndarray, min_brain_fraction: float = MIN_BRAIN_FRACTION, axis: int = -1) -> list[int]:
    """Indices of slices along ``axis`` whose brain fraction is below ``min_brain_fraction`` (empty ones too)."""
    fraction = brain_fraction_per_slice(brain, axis)
    return [int(i) for i in np.flatnonzero((fraction < min_brain_fraction) | (fraction == 0))]
