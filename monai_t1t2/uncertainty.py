"""The trust map: a calibrated per-voxel interval around the synthetic T2 and a per-case predicted SSIM.

Method (``"normalised split conformal, mirror spread + local features"``):

1. **Scale features**, no reference needed: on the network's 1 mm RAS grid (:func:`trust_features`) the
   spread of the network under its left-right mirror (``|f(x) - flip f(flip x)|``, one more pass of the
   sliding window at :data:`MIRROR_OVERLAP`), the local gradient magnitude of the prediction (edges, where misregistration and
   partial volume make errors), the predicted level itself and the local texture of the T1 (standard
   deviation in a Gaussian window); on the input's own grid (:func:`input_features`) the T1's normalised
   level and each voxel's depth in the brain (mm to its edge).
2. **A scale** ``s(x) = max(floor, w0 + w . terms)`` over :func:`scale_basis`' terms of those features,
   with non-negative weights ``w`` fitted by non-negative least squares to the absolute error on
   calibration subjects (:func:`fit_calibration`).
3. **Split conformal prediction** (normalised residuals): on voxels of the calibration subjects that
   the fit did not see, the scores ``|error| / s`` give, for each level ``a``, the quantile ``q_a``; the
   interval is ``synthetic +/- q_a s`` clipped to ``[0, 1]`` (:meth:`TrustCalibration.interval`). Each
   calibration subject weighs the same (the same number of voxels from each). The guarantee of split
   conformal prediction holds for subjects exchangeable with the calibration subjects; the test split's
   tumour cohorts are not quite that (``docs/user-guide.md``, the trust map), so coverage is measured on
   them and reported, not assumed.
4. **Predicted SSIM** of a case: a line through the calibration subjects' brain SSIM against their mean
   scale in the brain (:meth:`TrustCalibration.predicted_ssim`).

Errors and intervals are in the protocol's normalised units (``EVALUATION.md``): each image mapped by its
own 0.5th-99.5th brain percentiles. The package's output is already in these units (its tails step puts
its own percentiles at 0 and 1).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from monai_t1t2.errors import T1T2Error
from monai_t1t2.io import PathLike, atomic_write_text

#: The scale features: :func:`trust_features`' channels (network grid) then :func:`input_features`' (input grid).
FEATURES = ("mirror_spread", "gradient", "level", "t1_texture", "t1_level", "depth_mm")
#: The scale's terms (:func:`scale_basis`), after the intercept.
TERMS = ("mirror_spread", "gradient", "level", "t1_texture", "level above 0.3", "level above 0.6", "t1 below 0.3",
         "1 / (1 + depth_mm)")
METHOD = ("normalised split conformal: a non-negative linear scale of the mirror spread, the gradient and level of "
          "the prediction, the T1's texture, level and depth in the brain (monai_t1t2.uncertainty)")
DEFAULT_LEVEL = 0.9
#: The calibration file a bundle keeps beside its weights.
CALIBRATION_FILE = "trust_calibration.json"
GRADIENT_SIGMA, TEXTURE_SIGMA = 1.0, 2.0
#: The mirrored pass's sliding-window overlap: 0.25 runs about a third of the windows of the prediction's
#: 0.5, so the trust map costs well under a second translation (the calibration is made with it).
MIRROR_OVERLAP = 0.25
#: Levels of the stored quantile table (any level between is interpolated).
LEVEL_TABLE = tuple(round(0.5 + 0.005 * i, 3) for i in range(100))  # 0.5 ... 0.995


def trust_features(prediction: torch.Tensor, mirrored: torch.Tensor, t1: torch.Tensor,
                   brain: torch.Tensor) -> torch.Tensor:
    """The network-grid scale features (the first four of :data:`FEATURES`).

    Args:
        prediction: ``(1, X, Y, Z)`` the network's output; ``mirrored``: the same from the
            left-right mirrored T1, mirrored back.
        t1: ``(1, X, Y, Z)`` the network's (normalised) T1 input; ``brain``: ``(1, X, Y, Z)`` mask.

    Returns:
        float32 ``(4, X, Y, Z)``, 0 outside the brain.
    """
    inside = np.asarray(brain[0].cpu(), dtype=bool)
    a = np.asarray(prediction[0].detach().cpu(), dtype=np.float32)
    b = np.asarray(mirrored[0].detach().cpu(), dtype=np.float32)
    x = np.asarray(t1[0].detach().cpu(), dtype=np.float32) * inside
    spread = np.abs(a - b)
    gradient = ndimage.gaussian_gradient_magnitude(a * inside, GRADIENT_SIGMA)
    mean = ndimage.gaussian_filter(x, TEXTURE_SIGMA)
    texture = np.sqrt(np.clip(ndimage.gaussian_filter(x * x, TEXTURE_SIGMA) - mean * mean, 0, None))
    stack = np.stack([spread, gradient, np.clip(a, 0, 1), texture]).astype(np.float32) * inside
    return torch.from_numpy(stack)


def input_features(t1: np.ndarray, inside: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """The features read on the input's own grid: the T1 normalised by its brain percentiles (the
    protocol's map) and each brain voxel's distance to the brain's edge in mm; float32 ``(2, X, Y, Z)``."""
    from monai_t1t2.transforms import PercentileNormalise

    inside = np.asarray(inside, dtype=bool)
    level = np.asarray(PercentileNormalise()(np.asarray(t1, dtype=np.float32), inside), dtype=np.float32)
    depth = ndimage.distance_transform_edt(inside, sampling=[float(v) for v in spacing]).astype(np.float32)
    return np.stack([level, depth])


