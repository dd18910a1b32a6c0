import json

import numpy as np
import pytest

from conftest import PAIRED, PAIRED_CASES, synthetic_head, write_nifti
from monai_t1t2.io import case_source, find_subjects, load_datalist, load_subjects
from monai_t1t2.training.data import balanced_visits, split_subjects
from monai_t1t2.errors import DatasetError


def _subjects(tmp_path, cases=("a", "b", "c", "d")):
    for case in cases:
        write_nifti(tmp_path / case / "t1.nii.gz", synthetic_head())
        write_nifti(tmp_path / case / "t2.nii.gz", synthetic_head())
    write_nifti(tmp_path / "a" / "tumor_seg.nii.gz", (synthetic_head() > 150).astype("uint8"))
    return tmp_path


def test_find_subjects(tmp_path):
    subjects = find_subjects(_subjects(tmp_path))
    assert [s["case"] for s in subjects] == ["a", "b", "c", "d"]
    assert subjects[0]["tumor_seg"].endswith("tumor_seg.nii.gz") and subjects[1]["tumor_seg"] is None


def test_find_subjects_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        find_subjects(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no subjects found"):
        find_subjects(tmp_path)
    write_nifti(tmp_path / "x" / "t1.nii.gz", synthetic_head())
    with pytest.raises(DatasetError, match="no t2"):
        find_subjects(tmp_path)


def test_datalist(tmp_path):
    root = _subjects(tmp_path)
    datalist = {"training": [{"t1": "a/t1.nii.gz", "t2": "a/t2.nii.gz"}, {"t1": "b/t1.nii.gz", "t2": "b/t2.nii.gz", "case": "B"}]}
    (root / "list.json").write_text(json.dumps(datalist))
    subjects = load_subjects(root / "list.json")
    assert [s["case"] for s in subjects] == ["a", "B"]
    assert subjects[0]["t1"] == str(root / "a" / "t1.nii.gz")
    (root / "bad.json").write_text(json.dumps({"training": [{"t1": "a/t1.nii.gz"}]}))
    with pytest.raises(DatasetError, match="has no t2"):
        load_datalist(root / "bad.json")


def test_split_by_subject(tmp_path):
    subjects = find_subjects(_subjects(tmp_path))
    train, val = split_subjects(subjects, val_cases=["c"])
    assert [s["case"] for s in val] == ["c"] and len(train) == 3
    train, val = split_subjects(subjects, val_fraction=0.5, seed=3)
    assert len(val) == 2 and not {s["case"] for s in train} & {s["case"] for s in val}
    assert split_subjects(subjects, val_fraction=0.5, seed=3) == (train, val)
    with pytest.raises(DatasetError, match="not among"):
        split_subjects(subjects, val_cases=["zzz"])


@pytest.mark.realdata
def test_find_shared_subjects():
    subjects = find_subjects(PAIRED)
    assert tuple(s["case"] for s in subjects) == PAIRED_CASES
    assert all(s["tumor_seg"] is not None for s in subjects), "every paired case has a tumour mask"


def _sampling_subject(tumour_voxels: int = 6):
    """A 64^3 volume with a 40^3 'brain' cube and a small tumour cube in one corner of it."""
    import numpy as np

    from monai_t1t2.transforms import SamplingMaskd

    brain = np.zeros((1, 64, 64, 64), np.float32)
    brain[:, 12:52, 12:52, 12:52] = 1
    tumour = np.zeros_like(brain)
    tumour[:, 20:20 + tumour_voxels, 20:20 + tumour_voxels, 20:20 + tumour_voxels] = 1
    data = {"t1": brain.copy(), "brain": brain, "tumour": tumour}
    return SamplingMaskd("t1", brain_key="brain", tumour_key="tumour", tumour_margin=2, min_brain_fraction=0.0)(data)


def test_sampling_mask_marks_the_tumour_zone():
    data = _sampling_subject()
    mask = data["sampling_mask"][0]
    assert set(np.unique(mask)) == {0.0, 1.0, 2.0}
    zone = mask == 2
    assert zone[20:26, 20:26, 20:26].all(), "the tumour is in its zone"
    assert zone.sum() == np.count_nonzero(mask[18:28, 18:28, 18:28] == 2) and not zone[30:].any(), "2 voxels of edge only"
    assert not (zone & (data["brain"][0] == 0)).any(), "the zone stays in the brain"


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_tumour_aware_sampler_centres_the_set_share_in_the_tumour(fraction):
    from monai_t1t2.transforms import brain_patch_sampler

    data = _sampling_subject()
    zone_share = float((data["sampling_mask"] == 2).sum() / (data["sampling_mask"] > 0).sum())
    sampler = brain_patch_sampler(["t1", "brain", "tumour", "sampling_mask"], spatial_size=(8, 8, 8), num_samples=50,
                                  tumour_fraction=fraction)
    sampler.set_random_state(0)
    centres = [patch["sampling_mask"][0, 4, 4, 4] for _ in range(8) for patch in sampler(data)]
    assert all(value > 0 for value in centres), "no patch is centred outside the brain"
    share = np.mean([value == 2 for value in centres])
    if fraction == 0:
        assert share < 3 * zone_share + 0.02, (share, zone_share)
    else:
        assert abs(share - fraction) < 0.1, share


def test_tumour_aware_sampler_without_tumour_samples_brain():
    from monai_t1t2.transforms import brain_patch_sampler

    data = _sampling_subject()
    data["sampling_mask"] = np.minimum(data["sampling_mask"], 1)
    sampler = brain_patch_sampler(["t1", "sampling_mask"], spatial_size=(8, 8, 8), num_samples=20, tumour_fraction=0.5)
    assert all(patch["sampling_mask"][0, 4, 4, 4] == 1 for patch in sampler(data))
    with pytest.raises(ValueError, match="tumour_fraction"):
        brain_patch_sampler(["t1"], tumour_fraction=1.0)


def test_data_module_caches_compactly_and_feeds_float32(tmp_path):
    import torch

    from monai_t1t2.training.data import PairedDataModule

    head = synthetic_head((40, 40, 32))
    for case in ("a", "b"):
        write_nifti(tmp_path / case / "t1.nii.gz", head)
        write_nifti(tmp_path / case / "t2.nii.gz", np.where(head > 0, 200.0 - head, 0.0).astype(np.float32))
        write_nifti(tmp_path / case / "tumor_seg.nii.gz", (head > 150).astype(np.uint8))
    data = PairedDataModule(str(tmp_path), val_cases=["b"], patch_size=(16, 16, 16), samples_per_volume=3,
                            repeats_per_epoch=1, augment=False, intensity_augment=True, tumour_fraction=0.5,
                            quality_control=False)
    data.setup("fit")
    cached = data.train_dataset.dataset._cache[0]
    assert cached["t1"].dtype == torch.float16 and cached["sampling_mask"].max() == 2
    patches = next(iter(data.train_dataloader()))
    assert patches["t1"].dtype == torch.float32 and patches["t1"].shape == (3, 1, 16, 16, 16)
    assert 0 <= patches["t1"].min() and patches["t1"].max() <= 1
    validation = next(iter(data.val_dataloader()))
    assert validation["t1"].dtype == torch.float32


def test_data_module_with_parcellation_feeds_region_weights_and_groups(tmp_path):
    """With a parcellation model, patches carry the region weight map and the group codes
    (tumour voxels in the tumour group), aligned with the images."""
    import torch

    from test_parcellation import write_tiny_brainchop
    from monai_t1t2.regions import TUMOUR_GROUP
    from monai_t1t2.training.data import PairedDataModule

    head = synthetic_head((40, 40, 32))
    for case in ("a", "b"):
        write_nifti(tmp_path / "data" / case / "t1.nii.gz", head)
        write_nifti(tmp_path / "data" / case / "t2.nii.gz", np.where(head > 0, 200.0 - head, 0.0).astype(np.float32))
        write_nifti(tmp_path / "data" / case / "tumor_seg.nii.gz", (head > 150).astype(np.uint8))
    model = write_tiny_brainchop(tmp_path / "tiny")
    data = PairedDataModule(str(tmp_path / "data"), val_cases=["b"], patch_size=(16, 16, 16), samples_per_volume=4,
                            repeats_per_epoch=1, augment=False, tumour_fraction=0.5, quality_control=False,
                            parcellation_model=str(model), cache_dir=str(tmp_path / "cache"))
    data.prepare_data()
    data.setup("fit")
    patches = next(iter(data.train_dataloader()))
    groups, weights = patches["groups"], patches["weights"]
    assert groups.shape == weights.shape == patches["t1"].shape == (4, 1, 16, 16, 16)
    assert torch.equal(groups, groups.round()) and set(groups.unique().tolist()) <= {0, 1, 2, TUMOUR_GROUP}
    tumour = patches["tumour"] > 0
    assert tumour.any() and bool((groups[tumour] == TUMOUR_GROUP).all())
    assert bool((weights > 0).all())
    # The validation volume carries its groups too (for the tumour contrast error of the validation metrics).
    validation = next(iter(data.val_dataloader()))
    assert validation["groups"].shape == validation["t1"].shape
    assert bool((validation["groups"][validation["tumour"] > 0] == TUMOUR_GROUP).all())


@pytest.mark.parametrize("mirror", [False, True])
def test_mirror_augment_flips_the_pair_left_right_together(tmp_path, mirror):
    import torch

    from monai_t1t2.training.data import PairedDataModule
    from monai_t1t2.transforms import INPUT_FLOOR

    # Inside the head the intensity rises along x (RAS axis 0, left to right): a mirrored patch falls.
    head = synthetic_head((40, 40, 32)) > 0
    ramp = np.where(head, 10.0 + np.arange(40, dtype=np.float32)[:, None, None], 0.0).astype(np.float32)
    for case in ("a", "b"):
        write_nifti(tmp_path / case / "t1.nii.gz", ramp)
        write_nifti(tmp_path / case / "t2.nii.gz", ramp)
    data = PairedDataModule(str(tmp_path), val_cases=["b"], patch_size=(16, 16, 16), samples_per_volume=24,
                            repeats_per_epoch=1, augment=False, intensity_augment=False, mirror_augment=mirror,
                            quality_control=False, input_floor=INPUT_FLOOR)
    data.setup("fit")
    patches = next(iter(data.train_dataloader()))
    # The pair is flipped together (the T1, the network's input, is floored at INPUT_FLOOR in the brain).
    expected_t1 = torch.where(patches["brain"] > 0, patches["t2"].clamp(min=INPUT_FLOOR), patches["t2"])
    assert torch.allclose(patches["t1"], expected_t1, atol=1e-5)
    t1, brain = patches["t1"][:, 0], patches["brain"][:, 0] > 0
    inside = brain[:, 1:] & brain[:, :-1]
    slope = torch.stack([(t1[i, 1:] - t1[i, :-1])[inside[i]].mean() for i in range(len(t1))])
    falling = int((slope < 0).sum())
    assert (0 < falling < len(t1)) if mirror else falling == 0


def test_network_input_floor_keeps_the_darkest_brain_voxels_apart_from_the_background():
    """The protocol's clip maps the darkest 0.5 % of the brain to 0; as a network input they stay at
    INPUT_FLOOR, so the residual head's prior (1 - t1 where t1 > 0) makes them bright, as CSF is in T2."""
    import torch

    from monai_t1t2.nets.generators import build_generator
    from monai_t1t2.transforms import INPUT_FLOOR, PercentileNormalise

    volume = np.zeros((20, 20, 20), np.float32)
    volume[4:16, 4:16, 4:16] = np.random.default_rng(0).uniform(10, 100, (12, 12, 12))
    brain = volume > 0
    protocol, network_input = PercentileNormalise()(volume, brain), PercentileNormalise(floor=INPUT_FLOOR)(volume, brain)
    darkest = brain & (protocol == 0)
    assert darkest.sum() >= 8 and (network_input[darkest] == np.float32(INPUT_FLOOR)).all()
    assert np.allclose(network_input[brain], np.maximum(protocol[brain], INPUT_FLOOR)) and (network_input[~brain] == 0).all()
    head = build_generator(head="residual", channels=[4, 8], num_res_units=0).eval()  # gate 0: the floor itself
    prior = head(torch.as_tensor(network_input)[None, None])[0, 0].detach().numpy()
    assert prior[darkest].min() > 0.99 and (prior[~brain] == 0).all()
    with pytest.raises(ValueError, match="floor"):
        PercentileNormalise(floor=1.0)


def test_input_floor_is_applied_last_so_the_floored_voxels_hold_it_exactly(tmp_path):
    """The floor comes after the float16 cache and the T1's intensity augmentation (a gamma change
    would move a floor applied before it): in training patches and the validation volume the darkest
    brain voxels hold exactly INPUT_FLOOR, as the inference preprocessing gives them, the background 0."""
    import torch

    from monai_t1t2.training.data import PairedDataModule
    from monai_t1t2.transforms import INPUT_FLOOR, BrainFloord

    head = synthetic_head((40, 40, 32)) > 0
    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        write_nifti(tmp_path / case / "t1.nii.gz", np.where(head, rng.uniform(10, 100, head.shape), 0).astype(np.float32))
        write_nifti(tmp_path / case / "t2.nii.gz", np.where(head, rng.uniform(10, 100, head.shape), 0).astype(np.float32))
    data = PairedDataModule(str(tmp_path), val_cases=["b"], patch_size=(16, 16, 16), samples_per_volume=24,
                            repeats_per_epoch=1, augment=False, intensity_augment=True, quality_control=False,
                            input_floor=INPUT_FLOOR, cache_dtype="float16")
    data.setup("fit")
    floor = torch.tensor(INPUT_FLOOR, dtype=torch.float32)
    torch.manual_seed(0)
    for volumes in (next(iter(data.train_dataloader())), next(iter(data.val_dataloader()))):
        t1, brain = volumes["t1"], volumes["brain"] > 0
        assert t1.dtype == torch.float32
        assert bool((t1[brain] >= floor).all()) and int((t1[brain] == floor).sum()) > 0
        assert bool((t1[~brain] == 0).all())
    # The transform alone: raised inside the mask only.
    d = BrainFloord("t1", mask_key="brain", floor=0.25)({"t1": torch.tensor([0.0, 0.1, 0.5, 0.0]),
                                                          "brain": torch.tensor([1, 1, 1, 0])})
    assert d["t1"].tolist() == [0.25, 0.25, 0.5, 0.0]
    with pytest.raises(ValueError, match="floor"):
        BrainFloord("t1", floor=1.0)


def test_calibrate_tails_pins_the_ends_and_keeps_the_middle_and_the_order():
    """A prediction whose tails are narrowed (the conditional median at the brain's darkest and brightest
    voxels) gets its 0.5th / 99.5th brain percentiles at 0 / 1; its 2nd-98th percentile range is left as it
    was, the order of the voxels is kept, and the protocol's own rescaling then changes nothing."""
    import torch
    from monai.data import MetaTensor

    from monai_t1t2.transforms import CalibrateTails, CalibrateTailsd, PercentileNormalise

    rng = np.random.default_rng(0)
    prediction = np.full((24, 24, 24), 0.7, np.float32)  # outside the brain: must stay as it is
    brain = np.zeros(prediction.shape, bool)
    brain[2:22, 2:22, 2:22] = True
    prediction[brain] = rng.uniform(0.1, 0.85, int(brain.sum()))
    calibrated = CalibrateTails()(prediction, brain)
    inside, before = calibrated[brain], prediction[brain]
    assert np.percentile(inside, 0.5) < 1e-4 and np.percentile(inside, 99.5) > 1 - 1e-4
    p2, p98 = np.percentile(before, [2, 98])
    middle = (before >= p2 + 1e-5) & (before <= p98 - 1e-5)
    assert middle.mean() > 0.9 and np.allclose(inside[middle], before[middle], atol=1e-5)
    assert np.all(np.diff(inside[np.argsort(before, kind="stable")]) >= -1e-7)  # monotone
    assert (calibrated[~brain] == 0.7).all()
    assert np.abs(PercentileNormalise()(calibrated, brain)[brain] - inside).max() < 1e-3
    # the tensor path keeps MetaTensor and its metadata; the dictionary version reads the mask by key
    image = MetaTensor(torch.as_tensor(prediction)[None], meta={"filename_or_obj": "p"})
    out = CalibrateTailsd("pred", mask_key="brain")({"pred": image, "brain": torch.as_tensor(brain)[None].float()})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "p"
    assert np.allclose(out[0].numpy(), calibrated, atol=1e-6)
    assert CalibrateTails()(prediction, np.zeros_like(brain)) is prediction  # no brain: nothing to calibrate
    with pytest.raises(ValueError, match="lower"):
        CalibrateTails(lower=50, upper=40)


def test_percentile_normalise_positive_only_ignores_the_voxels_at_or_below_0_for_its_percentiles():
    """The network's T1 inside a brain with filled cavities: the cavity's voxels (<= 0) do not move the
    percentiles, so the rest of the brain is normalised exactly as without them; they map to 0."""
    from monai_t1t2.transforms import PercentileNormalise

    rng = np.random.default_rng(0)
    t1 = np.zeros((20, 20, 20), np.float32)
    t1[2:18, 2:18, 2:18] = rng.uniform(10, 100, (16, 16, 16))
    brain_without = t1 > 0
    t1[8:12, 8:12, 8:12] = -5.0
    brain_without[8:12, 8:12, 8:12] = False
    brain_with = t1 != 0
    plain = PercentileNormalise()(t1, brain_without)
    positive = PercentileNormalise(positive_only=True)(t1, brain_with)
    assert np.allclose(positive[brain_without], plain[brain_without]) and (positive[8:12, 8:12, 8:12] == 0).all()
    assert not np.allclose(PercentileNormalise()(t1, brain_with)[brain_without], plain[brain_without])


def test_case_source_reads_the_site_of_brats_names_and_prefers_the_datalist():
    assert [case_source(c) for c in ("Brats18_CBICA_ALU_1", "Brats18_TCIA02_135_1", "Brats18_2013_23_1",
                                      "BraTS-GLI-00001-000", "TCGA-DU-7294", "sub-01")] == \
        ["CBICA", "TCIA02", "2013", "BraTS", "TCGA", "sub"]
    assert case_source({"case": "Brats18_CBICA_ALU_1", "source": "upenn"}) == "upenn"


def test_datalist_keeps_a_source(tmp_path):
    _subjects(tmp_path)
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": [{"case": "a", "t1": "a/t1.nii.gz", "t2": "a/t2.nii.gz",
                                                  "source": "site-1"},
                                                 {"t1": "b/t1.nii.gz", "t2": "b/t2.nii.gz"}]}))
    subjects = load_datalist(datalist)
    assert [case_source(s) for s in subjects] == ["site-1", "b"]


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0])
def test_balanced_visits_keep_the_epoch_and_move_visits_to_the_small_sources(exponent):
    sources = ["big"] * 17 + ["mid"] * 3 + ["one"]
    visits = balanced_visits(sources, 8, exponent)
    assert sum(visits) == 8 * len(sources) and min(visits) >= 1
    per_source = {s: sum(v for v, t in zip(visits, sources) if t == s) for s in set(sources)}
    share_big = per_source["big"] / sum(visits)
    if exponent == 0:
        assert visits == [8] * len(sources)
    else:
        assert share_big < 17 / 21 and visits[-1] > visits[0]
    if exponent == 1:   # every source equally, up to rounding
        assert max(per_source.values()) - min(per_source.values()) <= 2


