"""The evaluation stage: ``monai-t1t2 evaluate`` over files and folders.

Matches predictions to references by case, finds each case's mask, tumour labels and T1,
scores every pair with the protocol of :mod:`monai_t1t2.metrics` and writes the table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from monai_t1t2.errors import DatasetError, InvalidVolumeError
from monai_t1t2.io import PathLike, VOLUME_SUFFIXES, atomic_write_text, check_same_grid, find_volumes, read_volume, volume_stem
from monai_t1t2.metrics import TABLE_COLUMNS, evaluate

# ----- the `evaluate` command ---------------------------------------------------------------
# File names that say what a volume is, not whose: the case is then the folder name.
GENERIC_STEMS = ("t1", "t2", "t2w", "synt2", "synth_t2", "pred", "prediction")


PRED_SUFFIX = "_synT2"


def case_of(path: PathLike) -> str:
    """Case name of a volume file (the matching rule of the ``evaluate`` command).

    ``<stem>_synT2.nii.gz`` -> ``<stem>``; ``<stem>.nii.gz`` -> ``<stem>``; a generic name
    (``t2``, ``synT2``, ``t1_synT2``, ``pred``, ...) -> the name of its folder (layout ``<case>/t2.nii.gz``).
    """
    stem = volume_stem(path)
    if stem.lower().endswith(PRED_SUFFIX.lower()) and len(stem) > len(PRED_SUFFIX):
        stem = stem[: -len(PRED_SUFFIX)]
    return Path(path).parent.name if stem.lower() in GENERIC_STEMS else stem


def _reference_files(folder: Path) -> list[Path]:
    """Reference volumes of a folder: the ``<case>/t2.*`` files when there are any, else every volume."""
    files = find_volumes([folder])
    layout = [p for p in files if volume_stem(p).lower() in ("t2", "t2w")]
    return layout or files


def _sibling(path: Path, stem: str) -> Path | None:
    """``<folder of path>/<stem>.<volume suffix>`` when it exists."""
    for suffix in VOLUME_SUFFIXES:
        candidate = path.parent / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _companion(folder: Path | None, case: str, conventional: str) -> Path | None:
    """File of ``case`` in a companion folder: ``<case>.*``, ``<case>_*.*`` or ``<case>/<conventional>.*``."""
    if folder is None:
        return None
    for path in find_volumes([folder]):
        stem = volume_stem(path)
        if stem == case or stem.startswith(f"{case}_") or (path.parent.name == case and stem == conventional):
            return path
    raise DatasetError(f"{folder}: no volume for case {case} (expected {case}.nii.gz, {case}_*.nii.gz "
                       f"or {case}/{conventional}.nii.gz)")


def _existing(path: PathLike | None, role: str) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        raise InvalidVolumeError(f"{path}: no such file or folder (--{role})")
    return path


def match_cases(pred: Path, ref: Path) -> dict[str, tuple[Path, Path]]:
    """``{case: (pred file, ref file)}`` for two files or two folders (see :func:`case_of`).

    Raises:
        DatasetError: a folder and a file mixed, a prediction without a reference, or no match.
    """
    if pred.is_file() and ref.is_file():
        return {case_of(ref): (pred, ref)}
    if pred.is_dir() != ref.is_dir():
        raise DatasetError(f"{pred if pred.is_dir() else ref}: is a folder but the other of --pred / --ref is a "
                           "file; give two files or two folders")
    references = {}
    for path in _reference_files(ref):
        references.setdefault(case_of(path), path)
    pairs, unmatched = {}, []
    for path in find_volumes([pred]):
        case = case_of(path)
        if case in references:
            pairs[case] = (path, references[case])
        else:
            unmatched.append(str(path))
    if unmatched:
        raise DatasetError(f"{ref}: no reference for the prediction(s) {', '.join(unmatched)} "
                           f"(reference cases: {', '.join(sorted(references)) or 'none'})")
    return dict(sorted(pairs.items()))


def _default_mask(ref: Path, t1: Path | None = None, mask_from_ref: bool = False):
    """The protocol's ``(t1 > 0) & (t2 > 0)`` with ``t1`` given, or the ``t1.*`` beside a reference
    ``<case>/t2.*``; ``ref > 0`` only when asked for (``mask_from_ref``); otherwise an error, never a guess."""
    if t1 is None and volume_stem(ref).lower() in ("t2", "t2w"):
        t1 = _sibling(ref, "t1")
    if t1 is None:
        if mask_from_ref:
            return None, f"{ref} > 0 (--mask-from-ref)"
        raise InvalidVolumeError(f"{ref}: no brain mask to score in: pass --t1 T1 (the protocol's mask "
                                 "(t1 > 0) & (t2 > 0)), --mask MASK, or --mask-from-ref to score inside ref > 0")
    t1_volume, t2_volume = read_volume(t1), read_volume(ref)
    check_same_grid(t2_volume, t1_volume)
    brain = (t1_volume > 0) & (t2_volume > 0)
    return brain.float(), f"({t1} > 0) & ({ref} > 0)"


def _json_ready(value):
    if isinstance(value, dict):
        return {key: _json_ready(v) for key, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _format_table(rows: dict[str, dict]) -> str:
    header = "| case | " + " | ".join(TABLE_COLUMNS) + " |"
    lines = [header, "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for case, scores in rows.items():
        cells = [(f"{scores[c]:.2f}" if c == "psnr" else f"{scores[c]:.4f}") if math.isfinite(scores[c])
                 else ("inf" if scores[c] > 0 else "n/a") for c in TABLE_COLUMNS]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_scores(per_case: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the cases where it is finite (NaN when it is finite nowhere)."""
    keys = next(iter(per_case.values())).keys()
    means = {}
    for key in keys:
        finite = [s[key] for s in per_case.values() if math.isfinite(s[key])]
        means[key] = float(np.mean(finite)) if finite else float("nan")
    return means


