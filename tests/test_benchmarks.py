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


def test_ripple_second_difference_finds_the_alternating_axis():
    """``ripple.second_difference``: 0 on a linear ramp, 1 along the axis where voxels alternate by 1
    (and 0 along the others); ``checkerboard_by_axis`` names that axis."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import healthy
    import ripple

    brain = np.ones((12, 12, 12), dtype=bool)
    ramp = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None], brain.shape).copy()
    assert all(ripple.second_difference(ramp, brain, axis) == 0 for axis in range(3))
    alternating = ramp + (np.arange(12) % 2).astype(np.float32)[None, :, None]
    assert [ripple.second_difference(alternating, brain, axis) for axis in range(3)] == [0, 1, 0]
    x, y, z = np.meshgrid(*(np.linspace(0, 1, 24),) * 3, indexing="ij")
    smooth = (x + 2 * y + 3 * z).astype(np.float32)
    by_axis = healthy.checkerboard_by_axis(smooth + 0.1 * (np.arange(24) % 2)[None, :, None], np.ones(smooth.shape, bool))
    assert by_axis[1] > 0.5 and by_axis[0] < 0.01 and by_axis[2] < 0.01


def test_blur_index_reads_thick_axial_slabs_below_an_isotropic_volume():
    """``slice_thickness.py``'s index: about 1 for an isotropic texture, lower once the augmentation's
    slabs blur it along z, lower still for thicker slabs; the same blur in-plane does not lower it."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from slice_thickness import blur_index

    from monai_t1t2.transforms import RandThickSlicesd

    texture = torch.rand(1, 32, 32, 40, generator=torch.Generator().manual_seed(0))
    brain = np.ones((32, 32, 40), bool)
    iso = blur_index(texture[0].numpy(), brain)
    thick = [blur_index(RandThickSlicesd.thicken(texture, t, axis=2)[0].numpy(), brain) for t in (3.0, 6.0)]
    sideways = blur_index(RandThickSlicesd.thicken(texture, 6.0, axis=0)[0].numpy(), brain)
    assert 0.95 < iso < 1.05
    assert thick[1] < thick[0] < 0.8 * iso
    assert sideways > iso


def test_slice_thickness_compare_splits_the_paired_differences_by_t1_thickness(tmp_path, capsys):
    import json

    sys.path.insert(0, str(REPO / "benchmarks"))
    from slice_thickness import compare

    rows = [{"case": "thin", "split": "test", "t1": 1.05}, {"case": "thick1", "split": "test", "t1": 0.6},
            {"case": "thick2", "split": "test", "t1": 0.7}, {"case": "trained", "split": "training", "t1": 0.6}]
    def scored(ssim, error):
        return {"ssim": ssim, "tumour_contrast_error": error}
    results = {"thin": {"inverted_t1": scored(0.5, 0.1), "a": scored(0.70, 0.05), "b": scored(0.68, 0.20)},
               "thick1": {"inverted_t1": scored(0.5, 0.1), "a": scored(0.60, 0.30), "b": scored(0.64, 0.05)},
               "thick2": {"inverted_t1": scored(0.5, None), "a": scored(0.60, None), "b": scored(0.62, None)}}
    path = tmp_path / "quality.json"
    path.write_text(json.dumps({"results": results}))
    compare(rows, [str(path)], "a", "b")
    out = capsys.readouterr().out
    assert "thick-slice T1, 2 subjects: SSIM b - a +0.0300 ± 0.0141, higher on 2; contrast error above the floor's: a 1, b 0 of 1" in out
    assert "isotropic T1, 1 subjects: SSIM b - a -0.0200, higher on 0; contrast error above the floor's: a 0, b 1 of 1" in out
    assert "trained" not in out


def test_contrast_record_counts_the_variants_below_the_floor_on_each_subject(tmp_path, monkeypatch, capsys):
    """Only variants scored on every subject with a mask, with the suffix asked for, are counted."""
    import json

    sys.path.insert(0, str(REPO / "benchmarks"))
    import contrast_record

    def scored(error):
        return {"ssim": 0.5, "tumour_contrast_error": error}
    halves = [{"s1": {"inverted_t1": scored(0.10), "a_tails": scored(0.05), "b_tails": scored(0.20), "c": scored(0.01)},
               "no_mask": {"inverted_t1": scored(None), "a_tails": scored(None)}},
              {"s2": {"inverted_t1": scored(0.30), "a_tails": scored(0.40), "b_tails": scored(0.10)},
               "s3": {"inverted_t1": scored(0.01), "a_tails": scored(0.50), "b_tails": scored(0.60)}}]
    paths = []
    for index, results in enumerate(halves):
        paths.append(tmp_path / f"h{index}.json")
        paths[-1].write_text(json.dumps({"results": results}))
    assert contrast_record.recorded_errors([str(p) for p in paths])["a_tails"] == {"s1": 0.05, "s2": 0.40, "s3": 0.50}
    monkeypatch.setattr(sys, "argv", ["contrast_record.py", *map(str, paths), "--subjects", "3"])
    contrast_record.main()
    out = capsys.readouterr().out
    assert "2 variants scored on all 3 test subjects" in out  # "c" lacks s2 and s3
    assert "| variant | s3 | s1 | s2 | below the floor on |" in out
    assert "| a_tails | 0.500 | 0.050 | 0.400 | 1 of 3 |" in out
    assert "| b_tails | 0.600 | 0.200 | 0.100 | 1 of 3 |" in out
    assert "| variants below the floor | 0 of 2 | 1 of 2 | 1 of 2 | |" in out