def test_balanced_visits_reject_nonsense():
    with pytest.raises(ValueError):
        balanced_visits(["a"], 0)
    with pytest.raises(ValueError):
        balanced_visits(["a"], 1, -1.0)


def test_data_module_balances_the_visits_by_source(tmp_path):
    from monai_t1t2.training.data import PairedDataModule

    head = synthetic_head((32, 32, 24))
    for case in ("Brats18_CBICA_AAA_1", "Brats18_CBICA_AAB_1", "Brats18_CBICA_AAC_1", "Brats18_TCIA01_001_1"):
        write_nifti(tmp_path / case / "t1.nii.gz", head)
        write_nifti(tmp_path / case / "t2.nii.gz", np.where(head > 0, 200.0 - head, 0.0).astype(np.float32))
    data = PairedDataModule(str(tmp_path), val_cases=[], patch_size=(16, 16, 16), samples_per_volume=1,
                            repeats_per_epoch=4, augment=False, quality_control=False, source_balance=1.0)
    data.setup("fit")
    visits = np.bincount(data.train_dataset.indices, minlength=4)
    order = [s["case"] for s in data.train_subjects]
    tcia = order.index("Brats18_TCIA01_001_1")
    assert len(data.train_dataset) == 16 and visits[tcia] == 8
    assert sorted(np.delete(visits, tcia).tolist()) == [2, 3, 3]