def run_evaluate(pred: PathLike, ref: PathLike, mask: PathLike | None = None, tumor_seg: PathLike | None = None,
                 labels: PathLike | None = None, json_path: PathLike | None = None, overwrite: bool = False,
                 t1: PathLike | None = None, mask_from_ref: bool = False) -> int:
    """The ``monai-t1t2 evaluate`` command: score one pair or two folders matched by case.

    Matching: a prediction ``<case>_synT2.nii.gz`` or ``<case>.nii.gz`` (or ``<case>/<generic name>``)
    is scored against the reference ``<case>.nii.gz`` or ``<case>/t2.nii.gz`` (:func:`case_of`).
    With folders, ``mask`` / ``tumor_seg`` / ``labels`` are folders too, holding ``<case>.*``,
    ``<case>_*.*`` or ``<case>/mask.*`` (``tumor_seg.*``, ``labels.*``). For a reference
    ``<case>/t2.*`` with ``t1.*`` beside it the default mask is the protocol's
    ``(t1 > 0) & (t2 > 0)`` and a ``tumor_seg.*`` beside it is used; otherwise the mask is ``ref > 0``.

    Prints a table (one row per case and the mean) and writes every metric as JSON to ``json_path``
    (non-finite values as ``null``). Returns 0.

    Raises:
        InvalidVolumeError: a file or folder is missing (exit status 2).
        DatasetError: folders that do not match.
        OutputExistsError: ``json_path`` exists and ``overwrite`` is False.
    """
    pred_path, ref_path = _existing(pred, "pred"), _existing(ref, "ref")
    mask_path, seg_path, labels_path = (_existing(mask, "mask"), _existing(tumor_seg, "tumor-seg"),
                                        _existing(labels, "labels"))
    t1_path = _existing(t1, "t1")
    from monai_t1t2.io import check_output_path

    given = [p for p in (pred_path, ref_path, mask_path, seg_path, labels_path, t1_path) if p is not None]
    if json_path is not None:
        check_output_path(json_path, inputs=given, overwrite=overwrite)
    folders = pred_path.is_dir()
    matched = match_cases(pred_path, ref_path)
    if json_path is not None:  # the matched files too: a --json naming one of them is refused before any scoring
        check_output_path(json_path, inputs=[f for pair in matched.values() for f in pair], overwrite=overwrite)
    per_case, sources = {}, {}
    for case, (pred_file, ref_file) in matched.items():
        case_mask = _companion(mask_path, case, "mask") if folders else mask_path
        case_seg = _companion(seg_path, case, "tumor_seg") if folders else seg_path
        case_labels = _companion(labels_path, case, "labels") if folders else labels_path
        mask_source = str(case_mask) if case_mask is not None else None
        if case_mask is None:
            case_t1 = (_companion(t1_path, case, "t1") if folders else t1_path) if t1_path is not None else None
            case_mask, mask_source = _default_mask(ref_file, case_t1, mask_from_ref)
        if case_seg is None and volume_stem(ref_file).lower() in ("t2", "t2w"):
            case_seg = _sibling(ref_file, "tumor_seg")
        per_case[case] = evaluate(pred_file, ref_file, mask=case_mask, tumor_seg=case_seg, labels=case_labels)
        sources[case] = {"pred": str(pred_file), "ref": str(ref_file), "mask": mask_source,
                         "tumor_seg": str(case_seg) if case_seg is not None else None,
                         "labels": str(case_labels) if case_labels is not None else None}
    mean = mean_scores(per_case)
    print(_format_table({**per_case, "mean": mean}))
    for case in per_case:
        print(f"mask of {case}: {sources[case]['mask']}")
    if json_path is not None:
        report = {"protocol": "../shared/EVALUATION.md", "cases": {c: {**per_case[c], "inputs": sources[c]}
                                                                  for c in per_case}, "mean": mean}
        atomic_write_text(json.dumps(_json_ready(report), indent=2) + "\n", json_path, overwrite=overwrite)
        print(f"evaluate: {len(per_case)} case(s); metrics written to {json_path}")
    return 0
