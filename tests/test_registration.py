"""prepare-pairs: world-coordinate resampling, rigid MI registration, similarity measures, cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conftest import PAIRED, RAW, write_nifti
from monai_t1t2.io import find_subjects
from monai_t1t2.training.data import check_subject_grids
from monai_t1t2.errors import DatasetError, OutputExistsError
from monai_t1t2.io import file_sha256
from monai_t1t2.geometry import resample_to_grid
from monai_t1t2.registration import RegistrationError, RigidSettings, edge_distance, euler_angles_deg, normalized_mutual_information, register_rigid, rigid_matrix, rotation_angle_deg, run_prepare_pairs


def phantom(shape=(40, 44, 36), seed: int = 0) -> np.ndarray:
    """An asymmetric smooth 'head': an ellipsoid holding three off-centre blobs of other intensities."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))

    def inside(center, radii):
        offset = (grid - np.asarray(center)[:, None, None, None]) / np.asarray(radii)[:, None, None, None]
        return (offset**2).sum(0) < 1

    volume = np.where(inside((0, 0, 0), (0.8, 0.85, 0.75)), 100.0, 0.0)
    volume[inside((0.3, 0.2, 0.1), (0.25, 0.15, 0.2))] = 180.0
    volume[inside((-0.35, -0.3, 0.25), (0.15, 0.3, 0.12))] = 40.0
    volume[inside((0.05, 0.45, -0.35), (0.2, 0.12, 0.15))] = 140.0
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), 2.0)  # smooth 'folding' everywhere
    volume = (ndimage.gaussian_filter(volume, 1.0) + 25.0 * texture / texture.std()) * (volume > 0)
    return (volume + rng.normal(0, 1.0, shape) * (volume > 0)).astype(np.float32)


def t2_like(t1: np.ndarray) -> np.ndarray:
    """A different, non-monotonic contrast of the same anatomy (as T2 is of T1)."""
    return np.where(t1 > 0, 250.0 - t1 + 0.004 * (t1 - 100.0) ** 2, 0.0).astype(np.float32)


def affine_2mm(origin=(-40.0, -44.0, -36.0)) -> np.ndarray:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = origin
    return affine


def mean_displacement_mm(matrix: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> float:
    """Mean distance (mm) that ``matrix`` (4x4, world) moves the world points of ``mask`` voxels."""
    points = np.c_[np.argwhere(mask), np.ones(int(mask.sum()))] @ affine.T
    return float(np.linalg.norm((points @ matrix.T - points)[:, :3], axis=1).mean())


# ----- similarity measures ----------------------------------------------------------------

def test_nmi_of_identical_and_remapped_images_is_two():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 16, size=(20, 20, 20)).astype(np.float32)
    assert normalized_mutual_information(image, image, bins=16) == pytest.approx(2.0)
    remapped = (15 - image) * 3.0 + 7.0  # one-to-one intensity change: still fully dependent
    assert normalized_mutual_information(image, remapped, bins=16) == pytest.approx(2.0)


def test_nmi_of_independent_images_is_near_one_and_mask_is_respected():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 40, 40))
    b = rng.normal(size=(40, 40, 40))
    assert normalized_mutual_information(a, b, bins=16) == pytest.approx(1.0, abs=0.02)
    mask = np.zeros(a.shape, bool)
    mask[:20] = True
    mixed = np.where(mask, a, b)  # equal to a inside the mask, independent outside
    assert normalized_mutual_information(a, mixed, mask, bins=16) == pytest.approx(2.0)
    assert normalized_mutual_information(a, mixed, bins=16) < 1.5
    with pytest.raises(ValueError, match="shapes differ"):
        normalized_mutual_information(a, b[:-1])


def test_nmi_falls_when_images_are_shifted():
    t1 = phantom()
    t2 = t2_like(t1)
    brain = t1 > 0
    aligned = normalized_mutual_information(t1, t2, brain)
    shifted = normalized_mutual_information(t1, np.roll(t2, 3, axis=0), brain)
    assert aligned > shifted + 0.05


