"""Image-quality control: MRIQC-style metrics and keep / reject decisions with reasons.

The metrics follow the no-reference image-quality metrics (IQMs) of MRIQC
(Esteban et al., *MRIQC: Advancing the automatic prediction of image quality in MRI from
unseen sites*, PLOS ONE 12(9):e0184661, 2017; ``mriqc.qc.anatomical`` and
``mriqc.qc.functional``), computed with numpy / scipy only:

==========================  ================================================================
metric                      definition
==========================  ================================================================
``snr``                     ``mu_WM / (sigma_WM * sqrt(n / (n - 1)))`` inside the largest
                            tissue class (MRIQC ``snr``)
``snr_dietrich``            ``mu_head / (sqrt(2 / (4 - pi)) * sigma_air)`` (MRIQC
                            ``snr_dietrich``, Dietrich 2007 eq. A.12); capped, see below
``cnr``                     ``|mu_WM - mu_GM| / sqrt(sigma_air^2 + sigma_WM^2 + sigma_GM^2)``
                            (MRIQC ``cnr``, Magnotta & Friedman 2006)
``efc``                     entropy focus criterion of Atkinson 1997, normalised by its
                            maximum (MRIQC ``efc``): ghosting / blurring raise it
``fber``                    ``E[|head|^2] / E[|background|^2]`` (MRIQC ``fber``, QAP); capped
``gsr_<axis>``              ghost-to-signal ratio along each in-plane axis (MRIQC ``gsr``):
                            ``(median(ghost band) - median(air)) / median(head)``, the ghost band
                            being the head mask shifted by N/2 along that axis, outside the head
``background_noise``        ``sigma_air / median(head)``: background noise relative to the signal
``spatial_correlation``     mean correlation of neighbouring voxels along the three axes (not
                            an MRIQC IQM): ~0 for pure noise, > 0.9 for anatomy
``usable_slice_fraction``   share of slices whose brain fraction reaches ``MIN_BRAIN_FRACTION``
``hounsfield_air_share``    share of voxels at or below -500 (CT air; none in MR magnitude)
==========================  ================================================================

Skull-stripped data has an exactly-zero background: there ``sigma_air`` and the background
energy are 0, so ``fber`` and ``snr_dietrich`` would be infinite. They are capped at
``METRIC_CAP`` (JSON has no infinity; in practice a few brain-edge voxels outside the head mask
give ``fber`` 10^3-10^4 on the shared pairs), ``cnr`` then uses only the tissue spreads, and the
ghost and noise metrics are 0 (nothing outside the brain). On a raw head, the "brain" fraction
per slice is the head fraction unless a brain mask is passed (the parcellation module's
``predict_brain_mask`` gives one, at ~20 s a volume). Tissue classes come from a 3-class 1D k-means
of the head intensities (middle class = grey matter, the larger outer class = white matter,
right for both T1 and T2 contrast), or from a parcellation when one is given.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from monai_t1t2.errors import DatasetError
from monai_t1t2.geometry import dilate, largest_component
from monai_t1t2.io import PathLike, read_volume, spacing_of
from monai_t1t2.masks import MIN_BRAIN_FRACTION, SKULL_STRIPPED_ZERO_FRACTION, head_mask, slice_axis_of, unusable_slices

logger = logging.getLogger(__name__)


# Pure noise has no spatial structure: neighbouring voxels are uncorrelated (measured: 0.0001 on
# Rician noise), while every shared volume scores 0.89 (raw clinical T1) to 0.99
# (benchmarks/qc_metrics.py). 0.5 sits far from both.
MIN_SPATIAL_CORRELATION = 0.5

# Ghost band brighter than the rest of the air by this share of the head's median signal.
# Clean shared volumes score 0 (skull-stripped) and at most 0.004 / 0.010 (raw clinical T1 / T2);
# a copy of the head at amplitude a shifted by half the field of view scores ~a (0.029-0.030 at
# 3 %). 0.02 catches ghosts from ~2 % amplitude and sits 2x above the raw T2's value.
MAX_GHOST_TO_SIGNAL = 0.02

# Air noise (Gaussian sigma) above this share of the head's median signal is reported as a
# noisy background. The raw clinical scans measure 0.027 (T1) and 0.017 (T2), skull-stripped
# volumes <= 0.003, noise of sigma 10 % of the signal 0.097-0.100. 0.05 leaves ~2x above the raw T1.
MAX_BACKGROUND_NOISE = 0.05

# A volume with fewer usable slices than this share is reported (kept: its usable slices can
# still be sampled). The shared brains use 57-79 % of their axial slices; a 20-slice slab 13 %.
MIN_USABLE_SLICE_SHARE = 0.25

# CT in Hounsfield units has its air at -1000; an MR magnitude image has no values that low (resampling
# undershoot gives a few small negatives: the paired T1s of ../shared go down to -69). A volume with this share of
# its voxels at or below HOUNSFIELD_AIR is refused as CT-like.
HOUNSFIELD_AIR, MAX_HOUNSFIELD_AIR_SHARE = -500.0, 0.05

# fber and snr_dietrich are infinite on an exactly-zero background; JSON has no infinity.
METRIC_CAP = 1.0e6

# Rayleigh correction of the air standard deviation (Dietrich 2007, eq. A.12; MRIQC).
RAYLEIGH_FACTOR = math.sqrt(2.0 / (4.0 - math.pi))


# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Metrics (MRIQC definitions; see the module docstring)
# --------------------------------------------------------------------------------------

def efc(image: np.ndarray) -> float:
    """Entropy focus criterion (Atkinson 1997), normalised by its maximum as in MRIQC's ``efc``.

    ``E = -sum(x_j / x_max * ln(x_j / x_max))`` with ``x_max = sqrt(sum x_j^2)``, divided by the
    value of a constant image of ``N`` voxels. Lower is better (energy concentrated in the head);
    ghosts and noise spread the energy and raise it.
    """
    values = np.abs(np.asarray(image, dtype=np.float32).ravel())
    count = values.size
    values = values[values > 0]  # zero voxels add exactly 0 to the sum
    energy = math.sqrt(float(np.sum(np.square(values, dtype=np.float64))))
    if energy == 0:
        return 0.0
    efc_max = count * (1.0 / math.sqrt(count)) * math.log(1.0 / math.sqrt(count))
    ratio = values / np.float32(energy)
    return float(np.sum(ratio * np.log(ratio), dtype=np.float64) / efc_max)


def fber(image: np.ndarray, head: np.ndarray) -> float:
    """Foreground-background energy ratio ``E[|head|^2] / E[|background|^2]`` (MRIQC ``fber``).

    Higher is better. An exactly-zero background (skull-stripped) gives ``METRIC_CAP``.
    """
    image = np.asarray(image, dtype=np.float64)
    foreground = float(np.mean(image[head] ** 2)) if head.any() else 0.0
    background = float(np.mean(image[~head] ** 2)) if (~head).any() else 0.0
    if background <= foreground / METRIC_CAP:
        return METRIC_CAP
    return float(foreground / background)


def ghost_bands(head: np.ndarray, axis: int, margin: np.ndarray) -> np.ndarray:
    """Where an N/2 ghost of ``head`` lands along ``axis``: the shifted head outside ``margin`` (dilated head)."""
    shifted = np.roll(head, head.shape[axis] // 2, axis=axis)
    return shifted & ~margin


def ghost_to_signal_ratio(image: np.ndarray, ghost: np.ndarray, air: np.ndarray, signal: float) -> float:
    """Ghost-to-signal ratio after MRIQC's ``gsr``: ``(median(ghost band) - median(air)) / signal``.

    MRIQC takes means; medians are used here so that a small separate bright object in the band
    (measured: a wrapped-around structure at the edge of the raw clinical T1's field of view) is not
    read as a ghost, while a ghost of the head fills the whole band and moves its median.
    Returns 0 where the band is empty.
    """
    if not ghost.any() or signal <= 0:
        return 0.0
    reference = float(np.median(image[air])) if air.any() else 0.0
    return float((float(np.median(image[ghost])) - reference) / signal)


# Replicated-object ghosts on skull-stripped volumes (no air to read a ghost band from): the brain is
# the largest component above this share of the median non-zero intensity (filled, then dilated);
# what is non-zero outside it is compared with the image shifted by N/2.
GHOST_BRAIN_THRESHOLD = 0.5
GHOST_MIN_OUTSIDE_SHARE = 0.01   # non-zero voxels outside the brain, as a share of the brain
GHOST_MIN_CORRELATION = 0.7      # correlation of those voxels with the N/2-shifted image


def replicated_object_amplitude(image: np.ndarray, axis: int) -> dict[str, float]:
    """An N/2 ghost on a skull-stripped volume (background exactly 0) along voxel ``axis``.

    Outside the brain, a ghost is ``a * image`` shifted by half the field of view. Returns the
    share of non-zero voxels outside the brain (relative to the brain), their correlation with the
    N/2-shifted image, and the ghost amplitude ``a`` (median ratio of the two where the shifted image
    is brain); the amplitude is 0 when the share or the correlation is below its threshold.
    """
    nonzero = image != 0
    result = {"share": 0.0, "correlation": 0.0, "amplitude": 0.0}
    if not nonzero.any():
        return result
    brain = largest_component(image > GHOST_BRAIN_THRESHOLD * float(np.median(image[nonzero])))
    if not brain.any():
        return result
    brain = dilate(ndimage.binary_fill_holes(brain), 3)
    outside = nonzero & ~brain
    result["share"] = float(outside.sum() / brain.sum())
    if result["share"] < GHOST_MIN_OUTSIDE_SHARE or outside.sum() < 10:
        return result
    shifted = np.roll(image, image.shape[axis] // 2, axis=axis)
    values, reference = image[outside].astype(np.float64), shifted[outside].astype(np.float64)
    if values.std() == 0 or reference.std() == 0:
        return result
    result["correlation"] = float(np.corrcoef(values, reference)[0, 1])
    source = np.roll(brain, image.shape[axis] // 2, axis=axis)[outside] & (reference > 0)
    if result["correlation"] >= GHOST_MIN_CORRELATION and source.any():
        result["amplitude"] = float(np.median(values[source] / reference[source]))
    return result


def spatial_correlation(image: np.ndarray, step: int = 2) -> float:
    """Mean Pearson correlation of each voxel with its neighbour along each axis.

    Every ``step``-th voxel is used (speed). Pure noise scores ~0, anatomy close to 1.
    """
    image = np.asarray(image, dtype=np.float32)
    values = []
    for axis in range(image.ndim):
        head = [slice(None, None, step)] * image.ndim
        tail = [slice(None, None, step)] * image.ndim
        head[axis], tail[axis] = slice(0, -1, step), slice(1, None, step)
        first, second = image[tuple(head)].ravel(), image[tuple(tail)].ravel()
        if first.std() == 0 or second.std() == 0:
            values.append(0.0)
            continue
        values.append(float(np.corrcoef(first, second)[0, 1]))
    return float(np.mean(values))


def tissue_classes(values: np.ndarray, classes: int = 3, iterations: int = 25) -> np.ndarray:
    """1D k-means of intensities into ``classes`` ordered dark to bright (an intensity mixture).

    Returns:
        integer class index ``0..classes-1`` per value.
    """
    values = np.asarray(values, dtype=np.float64)
    sample = values[:: max(1, values.size // 200_000)]  # the class centres need no more voxels
    centers = np.percentile(sample, np.linspace(100 / (2 * classes), 100 - 100 / (2 * classes), classes))
    for _ in range(iterations):
        assignment = np.digitize(sample, (centers[:-1] + centers[1:]) / 2)
        updated = np.array([sample[assignment == k].mean() if np.any(assignment == k) else centers[k]
                            for k in range(classes)])
        if np.allclose(updated, centers):
            break
        centers = np.sort(updated)
    return np.digitize(values, (centers[:-1] + centers[1:]) / 2)


def _grey_white_from_mixture(image: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey (middle class) and white matter (larger outer class) samples of a 3-class mixture."""
    values = image[brain]
    classes = tissue_classes(values)
    counts = np.bincount(classes, minlength=3)
    white = 0 if counts[0] > counts[2] else 2
    return values[classes == 1], values[classes == white]


def _grey_white_from_labels(image: np.ndarray, labels: np.ndarray, label_names: Sequence[str]):
    from monai_t1t2.regions import labels_to_groups

    groups = labels_to_groups(labels, label_names)
    return image[groups == 2], image[groups == 1]


def _spread(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def compute_metrics(
    image: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    brain: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    label_names: Sequence[str] = (),
) -> tuple[dict[str, float], list[int]]:
    """All metrics of one volume and its unusable slices.

    Args:
        image: ``(X, Y, Z)`` intensities.
        spacing: voxel size in mm (finds the slice axis: the thickest side).
        brain: optional brain mask ``(X, Y, Z)`` for the slice brain fractions and tissue classes;
            default: the head mask (the brain itself on skull-stripped data).
        labels, label_names: optional parcellation on the same grid; its white matter and
            cortical grey replace the intensity mixture for SNR / CNR.

    Returns:
        ``(metrics, unusable_slices)``: metric name -> float, and slice indices along the slice axis.
    """
    image = np.asarray(image, dtype=np.float32)
    axis = slice_axis_of(spacing)
    head = head_mask(image, axis)
    brain = head if brain is None else np.asarray(brain) > 0
    bad = unusable_slices(brain, axis=axis)
    metrics: dict[str, float] = {
        "hounsfield_air_share": float(np.mean(image <= HOUNSFIELD_AIR)),
        "spatial_correlation": spatial_correlation(image),
        "efc": efc(image),
        "head_fraction": float(head.mean()),
        "slice_axis": float(axis),
        "usable_slice_fraction": 1.0 - len(bad) / image.shape[axis],
    }
    if not head.any() or not brain.any():
        return metrics, bad
    signal = float(np.median(image[head]))
    margin = dilate(head, 3)
    in_plane = [a for a in range(3) if a != axis]
    bands = {a: ghost_bands(head, a, margin) for a in in_plane}
    air = ~margin
    for band in bands.values():
        air &= ~band
    sigma_air = RAYLEIGH_FACTOR * float(image[air].std()) if air.sum() > 1 else 0.0
    for a, band in bands.items():
        metrics[f"gsr_{'xyz'[a]}"] = ghost_to_signal_ratio(image, band, air, signal)
    # A zero background: the first half of masks.is_skull_stripped only, since a ghost copy of the
    # brain doubles the non-zero volume, which the rule's brain-volume half would then refuse.
    if float((image == 0).mean()) >= SKULL_STRIPPED_ZERO_FRACTION:
        # Skull-stripped: no air, so the band above reads nothing; look for a copy of the brain outside it.
        for a in in_plane:
            found = replicated_object_amplitude(image, a)
            metrics[f"ghost_copy_{'xyz'[a]}"] = found["amplitude"]
            metrics[f"ghost_copy_correlation_{'xyz'[a]}"] = found["correlation"]
    if labels is not None:
        grey, white = _grey_white_from_labels(image, np.asarray(labels), label_names)
    else:
        grey, white = _grey_white_from_mixture(image, brain)
    tissue_spread = math.sqrt(sigma_air**2 + _spread(grey) ** 2 + _spread(white) ** 2)
    n = white.size
    metrics.update({
        "background_noise": sigma_air / signal if signal > 0 else 0.0,
        "snr": float(white.mean() / (_spread(white) * math.sqrt(n / (n - 1)))) if n > 1 and _spread(white) > 0 else METRIC_CAP,
        "snr_dietrich": min(float(image[head].mean()) / sigma_air, METRIC_CAP) if sigma_air > 0 else METRIC_CAP,
        "cnr": float(abs(white.mean() - grey.mean()) / tissue_spread) if grey.size and n and tissue_spread > 0 else 0.0,
        "fber": fber(image, head),
    })
    return metrics, bad


def decide(metrics: Mapping[str, float], unusable: Sequence[int]) -> tuple[bool, list[str]]:
    """Keep / reject with reasons a person can check against the metrics.

    Rejected (``passed`` False): noise only (no spatial structure, or no head found), ghosting
    (a ghost band above ``MAX_GHOST_TO_SIGNAL``: the artefact would be learnt as anatomy), or no
    usable slice. Reported but kept: a noisy background, few usable slices (the rest is still
    sampled; the slice indices are in the report).
    """
    reasons, passed = [], True
    air = metrics.get("hounsfield_air_share", 0.0)
    if air > MAX_HOUNSFIELD_AIR_SHARE:
        return False, [f"looks like CT, not MR (rule hounsfield_air_share): {air:.0%} of the volume is at or below "
                       f"{HOUNSFIELD_AIR:.0f} (air in Hounsfield units); an MR magnitude image has no such values"]
    correlation = metrics["spatial_correlation"]
    if correlation < MIN_SPATIAL_CORRELATION:
        return False, [f"noise only (rule spatial_correlation): neighbouring voxels correlate {correlation:.2f} "
                       f"(< {MIN_SPATIAL_CORRELATION}); no anatomy found"]
    if metrics["head_fraction"] == 0:
        return False, ["noise only (rule head_fraction): no head found above the background "
                       f"(head_fraction {metrics['head_fraction']:.3f}); no anatomy found"]
    for name in ("gsr_x", "gsr_y", "gsr_z"):
        if metrics.get(name, 0.0) > MAX_GHOST_TO_SIGNAL:
            passed = False
            reasons.append(f"ghosting: ghost-to-signal ratio {name} = {metrics[name]:.3f} "
                           f"(> {MAX_GHOST_TO_SIGNAL}) in the band shifted by N/2 along voxel axis {name[-1]}")
    for name in ("ghost_copy_x", "ghost_copy_y", "ghost_copy_z"):
        if metrics.get(name, 0.0) > MAX_GHOST_TO_SIGNAL:
            passed = False
            reasons.append(f"ghosting (rule {name}): a copy of the brain at {metrics[name]:.3f} of its intensity, "
                           f"shifted by N/2 along voxel axis {name[-1]}, outside the brain (correlation "
                           f"{metrics['ghost_copy_correlation_' + name[-1]]:.2f} >= {GHOST_MIN_CORRELATION})")
    if metrics.get("background_noise", 0.0) > MAX_BACKGROUND_NOISE:
        reasons.append(f"noisy background (kept): air noise {metrics['background_noise']:.3f} of the median "
                       f"signal (> {MAX_BACKGROUND_NOISE}), SNR_dietrich {metrics['snr_dietrich']:.1f}")
    share = metrics["usable_slice_fraction"]
    if share == 0:
        passed = False
        reasons.append("no usable slice: no slice holds enough brain")
    elif share < MIN_USABLE_SLICE_SHARE:
        reasons.append(f"little brain (kept): only {share:.0%} of the slices hold >= {MIN_BRAIN_FRACTION:.0%} "
                       f"of the largest slice's brain area; {len(unusable)} slices are unusable")
    return passed, reasons


# --------------------------------------------------------------------------------------
# Public API, MONAI transforms, command line
# --------------------------------------------------------------------------------------

def _image_and_spacing(volume) -> tuple[np.ndarray, tuple[float, float, float], str]:
    if isinstance(volume, (str, Path)):
        volume = read_volume(volume)
    name = ""
    spacing = (1.0, 1.0, 1.0)
    if hasattr(volume, "affine"):
        spacing = spacing_of(volume.affine)
        name = str(getattr(volume, "meta", {}).get("filename_or_obj", ""))
    array = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    while array.ndim > 3:
        array = array[0]
    return array.astype(np.float32, copy=False), spacing, name


def quality_report(
    path_or_volume: PathLike | np.ndarray | torch.Tensor,
    brain: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    label_names: Sequence[str] = (),
) -> dict:
    """Quality-control report of one volume: MRIQC-style metrics and a keep / reject decision.

    Args:
        path_or_volume: a volume file, a ``MetaTensor`` ``(1, X, Y, Z)`` (its affine gives the
            voxel size), or an array ``(X, Y, Z)`` taken as 1 mm isotropic.
        brain, labels, label_names: optional brain mask / parcellation (see :func:`compute_metrics`).

    Returns:
        ``{"path": str, "passed": bool, "reasons": [str], "metrics": {name: float},
        "unusable_slices": [int]}`` (slice indices along ``metrics["slice_axis"]``).

    Raises:
        InvalidVolumeError: the file is missing or not a valid volume.

    Example:
        >>> report = quality_report("tests/data/sample_t1.nii.gz")
        >>> sorted(report)
        ['metrics', 'passed', 'path', 'reasons', 'unusable_slices']
    """
    image, spacing, name = _image_and_spacing(path_or_volume)
    metrics, bad = compute_metrics(image, spacing, brain, labels, label_names)
    passed, reasons = decide(metrics, bad)
    path = str(path_or_volume) if isinstance(path_or_volume, (str, Path)) else name
    return {"path": path, "passed": passed, "reasons": reasons,
            "metrics": {k: round(float(v), 6) for k, v in metrics.items()}, "unusable_slices": bad}


def image_problems(t1) -> list[str]:
    """The cheap checks of an input T1, run before any network: the QC verdict (CT-like, noise only,
    ghosting, no usable slice) as reasons prefixed ``QC:`` (empty list: none)."""
    report = quality_report(t1)
    return [] if report["passed"] else [f"QC: {reason}" for reason in report["reasons"]]


def brain_volume_problems(mask: np.ndarray | torch.Tensor, spacing: Sequence[float]) -> list[str]:
    """The brain-volume gate: the brain mask against an adult brain's :data:`~monai_t1t2.masks.MIN_BRAIN_ML`
    to :data:`~monai_t1t2.masks.MAX_BRAIN_ML`."""
    from monai_t1t2.masks import MAX_BRAIN_ML, MIN_BRAIN_ML, mask_volume_ml

    volume = mask_volume_ml(mask, spacing)
    if MIN_BRAIN_ML <= volume <= MAX_BRAIN_ML:
        return []
    return [f"the brain mask holds {volume:.0f} ml, outside an adult brain's "
            f"{MIN_BRAIN_ML:.0f}-{MAX_BRAIN_ML:.0f} ml (not a brain, a partial brain, or a wrong mask)"]


# T1 contrast, first the cheap rule: the median of the brain's normalised intensity (0.5th / 99.5th
# percentiles) 2-4 mm inside its edge (cortex, sulcal CSF) less the median 8-12 mm deep (white matter).
# A T1 has the outer part darker: on the 46 T1s of ../shared (cohort, paired, raw after the brain mask,
# template) -0.405 to -0.041; the 46 T2s score -0.084 to +0.140 (2026-12-08, `python
# benchmarks/qc_cohort.py --t1-check`). From SHELL_CLEAR_T1 down it is a T1; from SHELL_NOT_T1 up it is
# refused; between, the parcellation decides (:func:`parcellated_contrast_problems`).
SHELL_MM, DEEP_MM = (2.0, 4.0), (8.0, 12.0)
# A brain has fine structure (folds, sulci, vessels): the median absolute difference between the
# normalised image and its Gaussian blur of FINE_SIGMA_MM, more than FINE_DEPTH_MM inside the brain. The
# 46 T1s of ../shared score 0.0166-0.0610 (the thick-slice 2013 scans lowest, the template 0.0355); a
# smooth sphere phantom 0.0006 (2026-12-07). Below MIN_FINE_STRUCTURE: not a brain.
FINE_SIGMA_MM, FINE_DEPTH_MM, MIN_FINE_STRUCTURE = 2.0, 4.0, 0.005
SHELL_CLEAR_T1, SHELL_NOT_T1 = -0.12, 0.0
# The parcellation must find these groups (regions.REGION_GROUPS) with at least this many ml to call
# the image a brain: the shared brains hold 16.7-36.5 ml of ventricles / CSF, > 300 ml of white matter
# and cortex (benchmarks/README.md, parcellation plausibility).
MIN_GROUP_ML = {"white_matter": 100.0, "cortical_grey": 100.0, "ventricles_csf": 3.0}


def brain_depth(brain: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Each voxel's distance in mm to the outside of ``brain`` (0 outside it)."""
    return ndimage.distance_transform_edt(np.asarray(brain, dtype=bool), sampling=tuple(float(s) for s in spacing))


def shell_contrast(image: np.ndarray, brain: np.ndarray, spacing: Sequence[float],
                   depth: np.ndarray | None = None) -> float:
    """The brain's normalised median intensity :data:`SHELL_MM` inside its edge less that :data:`DEEP_MM`
    deep (NaN when either part is empty): negative for T1 contrast, positive for T2 / FLAIR. ``depth``:
    :func:`brain_depth` when the caller has it."""
    from monai_t1t2.metrics import LOWER_PERCENTILE, UPPER_PERCENTILE

    brain = np.asarray(brain, dtype=bool)
    depth = (brain_depth(brain, spacing) if depth is None else depth)[brain]
    values = np.asarray(image, dtype=np.float32)[brain]
    shell = (depth >= SHELL_MM[0]) & (depth < SHELL_MM[1])
    deep = (depth >= DEEP_MM[0]) & (depth < DEEP_MM[1])
    if not shell.any() or not deep.any():
        return float("nan")
    low, high = np.percentile(values, [LOWER_PERCENTILE, UPPER_PERCENTILE])
    scale = max(float(high - low), 1e-6)
    return float((np.median(values[shell]) - np.median(values[deep])) / scale)


def fine_structure(image: np.ndarray, brain: np.ndarray, spacing: Sequence[float],
                   depth: np.ndarray | None = None) -> float:
    """Median ``|n - gaussian(n, FINE_SIGMA_MM)|`` over the brain deeper than :data:`FINE_DEPTH_MM`, ``n`` the
    image normalised by the brain's 0.5th / 99.5th percentiles (NaN when that part is empty). ``depth``:
    :func:`brain_depth` when the caller has it."""
    from monai_t1t2.metrics import LOWER_PERCENTILE, UPPER_PERCENTILE

    brain = np.asarray(brain, dtype=bool)
    spacing = tuple(float(s) for s in spacing)
    inner = (brain_depth(brain, spacing) if depth is None else depth) > FINE_DEPTH_MM
    if not inner.any():
        return float("nan")
    image = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(image[brain], [LOWER_PERCENTILE, UPPER_PERCENTILE])
    normalised = (image - low) / max(float(high - low), 1e-6)
    blurred = ndimage.gaussian_filter(normalised, [FINE_SIGMA_MM / s for s in spacing])
    return float(np.median(np.abs(normalised - blurred)[inner]))


def parcellated_contrast_problems(image: np.ndarray, labels: np.ndarray, label_names: Sequence[str],
                                  spacing: Sequence[float]) -> list[str]:
    """The parcellation's verdict: the anatomy found (:data:`MIN_GROUP_ML`), then T1 contrast: white
    matter brighter than the ventricles / CSF and than the cortex."""
    from monai_t1t2.regions import REGION_GROUPS, labels_to_groups

    groups = labels_to_groups(np.rint(np.asarray(labels)).astype(np.int64), label_names)
    image = np.asarray(image, dtype=np.float32)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    codes = {name: code for code, name in REGION_GROUPS.items()}
    missing = [f"{name} {np.count_nonzero(groups == codes[name]) * voxel_ml:.0f} ml (< {least:.0f})"
               for name, least in MIN_GROUP_ML.items() if np.count_nonzero(groups == codes[name]) * voxel_ml < least]
    if missing:
        return ["no brain anatomy recognised: the whole-brain parcellation finds " + ", ".join(missing)]
    median = {name: float(np.median(image[groups == codes[name]])) for name in MIN_GROUP_ML}
    white = median["white_matter"]
    brighter = [name for name in ("ventricles_csf", "cortical_grey") if median[name] >= white]
    if not brighter:
        return []
    return [f"not T1-weighted: {' and '.join(n.replace('_', ' ') for n in brighter)} "
            f"(median {', '.join(f'{median[n]:.4g}' for n in brighter)}) at least as bright as white matter "
            f"({white:.4g}) in the parcellation; a T2-weighted or FLAIR image?"]


def t1_contrast_problems(t1, mask: np.ndarray | torch.Tensor, parcellator=None) -> list[str]:
    """Whether a brain is one, with T1 contrast (empty list: it is): the cheap :func:`fine_structure` and
    :func:`shell_contrast` rules, and in the shell contrast's undecided band the parcellation
    (:func:`parcellated_contrast_problems`; ``parcellator``: a callable T1 -> labels on its grid with
    ``label_names``, default the package's MeshNet). Without a parcellation model the undecided band
    passes with a warning."""
    image, spacing, _ = _image_and_spacing(t1)
    brain = _image_and_spacing(mask)[0] > 0
    depth = brain_depth(brain, spacing)  # one distance transform for both cheap rules
    fine = fine_structure(image, brain, spacing, depth)
    if fine < MIN_FINE_STRUCTURE:
        return [f"no brain anatomy recognised: no fine structure inside the brain (median detail {fine:.4f} of its "
                f"range, below {MIN_FINE_STRUCTURE:g}; the shared T1s score 0.017 and above): a smooth phantom?"]
    shell = shell_contrast(image, brain, spacing, depth)
    if not np.isfinite(shell) or shell <= SHELL_CLEAR_T1:
        return []
    if shell >= SHELL_NOT_T1:
        return [f"not T1-weighted: the brain's outer {SHELL_MM[0]:g}-{SHELL_MM[1]:g} mm are not darker than its "
                f"part {DEEP_MM[0]:g}-{DEEP_MM[1]:g} mm deep (shell contrast {shell:+.3f}; T1s score "
                f"below {SHELL_NOT_T1:g}): a T2-weighted or FLAIR image, or not a brain?"]
    if parcellator is None:
        from monai_t1t2.nets.meshnet import DEFAULT_CONFORM_INTENSITY, DEFAULT_MODEL, _loaded_parcellator, brainchop_dir

        if not (brainchop_dir() / DEFAULT_MODEL / "model.json").is_file():
            logger.warning("T1 contrast undecided (shell contrast %+.3f) and no parcellation model in %s: "
                           "not checked further", shell, brainchop_dir())
            return []
        # the 18-class network alone: the tissue model only fills the voxels it leaves unknown
        parcellator = _loaded_parcellator(DEFAULT_MODEL, None, DEFAULT_CONFORM_INTENSITY, None)
    labels = parcellator(t1)
    return parcellated_contrast_problems(image, _image_and_spacing(labels)[0], parcellator.label_names, spacing)


def brain_problems(t1, mask: np.ndarray | torch.Tensor) -> list[str]:
    """What is checked once the brain mask is made: :func:`brain_volume_problems`, then, on a brain of a
    plausible volume, :func:`t1_contrast_problems` (which may parcellate)."""
    return brain_volume_problems(mask, spacing_of(t1.affine)) or t1_contrast_problems(t1, mask)


def input_problems(t1, mask: np.ndarray | torch.Tensor) -> list[str]:
    """Why a T1 (a ``MetaTensor`` with its affine) is not a plausible brain to translate (empty list:
    plausible): :func:`image_problems`, :func:`brain_volume_problems` of ``mask``, then, on a plausible
    brain, :func:`t1_contrast_problems`. The package's one rule set for its inputs; ``predict`` runs
    :func:`image_problems` before the brain mask is made and the contrast check last."""
    problems = brain_volume_problems(mask, spacing_of(t1.affine)) + image_problems(t1)
    return problems or brain_problems(t1, mask)


class QualityControl(Transform):
    """Array transform: ``(1, X, Y, Z)`` image -> its :func:`quality_report` dict (the image is not changed)."""

    def __call__(self, image, brain=None) -> dict:
        mask = None if brain is None else _image_and_spacing(brain)[0] > 0
        return quality_report(image, brain=mask)


class QualityControld(MapTransform):
    """Add the QC result of each of ``keys`` as ``d[f"{key}{qc_suffix}"]`` (a :func:`quality_report` dict).

    Args:
        keys: images ``(1, X, Y, Z)`` to check (a ``MetaTensor``'s affine gives the voxel size).
        qc_suffix: suffix of the written keys (``"t1"`` -> ``"t1_qc"``).
        brain_key: optional key of a brain mask used for the slice brain fractions.
        raise_on_fail: raise ``ValueError`` naming the reasons when an image fails, so a
            pipeline can stop on bad data instead of carrying the flag along.
    """

    def __init__(self, keys: KeysCollection, qc_suffix: str = "_qc", brain_key: str | None = None,
                 raise_on_fail: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.qc_suffix, self.brain_key, self.raise_on_fail = qc_suffix, brain_key, raise_on_fail
        self.check = QualityControl()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        brain = d[self.brain_key] if self.brain_key else None
        for key in self.key_iterator(d):
            report = self.check(d[key], brain)
            if self.raise_on_fail and not report["passed"]:
                raise ValueError(f"{report['path'] or key}: failed quality control: {'; '.join(report['reasons'])}")
            d[f"{key}{self.qc_suffix}"] = report
        return d


def exclude_failing_subjects(subjects: Sequence[dict], keys: Sequence[str] = ("t1", "t2")) -> list[dict]:
    """Subjects whose every image in ``keys`` passes QC; each excluded one is logged with its reasons.

    Raises:
        DatasetError: no subject is left.
    """
    kept = []
    for subject in subjects:
        failures = []
        for key in keys:
            if subject.get(key):
                report = quality_report(subject[key])
                if not report["passed"]:
                    failures.append(f"{subject[key]}: {'; '.join(report['reasons'])}")
        if failures:
            logger.warning("excluding case %s from training (quality control): %s",
                           subject.get("case", "?"), " | ".join(failures))
        else:
            kept.append(subject)
    if not kept:
        raise DatasetError(f"no training subject passes quality control ({len(subjects)} checked; "
                           "see the warnings, or run monai-t1t2 qc on the data)")
    return kept


# --------------------------------------------------------------------------------------
# Simulated corruptions: how the tests and benchmarks/qc_metrics.py check the decisions
# --------------------------------------------------------------------------------------

def simulate_noise_only(shape: Sequence[int], sigma: float, seed: int = 0) -> np.ndarray:
    """Rician noise without anatomy: the magnitude of complex Gaussian noise (Rayleigh), ``(X, Y, Z)``."""
    return simulate_rician_noise(np.zeros(tuple(shape), np.float32), sigma, seed)


def simulate_rician_noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Magnitude of ``image`` plus complex Gaussian noise of standard deviation ``sigma``: Rician in the head,
    Rayleigh in the air (MONAI's ``RandRicianNoise``, always applied, ``sigma`` fixed)."""
    from monai.transforms import RandRicianNoise

    noise = RandRicianNoise(prob=1.0, std=float(sigma), sample_std=False)
    noise.set_random_state(seed=seed)
    return np.asarray(noise(np.asarray(image, dtype=np.float32)[None])[0], dtype=np.float32)


def simulate_ghost(image: np.ndarray, axis: int, amplitude: float) -> np.ndarray:
    """Add an N/2 ghost: a copy of ``image`` scaled by ``amplitude``, shifted by half the field of view along ``axis``.

    Written here rather than TorchIO's ``RandomGhosting`` (k-space artefacts of random strength, not a
    dependency of the package): QC's ghost-to-signal ratio is tested against a ghost of known amplitude
    and place, which this exact image-space N/2 copy gives."""
    image = np.asarray(image, dtype=np.float32)
    return image + amplitude * np.roll(image, image.shape[axis] // 2, axis=axis)


def simulate_slab(image: np.ndarray, start: int, stop: int, cap_slices: int = 3, cap_width: int = 10) -> np.ndarray:
    """Keep the axial (last-axis) slices ``start:stop``, plus ``cap_slices`` after them holding only a
    ``cap_width``-voxel square of brain around the slab's centre line; everything else becomes 0.

    The slab's slices are usable, the caps and the empty slices are not (a thin slab acquisition, or
    a volume cut by a bad field of view).
    """
    image = np.asarray(image, dtype=np.float32)
    slab = np.zeros_like(image)
    slab[..., start:stop] = image[..., start:stop]
    brain = np.argwhere(image[..., start:stop] > 0)
    if cap_slices and len(brain):
        cx, cy = brain[:, 0].mean().astype(int), brain[:, 1].mean().astype(int)
        half = cap_width // 2
        square = (slice(cx - half, cx + half), slice(cy - half, cy + half), slice(stop, stop + cap_slices))
        slab[square] = image[square]
    return slab
