"""Dataset discovery, subject-level splits and the training ``LightningDataModule``.

A *subject* is :data:`monai_t1t2.io.Subject` (found by :func:`monai_t1t2.io.find_subjects` or
read from a datalist by :func:`monai_t1t2.io.load_datalist`).
Splits are always by subject, never by slice or patch, so no voxel of a held-out
subject is ever seen in training.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Sequence

import nibabel as nib
import pytorch_lightning as pl
import torch
from monai import transforms as mt
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import Subset
from monai.data import CacheDataset, DataLoader, list_data_collate

from monai_t1t2.errors import DatasetError, GridMismatchError, InvalidVolumeError
from monai_t1t2.geometry import same_grid
from monai_t1t2.io import Subject, case_source, load_subjects
from monai_t1t2.transforms import BrainMaskd, PercentileNormalised, RegionWeightsd, TumourMaskd


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


def balanced_visits(sources: Sequence[str], repeats: int, exponent: float = 0.0) -> list[int]:
    """Visits per epoch of each training subject, ``repeats * len(sources)`` in all, each subject's share
    proportional to ``n ** -exponent`` (``n``: the subjects of its source), rounded by largest remainder,
    at least 1 each.

        >>> balanced_visits(["A", "A", "B"], 4, 0.0), balanced_visits(["A", "A", "B"], 4, 1.0)
        ([4, 4, 4], [3, 3, 6])

    Raises:
        ValueError: ``repeats`` below 1 or a negative ``exponent``.
    """
    if repeats < 1 or exponent < 0:
        raise ValueError(f"repeats must be >= 1 and the exponent >= 0, got {repeats} and {exponent}")
    counts = Counter(sources)
    weights = [counts[source] ** -exponent for source in sources]
    total = repeats * len(sources)
    exact = [total * w / sum(weights) for w in weights]
    visits = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - visits[i], reverse=True)
    for i in by_remainder[: total - sum(visits)]:
        visits[i] += 1
    return [max(1, v) for v in visits]


# --------------------------------------------------------------------------------------
# Training data: MONAI transforms + CacheDataset inside a LightningDataModule
# --------------------------------------------------------------------------------------

def check_subject_grids(subjects: Sequence[Subject]) -> None:
    """Fail early, reading headers only, when a subject's volumes are not on one grid.

    Raises:
        GridMismatchError: names the case and the files (T1 vs T2 or tumour segmentation).
    """
    def header(path: str):
        try:
            image = nib.load(path)
            if len(image.shape) < 3:
                raise ValueError(f"{len(image.shape)}D image, not a 3D volume")
            return image
        except Exception as err:  # nibabel raises many kinds; each is one bad file to name
            raise InvalidVolumeError(f"case {subject['case']}: {path}: not a readable NIfTI volume "
                                     f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None

    for subject in subjects:
        reference = header(subject["t1"])
        for key in ("t2", "tumor_seg"):
            if not subject.get(key):
                continue
            other = header(subject[key])
            if not same_grid(reference.shape[:3], reference.affine, other.shape[:3], other.affine):
                raise GridMismatchError(
                    f"case {subject['case']}: {subject[key]} is not on the grid of {subject['t1']} "
                    f"(shape {other.shape[:3]} vs {reference.shape[:3]}); register the pair first: "
                    "monai-t1t2 prepare-pairs"
                )


class PairedDataModule(pl.LightningDataModule):
    """Paired T1/T2 subjects -> brain-only training patches and whole validation volumes.

    Deterministic steps (load, RAS, 1 mm, brain mask, QC sampling mask, per-image percentile
    normalisation, foreground crop, region weights) are cached once per volume by
    ``CacheDataset``; random steps (brain-only patch sampling, pair-preserving flips and
    small affine, bias field and gamma on the T1 only) run per epoch.

    Batches hold ``t1``, ``t2``, ``brain``, ``tumour`` and, when ``parcellation_model`` is set,
    ``weights`` (region weight map) and ``groups`` (region group codes): all ``(B, 1, *patch_size)``.

    Args:
        data_dir: folder of ``<case>/t1.nii.gz, t2.nii.gz[, tumor_seg.nii.gz]`` or a datalist JSON.
        extra_data_dirs: more folders or datalists (e.g. pairs made by ``prepare-pairs``).
        val_cases: cases held out for validation (default: ``val_fraction`` drawn with ``seed``).
        patch_size: training patch in voxels; ``(P, P, 1)`` gives axial slices (2D baseline).
        samples_per_volume: patches drawn from a volume each time it is visited.
        repeats_per_epoch: visits of each training volume per epoch.
        parcellation_model: brainchop model name whose parcellation (cached per file hash in
            ``cache_dir``) drives the region weights; ``None`` disables them.
        shard_by_rank: under DDP, each rank caches and trains on its own share of subjects.
        quality_control: drop training subjects whose T1 or T2 fails :func:`monai_t1t2.quality.quality_report`
            (noise only, ghosting, no usable slice), logging a warning with the reasons.
        tumour_fraction: share of training patches centred in or at the edge of the tumour (the tumour
            dilated by ``tumour_margin`` voxels); the rest are centred on brain. 0 samples brain only.
        tumour_margin: width of the tumour's edge zone, in voxels.
        augment: spatial augmentation (pair-preserving flips and a small random affine).
        input_floor: smallest normalised T1 value inside the brain. 0 (default, every shipped model): the
            darkest 0.5 % of the brain take the background's 0 and come out dark; :data:`~monai_t1t2.transforms.INPUT_FLOOR`
            keeps them apart, but a 0.8.0 fine-tune with it scored worse on validation (benchmarks/README.md at 8a776e7,
            "The brain's darkest 0.5 %"). A generator with ``mask_input`` needs it. It is applied last, in
            float32, after the cache and the augmentation, so the floored voxels hold exactly the floor.
            The export step writes it into the bundle's preprocessing.
        mirror_augment: the left-right mirror alone (the pair and its masks flipped along RAS axis 0 with
            probability 0.5; no resampling, so cheap); ``None`` follows ``augment``.
        intensity_augment: T1-only contrast augmentation (gamma, bias field, histogram shift), so the
            model does not learn one scanner's T1 curve; ``None`` follows ``augment``.
        cache_dtype: dtype of the cached brain-cropped volumes (``float16`` halves the memory of the
            cache; patches are cast to float32 after cropping).
        source_balance: exponent of the source balancing of the visits. A training subject is visited in
            proportion to ``n ** -source_balance``, ``n`` the number of training subjects of its acquisition
            source (:func:`monai_t1t2.io.case_source`); the epoch keeps ``repeats_per_epoch`` visits per
            subject on average (:func:`balanced_visits`). 0 (default): every subject equally, so a site with
            many subjects dominates; 1: every source equally; 0.5 between.
        thick_slices: probability that a training patch pair (T1 and T2 alike) is given simulated thick
            axial slices (:class:`~monai_t1t2.transforms.RandThickSlicesd` along RAS axis 2), as the clinical
            5-6 mm stacks resampled to 1 mm are; 0 (default) never. Independent of ``augment``.
        thick_slice_range: the simulated slice thickness, in voxels, drawn uniformly from this range.
    """

    def __init__(
        self,
        data_dir: str,
        extra_data_dirs: list[str] | None = None,
        val_cases: list[str] | None = None,
        val_fraction: float = 0.25,
        seed: int = 0,
        patch_size: tuple[int, int, int] = (64, 64, 64),
        samples_per_volume: int = 4,
        repeats_per_epoch: int = 8,
        batch_size: int = 1,
        num_workers: int = 0,
        cache_rate: float = 1.0,
        augment: bool = True,
        min_brain_fraction: float | None = None,
        parcellation_model: str | None = None,
        group_weights: dict[str, float] | None = None,
        cache_dir: str = "cache",
        shard_by_rank: bool = False,
        quality_control: bool = True,
        tumour_fraction: float = 0.0,
        tumour_margin: int = 4,
        intensity_augment: bool | None = None,
        cache_dtype: str = "float16",
        mirror_augment: bool | None = None,
        input_floor: float = 0.0,
        source_balance: float = 0.0,
        thick_slices: float = 0.0,
        thick_slice_range: tuple[float, float] = (3.0, 7.0),
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        subjects = list(load_subjects(data_dir))
        for extra in extra_data_dirs or []:
            subjects += load_subjects(extra)
        check_subject_grids(subjects)
        self.train_subjects, self.val_subjects = split_subjects(subjects, val_cases, val_fraction, seed)
        checked = len(self.train_subjects)
        if quality_control:
            from monai_t1t2.quality import exclude_failing_subjects

            self.train_subjects = exclude_failing_subjects(self.train_subjects)
        excluded = checked - len(self.train_subjects)
        rank_zero_info(f"{len(self.train_subjects)} training subjects"
                       + (f" ({excluded} excluded by quality control, see the warnings)" if excluded else "")
                       + (" (quality control off)" if not quality_control else "")
                       + f"; {len(self.val_subjects)} validation: "
                       + (", ".join(s["case"] for s in self.val_subjects) or "none"))

    # ----- transforms -------------------------------------------------------------------
    def _deterministic_transforms(self, with_labels: bool) -> list:
        image_keys = ["t1", "t2"]
        load_keys = image_keys + ["tumor_seg"] + (["labels"] if with_labels else [])
        nearest = [k for k in load_keys if k not in image_keys]
        steps = [
            mt.LoadImaged(load_keys, image_only=True, ensure_channel_first=True, allow_missing_keys=True),
            mt.Orientationd(load_keys, axcodes="RAS", allow_missing_keys=True),
            mt.Spacingd(load_keys, pixdim=(1.0, 1.0, 1.0), mode=["bilinear"] * 2 + ["nearest"] * len(nearest),
                        allow_missing_keys=True),
            mt.EnsureTyped(image_keys, dtype=torch.float32),
            BrainMaskd(image_keys, mask_key="brain"),
            TumourMaskd(seg_key="tumor_seg", mask_key="tumour", like_key="t1"),
        ]
        from monai_t1t2.transforms import SamplingMaskd

        fraction = {} if self.hparams.min_brain_fraction is None else {"min_brain_fraction": self.hparams.min_brain_fraction}
        tumour = {"tumour_key": "tumour", "tumour_margin": self.hparams.tumour_margin} if self.hparams.tumour_fraction else {}
        steps.append(SamplingMaskd(keys="t1", mask_key="sampling_mask", brain_key="brain", **fraction, **tumour))
        # The T1 is the network's input: with input_floor > 0 its brain voxels are raised above the
        # background's 0 after the cache and the augmentation (_floor_steps), in float32.
        steps.append(PercentileNormalised("t1", mask_key="brain"))
        steps.append(PercentileNormalised("t2", mask_key="brain"))
        if with_labels:
            from monai_t1t2.nets.meshnet import label_names

            steps.append(RegionWeightsd(labels_key="labels", weights_key="weights", tumour_key="tumour",
                                        label_names=label_names(self.hparams.parcellation_model),
                                        group_weights=self.hparams.group_weights, groups_key="groups"))
        steps.append(mt.CropForegroundd(self._volume_keys(with_labels), source_key="brain", margin=8,
                                        allow_smaller=True))
        steps.append(mt.EnsureTyped(self._volume_keys(with_labels), dtype=getattr(torch, self.hparams.cache_dtype),
                                    track_meta=False))
        return steps

    def _volume_keys(self, with_labels: bool) -> list[str]:
        return ["t1", "t2", "brain", "tumour", "sampling_mask"] + (["weights", "groups"] if with_labels else [])

    def _random_transforms(self, with_labels: bool) -> list:
        from monai_t1t2.transforms import brain_patch_sampler

        keys = self._volume_keys(with_labels)
        patch = tuple(self.hparams.patch_size)
        steps = [brain_patch_sampler(keys, mask_key="sampling_mask", spatial_size=patch,
                                     num_samples=self.hparams.samples_per_volume,
                                     tumour_fraction=self.hparams.tumour_fraction),
                 mt.EnsureTyped(keys, dtype=torch.float32, track_meta=False)]
        if self.hparams.thick_slices:
            from monai_t1t2.transforms import RandThickSlicesd

            # First, so the slabs lie along the scanner's S-I axis and the affine below tilts them a little.
            steps.append(RandThickSlicesd(["t1", "t2"], prob=self.hparams.thick_slices,
                                          thickness=self.hparams.thick_slice_range, axis=2))
        intensity = self.hparams.augment if self.hparams.intensity_augment is None else self.hparams.intensity_augment
        mirror = self.hparams.augment if self.hparams.mirror_augment is None else self.hparams.mirror_augment
        if mirror:
            steps.append(mt.RandFlipd(keys, prob=0.5, spatial_axis=0))
        if self.hparams.augment:
            flat = patch[2] == 1  # 2D baseline: keep slices axial, never flip/rotate across them
            steps += [
                mt.RandFlipd(keys, prob=0.5, spatial_axis=1),
                mt.RandAffined(keys, prob=0.3, rotate_range=(0.0, 0.0, 0.1) if flat else (0.1, 0.1, 0.1),
                               scale_range=(0.05, 0.05, 0.0 if flat else 0.05),
                               mode=["bilinear" if k in ("t1", "t2", "weights") else "nearest" for k in keys],
                               padding_mode="zeros"),
            ]
        if intensity:
            # Scanner-dependent T1 contrast on the input only; the target stays true. Zero (outside the
            # brain) stays zero: gamma and the histogram shift fix the ends of [0, 1], the bias field multiplies.
            steps += [
                mt.RandAdjustContrastd("t1", prob=0.5, gamma=(0.6, 1.6)),
                mt.RandHistogramShiftd("t1", prob=0.3, num_control_points=(4, 8)),
                mt.RandBiasFieldd("t1", prob=0.3, coeff_range=(0.0, 0.1)),
                mt.ScaleIntensityRanged("t1", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
            ]
        return steps + self._floor_steps()

    def _floor_steps(self) -> list:
        """The T1 input floor, last, on float32 volumes: the floored voxels hold exactly ``input_floor``
        (as the inference preprocessing gives them), whatever the cache dtype and the augmentation did."""
        if not self.hparams.input_floor:
            return []
        from monai_t1t2.transforms import BrainFloord

        return [BrainFloord("t1", mask_key="brain", floor=self.hparams.input_floor)]

    # ----- Lightning hooks --------------------------------------------------------------
    def _with_parcellations(self, subjects: Sequence[Subject]) -> list[Subject]:
        if not self.hparams.parcellation_model:
            return [dict(s) for s in subjects]
        from monai_t1t2.nets.meshnet import cached_parcellation

        return [dict(s, labels=str(cached_parcellation(s["t1"], self.hparams.cache_dir, model=self.hparams.parcellation_model)))
                for s in subjects]

    def prepare_data(self) -> None:
        # Parcellations are computed once (rank 0) and cached on disk by file hash; the validation
        # cases' give the tumour contrast error of the validation metrics.
        self._with_parcellations(self.train_subjects + self.val_subjects)

    def setup(self, stage: str | None = None) -> None:
        train = self.train_subjects
        if self.hparams.shard_by_rank and self.trainer is not None and self.trainer.world_size > 1:
            from monai.data import partition_dataset

            train = partition_dataset(train, num_partitions=self.trainer.world_size, shuffle=True,
                                      seed=self.hparams.seed, even_divisible=True)[self.trainer.global_rank]
        with_labels = bool(self.hparams.parcellation_model)
        train_items = [_drop_none(s) for s in self._with_parcellations(train)]
        # Each volume is preprocessed and cached once; the repeats revisit the same cache entry
        # and only redo the random steps (patch sampling, augmentation).
        cached = CacheDataset(
            train_items,
            mt.Compose(self._deterministic_transforms(with_labels) + self._random_transforms(with_labels)),
            cache_rate=self.hparams.cache_rate, num_workers=0, copy_cache=True, progress=False,
        )
        sources = [case_source(s) for s in train]
        visits = balanced_visits(sources, self.hparams.repeats_per_epoch, self.hparams.source_balance)
        self.train_dataset = Subset(cached, [index for index, count in enumerate(visits) for _ in range(count)])
        if self.hparams.source_balance:
            per_source = Counter()
            for source, count in zip(sources, visits):
                per_source[source] += count
            rank_zero_info(f"source balance {self.hparams.source_balance}: visits per epoch by source "
                           f"{dict(per_source.most_common())}")
        self.val_dataset = CacheDataset(
            [_drop_none(s) for s in self._with_parcellations(self.val_subjects)],
            mt.Compose(self._deterministic_transforms(with_labels)
                       + [mt.EnsureTyped(self._volume_keys(with_labels), dtype=torch.float32)]
                       + self._floor_steps()),
            cache_rate=self.hparams.cache_rate, progress=False,
        ) if self.val_subjects else None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, batch_size=self.hparams.batch_size, shuffle=True,
                          num_workers=self.hparams.num_workers, collate_fn=list_data_collate,
                          persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return DataLoader(self.val_dataset, batch_size=1, num_workers=0)


def _drop_none(subject: Subject) -> Subject:
    return {key: value for key, value in subject.items() if value is not None}