def test_thick_slices_average_along_the_slice_axis_only_and_treat_the_pair_alike():
    import torch

    from monai_t1t2.transforms import RandThickSlicesd

    z = torch.arange(32, dtype=torch.float32)
    stripes = (z % 2)[None, None, None, :].expand(1, 8, 8, 32)  # alternating axial slices
    ramp = torch.arange(8, dtype=torch.float32)[None, :, None, None].expand(1, 8, 8, 32).clone()  # constant along z
    mask = torch.ones(1, 8, 8, 32)
    thick = RandThickSlicesd(["t1", "t2"], prob=1.0, thickness=(4.0, 4.0))
    out = thick({"t1": stripes + ramp, "t2": 2 * (stripes + ramp), "brain": mask})
    # The slabs average the alternation away; what is constant along z (the in-plane ramp) stays exactly.
    assert float((out["t1"] - ramp).sub(0.5).abs().max()) < 0.05
    assert float((stripes + ramp).diff(dim=-1).abs().mean()) == 1.0 and float(out["t1"].diff(dim=-1).abs().mean()) < 0.05
    assert torch.allclose(out["t2"], 2 * out["t1"], atol=1e-5)  # the same thickness for the pair
    assert out["brain"] is mask  # not a key: untouched
    assert torch.allclose(RandThickSlicesd("t1", prob=1.0, thickness=(4.0, 4.0))({"t1": ramp})["t1"], ramp, atol=1e-5)
    # prob 0 never changes anything; a seeded transform draws the same thickness again.
    never = RandThickSlicesd("t1", prob=0.0)({"t1": stripes})
    assert torch.equal(never["t1"], stripes)
    a = RandThickSlicesd("t1", prob=1.0).set_random_state(3)({"t1": stripes})["t1"]
    b = RandThickSlicesd("t1", prob=1.0).set_random_state(3)({"t1": stripes})["t1"]
    assert torch.equal(a, b)
    for bad in ({"prob": 1.5}, {"thickness": (0.5, 2.0)}, {"thickness": (5.0, 3.0)}, {"axis": 3}):
        with pytest.raises(ValueError):
            RandThickSlicesd("t1", **bad)


