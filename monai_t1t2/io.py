"""Reading, validating and atomically writing volumes; finding subjects and datalists.

All volumes enter the package through :func:`read_volume`, which returns a channel-first
``MetaTensor`` of shape ``(1, X, Y, Z)`` (float32) whose ``affine`` maps voxel indices to
RAS world coordinates in mm (nibabel / MONAI convention), and which raises
:class:`~monai_t1t2.errors.InvalidVolumeError` naming the file and the problem.
All outputs leave through :func:`write_volume`: temporary file in the target folder,
then an atomic rename; an existing file is never replaced unless asked, an input never.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_t1t2.errors import (DatasetError, GridMismatchError, InvalidVolumeError, OutputExistsError, OutputLocationError,
                               T1T2Error)
from monai_t1t2.geometry import GRID_AFFINE_TOLERANCE_MM, same_grid

PathLike = str | os.PathLike

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".mgz", ".mgh")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES

CONTRASTS = ("t1", "t2")
OPTIONAL_KEYS = ("tumor_seg",)
#: A subject: ``{"case": str, "t1": str, "t2": str, "tumor_seg": str | None}`` (paths as strings,
#: as MONAI's ``LoadImaged`` and ``CacheDataset`` take them).
Subject = dict

def volume_stem(path: PathLike) -> str:
    """File name without its volume suffix: ``/a/sub-01_T1w.nii.gz`` -> ``sub-01_T1w``; a (DICOM series)
    folder's name as it is."""
    name = Path(path).name
    if Path(path).is_dir():
        return name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_volume_file(path: PathLike) -> bool:
    """True for a file whose name ends in a suffix this package reads."""
    return Path(path).is_file() and Path(path).name.lower().endswith(VOLUME_SUFFIXES)


def volumes_in_folder(folder: Path) -> list[Path]:
    """The volumes of a folder: the folder itself when it holds a DICOM series, else its volume files and
    DICOM series folders, searched recursively, sorted."""
    from monai_t1t2.dicom import holds_dicom, series_folders

    if holds_dicom(folder):
        return [folder]
    return sorted([p for p in folder.rglob("*") if is_volume_file(p)] + series_folders(folder))


def find_volumes(paths: Iterable[PathLike]) -> list[Path]:
    """Expand files and folders (searched recursively for volumes and DICOM series folders) into a sorted list.

    Raises:
        InvalidVolumeError: a path does not exist, or a folder holds no volume.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            in_folder = volumes_in_folder(path)
            if not in_folder:
                raise InvalidVolumeError(f"{path}: folder holds no volume ({', '.join(VOLUME_SUFFIXES)}) "
                                         "and no DICOM series")
            found.extend(in_folder)
        elif path.exists():
            found.append(path)
        else:
            raise InvalidVolumeError(f"{path}: no such file or folder")
    return found


def _load_array(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read voxels and the RAS affine of a file; any reader failure becomes InvalidVolumeError."""
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            image = nib.load(str(path))
            return np.asanyarray(image.dataobj), np.asarray(image.affine, dtype=np.float64)
        from monai.data import ITKReader

        reader = ITKReader(affine_lps_to_ras=True)
        array, meta = reader.get_data(reader.read(str(path)))
        return np.asarray(array), np.asarray(meta["affine"], dtype=np.float64)
    except (OSError, EOFError, ValueError, RuntimeError, nib.filebasedimages.ImageFileError, gzip.BadGzipFile) as err:
        raise InvalidVolumeError(f"{path}: not a readable volume ({type(err).__name__}: {err})") from None


