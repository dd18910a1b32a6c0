"""The quality benchmark scores what the package's pipeline writes, not a variant of it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from conftest import REPO, SHARED, synthetic_head


def test_quality_benchmark_predicts_what_translate_writes(tmp_path):
    """``benchmarks/quality.py``'s prediction of a checkpoint is ``translate``'s output of the same
    checkpoint (the bundle's pipeline; the bundle itself stores the weights in float16), voxel for voxel, including the brain's darkest voxels (which a mask on the normalised
    T1 once dropped), with the input floor 0 of older models and the floor of newer ones."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import quality

    from monai_t1t2.inference.translation import translate
    from monai_t1t2.training.module import TranslationModule

    generator = {"name": "unet", "channels": [4, 8], "num_res_units": 0, "norm": "instance", "head": "residual"}
    torch.manual_seed(0)
    module = TranslationModule(generator=generator, patch_size=(16, 16, 16))
    with torch.no_grad():
        module.generator.gate.fill_(1.0)  # the correction on: the darkest voxels are not the prior alone
    t1 = synthetic_head((40, 36, 28))
    for floor in (0.0, 1e-3):
        checkpoint = tmp_path / f"floor{floor}.ckpt"
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                    "datamodule_hyper_parameters": {"input_floor": floor}}, checkpoint)
        loaded, _ = quality.load_checkpoint(str(checkpoint))
        assert loaded.input_floor == floor
        benchmark = quality.predict(loaded, t1)
        written = translate(t1, model=checkpoint, affine=np.eye(4), mask_method="nonzero", device="cpu")[0].numpy()
        darkest = (t1 > 0) & (t1 <= np.percentile(t1[t1 > 0], 0.5))
        assert darkest.any() and benchmark[darkest].max() > 0
        np.testing.assert_allclose(benchmark, written, atol=1e-5)
    # --tail-calibration NAME scores what translate(..., calibrate_tails=True) writes (a sigmoid head, whose
    # output does not already reach 0 and 1 in the brain)
    module = TranslationModule(generator=dict(generator, head="sigmoid"), patch_size=(16, 16, 16))
    checkpoint = tmp_path / "sigmoid.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    benchmark = quality.predict(quality.load_checkpoint(str(checkpoint))[0], t1)
    calibrated = translate(t1, model=checkpoint, affine=np.eye(4), mask_method="nonzero", device="cpu",
                           calibrate_tails=True)[0].numpy()
    assert np.abs(calibrated - benchmark).max() > 0.05
    np.testing.assert_allclose(quality.CalibrateTails()(benchmark, t1 > 0), calibrated, atol=1e-5)


def test_fit_check_scores_training_subjects_and_fits_the_table_on_the_rest():
    """``quality.py --fit-check``: the named training subjects are scored, the lookup table is fitted on
    the others, and a name outside ``training`` is refused."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import quality

    training = [{"case": f"s{i}", "t1": f"s{i}/t1.nii.gz"} for i in range(5)]
    fit_on, scored = quality.fit_check_subjects(training, ["s1", "s3"])
    assert sorted(scored) == ["s1", "s3"] and scored["s1"] is training[1]
    assert [s["case"] for s in fit_on] == ["s0", "s2", "s4"]
    with pytest.raises(ValueError, match="s9"):
        quality.fit_check_subjects(training, ["s1", "s9"])


@pytest.mark.realdata
def test_fit_check_refuses_the_recipes_validation_subjects(tmp_path):
    """A subject the recipe holds out for validation was never trained on: ``--fit-check`` says so in one
    line and exits non-zero before any work."""
    import subprocess

    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality.py"), "--config",
                             str(REPO / "configs" / "cpu.yaml"), "--fit-check", "Brats18_CBICA_AQO_1",
                             "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Brats18_CBICA_AQO_1" in result.stderr and "validation" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("overlap", ["3d=abc", "3d=1.5", "other=0.75", "3d=0.75 3d=0.5"])
def test_overlap_that_names_no_checkpoint_or_no_fraction_is_refused_before_any_work(tmp_path, overlap):
    import subprocess

    (tmp_path / "model.ckpt").write_bytes(b"")  # exists; never read, the arguments are refused first
    options = [item for value in overlap.split() for item in ("--overlap", value)]
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality.py"), "--checkpoint", f"3d={tmp_path / 'model.ckpt'}",
                             *options, "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--overlap takes NAME=F" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_level_oracle_keeps_the_order_and_takes_the_reference_histogram():
    """``match_histogram`` (``quality.py --level-oracle``): inside the mask the result has exactly the
    reference's values, in the prediction's order; outside it, the prediction is unchanged."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import quality

    rng = np.random.default_rng(0)
    prediction, reference = rng.random((6, 7, 8)), rng.random((6, 7, 8)) ** 3
    mask = rng.random((6, 7, 8)) > 0.3
    matched = quality.match_histogram(prediction, reference, mask)
    np.testing.assert_allclose(np.sort(matched[mask]), np.sort(reference[mask]).astype(np.float32))
    np.testing.assert_array_equal(np.argsort(matched[mask]), np.argsort(prediction[mask]))
    np.testing.assert_allclose(matched[~mask], prediction[~mask].astype(np.float32))


