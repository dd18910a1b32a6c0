"""Brain and head masks: the one brain-mask function of the package and its one skull-stripped rule.

Brain-mask rule (:func:`brain_mask`, ``method="auto"``): a volume with at least
:data:`SKULL_STRIPPED_ZERO_FRACTION` of its voxels exactly 0 *and* a non-zero region no larger than
a brain (:data:`MAX_BRAIN_ML`) is taken as skull-stripped (:func:`is_skull_stripped`) and its mask
is ``t1 > 0`` with the cavities it encloses filled (:func:`nonzero_brain`). The shared BraTS-style
and HD-BET volumes have 82-89 % zeros, a raw scanner series with noisy background about 4 %, and a
full head whose air was set to 0 is several litres of non-zero voxels, so it is not taken for a
brain. Otherwise the brain is found by brainchop's ``mindgrab`` network
(:func:`monai_t1t2.nets.meshnet.predict_brain_mask`); when brainchop's models are absent, by
:func:`head_mask`, which keeps the skull. Callers can force a method
(``"nonzero"``, ``"network"``, ``"head"``; ``"otsu"`` is the former name of ``"head"``).

:func:`head_mask` is also the foreground of QC (MRIQC-style measures need head vs air) and of
registration (:func:`foreground_mask`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage

from monai_t1t2.errors import T1T2Error
from monai_t1t2.geometry import bounding_box, fill_holes, in_plane_structure, largest_component
from monai_t1t2.io import spacing_of

#: A volume with at least this share of exact zeros (and a brain-sized rest) is skull-stripped.
SKULL_STRIPPED_ZERO_FRACTION = 0.25
# Adult brain volume inside a mask (cerebrum, cerebellum, brainstem; generous on both sides). The 40
# shared subjects measure 1.02-1.75 l as (t1 != 0); the raw TCGA-FG-6692 head above 60 is 3.05 l.
MIN_BRAIN_ML, MAX_BRAIN_ML = 700.0, 2200.0
#: A slice whose brain area is below this share of the largest slice's has too little brain to learn from.
MIN_BRAIN_FRACTION = 0.1
MASK_METHODS = ("auto", "nonzero", "network", "head", "otsu")
# 25th percentile of a Rayleigh distribution in units of its sigma: sqrt(-2 ln 0.75).
RAYLEIGH_P25 = math.sqrt(-2.0 * math.log(0.75))


def is_skull_stripped(t1: np.ndarray | torch.Tensor, spacing: Sequence[float] | None = None) -> bool:
    """True when at least :data:`SKULL_STRIPPED_ZERO_FRACTION` of the voxels are exactly 0 and the
    non-zero region is no larger than :data:`MAX_BRAIN_ML` (a head whose air is 0 is not a brain).

    ``spacing`` (mm) defaults to the ``MetaTensor``'s affine, else 1 mm.
    """
    if spacing is None:
        spacing = spacing_of(t1.affine) if isinstance(t1, MetaTensor) else (1.0, 1.0, 1.0)
    values = t1.detach().cpu().numpy() if isinstance(t1, torch.Tensor) else np.asarray(t1)
    nonzero = values != 0
    if float(1.0 - nonzero.mean()) < SKULL_STRIPPED_ZERO_FRACTION:
        return False
    return mask_volume_ml(nonzero, spacing) <= MAX_BRAIN_ML


def mask_volume_ml(mask: np.ndarray | torch.Tensor, spacing: Sequence[float]) -> float:
    """Volume of a mask in millilitres."""
    count = int(mask.sum()) if isinstance(mask, torch.Tensor) else int(np.count_nonzero(mask))
    return count * float(np.prod(spacing)) / 1000.0


def head_mask(image: np.ndarray, slice_axis: int = 2) -> np.ndarray:
    """Foreground (head or brain) mask of a 3D image ``(X, Y, Z)``; works on raw and skull-stripped data.

    Threshold = the larger of (a) 10 % of the robust range ``p2 + 0.1 * (p98 - p2)`` (FSL BET's
    default), which keeps dark tissue and leaves faint ghosts out, and (b) ``3.7 sigma`` of the air
    noise, above which only 0.1 % of Rayleigh-distributed air voxels lie, so a noisy background
    does not become "head". ``sigma`` is read from the 25th percentile of the whole volume
    (``p25 = 0.7585 sigma`` for Rayleigh air), which assumes air fills at least a quarter of the
    field of view (true for MR heads and for skull-stripped brains, whose air is 0). An Otsu
    threshold was tried first: on the raw clinical T1 it split white matter from the rest of the head.
    Then an opening (removes isolated voxels), the largest connected component, a closing and a
    hole filling (ventricles, dark skull). The morphology works within slices (along
    ``slice_axis`` nothing is eroded), so thick-slice scans keep their first and last slices.

    Returns:
        boolean ``(X, Y, Z)``; empty when nothing stands out of the background.
    """
    image = np.asarray(image, dtype=np.float32)
    sample = image.ravel()[:: max(1, image.size // 2_000_000)]
    p2, p25, p98 = np.percentile(sample, [2, 25, 98])
    sigma = max(float(p25), 0.0) / RAYLEIGH_P25
    threshold = max(float(p2 + 0.1 * (p98 - p2)), 3.7 * sigma)
    above = image > threshold
    head = np.zeros_like(above)
    if not above.any():
        return head
    box = bounding_box(above)  # morphology on the box only: ~3x faster on skull-stripped data
    in_plane = in_plane_structure(slice_axis)
    mask = ndimage.binary_opening(above[box], in_plane, iterations=2)
    if not mask.any():
        return head
    mask = largest_component(mask)
    # Padded so the closing's erosion does not eat a head that touches the field of view's edge.
    mask = ndimage.binary_closing(np.pad(mask, 2), in_plane, iterations=2)[2:-2, 2:-2, 2:-2]
    head[box] = fill_holes(mask, slice_axis)
    return head


def foreground_mask(volume: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Head or brain ``(X, Y, Z)`` bool by the package's one rule: ``volume != 0`` when skull-stripped,
    else :func:`head_mask` (across the thickest voxel side)."""
    volume = np.asarray(volume, dtype=np.float32)
    if is_skull_stripped(volume, spacing):
        return volume != 0
    return head_mask(volume, slice_axis_of(spacing))


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


