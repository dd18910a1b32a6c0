import gzip
import os
import stat

import nibabel as nib
import numpy as np
import pytest

from conftest import PAIRED, PAIRED_CASES, RAW, SAMPLE_T1, synthetic_head, write_nifti
from monai_t1t2.errors import GridMismatchError, InvalidVolumeError, OutputExistsError
from monai_t1t2.io import check_same_grid, find_volumes, orientation_of, read_volume, spacing_of, volume_stem, write_volume


def test_read_volume_returns_channel_first_metatensor(tmp_path):
    path = write_nifti(tmp_path / "t1.nii.gz", synthetic_head(), np.diag([2.0, 2.0, 3.0, 1.0]))
    volume = read_volume(path)
    assert tuple(volume.shape) == (1, 32, 32, 24)
    assert spacing_of(volume.affine) == (2.0, 2.0, 3.0)
    assert volume.meta["filename_or_obj"] == str(path)


def test_read_volume_drops_trailing_singleton(tmp_path):
    path = write_nifti(tmp_path / "t1.nii.gz", synthetic_head()[..., None])
    assert tuple(read_volume(path).shape) == (1, 32, 32, 24)


def test_read_nrrd_through_itk(tmp_path):
    import itk

    array = synthetic_head()
    image = itk.image_from_array(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing([1.5, 1.5, 2.0])
    itk.imwrite(image, str(tmp_path / "t1.nrrd"))
    volume = read_volume(tmp_path / "t1.nrrd")
    assert tuple(volume.shape) == (1, 32, 32, 24)
    np.testing.assert_allclose(spacing_of(volume.affine), (1.5, 1.5, 2.0))
    np.testing.assert_allclose(volume[0].numpy(), array)


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.write_text("not an image"), p)[1], "not a readable volume"),
        (lambda p: (p.write_bytes(gzip.compress(b"x" * 10_000)[:200]), p)[1], "not a readable volume"),
        (lambda p: write_nifti(p, np.ones((16, 16), np.float32) * np.arange(16)), "2D data"),
        (lambda p: write_nifti(p, synthetic_head((16, 16, 1))), "2D data"),
        (lambda p: write_nifti(p, np.stack([synthetic_head((8, 8, 8))] * 3, -1)), "holds 3 volumes"),
        (lambda p: write_nifti(p, np.where(synthetic_head() > 100, np.nan, synthetic_head())), "NaN or Inf"),
        (lambda p: write_nifti(p, np.where(synthetic_head() > 100, np.inf, synthetic_head())), "NaN or Inf"),
        (lambda p: write_nifti(p, np.zeros((8, 8, 8), np.float32)), "same value"),
    ],
    ids=["missing", "text", "truncated-gzip", "2d", "single-slice", "4d", "nan", "inf", "constant"],
)
def test_bad_input_names_file_and_problem(tmp_path, make, problem):
    path = make(tmp_path / "bad.nii.gz")
    with pytest.raises(InvalidVolumeError) as caught:
        read_volume(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_folder_is_not_a_volume(tmp_path):
    with pytest.raises(InvalidVolumeError, match="is a folder"):
        read_volume(tmp_path)


def test_grid_mismatch_names_both_files(tmp_path):
    a = read_volume(write_nifti(tmp_path / "t1.nii.gz", synthetic_head()))
    b = read_volume(write_nifti(tmp_path / "t2.nii.gz", synthetic_head((32, 32, 20))))
    shifted = read_volume(write_nifti(tmp_path / "t2s.nii.gz", synthetic_head(), np.diag([1, 1, 1.1, 1.0])))
    for other, problem in ((b, "grid"), (shifted, "affine differs")):
        with pytest.raises(GridMismatchError) as caught:
            check_same_grid(a, other)
        assert problem in str(caught.value) and "t1.nii.gz" in str(caught.value)
    check_same_grid(a, read_volume(tmp_path / "t1.nii.gz"))


def test_write_volume_is_atomic_keeps_header_and_refuses_overwrite(tmp_path):
    affine = np.array([[-1.0, 0, 0, 10], [0, -1, 0, 20], [0, 0, 1, -5], [0, 0, 0, 1]])
    source = write_nifti(tmp_path / "in" / "t1.nii.gz", synthetic_head(), affine)
    reference = read_volume(source)
    out = tmp_path / "out" / "syn.nii.gz"
    write_volume(reference * 2, out, reference=reference)
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, affine)
    np.testing.assert_allclose(written.get_fdata(), synthetic_head() * 2, rtol=1e-6)
    assert sorted(p.name for p in out.parent.iterdir()) == ["syn.nii.gz"], "temporary files left behind"
    with pytest.raises(OutputExistsError, match="exists"):
        write_volume(reference, out, reference=reference)
    write_volume(reference, out, reference=reference, overwrite=True)
    np.testing.assert_allclose(nib.load(str(out)).get_fdata(), synthetic_head(), rtol=1e-6)


def test_write_volume_never_writes_over_input(tmp_path):
    source = write_nifti(tmp_path / "t1.nii.gz", synthetic_head())
    before = source.read_bytes()
    with pytest.raises(OutputExistsError, match="is an input"):
        write_volume(read_volume(source), source, reference=source, overwrite=True)
    assert source.read_bytes() == before


def test_find_volumes_and_stem(tmp_path):
    write_nifti(tmp_path / "a" / "x.nii.gz", synthetic_head())
    write_nifti(tmp_path / "a" / "y.nii", synthetic_head())
    (tmp_path / "a" / "notes.txt").write_text("hi")
    assert [p.name for p in find_volumes([tmp_path / "a"])] == ["x.nii.gz", "y.nii"]
    assert volume_stem("/q/sub-01_T1w.nii.gz") == "sub-01_T1w"
    with pytest.raises(InvalidVolumeError, match="no such file"):
        find_volumes([tmp_path / "nothing"])


@pytest.mark.realdata
@pytest.mark.parametrize("case", PAIRED_CASES)
def test_read_shared_paired_subjects(case):
    t1 = read_volume(PAIRED / case / "t1.nii.gz")
    t2 = read_volume(PAIRED / case / "t2.nii.gz")
    assert tuple(t1.shape) == (1, 240, 240, 155)
    assert spacing_of(t1.affine) == pytest.approx((1.0, 1.0, 1.0), abs=1e-4)
    assert orientation_of(t1.affine) == "LPS"
    check_same_grid(t1, t2)


@pytest.mark.realdata
def test_read_raw_clinical_volume():
    t1 = read_volume(RAW / "TCGA-FG-6692" / "t1.nii.gz")
    t2 = read_volume(RAW / "TCGA-FG-6692" / "t2.nii.gz")
    assert tuple(t1.shape) == (1, 256, 224, 26)
    assert spacing_of(t1.affine) == pytest.approx((0.898, 0.898, 5.5), abs=1e-3)
    assert orientation_of(t1.affine) == "LAS"
    with pytest.raises(GridMismatchError):
        check_same_grid(t1, t2)


def test_sample_is_small_and_readable():
    assert SAMPLE_T1.stat().st_size < 2_000_000
    assert read_volume(SAMPLE_T1).ndim == 4


def test_outputs_get_regular_file_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the finished file must be readable like any other."""
    from monai_t1t2.io import atomic_write_text, write_volume

    umask = os.umask(0o022)
    try:
        volume = write_volume(np.ones((4, 4, 4), np.float32), tmp_path / "out.nii.gz", reference=np.eye(4))
        text = atomic_write_text("{}", tmp_path / "report.json")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(volume.stat().st_mode) == 0o644
    assert stat.S_IMODE(text.stat().st_mode) == 0o644
