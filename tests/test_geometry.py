"""The geometry toolbox: one bounding box, component, fill, dilation, grid check and resampling."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_t1t2.geometry import (
    bounding_box,
    dilate,
    fill_holes,
    largest_component,
    resample_to_grid,
    same_grid,
    to_ras,
)


def test_bounding_box_with_margin_clips_to_the_grid_and_covers_an_empty_mask():
    mask = np.zeros((10, 12, 8), bool)
    mask[2:5, 3, 6:8] = True
    assert bounding_box(mask) == (slice(2, 5), slice(3, 4), slice(6, 8))
    assert bounding_box(mask, 3) == (slice(0, 8), slice(0, 7), slice(3, 8))
    assert bounding_box(mask, (0, 1, 2)) == (slice(2, 5), slice(2, 5), slice(4, 8))
    assert bounding_box(torch.from_numpy(mask)) == bounding_box(mask)
    assert bounding_box(np.zeros((4, 5, 6), bool)) == (slice(0, 4), slice(0, 5), slice(0, 6))


def test_largest_component_connectivity_is_the_callers():
    mask = np.zeros((9, 9, 9), bool)
    mask[1:3, 1:3, 1:3] = True          # 8 voxels
    mask[3, 3, 3] = True                # touches the cube at a corner only
    mask[5:9, 5:9, 5:9] = True          # 64 voxels, apart
    assert largest_component(mask).sum() == 64
    small = mask.copy()
    small[5:9, 5:9, 5:9] = False
    assert largest_component(small, connectivity=1).sum() == 8
    assert largest_component(small, connectivity=3).sum() == 9


def test_fill_holes_closes_a_cavity_and_a_slice_open_through_the_volume():
    shell = np.zeros((11, 11, 11), bool)
    shell[2:9, 2:9, 2:9] = True
    shell[4:7, 4:7, 4:7] = False
    assert fill_holes(shell, slice_axis=None).sum() == 7**3
    tube = np.zeros((9, 9, 5), bool)
    tube[2:7, 2:7, :] = True
    tube[3:6, 3:6, :] = False             # open along z: no 3D hole
    assert fill_holes(tube, slice_axis=None).sum() == tube.sum()
    assert fill_holes(tube, slice_axis=2).sum() == 25 * 5


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_dilate_tensor_and_array_agree_with_the_protocols_scipy_dilation(radius):
    rng = np.random.default_rng(radius)
    mask = rng.random((2, 1, 14, 12, 10)) > 0.98
    expected = np.stack([ndimage.binary_dilation(m[0], ndimage.generate_binary_structure(3, 1), iterations=radius)
                         for m in mask])[:, None]
    assert np.array_equal(dilate(torch.from_numpy(mask).float(), radius).numpy() > 0, expected)
    assert np.array_equal(dilate(mask[0, 0], radius), expected[0, 0])


def test_dilations_add_up_and_zero_keeps_the_mask():
    mask = torch.rand(1, 1, 12, 12, 12, generator=torch.Generator().manual_seed(0)) > 0.98
    assert torch.equal(dilate(dilate(mask, 2), 3), dilate(mask, 5))
    assert dilate(mask, 0) is mask and dilate(mask, 1).dtype == torch.bool


def test_same_grid_tolerates_header_rounding_only():
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    assert same_grid((4, 5, 6), affine, (1, 4, 5, 6), affine + 1e-5)
    assert not same_grid((4, 5, 6), affine, (4, 5, 7), affine)
    shifted = affine.copy()
    shifted[0, 3] = 0.5
    assert not same_grid((4, 5, 6), affine, (4, 5, 6), shifted)


def test_resample_to_grid_matches_scipy_through_world_coordinates():
    rng = np.random.default_rng(0)
    volume = ndimage.gaussian_filter(rng.random((20, 18, 16)).astype(np.float32), 2)
    source_affine = np.array([[-1.0, 0, 0, 10], [0, 1.2, 0, -5], [0, 0, 1.5, 2], [0, 0, 0, 1]])
    target_affine = np.array([[0.9, 0, 0, -8], [0, 0.9, 0, -4], [0, 0, 1.1, 3], [0, 0, 0, 1]])
    angle = np.deg2rad(5)
    world = np.eye(4)
    world[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    world[:3, 3] = [0.5, -0.3, 0.2]
    ours = resample_to_grid(volume, source_affine, (18, 16, 14), target_affine, world)
    voxel_map = np.linalg.inv(source_affine) @ world @ target_affine
    expected = ndimage.affine_transform(volume, voxel_map[:3, :3], offset=voxel_map[:3, 3], output_shape=(18, 16, 14),
                                        order=1, mode="constant", cval=0.0, prefilter=False)
    inside = ndimage.binary_erosion(expected > 0, iterations=2)  # borders: both pad with 0, interpolate differently
    assert inside.mean() > 0.3
    np.testing.assert_allclose(ours[inside], expected[inside], atol=1e-4)
    labels = (volume > np.median(volume)).astype(np.int16)
    nearest = resample_to_grid(labels, source_affine, (18, 16, 14), target_affine, world, order=0)
    assert nearest.dtype == np.int16 and set(np.unique(nearest)) <= {0, 1}


def test_to_ras_reorders_voxels_and_affine():
    from monai.data import MetaTensor

    volume = MetaTensor(torch.arange(24.0).reshape(1, 2, 3, 4), affine=torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0])))
    ras = to_ras(volume)
    assert torch.equal(ras[0].as_tensor(), volume[0].as_tensor().flip(0))
    assert float(ras.affine[0, 0]) == 1.0