def validate_array(array: np.ndarray, path: PathLike) -> np.ndarray:
    """Check that ``array`` is one finite, non-constant 3D volume; return it as ``(X, Y, Z)``.

    A trailing singleton dimension (``(X, Y, Z, 1)``, as some tools write) is dropped.

    Raises:
        InvalidVolumeError: 2D data, 4D data with several volumes, NaN/Inf voxels, or a
            constant volume; the message names ``path``.
    """
    shape = "x".join(map(str, array.shape))
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim > 3:
        raise InvalidVolumeError(
            f"{path}: {array.ndim}D data of shape {shape} holds {int(np.prod(array.shape[3:]))} volumes; "
            "give one 3D volume (split the series first)"
        )
    if array.ndim < 3 or min(array.shape) < 2:
        raise InvalidVolumeError(f"{path}: 2D data of shape {shape}; a 3D volume is needed")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InvalidVolumeError(f"{path}: voxel type {array.dtype} is not a real number")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - finite.sum())
        raise InvalidVolumeError(f"{path}: {bad} voxels are NaN or Inf")
    if array.min() == array.max():
        raise InvalidVolumeError(f"{path}: all voxels have the same value ({array.flat[0]}); the volume is empty")
    return array


def read_volume(path: PathLike, series_uid: str | None = None) -> MetaTensor:
    """Read and validate one 3D volume.

    Args:
        path: NIfTI (``.nii``, ``.nii.gz``), another ITK format (``.nrrd``, ``.mha``, ...), or a folder
            holding a DICOM MR series (:func:`monai_t1t2.dicom.read_series`).
        series_uid: the DICOM series to read where the folder holds several.

    Returns:
        ``MetaTensor`` of shape ``(1, X, Y, Z)``, float32, with ``affine`` (RAS, mm) and
        ``meta["filename_or_obj"]`` set to the path.

    Raises:
        InvalidVolumeError: the file is missing, unreadable or not a valid volume.

    Example:
        >>> t1 = read_volume("tests/data/sample_t1.nii.gz")
        >>> t1.shape[0], t1.ndim
        (1, 4)
    """
    path = Path(path)
    if not path.exists():
        raise InvalidVolumeError(f"{path}: no such file")
    if path.is_dir():
        from monai_t1t2.dicom import read_series

        return read_series(path, series_uid)
    array, affine = _load_array(path)
    array = validate_array(array, path).astype(np.float32, copy=False)
    affine_tensor = torch.as_tensor(affine, dtype=torch.float64)
    meta = {
        "filename_or_obj": str(path),
        "original_affine": affine_tensor.clone(),
        "spatial_shape": np.asarray(array.shape),
        "original_channel_dim": float("nan"),
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=affine_tensor, meta=meta)


def spacing_of(affine: np.ndarray | torch.Tensor) -> tuple[float, float, float]:
    """Voxel size in mm along the three voxel axes of ``affine`` (4x4)."""
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.linalg.norm(matrix, axis=0))


