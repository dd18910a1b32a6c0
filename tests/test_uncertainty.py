"""The trust map: the calibrated interval, its scores, and where a user meets it (translate, predict, bundle)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import REPO, synthetic_head, tiny_translation_bundle, write_nifti
from monai_t1t2.cli import main
from monai_t1t2.errors import T1T2Error
from monai_t1t2.inference import translation as inference
from monai_t1t2.inference.batch import interval_paths, translate_folder
from monai_t1t2.io import file_sha256
from monai_t1t2.metrics import evaluate, interval_scores
from monai_t1t2.uncertainty import (CALIBRATION_FILE, FEATURES, LEVEL_TABLE, TERMS, TrustCalibration, conformal_quantile,
                                    fit_calibration, input_features, scale_basis, trust_features)

AFFINE = np.diag([-1.2, -1.0, 2.0, 1.0])


def heteroscedastic_cases(seed: int, subjects: int = 3, voxels: int = 20_000):
    """Subjects whose error is Gaussian with a standard deviation set by the first feature alone."""
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(subjects):
        features = rng.uniform(0, 1, (len(FEATURES), voxels)).astype(np.float32)
        error = rng.normal(0, 0.02 + 0.3 * features[0]).astype(np.float32)
        cases.append({"subject": f"s{index}", "features": features, "error": error, "ssim": 0.8 - 0.1 * index})
    return cases


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 10, dtype=float)  # n = 9
    assert conformal_quantile(scores, 0.9) == 9.0  # ceil(10 * 0.9) = 9th
    assert conformal_quantile(scores, 0.5) == 5.0  # ceil(10 * 0.5) = 5th


def test_fit_calibration_learns_the_scale_and_covers_new_subjects_at_the_level():
    calibration = fit_calibration(heteroscedastic_cases(0), voxels_per_case=10_000)
    assert calibration.weights[1] > 5 * max(calibration.weights[2:]), calibration.weights  # the term that matters
    assert len(calibration.weights) == len(TERMS) + 1
    assert calibration.subjects == ["s0", "s1", "s2"]
    low, high = calibration.ssim_range  # the calibration subjects' predicted SSIM
    assert low <= high and calibration.out_of_range(low - 0.01) and not calibration.out_of_range(low + 0.001)
    fresh = heteroscedastic_cases(1, subjects=1)[0]
    scale = calibration.scale(fresh["features"])
    for level in (0.8, 0.9, 0.95):
        half = calibration.quantile(level) * scale
        coverage = float(np.mean(np.abs(fresh["error"]) <= half))
        assert abs(coverage - level) < 0.02, (level, coverage)
    # Narrower on average than the constant-width interval of the same level, and it ranks the errors.
    constant = conformal_quantile(np.abs(np.concatenate([c["error"] for c in heteroscedastic_cases(0)])), 0.9)
    assert np.mean(calibration.quantile(0.9) * scale) < 0.9 * constant
    with pytest.raises(T1T2Error, match="uncertainty-level 0.3"):
        calibration.quantile(0.3)


def test_calibration_round_trips_through_json(tmp_path):
    calibration = fit_calibration(heteroscedastic_cases(0), voxels_per_case=2_000)
    calibration.save(tmp_path / CALIBRATION_FILE)
    again = TrustCalibration.load(tmp_path / CALIBRATION_FILE)
    assert again == calibration
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(T1T2Error, match="bad.json: not a trust calibration"):
        TrustCalibration.load(tmp_path / "bad.json")


def test_interval_scores_coverage_width_and_auroc():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1, (20, 20, 20)).astype(np.float32)
    error = rng.normal(0, 0.2, ref.shape).astype(np.float32)
    pred = np.clip(ref + error, 0, 1)
    brain = np.ones(ref.shape, bool)
    tumour = np.zeros(ref.shape, bool)
    tumour[:5] = True
    # A width that knows the error exactly: every voxel covered, the width ranks the errors perfectly.
    width = np.abs(pred - ref) + 1e-3
    exact = interval_scores(pred, ref, pred - width, pred + width, brain, tumour)
    assert exact["coverage"] == 1.0 and exact["coverage_tumour"] == 1.0
    assert exact["width_auroc"] > 0.99
    # A constant width ranks nothing; a width half as wide covers less.
    flat = interval_scores(pred, ref, pred - 0.1, pred + 0.1, brain, tumour)
    assert flat["width_auroc"] == pytest.approx(0.5, abs=0.02)  # equal up to float rounding
    assert 0.2 < flat["coverage"] < 0.5 and flat["width"] == pytest.approx(0.2, abs=1e-6)
    assert np.isnan(interval_scores(pred, ref, pred - 0.1, pred + 0.1, brain)["coverage_tumour"])


def test_evaluate_scores_an_interval_in_its_prediction_units():
    """The interval is mapped with its prediction's own normalisation: scaling the three by 3 and shifting
    them by 7 changes nothing (a model is not judged on its output units)."""
    rng = np.random.default_rng(1)
    ref = synthetic_head((24, 24, 20), seed=2) + rng.normal(0, 3, (24, 24, 20)).astype(np.float32)
    ref = np.where(synthetic_head((24, 24, 20)) > 0, ref, 0).astype(np.float32)
    pred = np.where(ref > 0, ref + rng.normal(0, 8, ref.shape), 0).astype(np.float32)
    lower, upper = pred - 10, pred + 10
    plain = evaluate(pred, ref, lower=lower, upper=upper)
    moved = evaluate(3 * pred + 7, ref, lower=3 * lower + 7, upper=3 * upper + 7)
    for key in ("coverage", "width"):
        assert moved[key] == pytest.approx(plain[key], abs=1e-5), key
    # The widths are equal but where a bound is clipped: their order, and so the AUROC, moves with float rounding.
    assert moved["width_auroc"] == pytest.approx(plain["width_auroc"], abs=0.05)
    assert 0 < plain["coverage"] < 1
    with pytest.raises(ValueError, match="both lower and upper"):
        evaluate(pred, ref, lower=lower)


def test_trust_features_are_zero_outside_the_brain_and_see_the_mirror_spread():
    prediction = torch.rand(1, 12, 12, 12)
    brain = torch.zeros(1, 12, 12, 12, dtype=torch.bool)
    brain[:, 2:10, 2:10, 2:10] = True
    same = trust_features(prediction, prediction.clone(), torch.rand(1, 12, 12, 12), brain)
    assert same.shape == (4, 12, 12, 12)  # the network-grid features: FEATURES[:4]
    assert float(same[:, ~brain[0]].abs().max()) == 0.0
    assert float(same[0].abs().max()) == 0.0, "no spread where the mirror agrees"
    shifted = trust_features(prediction, prediction + 0.25, torch.rand(1, 12, 12, 12), brain)
    assert torch.allclose(shifted[0][brain[0]], torch.tensor(0.25), atol=1e-6)


def test_input_features_read_the_t1_level_and_the_depth_in_mm():
    inside = np.zeros((21, 21, 11), bool)
    inside[1:20, 1:20, 1:10] = True
    t1 = np.where(inside, np.linspace(0, 100, 21)[:, None, None], 0).astype(np.float32) * np.ones((1, 21, 11))
    level, depth = input_features(t1, inside, (1.0, 1.0, 2.0))
    assert level.min() == 0 and level.max() == 1 and float(level[~inside].max()) == 0
    assert depth[10, 10, 5] == pytest.approx(10.0)  # 5 voxels of 2 mm to the edge along the third axis
    assert float(depth[~inside].max()) == 0
    terms = scale_basis(np.stack([np.zeros(3), np.zeros(3), np.array([0.2, 0.5, 0.9]), np.zeros(3),
                                  np.array([0.1, 0.5, 0.5]), np.array([0.0, 1.0, 3.0])]))
    assert terms.shape == (len(TERMS), 3)
    np.testing.assert_allclose(terms[4], [0.0, 0.2, 0.6], atol=1e-6)  # level above 0.3
    np.testing.assert_allclose(terms[6], [0.2, 0.0, 0.0], atol=1e-6)  # T1 below 0.3
    np.testing.assert_allclose(terms[7], [1.0, 0.5, 0.25], atol=1e-6)  # 1 / (1 + depth)


# ----------------------------------------------------------------------------- where a user meets it


def calibrated_bundle(folder: Path, with_calibration: bool = True) -> Path:
    """A tiny random-weight translation bundle with a (made-up) trust calibration for its weights."""
    bundle = tiny_translation_bundle(folder)
    if with_calibration:
        TrustCalibration(weights=[0.02, 1.0, 1.0, 0.1, 1.0, 0.0, 0.0, 0.5, 0.1], floor=0.01, levels=list(LEVEL_TABLE),
                         quantiles=list(np.linspace(1.0, 3.0, len(LEVEL_TABLE))), ssim_intercept=0.8,
                         ssim_slope=-2.0, subjects=["calibration-a", "calibration-b"],
                         model_sha256=file_sha256(bundle / "models" / "model.pt")).save(
            bundle / "models" / CALIBRATION_FILE)
    return bundle


@pytest.fixture
def bundle(tmp_path) -> Path:
    return calibrated_bundle(tmp_path)


def test_translate_with_uncertainty_returns_the_synthetic_and_its_interval(bundle):
    translator = inference.load_translator(bundle, device="cpu")
    head = synthetic_head()
    plain = inference.translate(head, translator, affine=AFFINE)
    synthetic, lower, upper = inference.translate(head, translator, affine=AFFINE, uncertainty=0.9)
    assert torch.equal(synthetic.as_tensor(), plain.as_tensor()), "the same synthetic T2 as without the interval"
    inside = torch.as_tensor(head > 0)  # the nonzero brain of a skull-stripped input
    assert bool((lower <= synthetic).all()) and bool((synthetic <= upper).all())
    assert float(lower[0][~inside].abs().max()) == 0.0 and float(upper[0][~inside].abs().max()) == 0.0
    assert float((upper - lower)[0][inside].mean()) > 0
    assert np.allclose(lower.affine, plain.affine) and lower.shape == plain.shape
    assert -1 <= synthetic.meta["predicted_ssim"] <= 1 and synthetic.meta["uncertainty_level"] == 0.9
    # A wider level gives a wider interval.
    _, lower95, upper95 = inference.translate(head, translator, affine=AFFINE, uncertainty=0.95)
    assert float((upper95 - lower95).sum()) > float((upper - lower).sum())


def test_uncertainty_is_refused_before_any_work_without_a_calibration_for_these_weights(tmp_path, bundle):
    bare = calibrated_bundle(tmp_path / "bare", with_calibration=False)
    with pytest.raises(T1T2Error, match="no trust calibration"):
        inference.translate(synthetic_head(), bare, affine=AFFINE, device="cpu", uncertainty=0.9)
    assert main(["predict", str(write_nifti(tmp_path / "a.nii.gz", synthetic_head(), AFFINE)), "-o", str(tmp_path / "out"),
                 "--model", str(bare), "--device", "cpu", "--uncertainty"]) == 2
    assert not (tmp_path / "out").exists()
    with pytest.raises(T1T2Error, match="uncertainty-level 0.2"):
        inference.translate(synthetic_head(), bundle, affine=AFFINE, device="cpu", uncertainty=0.2)
    record = json.loads((bundle / "models" / CALIBRATION_FILE).read_text())
    record["model_sha256"] = "0" * 64
    (bundle / "models" / CALIBRATION_FILE).write_text(json.dumps(record))
    with pytest.raises(T1T2Error, match="calibrated for other weights"):
        inference.translate(synthetic_head(), bundle, affine=AFFINE, device="cpu", uncertainty=0.9)


def test_predict_uncertainty_writes_the_interval_its_sidecar_and_the_manifest(tmp_path, bundle, capsys):
    source = write_nifti(tmp_path / "in" / "sub-01.nii.gz", synthetic_head(), AFFINE)
    out = tmp_path / "out"
    common = [str(source), "-o", str(out), "--model", str(bundle), "--device", "cpu", "--force"]
    assert main(["predict", *common]) == 0  # first without the interval
    assert not interval_paths(out / "sub-01_synT2.nii.gz")[0].exists()
    assert main(["predict", *common, "--uncertainty", "--uncertainty-level", "0.8", "--png"]) == 0
    assert "1 translated" in capsys.readouterr().out, "an output without its interval is translated again"
    lower_path, upper_path = interval_paths(out / "sub-01_synT2.nii.gz")
    assert lower_path.name == "sub-01_synT2_lower.nii.gz" and upper_path.name == "sub-01_synT2_upper.nii.gz"
    synthetic = nib.load(out / "sub-01_synT2.nii.gz")
    lower, upper = nib.load(lower_path), nib.load(upper_path)
    assert np.allclose(lower.affine, synthetic.affine) and lower.shape == synthetic.shape
    assert (lower.get_fdata() <= synthetic.get_fdata() + 1e-6).all() and (synthetic.get_fdata() <= upper.get_fdata() + 1e-6).all()
    sidecar = json.loads((out / "sub-01_synT2.json").read_text())
    assert sidecar["Uncertainty"]["Level"] == 0.8
    assert sidecar["Uncertainty"]["CalibrationSubjects"] == ["calibration-a", "calibration-b"]
    assert sidecar["Uncertainty"]["Lower"] == lower_path.name and "conformal" in sidecar["Uncertainty"]["Method"]
    rows = json.loads((out / "manifest.json").read_text())
    assert rows[0]["predicted_ssim"] == pytest.approx(sidecar["PredictedSSIM"], abs=1e-4)
    assert sidecar["PredictedSSIMBelowCalibration"] is False  # the made-up calibration has no SSIM range
    assert (out / "sub-01_synT2.png").stat().st_size > 0
    # Rerun: complete with its interval, nothing to do.
    assert main(["predict", *common, "--uncertainty", "--uncertainty-level", "0.8"]) == 0
    assert "1 already done" in capsys.readouterr().out


def test_the_bundle_entry_point_writes_the_interval(tmp_path, bundle):
    data = tmp_path / "data"
    write_nifti(data / "sub-01_T1w.nii.gz", synthetic_head(), AFFINE)
    translator = inference.build_translator(
        inference.load_translator(bundle, device="cpu").network, bundle / "models" / "model.pt", (32, 32, 32), device="cpu")
    assert translator.trust is not None, "a calibration beside the weights comes with them"
    written = translate_folder(data, tmp_path / "out", model=translator, force=True, uncertainty=0.9)
    assert all(p.is_file() for p in interval_paths(written[0]))
    config = json.loads((REPO / "bundles" / "t1t2_translation" / "configs" / "inference.json").read_text())
    assert config["uncertainty"] is None and config["evaluator"]["uncertainty"] == "@uncertainty"


def test_a_predicted_ssim_below_every_calibration_subject_is_flagged(tmp_path, bundle, capsys):
    record = json.loads((bundle / "models" / CALIBRATION_FILE).read_text())
    record["ssim_range"] = [0.99, 1.0]  # no translation of a random network predicts that high
    (bundle / "models" / CALIBRATION_FILE).write_text(json.dumps(record))
    source = write_nifti(tmp_path / "in" / "sub-01.nii.gz", synthetic_head(), AFFINE)
    out = tmp_path / "out"
    assert main(["predict", str(source), "-o", str(out), "--model", str(bundle), "--device", "cpu", "--force",
                 "--uncertainty"]) == 0
    assert "below every calibration subject's" in capsys.readouterr().err
    assert json.loads((out / "sub-01_synT2.json").read_text())["PredictedSSIMBelowCalibration"] is True
