"""MONAI dictionary transforms of monai-t1t2.

Each transform works on channel-first arrays or tensors ``(C, X, Y, Z)`` and exists as a
dictionary version (``d`` suffix) so it drops into a user's ``monai.transforms.Compose``.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends

# Percentiles of the scoring protocol (EVALUATION.md): robust to a few hot voxels.
LOWER_PERCENTILE = 0.5
UPPER_PERCENTILE = 99.5
#: A floor for the normalised T1 inside the brain where the T1 is the network's input (opt-in: the
#: data module's ``input_floor``). The percentile clip maps the darkest 0.5 % of the brain (ventricular
#: CSF, the brain's partial-volume rim) to 0, the background's value; the residual head's prior (``1 - t1``
#: where ``t1 > 0``) takes them for background and they come out dark. Scoring keeps the protocol's 0.
INPUT_FLOOR = 1e-3


def at_input_floor(t1):
    """The brain's darkest voxels as the network sees its T1: at the input floor (or at 0 without one),
    with half a floor of tolerance so that a float16 copy of the floor still counts."""
    return t1 <= 1.5 * INPUT_FLOOR


def _to_numpy(image: np.ndarray | torch.Tensor) -> np.ndarray:
    return image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)


class PercentileNormalise(Transform):
    """Map an image to ``[0, 1]`` by its own percentiles inside a mask; zero outside it.

    ``(x - p_low) / (p_high - p_low)``, clipped to ``[0, 1]``, with ``p_low`` / ``p_high`` the
    ``lower`` / ``upper`` percentiles of the image inside ``mask`` (default: ``image > 0``,
    right for skull-stripped data). This is the normalisation of ``EVALUATION.md``, so the
    network learns in the units it is scored in.

    Args:
        lower, upper: percentiles in ``[0, 100]``.
        floor: smallest value inside the mask: 0 (the protocol, for scoring and targets), or
            :data:`INPUT_FLOOR` for a network input, so that no brain voxel takes the background's 0.
        positive_only: take the percentiles over the mask's voxels above 0 only (the network's T1: the
            brain of a skull-stripped T1 with its cavities filled, :func:`monai_t1t2.masks.nonzero_brain`,
            holds voxels at or below 0 that carry no signal level); they still map to 0 (the floor).
            Off for scoring: the protocol's percentiles are over the whole mask.
    """

    def __init__(self, lower: float = LOWER_PERCENTILE, upper: float = UPPER_PERCENTILE, floor: float = 0.0,
                 positive_only: bool = False) -> None:
        if not 0 <= floor < 1:
            raise ValueError(f"floor {floor}: must be in [0, 1)")
        self.lower, self.upper, self.floor, self.positive_only = lower, upper, floor, positive_only

    def __call__(self, image, mask=None):
        values = _to_numpy(image)
        inside = values > 0 if mask is None else _to_numpy(mask).astype(bool)
        inside = np.broadcast_to(inside, values.shape)
        if not inside.any():
            return image * 0
        counted = inside & (values > 0) if self.positive_only else inside
        counted = counted if counted.any() else inside
        low, high = np.percentile(values[counted], [self.lower, self.upper])
        scale = max(float(high - low), 1e-6)
        if isinstance(image, torch.Tensor):
            inside_t = torch.as_tensor(inside.copy(), device=image.device)  # broadcast views are read-only
            return torch.where(inside_t, ((image - float(low)) / scale).clamp(self.floor, 1), torch.zeros_like(image))
        return np.where(inside, np.clip((values - low) / scale, self.floor, 1), 0).astype(np.float32)


class PercentileNormalised(MapTransform):
    """Dictionary version of :class:`PercentileNormalise`.

    Args:
        keys: images to normalise, each on its own.
        mask_key: optional key of a brain mask shared by all ``keys``; default ``image > 0``.
        floor, positive_only: see :class:`PercentileNormalise` (:data:`INPUT_FLOOR` for the network's T1).
    """

    def __init__(self, keys: KeysCollection, mask_key: str | None = None, lower: float = LOWER_PERCENTILE,
                 upper: float = UPPER_PERCENTILE, allow_missing_keys: bool = False, floor: float = 0.0,
                 positive_only: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.normalise = PercentileNormalise(lower, upper, floor, positive_only)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        mask = d[self.mask_key] if self.mask_key else None
        for key in self.key_iterator(d):
            d[key] = self.normalise(d[key], mask)
        return d


#: Percentiles of the brain below and above which :class:`CalibrateTails` remaps a prediction.
TAIL_LOWER, TAIL_UPPER = 2.0, 98.0


class CalibrateTails(Transform):
    """Put a prediction's brain 0.5th and 99.5th percentiles at 0 and 1, leaving its middle as it is.

    The network learns T2 normalised by :class:`PercentileNormalise`: in that unit the brain's 0.5th
    percentile is 0 and its 99.5th is 1 by definition. A voxel-wise loss cannot place the extreme
    0.5 % (the brain's partial-volume rim, a few vessels): the network writes their conditional
    median, so its own 0.5th percentile sits above 0 and its 99.5th below 1. This maps the values
    between the 0.5th and the ``lower``-th percentile of the brain linearly onto ``[0, p_lower]`` and
    those between the ``upper``-th and the 99.5th onto ``[p_upper, 1]`` (beyond: 0 and 1); the
    ``lower``-``upper`` percentile range, every level the network placed in the middle of the
    histogram, is unchanged. A monotone map: the order of the voxels is kept.

    Args:
        lower, upper: percentiles (of the brain) within which the prediction is kept as it is.
    """

    def __init__(self, lower: float = TAIL_LOWER, upper: float = TAIL_UPPER) -> None:
        if not LOWER_PERCENTILE < lower < upper < UPPER_PERCENTILE:
            raise ValueError(f"lower {lower}, upper {upper}: need {LOWER_PERCENTILE} < lower < upper < {UPPER_PERCENTILE}")
        self.lower, self.upper = lower, upper

    def __call__(self, image, mask):
        values = _to_numpy(image)
        inside = np.broadcast_to(_to_numpy(mask).astype(bool), values.shape)
        if not inside.any():
            return image
        own = np.percentile(values[inside], [LOWER_PERCENTILE, self.lower, self.upper, UPPER_PERCENTILE])
        own = own + 1e-6 * np.arange(own.size)  # strictly increasing where percentiles tie
        target = np.maximum.accumulate(np.clip([0.0, own[1], own[2], 1.0], 0.0, 1.0))
        mapped = np.where(inside, np.interp(values, own, target), values).astype(np.float32)
        if not isinstance(image, torch.Tensor):
            return mapped
        calibrated = torch.as_tensor(mapped, device=image.device)  # float32
        if isinstance(image, MetaTensor):
            return MetaTensor(calibrated, meta=image.meta, applied_operations=image.applied_operations)
        return calibrated


class CalibrateTailsd(MapTransform):
    """Dictionary version of :class:`CalibrateTails`; ``mask_key``: the brain on the same grid."""

    def __init__(self, keys: KeysCollection, mask_key: str = "brain", lower: float = TAIL_LOWER,
                 upper: float = TAIL_UPPER, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.calibrate = CalibrateTails(lower, upper)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.calibrate(d[key], d[self.mask_key] > 0)
        return d


class BrainFloord(MapTransform):
    """Raise every voxel inside ``d[mask_key]`` to at least ``floor`` (outside it unchanged).

    The network's T1 input floor (:data:`INPUT_FLOOR`), applied in float32 after the cache and after
    the T1's intensity augmentation, so that the floored voxels hold exactly ``floor`` in training as at
    inference (a float16 cache or a gamma change would otherwise move them).
    """

    def __init__(self, keys: KeysCollection, mask_key: str = "brain", floor: float = INPUT_FLOOR,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0 <= floor < 1:
            raise ValueError(f"floor {floor}: must be in [0, 1)")
        self.mask_key, self.floor = mask_key, floor

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        inside = torch.as_tensor(d[self.mask_key]) > 0
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            d[key] = torch.where(inside, image.clamp_min(self.floor), image)
        return d


class RandThickSlicesd(RandomizableTransform, MapTransform):
    """Simulate a thick-slice acquisition resampled to the fine grid, the same on every key (a pair).

    With probability ``prob`` a slice thickness ``t`` is drawn uniformly from ``thickness`` (in voxels)
    and each image is averaged over slabs of about ``t`` voxels along ``axis`` (the slice's box profile,
    ``F.interpolate`` in ``area`` mode to ``round(n / t)`` samples) and linearly interpolated back to its
    ``n`` voxels; the other axes are untouched. Many clinical scans are such 5-6 mm axial stacks
    resampled to 1 mm; applied to a T1/T2 pair it teaches the translation a blurred T1 together with
    the partial-volume T2 of the same blur. Masks and labels are not keys: they stay as drawn, so the
    voxels just outside the brain take a little of its signal (the images are blurred, the mask is not).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, keys: KeysCollection, prob: float = 0.1, thickness: Sequence[float] = (3.0, 7.0),
                 axis: int = 2, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob {prob}: must be in [0, 1]")
        RandomizableTransform.__init__(self, prob)
        low, high = (float(v) for v in thickness)
        if not 1.0 <= low <= high:
            raise ValueError(f"thickness {thickness}: must be a range (low, high) with 1 <= low <= high")
        if axis not in (0, 1, 2):
            raise ValueError(f"axis {axis}: must be a spatial axis, 0, 1 or 2")
        self.thickness, self.axis, self._t = (low, high), axis, 1.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self._t = float(self.R.uniform(*self.thickness))

    @staticmethod
    def thicken(image: torch.Tensor, t: float, axis: int) -> torch.Tensor:
        """``image`` (C, X, Y, Z) averaged over slabs of ``t`` voxels along ``axis``, back on its grid."""
        import torch.nn.functional as F

        size = list(image.shape[1:])
        coarse = list(size)
        coarse[axis] = max(1, round(size[axis] / t))
        x = image.float()[None]
        x = F.interpolate(F.interpolate(x, size=coarse, mode="area"), size=size, mode="trilinear", align_corners=False)
        return x[0].to(image.dtype)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            out = self.thicken(torch.as_tensor(image), self._t, self.axis)
            d[key] = out if isinstance(image, torch.Tensor) else out.numpy()
        return d


class BrainMaskd(MapTransform):
    """Add a brain mask ``d[mask_key]`` = voxels where every one of ``keys`` is > 0.

    For skull-stripped pairs this is the protocol's mask ``(t1 > 0) & (t2 > 0)``; it is
    computed before normalisation (which clips the lowest brain voxels to 0).
    """

    def __init__(self, keys: KeysCollection, mask_key: str = "brain", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        masks = [d[key] > 0 for key in self.key_iterator(d)]
        brain = masks[0]
        for mask in masks[1:]:
            brain = brain & mask
        d[self.mask_key] = brain.to(torch.float32) if isinstance(brain, torch.Tensor) else brain.astype(np.float32)
        return d


class TumourMaskd(MapTransform):
    """Write ``d[mask_key]`` = ``d[seg_key] > 0`` (any BraTS label), or zeros like ``d[like_key]``.

    Subjects without a tumour segmentation get an empty mask, so every batch has the key.
    """

    def __init__(self, seg_key: str = "tumor_seg", mask_key: str = "tumour", like_key: str = "t1") -> None:
        super().__init__([seg_key], allow_missing_keys=True)
        self.seg_key, self.mask_key, self.like_key = seg_key, mask_key, like_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        seg = d.pop(self.seg_key, None)
        like = d[self.like_key]
        if seg is None or isinstance(seg, str):
            d[self.mask_key] = like * 0
        else:
            d[self.mask_key] = (seg > 0).to(torch.float32) if isinstance(seg, torch.Tensor) else (seg > 0).astype(np.float32)
        return d


class RegionWeightsd(MapTransform):
    """Turn a parcellation ``d[labels_key]`` into a per-voxel loss weight map ``d[weights_key]``.

    Labels are mapped to region groups (:mod:`monai_t1t2.regions`), tumour voxels
    (``d[tumour_key] > 0``) become the tumour group, and each group gets a weight
    (default: inverse group volume, clipped; see ``regions.region_weight_map``).

    Args:
        label_names: names of the parcellation's labels, index = label value.
        group_weights: optional ``{group name: weight}`` overriding the default.
        groups_key: when set, the region group codes go to ``d[groups_key]`` too (for
            :class:`~monai_t1t2.losses.RegionStatisticsLoss`).
    """

    def __init__(self, labels_key: str = "labels", weights_key: str = "weights", tumour_key: str = "tumour",
                 label_names: Sequence[str] = (), group_weights: dict | None = None,
                 groups_key: str | None = None) -> None:
        super().__init__([labels_key])
        self.labels_key, self.weights_key, self.tumour_key = labels_key, weights_key, tumour_key
        self.label_names, self.group_weights, self.groups_key = list(label_names), group_weights, groups_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from monai_t1t2.regions import labels_to_groups, region_weight_map

        d = dict(data)
        labels = d.pop(self.labels_key)
        tumour = _to_numpy(d[self.tumour_key]) if self.tumour_key in d else None
        groups = labels_to_groups(_to_numpy(labels), self.label_names, tumour)
        weights = region_weight_map(groups, self.group_weights).astype(np.float32)
        outputs = {self.weights_key: weights}
        if self.groups_key:
            outputs[self.groups_key] = groups.astype(np.float32)
        for key, array in outputs.items():
            d[key] = torch.as_tensor(array) if isinstance(labels, torch.Tensor) else array
            if hasattr(labels, "affine"):
                from monai.data import MetaTensor

                d[key] = MetaTensor(torch.as_tensor(array), meta=labels.meta)
        return d


class SamplingMaskd(MapTransform):
    """Add ``d[mask_key]``: the brain mask minus the axial slices too poor in brain to learn from.

    A slice is unusable when its brain area is below ``min_brain_fraction`` of the largest
    slice's brain area (:func:`monai_t1t2.masks.unusable_slices`). The patch sampler
    (:func:`brain_patch_sampler`) only centres patches on voxels of this mask, so no patch is
    background-only and none is centred in the thin caps of the brain.

    With ``tumour_key`` the mask is a class map: 0 outside, 1 brain, 2 the *tumour zone* (tumour
    dilated by ``tumour_margin`` voxels, inside the usable brain), so the sampler can centre a
    set share of patches in or at the edge of the tumour.

    Args:
        keys: the image whose grid the mask lives on (only used to check it is present).
        mask_key: key written.
        brain_key: key of the brain mask (``(1, X, Y, Z)``, > 0 inside).
        min_brain_fraction: threshold in ``[0, 1)``; 0 keeps every slice with any brain.
        tumour_key: optional key of a tumour mask (> 0 inside) on the same grid.
        tumour_margin: dilation of the tumour zone, in voxels (its edge is where a tumour meets brain).
    """

    def __init__(self, keys: KeysCollection = "t1", mask_key: str = "sampling_mask", brain_key: str = "brain",
                 min_brain_fraction: float | None = None, tumour_key: str | None = None, tumour_margin: int = 4,
                 allow_missing_keys: bool = False) -> None:
        from monai_t1t2.masks import MIN_BRAIN_FRACTION

        super().__init__(keys, allow_missing_keys)
        self.mask_key, self.brain_key, self.tumour_key = mask_key, brain_key, tumour_key
        self.tumour_margin = int(tumour_margin)
        self.min_brain_fraction = MIN_BRAIN_FRACTION if min_brain_fraction is None else float(min_brain_fraction)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from monai_t1t2.geometry import dilate
        from monai_t1t2.masks import unusable_slices

        d = dict(data)
        brain = d[self.brain_key]
        keep = _to_numpy(brain) > 0
        bad = unusable_slices(keep[0], self.min_brain_fraction)
        keep = keep.copy()
        keep[..., bad] = False
        if not keep.any():
            raise ValueError("no axial slice holds enough brain to sample patches from")
        mask = keep.astype(np.float32)
        if self.tumour_key is not None and self.tumour_key in d:
            tumour = _to_numpy(d[self.tumour_key])[0] > 0
            if tumour.any():
                zone = dilate(tumour, self.tumour_margin) if self.tumour_margin > 0 else tumour
                mask[0][zone & keep[0]] = 2.0
        d[self.mask_key] = torch.as_tensor(mask) if isinstance(brain, torch.Tensor) else mask
        return d


def brain_patch_sampler(keys: KeysCollection, mask_key: str = "sampling_mask",
                        spatial_size: Sequence[int] = (48, 48, 48), num_samples: int = 4,
                        tumour_fraction: float = 0.0):
    """Random patches whose centre voxel is always inside ``d[mask_key]`` (never background-only).

    ``tumour_fraction == 0``: ``RandCropByPosNegLabeld`` with ``pos=1, neg=0`` draws centres only
    from the mask (> 0). ``tumour_fraction > 0`` needs the class map of :class:`SamplingMaskd`
    with a ``tumour_key``: ``RandCropByLabelClassesd`` centres that share of the patches (in
    expectation) in the tumour zone (class 2) and the rest on brain (class 1); a volume without
    tumour gets brain patches only. Either way, where a centre lies near the border it is shifted
    inwards and the window still holds that voxel. Volumes smaller than a patch are zero-padded first.

    Returns:
        A ``Compose`` yielding ``num_samples`` dictionaries of ``spatial_size`` patches.
    """
    from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd

    if not 0.0 <= tumour_fraction < 1.0:
        raise ValueError(f"tumour_fraction must be in [0, 1), got {tumour_fraction}")
    if tumour_fraction == 0.0:
        crop = RandCropByPosNegLabeld(keys, label_key=mask_key, spatial_size=spatial_size, pos=1.0, neg=0.0,
                                      num_samples=num_samples, image_key=None, allow_smaller=False)
    else:
        crop = _TumourOrBrainCropd(keys, mask_key, spatial_size, num_samples, tumour_fraction)
    return Compose([SpatialPadd(keys, spatial_size=spatial_size), crop])


class _TumourOrBrainCropd(MapTransform):
    """``RandCropByLabelClassesd`` over the class map (0, brain 1, tumour zone 2); brain only without tumour."""

    def __init__(self, keys, mask_key, spatial_size, num_samples, tumour_fraction) -> None:
        from monai.transforms import RandCropByLabelClassesd

        super().__init__(keys)
        self.mask_key = mask_key
        self.with_tumour = RandCropByLabelClassesd(
            keys, label_key=mask_key, spatial_size=spatial_size, ratios=[0.0, 1.0 - tumour_fraction, tumour_fraction],
            num_classes=3, num_samples=num_samples, allow_smaller=False, warn=False)
        self.brain_only = RandCropByLabelClassesd(
            keys, label_key=mask_key, spatial_size=spatial_size, ratios=[0.0, 1.0, 0.0], num_classes=3,
            num_samples=num_samples, allow_smaller=False, warn=False)

    def set_random_state(self, seed=None, state=None):
        self.with_tumour.set_random_state(seed, state)
        self.brain_only.set_random_state(seed, state)
        return self

    def __call__(self, data):
        crop = self.with_tumour if bool((data[self.mask_key] == 2).any()) else self.brain_only
        return crop(data)


# ----------------------------------------------------------------------------- the translation pipeline

#: Voxels of context kept around the brain's box before the sliding window.
CROP_MARGIN_VOXELS = 8
#: The grid the translation networks are trained and run on: RAS at 1 mm.
NETWORK_PIXDIM = (1.0, 1.0, 1.0)


#: The pipeline's last postprocessing step as a MONAI config item (:class:`CalibrateTailsd` on the
#: prediction, with the brain on the input grid): :func:`translation_components` switches it by the
#: config setting ``calibrate_tails``; :func:`monai_t1t2.inference.translation.with_tail_calibration`
#: adds it to a loaded pipeline.
TAIL_STEP = {"_target_": "monai_t1t2.transforms.CalibrateTailsd", "keys": "pred", "mask_key": "input_brain",
             "lower": TAIL_LOWER, "upper": TAIL_UPPER}


def translation_components(crop_margin: int = CROP_MARGIN_VOXELS, pixdim: Sequence[float] = NETWORK_PIXDIM,
                           input_floor: float = 0.0, calibrate_tails: bool = False) -> dict:
    """The translation bundle's ``preprocessing``, ``inferer`` and ``postprocessing`` as MONAI config items.

    The one statement of the pipeline around the network: :func:`monai_t1t2.inference.translation.translate`
    parses it (through the bundle's ``configs/inference.json``, which the export step writes from it,
    or directly for a checkpoint), so a bundle user can swap any of the three in the JSON.
    Keys of the data dictionary: ``image`` (the T1), ``brain`` (its mask on the same grid),
    ``input_brain`` (the mask kept on the input grid), ``pred`` (the network's output).

    * ``preprocessing``: crop to the brain's box plus ``crop_margin`` voxels (``CropForegroundd``,
      so a full-head scan is not resampled in full), RAS (``Orientationd``), ``pixdim`` mm
      (``Spacingd``: bilinear for the T1, nearest for the mask), percentile normalisation inside
      the brain (:class:`PercentileNormalised`, ``EVALUATION.md`` units, percentiles over the brain's
      voxels above 0, brain voxels at least ``input_floor``: the floor the model was trained with,
      :data:`INPUT_FLOOR` since it exists, 0 before).
    * ``inferer``: :func:`monai_t1t2.nets.generators.patch_inferer` (refers to ``@roi_size``,
      ``@sw_batch_size``, ``@overlap``, ``@flip_axes``: mirror test-time augmentation, ``[]`` for none).
    * ``postprocessing``: the prediction masked by the network-grid brain, brought back onto the
      input grid by the inverse of the preprocessing (``Invertd``: resampling, reorientation, the
      crop's padding), masked by the input-grid brain so the background stays exactly 0, clipped to
      [0, 1]; last, the brain's 0.5th / 99.5th percentiles put at 0 / 1 (:class:`CalibrateTailsd`),
      a step switched by the config item ``calibrate_tails`` (the default given here; ``_disabled_``
      when false, so ``python -m monai.bundle run ... --calibrate_tails False`` leaves it out).
    """
    both = ["image", "brain"]
    return {
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "CropForegroundd", "keys": both, "source_key": "brain", "margin": int(crop_margin),
             "allow_smaller": True},
            {"_target_": "Orientationd", "keys": both, "axcodes": "RAS", "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},
            {"_target_": "Spacingd", "keys": both, "pixdim": [float(p) for p in pixdim], "mode": ["bilinear", "nearest"],
             "padding_mode": "zeros"},
            {"_target_": "monai_t1t2.transforms.PercentileNormalised", "keys": "image", "mask_key": "brain",
             "floor": float(input_floor), "positive_only": True},
        ]},
        "inferer": {"_target_": "monai_t1t2.nets.generators.patch_inferer", "roi_size": "@roi_size",
                    "sw_batch_size": "@sw_batch_size", "overlap": "@overlap", "flip_axes": "@flip_axes"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "MaskIntensityd", "keys": "pred", "mask_key": "brain"},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "MaskIntensityd", "keys": "pred", "mask_key": "input_brain"},
            {"_target_": "ScaleIntensityRanged", "keys": "pred", "a_min": 0.0, "a_max": 1.0, "b_min": 0.0, "b_max": 1.0,
             "clip": True},
            {**TAIL_STEP, "_disabled_": "$not @calibrate_tails"},
        ]},
        "calibrate_tails": bool(calibrate_tails),
    }
