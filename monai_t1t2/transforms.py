"""MONAI dictionary transforms of monai-t1t2.

Each transform works on channel-first arrays or tensors ``(C, X, Y, Z)`` and exists as a
dictionary version (``d`` suffix) so it drops into a user's ``monai.transforms.Compose``.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

# Percentiles of the scoring protocol (EVALUATION.md): robust to a few hot voxels.
LOWER_PERCENTILE = 0.5
UPPER_PERCENTILE = 99.5


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
    """

    def __init__(self, lower: float = LOWER_PERCENTILE, upper: float = UPPER_PERCENTILE) -> None:
        self.lower, self.upper = lower, upper

    def __call__(self, image, mask=None):
        values = _to_numpy(image)
        inside = values > 0 if mask is None else _to_numpy(mask).astype(bool)
        inside = np.broadcast_to(inside, values.shape)
        if not inside.any():
            return image * 0
        low, high = np.percentile(values[inside], [self.lower, self.upper])
        scale = max(float(high - low), 1e-6)
        if isinstance(image, torch.Tensor):
            inside_t = torch.as_tensor(np.ascontiguousarray(inside), device=image.device)
            return torch.where(inside_t, ((image - float(low)) / scale).clamp(0, 1), torch.zeros_like(image))
        return np.where(inside, np.clip((values - low) / scale, 0, 1), 0).astype(np.float32)


class PercentileNormalised(MapTransform):
    """Dictionary version of :class:`PercentileNormalise`.

    Args:
        keys: images to normalise, each on its own.
        mask_key: optional key of a brain mask shared by all ``keys``; default ``image > 0``.
    """

    def __init__(self, keys: KeysCollection, mask_key: str | None = None, lower: float = LOWER_PERCENTILE,
                 upper: float = UPPER_PERCENTILE, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.normalise = PercentileNormalise(lower, upper)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        mask = d[self.mask_key] if self.mask_key else None
        for key in self.key_iterator(d):
            d[key] = self.normalise(d[key], mask)
        return d