def scale_basis(features: np.ndarray) -> np.ndarray:
    """The scale's terms (:data:`TERMS`) from the raw :data:`FEATURES` ``(6, ...)``: the four network features,
    hinges of the predicted level (CSF-bright and mid-grey voxels err differently), dark T1 (CSF, lesions)
    and closeness to the brain's edge (partial volume, skull-stripping differences); ``(8, ...)``."""
    spread, gradient, level, texture, t1_level, depth = np.asarray(features, dtype=np.float32)
    return np.stack([spread, gradient, level, texture, np.clip(level - 0.3, 0, None), np.clip(level - 0.6, 0, None),
                     np.clip(0.3 - t1_level, 0, None), 1.0 / (1.0 + depth)])


@dataclass
class TrustCalibration:
    """A fitted scale model, its conformal quantile table and its SSIM line (JSON in a bundle's ``models/``)."""

    weights: list[float]
    floor: float
    levels: list[float]
    quantiles: list[float]
    ssim_intercept: float
    ssim_slope: float
    subjects: list[str]
    method: str = METHOD
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    terms: list[str] = field(default_factory=lambda: list(TERMS))
    model_sha256: str | None = None
    #: The lowest and highest predicted SSIM among the calibration subjects.
    ssim_range: list[float] | None = None

    def scale(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """:data:`FEATURES` ``(6, ...)`` -> the scale ``s`` ``(...)`` (at least :attr:`floor`)."""
        if np.shape(features)[0] != len(FEATURES) or len(self.weights) != len(TERMS) + 1:
            raise T1T2Error(f"trust calibration: {np.shape(features)[0]} features given for {len(self.weights) - 1} "
                            f"fitted terms; this package computes {len(FEATURES)} features and {len(TERMS)} terms")
        values = scale_basis(features)
        weights = np.asarray(self.weights, dtype=np.float32)
        return np.maximum(self.floor, weights[0] + np.tensordot(weights[1:], values, axes=1)).astype(np.float32)

    def quantile(self, level: float) -> float:
        """The conformal quantile ``q`` of the normalised scores at ``level`` (interpolated in the table)."""
        if not self.levels[0] <= level <= self.levels[-1]:
            raise T1T2Error(f"--uncertainty-level {level}: choose one in [{self.levels[0]}, {self.levels[-1]}]")
        return float(np.interp(level, self.levels, self.quantiles))

    def interval(self, synthetic: np.ndarray, scale: np.ndarray, brain: np.ndarray,
                 level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """``lower``, ``upper`` float32 on the synthetic's grid: ``synthetic -/+ q s`` in ``[0, 1]``, 0 outside ``brain``."""
        half = self.quantile(level) * np.asarray(scale, dtype=np.float32)
        inside = np.asarray(brain, dtype=bool)
        lower = np.where(inside, np.clip(synthetic - half, 0.0, 1.0), 0.0).astype(np.float32)
        upper = np.where(inside, np.clip(synthetic + half, 0.0, 1.0), 0.0).astype(np.float32)
        return lower, upper

    def predicted_ssim(self, scale: np.ndarray, brain: np.ndarray) -> float:
        """The brain SSIM the case is expected to reach under the protocol, from its mean scale in the brain."""
        inside = np.asarray(brain, dtype=bool)
        if not inside.any():
            return float("nan")
        value = self.ssim_intercept + self.ssim_slope * float(np.mean(np.asarray(scale)[inside]))
        return float(np.clip(value, -1.0, 1.0))

    def out_of_range(self, predicted_ssim: float) -> bool:
        """True where a predicted SSIM is below every calibration subject's: an input less like the model's
        inputs than any the calibration saw (benchmarks/uncertainty.py --ood), not to be trusted."""
        return self.ssim_range is not None and predicted_ssim < self.ssim_range[0]

    def save(self, path: PathLike) -> Path:
        return atomic_write_text(json.dumps(asdict(self), indent=1) + "\n", Path(path), overwrite=True)

    @classmethod
    def load(cls, path: PathLike) -> "TrustCalibration":
        try:
            record = json.loads(Path(path).read_text())
            return cls(**record)
        except (OSError, ValueError, TypeError) as err:
            raise T1T2Error(f"{path}: not a trust calibration ({err.__class__.__name__}: {err})") from None


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) level)``-th smallest of ``n`` scores."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    rank = min(len(ordered), math.ceil((len(ordered) + 1) * level))
    return float(ordered[rank - 1])


