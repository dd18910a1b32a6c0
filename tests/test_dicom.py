"""DICOM in and out (monai_t1t2.dicom): series folders as inputs, derived synthetic series as outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import SAMPLE_T1, tiny_translation_bundle, write_nifti

pydicom = pytest.importorskip("pydicom")


def write_scanner_series(volume: np.ndarray, affine: np.ndarray, folder: Path, *, modality: str = "MR",
                         description: str = "T1 MPRAGE", image_type=("ORIGINAL", "PRIMARY", "M"),
                         study_uid: str | None = None, series_uid: str | None = None, shear_mm: float = 0.0,
                         reverse_files: bool = True) -> Path:
    """A scanner-like classic MR (or ``modality``) series of an integer ``(X, Y, Z)`` volume with a RAS
    ``affine``: slice k holds ``volume[:, :, k]`` (rows along Y, columns along X), one file per slice,
    the files named in reverse slice order (a reader must sort by position, not by name).
    ``shear_mm`` shifts each slice along the rows by that much per slice (a gantry tilt)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_direction, column_direction = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    study_uid, series_uid, frame = study_uid or generate_uid(), series_uid or generate_uid(), generate_uid()
    sop_class = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}[modality]
    signed = volume.min() < 0
    count = volume.shape[2]
    for k in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Subject", "T1T2-0001", "19700101", "O"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = study_uid, "20240101", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, 3, description
        ds.Modality, ds.ImageType, ds.Manufacturer = modality, list(image_type), "TestScanner"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator, ds.PatientPosition = frame, "", "HFS"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_direction, *column_direction)]
        position = lps[:3, 3] + lps[:3, 2] * k + row_direction * shear_mm * k
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # between rows, between columns
        ds.SliceThickness = f"{spacing[2]:.6f}"
        if modality == "MR":
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
            ds.EchoTime, ds.RepetitionTime, ds.MagneticFieldStrength = "3.0", "2300", "3"
        pixels = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16 if signed else np.uint16))
        ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=16, generate_instance_uid=False)
        ds.save_as(folder / f"IM{count - k if reverse_files else k + 1:04d}.dcm", enforce_file_format=True)
    return folder


def small_sample_t1() -> tuple[np.ndarray, np.ndarray]:
    """The built-in sample T1 (LPS, 1 mm) at 2 mm: every other voxel, integers as a scanner stores them."""
    image = nib.load(str(SAMPLE_T1))
    array = np.asanyarray(image.dataobj)[::2, ::2, ::2].astype(np.int16)
    affine = image.affine.copy()
    affine[:3, :3] *= 2
    return array, affine


@pytest.fixture
def sample_series(tmp_path):
    """``(series folder, NIfTI of the same volume)`` of the small sample T1."""
    array, affine = small_sample_t1()
    folder = write_scanner_series(array, affine, tmp_path / "dicom" / "T1_MPRAGE")
    return folder, write_nifti(tmp_path / "nifti" / "T1_MPRAGE.nii.gz", array, affine)


def cropped_sample_t1() -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 64 x 40 block of the sample T1's brain at 1 mm (translated in about a second by the tiny model)."""
    image = nib.load(str(SAMPLE_T1))
    corner = np.array([36, 50, 60])
    array = np.asanyarray(image.dataobj)[corner[0]:corner[0] + 64, corner[1]:corner[1] + 64,
                                         corner[2]:corner[2] + 40].astype(np.int16)
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ corner + image.affine[:3, 3]
    return array, affine


def _as_arrays(volume):
    return np.asarray(volume.detach().cpu().numpy()), np.asarray(volume.affine, dtype=np.float64)


# ----------------------------------------------------------------------------- reading
def test_series_reads_as_its_nifti_and_as_monai_reads_it(sample_series):
    from monai.transforms import LoadImage

    from monai_t1t2.io import read_volume

    folder, nifti = sample_series
    series, series_affine = _as_arrays(read_volume(folder))
    reference, reference_affine = _as_arrays(read_volume(nifti))
    assert series.shape == reference.shape == (1, 69, 85, 70)
    assert np.array_equal(series, reference) and np.abs(series_affine - reference_affine).max() < 1e-4
    monai_volume = LoadImage(reader="ITKReader", image_only=True)(str(folder))
    assert np.array_equal(np.asarray(monai_volume), series[0])
    assert np.abs(np.asarray(monai_volume.affine) - series_affine).max() < 1e-4


