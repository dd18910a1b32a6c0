"""Quality control: each metric on tiny synthetic volumes, each decision on corrupted real volumes."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from conftest import PAIRED, PAIRED_CASES, RAW, padded_head, write_nifti
from monai_t1t2 import masks
from monai_t1t2 import quality as qc
from monai_t1t2.cli import main
from monai_t1t2.errors import DatasetError
from monai_t1t2.io import read_volume
from monai_t1t2.transforms import SamplingMaskd, brain_patch_sampler


# --------------------------------------------------------------------------------------
# Metrics on synthetic volumes
# --------------------------------------------------------------------------------------


def test_efc_extremes():
    assert qc.efc(np.full((8, 8, 8), 3.0)) == pytest.approx(1.0)  # energy spread evenly: maximum entropy
    spike = np.zeros((8, 8, 8))
    spike[4, 4, 4] = 5.0
    assert qc.efc(spike) == pytest.approx(0.0, abs=1e-9)  # all energy in one voxel
    assert qc.efc(padded_head()) < qc.efc(qc.simulate_rician_noise(padded_head(), 20.0))


def test_fber_definition_and_cap():
    image = np.ones((10, 10, 10))
    head = np.zeros_like(image, dtype=bool)
    head[3:7, 3:7, 3:7] = True
    image[head] = 10.0
    assert qc.fber(image, head) == pytest.approx(100.0)
    assert qc.fber(np.where(head, 10.0, 0.0), head) == qc.METRIC_CAP  # skull-stripped: zero background


def test_ghost_to_signal_ratio_names_the_ghost_axis():
    amplitude = 0.1
    metrics, _ = qc.compute_metrics(qc.simulate_ghost(padded_head(), axis=0, amplitude=amplitude))
    assert metrics["gsr_x"] == pytest.approx(amplitude, rel=0.3)
    assert abs(metrics["gsr_y"]) < 0.01
    clean, _ = qc.compute_metrics(padded_head())
    assert clean["gsr_x"] == 0.0 and clean["gsr_y"] == 0.0


def test_background_noise_measures_the_air_sigma():
    image = padded_head()
    sigma = 6.0
    metrics, _ = qc.compute_metrics(qc.simulate_rician_noise(image, sigma, seed=2))
    signal = np.median(image[image > 0])
    assert metrics["background_noise"] == pytest.approx(sigma / signal, rel=0.25)
    assert metrics["snr_dietrich"] < 100
    assert qc.compute_metrics(image)[0]["background_noise"] == 0.0


def test_spatial_correlation_noise_versus_anatomy():
    assert abs(qc.spatial_correlation(qc.simulate_noise_only((40, 40, 40), 5.0))) < 0.05
    assert qc.spatial_correlation(padded_head()) > 0.8


def test_tissue_classes_recover_three_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(m, 3, 3000) for m in (20, 60, 100)])
    classes = qc.tissue_classes(values)
    assert [int(np.median(classes[i * 3000:(i + 1) * 3000])) for i in range(3)] == [0, 1, 2]


def test_snr_and_cnr_from_a_parcellation():
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 40, 40), dtype=np.int64)
    labels[10:30, 10:30, 10:20] = 1  # white matter
    labels[10:30, 10:30, 20:30] = 2  # cortex
    image = np.where(labels == 1, 100.0, np.where(labels == 2, 60.0, 0.0)) + rng.normal(0, 5, labels.shape) * (labels > 0)
    metrics, _ = qc.compute_metrics(image, labels=labels, label_names=["Unknown", "Cerebral-White-Matter", "Cerebral-Cortex"])
    white, grey = image[labels == 1], image[labels == 2]
    expected_cnr = abs(white.mean() - grey.mean()) / math.sqrt(white.std(ddof=1) ** 2 + grey.std(ddof=1) ** 2)
    assert metrics["cnr"] == pytest.approx(expected_cnr, rel=1e-3)
    assert metrics["snr"] == pytest.approx(100 / 5, rel=0.1)


# --------------------------------------------------------------------------------------
# Decisions, transforms, data module, command line (synthetic)
# --------------------------------------------------------------------------------------

def test_quality_report_schema_and_noise_rejection():
    report = qc.quality_report(qc.simulate_noise_only((48, 48, 32), 10.0))
    assert sorted(report) == ["metrics", "passed", "path", "reasons", "unusable_slices"]
    assert report["passed"] is False and report["reasons"][0].startswith("noise only")
    clean = qc.quality_report(padded_head())
    assert clean["passed"] is True and clean["reasons"] == []
    assert all(isinstance(v, float) and math.isfinite(v) for v in clean["metrics"].values())


def test_quality_control_d_adds_reports_and_can_raise():
    head = MetaTensor(torch.from_numpy(padded_head())[None], affine=torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0])))
    noise = torch.from_numpy(qc.simulate_noise_only((48, 48, 32), 10.0))[None]
    out = qc.QualityControld(["t1", "t2"])({"t1": head, "t2": noise})
    assert out["t1_qc"]["passed"] and not out["t2_qc"]["passed"]
    assert out["t1"] is head  # the image itself is untouched
    with pytest.raises(ValueError, match="noise only"):
        qc.QualityControld("t2", raise_on_fail=True)({"t2": noise})


def _subject_folder(root, case, t2):
    write_nifti(root / case / "t1.nii.gz", padded_head())
    write_nifti(root / case / "t2.nii.gz", t2)


def test_training_subjects_failing_qc_are_excluded(tmp_path, caplog):
    from monai_t1t2.training.data import PairedDataModule

    good_t2 = np.where(padded_head() > 0, 200 - padded_head(), 0).astype(np.float32)
    for case in ("a", "b", "c"):
        _subject_folder(tmp_path, case, good_t2)
    _subject_folder(tmp_path, "noisy", qc.simulate_noise_only(padded_head().shape, 10.0))
    with caplog.at_level(logging.INFO):
        data = PairedDataModule(str(tmp_path), val_cases=["c"])
    assert [s["case"] for s in data.train_subjects] == ["a", "b"]
    assert "noisy" in caplog.text and "noise only" in caplog.text
    # the run says what it trains and validates on
    assert "2 training subjects (1 excluded by quality control, see the warnings); 1 validation: c" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        unchecked = PairedDataModule(str(tmp_path), val_cases=["c"], quality_control=False)
    assert [s["case"] for s in unchecked.train_subjects] == ["a", "b", "noisy"]
    assert "3 training subjects (quality control off); 1 validation: c" in caplog.text
    with pytest.raises(DatasetError, match="quality control"):
        PairedDataModule(str(tmp_path), val_cases=["a", "b", "c"])


def test_cli_writes_report_and_pngs(tmp_path):
    write_nifti(tmp_path / "in" / "clean.nii.gz", padded_head())
    write_nifti(tmp_path / "in" / "noise.nii.gz", qc.simulate_noise_only(padded_head().shape, 10.0))
    write_nifti(tmp_path / "in" / "ghost.nii.gz", qc.simulate_ghost(padded_head(), axis=1, amplitude=0.1))
    report_path, pngs = tmp_path / "report.json", tmp_path / "png"
    assert main(["qc", str(tmp_path / "in"), "--report", str(report_path), "--png-dir", str(pngs), "--expect", "any"]) == 0
    report = {r["path"].split("/")[-1]: r for r in json.loads(report_path.read_text())}
    assert report["clean.nii.gz"]["passed"] and not report["noise.nii.gz"]["passed"]
    assert report["ghost.nii.gz"]["reasons"][0].startswith("ghosting") and "along voxel axis y" in report["ghost.nii.gz"]["reasons"][0]
    assert sorted(p.name for p in pngs.iterdir()) == ["in_ghost_qc.png", "in_noise_qc.png"]
    assert main(["qc", str(tmp_path / "in"), "--report", str(report_path)]) == 2  # exists, no --overwrite
    assert main(["qc", str(tmp_path / "in" / "clean.nii.gz"), "--report", str(report_path), "--overwrite"]) == 0
    (tmp_path / "bad.nii.gz").write_bytes(b"not a volume")
    assert main(["qc", str(tmp_path / "bad.nii.gz"), "--report", str(tmp_path / "r2.json")]) == 2
    assert not (tmp_path / "r2.json").exists()


def test_patch_sampler_never_yields_background_only_patches():
    brain = np.zeros((1, 48, 48, 40), dtype=np.float32)
    brain[0, 10:38, 12:36, 8:30] = 1.0
    brain[0, 22:24, 22:24, 30:34] = 1.0  # a thin cap: unusable slices
    image = brain * 100.0
    data = SamplingMaskd(keys="t1")({"t1": image, "brain": brain})
    assert not data["sampling_mask"][..., 30:34].any()
    sampler = brain_patch_sampler(["t1", "brain"], spatial_size=(12, 12, 12), num_samples=50)
    sampler.set_random_state(seed=0)
    patches = [p for _ in range(8) for p in sampler(data)]
    assert len(patches) == 400
    assert all(float(p["brain"].sum()) > 0 for p in patches)


# --------------------------------------------------------------------------------------
# Real data: the clean pairs pass, each corruption is caught for its reason
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_t1():
    return read_volume(PAIRED / "TCGA-DU-7294" / "t1.nii.gz")[0].numpy()


@pytest.mark.realdata
@pytest.mark.parametrize("case", PAIRED_CASES)
def test_clean_pairs_pass(case):
    for contrast in ("t1", "t2"):
        report = qc.quality_report(PAIRED / case / f"{contrast}.nii.gz")
        assert report["passed"] and report["reasons"] == [], report


@pytest.mark.realdata
def test_pure_noise_is_rejected(real_t1):
    noise = qc.simulate_noise_only(real_t1.shape, sigma=0.1 * float(np.median(real_t1[real_t1 > 0])), seed=3)
    report = qc.quality_report(noise)
    assert not report["passed"] and len(report["reasons"]) == 1 and report["reasons"][0].startswith("noise only")


@pytest.mark.realdata
def test_ghost_is_flagged_along_its_axis(real_t1):
    report = qc.quality_report(qc.simulate_ghost(real_t1, axis=1, amplitude=0.04))
    assert not report["passed"]
    assert all(r.startswith("ghosting") for r in report["reasons"]) and "gsr_y" in report["reasons"][0]
    assert "rule ghost_copy_y" in report["reasons"][1], "the copy rule agrees on a skull-stripped volume"
    assert report["metrics"]["gsr_y"] == pytest.approx(0.04, rel=0.2) and report["metrics"]["gsr_x"] < 0.005


@pytest.mark.realdata
def test_thin_slab_marks_caps_and_empty_slices(real_t1):
    slab = qc.simulate_slab(real_t1, start=70, stop=90, cap_slices=3)
    report = qc.quality_report(slab)
    assert report["unusable_slices"] == [z for z in range(real_t1.shape[2]) if not 70 <= z < 90]
    assert report["passed"] and report["reasons"][0].startswith("little brain")
    assert set(masks.unusable_slices(real_t1 > 0)) < set(report["unusable_slices"])  # the intact brain uses more


@pytest.mark.realdata
def test_strong_background_noise_is_reported(real_t1):
    sigma = 0.1 * float(np.median(real_t1[real_t1 > 0]))
    report = qc.quality_report(qc.simulate_rician_noise(real_t1, sigma, seed=4))
    assert len(report["reasons"]) == 1 and report["reasons"][0].startswith("noisy background")
    assert report["passed"]  # reported, not rejected: the brain is still there
    assert report["metrics"]["background_noise"] > qc.MAX_BACKGROUND_NOISE


@pytest.mark.realdata
def test_raw_clinical_volume_is_read_and_reported():
    report = qc.quality_report(RAW / "TCGA-FG-6692" / "t1.nii.gz")
    assert report["metrics"]["slice_axis"] == 2.0  # 5.5 mm axial slices
    assert report["passed"] and report["reasons"] == [], report
    assert 0 < report["metrics"]["background_noise"] < qc.MAX_BACKGROUND_NOISE  # real air noise, not zero
    assert report["metrics"]["fber"] < qc.METRIC_CAP


@pytest.mark.realdata
def test_real_patches_are_never_background_only():
    volume = read_volume(PAIRED / "TCGA-FG-6692" / "t1.nii.gz")[:, ::2, ::2, ::2]
    brain = (volume > 0).float()
    data = SamplingMaskd(keys="t1")({"t1": volume, "brain": brain})
    sampler = brain_patch_sampler(["t1", "brain"], spatial_size=(24, 24, 24), num_samples=100)
    sampler.set_random_state(seed=1)
    patches = sampler(data)
    assert len(patches) == 100 and all(float(p["brain"].sum()) > 0 for p in patches)


def test_each_noise_reason_names_the_rule_that_fired():
    from scipy import ndimage

    white = qc.quality_report(qc.simulate_noise_only((48, 48, 32), 10.0))
    assert "rule spatial_correlation" in white["reasons"][0]
    # smooth noise: neighbours correlate, so the correlation rule cannot be the one that fired
    smooth = ndimage.gaussian_filter(np.random.default_rng(0).normal(100, 10, (64, 64, 48)), 3).astype(np.float32)
    report = qc.quality_report(smooth)
    assert not report["passed"] and report["metrics"]["spatial_correlation"] >= qc.MIN_SPATIAL_CORRELATION
    assert report["reasons"] == ["noise only (rule head_fraction): no head found above the background "
                                 "(head_fraction 0.000); no anatomy found"]


@pytest.mark.realdata
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("amplitude", [0.03, 0.1, 0.3])
def test_replicated_object_ghost_on_a_skull_stripped_volume(real_t1, axis, amplitude):
    """An N/2 copy of the brain on a skull-stripped T1 is caught by the copy rule, which reads its amplitude."""
    report = qc.quality_report(qc.simulate_ghost(real_t1, axis=axis, amplitude=amplitude))
    name = f"ghost_copy_{'xyz'[axis]}"
    assert not report["passed"]
    assert any(f"rule {name}" in reason for reason in report["reasons"]), report["reasons"]
    assert report["metrics"][name] == pytest.approx(amplitude, rel=0.1)
    assert report["metrics"][f"ghost_copy_{'xyz'[1 - axis]}"] == 0


@pytest.mark.realdata
def test_clean_skull_stripped_volume_has_no_ghost_copy(real_t1):
    metrics = qc.quality_report(real_t1)["metrics"]
    assert metrics["ghost_copy_x"] == 0 and metrics["ghost_copy_y"] == 0


# --------------------------------------------------------------------------------------
# The input is a T1 brain: CT, T1 contrast, anatomy (issue 52, item 1)
# --------------------------------------------------------------------------------------

NAMES = ["Unknown", "Cerebral-White-Matter", "Cerebral-Cortex", "Lateral-Ventricle"]


def _layered_brain(shell: float, deep: float, ventricles: float | None = None, texture: float = 4.0) -> MetaTensor:
    """A 2 mm sphere (radius 56 mm, 735 ml): ``shell`` in its outer 6 mm, ``deep`` inside, and a 10 mm
    ball of ``ventricles`` at its centre; ``texture``: the amplitude of a fine random pattern (the folds)."""
    grid = np.stack(np.meshgrid(*[np.arange(64) - 31.5] * 3, indexing="ij"))
    radius = np.sqrt((grid**2).sum(0)) * 2.0
    image = np.where(radius < 56, np.where(radius < 50, deep, shell), 0.0)
    if ventricles is not None:
        image = np.where(radius < 10, ventricles, image)
    pattern = np.random.default_rng(0).normal(0.0, 1.0, image.shape)
    image = np.where(radius < 56, image + texture * pattern, 0.0)
    return MetaTensor(torch.from_numpy(image.astype(np.float32))[None], affine=torch.diag(torch.tensor([2.0, 2, 2, 1])))


class FakeParcellator:
    """Labels by depth, as a parcellation of the layered brain would: cortex, white matter, ventricles."""

    label_names = NAMES

    def __init__(self):
        self.calls = 0

    def __call__(self, t1):
        self.calls += 1
        grid = np.stack(np.meshgrid(*[np.arange(64) - 31.5] * 3, indexing="ij"))
        radius = np.sqrt((grid**2).sum(0)) * 2.0
        labels = np.select([radius < 10, radius < 50, radius < 56], [3, 1, 2], 0)
        return MetaTensor(torch.from_numpy(labels)[None], affine=t1.affine)


def test_shell_contrast_decides_clear_t1_and_t2_without_the_parcellation():
    parcellator = FakeParcellator()
    t1 = _layered_brain(shell=60.0, deep=100.0)
    brain = t1 > 0
    assert qc.shell_contrast(t1[0].numpy(), brain[0].numpy(), (2.0, 2.0, 2.0)) < qc.SHELL_CLEAR_T1
    assert qc.t1_contrast_problems(t1, brain, parcellator) == []
    t2 = _layered_brain(shell=100.0, deep=40.0)
    problems = qc.t1_contrast_problems(t2, t2 > 0, parcellator)
    assert len(problems) == 1 and problems[0].startswith("not T1-weighted") and "T2-weighted" in problems[0]
    assert parcellator.calls == 0  # the cheap rule decided both


def test_undecided_shell_contrast_asks_the_parcellation():
    # the outer layer barely darker than the deep part: the cheap rule cannot tell
    t1 = _layered_brain(shell=95.0, deep=100.0, ventricles=20.0)
    brain = t1 > 0
    assert qc.SHELL_CLEAR_T1 < qc.shell_contrast(t1[0].numpy(), brain[0].numpy(), (2.0, 2.0, 2.0)) < qc.SHELL_NOT_T1
    parcellator = FakeParcellator()
    assert qc.t1_contrast_problems(t1, brain, parcellator) == [] and parcellator.calls == 1
    t2 = _layered_brain(shell=95.0, deep=100.0, ventricles=180.0)  # CSF brighter than white matter
    problems = qc.t1_contrast_problems(t2, t2 > 0, parcellator)
    assert len(problems) == 1 and "ventricles csf" in problems[0] and "white matter" in problems[0]


def test_no_recognised_anatomy_is_refused():
    class Nothing(FakeParcellator):
        def __call__(self, t1):
            return MetaTensor(torch.zeros(t1.shape, dtype=torch.int64), affine=t1.affine)

    phantom = _layered_brain(shell=95.0, deep=100.0, ventricles=200.0)  # undecided, then no anatomy
    problems = qc.t1_contrast_problems(phantom, phantom > 0, Nothing())
    assert len(problems) == 1 and problems[0].startswith("no brain anatomy recognised: the whole-brain parcellation")
    grid = np.stack(np.meshgrid(*[np.arange(64) - 31.5] * 3, indexing="ij"))
    radius = np.sqrt((grid**2).sum(0)) * 2.0  # a sphere darker towards its edge, as a T1 is, and smooth
    ramp = np.where(radius < 56, 60.0 + 40.0 * np.clip((56.0 - radius) / 30.0, 0, 1), 0.0).astype(np.float32)
    smooth = MetaTensor(torch.from_numpy(ramp)[None], affine=torch.diag(torch.tensor([2.0, 2, 2, 1])))
    assert qc.shell_contrast(ramp, ramp > 0, (2.0, 2.0, 2.0)) < qc.SHELL_CLEAR_T1
    assert qc.fine_structure(smooth[0].numpy(), smooth[0].numpy() > 0, (2.0, 2.0, 2.0)) < qc.MIN_FINE_STRUCTURE
    problems = qc.t1_contrast_problems(smooth, smooth > 0, Nothing())
    assert len(problems) == 1 and "no fine structure" in problems[0]


def test_ct_like_volume_is_refused_before_any_network(tmp_path, monkeypatch, capsys):
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 48)] * 3, indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    ct = np.select([radius < 0.7, radius < 0.8], [35.0, 1500.0], -1000.0).astype(np.float32)  # brain, bone, air
    assert qc.image_problems(ct)[0].startswith("QC: looks like CT")
    undershoot = qc.quality_report(np.where(ct < 0, -40.0, ct))  # resampling undershoot is not CT
    assert undershoot["metrics"]["hounsfield_air_share"] == 0 and not any("CT" in r for r in undershoot["reasons"])
    path = write_nifti(tmp_path / "ct.nii.gz", ct, np.diag([4.0, 4.0, 4.0, 1.0]))
    from monai_t1t2.inference import batch

    monkeypatch.setattr(batch, "brain_mask", lambda *a, **k: pytest.fail("the mask network ran on a CT"))
    assert main(["predict", str(path), "-o", str(tmp_path / "out"), "--model", str(_tiny_bundle(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "looks like CT" in err[0]
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def _tiny_bundle(tmp_path):
    from conftest import tiny_translation_bundle

    return tiny_translation_bundle(tmp_path)


@pytest.mark.realdata
def test_a_real_t2_given_as_the_t1_is_refused_and_force_translates_it(tmp_path, capsys, shared):
    t2 = shared / "data" / "cohort" / "Brats18_CBICA_AQO_1" / "t2.nii.gz"  # the example
    bundle = _tiny_bundle(tmp_path)
    assert main(["predict", str(t2), "-o", str(tmp_path / "out"), "--model", str(bundle)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(t2) in err[0] and "not T1-weighted" in err[0]
    assert not list((tmp_path / "out").glob("*_synT2.nii.gz"))
    assert main(["predict", str(t2), "-o", str(tmp_path / "forced"), "--model", str(bundle), "--force"]) == 0
    assert "not T1-weighted" in capsys.readouterr().err
    assert list((tmp_path / "forced").glob("*_synT2.nii.gz"))


@pytest.mark.realdata
@pytest.mark.slow
def test_the_parcellation_tells_an_undecided_t1_from_an_undecided_t2(shared):
    # The shared volumes closest to the cheap rule's T1 / T2 boundary (shell contrast -0.041 both).
    for case, image, refused in (("Brats18_CBICA_ASV_1", "t1", False), ("Brats18_2013_11_1", "t2", True)):
        volume = read_volume(shared / "data" / "cohort" / case / f"{image}.nii.gz")
        brain = masks.brain_mask(volume, "nonzero")
        shell = qc.shell_contrast(volume[0].numpy(), brain[0].numpy(), (1.0, 1.0, 1.0))
        assert qc.SHELL_CLEAR_T1 < shell < qc.SHELL_NOT_T1, (case, shell)
        problems = qc.t1_contrast_problems(volume, brain)
        assert bool(problems) == refused, (case, problems)


@pytest.mark.realdata
def test_qc_rejects_a_t2_and_passes_its_t1_unless_told_any_weighting(tmp_path, shared):
    case = shared / "data" / "cohort" / "Brats18_CBICA_ALU_1"  # both decided by the cheap rule
    report = tmp_path / "q.json"
    assert main(["qc", str(case / "t1.nii.gz"), str(case / "t2.nii.gz"), "--report", str(report)]) == 0
    t1, t2 = json.loads(report.read_text())
    assert t1["passed"] and not t2["passed"] and "not T1-weighted" in t2["reasons"][-1]
    assert main(["qc", str(case / "t2.nii.gz"), "--report", str(report), "--overwrite", "--expect", "any"]) == 0
    assert json.loads(report.read_text())[0]["passed"]