@pytest.mark.realdata
def test_training_references_read_each_subject_once_for_the_table_and_the_levels(monkeypatch):
    """``fit_training_references``: the lookup table and the population levels from one read per subject;
    the levels are a normalised T2's (0.5th percentile 0, 99.5th 1, increasing)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import quality
    from monai_t1t2.io import load_datalist

    subjects = load_datalist(SHARED / "data" / "datalist.json", "training")[:2]
    reads = []
    load_case = quality.load_case
    monkeypatch.setattr(quality, "load_case", lambda subject, **kw: reads.append(subject["case"]) or load_case(subject, **kw))
    table, levels = quality.fit_training_references(subjects, levels=True)
    assert reads == [s["case"] for s in subjects]
    cases = [load_case(s, parcellation=False) for s in subjects]
    with np.errstate(all="ignore"):
        expected = quality.fill_empty_bins(np.nanmedian(np.stack([quality.bin_medians(c) for c in cases]), axis=0))
    np.testing.assert_allclose(table, expected)
    np.testing.assert_allclose(levels, np.median(np.stack([quality.t2_levels(c) for c in cases]), axis=0))
    assert levels[0] == pytest.approx(0, abs=1e-6) and levels[-1] == pytest.approx(1, abs=1e-6)
    assert np.all(np.diff(levels) > 0)
    assert quality.fit_training_references(subjects)[1] is None


def test_population_levels_put_the_prediction_on_the_standard_histogram():
    """``population_levels`` (``quality.py --population-levels``): a monotone map after which the
    prediction's brain percentiles are the standard's; zero outside the brain."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import quality

    rng = np.random.default_rng(1)
    prediction = rng.random((30, 30, 30)).astype(np.float32)
    brain = np.zeros(prediction.shape, bool)
    brain[3:27, 3:27, 3:27] = True
    standard = np.sort(rng.random(len(quality.LEVEL_PERCENTILES))) ** 2
    mapped = quality.population_levels(prediction, brain, standard)
    np.testing.assert_allclose(np.percentile(mapped[brain], quality.LEVEL_PERCENTILES), standard, atol=5e-3)
    assert not mapped[~brain].any()
    order = np.argsort(prediction[brain])
    assert np.all(np.diff(mapped[brain][order]) >= 0)


def test_checkerboard_index_sees_a_two_voxel_pattern_and_not_a_ramp():
    """``healthy.checkerboard``: 0 for a smooth ramp, large once every other voxel along one axis is
    raised (the mark of a stride-2 up-sampling)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import healthy

    x, y, z = np.meshgrid(*(np.linspace(0, 1, 24),) * 3, indexing="ij")
    ramp = (x + 2 * y + 3 * z).astype(np.float32)
    brain = np.ones(ramp.shape, bool)
    assert healthy.checkerboard(ramp, brain) < 0.01
    pattern = ramp + 0.1 * (np.arange(24) % 2)[None, :, None]
    assert healthy.checkerboard(pattern, brain) > 0.5
    by_axis = healthy.checkerboard_by_axis(pattern, brain)  # it names the axis that alternates
    assert by_axis[1] > 0.5 and by_axis[0] < 0.01 and by_axis[2] < 0.01