def test_oblique_left_handed_series_is_the_same_image_as_its_nifti(tmp_path):
    """Slices are stacked along the slice normal (as ITK and MONAI do): a NIfTI whose third axis runs
    against it comes back in the other voxel order, the same image in RAS."""
    from monai_t1t2.geometry import to_ras
    from monai_t1t2.io import read_volume

    array, affine = small_sample_t1()
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine[:3, :3] = rotation @ np.diag([2.0, 2.5, -3.0])
    folder = write_scanner_series(array, affine, tmp_path / "oblique")
    series = to_ras(read_volume(folder))
    reference = to_ras(read_volume(write_nifti(tmp_path / "oblique.nii.gz", array, affine)))
    assert np.array_equal(series.numpy(), reference.numpy())
    assert np.abs(np.asarray(series.affine) - np.asarray(reference.affine)).max() < 1e-3


def _series_case(case: str, tmp_path: Path) -> Path:
    """A small bad input folder of one kind."""
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 500, (16, 16, 8)).astype(np.int16)
    affine = np.diag([-1.0, -1.0, 1.5, 1.0])
    folder = tmp_path / case
    if case == "not-dicom":
        folder.mkdir()
        (folder / "notes.txt").write_text("not an image")
        (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    elif case == "ct":
        write_scanner_series(volume, affine, folder, modality="CT", description="head CT")
    elif case == "localizer":
        write_scanner_series(volume, affine, folder, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    elif case == "one-slice":
        write_scanner_series(volume[:, :, :1], affine, folder, description="scout")
    elif case == "three-planes":
        study, series = generate_uid(), generate_uid()
        for index, axes in enumerate(((0, 1, 2), (0, 2, 1), (2, 1, 0))):
            plane = np.transpose(volume, axes)[:, :, :1]
            plane_affine = np.eye(4)
            plane_affine[:3, :3] = np.eye(3)[:, list(axes)]
            part = write_scanner_series(plane, plane_affine, tmp_path / f"plane{index}", study_uid=study, series_uid=series)
            folder.mkdir(exist_ok=True)
            for file in part.iterdir():
                file.rename(folder / f"{index}_{file.name}")
    elif case == "missing-slices":
        write_scanner_series(volume, affine, folder, reverse_files=False)
        (folder / "IM0004.dcm").unlink()
        (folder / "IM0005.dcm").unlink()
    elif case == "tilt":
        write_scanner_series(volume, affine, folder, shear_mm=0.4)
    elif case == "two-series":
        write_scanner_series(volume, affine, folder / "a", description="T1 axial")
        write_scanner_series(volume, affine, folder / "b", description="T1 repeat")
        for file in [*(folder / "a").iterdir(), *(folder / "b").iterdir()]:
            file.rename(folder / f"{file.parent.name}_{file.name}")
        (folder / "a").rmdir()
        (folder / "b").rmdir()
    return folder


BAD_SERIES = {
    "not-dicom": "holds no volume (*.nii.gz, *.nii) and no DICOM series",
    "ct": "a CT series 'head CT', not MR",
    "localizer": "2D localizer",
    "one-slice": "one 2D image",
    "three-planes": "3 orientations",
    "missing-slices": "misses slices: a gap of 4.5 mm",
    "tilt": "tilted stack",
    "two-series": "holds 2 DICOM series",
}


@pytest.mark.parametrize("case", sorted(BAD_SERIES))
def test_bad_series_folder_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    from monai_t1t2.cli import main

    folder = _series_case(case, tmp_path)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "-o", str(out), "--model", str(tmp_path / "no-model")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"monai-t1t2: error: {folder}: ") and "\n" not in error, error
    assert BAD_SERIES[case] in error, error
    assert not out.exists(), "nothing is written, not even the output folder"
    if case == "two-series":
        assert "--series-uid" in error and "T1 axial" in error and "T1 repeat" in error
    report = tmp_path / "qc.json"
    assert main(["qc", str(folder), "--report", str(report)]) == 2
    assert str(folder) in capsys.readouterr().err and not report.exists()


def test_series_uid_chooses_one_of_several_series(tmp_path):
    from monai_t1t2.dicom import series_uids
    from monai_t1t2.inference.batch import collect_inputs
    from monai_t1t2.io import read_volume

    folder = _series_case("two-series", tmp_path)
    first, second = series_uids(folder)
    assert read_volume(folder, series_uid=second).meta["SeriesInstanceUID"] == second
    assert collect_inputs([folder], series_uid=first) == [folder]
    with pytest.raises(Exception, match="holds no series 1.2.3"):
        read_volume(folder, series_uid="1.2.3")



def test_qc_takes_the_series_uid_of_a_folder_of_several(tmp_path, capsys):
    from monai_t1t2.cli import main
    from monai_t1t2.dicom import series_uids

    folder = _series_case("two-series", tmp_path)
    report = tmp_path / "q.json"
    assert main(["qc", str(folder), "--report", str(report), "--expect", "any"]) == 2  # which series?
    assert "--series-uid" in capsys.readouterr().err
    second = series_uids(folder)[1]
    assert main(["qc", str(folder), "--report", str(report), "--expect", "any", "--series-uid", second]) == 0
    assert json.loads(report.read_text())[0]["error"] is None


def test_a_study_folder_gives_one_input_per_series_folder(tmp_path):
    from monai_t1t2.inference.batch import collect_inputs

    study = tmp_path / "study"
    volume = np.random.default_rng(0).integers(0, 500, (16, 16, 8)).astype(np.int16)
    for name in ("T1_MPRAGE", "T1_repeat"):
        write_scanner_series(volume, np.diag([-1.0, -1.0, 1.5, 1.0]), study / "patient" / name)
    write_nifti(study / "extra_t1.nii.gz", volume)
    found = collect_inputs([study], exclude_dir=tmp_path / "out")
    assert [p.name for p in found] == ["extra_t1.nii.gz", "T1_MPRAGE", "T1_repeat"]


# ----------------------------------------------------------------------------- translating and writing
def test_dicom_series_translates_as_its_nifti_and_dicom_out_is_a_derived_synthetic_series(tmp_path):
    import pydicom
    from monai.transforms import LoadImage

    from monai_t1t2.cli import main
    from monai_t1t2.dicom import read_series_headers
    from monai_t1t2.io import read_volume

    array, affine = cropped_sample_t1()
    folder = write_scanner_series(array, affine, tmp_path / "dicom" / "T1_MPRAGE")
    nifti = write_nifti(tmp_path / "nifti" / "T1_MPRAGE.nii.gz", array, affine)
    bundle = tiny_translation_bundle(tmp_path)
    common = ["--model", str(bundle), "--device", "cpu", "--mask-method", "nonzero", "--qc", "off"]
    assert main(["predict", str(folder), "-o", str(tmp_path / "a"), "--dicom-out", *common]) == 0
    assert main(["predict", str(nifti), "-o", str(tmp_path / "b"), *common]) == 0
    from_dicom = nib.load(tmp_path / "a" / "T1_MPRAGE_synT2.nii.gz")
    from_nifti = nib.load(tmp_path / "b" / "T1_MPRAGE_synT2.nii.gz")
    assert np.array_equal(from_dicom.affine, from_nifti.affine)
    assert np.abs(from_dicom.get_fdata() - from_nifti.get_fdata()).max() == 0

    derived = tmp_path / "a" / "T1_MPRAGE_synT2_dicom"
    files = sorted(derived.iterdir())
    source = read_series_headers(folder)[0].datasets
    assert len(files) == array.shape[2] == len(source)
    headers = [pydicom.dcmread(f) for f in files]
    assert {h.StudyInstanceUID for h in headers} == {source[0].StudyInstanceUID}
    assert {h.PatientID for h in headers} == {source[0].PatientID}
    assert {h.FrameOfReferenceUID for h in headers} == {source[0].FrameOfReferenceUID}
    assert len({h.SeriesInstanceUID for h in headers}) == 1 and headers[0].SeriesInstanceUID != source[0].SeriesInstanceUID
    assert len({h.SOPInstanceUID for h in headers}) == len(files)
    assert not {h.SOPInstanceUID for h in headers} & {s.SOPInstanceUID for s in source}
    first = headers[0]
    assert list(first.ImageType) == ["DERIVED", "SECONDARY"] and first.SyntheticData == "YES"
    assert "SYNTHETIC" in first.SeriesDescription and "SYNTHETIC" in first.ImageComments
    assert any("monai-t1t2" in v for v in first.SoftwareVersions) and "SHA-256" in first.DerivationDescription
    assert first.SourceImageSequence[0].ReferencedSOPInstanceUID in {s.SOPInstanceUID for s in source}
    sidecar = json.loads((tmp_path / "a" / "T1_MPRAGE_synT2.json").read_text())
    assert sidecar["DICOMOutput"]["SeriesInstanceUID"] == first.SeriesInstanceUID
    assert sidecar["Sources"] == [str(folder)] and sidecar["SourceSHA256"]

    # MONAI (ITK / GDCM) and this package read the derived series on the input's grid, with the synthetic values.
    for loaded in (LoadImage(reader="ITKReader", image_only=True)(str(derived)), read_volume(derived)[0]):
        assert np.abs(np.asarray(loaded.affine) - from_dicom.affine).max() < 1e-4
        assert np.abs(np.asarray(loaded) - from_dicom.get_fdata()).max() < 1e-4

    # A rerun finds the series complete (its hash over the folder's files) and skips it.
    assert main(["predict", str(folder), "-o", str(tmp_path / "a"), "--dicom-out", *common]) == 0
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())[0]["status"] == "skipped"