@pytest.mark.parametrize("thick", [0.0, 1.0])
def test_data_module_thick_slices_blur_the_training_pair_through_plane(tmp_path, thick):
    import torch

    from monai_t1t2.training.data import PairedDataModule

    # Inside the head the intensity alternates between axial slices (RAS axis 2) and is constant in-plane.
    head = synthetic_head((40, 40, 32)) > 0
    stripes = np.where(head, 50.0 + 40.0 * (np.arange(32) % 2)[None, None, :], 0.0).astype(np.float32)
    for case in ("a", "b"):
        write_nifti(tmp_path / case / "t1.nii.gz", stripes)
        write_nifti(tmp_path / case / "t2.nii.gz", stripes)
    data = PairedDataModule(str(tmp_path), val_cases=["b"], patch_size=(16, 16, 16), samples_per_volume=8,
                            repeats_per_epoch=1, augment=False, quality_control=False, thick_slices=thick,
                            thick_slice_range=(4.0, 4.0))
    data.setup("fit")
    patches = next(iter(data.train_dataloader()))
    assert torch.allclose(patches["t1"], patches["t2"])  # the pair alike
    t1, brain = patches["t1"], patches["brain"] > 0
    inside = brain[..., 1:] & brain[..., :-1]
    through_plane = float(t1.diff(dim=-1).abs()[inside].mean())
    assert through_plane < 0.1 if thick else through_plane > 0.9
    # The validation volume is never thickened.
    validation = next(iter(data.val_dataloader()))
    v, vb = validation["t1"], validation["brain"] > 0
    assert float(v.diff(dim=-1).abs()[vb[..., 1:] & vb[..., :-1]].mean()) > 0.9
