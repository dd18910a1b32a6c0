"""BIDS in and out: ``monai-t1t2 predict BIDS_ROOT --bids``.

- **Inputs**: every ``sub-*/anat/*_T1w.nii[.gz]`` and ``sub-*/ses-*/anat/*_T1w.nii[.gz]`` of the dataset
  (:func:`find_t1w`).
- **Outputs**: a BIDS derivative dataset, by default ``BIDS_ROOT/derivatives/monai-t1t2``, with the
  T1's path and entities: ``sub-01/ses-1/anat/sub-01_ses-1_desc-synthetic_T2w.nii.gz``
  (:func:`derivative_path`) and its JSON sidecar (the package's provenance sidecar, whose ``Sources``
  is the T1's BIDS URI ``bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz``, and ``SkullStripped``,
  which the BIDS derivatives specification requires), a ``dataset_description.json`` with
  ``DatasetType`` ``"derivative"``, ``GeneratedBy`` and ``DatasetLinks`` (``raw`` -> the source
  dataset), and a ``.bidsignore`` for what BIDS has no name for (manifest, PNGs, intervals).
"""

from __future__ import annotations

import json
from pathlib import Path

import monai_t1t2
from monai_t1t2.errors import DatasetError, OutputExistsError
from monai_t1t2.io import PathLike, atomic_write_text, volume_stem

PIPELINE = "monai-t1t2"
BIDS_VERSION = "1.10.0"
T1W_SUFFIX = "_T1w"
DERIVED_SUFFIX = "_desc-synthetic_T2w"
#: What a derivative folder of this package holds that BIDS names no file for.
IGNORED = ("manifest.json", "manifest.csv", "*.html", "*.png", "*_lower.nii.gz", "*_upper.nii.gz", "*_dicom/",
           ".thumbnails/", ".manifest-parts/")


README = f"""# {PIPELINE} derivatives

Synthetic T2-weighted images translated from this dataset's T1-weighted images by monai-t1t2, one
`<entities>_desc-synthetic_T2w.nii.gz` per `<entities>_T1w.nii.gz`, on the T1's grid, in normalised T2
units (0 outside the brain). They are computed, not acquired: do not read them as T2 acquisitions.
Each JSON sidecar names its source (`Sources`), the package and model versions and the model's SHA-256.
"""


def find_t1w(root: PathLike) -> list[Path]:
    """Every T1w image of a BIDS dataset: ``sub-*/[ses-*/]anat/*_T1w.nii.gz`` (and ``.nii``), sorted.

    Raises:
        DatasetError: ``root`` is not a folder, or holds no ``sub-*`` T1w image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; --bids takes the root of a BIDS dataset")
    found = [path for pattern in ("sub-*/anat/*", "sub-*/ses-*/anat/*") for path in root.glob(pattern)
             if path.is_file() and path.name.endswith((f"{T1W_SUFFIX}.nii.gz", f"{T1W_SUFFIX}.nii"))]
    if not found:
        hint = "" if (root / "dataset_description.json").is_file() else " (and no dataset_description.json: is it a BIDS root?)"
        raise DatasetError(f"{root}: holds no sub-*/[ses-*/]anat/*_T1w.nii.gz{hint}")
    return sorted(found)


def default_derivatives(root: PathLike) -> Path:
    """``BIDS_ROOT/derivatives/monai-t1t2``."""
    return Path(root) / "derivatives" / PIPELINE


def derivative_path(t1w: PathLike, root: PathLike, derivatives: PathLike) -> Path:
    """The synthetic T2 of a T1w image: its path in ``derivatives``, its entities and ``desc-synthetic``.

    >>> derivative_path("/d/sub-01/ses-1/anat/sub-01_ses-1_run-2_T1w.nii.gz", "/d", "/d/derivatives/monai-t1t2").as_posix()
    '/d/derivatives/monai-t1t2/sub-01/ses-1/anat/sub-01_ses-1_run-2_desc-synthetic_T2w.nii.gz'
    """
    t1w = Path(t1w)
    entities = volume_stem(t1w)[: -len(T1W_SUFFIX)]
    entities = "_".join(part for part in entities.split("_") if not part.startswith("desc-"))
    return Path(derivatives) / t1w.parent.relative_to(root) / f"{entities}{DERIVED_SUFFIX}.nii.gz"


def source_uri(t1w: PathLike, root: PathLike) -> str:
    """The BIDS URI of a source file: ``bids:raw:<path in the dataset>`` (``raw`` is in ``DatasetLinks``)."""
    return f"bids:raw:{Path(t1w).relative_to(root).as_posix()}"


def dataset_description(root: PathLike, derivatives: PathLike) -> dict:
    """The derivative dataset's ``dataset_description.json``."""
    import os

    source = Path(root).resolve()
    link = Path(os.path.relpath(source, Path(derivatives).resolve())).as_posix()
    try:
        name = json.loads((source / "dataset_description.json").read_text())["Name"]
    except (OSError, ValueError, KeyError, TypeError):
        name = source.name
    return {
        "Name": f"{PIPELINE} synthetic T2w images of {name}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": PIPELINE, "Version": monai_t1t2.__version__,
                         "Description": "T1w to synthetic T2w translation (3D patch-based network, MONAI)"}],
        "SourceDatasets": [{"URL": "bids:raw:."}],
        "DatasetLinks": {"raw": f"{link}/" if link != "." else "./"},
    }


def write_dataset_files(root: PathLike, derivatives: PathLike, overwrite: bool = False) -> Path:
    """Write (atomically) the derivative dataset's ``dataset_description.json``, ``.bidsignore`` and a ``README``.

    An existing description this package wrote is brought up to date; another one is refused unless ``overwrite``.

    Raises:
        OutputExistsError: ``derivatives`` holds another pipeline's ``dataset_description.json``.
    """
    derivatives = Path(derivatives)
    description = derivatives / "dataset_description.json"
    if description.is_file() and not overwrite:
        try:
            generated_by = [g.get("Name") for g in json.loads(description.read_text()).get("GeneratedBy", [])]
        except (OSError, ValueError, AttributeError):
            generated_by = []
        if PIPELINE not in generated_by:
            raise OutputExistsError(f"{description}: another pipeline's derivative dataset; choose another folder "
                                    "(-o) or pass --overwrite")
    atomic_write_text(json.dumps(dataset_description(root, derivatives), indent=2) + "\n", description)
    atomic_write_text("\n".join(IGNORED) + "\n", derivatives / ".bidsignore")
    atomic_write_text(README, derivatives / "README")
    return description
