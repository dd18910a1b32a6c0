"""The scoring protocol (monai_t1t2.metrics) on constructed volumes with known answers, and on the shared pairs."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics.regression import compute_ssim_and_cs

from conftest import PAIRED, PAIRED_CASES, write_nifti
from monai_t1t2.cli import main
from monai_t1t2.errors import GridMismatchError, InvalidVolumeError
from monai_t1t2.evaluation import case_of
from monai_t1t2.metrics import evaluate, gradient_errors, masked_ssim, normal_white_matter, normalise_for_scoring, slice_flicker, ssim_map
from monai_t1t2.regions import REGION_GROUPS

SHAPE = (48, 48, 16)  # in-plane brain area ~1300 voxels: axial slices reach the 1000-voxel flicker threshold
EVERY_KEY = {"psnr", "mae", "ssim", "r_z", "e_z", "e_xy", "slice_flicker", "tumour_contrast_error", "c_pred", "c_ref",
             *(f"mae_{name}" for name in REGION_GROUPS.values())}

# EVALUATION.md, "Floor figures measured on the shared pairs (inverted T1, this protocol)".
FLOOR = {
    "BraTS-GLI-00001-000": (0.406, 11.60, 0.202),
    "BrainLesion-case-A": (0.481, 13.51, 0.162),
    "TCGA-DU-7294": (0.513, 9.44, 0.282),
    "TCGA-FG-6692": (0.615, 15.01, 0.119),
}


def smooth_brain(shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid brain mask and a smooth positive reference image inside it (0 outside), float32."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid[0] / 0.8) ** 2 + (grid[1] / 0.9) ** 2 + (grid[2] / 1.3) ** 2 < 1
    image = 100 + 40 * np.sin(3 * grid[0]) * np.cos(2 * grid[1]) + 20 * grid[2]
    return (image * brain).astype(np.float32), brain


def smooth_noise(shape, seed: int, sigma: float = 1.5) -> np.ndarray:
    from scipy import ndimage

    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)
    return (noise / noise.std()).astype(np.float32)


# ----- the SSIM map ---------------------------------------------------------------------------
def test_ssim_map_equals_monai_compute_ssim_and_cs():
    rng = np.random.default_rng(0)
    pred = rng.random((26, 22, 19), dtype=np.float32)
    ref = np.clip(pred + rng.normal(0, 0.2, pred.shape), 0, 1).astype(np.float32)
    expected, _ = compute_ssim_and_cs(torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None],
                                      spatial_dims=3, kernel_size=[11] * 3, kernel_sigma=[1.5] * 3,
                                      data_range=1.0, k1=0.01, k2=0.03)
    ours = ssim_map(pred, ref)
    assert ours.shape == tuple(expected.shape[2:]) == (16, 12, 9)
    np.testing.assert_allclose(ours, expected[0, 0].numpy(), atol=1e-4)


def test_ssim_map_stays_float32_under_a_bf16_autocast():
    """A bf16-mixed run validates inside autocast: the map (NumPy and tensor) is computed in float32
    all the same, and equals the map computed outside it (it used to fail on the bf16 result)."""
    rng = np.random.default_rng(1)
    pred = rng.random((24, 20, 18), dtype=np.float32)
    ref = np.clip(pred + rng.normal(0, 0.2, pred.shape), 0, 1).astype(np.float32)
    expected = ssim_map(pred, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = ssim_map(pred, ref)
        as_tensor = ssim_map(torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None])
    assert ours.dtype == np.float32 and as_tensor.dtype == torch.float32
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(as_tensor[0, 0].numpy(), expected)


def test_masked_ssim_on_bounding_box_equals_whole_volume_map():
    ref, brain = smooth_brain((40, 36, 30))
    pred = normalise_for_scoring(ref + 8 * smooth_noise(ref.shape, 1), brain)
    ref = normalise_for_scoring(ref, brain)
    whole, _ = compute_ssim_and_cs(torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None], 3,
                                   [11] * 3, [1.5] * 3)
    covered = brain[5:-5, 5:-5, 5:-5]
    expected = float(whole[0, 0].numpy()[covered].mean())
    assert masked_ssim(pred, ref, brain) == pytest.approx(expected, abs=1e-5)
    assert 0.3 < expected < 0.99  # a real, imperfect score, not a degenerate one


# ----- known answers --------------------------------------------------------------------------
def test_identical_volumes_score_perfectly():
    ref, brain = smooth_brain()
    scores = evaluate(ref.copy(), ref, mask=brain)
    assert EVERY_KEY <= set(scores)
    assert scores["psnr"] == math.inf
    assert scores["mae"] == 0
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert scores["e_z"] == scores["e_xy"] == 0
    assert math.isnan(scores["r_z"])  # 0 / 0: no gradient error to compare (documented)
    assert scores["slice_flicker"] == 0
    assert math.isnan(scores["tumour_contrast_error"]) and math.isnan(scores["mae_white_matter"])


def test_constant_offset_is_removed_by_per_image_normalisation():
    ref, brain = smooth_brain()
    scores = evaluate(np.where(brain, ref + 37.0, 0), ref, mask=brain)
    assert scores["mae"] < 1e-5
    assert scores["psnr"] > 90
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert scores["slice_flicker"] < 1e-6


def test_scores_are_scale_and_offset_free():
    ref, brain = smooth_brain()
    pred = np.where(brain, ref + 10 * smooth_noise(ref.shape, 2), 0).astype(np.float32)
    plain = evaluate(pred, ref, mask=brain)
    rescaled = evaluate(np.where(brain, 3.5 * pred - 120.0, 0), ref, mask=brain)
    assert 0.01 < plain["mae"] < 0.2 and plain["ssim"] < 0.99
    for key in ("mae", "ssim", "e_z", "e_xy", "r_z", "slice_flicker"):
        assert rescaled[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key
    assert rescaled["psnr"] == pytest.approx(plain["psnr"], abs=1e-3)


def test_per_slice_offsets_raise_through_plane_error_and_flicker_only():
    ref, brain = smooth_brain()
    consistent = np.where(brain, ref + 4 * smooth_noise(ref.shape, 3), 0).astype(np.float32)
    offsets = np.random.default_rng(4).choice([-6.0, 6.0], size=ref.shape[2]).astype(np.float32)
    flickering = np.where(brain, consistent + offsets[None, None, :], 0)
    base, flicker = evaluate(consistent, ref, mask=brain), evaluate(flickering, ref, mask=brain)
    assert flicker["e_xy"] == pytest.approx(base["e_xy"], rel=0.05)  # in-plane error untouched
    assert flicker["r_z"] > 3 * base["r_z"]
    assert flicker["slice_flicker"] > 5 * base["slice_flicker"]
    # Offsets of +-6 on a normalised range of ~152 units: per-slice mean errors near +-0.04.
    assert flicker["slice_flicker"] == pytest.approx(6 / np.ptp(ref[brain]), rel=0.15)


def test_gradient_errors_of_a_linear_error_ramp():
    shape = (12, 10, 8)
    i, j, k = np.indices(shape).astype(np.float32)
    error = 0.01 * i - 0.03 * j + 0.08 * k  # |d error| = 0.01, 0.03, 0.08 along the three axes
    mask = np.ones(shape, bool)
    mask[:, :, 4] = False                    # no z pair may cross this slice; x/y pairs still count elsewhere
    error[:, :, 4] = 100.0                   # ... so its value must not matter
    gradients = gradient_errors(error, mask)
    assert gradients["e_x"] == pytest.approx(0.01, rel=1e-4)
    assert gradients["e_y"] == pytest.approx(0.03, rel=1e-4)
    assert gradients["e_z"] == pytest.approx(0.08, rel=1e-4)
    assert gradients["e_xy"] == pytest.approx(0.02, rel=1e-4)
    assert gradients["r_z"] == pytest.approx(4.0, rel=1e-4)


def test_slice_flicker_counts_only_slices_with_enough_brain():
    error = np.zeros((40, 40, 3), np.float32)
    mask = np.zeros_like(error, bool)
    mask[:, :, 0] = True                      # 1600 voxels, mean error 0.1
    mask[:, :, 1] = True                      # 1600 voxels, mean error -0.1
    mask[:10, :10, 2] = True                  # 100 voxels: ignored
    error[..., 0], error[..., 1], error[..., 2] = 0.1, -0.1, 5.0
    assert slice_flicker(error, mask) == pytest.approx(0.1)
    assert math.isnan(slice_flicker(error, mask, min_voxels=2000))


def tumour_phantom(tumour_value: float):
    """Cortex 50, white matter 100, a ring of 75 within 2 voxels of the tumour, tumour ``tumour_value``."""
    from scipy import ndimage

    shape = (40, 40, 20)
    labels = np.zeros(shape, np.int64)
    labels[4:36, 4:36, 2:18] = 2          # cortex
    labels[8:32, 8:32, 4:16] = 1          # white matter
    tumour = np.zeros(shape, bool)
    tumour[16:22, 16:22, 8:12] = True
    ring = ndimage.binary_dilation(tumour, ndimage.generate_binary_structure(3, 1), iterations=2) & ~tumour
    image = np.where(labels == 2, 50.0, 0) + np.where(labels == 1, 100.0, 0)
    image[ring] = 75.0
    image[tumour] = tumour_value
    return image.astype(np.float32), labels, tumour, labels > 0


NAMES = ["Unknown", "Left-Cerebral-White-Matter", "Left-Cerebral-Cortex"]


@pytest.mark.parametrize("pred_tumour", [150.0, 200.0, 250.0])
def test_tumour_contrast_error_matches_its_analytic_value(pred_tumour):
    ref, labels, tumour, brain = tumour_phantom(150.0)
    pred, *_ = tumour_phantom(pred_tumour)
    scores = evaluate(pred, ref, mask=brain, tumor_seg=tumour, labels=labels, label_names=NAMES)
    # Normalised: p0.5 = cortex 50, p99.5 = tumour; normal white matter (ring excluded) is 100.
    c_ref = 1.0 / ((100 - 50) / (150 - 50))            # 2
    c_pred = 1.0 / ((100 - 50) / (pred_tumour - 50))   # 2, 3, 4
    assert scores["c_ref"] == pytest.approx(c_ref, rel=1e-5)
    assert scores["c_pred"] == pytest.approx(c_pred, rel=1e-5)
    assert scores["tumour_contrast_error"] == pytest.approx(abs(c_pred - c_ref) / c_ref, abs=1e-5)
    assert scores["mae_tumour"] == pytest.approx(0, abs=1e-6)
    # White-matter MAE: 100 -> 0.5 vs 50 / (t - 50); the ring 75 -> 0.25 vs 25 / (t - 50).
    in_wm = (labels == 1) & ~tumour
    ring = in_wm & (ref == 75)
    expected_wm = ((in_wm.sum() - ring.sum()) * abs(0.5 - 50 / (pred_tumour - 50))
                   + ring.sum() * abs(0.25 - 25 / (pred_tumour - 50))) / in_wm.sum()
    assert scores["mae_white_matter"] == pytest.approx(expected_wm, abs=1e-5)
    assert math.isnan(scores["mae_deep_grey"])  # group absent


def test_region_groups_stand_in_for_labels():
    from monai_t1t2.regions import labels_to_groups

    ref, labels, tumour, brain = tumour_phantom(150.0)
    pred, *_ = tumour_phantom(200.0)
    from_labels = evaluate(pred, ref, mask=brain, tumor_seg=tumour, labels=labels, label_names=NAMES)
    # Groups as the training pipeline holds them (float, tumour already group 7) and without the tumour.
    for groups in (labels_to_groups(labels, NAMES, tumour).astype(np.float32), labels_to_groups(labels, NAMES)):
        from_groups = evaluate(pred, ref, mask=brain, tumor_seg=tumour, groups=groups)
        assert from_groups.keys() == from_labels.keys()
        for key, value in from_labels.items():
            assert from_groups[key] == pytest.approx(value, nan_ok=True), key
    assert from_labels["tumour_contrast_error"] == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(ValueError, match="not both"):
        evaluate(pred, ref, mask=brain, tumor_seg=tumour, labels=labels, groups=labels)


def test_normal_white_matter_excludes_three_voxel_margin():
    groups = np.ones((15, 15, 15), np.uint8)
    tumour = np.zeros(groups.shape, bool)
    tumour[7, 7, 7] = True
    white = normal_white_matter(groups, tumour, np.ones(groups.shape, bool))
    distance = np.abs(np.indices(groups.shape) - 7).sum(0)  # city-block distance to the tumour voxel
    np.testing.assert_array_equal(white, distance > 3)


def test_tumour_seg_without_labels_gives_tumour_mae_only():
    ref, labels, tumour, brain = tumour_phantom(150.0)
    scores = evaluate(ref, ref, mask=brain, tumor_seg=tumour)
    assert scores["mae_tumour"] == 0
    assert math.isnan(scores["mae_white_matter"]) and math.isnan(scores["tumour_contrast_error"])


def test_tumour_and_non_tumour_ssim_split_the_brain():
    """An error inside the tumour lowers the tumour SSIM; far from it the SSIM and MAE stay perfect."""
    ref, labels, tumour, brain = tumour_phantom(80.0)
    pred = ref.copy()
    pred[tumour] = np.where(np.indices(ref.shape).sum(0) % 2 == 0, 60.0, 100.0)[tumour]  # a checkerboard tumour
    scores = evaluate(pred, ref, mask=brain, tumor_seg=tumour)
    assert scores["ssim_tumour"] < 0.5 and scores["ssim_non_tumour"] > 0.9, scores
    assert scores["mae_non_tumour"] == 0 and scores["mae_tumour"] > 0.1
    assert scores["ssim_tumour"] < scores["ssim"] < 1
    none = evaluate(pred, ref, mask=brain)
    assert math.isnan(none["ssim_tumour"]) and none["ssim"] == pytest.approx(scores["ssim"])


# ----- inputs: files, orientation, grids, masks -----------------------------------------------
def test_files_in_another_orientation_are_scored_in_ras(tmp_path):
    ref, brain = smooth_brain()
    offsets = np.linspace(-5, 5, ref.shape[2]).astype(np.float32) * np.array([1, -1] * 8, np.float32)
    pred = np.where(brain, ref + 4 * smooth_noise(ref.shape, 5) + offsets, 0).astype(np.float32)
    expected = evaluate(pred, ref, mask=brain)
    # Stored with the axial axis first: voxel axes (k, i, j) -> world (S, R, A), i.e. orientation "SRA".
    affine = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    files = {name: write_nifti(tmp_path / f"{name}.nii.gz", volume.transpose(2, 0, 1).astype(np.float32), affine)
             for name, volume in {"pred": pred, "ref": ref, "mask": brain.astype(np.uint8)}.items()}
    scores = evaluate(files["pred"], files["ref"], mask=files["mask"])
    for key in ("ssim", "mae", "r_z", "slice_flicker"):
        assert scores[key] == pytest.approx(expected[key], rel=1e-5), key
    assert expected["r_z"] > 1.5  # the offsets are along the axial axis, so orientation matters


def test_grid_mismatch_names_the_files(tmp_path):
    ref, brain = smooth_brain()
    write_nifti(tmp_path / "ref.nii.gz", ref)
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    write_nifti(tmp_path / "pred.nii.gz", ref, shifted)
    with pytest.raises(GridMismatchError, match="pred.nii.gz"):
        evaluate(tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz")
    with pytest.raises(GridMismatchError, match="mask"):
        evaluate(ref, ref, mask=brain[:-1])


def test_empty_mask_and_default_mask():
    ref, brain = smooth_brain()
    with pytest.raises(InvalidVolumeError, match="empty"):
        evaluate(ref, ref, mask=np.zeros_like(brain))
    # Default mask is ref > 0: a prediction that is 0 inside the brain is scored as an error.
    pred = ref.copy()
    pred[:, :, ref.shape[2] // 2] = 0
    assert evaluate(pred, ref)["mae"] > 0.01
    assert evaluate(pred, ref, mask=brain)["mae"] == pytest.approx(evaluate(pred, ref)["mae"])


def test_tumour_segmentation_file_without_tumour_is_accepted(tmp_path):
    ref, brain = smooth_brain()
    empty = write_nifti(tmp_path / "tumor_seg.nii.gz", np.zeros(ref.shape, np.uint8))
    scores = evaluate(ref, ref, mask=brain, tumor_seg=empty)
    assert math.isnan(scores["mae_tumour"]) and math.isnan(scores["tumour_contrast_error"])
    assert scores["mae"] == 0


# ----- the real data: the protocol's floor row ------------------------------------------------
@pytest.mark.realdata
@pytest.mark.parametrize("case", PAIRED_CASES)
def test_inverted_t1_reproduces_the_floor_of_evaluation_md(case):
    load = lambda name: nib.as_closest_canonical(nib.load(str(PAIRED / case / name))).get_fdata(dtype=np.float32)  # noqa: E731
    t1, t2 = load("t1.nii.gz"), load("t2.nii.gz")
    brain = (t1 > 0) & (t2 > 0)
    floor = (1 - normalise_for_scoring(t1, brain)) * brain
    scores = evaluate(floor, t2, mask=brain)
    ssim, psnr, mae = FLOOR[case]
    # The table is rounded to 3 decimals (SSIM, MAE) and 2 (PSNR): half a unit of the last digit, plus a hair.
    assert scores["ssim"] == pytest.approx(ssim, abs=0.0006)
    assert scores["psnr"] == pytest.approx(psnr, abs=0.006)
    assert scores["mae"] == pytest.approx(mae, abs=0.0006)


# ----- the `evaluate` command -----------------------------------------------------------------
def test_case_of_matching_rule(tmp_path):
    assert case_of(tmp_path / "out" / "TCGA-FG-6692_synT2.nii.gz") == "TCGA-FG-6692"
    assert case_of(tmp_path / "out" / "sub01.nii.gz") == "sub01"
    assert case_of(tmp_path / "paired" / "TCGA-FG-6692" / "t2.nii.gz") == "TCGA-FG-6692"
    assert case_of(tmp_path / "pred" / "caseA" / "synT2.nii.gz") == "caseA"
    assert case_of(tmp_path / "pred" / "caseA" / "t1_synT2.nii.gz") == "caseA"


def test_cli_scores_two_files_and_writes_every_key(tmp_path, capsys):
    ref, brain = smooth_brain()
    pred = np.where(brain, ref + 5 * smooth_noise(ref.shape, 6), 0).astype(np.float32)
    write_nifti(tmp_path / "ref.nii.gz", ref)
    write_nifti(tmp_path / "pred.nii.gz", pred)
    write_nifti(tmp_path / "brain.nii.gz", brain.astype(np.uint8))
    report = tmp_path / "scores.json"
    argv = ["evaluate", "--pred", str(tmp_path / "pred.nii.gz"), "--ref", str(tmp_path / "ref.nii.gz"),
            "--mask", str(tmp_path / "brain.nii.gz"), "--json", str(report)]
    assert main(argv) == 0
    written = json.loads(report.read_text())
    scores = written["cases"]["ref"]
    assert EVERY_KEY <= set(scores)
    assert scores["ssim"] == pytest.approx(evaluate(pred, ref, mask=brain)["ssim"], rel=1e-6)
    assert scores["tumour_contrast_error"] is None  # NaN is written as null
    assert written["mean"]["mae"] == pytest.approx(scores["mae"])
    table = capsys.readouterr().out
    assert "| ref |" in table and "| mean |" in table
    # An existing report is kept unless --overwrite.
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


def test_cli_matches_folders_by_case(tmp_path, capsys):
    ref, brain = smooth_brain()
    t1 = np.where(brain, 300 - ref, 0).astype(np.float32)
    predictions = {}
    for index, case in enumerate(("caseA", "caseB")):
        write_nifti(tmp_path / "paired" / case / "t1.nii.gz", t1)
        write_nifti(tmp_path / "paired" / case / "t2.nii.gz", ref)
        predictions[case] = np.where(brain, ref + (3 + 3 * index) * smooth_noise(ref.shape, index), 0)
        write_nifti(tmp_path / "out" / f"{case}_synT2.nii.gz", predictions[case].astype(np.float32))
    report = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(tmp_path / "out"), "--ref", str(tmp_path / "paired"),
                 "--json", str(report)]) == 0
    written = json.loads(report.read_text())
    assert sorted(written["cases"]) == ["caseA", "caseB"]
    for case, pred in predictions.items():
        inputs = written["cases"][case]["inputs"]
        assert inputs["ref"].endswith(f"{case}/t2.nii.gz") and "t1.nii.gz" in inputs["mask"]
        assert written["cases"][case]["mae"] == pytest.approx(evaluate(pred, ref, mask=brain)["mae"], rel=1e-5)
    assert written["cases"]["caseB"]["mae"] > written["cases"]["caseA"]["mae"]
    # A prediction without a reference is an error that names it.
    write_nifti(tmp_path / "out" / "caseC_synT2.nii.gz", ref)
    assert main(["evaluate", "--pred", str(tmp_path / "out"), "--ref", str(tmp_path / "paired")]) == 2
    assert "caseC_synT2.nii.gz" in capsys.readouterr().err


def test_cli_missing_file_is_one_line_error(tmp_path, capsys):
    ref, _ = smooth_brain()
    write_nifti(tmp_path / "ref.nii.gz", ref)
    missing = tmp_path / "nope_synT2.nii.gz"
    assert main(["evaluate", "--pred", str(missing), "--ref", str(tmp_path / "ref.nii.gz")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("monai-t1t2: error:") and str(missing) in error and error.count("\n") == 1


def test_cli_never_guesses_the_mask_from_a_file_name(tmp_path, capsys):
    """The same voxels score the same whatever the reference is called; without a mask source it is an error."""
    ref, brain = smooth_brain()
    t1 = np.where(brain, 300 - ref, 0).astype(np.float32)
    t1[brain & (np.indices(ref.shape)[0] < 8)] = 0  # the T1's brain is smaller than ref > 0
    pred = np.where(brain, ref + 5 * smooth_noise(ref.shape, 2), 0).astype(np.float32)
    write_nifti(tmp_path / "case" / "t1.nii.gz", t1)
    write_nifti(tmp_path / "case" / "t2.nii.gz", ref)
    write_nifti(tmp_path / "renamed" / "ref.nii.gz", ref)
    write_nifti(tmp_path / "pred.nii.gz", pred)
    assert main(["evaluate", "--pred", str(tmp_path / "pred.nii.gz"), "--ref", str(tmp_path / "renamed" / "ref.nii.gz")]) == 2
    assert "no brain mask to score in" in capsys.readouterr().err
    scores = {}
    for name, argv in {"beside": ["--ref", str(tmp_path / "case" / "t2.nii.gz")],
                       "given": ["--ref", str(tmp_path / "renamed" / "ref.nii.gz"), "--t1", str(tmp_path / "case" / "t1.nii.gz")]}.items():
        report = tmp_path / f"{name}.json"
        assert main(["evaluate", "--pred", str(tmp_path / "pred.nii.gz"), *argv, "--json", str(report)]) == 0
        out = capsys.readouterr().out
        assert "mask of" in out and "t1.nii.gz > 0" in out
        scores[name] = json.loads(report.read_text())["cases"]
    (beside,), (given,) = scores["beside"].values(), scores["given"].values()
    assert beside["ssim"] == given["ssim"] and beside["mae"] == given["mae"]
    assert main(["evaluate", "--pred", str(tmp_path / "pred.nii.gz"), "--ref", str(tmp_path / "renamed" / "ref.nii.gz"),
                 "--mask-from-ref"]) == 0
    assert "--mask-from-ref" in capsys.readouterr().out


def test_hole_share_counts_black_voxels_in_the_core_where_the_real_t2_is_not_black():
    from monai_t1t2.metrics import hole_share

    brain = np.zeros((20, 20, 20), bool)
    brain[2:18, 2:18, 2:18] = True  # a 16^3 brain; its core (less 2 voxels) is 12^3
    ref = np.where(brain, 0.5, 0.0).astype(np.float32)
    pred = ref.copy()
    assert hole_share(pred, ref, brain) == 0.0
    pred[8:10, 8:10, 8:10] = 0.0  # 8 black voxels in the core, where the real T2 is 0.5
    pred[2, 2:6, 2] = 0.0  # black at the brain's edge: not counted
    assert hole_share(pred, ref, brain) == pytest.approx(8 / 12**3)
    ref[8:10, 8:10, 8:10] = 0.1  # where the real T2 is dark too, black is right
    assert hole_share(pred, ref, brain) == 0.0
    assert "hole_share" in evaluate(pred, ref, mask=brain)


def test_detail_scores_see_a_blurred_prediction_as_smoother_and_its_detail_as_lost():
    from scipy import ndimage

    from monai_t1t2.metrics import detail_scores

    rng = np.random.default_rng(0)
    brain = np.zeros((32, 32, 32), bool)
    brain[3:29, 3:29, 3:29] = True
    ref = np.where(brain, np.clip(0.5 + 0.2 * ndimage.gaussian_filter(rng.normal(size=brain.shape), 1.0) * 5, 0, 1), 0)
    ref = ref.astype(np.float32)
    same = detail_scores(ref, ref, brain)
    assert same["sharpness"] == pytest.approx(1.0) and same["ssim_high_pass"] == pytest.approx(1.0, abs=1e-4)
    blurred = detail_scores(np.where(brain, ndimage.gaussian_filter(ref, 2.0), 0).astype(np.float32), ref, brain)
    assert blurred["sharpness"] < 0.6 and blurred["ssim_high_pass"] < 0.8
    other = np.where(brain, np.clip(0.5 + ndimage.gaussian_filter(rng.normal(size=brain.shape), 1.0), 0, 1), 0)
    invented = detail_scores(other.astype(np.float32), ref, brain)  # as sharp, but the wrong detail
    assert invented["sharpness"] > 0.5 and invented["ssim_high_pass"] < 0.2
    assert {"sharpness", "ssim_high_pass"} <= set(evaluate(ref, ref, mask=brain))
