"""Geometry toolbox: bounding boxes, connected components, hole filling, dilation, grids, resampling.

One implementation of each job, used by every stage. Boxes come from MONAI's
``generate_spatial_bounding_box``, resampling from MONAI's ``SpatialResample`` (through world
coordinates, so two grids need not share an orientation), components from ``scipy.ndimage``
with the connectivity stated by the caller.

Conventions: masks are boolean ``(X, Y, Z)`` NumPy arrays (or ``(..., X, Y, Z)`` tensors for
:func:`dilate`), affines are 4x4 voxel -> RAS mm.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

#: Largest difference of any affine entry (mm) for two volumes to count as on one grid.
GRID_AFFINE_TOLERANCE_MM = 1e-3


RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def to_ras(volume):
    """A channel-first ``MetaTensor`` reoriented to RAS voxel order (MONAI ``Orientation``)."""
    from monai.transforms import Orientation

    # Labels given explicitly: MONAI warns about its changing default otherwise.
    return Orientation(axcodes="RAS", labels=RAS_LABELS)(volume)


def bounding_box(mask: np.ndarray | torch.Tensor, margin: int | Sequence[int] = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding ``mask`` (non-zero voxels), grown by ``margin`` voxels
    (one number, or one per axis) and clipped to the grid; the whole grid when ``mask`` is empty."""
    from monai.transforms.utils import generate_spatial_bounding_box

    if not bool(mask.any()):
        return tuple(slice(0, int(n)) for n in mask.shape)
    start, end = generate_spatial_bounding_box(mask[None], select_fn=lambda x: x > 0, margin=margin,
                                               allow_smaller=True)
    return tuple(slice(max(int(a), 0), min(int(b), int(n))) for a, b, n in zip(start, end, mask.shape))


def largest_component(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """The largest connected component of a bool mask (``mask`` itself, as bool, when it has one or none).

    Args:
        connectivity: 1 face neighbours (6 in 3D), ``mask.ndim`` also corner neighbours (26 in 3D,
            brainchop's post-processing).
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    labels, count = ndimage.label(mask, structure=structure)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def in_plane_structure(slice_axis: int) -> np.ndarray:
    """3x3x3 cross connecting voxels within a slice only (nothing along ``slice_axis``)."""
    structure = ndimage.generate_binary_structure(3, 1)
    index = [slice(None)] * 3
    for end in (0, 2):
        index[slice_axis] = end
        structure[tuple(index)] = False
    return structure


def fill_holes(mask: np.ndarray, slice_axis: int | None = 2) -> np.ndarray:
    """3D hole filling, then (unless ``slice_axis`` is None) slice by slice across ``slice_axis``:
    a skull open at the foramen magnum, or a gap between thick slices, leaks in 3D only."""
    mask = ndimage.binary_fill_holes(mask)
    if slice_axis is None:
        return mask
    return ndimage.binary_fill_holes(mask, in_plane_structure(slice_axis))


def dilate(mask: np.ndarray | torch.Tensor, radius: int) -> np.ndarray | torch.Tensor:
    """Dilation by ``radius`` voxels with face neighbours (6-connected in 3D, a city-block ball).

    The one dilation of the package: the protocol's "tumour dilated by 3 voxels"
    (``scipy.ndimage.binary_dilation(..., iterations=3)``), the QC margins and the training
    losses. NumPy masks ``(X, Y, Z)`` are dilated on their bounding box (bool out); tensors
    ``(..., X, Y, Z)`` (any leading dimensions, any device, differentiable-free) by max-pooling
    along one axis at a time (same dtype out). ``dilate(dilate(m, a), b) == dilate(m, a + b)``.
    """
    if radius <= 0:
        return mask
    if isinstance(mask, torch.Tensor):
        shape = mask.shape
        grown = mask.reshape((-1, 1) + tuple(shape[-3:])).float()
        for _ in range(radius):
            grown = torch.stack([
                torch.nn.functional.max_pool3d(grown, kernel_size=k, stride=1, padding=tuple(s // 2 for s in k))
                for k in ((3, 1, 1), (1, 3, 1), (1, 1, 3))
            ]).amax(0)
        return grown.reshape(shape).to(mask.dtype)
    mask = np.asarray(mask, dtype=bool)
    grown = np.zeros_like(mask)
    if not mask.any():
        return grown
    box = bounding_box(mask, radius)
    grown[box] = ndimage.binary_dilation(mask[box], ndimage.generate_binary_structure(mask.ndim, 1), iterations=radius)
    return grown


def same_grid(shape: Sequence[int], affine: np.ndarray, other_shape: Sequence[int], other_affine: np.ndarray,
              tolerance_mm: float = GRID_AFFINE_TOLERANCE_MM) -> bool:
    """True when two spatial shapes are equal and their affines differ by at most ``tolerance_mm``."""
    if tuple(int(n) for n in shape[-3:]) != tuple(int(n) for n in other_shape[-3:]):
        return False
    difference = np.abs(np.asarray(affine, dtype=np.float64) - np.asarray(other_affine, dtype=np.float64)).max()
    return bool(difference <= tolerance_mm)


def resample_to_grid(
    volume: np.ndarray,
    volume_affine: np.ndarray,
    target_shape: Sequence[int],
    target_affine: np.ndarray,
    world_transform: np.ndarray | None = None,
    order: int = 1,
) -> np.ndarray:
    """Resample ``volume`` ``(X, Y, Z)`` onto a target grid through world (RAS) coordinates (MONAI ``SpatialResample``).

    Args:
        volume_affine, target_affine: 4x4 voxel -> RAS mm affines.
        world_transform: 4x4 map from the target's world to the volume's world (identity: trust
            the headers), e.g. a rigid registration's ``matrix_ras``.
        order: 1 linear (images), 0 nearest neighbour (labels). Outside the field of view: 0.

    Returns:
        ``target_shape`` array, float32 for ``order=1``, the input dtype for ``order=0``.
    """
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    transform = np.eye(4) if world_transform is None else np.asarray(world_transform, dtype=np.float64)
    # Resampling the volume through ``transform`` equals resampling it, with its affine moved by
    # the inverse transform, onto the target grid by the headers alone.
    moved_affine = np.linalg.inv(transform) @ np.asarray(volume_affine, dtype=np.float64)
    source = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float64 if order == 0 else np.float32))[None],
                        affine=torch.from_numpy(moved_affine))
    resampled = SpatialResample(mode="nearest" if order == 0 else "bilinear", padding_mode="zeros",
                                align_corners=True, dtype=torch.float64 if order == 0 else torch.float32)(
        source, dst_affine=torch.from_numpy(np.asarray(target_affine, dtype=np.float64)),
        spatial_size=tuple(int(n) for n in target_shape))
    out = resampled[0].detach().cpu().numpy()
    return out.astype(volume.dtype) if order == 0 else out.astype(np.float32, copy=False)