def test_edge_distance_is_zero_when_aligned_and_grows_with_shift():
    t1 = phantom()
    t2 = t2_like(t1)
    around = ndimage.binary_dilation(t1 > 0, iterations=2)
    spacing = (2.0, 2.0, 2.0)
    assert edge_distance(t1, t1, around, spacing) == 0.0
    aligned = edge_distance(t1, t2, around, spacing)  # other contrast: edges mostly, not all, shared
    one = edge_distance(t1, np.roll(t2, 1, axis=1), around, spacing)
    three = edge_distance(t1, np.roll(t2, 3, axis=1), around, spacing)
    assert aligned < spacing[0]
    assert aligned < one < three


# ----- geometry ---------------------------------------------------------------------------

def test_rigid_matrix_round_trip():
    matrix = rigid_matrix((2.0, -3.0, 4.0), (1.0, -2.0, 3.0), center_mm=(10.0, 20.0, 30.0))
    assert np.allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3))
    assert np.allclose(euler_angles_deg(matrix), (2.0, -3.0, 4.0))
    assert np.allclose(matrix @ np.array([10.0, 20.0, 30.0, 1.0]), [11.0, 18.0, 33.0, 1.0])
    assert rotation_angle_deg(rigid_matrix((0, 0, 5.0), (0, 0, 0))) == pytest.approx(5.0)


def test_resample_to_grid_uses_world_coordinates():
    volume = phantom()
    affine = affine_2mm()
    assert np.allclose(resample_to_grid(volume, affine, volume.shape, affine), volume, atol=1e-4)
    # The same voxels declared 4 mm (two voxels) further along x: on the old grid they appear shifted.
    moved = affine.copy()
    moved[0, 3] += 4.0
    resampled = resample_to_grid(volume, moved, volume.shape, affine)
    # MONAI's float32 grid coordinates: errors of ~2e-6 of the intensity (values up to ~180 here).
    assert np.allclose(resampled[2:], volume[:-2], atol=1e-3)
    assert np.abs(resampled[:2]).max() == 0, "outside the field of view: 0"
    labels = (volume > 120).astype(np.int16)
    nearest = resample_to_grid(labels, moved, labels.shape, affine, order=0)
    assert nearest.dtype == np.int16 and set(np.unique(nearest)) <= {0, 1}


# ----- rigid registration -----------------------------------------------------------------

def test_register_rigid_recovers_a_known_transform_on_a_phantom():
    t1 = phantom()
    t2 = t2_like(t1)
    affine = affine_2mm()
    truth = rigid_matrix((3.0, -2.0, 4.0), (3.0, -2.0, 2.5))
    brain = t1 > 0
    assert mean_displacement_mm(truth, brain, affine) > 3.0  # the start is clearly misaligned
    settings = RigidSettings(shrink_factors=(2, 1), smoothing_sigmas_mm=(2.0, 0.0), iterations=150,
                             sampling_fraction=0.5, seed=0)
    result = register_rigid(t1, affine, t2, truth @ affine, settings=settings, name="phantom")
    error = result.matrix_ras @ np.linalg.inv(truth)
    assert rotation_angle_deg(error) < 1.0
    assert mean_displacement_mm(error, brain, affine) < 1.0
    assert result.metric_after < result.metric_before


def test_register_rigid_reports_no_convergence():
    t1 = phantom()
    affine = affine_2mm()
    truth = rigid_matrix((4.0, 0.0, 0.0), (4.0, 0.0, 0.0))
    settings = RigidSettings(shrink_factors=(1,), smoothing_sigmas_mm=(0.0,), iterations=2, sampling_fraction=0.3)
    with pytest.raises(RegistrationError, match="case phantom: .*did not converge within 2 iterations"):
        register_rigid(t1, affine, t2_like(t1), truth @ affine, settings=settings, name="phantom")


# ----- prepare-pairs on synthetic folders -------------------------------------------------

