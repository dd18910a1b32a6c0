"""Anatomical region groups: parcellation labels -> the groups the losses and metrics use.

Group codes (``int``) are shared by the region-weighted loss, the region MAE of the scoring
protocol and the PNG overlays:

====  ===============  ==========================================================
code  group            FreeSurfer-style label names mapped to it
====  ===============  ==========================================================
0     background       Unknown / outside the brain
1     white_matter     Cerebral-White-Matter, corpus callosum, WM hypointensities
2     cortical_grey    Cerebral-Cortex and every ``ctx-*`` aparc region
3     deep_grey        Thalamus, Caudate, Putamen, Pallidum, Hippocampus, Amygdala,
                       Accumbens, VentralDC
4     ventricles_csf   Lateral / Inferior-Lateral / 3rd / 4th ventricles, CSF
5     cerebellum       Cerebellum white matter and cortex
6     brainstem        Brain-Stem
7     tumour           ``tumor_seg > 0`` (overrides the parcellation)
====  ===============  ==========================================================
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

REGION_GROUPS: dict[int, str] = {
    1: "white_matter",
    2: "cortical_grey",
    3: "deep_grey",
    4: "ventricles_csf",
    5: "cerebellum",
    6: "brainstem",
    7: "tumour",
}
TUMOUR_GROUP = 7
# How the PNG overlays name and paint each group (ColorBrewer Set1: one hue per group, white matter and
# cortex far apart).
REGION_LEGEND: dict[int, tuple[str, str]] = {
    1: ("white matter", "#377eb8"),
    2: ("cortical grey", "#ff7f00"),
    3: ("deep grey", "#4daf4a"),
    4: ("ventricles / CSF", "#ffff33"),
    5: ("cerebellum", "#984ea3"),
    6: ("brainstem", "#f781bf"),
    7: ("tumour", "#e41a1c"),
}

_DEEP_GREY = ("thalamus", "caudate", "putamen", "pallidum", "hippocampus", "amygdala", "accumbens", "ventraldc")


def group_of_label_name(name: str) -> int:
    """Region group code of one FreeSurfer-style label name (0 when it belongs to none)."""
    key = name.lower().replace("_", "-")
    if key.startswith(("left-", "right-")):
        key = key.split("-", 1)[1]
    if "cerebellum" in key:
        return 5
    if "ventricle" in key or "lat-vent" in key or key in ("csf", "choroid-plexus"):
        return 4
    if "brain-stem" in key or "brainstem" in key:
        return 6
    if "white-matter" in key or "wm-hypointensities" in key or key.startswith("cc-") or "corpus callosum" in key:
        return 1
    if key.startswith("ctx") or "cortex" in key:
        return 2
    if any(name in key.replace("-", "") for name in _DEEP_GREY):
        return 3
    return 0


def label_groups_table(label_names: Sequence[str]) -> np.ndarray:
    """Lookup table ``table[label] = group`` for a model's label names (index = label value)."""
    return np.array([group_of_label_name(name) for name in label_names], dtype=np.int64)


def labels_to_groups(
    labels: np.ndarray, label_names: Sequence[str], tumor_seg: np.ndarray | None = None
) -> np.ndarray:
    """Map a parcellation ``(X, Y, Z)`` to region group codes; tumour voxels become group 7."""
    table = label_groups_table(label_names)
    labels = np.asarray(labels).astype(np.int64)
    groups = table[np.clip(labels, 0, len(table) - 1)]
    if tumor_seg is not None:
        groups = np.where(np.asarray(tumor_seg) > 0, TUMOUR_GROUP, groups)
    return groups.astype(np.uint8)


def region_weight_map(
    groups: np.ndarray,
    weights: dict[int | str, float] | None = None,
    clip: tuple[float, float] | None = (0.5, 5.0),
) -> np.ndarray:
    """Per-voxel loss weight from region group codes, so that small structures count.

    Default weight of group ``g`` is ``N / (K * n_g)`` (``N`` voxels, ``K`` groups present, ``n_g``
    voxels of ``g``): inverse region volume, normalised so that the voxel mean is 1 before clipping.

    Args:
        groups: ``(X, Y, Z)`` (or any shape) integer group codes (see :data:`REGION_GROUPS`; 0 background).
        weights: per-group weights replacing the default, keyed by code or name
            (``{"deep_grey": 3.0, 0: 0.5}``); groups not named keep the default.
        clip: ``(low, high)`` bounds applied to the result; None leaves it unclipped.

    Returns:
        float32 array of the shape of ``groups``.
    """
    groups = np.asarray(groups).astype(np.int64)
    codes = {name: code for code, name in {0: "background", **REGION_GROUPS}.items()}
    counts = np.bincount(groups.ravel(), minlength=max(REGION_GROUPS) + 1).astype(np.float64)
    present = counts > 0
    table = np.zeros_like(counts)
    table[present] = groups.size / (present.sum() * counts[present])
    for key, value in (weights or {}).items():
        code = codes[key] if isinstance(key, str) else int(key)
        table[code] = value
    if clip is not None:
        table = np.clip(table, *clip)
    return table[groups].astype(np.float32)
