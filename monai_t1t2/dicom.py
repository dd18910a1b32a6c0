"""DICOM in and out: a folder holding one MR series is a T1 volume; a synthetic T2 goes back as a new series.

**Reading** (:func:`read_series`): the folder's files are grouped by ``SeriesInstanceUID`` (a folder
with several series needs ``series_uid``, the error lists them); the series is checked from its
headers alone (:func:`check_series`): MR, not a localizer, one image orientation, at least two
slices, evenly spaced along the slice normal with none missing, no gantry tilt (slices sheared
off the normal). The voxels are stacked as MONAI's DICOM readers stack them, ``(columns, rows,
slices)`` with the slices sorted along the normal (``ImageOrientationPatient`` row x column), and
the affine is the one ITK / MONAI ``LoadImage`` give the same folder (LPS -> RAS): the volume
equals the NIfTI that ``dcm2niix`` makes of it, up to that voxel order. Pixel values pass
through the modality LUT (``RescaleSlope`` / ``RescaleIntercept``). A compressed transfer syntax
pydicom cannot decode here is decoded by ITK (GDCM).

**Writing** (:func:`write_derived_series`): one classic MR Image Storage file per slice of the
source series, on its geometry (the source slices' position, orientation and spacing), in its
study (same patient and study, same frame of reference), with a new series and new instance UIDs,
``ImageType`` ``DERIVED\\SECONDARY``, ``SyntheticData`` ``YES``, a ``SeriesDescription`` and
``ImageComments`` that say the image is synthetic, the package and model versions in
``SoftwareVersions`` and ``ContributingEquipmentSequence``, the model's SHA-256 in
``DerivationDescription``, and each slice's source image in ``SourceImageSequence``. The folder
is written beside its final place and renamed into it (atomic, like every output).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.data import MetaTensor

from monai_t1t2.errors import GridMismatchError, InvalidVolumeError, OutputExistsError

PathLike = str | os.PathLike

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR: an index of files, not an image
#: Largest departure (mm) of a slice from the line through the slice positions along the normal, and of
#: a slice gap from the median one, still read as one regular grid (scanners write 0.001 mm rounding).
POSITION_TOLERANCE_MM = 0.01
#: Largest angle (degrees) between the slice step and the slice normal still read as an untilted stack.
TILT_TOLERANCE_DEGREES = 0.05
DERIVED_FILE_PATTERN = "slice-{:04d}.dcm"


# ----------------------------------------------------------------------------- finding series
def is_dicom_file(path: PathLike) -> bool:
    """True for a file with the DICOM Part 10 preamble (``DICM`` at byte 128); a DICOMDIR counts too."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dicom_files(folder: PathLike) -> list[Path]:
    """The DICOM files directly in ``folder`` (not in its subfolders), sorted by name; a DICOMDIR is left out."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.upper() != "DICOMDIR" and is_dicom_file(p))


def holds_dicom(folder: PathLike) -> bool:
    """True when ``folder`` holds at least one DICOM file directly."""
    folder = Path(folder)
    return folder.is_dir() and any(p.is_file() and p.name.upper() != "DICOMDIR" and is_dicom_file(p)
                                   for p in folder.iterdir())


def series_folders(root: PathLike) -> list[Path]:
    """``root`` and every folder below it that holds DICOM files directly (a scanner export's series folders)."""
    root = Path(root)
    folders = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    return [folder for folder in folders if holds_dicom(folder)]


@dataclass
class Series:
    """One DICOM series of a folder: its UID, description, number and datasets (headers, pixels on demand)."""

    uid: str
    datasets: list

    @property
    def description(self) -> str:
        return str(self.datasets[0].get("SeriesDescription", "") or "no description")

    def summary(self) -> str:
        number = self.datasets[0].get("SeriesNumber", "?")
        return f"{self.uid} (series {number}, {self.description}, {len(self.datasets)} images)"


def read_series_headers(folder: PathLike, pixels: bool = False) -> list[Series]:
    """The series of the DICOM files directly in ``folder``, in series-number order.

    Args:
        pixels: also read the pixel data (else headers only, fast).

    Raises:
        InvalidVolumeError: the folder holds no readable DICOM image.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    files = dicom_files(folder)
    if not files:
        others = sum(p.is_file() for p in folder.iterdir())
        raise InvalidVolumeError(f"{folder}: is a folder with no DICOM file ({others} other files), not a volume; "
                                 "give a NIfTI file or a folder holding one DICOM series")
    groups: dict[str, list] = {}
    for path in files:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=not pixels)
        except (InvalidDicomError, OSError, ValueError, EOFError) as err:
            raise InvalidVolumeError(f"{folder}: {path.name} is not a readable DICOM file ({err})") from None
        if str(dataset.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY:
            continue
        dataset.filename = str(path)
        groups.setdefault(str(dataset.get("SeriesInstanceUID", "")), []).append(dataset)
    if not groups:
        raise InvalidVolumeError(f"{folder}: folder holds no DICOM image (only a DICOMDIR)")

    def number(series: Series) -> float:
        try:
            return float(series.datasets[0].get("SeriesNumber"))
        except (TypeError, ValueError):
            return float("inf")

    return sorted((Series(uid, datasets) for uid, datasets in groups.items()), key=lambda s: (number(s), s.uid))


def select_series(folder: PathLike, series_uid: str | None = None, pixels: bool = False) -> Series:
    """The one series of ``folder``, or the one ``series_uid`` names.

    Raises:
        InvalidVolumeError: no DICOM image; several series and no ``series_uid`` (the message lists them);
            ``series_uid`` is not among them.
    """
    every = read_series_headers(folder, pixels=pixels)
    if series_uid is not None:
        chosen = [series for series in every if series.uid == series_uid]
        if not chosen:
            raise InvalidVolumeError(f"{folder}: holds no series {series_uid}; it holds "
                                     + "; ".join(series.summary() for series in every))
        return chosen[0]
    if len(every) > 1:
        raise InvalidVolumeError(f"{folder}: holds {len(every)} DICOM series: "
                                 + "; ".join(series.summary() for series in every)
                                 + "; choose one with --series-uid UID (or give each series its own folder)")
    return every[0]


def series_uids(folder: PathLike) -> list[str]:
    """The SeriesInstanceUIDs of the DICOM files directly in ``folder``."""
    return [series.uid for series in read_series_headers(folder)]


def folder_sha256(folder: PathLike) -> str:
    """One SHA-256 of a series folder's DICOM files (names and contents): a changed file, added or removed
    slice changes it (the resume check of ``predict``)."""
    from monai_t1t2.io import file_sha256

    digest = hashlib.sha256()
    for path in dicom_files(folder):
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- geometry and checks
def _float_list(dataset, keyword: str, count: int, folder: Path) -> np.ndarray:
    value = dataset.get(keyword)
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != (count,) or not np.isfinite(array).all():
        name = Path(str(getattr(dataset, "filename", "") or "")).name
        raise InvalidVolumeError(f"{folder}: {name} has no valid {keyword}; the slice geometry is unknown")
    return array


def _has_value(dataset, keyword: str) -> bool:
    value = dataset.get(keyword)
    return value is not None and value != ""


def check_series(folder: PathLike, series: Series) -> tuple[list, np.ndarray]:
    """Check a series from its headers and sort its slices; return them and the LPS affine.

    Returns:
        The datasets in slice order (along ``ImageOrientationPatient`` row x column) and the 4x4
        affine mapping ``(column, row, slice)`` indices to LPS mm.

    Raises:
        InvalidVolumeError: not MR; a localizer, one 2D image or several orientations; multi-frame;
            gantry tilt; several images at one position; slices missing or unevenly spaced; images of
            several sizes or pixel spacings. The message names the folder.
    """
    folder = Path(folder)
    datasets = series.datasets
    first = datasets[0]
    what = f"series {series.description!r}"
    modality = str(first.get("Modality", "") or "no Modality")
    if modality != "MR":
        raise InvalidVolumeError(f"{folder}: a {modality} {what}, not MR; give a T1-weighted MR series")
    if any("LOCALIZER" in [str(v).upper() for v in (d.get("ImageType") or [])] for d in datasets):
        raise InvalidVolumeError(f"{folder}: {what} is a 2D localizer (ImageType LOCALIZER), not a 3D T1 volume")
    if any(int(d.get("NumberOfFrames", 1) or 1) > 1 for d in datasets):
        raise InvalidVolumeError(f"{folder}: {what} is enhanced multi-frame DICOM, which is not read; "
                                 "convert it to NIfTI first (e.g. dcm2niix)")
    if len(datasets) < 2:
        raise InvalidVolumeError(f"{folder}: {what} holds one 2D image; a 3D T1 volume needs a stack of slices")
    if any(_has_value(d, "GantryDetectorTilt") and abs(float(d.GantryDetectorTilt)) > TILT_TOLERANCE_DEGREES
           for d in datasets):
        raise InvalidVolumeError(f"{folder}: {what} was acquired with a gantry tilt of {float(first.GantryDetectorTilt):g} "
                                 "degrees; tilted stacks are not read (resample it onto an untilted grid first, "
                                 "e.g. dcm2niix)")
    orientations = np.stack([_float_list(d, "ImageOrientationPatient", 6, folder) for d in datasets])
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        count = len({tuple(np.round(o, 3)) for o in orientations})
        raise InvalidVolumeError(f"{folder}: {what} has images in {count} orientations (a 2D localizer?); "
                                 "a 3D T1 volume is one stack of parallel slices")
    shapes = {(int(d.get("Rows", 0) or 0), int(d.get("Columns", 0) or 0)) for d in datasets}
    spacings = {tuple(_float_list(d, "PixelSpacing", 2, folder)) for d in datasets}
    if len(shapes) > 1 or len(spacings) > 1:
        raise InvalidVolumeError(f"{folder}: {what} mixes images of {len(shapes)} sizes and {len(spacings)} pixel "
                                 "spacings; it is not one volume")
    row_direction, column_direction = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row_direction, column_direction)
    positions = np.stack([_float_list(d, "ImagePositionPatient", 3, folder) for d in datasets])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    datasets = [datasets[i] for i in order]
    steps = np.diff(along)
    if (steps < POSITION_TOLERANCE_MM).any():
        raise InvalidVolumeError(f"{folder}: {what} has several images at one slice position (multi-echo, 4D or "
                                 "repeated acquisitions in one series); split it into one series per volume")
    step = float(np.median(steps))
    if np.abs(steps - step).max() > max(POSITION_TOLERANCE_MM, 0.01 * step):
        widest = int(np.argmax(steps))
        missing = round(float(steps[widest]) / step) - 1
        if missing >= 1 and abs(steps[widest] - (missing + 1) * step) <= max(POSITION_TOLERANCE_MM, 0.01 * step):
            raise InvalidVolumeError(
                f"{folder}: {what} misses slices: a gap of {steps[widest]:.3g} mm after slice {widest + 1} of "
                f"{len(datasets)} where the others are {step:.3g} mm apart (about {missing} missing); "
                "export the whole series")
        raise InvalidVolumeError(f"{folder}: {what} has unevenly spaced slices ({steps.min():.3g} to {steps.max():.3g} mm "
                                 "apart); it is not one regular volume")
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(in_plane[-1]), along[-1] - along[0])))
    sheared = np.linalg.norm(in_plane - np.outer((along - along[0]) / (along[-1] - along[0]), in_plane[-1]), axis=1)
    if abs(tilt) > TILT_TOLERANCE_DEGREES or sheared.max() > POSITION_TOLERANCE_MM:
        raise InvalidVolumeError(f"{folder}: {what} is a tilted stack (the slices are sheared {abs(tilt):.2g} degrees off "
                                 "their normal, a gantry tilt); tilted stacks are not read (resample it onto an untilted "
                                 "grid first, e.g. dcm2niix)")
    row_spacing, column_spacing = sorted(spacings)[0]  # PixelSpacing: between rows, then between columns
    affine = np.eye(4)
    affine[:3, 0] = row_direction * column_spacing
    affine[:3, 1] = column_direction * row_spacing
    affine[:3, 2] = normal * step
    affine[:3, 3] = positions[0]
    return datasets, affine


def _slice_pixels(dataset, folder: Path) -> np.ndarray:
    """One slice's values after the modality LUT, ``(rows, columns)`` float64; ITK decodes what pydicom cannot."""
    from pydicom.pixels import apply_modality_lut

    try:
        return np.asarray(apply_modality_lut(dataset.pixel_array, dataset), dtype=np.float64)
    except (RuntimeError, NotImplementedError, ValueError, AttributeError):
        pass
    try:
        import itk

        image = itk.imread(str(dataset.filename))  # GDCM applies the rescale slope and intercept itself
        return np.asarray(itk.array_from_image(image), dtype=np.float64).reshape(int(dataset.Rows), int(dataset.Columns))
    except Exception as err:  # noqa: BLE001 -- any decoder failure is the same user-facing problem
        syntax = dataset.file_meta.get("TransferSyntaxUID", "?") if hasattr(dataset, "file_meta") else "?"
        raise InvalidVolumeError(f"{folder}: cannot decode the pixels of {Path(dataset.filename).name} (transfer syntax "
                                 f"{getattr(syntax, 'name', syntax)}: {type(err).__name__})") from None


def read_series(folder: PathLike, series_uid: str | None = None) -> MetaTensor:
    """Read one DICOM MR series folder as a T1 volume.

    Args:
        folder: a folder whose DICOM files (directly in it) hold the series.
        series_uid: the series to read where the folder holds several.

    Returns:
        float32 ``MetaTensor`` ``(1, X, Y, Z)``: X the columns, Y the rows, Z the slices in order along
        the slice normal; ``affine`` RAS mm; ``meta["filename_or_obj"]`` the folder and
        ``meta["SeriesInstanceUID"]`` the series.

    Raises:
        InvalidVolumeError: see :func:`check_series` and :func:`select_series`.

    Example:
        >>> t1 = read_series("exports/T1_MPRAGE")  # doctest: +SKIP
        >>> t1.shape  # doctest: +SKIP
        torch.Size([1, 256, 256, 176])
    """
    from monai_t1t2.io import validate_array

    folder = Path(folder)
    series = select_series(folder, series_uid, pixels=True)
    datasets, lps_affine = check_series(folder, series)
    array = np.stack([_slice_pixels(d, folder).T for d in datasets], axis=-1)
    array = validate_array(array, folder).astype(np.float32)
    affine = torch.as_tensor(LPS_TO_RAS @ lps_affine, dtype=torch.float64)
    meta = {"filename_or_obj": str(folder), "original_affine": affine.clone(), "spatial_shape": np.asarray(array.shape),
            "original_channel_dim": float("nan"), "SeriesInstanceUID": series.uid}
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=affine, meta=meta)