def fit_calibration(cases: Sequence[dict], floor: float = 0.01, voxels_per_case: int = 200_000,
                    seed: int = 0) -> TrustCalibration:
    """Fit the scale, the conformal table and the SSIM line on calibration subjects.

    Args:
        cases: one dict per subject: ``features`` ``(6, N)`` (:data:`FEATURES`) inside the brain, ``error`` ``(N,)`` the
            normalised prediction minus the normalised real T2, ``ssim`` the protocol's brain SSIM,
            ``subject`` its name.
        voxels_per_case: voxels drawn from each subject (each subject weighs the same); half fit
            the scale, the other half the conformal quantiles.
    """
    from scipy.optimize import nnls

    if len(cases) < 2:
        raise T1T2Error(f"trust calibration needs at least 2 subjects, {len(cases)} given")
    rng = np.random.default_rng(seed)
    fit_x, fit_y, held = [], [], []
    for case in cases:
        features, error = np.asarray(case["features"], np.float32), np.abs(np.asarray(case["error"], np.float32))
        order = rng.permutation(error.size)[: 2 * voxels_per_case]
        half = len(order) // 2
        fit_x.append(features[:, order[:half]]), fit_y.append(error[order[:half]])
        held.append((features[:, order[half:]], error[order[half:]]))
    x = scale_basis(np.concatenate(fit_x, axis=1)).T.astype(np.float64)
    design = np.concatenate([np.ones((x.shape[0], 1)), x], axis=1)
    weights, _ = nnls(design, np.concatenate(fit_y).astype(np.float64))
    calibration = TrustCalibration(weights=[float(w) for w in weights], floor=floor, levels=list(LEVEL_TABLE),
                                   quantiles=[], ssim_intercept=0.0, ssim_slope=0.0,
                                   subjects=[str(c["subject"]) for c in cases])
    scores = np.concatenate([error / calibration.scale(features) for features, error in held])
    calibration.quantiles = [conformal_quantile(scores, level) for level in LEVEL_TABLE]
    mean_scale = np.array([float(np.mean(calibration.scale(np.asarray(c["features"], np.float32)))) for c in cases])
    ssim = np.array([float(c["ssim"]) for c in cases])
    if np.ptp(mean_scale) > 0:
        slope, intercept = np.polyfit(mean_scale, ssim, 1)
    else:
        slope, intercept = 0.0, float(np.mean(ssim))
    calibration.ssim_slope, calibration.ssim_intercept = float(slope), float(intercept)
    predicted = calibration.ssim_intercept + calibration.ssim_slope * mean_scale
    calibration.ssim_range = [float(predicted.min()), float(predicted.max())]
    return calibration