def orientation_of(affine: np.ndarray | torch.Tensor) -> str:
    """Orientation code of ``affine``, e.g. ``"LPS"`` (nibabel's ``aff2axcodes``)."""
    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def check_same_grid(
    first: MetaTensor, second: MetaTensor, tolerance_mm: float = GRID_AFFINE_TOLERANCE_MM
) -> None:
    """Raise :class:`GridMismatchError` unless two volumes share shape and affine.

    Args:
        first, second: volumes from :func:`read_volume` (``(C, X, Y, Z)``).
        tolerance_mm: largest allowed difference of any affine entry.
    """
    if same_grid(first.shape[1:], first.affine, second.shape[1:], second.affine, tolerance_mm):
        return
    name_a = first.meta.get("filename_or_obj", "first volume")
    name_b = second.meta.get("filename_or_obj", "second volume")
    if tuple(first.shape[1:]) != tuple(second.shape[1:]):
        raise GridMismatchError(
            f"{name_b}: grid {tuple(second.shape[1:])} differs from {name_a} {tuple(first.shape[1:])}; "
            "resample and register the pair first (monai-t1t2 prepare-pairs)"
        )
    difference = float(np.abs(np.asarray(first.affine) - np.asarray(second.affine)).max())
    if difference > tolerance_mm:
        raise GridMismatchError(
            f"{name_b}: affine differs from {name_a} by up to {difference:.3g} mm; the two are not on one grid "
            "(resample and register the pair first: monai-t1t2 prepare-pairs)"
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output_path(path: PathLike, inputs: Iterable[PathLike] = (), overwrite: bool = False) -> Path:
    """Check, before any work, that a file can be written at ``path``; the one rule of every command.

    Refused (``OutputExistsError``): ``path`` resolves to one of ``inputs`` (the same file, a symlink
    or a hard link to it), with or without ``overwrite``; ``path`` exists and ``overwrite`` is False;
    ``path`` is a folder. Refused (``OutputLocationError``): its folder cannot be created or written
    (a file in the way, a read-only or immutable folder, a pseudo file system): a file is created
    there and removed again to make sure.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    for given in inputs:
        given = Path(given)
        if _same_file(path, given) or path.resolve() == given.resolve():
            raise OutputExistsError(f"{path}: is an input ({given}); refusing to write over it")
    if path.is_dir():
        raise OutputExistsError(f"{path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass --overwrite to replace it")
    check_output_dir(path.parent)
    return path


def check_output_dir(folder: PathLike) -> Path:
    """Create ``folder`` if needed and make sure files can be written in it (``OutputLocationError`` if not)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputLocationError(f"{folder}: is a file, not a folder; choose another output location")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".monai-t1t2-write-check.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise OutputLocationError(f"{folder}: cannot write here ({err.strerror or err})") from None
    return folder


def read_datalist(path: PathLike, key: str) -> list:
    """The ``key`` list of a MONAI datalist JSON (``load_decathlon_datalist``; paths made absolute).

    Raises:
        DatasetError: the file is missing or has no such list.
    """
    import json

    from monai.data import load_decathlon_datalist

    from monai_t1t2.errors import DatasetError

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: datalist file does not exist")
    try:
        return load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=key)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not a datalist with a '{key}' list ({err})") from None