def validate_series_folder(folder: PathLike, series_uid: str | None = None) -> str:
    """Check a series folder from its headers alone (before any work); return the series UID.

    Raises:
        InvalidVolumeError: see :func:`check_series` and :func:`select_series`.
    """
    series = select_series(folder, series_uid)
    check_series(folder, series)
    return series.uid


# ----------------------------------------------------------------------------- writing a derived series
#: Attributes copied from each source slice: patient, study, frame of reference, the slice's plane, the
#: equipment that acquired the source, and the acquisition type (the MR Image module needs it).
COPIED = ("SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
          "PatientAge", "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID",
          "PositionReferenceIndicator", "PatientPosition", "BodyPartExamined", "Manufacturer", "InstitutionName",
          "StationName", "ManufacturerModelName", "MagneticFieldStrength", "MRAcquisitionType",
          "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
          "SpacingBetweenSlices", "SliceLocation")


def _ds(value: float) -> str:
    """A decimal string (DS, 16 characters at most) for ``value``."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _stored_values(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``volume`` as unsigned 16-bit values with the slope and intercept that bring them back (within slope / 2)."""
    low, high = min(0.0, float(volume.min())), float(volume.max())
    slope = float(_ds((high - low) / 65535 * (1 + 1e-6))) if high > low else 1.0
    intercept = float(_ds(low))
    stored = np.clip(np.rint((volume - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, intercept


def _window(volume: np.ndarray) -> tuple[float, float]:
    """Window centre and width over the 1st-99th percentiles of the nonzero voxels (a viewer's first display)."""
    inside = volume[volume != 0]
    low, high = np.percentile(inside, [1, 99]) if inside.size else (0.0, 1.0)
    return (low + high) / 2, max(float(high - low), 1e-6)


def write_derived_series(
    volume: MetaTensor,
    source: PathLike,
    target: PathLike,
    series_uid: str | None = None,
    new_series_uid: str | None = None,
    description: str = "synthetic T2w",
    comments: str = "SYNTHETIC image computed from the T1-weighted series; not an acquisition",
    software_versions: Sequence[str] = (),
    derivation: str = "",
    overwrite: bool = False,
) -> Path:
    """Write ``volume`` (on the grid of the series in ``source``) as a new DICOM series in that series' study.

    Args:
        volume: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` ``MetaTensor`` on the source series' grid (what
            :func:`read_series` gave, e.g. a synthetic T2 of it).
        source: the source series folder; ``series_uid`` where it holds several series.
        new_series_uid: the new series' ``SeriesInstanceUID`` (default: a new one).
        target: the folder to write: one file per slice, ``slice-0001.dcm`` ... in the source's slice order.
        description: ``SeriesDescription`` (64 characters at most); the source's is appended when it fits.
        comments: ``ImageComments``.
        software_versions: ``SoftwareVersions`` (package, model); each 64 characters at most.
        derivation: ``DerivationDescription`` (e.g. the model's SHA-256).
        overwrite: replace an existing ``target`` folder (only one that holds nothing but DICOM files).

    Returns:
        ``target``.

    Raises:
        GridMismatchError: ``volume`` is not on the source series' grid.
        OutputExistsError: ``target`` exists (without ``overwrite``), is a file, or holds other files.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    source, target = Path(source), Path(target)
    check_series_target(target, overwrite)
    series = select_series(source, series_uid)
    datasets, lps_affine = check_series(source, series)
    array = np.asarray(volume.detach().cpu() if isinstance(volume, torch.Tensor) else volume, dtype=np.float64)
    array = array[0] if array.ndim == 4 else array
    expected = (int(datasets[0].Columns), int(datasets[0].Rows), len(datasets))
    affine = np.asarray(getattr(volume, "affine", LPS_TO_RAS @ lps_affine), dtype=np.float64)
    if array.shape != expected or np.abs(affine - LPS_TO_RAS @ lps_affine).max() > 1e-3:
        raise GridMismatchError(f"{source}: the volume to write ({'x'.join(map(str, array.shape))}) is not on the grid of "
                                f"series {series.uid} ({'x'.join(map(str, expected))}); write it as NIfTI instead")
    stored, slope, intercept = _stored_values(array)
    centre, width = _window(array)
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    new_series = new_series_uid or generate_uid()
    source_description = str(datasets[0].get("SeriesDescription", "") or "")
    series_description = f"{description} from {source_description}" if source_description else description
    series_description = series_description if len(series_description) <= 64 else description[:64]
    try:
        series_number = int(datasets[0].get("SeriesNumber")) + 1000
    except (TypeError, ValueError):
        series_number = 1000
    contributing = Dataset()
    contributing.Manufacturer = "monai-t1t2"
    contributing.SoftwareVersions = [str(v)[:64] for v in software_versions] or "unknown"
    contributing.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    contributing.ContributionDescription = "synthetic T2-weighted image translated from a T1-weighted series"
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = "109103", "DCM", "Modifying Equipment"
    contributing.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for index, (source_slice, pixels) in enumerate(zip(datasets, np.moveaxis(stored, -1, 0))):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            image = Dataset()
            image.file_meta = meta
            for keyword in COPIED:
                if keyword in source_slice:
                    setattr(image, keyword, source_slice.data_element(keyword).value)
            image.SOPClassUID, image.SOPInstanceUID = MR_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
            image.Modality = "MR"
            image.ImageType = ["DERIVED", "SECONDARY"]
            image.SyntheticData = "YES"
            image.SeriesInstanceUID, image.SeriesNumber = new_series, series_number
            image.SeriesDescription = series_description
            image.SeriesDate = image.ContentDate = image.InstanceCreationDate = date
            image.SeriesTime = image.ContentTime = image.InstanceCreationTime = time
            image.InstanceNumber = index + 1
            image.ImageComments = comments[:10240]
            image.DerivationDescription = derivation[:1024]
            image.SoftwareVersions = contributing.SoftwareVersions
            image.ContributingEquipmentSequence = DicomSequence([contributing])
            if "SOPClassUID" in source_slice and "SOPInstanceUID" in source_slice:
                reference = Dataset()
                reference.ReferencedSOPClassUID = source_slice.SOPClassUID
                reference.ReferencedSOPInstanceUID = source_slice.SOPInstanceUID
                image.SourceImageSequence = DicomSequence([reference])
            # The MR Image module's acquisition attributes: a synthetic image had no sequence of its own.
            image.ScanningSequence, image.SequenceVariant, image.ScanOptions = "RM", "NONE", ""
            image.EchoTime = image.RepetitionTime = image.EchoTrainLength = None
            image.BurnedInAnnotation = "NO"
            image.set_pixel_data(np.ascontiguousarray(pixels.T), photometric_interpretation="MONOCHROME2",
                                 bits_stored=16, generate_instance_uid=False)
            image.RescaleIntercept, image.RescaleSlope, image.RescaleType = _ds(intercept), _ds(slope), "US"
            image.WindowCenter, image.WindowWidth = _ds(centre), _ds(width)
            image.save_as(temporary / DERIVED_FILE_PATTERN.format(index + 1), enforce_file_format=True)
        _replace_folder(temporary, target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
    return target


def check_series_target(target: PathLike, overwrite: bool) -> Path:
    """A DICOM output folder can be written at ``target``: absent, or (with ``overwrite``) a folder of DICOM files only.

    Raises:
        OutputExistsError: ``target`` is a file; exists without ``overwrite``; holds other files than DICOM ones.
    """
    target = Path(target)
    if target.is_file():
        raise OutputExistsError(f"{target}: is a file; a DICOM series is written as a folder")
    if target.exists():
        if not overwrite:
            raise OutputExistsError(f"{target}: exists; pass --overwrite to replace it")
        others = [p.name for p in target.iterdir() if not (p.is_file() and is_dicom_file(p))]
        if others:
            raise OutputExistsError(f"{target}: holds other files than DICOM ones ({', '.join(sorted(others)[:3])}); "
                                    "refusing to replace it")
    return target


def _replace_folder(written: Path, target: Path) -> None:
    """Rename ``written`` into place; an older ``target`` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(written, target)
    if old is not None:
        shutil.rmtree(old)
