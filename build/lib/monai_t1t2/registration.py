"""Turn T1/T2 pairs that are not on one grid (IXI-style) into training pairs.

Stage: *prepare* (before training). For each subject ``<case>/t1.*``, ``t2.*`` [, ``tumor_seg.*``]:

1. the T2 is placed on the T1's voxel grid through the scanner (world) coordinates of both headers;
2. a rigid (6-parameter) registration, driven by Mattes mutual information, refines it
   (ITK v4 framework: ``Euler3DTransform``, ``RegularStepGradientDescentOptimizerv4``,
   multi-resolution); the world coordinates are the starting point, so the translation starts at
   zero and the rotation centre is the T1 brain's centre;
3. with ``skull_strip``, both are cut to the T1's brain (brainchop's ``mindgrab`` network,
   :func:`monai_t1t2.masks.brain_mask`), so that a raw pair with skull and noisy background
   becomes a pair like ``data/paired`` (brain mask ``(t1 > 0) & (t2 > 0)``);
4. ``<output>/<case>/t1.nii.gz`` (the T1 unchanged, or skull-stripped), ``t2.nii.gz`` (linear),
   ``tumor_seg.nii.gz`` (nearest neighbour), ``registration.json`` (transform, before/after
   similarity, input hashes, settings) and ``registration.png`` (T1 with the T2's edges over it,
   before and after) are written.

A case whose ``registration.json`` records the same input hashes and settings is not done again,
so pointing training at raw pairs registers each subject once.

Coordinates: nibabel affines map voxel indices to RAS world mm; ITK works in LPS. The ITK images
are built here from the nibabel arrays and affines (not read by ITK), so both sides agree exactly;
the transform is converted with ``F = diag(-1, -1, 1)``.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from monai_t1t2.geometry import bounding_box, dilate, resample_to_grid, same_grid
from monai_t1t2.masks import foreground_mask
from monai_t1t2.errors import DatasetError, GridMismatchError, OutputExistsError, T1T2Error
from monai_t1t2.io import NIFTI_SUFFIXES, VOLUME_SUFFIXES, atomic_write_bytes, atomic_write_text, read_volume, spacing_of, volume_stem, write_volume

REPORT_NAME = "registration.json"
PNG_NAME = "registration.png"
REPORT_FORMAT = "monai_t1t2.registration/1"
REGISTER_MODES = ("rigid", "none")
# Share of the T1's brain that must lie inside the T2's field of view.
MIN_OVERLAP = 0.5
# Same-session pairs are never this far apart; a larger result means the optimiser went astray.
MAX_ROTATION_DEG = 20.0
MAX_TRANSLATION_MM = 40.0
# Largest relative loss of Mattes mutual information (whole fixed mask) accepted after registration.
MAX_MI_LOSS = 0.05
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS, its own inverse


class RegistrationError(T1T2Error):
    """A pair cannot be registered: no overlap, no convergence, or an implausible result."""


@dataclass
class RigidSettings:
    """Multi-resolution rigid registration settings (ITK v4).

    Args:
        shrink_factors: per level, integer downsampling of both images (coarse to fine).
        smoothing_sigmas_mm: per level, Gaussian smoothing before shrinking, in mm.
        iterations: most optimiser iterations per level.
        sampling_fraction: share of the fixed image's voxels sampled (at random) by the metric.
        histogram_bins: Mattes mutual information bins.
        learning_rate: first step length (scaled parameter units: about mm).
        minimum_step: step length at which a level counts as converged.
        seed: metric sampling seed.
    """

    shrink_factors: Sequence[int] = (4, 2, 1)
    smoothing_sigmas_mm: Sequence[float] = (3.0, 1.5, 0.0)
    iterations: int = 200
    sampling_fraction: float = 0.1
    histogram_bins: int = 50
    learning_rate: float = 2.0
    minimum_step: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm) or not self.shrink_factors:
            raise ValueError("shrink_factors and smoothing_sigmas_mm need one entry per level")


@dataclass
class RigidResult:
    """A rigid transform from the fixed (T1) world to the moving (T2) world, and how it was found.

    ``matrix_ras`` (4x4) maps a point of the T1's RAS world (mm) to the T2's RAS world:
    the T2 value shown at T1 point ``p`` is read at ``matrix_ras @ p``.
    """

    matrix_ras: np.ndarray
    center_ras_mm: list[float]
    metric_before: float
    metric_after: float
    iterations: list[int] = field(default_factory=list)
    stop_conditions: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rotation_deg(self) -> float:
        """Total rotation angle (axis-angle) in degrees."""
        return rotation_angle_deg(self.matrix_ras)

    @property
    def translation_mm(self) -> list[float]:
        """Displacement of the rotation centre (RAS, mm)."""
        center = np.r_[self.center_ras_mm, 1.0]
        return [float(v) for v in (self.matrix_ras @ center - center)[:3]]

    def to_dict(self) -> dict:
        euler = euler_angles_deg(self.matrix_ras)
        return {
            "matrix_ras": np.round(self.matrix_ras, 8).tolist(),
            "center_ras_mm": [round(v, 4) for v in self.center_ras_mm],
            "rotation_deg": round(self.rotation_deg, 4),
            "euler_xyz_deg": [round(v, 4) for v in euler],
            "translation_mm": [round(v, 4) for v in self.translation_mm],
            "mattes_mi_before": self.metric_before,
            "mattes_mi_after": self.metric_after,
            "iterations_per_level": self.iterations,
            "stop_conditions": self.stop_conditions,
            "seconds": round(self.seconds, 2),
        }


# --------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------

def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Rotation angle (degrees) of the 3x3 part of a rigid 4x4 ``matrix``."""
    cosine = (np.trace(np.asarray(matrix)[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def euler_angles_deg(matrix: np.ndarray) -> list[float]:
    """Angles (degrees) about x, y, z with ``R = Rz @ Ry @ Rx`` of a rigid 4x4 ``matrix`` (RAS)."""
    rotation = np.asarray(matrix)[:3, :3]
    about_y = math.asin(-float(np.clip(rotation[2, 0], -1.0, 1.0)))
    about_x = math.atan2(rotation[2, 1], rotation[2, 2])
    about_z = math.atan2(rotation[1, 0], rotation[0, 0])
    return [math.degrees(about_x), math.degrees(about_y), math.degrees(about_z)]


def rigid_matrix(angles_deg: Sequence[float], translation_mm: Sequence[float],
                 center_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rigid transform: rotate by ``R = Rz @ Ry @ Rx`` about ``center_mm``, then translate."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ ry @ rx
    center = np.asarray(center_mm, dtype=np.float64)
    matrix[:3, 3] = center - matrix[:3, :3] @ center + np.asarray(translation_mm, dtype=np.float64)
    return matrix




def field_of_view_fraction(mask: np.ndarray, mask_affine: np.ndarray, other_shape: Sequence[int],
                           other_affine: np.ndarray, world_transform: np.ndarray | None = None) -> float:
    """Share of the ``mask`` voxels whose world position lies inside the other grid's field of view."""
    points = np.argwhere(mask)
    if len(points) == 0:
        return 0.0
    points = points[:: max(1, len(points) // 200_000)]  # a subsample is plenty for a fraction
    transform = np.eye(4) if world_transform is None else world_transform
    voxel_map = np.linalg.inv(other_affine) @ transform @ mask_affine
    other = points @ voxel_map[:3, :3].T + voxel_map[:3, 3]
    inside = np.all((other >= -0.5) & (other <= np.asarray(other_shape) - 0.5), axis=1)
    return float(inside.mean())




# --------------------------------------------------------------------------------------
# Similarity measures
# --------------------------------------------------------------------------------------

def normalized_mutual_information(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, bins: int = 64) -> float:
    """Studholme's normalised mutual information ``(H(a) + H(b)) / H(a, b)`` inside ``mask``.

    Args:
        a, b: arrays of one shape (e.g. a T1 and a T2 on its grid).
        mask: bool array of that shape; ``None`` uses every voxel.
        bins: histogram bins per image, spanning each image's range inside the mask.

    Returns:
        1.0 for independent images up to 2.0 for images that determine each other.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    selected = np.ones(a.shape, bool) if mask is None else np.asarray(mask, bool)
    values_a, values_b = np.asarray(a)[selected].ravel(), np.asarray(b)[selected].ravel()
    if values_a.size == 0:
        raise ValueError("the mask selects no voxel")
    joint, _, _ = np.histogram2d(values_a, values_b, bins=bins)
    joint /= joint.sum()

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    joint_entropy = entropy(joint)
    if joint_entropy == 0.0:
        return 2.0  # both constant: each determines the other
    return (entropy(joint.sum(axis=1)) + entropy(joint.sum(axis=0))) / joint_entropy


def edge_map(volume: np.ndarray, mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
             sigma_mm: float = 1.0, quantile: float = 0.85) -> np.ndarray:
    """Bool edges: Gaussian gradient magnitude (``sigma_mm``) above its ``quantile`` inside ``mask``.

    A quantile rather than a fixed threshold makes the map independent of intensity units, so a
    T1 and a T2 give comparable edge densities.
    """
    sigma = [sigma_mm / s for s in spacing]
    magnitude = ndimage.gaussian_gradient_magnitude(np.asarray(volume, dtype=np.float32), sigma)
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(volume.shape, bool)
    return (magnitude > np.quantile(magnitude[mask], quantile)) & mask


def edge_distance(reference: np.ndarray, moving: np.ndarray, mask: np.ndarray,
                  spacing: Sequence[float] = (1.0, 1.0, 1.0), sigma_mm: float = 1.0, quantile: float = 0.85) -> float:
    """Mean distance (mm) from each edge voxel of ``moving`` to the nearest edge of ``reference``.

    Both edge maps come from :func:`edge_map` inside ``mask`` (a dilated brain mask keeps the brain
    outline, the strongest shared edge). Smaller is better aligned.
    """
    reference_edges = edge_map(reference, mask, spacing, sigma_mm, quantile)
    moving_edges = edge_map(moving, mask, spacing, sigma_mm, quantile)
    if not reference_edges.any() or not moving_edges.any():
        raise ValueError("no edges inside the mask")
    distance = ndimage.distance_transform_edt(~reference_edges, sampling=tuple(spacing))
    return float(distance[moving_edges].mean())


def alignment_scores(t1: np.ndarray, t2_on_t1: np.ndarray, brain: np.ndarray,
                     spacing: Sequence[float]) -> dict[str, float]:
    """How well a T2 on the T1's grid is aligned with it.

    Returns:
        ``nmi_brain``: :func:`normalized_mutual_information` inside ``brain`` (higher is better);
        ``edge_distance_mm``: :func:`edge_distance` inside ``brain`` dilated by ~3 mm (lower is better).
    """
    around = dilate(brain, max(1, round(3.0 / min(spacing))))
    box = bounding_box(around, margin=4)
    return {
        "nmi_brain": round(normalized_mutual_information(t1, t2_on_t1, brain), 5),
        "edge_distance_mm": round(edge_distance(t1[box], t2_on_t1[box], around[box], spacing), 4),
    }




# --------------------------------------------------------------------------------------
# ITK rigid registration
# --------------------------------------------------------------------------------------

def _itk_image(volume: np.ndarray, affine_ras: np.ndarray):
    """ITK float image of ``volume`` ``(X, Y, Z)`` with the LPS geometry of ``affine_ras``."""
    import itk

    affine_lps = _LPS @ np.asarray(affine_ras, dtype=np.float64)
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    image = itk.image_from_array(np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in affine_lps[:3, 3]])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(affine_lps[:3, :3] / spacing)))
    return image


def _itk_mask(mask: np.ndarray, affine_ras: np.ndarray):
    import itk

    image = _itk_image(mask.astype(np.float32), affine_ras)
    mask_image = itk.cast_image_filter(image, ttype=(type(image), itk.Image[itk.UC, 3]))
    spatial = itk.ImageMaskSpatialObject[3].New()
    spatial.SetImage(mask_image)
    spatial.Update()
    return spatial


def _euler_to_matrix_ras(transform) -> np.ndarray:
    """4x4 RAS matrix of an ITK (LPS) transform: ``F @ T_lps @ F``."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(transform.GetMatrix())
    matrix[:3, 3] = np.asarray(transform.GetOffset())
    return _LPS @ matrix @ _LPS


def _mattes_value(fixed_image, moving_image, fixed_mask, transform, bins: int) -> float:
    """Mattes MI (ITK's sign: lower is better) of the pair under ``transform``, all mask voxels."""
    import itk

    image_type = type(fixed_image)
    metric = itk.MattesMutualInformationImageToImageMetricv4[image_type, image_type].New()
    metric.SetNumberOfHistogramBins(bins)
    metric.SetFixedImage(fixed_image)
    metric.SetMovingImage(moving_image)
    metric.SetFixedImageMask(fixed_mask)
    metric.SetMovingTransform(transform)
    metric.Initialize()
    return float(metric.GetValue())


def _registration_method(fixed_image, moving_image, mask_object, transform, settings: RigidSettings):
    """ITK v4 multi-resolution registration (Mattes MI, regular-step gradient descent, scales from
    physical shift) that optimises ``transform`` in place. Returns ``(registration, optimizer)``."""
    import itk

    image_type = type(fixed_image)
    metric = itk.MattesMutualInformationImageToImageMetricv4[image_type, image_type].New()
    metric.SetNumberOfHistogramBins(settings.histogram_bins)
    metric.SetFixedImageMask(mask_object)
    scales = itk.RegistrationParameterScalesFromPhysicalShift[type(metric)].New()
    scales.SetMetric(metric)
    optimizer = itk.RegularStepGradientDescentOptimizerv4[itk.D].New()
    optimizer.SetLearningRate(settings.learning_rate)
    optimizer.SetMinimumStepLength(settings.minimum_step)
    optimizer.SetRelaxationFactor(0.5)
    optimizer.SetNumberOfIterations(settings.iterations)
    optimizer.SetGradientMagnitudeTolerance(1e-8)
    optimizer.SetScalesEstimator(scales)
    optimizer.SetReturnBestParametersAndValue(False)

    registration = itk.ImageRegistrationMethodv4[image_type, image_type].New()
    registration.SetFixedImage(fixed_image)
    registration.SetMovingImage(moving_image)
    registration.SetMetric(metric)
    registration.SetOptimizer(optimizer)
    registration.SetInitialTransform(transform)
    registration.SetInPlace(True)
    levels = len(settings.shrink_factors)
    registration.SetNumberOfLevels(levels)
    registration.SetShrinkFactorsPerLevel([int(f) for f in settings.shrink_factors])
    registration.SetSmoothingSigmasPerLevel([float(s) for s in settings.smoothing_sigmas_mm])
    registration.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    registration.SetMetricSamplingStrategy(itk.ImageRegistrationMethodv4Enums.MetricSamplingStrategy_RANDOM)
    registration.SetMetricSamplingPercentage(float(settings.sampling_fraction))
    registration.MetricSamplingReinitializeSeed(int(settings.seed))
    return registration, optimizer


def register_rigid(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed_mask: np.ndarray | None = None,
    settings: RigidSettings | None = None,
    name: str = "pair",
) -> RigidResult:
    """Rigidly register ``moving`` (T2) to ``fixed`` (T1), starting from their world coordinates.

    Args:
        fixed, moving: ``(X, Y, Z)`` arrays, each on its own grid.
        fixed_affine, moving_affine: their 4x4 voxel -> RAS mm affines.
        fixed_mask: ``(X, Y, Z)`` bool region of the fixed image the metric samples; default the
            fixed foreground dilated by ~5 mm (so the brain outline counts).
        settings: :class:`RigidSettings` (defaults: 3 levels 4/2/1, 200 iterations).
        name: used in error messages (the case).

    Returns:
        :class:`RigidResult` with ``matrix_ras`` mapping the fixed world to the moving world.

    Raises:
        RegistrationError: the metric is not finite, the finest level stopped at its iteration limit
            (did not converge), the result rotates more than 20 degrees or moves more than 40 mm, or
            it lowers the mutual information by more than 5 %.
    """
    import itk

    settings = settings or RigidSettings()
    started = time.perf_counter()
    spacing = spacing_of(fixed_affine)
    if fixed_mask is None:
        fixed_mask = dilate(foreground_mask(fixed, spacing), max(1, round(5.0 / min(spacing))))
    fixed_image = _itk_image(fixed, fixed_affine)
    moving_image = _itk_image(moving, moving_affine)
    mask_object = _itk_mask(fixed_mask, fixed_affine)

    # World coordinates are the start: no translation; rotate about the fixed brain's centre.
    center_voxel = np.argwhere(fixed_mask).mean(axis=0)
    center_ras = (np.asarray(fixed_affine) @ np.r_[center_voxel, 1.0])[:3]
    transform = itk.Euler3DTransform[itk.D].New()
    transform.SetIdentity()
    transform.SetCenter([float(v) for v in _LPS[:3, :3] @ center_ras])
    metric_before = _mattes_value(fixed_image, moving_image, mask_object, transform, settings.histogram_bins)

    registration, optimizer = _registration_method(fixed_image, moving_image, mask_object, transform, settings)

    iterations: list[int] = []
    stops: list[str] = []

    def end_of_level() -> None:
        iterations.append(int(optimizer.GetCurrentIteration()))
        stops.append(str(optimizer.GetStopConditionDescription()))

    def start_of_level() -> None:
        if int(registration.GetCurrentLevel()) > 0:  # the optimiser still holds the last level's state
            end_of_level()

    registration.AddObserver(itk.MultiResolutionIterationEvent(), start_of_level)
    try:
        registration.Update()
    except RuntimeError as err:
        raise RegistrationError(f"case {name}: ITK registration failed ({str(err).strip().splitlines()[-1]})") from None
    end_of_level()
    result_transform = transform  # optimised in place
    metric_after = _mattes_value(fixed_image, moving_image, mask_object, result_transform, settings.histogram_bins)
    result = RigidResult(
        matrix_ras=_euler_to_matrix_ras(result_transform),
        center_ras_mm=[float(v) for v in center_ras],
        metric_before=round(metric_before, 6),
        metric_after=round(metric_after, 6),
        iterations=iterations,
        stop_conditions=stops,
        seconds=time.perf_counter() - started,
    )
    _check_converged(result, settings, name)
    return result


def _check_converged(result: RigidResult, settings: RigidSettings, name: str) -> None:
    if not np.all(np.isfinite(result.matrix_ras)) or not math.isfinite(result.metric_after):
        raise RegistrationError(f"case {name}: rigid registration diverged (metric or transform not finite)")
    if result.stop_conditions and "Maximum number of iterations" in result.stop_conditions[-1]:
        raise RegistrationError(
            f"case {name}: rigid registration did not converge within {settings.iterations} iterations "
            f"at the finest level ({result.stop_conditions[-1]})")
    moved = float(np.linalg.norm(result.translation_mm))
    if result.rotation_deg > MAX_ROTATION_DEG or moved > MAX_TRANSLATION_MM:
        raise RegistrationError(
            f"case {name}: rigid registration ended at an implausible transform ({result.rotation_deg:.1f} degrees, "
            f"{moved:.1f} mm) for a same-session pair; check the inputs' headers")
    # ITK's Mattes value is minus the mutual information. Sub-voxel moves can lower the full-mask
    # value a little (the optimiser sees a random sample; linear interpolation favours grid
    # positions), so only a clear loss counts as a failure.
    if -result.metric_after < (1.0 - MAX_MI_LOSS) * -result.metric_before:
        raise RegistrationError(
            f"case {name}: rigid registration made the mutual information clearly worse "
            f"({-result.metric_before:.4f} -> {-result.metric_after:.4f})")


# --------------------------------------------------------------------------------------
# prepare-pairs: one subject, then a folder
# --------------------------------------------------------------------------------------

def _input_hashes(subject: dict) -> dict[str, str | None]:
    from monai_t1t2.io import file_sha256

    return {key: (file_sha256(subject[key]) if subject.get(key) else None) for key in ("t1", "t2", "tumor_seg")}


def _load(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(X, Y, Z)`` float32 voxels and RAS affine of a volume (io.read_volume)."""
    volume = read_volume(path)
    return volume[0].numpy(), np.asarray(volume.affine, dtype=np.float64)




def _copy_t1(source: Path, target: Path, overwrite: bool) -> None:
    """The T1 unchanged: its own file bytes when NIfTI (gzipped if needed), else re-written on its grid."""
    name = source.name.lower()
    if name.endswith(".nii.gz"):
        atomic_write_bytes(source.read_bytes(), target, overwrite=overwrite)
    elif name.endswith(".nii"):
        atomic_write_bytes(gzip.compress(source.read_bytes(), compresslevel=6), target, overwrite=overwrite)
    else:
        write_volume(read_volume(source), target, overwrite=overwrite, inputs=[source])


def cached_report(case_dir: Path, hashes: dict, register: str, skull_strip: bool = False) -> dict | None:
    """The ``registration.json`` of ``case_dir`` when it and its volumes match these inputs, else ``None``."""
    report_path = case_dir / REPORT_NAME
    if not report_path.is_file():
        return None
    try:
        report = json.loads(report_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    outputs = [case_dir / "t1.nii.gz", case_dir / "t2.nii.gz"] + ([case_dir / "tumor_seg.nii.gz"] if hashes.get("tumor_seg") else [])
    same = (report.get("format") == REPORT_FORMAT and report.get("input_sha256") == hashes
            and report.get("register") == register and bool(report.get("skull_strip", False)) == skull_strip)
    return report if same and all(p.is_file() for p in outputs) else None


def _edges_for_png(volume: np.ndarray, brain: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    around = dilate(brain, max(1, round(3.0 / min(spacing))))
    # viz colours overlays with nipy_spectral over [0, max(1, overlay max)]: 0.85 draws red.
    return edge_map(volume, around, spacing, quantile=0.9).astype(np.float32) * 0.85


def save_registration_png(path: Path, t1: np.ndarray, t1_affine: np.ndarray, t2_on_t1: np.ndarray,
                          edges: Sequence[np.ndarray], titles: Sequence[str], title: str) -> Path:
    """Three-plane PNG (RAS): one row of the T1 per edge map drawn over it, then the T2 on the T1 grid.

    Args:
        t1, t2_on_t1: ``(X, Y, Z)`` arrays on the T1 grid (any orientation; reoriented to RAS here).
        edges: ``(X, Y, Z)`` edge maps on that grid (e.g. the T2's edges before and after registration).
        titles: one row label per edge map.
    """
    from monai_t1t2.viz import save_three_plane_png

    ornt = nib.orientations.io_orientation(t1_affine)

    def to_ras(array: np.ndarray) -> np.ndarray:
        return nib.orientations.apply_orientation(array, ornt)

    ras_affine = t1_affine @ nib.orientations.inv_ornt_aff(ornt, t1.shape)
    t1_ras = to_ras(t1)
    return save_three_plane_png(path, [t1_ras] * len(edges) + [to_ras(t2_on_t1)], list(titles) + ["T2 on T1 grid"],
                                title=title, overlays=[to_ras(e) for e in edges] + [None],
                                spacing=spacing_of(ras_affine))


def prepare_pair(subject: dict, case_dir: str | Path, register: str = "rigid", overwrite: bool = False,
                 settings: RigidSettings | None = None, skull_strip: bool = False) -> dict:
    """Put one subject's T2 (and tumour labels) on its T1's grid, registered; write the case folder.

    Args:
        subject: ``{"case", "t1", "t2", "tumor_seg"}`` (from :func:`monai_t1t2.io.find_subjects`).
        case_dir: output folder of the case (``t1.nii.gz``, ``t2.nii.gz`` [, ``tumor_seg.nii.gz``],
            ``registration.json``, ``registration.png``).
        register: ``"rigid"`` (world coordinates, then rigid MI registration) or ``"none"``
            (world coordinates only).
        overwrite: redo the case even when its outputs exist.
        settings: rigid registration settings (default :class:`RigidSettings`).
        skull_strip: set T1 and T2 to 0 outside the T1's brain (brainchop ``mindgrab``, which
            must be in :func:`monai_t1t2.nets.meshnet.brainchop_dir`).

    Returns:
        The report written to ``registration.json`` (``"cached": True`` when nothing was redone).

    Raises:
        RegistrationError: the fields of view do not overlap, or the registration failed.
        OutputExistsError: outputs of other inputs exist and ``overwrite`` is False.
        GridMismatchError: the tumour labels are on neither the T1's nor the T2's grid.
    """
    if register not in REGISTER_MODES:
        raise T1T2Error(f"register must be one of {', '.join(REGISTER_MODES)}, not {register!r}")
    case, case_dir = subject["case"], Path(case_dir)
    inputs = [Path(subject[k]) for k in ("t1", "t2", "tumor_seg") if subject.get(k)]
    if any(case_dir.resolve() == p.parent.resolve() for p in inputs):
        raise OutputExistsError(f"case {case}: output folder {case_dir} is the input folder; choose another OUTPUT_DIR")
    from monai_t1t2.io import check_output_dir

    check_output_dir(case_dir)
    hashes = _input_hashes(subject)
    if not overwrite:
        report = cached_report(case_dir, hashes, register, skull_strip)
        if report is not None:
            return dict(report, cached=True)
        existing = [p.name for p in (case_dir / n for n in ("t1.nii.gz", "t2.nii.gz", REPORT_NAME)) if p.exists()]
        if existing:
            raise OutputExistsError(f"case {case}: {case_dir} already holds {', '.join(existing)} made from other inputs "
                                    "or settings; pass --overwrite to replace them")

    t1_volume = read_volume(subject["t1"])
    t1, t1_affine = t1_volume[0].numpy(), np.asarray(t1_volume.affine, dtype=np.float64)
    # The brain mask first: a missing network fails before the registration's minute is spent.
    inside = _skull_strip_mask(case, t1_volume, subject["t1"]) if skull_strip else None
    t2, t2_affine = _load(subject["t2"])
    brain = foreground_mask(t1, spacing_of(t1_affine))
    overlap = field_of_view_fraction(brain, t1_affine, t2.shape, t2_affine)
    if overlap < MIN_OVERLAP:
        raise RegistrationError(
            f"case {case}: fields of view do not overlap: only {100 * overlap:.0f}% of the T1's foreground "
            f"({subject['t1']}) lies inside the T2 ({subject['t2']}) in world coordinates; check the headers")
    spacing = spacing_of(t1_affine)
    t2_world = resample_to_grid(t2, t2_affine, t1.shape, t1_affine)
    before = alignment_scores(t1, t2_world, brain, spacing)
    result = None
    if register == "rigid":
        result = register_rigid(t1, t1_affine, t2, t2_affine, settings=settings, name=case)
        t2_on_t1 = resample_to_grid(t2, t2_affine, t1.shape, t1_affine, result.matrix_ras)
        after = alignment_scores(t1, t2_on_t1, brain, spacing)
    else:
        t2_on_t1, after = t2_world, before
    matrix = np.eye(4) if result is None else result.matrix_ras
    brain_voxels = None
    if skull_strip:
        brain_voxels = int(inside.sum())
        t2_on_t1 = np.where(inside, t2_on_t1, 0.0).astype(np.float32)

    case_dir.mkdir(parents=True, exist_ok=True)
    t1_reference = subject["t1"] if str(subject["t1"]).lower().endswith(NIFTI_SUFFIXES) else t1_affine
    if skull_strip:
        write_volume(np.where(inside, t1, 0.0).astype(np.float32), case_dir / "t1.nii.gz", reference=t1_reference,
                     overwrite=True, inputs=inputs)
    else:
        _copy_t1(Path(subject["t1"]), case_dir / "t1.nii.gz", overwrite=True)
    write_volume(t2_on_t1, case_dir / "t2.nii.gz", reference=t1_reference, overwrite=True, inputs=inputs)
    seg_source = None
    if subject.get("tumor_seg"):
        seg_source = _write_labels(subject, case_dir / "tumor_seg.nii.gz", t1.shape, t1_affine, t1_reference,
                                   t2.shape, t2_affine, matrix, inputs)
    save_registration_png(
        case_dir / PNG_NAME, t1, t1_affine, t2_on_t1,
        [_edges_for_png(t2_world, brain, spacing), _edges_for_png(t2_on_t1, brain, spacing)],
        [f"T2 edges, world\nNMI {before['nmi_brain']:.3f}, {before['edge_distance_mm']:.2f} mm",
         f"T2 edges, {register}\nNMI {after['nmi_brain']:.3f}, {after['edge_distance_mm']:.2f} mm"],
        title=f"{case}: T1 with T2 edges",
    )
    report = {
        "format": REPORT_FORMAT,
        "case": case,
        "register": register,
        "skull_strip": skull_strip,
        "brain_voxels": brain_voxels,
        "inputs": {k: (str(Path(subject[k]).resolve()) if subject.get(k) else None) for k in ("t1", "t2", "tumor_seg")},
        "input_sha256": hashes,
        "t1_grid": {"shape": list(t1.shape), "spacing_mm": [round(s, 4) for s in spacing],
                    "affine_ras": np.round(t1_affine, 6).tolist()},
        "t2_grid": {"shape": list(t2.shape), "spacing_mm": [round(s, 4) for s in spacing_of(t2_affine)]},
        "t1_foreground_inside_t2_fov": round(overlap, 4),
        "tumor_seg_from": seg_source,
        "transform": result.to_dict() if result is not None else {"matrix_ras": np.eye(4).tolist(), "rotation_deg": 0.0,
                                                                   "translation_mm": [0.0, 0.0, 0.0]},
        "transform_convention": "matrix_ras maps a T1 world point (RAS mm) to the T2 world point whose value it takes",
        "similarity_world": before,
        "similarity_registered": after,
    }
    atomic_write_text(json.dumps(report, indent=2) + "\n", case_dir / REPORT_NAME)
    return dict(report, cached=False)


def _skull_strip_mask(case: str, t1_volume, t1_path: str | Path) -> np.ndarray:
    """The brain of ``t1_volume`` (``(1, X, Y, Z)`` MetaTensor), ``(X, Y, Z)`` bool on its grid,
    from brainchop's ``mindgrab`` network."""
    from monai_t1t2.masks import brain_mask

    try:
        inside = brain_mask(t1_volume, method="network")[0].numpy()
    except T1T2Error as error:
        raise T1T2Error(f"case {case}: skull stripping: {error}") from error
    if not inside.any():
        raise T1T2Error(f"case {case}: the brain mask of {t1_path} is empty")
    return inside


def _write_labels(subject: dict, target: Path, t1_shape, t1_affine, t1_reference, t2_shape, t2_affine,
                  matrix: np.ndarray, inputs: Sequence[Path]) -> str:
    """Tumour labels onto the T1 grid (nearest neighbour): as is when on the T1 grid, with the T2's
    transform when on the T2 grid. Returns which grid they came from."""
    volume = read_volume(subject["tumor_seg"])
    labels, affine = np.rint(volume[0].numpy()).astype(np.int16), np.asarray(volume.affine, dtype=np.float64)
    if same_grid(labels.shape, affine, t1_shape, t1_affine):
        source, on_t1 = "t1_grid", labels
    elif same_grid(labels.shape, affine, t2_shape, t2_affine):
        source, on_t1 = "t2_grid", resample_to_grid(labels, affine, t1_shape, t1_affine, matrix, order=0)
    else:
        raise GridMismatchError(f"case {subject['case']}: {subject['tumor_seg']} is on neither the T1's nor the T2's grid; "
                                "give tumour labels drawn on one of them")
    write_volume(on_t1, target, reference=t1_reference, overwrite=True, inputs=inputs, dtype=np.int16)
    return source


def _check_case_folders(input_dir: Path) -> None:
    """A case folder with volumes but no T1 is an error (find_subjects would skip it)."""
    for case_dir in sorted(p for p in input_dir.iterdir() if p.is_dir()):
        stems = {volume_stem(p) for p in case_dir.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)}
        if "t2" in stems and "t1" not in stems:
            raise DatasetError(f"case {case_dir.name}: {case_dir} has a t2 but no t1 volume (missing contrast)")


def run_prepare_pairs(input_dir: str | Path, output_dir: str | Path, register: str = "rigid", overwrite: bool = False,
                      settings: RigidSettings | None = None, skull_strip: bool = False) -> int:
    """``monai-t1t2 prepare-pairs``: every subject of ``input_dir`` onto its T1 grid, in ``output_dir``.

    Inputs are never modified; a case already prepared from the same input files (same SHA-256)
    and mode is skipped. Prints one line per case (similarity before -> after). Returns 0.

    Example:
        >>> run_prepare_pairs("../shared/data/raw", "prepared")  # doctest: +SKIP
    """
    from tqdm import tqdm

    from monai_t1t2.io import find_subjects

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise DatasetError(f"{input_dir}: input folder does not exist")
    if output_dir.resolve() == input_dir.resolve():
        raise OutputExistsError(f"{output_dir}: is the input folder; choose another OUTPUT_DIR")
    _check_case_folders(input_dir)
    subjects = find_subjects(input_dir)
    lines = []
    for subject in tqdm(subjects, desc="prepare-pairs", unit="subject"):
        report = prepare_pair(subject, output_dir / subject["case"], register=register, overwrite=overwrite,
                              settings=settings, skull_strip=skull_strip)
        before, after = report["similarity_world"], report["similarity_registered"]
        lines.append(f"{subject['case']}: {'cached' if report['cached'] else register}, "
                     f"NMI {before['nmi_brain']:.4f} -> {after['nmi_brain']:.4f}, "
                     f"edge distance {before['edge_distance_mm']:.3f} -> {after['edge_distance_mm']:.3f} mm, "
                     f"rotation {report['transform']['rotation_deg']:.2f} deg"
                     + (f", brain {report['brain_voxels']} voxels" if report.get("skull_strip") else ""))
    print("\n".join(lines))
    return 0