def validate_affine(affine, name: str) -> np.ndarray:
    """A 4x4 voxel-to-world affine that is finite and invertible, as float64; else ``InvalidVolumeError``."""
    matrix = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise InvalidVolumeError(f"{name}: affine must be 4x4, got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InvalidVolumeError(f"{name}: the affine holds NaN or Inf; the voxel grid is undefined")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-6:
        raise InvalidVolumeError(f"{name}: the affine is singular (voxel size 0 along some axis); "
                                 "the voxel grid is undefined")
    return matrix


def write_volume(
    volume: np.ndarray | torch.Tensor,
    path: PathLike,
    reference: PathLike | MetaTensor | np.ndarray | None = None,
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
    dtype: np.dtype | type = np.float32,
    descrip: str | None = None,
    intent_name: str | None = None,
) -> Path:
    """Write ``volume`` as NIfTI atomically, on the grid of ``reference``.

    Args:
        volume: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` array.
        path: output file (``.nii`` or ``.nii.gz``).
        reference: the input the output belongs to: a NIfTI path (its affine *and* header are
            kept), a ``MetaTensor`` (its affine; its header too when it was read from NIfTI),
            or a 4x4 affine. ``None`` uses ``volume.affine`` when it is a ``MetaTensor``.
        overwrite: replace an existing output. Inputs are never replaced.
        inputs: paths that must never be written over (the user's inputs).
        dtype: voxel type on disk.
        descrip, intent_name: NIfTI header fields (80 and 16 bytes at most), e.g. to mark a synthetic image.

    Returns:
        The written path.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False, or ``path`` is an input.
    """
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise OutputExistsError(f"{path}: outputs are written as NIfTI; use a .nii.gz or .nii name")
    protected = [Path(p) for p in inputs]
    reference_path = None
    if isinstance(reference, (str, os.PathLike)):
        reference_path = Path(reference)
    elif isinstance(reference, MetaTensor):
        source = reference.meta.get("filename_or_obj")
        if isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(NIFTI_SUFFIXES):
            reference_path = Path(source)
    if reference_path is not None:
        protected.append(reference_path)
    for input_path in protected:
        if _same_file(path, input_path) or path.resolve() == input_path.resolve():
            raise OutputExistsError(f"{path}: is an input; refusing to write over it")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass overwrite=True (--overwrite) to replace it")

    array = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    header = None
    if reference_path is not None and reference_path.exists() and reference_path.name.lower().endswith(NIFTI_SUFFIXES):
        source_image = nib.load(str(reference_path))
        affine, header = source_image.affine, source_image.header.copy()
    elif isinstance(reference, MetaTensor):
        affine = np.asarray(reference.affine, dtype=np.float64)
    elif reference is not None and not isinstance(reference, (str, os.PathLike)):
        affine = np.asarray(reference, dtype=np.float64)
    elif isinstance(volume, MetaTensor):
        affine = np.asarray(volume.affine, dtype=np.float64)
    else:
        raise ValueError("write_volume needs a reference grid: a NIfTI path, a MetaTensor or an affine")
    image = nib.Nifti1Image(array.astype(dtype, copy=False), affine, header=header)
    image.set_data_dtype(dtype)
    if header is not None:
        # Keep the reference's intensity-free header fields; our voxels are stored unscaled.
        image.header.set_slope_inter(1.0, 0.0)
    if descrip is not None:
        image.header["descrip"] = descrip.encode("ascii", "replace")[:79]
    if intent_name is not None:
        image.header.set_intent("estimate", (), name=intent_name[:15])
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    _as_regular_file_mode(temporary)
    try:
        nib.save(image, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def _as_regular_file_mode(path: PathLike) -> None:
    """Give a ``mkstemp`` file (0600) the mode a plain ``open()`` would: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_bytes(data: bytes, path: PathLike, overwrite: bool = True) -> Path:
    """Write bytes (a PNG, a JSON report) atomically: temporary file beside ``path``, then rename."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    _as_regular_file_mode(temporary)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def _is_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in decoded)


def read_torch_file(path: PathLike, weights_only: bool = True):
    """``torch.load`` of a model file on the CPU; a file that is not one (text, empty, truncated, a pickle
    of other objects) is one :class:`T1T2Error` line naming it, never torch's advice to unpickle it unsafely."""
    import pickle
    import zipfile

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. 'Detected pickle protocol 4': noise before the error below
            return torch.load(str(path), map_location="cpu", weights_only=weights_only)
    except OSError as err:
        raise T1T2Error(f"{path}: cannot read ({err.strerror or err})") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, IndexError, KeyError, TypeError,
            AttributeError, ImportError, UnicodeDecodeError, zipfile.BadZipFile) as err:
        text = str(err)
        try:
            with open(path, "rb") as handle:
                head = handle.read(512)
        except OSError:
            head = b"?"
        if not head:
            reason = "the file is empty"
        elif head.startswith(b"PK") and not isinstance(err, pickle.UnpicklingError):
            reason = "a truncated or damaged zip archive"
        elif _is_text(head):
            reason = "it is text, not what torch.save writes"
        elif "WeightsUnpickler error:" in text:  # torch's weights-only refusal: keep its reason, not its advice
            detail = next((line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()
                           if line.strip()), "")
            reason = f"it holds objects other than tensors: {detail}" if detail else "it holds objects other than tensors"
        elif isinstance(err, EOFError):
            reason = "it ends early (truncated)"
        else:
            first = text.strip().splitlines()[0][:120] if text.strip() else ""
            reason = f"{type(err).__name__}: {first}" if first and "weights_only" not in first else type(err).__name__
        raise T1T2Error(f"{path}: not a PyTorch weight file ({reason})") from None


def save_torch(obj, path: PathLike, overwrite: bool = True) -> Path:
    """``torch.save`` to a file, atomically (:func:`atomic_write_bytes`)."""
    import io as _io

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(buffer.getvalue(), path, overwrite=overwrite)


def atomic_write_text(text: str, path: PathLike, overwrite: bool = True) -> Path:
    """Write text atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(text.encode("utf-8"), path, overwrite=overwrite)




def _find_contrast(case_dir: Path, key: str) -> Path | None:
    """The one file ``<key>.<volume suffix>`` in ``case_dir``; error if several."""
    matches = [p for p in sorted(case_dir.iterdir()) if p.is_file() and volume_stem(p) == key
               and p.name.lower().endswith(VOLUME_SUFFIXES)]
    if len(matches) > 1:
        raise DatasetError(f"{case_dir}: several files for '{key}': {', '.join(p.name for p in matches)}")
    return matches[0] if matches else None


def find_subjects(root: str | Path, require_t2: bool = True) -> list[Subject]:
    """Find subjects laid out as ``root/<case>/t1.nii.gz``, ``t2.nii.gz`` [, ``tumor_seg.nii.gz``].

    Args:
        root: the data folder (like ``../shared/data/paired``).
        require_t2: skip nothing silently: a case folder with a T1 but no T2 is an error when True.

    Returns:
        Subjects sorted by case name.

    Raises:
        DatasetError: ``root`` is missing, or holds no subject, or a case lacks a contrast.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder does not exist")
    subjects = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        t1 = _find_contrast(case_dir, "t1")
        if t1 is None:
            continue
        t2 = _find_contrast(case_dir, "t2")
        if t2 is None and require_t2:
            raise DatasetError(f"{case_dir}: has {t1.name} but no t2.nii.gz")
        seg = _find_contrast(case_dir, "tumor_seg")
        subjects.append({
            "case": case_dir.name,
            "t1": str(t1),
            "t2": str(t2) if t2 else None,
            "tumor_seg": str(seg) if seg else None,
        })
    if not subjects:
        raise DatasetError(f"{root}: no subjects found (expected <case>/t1.nii.gz and <case>/t2.nii.gz)")
    return subjects


def load_datalist(path: str | Path, key: str = "training") -> list[Subject]:
    """Read subjects from a MONAI datalist JSON (``load_decathlon_datalist`` format).

    Each item needs ``t1`` and ``t2``; ``case``, ``tumor_seg`` and ``source`` (the acquisition site,
    see :func:`case_source`) are optional (``case`` defaults to the T1 file's parent folder name).
    Relative paths are relative to the JSON.
    """
    from monai_t1t2.io import read_datalist

    path = Path(path)
    items = read_datalist(path, key)
    subjects = []
    for index, item in enumerate(items):
        missing = [k for k in CONTRASTS if not item.get(k)]
        if missing:
            raise DatasetError(f"{path}: item {index} of '{key}' has no {', '.join(missing)}")
        subjects.append({
            "case": str(item.get("case") or Path(item["t1"]).parent.name),
            "t1": str(item["t1"]),
            "t2": str(item["t2"]),
            "tumor_seg": str(item["tumor_seg"]) if item.get("tumor_seg") else None,
            **({"source": str(item["source"])} if item.get("source") else {}),
        })
    if not subjects:
        raise DatasetError(f"{path}: the '{key}' list is empty")
    return subjects


def case_source(subject: Subject | str) -> str:
    """The acquisition source of a subject: its datalist ``source`` when given, else what a BraTS-style
    case name says (``Brats18_CBICA_AAB_1`` -> ``CBICA``, ``Brats18_TCIA01_201_1`` -> ``TCIA01``,
    ``BraTS-GLI-00000-000`` -> ``BraTS``, ``TCGA-DU-7294`` -> ``TCGA``; another name -> its first
    ``_``/``-`` part).

        >>> case_source("Brats18_2013_11_1"), case_source({"case": "x", "source": "site-A"})
        ('2013', 'site-A')
    """
    if isinstance(subject, dict):
        if subject.get("source"):
            return str(subject["source"])
        subject = subject["case"]
    parts = subject.split("_")
    return parts[1] if subject.startswith("Brats18_") and len(parts) > 2 else parts[0].split("-")[0]


def load_subjects(source: str | Path) -> list[Subject]:
    """Subjects from a data folder or a datalist ``.json`` file."""
    source = Path(source)
    return load_datalist(source) if source.suffix.lower() == ".json" else find_subjects(source)


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file, computed once per file version (resolved path, size, mtime) in a process."""
    path = Path(path)
    status = path.stat()
    return _sha256_of(str(path.resolve()), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