@pytest.fixture
def unregistered(tmp_path: Path) -> Path:
    """``raw/case0``: a T1 at 2 mm and a T2 at 3 mm on its own grid and origin, plus labels on the T2 grid."""
    t1 = phantom()
    t1_affine = affine_2mm()
    t2_affine = np.diag([3.0, 3.0, 3.0, 1.0])
    t2_affine[:3, 3] = (-45.0, -46.0, -40.0)
    # Sample the T2 contrast on its own grid through world coordinates (what a scanner gives).
    t2 = resample_to_grid(t2_like(t1), t1_affine, (30, 30, 26), t2_affine)
    labels = (resample_to_grid(t1, t1_affine, (30, 30, 26), t2_affine) > 160).astype(np.int16)
    case = tmp_path / "raw" / "case0"
    write_nifti(case / "t1.nii.gz", t1, t1_affine)
    write_nifti(case / "t2.nii.gz", t2, t2_affine)
    write_nifti(case / "tumor_seg.nii.gz", labels, t2_affine)
    return tmp_path / "raw"


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.rglob("*.nii.gz"))}


def test_prepare_pairs_writes_pairs_on_the_t1_grid_and_caches(unregistered: Path, tmp_path: Path, capsys):
    inputs_before = _hashes(unregistered)
    out = tmp_path / "prepared"
    fast = RigidSettings(shrink_factors=(2, 1), smoothing_sigmas_mm=(2.0, 0.0), iterations=100, sampling_fraction=0.5)
    assert run_prepare_pairs(unregistered, out, register="rigid", settings=fast) == 0
    assert _hashes(unregistered) == inputs_before  # inputs untouched
    case = out / "case0"
    assert (case / "t1.nii.gz").read_bytes() == (unregistered / "case0" / "t1.nii.gz").read_bytes()
    subjects = find_subjects(out)
    assert [s["case"] for s in subjects] == ["case0"] and subjects[0]["tumor_seg"]
    check_subject_grids(subjects)
    seg = np.asarray(nib.load(case / "tumor_seg.nii.gz").dataobj)
    assert seg.sum() > 0 and set(np.unique(seg)) <= {0, 1}
    report = json.loads((case / "registration.json").read_text())
    assert report["input_sha256"]["t1"] == inputs_before["t1.nii.gz"]
    assert report["tumor_seg_from"] == "t2_grid"
    # The T2 was only resampled (no motion): registration must stay close to the identity.
    assert report["transform"]["rotation_deg"] < 1.0
    assert np.linalg.norm(report["transform"]["translation_mm"]) < 1.0
    assert (case / "registration.png").stat().st_size > 1000
    assert "case0: rigid" in capsys.readouterr().out

    written = (case / "t2.nii.gz").stat().st_mtime_ns
    assert run_prepare_pairs(unregistered, out, register="rigid", settings=fast) == 0
    assert "case0: cached" in capsys.readouterr().out
    assert (case / "t2.nii.gz").stat().st_mtime_ns == written
    # Other settings than those recorded: refuse to replace silently, redo with overwrite.
    with pytest.raises(OutputExistsError, match="case case0: .*--overwrite"):
        run_prepare_pairs(unregistered, out, register="none")
    assert run_prepare_pairs(unregistered, out, register="none", overwrite=True) == 0
    assert json.loads((case / "registration.json").read_text())["register"] == "none"


def test_prepare_pairs_errors_name_the_case(unregistered: Path, tmp_path: Path):
    with pytest.raises(OutputExistsError, match="input folder"):
        run_prepare_pairs(unregistered, unregistered, register="none")
    lonely = tmp_path / "missing" / "case9"
    write_nifti(lonely / "t2.nii.gz", phantom())
    with pytest.raises(DatasetError, match="case case9: .*no t1"):
        run_prepare_pairs(tmp_path / "missing", tmp_path / "out_missing", register="none")
    far = tmp_path / "far" / "case1"
    write_nifti(far / "t1.nii.gz", phantom(), affine_2mm())
    write_nifti(far / "t2.nii.gz", t2_like(phantom()), affine_2mm(origin=(400.0, -44.0, -36.0)))
    with pytest.raises(RegistrationError, match="case case1: fields of view do not overlap"):
        run_prepare_pairs(tmp_path / "far", tmp_path / "out_far", register="rigid")
    assert not (tmp_path / "out_far" / "case1" / "t2.nii.gz").exists()


