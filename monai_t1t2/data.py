"""Dataset discovery and subject-level splits.

A *subject* is a dict ``{"case": str, "t1": str, "t2": str, "tumor_seg": str | None}``
(paths as strings so MONAI's ``LoadImaged`` and ``CacheDataset`` take it as is).
Splits are always by subject, never by slice or patch, so no voxel of a held-out
subject is ever seen in training.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence

from monai_t1t2.errors import DatasetError
from monai_t1t2.io import VOLUME_SUFFIXES, volume_stem

Subject = dict

CONTRASTS = ("t1", "t2")
OPTIONAL_KEYS = ("tumor_seg",)


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

    Each item needs ``t1`` and ``t2``; ``case`` and ``tumor_seg`` are optional (``case``
    defaults to the T1 file's parent folder name). Relative paths are relative to the JSON.
    """
    from monai.data import load_decathlon_datalist

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: datalist file does not exist")
    try:
        items = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=key)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not a datalist with a '{key}' list ({err})") from None
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
        })
    if not subjects:
        raise DatasetError(f"{path}: the '{key}' list is empty")
    return subjects


def load_subjects(source: str | Path) -> list[Subject]:
    """Subjects from a data folder or a datalist ``.json`` file."""
    source = Path(source)
    return load_datalist(source) if source.suffix.lower() == ".json" else find_subjects(source)


def split_subjects(
    subjects: Sequence[Subject],
    val_cases: Sequence[str] | None = None,
    val_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[list[Subject], list[Subject]]:
    """Split subjects into training and validation sets by case.

    Args:
        subjects: from :func:`find_subjects` or :func:`load_datalist`.
        val_cases: case names to hold out; when given, ``val_fraction`` is ignored.
        val_fraction: share of cases held out (at least one when 0 < fraction), drawn with ``seed``.
        seed: random seed of the draw.

    Raises:
        DatasetError: a named validation case does not exist, or nothing is left to train on.
    """
    cases = [s["case"] for s in subjects]
    if len(set(cases)) != len(cases):
        raise DatasetError(f"case names are not unique: {sorted(cases)}")
    if val_cases is not None:
        unknown = sorted(set(val_cases) - set(cases))
        if unknown:
            raise DatasetError(f"validation case(s) {unknown} not among the subjects {cases}")
        held_out = set(val_cases)
    else:
        count = 0 if val_fraction <= 0 else max(1, round(val_fraction * len(cases)))
        held_out = set(random.Random(seed).sample(sorted(cases), count))
    train = [s for s in subjects if s["case"] not in held_out]
    val = [s for s in subjects if s["case"] in held_out]
    if not train:
        raise DatasetError("no subject left for training after the split")
    return train, val
