"""The scoring protocol of ``../shared/EVALUATION.md``: synthetic T2 against real T2, inside the brain.

Every number is computed on images normalised per image (:func:`normalise_for_scoring`) and
only on the voxels of the brain mask:

=========================  =====================================================================
key                        definition
=========================  =====================================================================
``psnr``                   ``10 log10(1 / MSE)`` (dB), MSE over mask voxels; ``inf`` when MSE = 0
``mae``                    mean absolute error over mask voxels
``ssim``                   3D SSIM map (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data
                           range 1; MONAI ``compute_ssim_and_cs``), averaged over the mask voxels
                           the map covers (those at least 5 voxels from the volume's faces)
``mae_<group>``            MAE inside each region group of :data:`monai_t1t2.regions.REGION_GROUPS`
``tumour_contrast_error``  ``|C_pred - C_ref| / C_ref``, ``C = mean(tumour) / mean(normal WM)``
``c_pred``, ``c_ref``      the two contrasts ``C``
``e_z``, ``e_xy``          mean ``|d pred - d ref|`` across axial slices / in-plane (both axes, averaged)
``r_z``                    ``e_z / e_xy``: near 1 for a consistent 3D model, well above 1 slice-wise
``slice_flicker``          std over axial slices (>= 1000 mask voxels) of the slice's mean signed error
=========================  =====================================================================

Choices the protocol leaves open, made here:

- Default mask (no ``mask`` given): ``ref > 0``, the real T2's skull-stripped brain. Not
  ``pred > 0``: a prediction that is 0 inside the brain must count as an error, not shrink the
  scored region. For the shared pairs the protocol's mask ``(t1 > 0) & (t2 > 0)`` should be
  passed (``benchmarks/quality.py`` and the ``evaluate`` command for ``<case>/t2.nii.gz`` do).
- Finite differences: a difference between voxels ``i`` and ``i + 1`` counts when both are in the mask.
- ``r_z`` is NaN when there is no gradient error at all (``e_z = e_xy = 0``, e.g. identical
  images: 0 / 0 has no meaning) and ``inf`` when only ``e_xy`` is 0.
- ``slice_flicker`` is NaN when no axial slice has 1000 mask voxels; population std (ddof 0).
- Normal white matter: the parcellation's white matter (group 1) minus the tumour dilated by 3
  voxels with a 3D cross (6-connected structuring element, 3 iterations: city-block distance <= 3).
- ``mae_tumour`` needs only ``tumor_seg``; the other region MAEs need ``labels``; a group absent
  from the mask is NaN. ``tumour_contrast_error`` needs both ``tumor_seg`` and ``labels``.
- SSIM is computed with a separable Gaussian (the same kernel as MONAI's 3D one, which is the outer
  product of three 1D Gaussians) on the mask's bounding box plus the 5-voxel window margin: the
  same map at every covered mask voxel as ``compute_ssim_and_cs`` on the whole volume
  (``tests/test_metrics.py`` checks the agreement), about 30x faster on a 240 x 240 x 155 volume.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from monai_t1t2.errors import DatasetError, GridMismatchError, InvalidVolumeError
from monai_t1t2.io import (
    PathLike,
    VOLUME_SUFFIXES,
    atomic_write_text,
    check_same_grid,
    find_volumes,
    read_volume,
    volume_stem,
)
from monai_t1t2.regions import REGION_GROUPS, TUMOUR_GROUP, labels_to_groups
from monai_t1t2.transforms import PercentileNormalise

SSIM_KERNEL_SIZE = 11
SSIM_KERNEL_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 1.0
MIN_SLICE_VOXELS = 1000
TUMOUR_MARGIN_VOXELS = 3
WHITE_MATTER_GROUP = 1
DEFAULT_LABEL_MODEL = "model30chan18cls"

# Metrics printed by the ``evaluate`` command (the JSON holds every key).
TABLE_COLUMNS = ("ssim", "psnr", "mae", "r_z", "slice_flicker", "tumour_contrast_error")

VolumeLike = np.ndarray | torch.Tensor | PathLike


# ----- normalisation ------------------------------------------------------------------------
def normalise_for_scoring(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The protocol's per-image normalisation.

    Args:
        image: ``(X, Y, Z)`` intensities in any unit.
        mask: ``(X, Y, Z)`` bool brain mask.

    Returns:
        float32 ``(X, Y, Z)``: ``(x - p0.5) / (p99.5 - p0.5)`` clipped to ``[0, 1]``, percentiles
        of ``image`` inside ``mask``, 0 outside ``mask``.
    """
    return np.asarray(PercentileNormalise()(np.asarray(image, dtype=np.float32), np.asarray(mask, dtype=bool)),
                      dtype=np.float32)