def test_translate_and_qc_take_a_series_folder(tmp_path):
    from monai_t1t2.inference.translation import translate
    from monai_t1t2.qc import run_qc

    array, affine = cropped_sample_t1()
    folder = write_scanner_series(array, affine, tmp_path / "T1")
    synthetic = translate(folder, tiny_translation_bundle(tmp_path), device="cpu", mask_method="nonzero")
    assert tuple(synthetic.shape) == (1, *array.shape)
    assert np.abs(np.asarray(synthetic.affine) - affine).max() < 1e-4
    assert run_qc([folder], tmp_path / "qc.json") == 0
    assert json.loads((tmp_path / "qc.json").read_text())[0]["path"] == str(folder)


def test_dicom_out_needs_dicom_inputs(tmp_path, capsys):
    from monai_t1t2.cli import main

    nifti = write_nifti(tmp_path / "t1.nii.gz", cropped_sample_t1()[0])
    assert main(["predict", str(nifti), "-o", str(tmp_path / "out"), "--dicom-out"]) == 2
    assert "is not a DICOM series folder" in capsys.readouterr().err


def test_a_bad_series_below_a_study_folder_fails_alone(tmp_path, capsys):
    """Series folders found below a named folder are checked when read: a CT series among them is a failed
    row of the manifest, and the MR series beside it is translated (exit 1)."""
    from monai_t1t2.cli import main

    array, affine = cropped_sample_t1()
    write_scanner_series(array, affine, tmp_path / "study" / "T1_MPRAGE")
    write_scanner_series(array[:, :, :8], affine, tmp_path / "study" / "head_CT", modality="CT", description="head CT")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "study"), "-o", str(out), "--model", str(tiny_translation_bundle(tmp_path)),
                 "--device", "cpu", "--mask-method", "nonzero", "--qc", "off"]) == 1
    rows = {Path(r["input"]).name: r for r in json.loads((out / "manifest.json").read_text())}
    assert rows["T1_MPRAGE"]["status"] == "translated" and (out / "T1_MPRAGE_synT2.nii.gz").is_file()
    assert rows["head_CT"]["status"] == "failed" and "not MR" in rows["head_CT"]["error"]
    assert "head_CT: a CT series" in capsys.readouterr().err