def test_cli_prepare_pairs(unregistered: Path, tmp_path: Path, capsys):
    from monai_t1t2.cli import main

    assert main(["prepare-pairs", str(unregistered), str(tmp_path / "out"), "--register", "none"]) == 0
    assert (tmp_path / "out" / "case0" / "registration.png").is_file()
    assert main(["prepare-pairs", str(unregistered), str(unregistered)]) == 2
    assert "monai-t1t2: error:" in capsys.readouterr().err


# ----- real data ----------------------------------------------------------------------------

def _downsample_2mm(image: nib.Nifti1Image, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``box`` (even sizes) from a 1 mm volume and average 2x2x2 blocks: a 2 mm volume and affine."""
    array = np.asarray(image.dataobj, dtype=np.float32)[box]
    shape = [s // 2 for s in array.shape]
    array = array[: 2 * shape[0], : 2 * shape[1], : 2 * shape[2]]
    blocks = array.reshape(shape[0], 2, shape[1], 2, shape[2], 2).mean(axis=(1, 3, 5))
    start = np.array([b.start for b in box], dtype=np.float64)
    affine = image.affine @ np.r_[np.c_[2 * np.eye(3), start + 0.5], [[0, 0, 0, 1]]]
    return blocks, affine


@pytest.mark.realdata
def test_rigid_registration_recovers_a_known_motion_of_a_shared_t2():
    case = PAIRED / "TCGA-DU-7294"
    t1_image, t2_image = nib.load(case / "t1.nii.gz"), nib.load(case / "t2.nii.gz")
    brain = np.asarray(t1_image.dataobj) > 0
    points = np.argwhere(brain)
    low = np.maximum(points.min(0) - 6, 0)
    box = tuple(slice(int(a), int(a + 2 * ((b - a + 13) // 2))) for a, b in zip(low, points.max(0)))
    t1, affine = _downsample_2mm(t1_image, box)
    t2, _ = _downsample_2mm(t2_image, box)
    center = (affine @ np.r_[np.array(t1.shape) / 2.0, 1.0])[:3]
    truth = rigid_matrix((3.0, -2.0, 4.0), (4.0, -3.0, 2.0), center_mm=center)  # a few degrees and mm
    brain_2mm = t1 > 0
    assert mean_displacement_mm(truth, brain_2mm, affine) > 4.0
    settings = RigidSettings(shrink_factors=(2, 1), smoothing_sigmas_mm=(2.0, 0.0), iterations=150,
                             sampling_fraction=0.25, seed=0)
    started = time.perf_counter()
    result = register_rigid(t1, affine, t2, truth @ affine, settings=settings, name="TCGA-DU-7294")
    seconds = time.perf_counter() - started
    error = result.matrix_ras @ np.linalg.inv(truth)
    print(f"registration {seconds:.1f} s, rotation error {rotation_angle_deg(error):.3f} deg, "
          f"mean displacement error {mean_displacement_mm(error, brain_2mm, affine):.3f} mm")
    assert rotation_angle_deg(error) < 1.0
    assert mean_displacement_mm(error, brain_2mm, affine) < 1.0


@pytest.mark.realdata
@pytest.mark.slow
def test_prepared_ixi_pair_is_accepted_for_training(tmp_path: Path):
    source = RAW / "IXI002-Guys-0828"
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "IXI002-Guys-0828").symlink_to(source, target_is_directory=True)
    quick = RigidSettings(shrink_factors=(4, 2), smoothing_sigmas_mm=(3.0, 1.5), iterations=100, sampling_fraction=0.1)
    run_prepare_pairs(raw, tmp_path / "prepared", register="rigid", settings=quick)
    subjects = find_subjects(tmp_path / "prepared")
    assert [s["case"] for s in subjects] == ["IXI002-Guys-0828"]
    check_subject_grids(subjects)
    t1, t2 = nib.load(subjects[0]["t1"]), nib.load(subjects[0]["t2"])
    assert t2.shape == t1.shape == nib.load(source / "t1.nii.gz").shape
    report = json.loads((tmp_path / "prepared" / "IXI002-Guys-0828" / "registration.json").read_text())
    assert report["similarity_registered"]["nmi_brain"] > report["similarity_world"]["nmi_brain"]
    assert report["similarity_registered"]["edge_distance_mm"] < report["similarity_world"]["edge_distance_mm"]


def test_prepare_pairs_skull_strip_cuts_both_contrasts_to_the_t1_brain(unregistered: Path, tmp_path: Path, monkeypatch, capsys):
    import torch

    import monai_t1t2.masks

    calls = []

    def core(t1, method="auto", device=None):  # stands in for mindgrab: the inner part of the head
        calls.append(method)
        return torch.from_numpy(ndimage.binary_erosion(t1[0].numpy() > 0, iterations=4))[None]

    monkeypatch.setattr(monai_t1t2.masks, "brain_mask", core)
    out = tmp_path / "stripped"
    assert run_prepare_pairs(unregistered, out, register="none", skull_strip=True) == 0
    assert calls == ["network"]
    t1_in = np.asarray(nib.load(unregistered / "case0" / "t1.nii.gz").dataobj)
    expected = ndimage.binary_erosion(t1_in > 0, iterations=4)
    t1 = np.asarray(nib.load(out / "case0" / "t1.nii.gz").dataobj)
    t2 = np.asarray(nib.load(out / "case0" / "t2.nii.gz").dataobj)
    assert np.array_equal(t1 > 0, expected) and np.allclose(t1[expected], t1_in[expected])
    assert not t2[~expected].any() and (t2[expected] > 0).mean() > 0.99
    report = json.loads((out / "case0" / "registration.json").read_text())
    assert report["skull_strip"] is True and report["brain_voxels"] == int(expected.sum())
    assert f"brain {int(expected.sum())} voxels" in capsys.readouterr().out
    # The same inputs without skull stripping are other settings: never replaced silently.
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_prepare_pairs(unregistered, out, register="none")
    assert run_prepare_pairs(unregistered, out, register="none", skull_strip=True) == 0
    assert calls == ["network"]  # cached


def test_prepare_pairs_skull_strip_without_the_network_names_the_case(unregistered: Path, tmp_path: Path, monkeypatch,
                                                                     capsys):
    from monai_t1t2.cli import main

    monkeypatch.setenv("MONAI_T1T2_BRAINCHOP_DIR", str(tmp_path / "no_models"))
    assert main(["prepare-pairs", str(unregistered), str(tmp_path / "out"), "--register", "none", "--skull-strip"]) == 2
    assert "case case0: skull stripping: model 'mindgrab': not found" in capsys.readouterr().err
    assert not (tmp_path / "out" / "case0" / "t2.nii.gz").exists()


@pytest.mark.realdata
@pytest.mark.slow
def test_skull_strip_of_the_raw_clinical_acquisition(tmp_path: Path):
    """The raw TCGA-FG-6692 (skull, noisy background, 5.5 mm slices) -> T1 and T2 cut to one brain."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "TCGA-FG-6692").symlink_to(RAW / "TCGA-FG-6692", target_is_directory=True)
    run_prepare_pairs(raw, tmp_path / "prepared", register="none", skull_strip=True)
    case = tmp_path / "prepared" / "TCGA-FG-6692"
    report = json.loads((case / "registration.json").read_text())
    t1, t2 = nib.load(case / "t1.nii.gz"), nib.load(case / "t2.nii.gz")
    t1_array, t2_array = np.asarray(t1.dataobj), np.asarray(t2.dataobj)
    source = np.asarray(nib.load(RAW / "TCGA-FG-6692" / "t1.nii.gz").dataobj)
    from monai_t1t2.masks import head_mask

    head = head_mask(source)
    brain_litres = report["brain_voxels"] * float(np.prod(t1.header.get_zooms()[:3])) / 1e6
    print(f"brain {brain_litres:.2f} l, {report['brain_voxels'] / head.sum():.2f} of the head")
    assert 1.0 < brain_litres < 1.9
    assert report["brain_voxels"] < 0.8 * head.sum()  # skull, scalp and background are gone
    # Both contrasts are zero outside one mask of brain_voxels voxels and fill most of it.
    assert 0.95 * report["brain_voxels"] < int((t1_array > 0).sum()) <= report["brain_voxels"]
    assert 0.8 * report["brain_voxels"] < int((t2_array > 0).sum()) <= report["brain_voxels"]  # its slab is shorter
    assert int(((t1_array > 0) | (t2_array > 0)).sum()) <= report["brain_voxels"]
