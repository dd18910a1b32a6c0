import json

import pytest

from conftest import PAIRED, PAIRED_CASES, synthetic_head, write_nifti
from monai_t1t2.data import find_subjects, load_datalist, load_subjects, split_subjects
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
    assert [s["tumor_seg"] is not None for s in subjects] == [False, True, True, True]
