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
  from the mask is NaN. ``tumour_contrast_error`` needs both ``tumor_seg`` and ``labels``. Region
  group codes (``groups``, as :func:`monai_t1t2.regions.labels_to_groups` makes them) may stand in
  for ``labels``: the training's validation passes the groups its data pipeline already holds.
- SSIM is computed with a separable Gaussian (the same kernel as MONAI's 3D one, which is the outer
  product of three 1D Gaussians) on the mask's bounding box plus the 5-voxel window margin: the
  same map at every covered mask voxel as ``compute_ssim_and_cs`` on the whole volume
  (``tests/test_metrics.py`` checks the agreement), about 30x faster on a 240 x 240 x 155 volume.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch

from monai_t1t2.errors import GridMismatchError, InvalidVolumeError
from monai_t1t2.io import PathLike, check_same_grid, read_volume
from monai_t1t2.geometry import bounding_box, dilate, to_ras
from monai_t1t2.regions import REGION_GROUPS, TUMOUR_GROUP, labels_to_groups
from monai_t1t2.transforms import LOWER_PERCENTILE, UPPER_PERCENTILE, PercentileNormalise

SSIM_KERNEL_SIZE = 11
SSIM_KERNEL_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 1.0
MIN_SLICE_VOXELS = 1000
TUMOUR_MARGIN_VOXELS = 3
WHITE_MATTER_GROUP = 1
# Black holes (hole_share): written below HOLE_LEVEL where the real T2 is above HOLE_REFERENCE, in the brain's core.
HOLE_LEVEL, HOLE_REFERENCE, CORE_MARGIN_VOXELS = 0.02, 0.15, 2
# Fine detail (detail_scores): the high-pass part of an image is the image minus its Gaussian blur of this sigma.
HIGH_PASS_SIGMA = 2.0
# Float32 rounding of an interval's normalisation map: a bound clipped at 0 or 1 still covers a reference at 0 or 1.
COVERAGE_TOLERANCE = 1e-5

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
def ssim_map(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """SSIM map of the protocol, separable Gaussian, 'valid' borders: the one SSIM of the package.

    Same formula and kernel as ``monai.metrics.regression.compute_ssim_and_cs`` (kernel 11,
    sigma 1.5, K1 0.01, K2 0.03, data range 1; MONAI's kernel is the outer product of 1D
    Gaussians) but filtering one axis at a time, in float32 like MONAI. The scores
    (:func:`ssim_by_region`) and the training loss (:class:`monai_t1t2.losses.MaskedL1SSIMLoss`)
    both use it; tensors keep their device and their gradient.

    Args:
        pred, ref: NumPy ``(X, Y, Z)``, or tensors ``(B, C, X, Y[, Z])`` (2D or 3D).

    Returns:
        the map, each spatial side shorter by 10 (entry ``[i, j, k]`` belongs to voxel
        ``[i + 5, j + 5, k + 5]``); NumPy ``(X - 10, Y - 10, Z - 10)`` float32 for NumPy input.
    """
    as_numpy = not isinstance(pred, torch.Tensor)
    x = torch.as_tensor(np.asarray(pred, dtype=np.float32) if as_numpy else pred).float()
    y = torch.as_tensor(np.asarray(ref, dtype=np.float32) if as_numpy else ref).float()
    if as_numpy:
        x, y = x[None, None], y[None, None]
    # float32 under a mixed-precision autocast too (a bf16-mixed run's validation scores with it)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _ssim_map(x, y, as_numpy)


def _ssim_map(x: torch.Tensor, y: torch.Tensor, as_numpy: bool) -> torch.Tensor | np.ndarray:
    dims = x.ndim - 2
    radius = SSIM_KERNEL_SIZE // 2
    distance = torch.arange(-radius, radius + 1, dtype=torch.float64)
    gauss = torch.exp(-((distance / SSIM_KERNEL_SIGMA) ** 2) / 2)
    gauss = (gauss / gauss.sum()).to(dtype=torch.float32, device=x.device)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    channels = stack.shape[1]
    conv = torch.nn.functional.conv3d if dims == 3 else torch.nn.functional.conv2d
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = SSIM_KERNEL_SIZE
        stack = conv(stack, gauss.reshape(1, 1, *shape).expand(channels, 1, *shape), groups=channels)
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = stack.chunk(5, dim=1)
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    sigma_x, sigma_y, sigma_xy = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y, mu_xy - mu_x * mu_y
    values = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * ((2 * sigma_xy + c2) / (sigma_x + sigma_y + c2))
    return values[0, 0].numpy() if as_numpy else values


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
    box = bounding_box(mask, radius)
    if not mask.any() or min(b.stop - b.start for b in box) < SSIM_KERNEL_SIZE:
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


def brain_core(brain: np.ndarray) -> np.ndarray:
    """The brain less :data:`CORE_MARGIN_VOXELS` at its edge (bool)."""
    brain = np.asarray(brain, dtype=bool)
    return brain & ~dilate(~brain, CORE_MARGIN_VOXELS)


def detail_scores(pred_n: np.ndarray, ref_n: np.ndarray, brain: np.ndarray, core: np.ndarray | None = None) -> dict[str, float]:
    """Fine detail, inside the brain less :data:`CORE_MARGIN_VOXELS` at its edge (normalised images):

    - ``sharpness``: the mean gradient magnitude of the prediction over the real T2's (1.0: as sharp as
      the real scan; below 1: smoother);
    - ``ssim_high_pass``: the SSIM of the two images' high-pass parts (each image minus its Gaussian blur of
      sigma :data:`HIGH_PASS_SIGMA` voxels): whether the detail there is the right detail.
    NaN where the core is empty or the real T2 has no gradient there. ``core``: :func:`brain_core` of
    ``brain`` when the caller has it.
    """
    from scipy import ndimage

    core = brain_core(brain) if core is None else core
    if not core.any():
        return {"sharpness": float("nan"), "ssim_high_pass": float("nan")}
    pred_n, ref_n = np.asarray(pred_n, np.float32), np.asarray(ref_n, np.float32)
    gradient = [np.sqrt(sum(g * g for g in np.gradient(image)))[core].mean() for image in (pred_n, ref_n)]
    high = [image - ndimage.gaussian_filter(image, HIGH_PASS_SIGMA) for image in (pred_n, ref_n)]
    return {"sharpness": float(gradient[0] / gradient[1]) if gradient[1] > 0 else float("nan"),
            "ssim_high_pass": ssim_by_region(high[0], high[1], core, {"core": core})["core"]}


def hole_share(pred_n: np.ndarray, ref_n: np.ndarray, brain: np.ndarray, core: np.ndarray | None = None) -> float:
    """Black holes: the share of the brain's core (:func:`brain_core`) written below :data:`HOLE_LEVEL` where
    the real T2 is above :data:`HOLE_REFERENCE` (normalised images)."""
    core = brain_core(brain) if core is None else core
    if not core.any():
        return float("nan")
    return float(np.mean((pred_n[core] < HOLE_LEVEL) & (ref_n[core] > HOLE_REFERENCE)))


def tumour_contrast(image: np.ndarray, tumour: np.ndarray, normal_white_matter: np.ndarray) -> float:
    """``mean(image[tumour]) / mean(image[normal_white_matter])`` (NaN when either is empty or WM is 0)."""
    if not tumour.any() or not normal_white_matter.any():
        return float("nan")
    white = float(image[normal_white_matter].mean(dtype=np.float64))
    return float(image[tumour].mean(dtype=np.float64)) / white if white > 0 else float("nan")


def normal_white_matter(groups: np.ndarray, tumour: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """White matter (group 1) inside ``mask`` farther than 3 voxels (city-block) from the tumour."""
    return (groups == WHITE_MATTER_GROUP) & ~dilate(tumour, TUMOUR_MARGIN_VOXELS) & mask


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
    return to_ras(volume[None] if volume.ndim == 3 else volume)


def _as_array(volume: np.ndarray | torch.Tensor, role: str) -> np.ndarray:
    array = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise InvalidVolumeError(f"{_name(volume, role)}: {role} has shape {array.shape}; a 3D volume (X, Y, Z) is needed")
    return array


def _prepare_inputs(pred, ref, mask, tumor_seg, labels, groups=None, lower=None, upper=None) -> dict[str, np.ndarray | None]:
    """Load, reorient and grid-check every input; return ``(X, Y, Z)`` arrays (None when not given)."""
    from monai.data import MetaTensor

    given = {"ref": ref, "pred": pred, "mask": mask, "tumor_seg": tumor_seg, "labels": labels, "groups": groups,
             "lower": lower, "upper": upper}
    loaded = {role: _load(v, role, allow_constant=role in ("mask", "tumor_seg", "labels", "groups"))
              for role, v in given.items() if v is not None}
    # A plain array / tensor carries no orientation and is taken as RAS; a file or MetaTensor is reoriented to
    # RAS by its affine. Mixed, they line up only when every affine is already RAS-ordered: otherwise refuse.
    placed = [role for role, v in loaded.items() if isinstance(v, MetaTensor)]
    plain = [role for role in loaded if role not in placed]
    if placed and plain:
        import nibabel as nib

        turned = {role: "".join(nib.aff2axcodes(np.asarray(loaded[role].affine, dtype=np.float64)))
                  for role in placed}
        turned = {role: codes for role, codes in turned.items() if codes != "RAS"}
        if turned:
            other, codes = next(iter(turned.items()))
            role = plain[0]
            raise GridMismatchError(
                f"{role}: a plain array has no orientation, but {_name(loaded[other], other)} ({other}) is stored "
                f"{codes} and reoriented to RAS; pass {role} as a file or a MetaTensor with its affine, as for {other}")
    loaded = {role: _to_ras(v) for role, v in loaded.items()}
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


def interval_scores(pred_n: np.ndarray, ref_n: np.ndarray, lower_n: np.ndarray, upper_n: np.ndarray,
                    brain: np.ndarray, tumour: np.ndarray | None = None, error_threshold: float = 0.15) -> dict[str, float]:
    """How an interval holds against the real T2, all in normalised units, inside ``brain``.

    Returns ``coverage``, ``width`` (mean ``upper - lower``), their tumour / non-tumour versions
    (NaN without a tumour), and ``width_auroc``: the AUROC of the width for voxels whose absolute error
    exceeds ``error_threshold`` (0.5: the width does not rank the errors; NaN when no voxel or every voxel
    does).
    """
    from scipy.stats import rankdata

    brain = np.asarray(brain, dtype=bool)
    covered = (ref_n >= lower_n - COVERAGE_TOLERANCE) & (ref_n <= upper_n + COVERAGE_TOLERANCE)
    width = upper_n - lower_n
    scores = {"coverage": float(covered[brain].mean()), "width": float(width[brain].mean())}
    for name, region in (("tumour", tumour), ("non_tumour", None if tumour is None else ~np.asarray(tumour, bool))):
        selection = brain & np.asarray(region, bool) if region is not None else None
        good = selection is not None and selection.any()
        scores[f"coverage_{name}"] = float(covered[selection].mean()) if good else float("nan")
        scores[f"width_{name}"] = float(width[selection].mean()) if good else float("nan")
    large = np.abs(pred_n - ref_n)[brain] > error_threshold
    positives, negatives = int(large.sum()), int((~large).sum())
    if positives and negatives:
        ranks = rankdata(width[brain])
        scores["width_auroc"] = float((ranks[large].sum() - positives * (positives + 1) / 2) / (positives * negatives))
    else:
        scores["width_auroc"] = float("nan")
    return scores


# ----- the protocol -------------------------------------------------------------------------
def evaluate(
    pred: VolumeLike,
    ref: VolumeLike,
    mask: VolumeLike | None = None,
    tumor_seg: VolumeLike | None = None,
    labels: VolumeLike | None = None,
    label_names: Sequence[str] | None = None,
    groups: VolumeLike | None = None,
    lower: VolumeLike | None = None,
    upper: VolumeLike | None = None,
) -> dict[str, float]:
    """Score a synthetic T2 against the real T2 with the protocol of ``EVALUATION.md``.

    Args:
        pred: synthetic T2: ``(X, Y, Z)`` array / tensor in RAS voxel order (axial = last axis),
            a ``MetaTensor`` or a file path (both reoriented to RAS).
        ref: real T2, the same kinds, on the same grid. Every input may be a plain array / tensor (all
            taken as RAS), or a file / ``MetaTensor`` (each reoriented by its affine); mixed, a plain array
            is accepted only when every file / ``MetaTensor`` is already stored in RAS voxel order (nothing
            to reorient), otherwise refused (a plain array has no orientation: pass it as a file or a
            ``MetaTensor`` with its affine).
        mask: brain mask (``> 0`` = brain); default ``ref > 0`` (see the module notes).
        tumor_seg: tumour labels (any value ``> 0`` is tumour), optional.
        labels: parcellation labels (integers), optional; enables region MAEs and the tumour contrast.
        label_names: names of the parcellation's labels, index = label value; default the names of
            the default parcellation model (read only when ``labels`` is given).
        groups: region group codes (:data:`monai_t1t2.regions.REGION_GROUPS`), instead of ``labels``
            (not both): the parcellation already mapped to groups, tumour voxels group 7 or not.
        lower, upper: the synthetic T2's interval (``predict --uncertainty``), the same kinds, in its
            units: mapped by the prediction's own normalisation map and scored by :func:`interval_scores`
            (``coverage``, ``width``, their tumour / non-tumour versions, ``width_auroc``).

    Returns:
        ``{"psnr", "mae", "ssim", "ssim_tumour", "ssim_non_tumour", "mae_non_tumour", "e_z", "e_xy", "r_z",
        "slice_flicker", "hole_share", "sharpness", "ssim_high_pass", "tumour_contrast_error",
        "c_pred", "c_ref", "mae_<group>" ...}`` as floats; NaN where a metric does not apply.

    Raises:
        GridMismatchError: the inputs are not on one grid (the message names the files), or a plain array
            comes with a file / ``MetaTensor`` that is not stored in RAS voxel order.
        InvalidVolumeError: a file is missing or unreadable, or the mask is empty.

    Example:
        >>> scores = evaluate("synT2.nii.gz", "t2.nii.gz", mask="brain.nii.gz")  # doctest: +SKIP
        >>> round(scores["ssim"], 3)  # doctest: +SKIP
    """
    if labels is not None and groups is not None:
        raise ValueError("give labels or groups, not both")
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper, or neither")
    inputs = _prepare_inputs(pred, ref, mask, tumor_seg, labels, groups, lower, upper)
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
        away = brain & ~dilate(tumour, TUMOUR_MARGIN_VOXELS)
        regions.update(ssim_tumour=tumour & brain, ssim_non_tumour=away)
        scores["mae_non_tumour"] = _masked_mean(np.abs(error), away)
    else:
        scores.update(ssim_tumour=float("nan"), ssim_non_tumour=float("nan"), mae_non_tumour=float("nan"))
    scores.update(ssim_by_region(pred_n, ref_n, brain, regions))
    gradients = gradient_errors(error, brain)
    scores.update({key: gradients[key] for key in ("r_z", "e_z", "e_xy")})
    scores["slice_flicker"] = slice_flicker(error, brain)
    core = brain_core(brain)
    scores["hole_share"] = hole_share(pred_n, ref_n, brain, core)
    scores.update(detail_scores(pred_n, ref_n, brain, core))
    scores.update(_region_scores(pred_n, ref_n, brain, inputs["tumor_seg"], inputs["labels"], label_names,
                                 inputs["groups"]))
    if inputs["lower"] is not None:
        bounds = [normalise_like(inputs[key].astype(np.float32), pred_array, brain) for key in ("lower", "upper")]
        scores.update(interval_scores(pred_n, ref_n, *bounds, brain, tumour))
    return scores


def normalise_like(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` under ``reference``'s protocol normalisation map (its 0.5th / 99.5th percentiles in ``mask``),
    clipped to ``[0, 1]``, 0 outside ``mask``: an interval scored in its prediction's units."""
    inside = np.asarray(mask, dtype=bool)
    low, high = np.percentile(reference[inside], [LOWER_PERCENTILE, UPPER_PERCENTILE])
    scale = max(float(high - low), 1e-6)
    return np.where(inside, np.clip((image - low) / scale, 0, 1), 0).astype(np.float32)


def _region_scores(pred_n: np.ndarray, ref_n: np.ndarray, brain: np.ndarray, tumor_seg: np.ndarray | None,
                   labels: np.ndarray | None, label_names: Sequence[str] | None,
                   groups: np.ndarray | None = None) -> dict[str, float]:
    """Region MAEs and the tumour contrast error (NaN where the inputs are missing)."""
    tumour = np.asarray(tumor_seg) > 0 if tumor_seg is not None else np.zeros(brain.shape, bool)
    parcellated = labels is not None or groups is not None
    if groups is not None:
        groups = np.where(tumour, TUMOUR_GROUP, np.rint(groups)).astype(np.uint8)
    elif labels is not None:
        if label_names is None:
            from monai_t1t2.nets.meshnet import DEFAULT_MODEL, label_names as model_label_names

            label_names = model_label_names(DEFAULT_MODEL)
        groups = labels_to_groups(np.rint(labels).astype(np.int64), label_names, tumour)
    else:
        groups = np.where(tumour, TUMOUR_GROUP, 0).astype(np.uint8)
    absolute = np.abs(pred_n - ref_n)
    scores = {f"mae_{name}": _masked_mean(absolute, (groups == code) & brain) for code, name in REGION_GROUPS.items()}
    if not parcellated:
        scores.update({f"mae_{name}": float("nan") for code, name in REGION_GROUPS.items() if code != TUMOUR_GROUP})
    contrast = {"c_pred": float("nan"), "c_ref": float("nan")}
    if parcellated and tumor_seg is not None:
        white = normal_white_matter(groups, tumour, brain)
        contrast = {"c_pred": tumour_contrast(pred_n, tumour & brain, white),
                    "c_ref": tumour_contrast(ref_n, tumour & brain, white)}
    c_pred, c_ref = contrast["c_pred"], contrast["c_ref"]
    error = abs(c_pred - c_ref) / c_ref if math.isfinite(c_ref) and c_ref > 0 and math.isfinite(c_pred) else float("nan")
    return {**scores, "tumour_contrast_error": error, **contrast}