# ----- the individual metrics (normalised images, bool mask) --------------------------------
def ssim_map(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """SSIM map of the protocol on a ``(X, Y, Z)`` pair, separable Gaussian, 'valid' borders.

    Same formula and kernel as ``monai.metrics.regression.compute_ssim_and_cs`` (kernel 11,
    sigma 1.5, K1 0.01, K2 0.03, data range 1; MONAI's 3D kernel is the outer product of three
    1D Gaussians) but filtering one axis at a time, in float32 like MONAI.

    Returns:
        float32 ``(X - 10, Y - 10, Z - 10)``; entry ``[i, j, k]`` belongs to voxel ``[i + 5, j + 5, k + 5]``.
    """
    radius = SSIM_KERNEL_SIZE // 2
    distance = np.arange(-radius, radius + 1, dtype=np.float64)
    gauss = np.exp(-((distance / SSIM_KERNEL_SIGMA) ** 2) / 2)
    gauss = (gauss / gauss.sum()).astype(np.float32)
    pred, ref = np.asarray(pred, dtype=np.float32), np.asarray(ref, dtype=np.float32)
    stack = np.stack([pred, ref, pred * pred, ref * ref, pred * ref])  # (5, X, Y, Z)
    for axis in (1, 2, 3):
        stack = ndimage.correlate1d(stack, gauss, axis=axis, mode="constant")
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = stack[:, radius:-radius, radius:-radius, radius:-radius]
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    sigma_x, sigma_y, sigma_xy = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y, mu_xy - mu_x * mu_y
    contrast = (2 * sigma_xy + c2) / (sigma_x + sigma_y + c2)
    return ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * contrast


def masked_ssim(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the SSIM map over the mask voxels it covers (NaN when it covers none)."""
    return ssim_by_region(pred, ref, mask, {"brain": mask})["brain"]


def ssim_by_region(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray,
                   regions: dict[str, np.ndarray]) -> dict[str, float]:
    """One SSIM map on the mask's bounding box, averaged over ``mask & region`` for each named region.

    Returns:
        ``{name: mean SSIM}``; NaN for a region the map does not cover.
    """
    radius = SSIM_KERNEL_SIZE // 2
    inside = np.argwhere(mask)
    lower = np.maximum(inside.min(0) - radius, 0)
    upper = np.minimum(inside.max(0) + radius + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lower, upper))
    if min(b - a for a, b in zip(lower, upper)) < SSIM_KERNEL_SIZE:
        return {name: float("nan") for name in regions}
    values = ssim_map(pred[box], ref[box])
    core = (slice(radius, -radius),) * 3
    covered = mask[box][core]
    result = {}
    for name, region in regions.items():
        selection = covered & np.asarray(region, bool)[box][core]
        result[name] = float(values[selection].mean(dtype=np.float64)) if selection.any() else float("nan")
    return result


def gradient_errors(error: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``e_x``, ``e_y``, ``e_z``, ``e_xy`` and ``r_z`` of a signed error map ``pred - ref``.

    ``|d pred - d ref| = |d (pred - ref)|``: the finite difference of the error along each axis,
    averaged over the pairs of neighbouring voxels that are both inside ``mask``.
    """
    means = []
    for axis in range(3):
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        pairs = mask[tuple(first)] & mask[tuple(second)]
        difference = np.abs(error[tuple(second)] - error[tuple(first)])[pairs]
        means.append(float(difference.mean(dtype=np.float64)) if difference.size else float("nan"))
    e_x, e_y, e_z = means
    e_xy = (e_x + e_y) / 2
    if e_xy > 0:
        r_z = e_z / e_xy
    else:
        r_z = float("inf") if e_z > 0 else float("nan")
    return {"e_x": e_x, "e_y": e_y, "e_z": e_z, "e_xy": e_xy, "r_z": r_z}


def slice_flicker(error: np.ndarray, mask: np.ndarray, min_voxels: int = MIN_SLICE_VOXELS) -> float:
    """Std over axial slices (last axis) with ``>= min_voxels`` mask voxels of the slice's mean signed error."""
    counts = mask.sum(axis=(0, 1))
    sums = np.where(mask, error, 0).sum(axis=(0, 1), dtype=np.float64)
    kept = counts >= min_voxels
    if not kept.any():
        return float("nan")
    return float(np.std(sums[kept] / counts[kept]))


def tumour_contrast(image: np.ndarray, tumour: np.ndarray, normal_white_matter: np.ndarray) -> float:
    """``mean(image[tumour]) / mean(image[normal_white_matter])`` (NaN when either is empty or WM is 0)."""
    if not tumour.any() or not normal_white_matter.any():
        return float("nan")
    white = float(image[normal_white_matter].mean(dtype=np.float64))
    return float(image[tumour].mean(dtype=np.float64)) / white if white > 0 else float("nan")


def normal_white_matter(groups: np.ndarray, tumour: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """White matter (group 1) inside ``mask`` farther than 3 voxels (city-block) from the tumour."""
    near_tumour = ndimage.binary_dilation(tumour, ndimage.generate_binary_structure(3, 1),
                                          iterations=TUMOUR_MARGIN_VOXELS)
    return (groups == WHITE_MATTER_GROUP) & ~near_tumour & mask


def _masked_mean(values: np.ndarray, selection: np.ndarray) -> float:
    return float(values[selection].mean(dtype=np.float64)) if selection.any() else float("nan")


# ----- inputs -------------------------------------------------------------------------------
def _name(volume: object, role: str) -> str:
    source = getattr(volume, "meta", {}).get("filename_or_obj") if hasattr(volume, "meta") else None
    return str(source) if source else role


def _load(volume: VolumeLike, role: str, allow_constant: bool) -> np.ndarray | torch.Tensor:
    """A path becomes a ``MetaTensor`` ``(1, X, Y, Z)``; arrays and tensors pass through."""
    if not isinstance(volume, (str, os.PathLike)):
        return volume
    try:
        return read_volume(volume)
    except InvalidVolumeError as err:
        # A label volume may legitimately be constant (a tumour segmentation with no tumour).
        if not (allow_constant and "have the same value" in str(err)):
            raise
    import nibabel as nib
    from monai.data import MetaTensor

    image = nib.load(str(volume))
    array = np.asarray(image.dataobj, dtype=np.float32)
    return MetaTensor(torch.from_numpy(array.reshape(array.shape[:3]))[None], affine=torch.as_tensor(image.affine),
                      meta={"filename_or_obj": str(volume)})


def _to_ras(volume: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Reorient a ``MetaTensor`` to RAS; plain arrays are taken to be RAS already."""
    from monai.data import MetaTensor

    if not isinstance(volume, MetaTensor):
        return volume
    from monai.transforms import Orientation

    if volume.ndim == 3:
        volume = volume[None]
    # Labels given explicitly: MONAI warns about its changing default otherwise.
    return Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(volume)


def _as_array(volume: np.ndarray | torch.Tensor, role: str) -> np.ndarray:
    array = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise InvalidVolumeError(f"{_name(volume, role)}: {role} has shape {array.shape}; a 3D volume (X, Y, Z) is needed")
    return array


def _prepare_inputs(pred, ref, mask, tumor_seg, labels) -> dict[str, np.ndarray | None]:
    """Load, reorient and grid-check every input; return ``(X, Y, Z)`` arrays (None when not given)."""
    from monai.data import MetaTensor

    given = {"ref": ref, "pred": pred, "mask": mask, "tumor_seg": tumor_seg, "labels": labels}
    loaded = {role: _to_ras(_load(v, role, allow_constant=role in ("mask", "tumor_seg", "labels")))
              for role, v in given.items() if v is not None}
    grids = [(role, v) for role, v in loaded.items() if isinstance(v, MetaTensor)]
    for role, volume in grids[1:]:
        check_same_grid(grids[0][1], volume)
    arrays = {role: _as_array(v, role) for role, v in loaded.items()}
    for role, array in arrays.items():
        if array.shape != arrays["ref"].shape:
            raise GridMismatchError(f"{_name(loaded[role], role)}: {role} has shape {array.shape}, "
                                    f"the reference {_name(loaded['ref'], 'ref')} {arrays['ref'].shape}")
    for role in given:
        arrays.setdefault(role, None)
    arrays["names"] = {role: _name(v, role) for role, v in loaded.items()}
    return arrays


# ----- the protocol -------------------------------------------------------------------------
def evaluate(
    pred: VolumeLike,
    ref: VolumeLike,
    mask: VolumeLike | None = None,
    tumor_seg: VolumeLike | None = None,
    labels: VolumeLike | None = None,
    label_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Score a synthetic T2 against the real T2 with the protocol of ``EVALUATION.md``.

    Args:
        pred: synthetic T2: ``(X, Y, Z)`` array / tensor in RAS voxel order (axial = last axis),
            a ``MetaTensor`` or a file path (both reoriented to RAS).
        ref: real T2, the same kinds, on the same grid.
        mask: brain mask (``> 0`` = brain); default ``ref > 0`` (see the module notes).
        tumor_seg: tumour labels (any value ``> 0`` is tumour), optional.
        labels: parcellation labels (integers), optional; enables region MAEs and the tumour contrast.
        label_names: names of the parcellation's labels, index = label value; default the names of
            brainchop's ``model30chan18cls`` (read only when ``labels`` is given).

    Returns:
        ``{"psnr", "mae", "ssim", "ssim_tumour", "ssim_non_tumour", "mae_non_tumour", "e_z", "e_xy", "r_z",
        "slice_flicker", "tumour_contrast_error",
        "c_pred", "c_ref", "mae_<group>" ...}`` as floats; NaN where a metric does not apply.

    Raises:
        GridMismatchError: the inputs are not on one grid (the message names the files).
        InvalidVolumeError: a file is missing or unreadable, or the mask is empty.

    Example:
        >>> scores = evaluate("synT2.nii.gz", "t2.nii.gz", mask="brain.nii.gz")  # doctest: +SKIP
        >>> round(scores["ssim"], 3)  # doctest: +SKIP
    """
    inputs = _prepare_inputs(pred, ref, mask, tumor_seg, labels)
    ref_array, pred_array = inputs["ref"].astype(np.float32), inputs["pred"].astype(np.float32)
    brain = ref_array > 0 if inputs["mask"] is None else inputs["mask"] > 0
    if not brain.any():
        raise InvalidVolumeError(f"{inputs['names'].get('mask', 'ref > 0')}: the brain mask is empty; nothing to score")
    pred_n, ref_n = normalise_for_scoring(pred_array, brain), normalise_for_scoring(ref_array, brain)
    error = pred_n - ref_n
    inside = error[brain].astype(np.float64)
    mse = float(np.mean(inside**2))
    scores = {
        "psnr": 10 * math.log10(DATA_RANGE**2 / mse) if mse > 0 else float("inf"),
        "mae": float(np.mean(np.abs(inside))),
    }
    tumour = inputs["tumor_seg"] > 0 if inputs["tumor_seg"] is not None else None
    regions = {"ssim": brain}
    if tumour is not None:
        # BraSyn-style: SSIM inside the tumour and in the brain away from it (tumour dilated by 3 voxels).
        away = brain & ~ndimage.binary_dilation(tumour, ndimage.generate_binary_structure(3, 1),
                                                iterations=TUMOUR_MARGIN_VOXELS)
        regions.update(ssim_tumour=tumour & brain, ssim_non_tumour=away)
        scores["mae_non_tumour"] = _masked_mean(np.abs(error), away)
    else:
        scores.update(ssim_tumour=float("nan"), ssim_non_tumour=float("nan"), mae_non_tumour=float("nan"))
    scores.update(ssim_by_region(pred_n, ref_n, brain, regions))
    gradients = gradient_errors(error, brain)
    scores.update({key: gradients[key] for key in ("r_z", "e_z", "e_xy")})
    scores["slice_flicker"] = slice_flicker(error, brain)
    scores.update(_region_scores(pred_n, ref_n, brain, inputs["tumor_seg"], inputs["labels"], label_names))
    return scores


def _region_scores(pred_n: np.ndarray, ref_n: np.ndarray, brain: np.ndarray, tumor_seg: np.ndarray | None,
                   labels: np.ndarray | None, label_names: Sequence[str] | None) -> dict[str, float]:
    """Region MAEs and the tumour contrast error (NaN where the inputs are missing)."""
    tumour = np.asarray(tumor_seg) > 0 if tumor_seg is not None else np.zeros(brain.shape, bool)
    if labels is not None:
        if label_names is None:
            from monai_t1t2.parcellation import label_names as model_label_names

            label_names = model_label_names(DEFAULT_LABEL_MODEL)
        groups = labels_to_groups(np.rint(labels).astype(np.int64), label_names, tumour)
    else:
        groups = np.where(tumour, TUMOUR_GROUP, 0).astype(np.uint8)
    absolute = np.abs(pred_n - ref_n)
    scores = {f"mae_{name}": _masked_mean(absolute, (groups == code) & brain) for code, name in REGION_GROUPS.items()}
    if labels is None:
        scores.update({f"mae_{name}": float("nan") for code, name in REGION_GROUPS.items() if code != TUMOUR_GROUP})
    contrast = {"c_pred": float("nan"), "c_ref": float("nan")}
    if labels is not None and tumor_seg is not None:
        white = normal_white_matter(groups, tumour, brain)
        contrast = {"c_pred": tumour_contrast(pred_n, tumour & brain, white),
                    "c_ref": tumour_contrast(ref_n, tumour & brain, white)}
    c_pred, c_ref = contrast["c_pred"], contrast["c_ref"]
    error = abs(c_pred - c_ref) / c_ref if math.isfinite(c_ref) and c_ref > 0 and math.isfinite(c_pred) else float("nan")
    return {**scores, "tumour_contrast_error": error, **contrast}


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