def slice_axis_of(spacing: Sequence[float]) -> int:
    """Axis across the acquired slices: the thickest voxel side; the last axis when isotropic."""
    spacing = np.asarray(spacing, dtype=np.float64)
    thickest = int(np.argmax(spacing))
    return thickest if spacing[thickest] > 1.2 * np.median(spacing) else 2


def resolve_mask_method(t1: MetaTensor, method: str = "auto") -> str:
    """The concrete method ``"auto"`` stands for on this T1 (``"otsu"`` is ``"head"``)."""
    from monai_t1t2.nets.meshnet import BRAIN_MASK_MODEL, brainchop_dir

    if method not in MASK_METHODS:
        raise T1T2Error(f"mask method {method!r}: choose one of {', '.join(MASK_METHODS)}")
    if method == "otsu":
        return "head"
    if method != "auto":
        return method
    if is_skull_stripped(t1):
        return "nonzero"
    return "network" if (brainchop_dir() / BRAIN_MASK_MODEL / "model.json").is_file() else "head"


def nonzero_brain(t1: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The brain of a skull-stripped T1: ``t1 > 0`` with the cavities it encloses filled (3D).

    Some pipelines leave voxels inside the brain at or below 0: TCGA-DU-7294's T1
    (``tests/data/sample_t1``) has 2,143 of them (2,057 negative, resampling undershoot; 86 at 0), in
    the lateral ventricles, where its T2 is bright. Without the filling they are background, and the
    synthetic T2 is black there. ``(X, Y, Z)`` or ``(1, X, Y, Z)``; NumPy in, NumPy out, a tensor in,
    a bool tensor out."""
    values = t1.detach().cpu().numpy() if isinstance(t1, torch.Tensor) else np.asarray(t1)
    filled = fill_holes(values[0] > 0 if values.ndim == 4 else values > 0, slice_axis=None)
    filled = filled[None] if values.ndim == 4 else filled
    return torch.from_numpy(filled) if isinstance(t1, torch.Tensor) else filled


def brain_mask(t1: MetaTensor, method: str = "auto", device: str | torch.device | None = None) -> torch.Tensor:
    """Brain mask of a T1 on its own grid, by the rule in this module's docstring.

    Args:
        t1: ``(1, X, Y, Z)``.
        method: ``"auto"``, ``"nonzero"`` (:func:`nonzero_brain`), ``"network"`` (brainchop mindgrab)
            or ``"head"`` (:func:`head_mask`, which keeps the skull).

    Returns:
        bool tensor ``(1, X, Y, Z)``.
    """
    method = resolve_mask_method(t1, method)
    if method == "nonzero":
        return nonzero_brain(t1)
    if method == "head":
        spacing = spacing_of(t1.affine) if isinstance(t1, MetaTensor) else (1.0, 1.0, 1.0)
        return torch.from_numpy(head_mask(t1[0].detach().cpu().numpy(), slice_axis_of(spacing)))[None]
    from monai_t1t2.nets.meshnet import predict_brain_mask

    return predict_brain_mask(t1, device=device).as_tensor().bool()
