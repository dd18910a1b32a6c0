"""Anatomy-guided losses: region-weighted perceptual loss and tumour-preservation loss.

Both are plain ``nn.Module`` losses in the style of ``monai.losses``: inputs ``(B, 1, X, Y, Z)``
patches in [0, 1] (percentile-normalised, see :mod:`monai_t1t2.transforms`), a ``reduction`` of
``"mean"`` | ``"sum"`` | ``"none"`` over the batch.

* :class:`RegionWeightedPerceptualLoss` compares frozen 3D feature maps of prediction and target,
  LPIPS-style, voxel by voxel, and weights the distances with the region weight map of
  :func:`monai_t1t2.regions.region_weight_map`.
* :func:`meshnet_feature_extractor` builds its default extractor offline: the first dilated
  convolution blocks of a pretrained brainchop MeshNet (brain-MRI features; nothing is downloaded).
* :class:`TumourPreservationLoss` keeps the tumour's intensities and its contrast to the
  surrounding tissue equal to those of the real T2.
* :class:`RegionStatisticsLoss` constrains the translation region by region: in each patch, the
  mean and spread of the prediction inside each parcellation region group match the real T2's.
* :class:`IntensityDistributionLoss` matches the prediction's whole intensity histogram inside the
  brain to the real T2's, patch by patch (sorted values: the 1-Wasserstein distance).
"""

from __future__ import annotations

from typing import Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from monai_t1t2.errors import T1T2Error
from monai_t1t2.geometry import dilate
from monai_t1t2.metrics import SSIM_KERNEL_SIZE, ssim_map

REDUCTIONS = ("mean", "sum", "none")
# Voxel order the brainchop MeshNets were trained in (FreeSurfer's conformed volume).
MESHNET_ORIENTATION = "LIA"
DEFAULT_FEATURE_LAYERS = 3


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """``(B,)`` per-sample losses -> scalar (``mean``/``sum``) or ``(B,)`` (``none``)."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _check_patches(prediction: torch.Tensor, target: torch.Tensor, **others: torch.Tensor | None) -> None:
    if prediction.ndim != 5 or prediction.shape[1] != 1:
        raise ValueError(f"prediction must be (B, 1, X, Y, Z), got {tuple(prediction.shape)}")
    for name, tensor in {"target": target, **others}.items():
        if tensor is not None and tensor.shape != prediction.shape:
            raise ValueError(f"{name} must have the shape of prediction {tuple(prediction.shape)}, got {tuple(tensor.shape)}")


def _check_one_shape(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
    """Prediction, target and mask of one shape, 2D or 3D (the brain-masked losses)."""
    if prediction.shape != target.shape or mask.shape != prediction.shape:
        raise ValueError(f"prediction, target and mask must have one shape, got {tuple(prediction.shape)}, "
                         f"{tuple(target.shape)}, {tuple(mask.shape)}")


# ----------------------------------------------------------------------------- feature extractor


def _orientation_change(source: str, target: str) -> tuple[list[int], list[int]]:
    """Spatial axes to flip (in ``source``), then the permutation giving ``target`` voxel order."""
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(source),
                                                nib.orientations.axcodes2ornt(target))
    flips = [axis for axis, (_, flip) in enumerate(transform) if flip < 0]
    permutation = [int(axis) for axis in np.argsort(transform[:, 0])]
    return flips, permutation


class FrozenFeatureExtractor(nn.Module):
    """Frozen stack of blocks returning every block's output: ``(B, 1, X, Y, Z)`` -> list of ``(B, C_l, X, Y, Z)``.

    Parameters never require gradients and the module stays in eval mode whatever ``train()``
    is asked (Lightning calls ``train()`` on the whole LightningModule each epoch); gradients
    still flow through it to the input.

    Args:
        blocks: modules applied in order; the output of each is one feature map.
        input_orientation: voxel order of the patches (``"RAS"`` for the data module's);
            None feeds them as they are.
        network_orientation: voxel order the blocks were trained in. Patches are flipped and
            permuted into it before the blocks and the feature maps are put back afterwards,
            so feature voxel ``v`` describes patch voxel ``v``.
    """

    def __init__(self, blocks: Sequence[nn.Module], input_orientation: str | None = None,
                 network_orientation: str = MESHNET_ORIENTATION) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.input_orientation, self.network_orientation = input_orientation, network_orientation
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenFeatureExtractor":
        return super().train(False)

    def _to_network(self, image: torch.Tensor) -> torch.Tensor:
        if self.input_orientation is None:
            return image
        flips, permutation = _orientation_change(self.input_orientation, self.network_orientation)
        image = image.flip([2 + axis for axis in flips]) if flips else image
        return image.permute(0, 1, *[2 + axis for axis in permutation])

    def _from_network(self, features: torch.Tensor) -> torch.Tensor:
        if self.input_orientation is None:
            return features
        flips, permutation = _orientation_change(self.input_orientation, self.network_orientation)
        inverse = [int(axis) for axis in np.argsort(permutation)]
        features = features.permute(0, 1, *[2 + axis for axis in inverse])
        return features.flip([2 + axis for axis in flips]) if flips else features

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features, current = [], self._to_network(image)
        for block in self.blocks:
            current = block(current)
            features.append(self._from_network(current))
        return features


class SubgridDilatedConv3d(nn.Module):
    """A dilated 'same' ``Conv3d`` that, on CPU, runs as a dense conv on its ``d^3`` interleaved sub-grids.

    A 3x3x3 conv with dilation ``d`` only mixes voxels ``d`` apart, so it equals an undilated
    conv applied to each sub-grid ``x[..., i::d, j::d, k::d]`` (TensorFlow's space-to-batch
    atrous convolution). PyTorch's CPU kernels for dilation >= 4 are several times slower than
    this (measured on 48^3 patches, 30 channels); other devices use the wrapped conv directly.

    Args:
        conv: a ``Conv3d`` with stride 1, groups 1, equal dilation ``d`` on every axis and
            'same' padding ``d * (k - 1) / 2``.
    """

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        if not self.supports(conv):
            raise ValueError(f"{conv} is not a 'same', stride-1 conv with one dilation on every axis")
        self.conv = conv

    @staticmethod
    def supports(conv: nn.Module) -> bool:
        if (not isinstance(conv, nn.Conv3d) or isinstance(conv.padding, str) or conv.groups != 1
                or set(conv.stride) != {1} or len(set(conv.dilation)) != 1):
            return False
        dilation = conv.dilation[0]
        return all(p == dilation * (k - 1) // 2 and k % 2 == 1 for p, k in zip(conv.padding, conv.kernel_size))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.device.type != "cpu":
            return self.conv(image)
        d = self.conv.dilation[0]
        batch, channels, *size = image.shape
        image = F.pad(image, (0, -size[2] % d, 0, -size[1] % d, 0, -size[0] % d))  # zeros, as conv padding
        grid = [n // d for n in image.shape[2:]]
        subgrids = image.reshape(batch, channels, grid[0], d, grid[1], d, grid[2], d).permute(0, 3, 5, 7, 1, 2, 4, 6)
        subgrids = subgrids.reshape(batch * d**3, channels, *grid)
        padding = [(k - 1) // 2 for k in self.conv.kernel_size]
        out = F.conv3d(subgrids, self.conv.weight, self.conv.bias, padding=padding)
        out = out.reshape(batch, d, d, d, -1, *grid).permute(0, 4, 5, 1, 6, 2, 7, 3)
        return out.reshape(batch, -1, grid[0] * d, grid[1] * d, grid[2] * d)[:, :, :size[0], :size[1], :size[2]]


def _with_subgrid_convs(block: nn.Sequential, min_dilation: int = 4) -> nn.Sequential:
    """``block`` with its convs of dilation >= ``min_dilation`` computed on sub-grids on CPU."""
    return nn.Sequential(*[
        SubgridDilatedConv3d(module) if SubgridDilatedConv3d.supports(module) and module.dilation[0] >= min_dilation
        else module
        for module in block
    ])


def meshnet_blocks(network: nn.Module, num_layers: int) -> list[nn.Sequential]:
    """The first ``num_layers`` blocks (conv, optional instance norm, activation) of a MeshNet.

    The final 1x1x1 classifier is never a feature layer.
    """
    blocks: list[list[nn.Module]] = []
    for module in network.layers:
        if isinstance(module, nn.Conv3d):
            blocks.append([])
        if blocks:
            blocks[-1].append(module)
    available = len(blocks) - 1
    if not 1 <= num_layers <= available:
        raise T1T2Error(f"MeshNet {getattr(network, 'name', '')!r} has {available} feature layers; "
                        f"num_layers={num_layers} is out of range")
    return [nn.Sequential(*block) for block in blocks[:num_layers]]


def meshnet_feature_extractor(model: str = "model30chan18cls", num_layers: int = DEFAULT_FEATURE_LAYERS,
                              input_orientation: str | None = "RAS") -> FrozenFeatureExtractor:
    """Frozen feature extractor made of the first blocks of a pretrained brainchop MeshNet.

    ``model30chan18cls`` has 30 channels per block and dilations 1, 2, 4, 8, 16, ...: three blocks
    see 15^3 voxels around each voxel (tissue boundaries and local texture), each block keeps
    the patch size ('same' padding). Convs of dilation >= 4 run as :class:`SubgridDilatedConv3d`
    (same result, faster on CPU).

    Args:
        model: brainchop model name (in :func:`monai_t1t2.nets.meshnet.brainchop_dir`), folder or ``.pt``.
        num_layers: number of conv blocks kept; each gives one feature map.
        input_orientation: voxel order of the patches to compare (the data module's are RAS).

    Returns:
        a module mapping ``(B, 1, X, Y, Z)`` to ``num_layers`` maps ``(B, 30, X, Y, Z)``.

    Raises:
        T1T2Error: the model is not found or has fewer layers than asked.
    """
    from monai_t1t2.nets.meshnet import load_meshnet, resolve_model_path

    try:
        network = load_meshnet(resolve_model_path(model))
    except T1T2Error as err:
        raise T1T2Error(f"perceptual loss: cannot load the feature extractor: {err}") from None
    blocks = [_with_subgrid_convs(block) for block in meshnet_blocks(network, num_layers)]
    return FrozenFeatureExtractor(blocks, input_orientation=input_orientation)


# ----------------------------------------------------------------------------- perceptual loss


def _unit_normalise(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """LPIPS' ``normalize_tensor``: divide each voxel's feature vector by its L2 norm over channels."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class RegionWeightedPerceptualLoss(nn.Module):
    """LPIPS-style 3D perceptual distance, averaged with per-voxel region weights.

    For each feature layer ``l`` of ``extractor``, features of prediction and target are
    unit-normalised across channels at every voxel and ``d_l = sum_c (f_pred - f_ref)^2``
    (in [0, 4]) is a distance map ``(B, 1, x, y, z)``, resampled (trilinear) to the patch size
    when the layer changed it. Layers are combined as ``d = sum_l layer_weights[l] * d_l``
    (default: mean over layers), and each sample's loss is the weighted mean
    ``sum(w * d) / sum(w)`` over its voxels. The weighted mean (not ``mean(w * d)``) lets the
    weights move emphasis between regions without changing the loss scale: a patch full of
    small, heavily weighted structures is not worth more than a white-matter patch, and the
    loss weight of the LightningModule keeps its meaning with uniform weights (``weights=None``).
    Unit normalisation makes the distance relative: adding signal to flat zero background
    changes the feature direction more than the same change to bright tissue; the region
    weights (background clipped to 0.5 by default) are what put tissue first.

    Args:
        extractor: frozen module mapping ``(B, 1, X, Y, Z)`` to a list of feature maps
            ``(B, C_l, x_l, y_l, z_l)`` (e.g. :func:`meshnet_feature_extractor`).
        layer_weights: one non-negative weight per feature layer; None gives ``1 / L`` each.
        reduction: ``"mean"`` | ``"sum"`` over the batch, or ``"none"`` for the ``(B,)`` per-sample losses.

    Call ``loss(prediction, target, weights=None)`` with ``prediction``, ``target`` ``(B, 1, X, Y, Z)``
    in [0, 1] and ``weights`` ``(B, 1, X, Y, Z)`` non-negative, or None for uniform weights.
    A sample whose weights are all zero contributes 0.
    """

    def __init__(self, extractor: nn.Module, layer_weights: Sequence[float] | None = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.extractor = extractor
        self.layer_weights = None if layer_weights is None else [float(w) for w in layer_weights]
        if self.layer_weights is not None and any(w < 0 for w in self.layer_weights):
            raise ValueError(f"layer_weights must be non-negative, got {self.layer_weights}")
        self.reduction = _check_reduction(reduction)

    def distance_map(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Layer-combined perceptual distance per voxel, ``(B, 1, X, Y, Z)``."""
        predicted_features = self.extractor(prediction)
        with torch.no_grad():
            target_features = self.extractor(target)
        if len(predicted_features) != len(target_features):
            raise ValueError("the extractor returned different numbers of feature maps for prediction and target")
        layer_weights = self.layer_weights or [1.0 / len(predicted_features)] * len(predicted_features)
        if len(layer_weights) != len(predicted_features):
            raise ValueError(f"{len(layer_weights)} layer_weights for {len(predicted_features)} feature layers")
        total = prediction.new_zeros(prediction.shape)
        for weight, predicted, reference in zip(layer_weights, predicted_features, target_features):
            distance = (_unit_normalise(predicted) - _unit_normalise(reference)).pow(2).sum(dim=1, keepdim=True)
            if distance.shape[2:] != prediction.shape[2:]:
                distance = F.interpolate(distance, size=prediction.shape[2:], mode="trilinear", align_corners=False)
            total = total + weight * distance
        return total

    def forward(self, prediction: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        _check_patches(prediction, target, weights=weights)
        distance = self.distance_map(prediction, target)
        if weights is None:
            per_sample = distance.flatten(1).mean(dim=1)
        else:
            weights = weights.to(distance.dtype).flatten(1)
            per_sample = (weights * distance.flatten(1)).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-8)
        return _reduce(per_sample, self.reduction)


# ----------------------------------------------------------------------------- tumour preservation




def _masked_mean(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``image`` over ``mask``: ``(B,)``; 0 where the mask is empty."""
    return (image * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1.0)


class TumourPreservationLoss(nn.Module):
    """Keep the tumour's T2 intensities and its contrast to the surrounding tissue.

    With ``T`` the tumour mask, ``D = dilate(T, dilation)`` (which also covers the uncertain border
    of an automatic segmentation) and the ring ``R = (dilate(D, ring_width) - D) & (target > 0)``
    (tissue within ``ring_width`` voxels outside ``D``; the zero background of skull-stripped
    T2 is not tissue), each sample's loss is

    * intensity: ``mean_D |prediction - target|`` (L1 inside the dilated tumour), plus
    * contrast: ``|(mean_T pred - mean_R pred) - (mean_T ref - mean_R ref)|``.

    The contrast is a difference of means, not a ratio: intensities are in [0, 1] and the ring
    mean can be close to 0 (dark tissue, patch edges), where a ratio and its gradient explode;
    the difference is bounded by 2 and on the scale of the intensity term. The contrast term is 0
    when the ring is empty (tumour filling the patch). A sample with no tumour voxel gives 0
    (still connected to the graph, so backward works on any batch).

    Args:
        dilation: radius in voxels of the dilation of the tumour mask (cube structuring element).
        ring_width: width in voxels of the ring of surrounding tissue outside the dilated tumour.
        intensity_weight, contrast_weight: weights of the two terms.
        reduction: ``"mean"`` | ``"sum"`` over the batch (samples without tumour count as 0),
            or ``"none"`` for the ``(B,)`` per-sample losses.

    Call ``loss(prediction, target, tumour)`` with ``(B, 1, X, Y, Z)`` tensors; ``tumour`` is
    binarised as ``tumour > 0`` (BraTS labels work too).
    """

    def __init__(self, dilation: int = 2, ring_width: int = 3, intensity_weight: float = 1.0,
                 contrast_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if dilation < 0 or ring_width < 1:
            raise ValueError(f"need dilation >= 0 and ring_width >= 1, got {dilation}, {ring_width}")
        self.dilation, self.ring_width = int(dilation), int(ring_width)
        self.intensity_weight, self.contrast_weight = float(intensity_weight), float(contrast_weight)
        self.reduction = _check_reduction(reduction)

    def regions(self, tumour: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float masks ``(tumour, dilated tumour, ring)``, each ``(B, 1, X, Y, Z)``."""
        tumour = (tumour > 0).to(target.dtype)
        dilated = dilate(tumour, self.dilation)
        # Dilations add up: dilate(dilate(T, a), b) == dilate(T, a + b).
        ring = (dilate(tumour, self.dilation + self.ring_width) - dilated) * (target > 0).to(target.dtype)
        return tumour, dilated, ring

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, tumour: torch.Tensor) -> torch.Tensor:
        _check_patches(prediction, target, tumour=tumour)
        tumour, dilated, ring = self.regions(tumour.detach(), target.detach())
        intensity = _masked_mean((prediction - target).abs(), dilated)
        predicted_contrast = _masked_mean(prediction, tumour) - _masked_mean(prediction, ring)
        reference_contrast = _masked_mean(target, tumour) - _masked_mean(target, ring)
        has_ring = (ring.flatten(1).sum(1) > 0).to(prediction.dtype)
        contrast = (predicted_contrast - reference_contrast).abs() * has_ring
        # intensity and contrast are already 0 without tumour voxels (empty masks give mean 0).
        per_sample = self.intensity_weight * intensity + self.contrast_weight * contrast
        return _reduce(per_sample, self.reduction)


# ----------------------------------------------------------------------------- region statistics


class RegionStatisticsLoss(nn.Module):
    """Each region group's mean and spread in the prediction match the real T2's, patch by patch.

    With ``G_g`` the voxels of region group ``g`` (codes of :mod:`monai_t1t2.regions`, background
    0 left out) in a sample's patch, ``m`` the mean and ``s`` the standard deviation over them,

    ``l_g = |m(pred) - m(ref)| + spread_weight * |s(pred) - s(ref)|``

    and the sample's loss is ``sum_g w_g l_g / sum_g w_g`` over the groups with at least
    ``min_voxels`` voxels, ``w_g`` the mean of the region weight map over ``G_g`` (the weights of
    the region-weighted perceptual loss, so a small structure counts as much there as here), or
    1 without weights. A voxel-wise loss can be low while a small region is uniformly too bright
    or washed out; this term sees exactly that, and it does not care where inside the region the
    error is (a permutation of the voxels of a region costs nothing). A patch without a
    qualifying group gives 0 (still in the graph, so backward works on any batch).

    Args:
        num_groups: group codes are ``0 .. num_groups - 1`` (default: background + the 7 groups).
        min_voxels: a group needs this many voxels in the patch for its statistics to count.
        spread_weight: weight of the standard-deviation term against the mean term.
        reduction: ``"mean"`` | ``"sum"`` over the batch, or ``"none"`` for the ``(B,)`` per-sample losses.

    Call ``loss(prediction, target, groups, weights=None)`` with ``(B, 1, X, Y, Z)`` tensors;
    ``groups`` holds the integer codes (any dtype; rounded).
    """

    def __init__(self, num_groups: int = 8, min_voxels: int = 8, spread_weight: float = 1.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        if num_groups < 2 or min_voxels < 2 or spread_weight < 0:
            raise ValueError(f"need num_groups >= 2, min_voxels >= 2, spread_weight >= 0, got "
                             f"{num_groups}, {min_voxels}, {spread_weight}")
        self.num_groups, self.min_voxels, self.spread_weight = int(num_groups), int(min_voxels), float(spread_weight)
        self.reduction = _check_reduction(reduction)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, groups: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        _check_patches(prediction, target, groups=groups, weights=weights)
        codes = groups.detach().round().long().clamp(0, self.num_groups - 1).flatten(1)
        members = F.one_hot(codes, self.num_groups).transpose(1, 2).to(prediction.dtype)  # (B, G, N)
        counts = members.sum(2)
        size = counts.clamp_min(1.0)

        def statistics(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            values = image.flatten(1)[:, None]
            mean = (members * values).sum(2) / size
            variance = (members * (values - mean[..., None]).pow(2)).sum(2) / size
            return mean, (variance + 1e-8).sqrt()

        predicted_mean, predicted_spread = statistics(prediction)
        with torch.no_grad():
            reference_mean, reference_spread = statistics(target.detach())
        per_group = (predicted_mean - reference_mean).abs() + self.spread_weight * (predicted_spread - reference_spread).abs()
        if weights is None:
            group_weight = torch.ones_like(counts)
        else:
            group_weight = (members * weights.detach().to(prediction.dtype).flatten(1)[:, None]).sum(2) / size
        group_weight = group_weight * (counts >= self.min_voxels).to(prediction.dtype)
        group_weight[:, 0] = 0.0  # background
        per_sample = (group_weight * per_group).sum(1) / group_weight.sum(1).clamp_min(1e-8)
        return _reduce(per_sample, self.reduction)


# ----------------------------------------------------------------------------- intensity distribution


class IntensityDistributionLoss(nn.Module):
    """The prediction's intensity distribution inside a mask matches the real T2's, patch by patch.

    Per sample, with ``p`` and ``t`` the prediction's and the target's values on the ``N`` voxels of
    the mask, each sorted ascending, the loss is ``mean_i |p_(i) - t_(i)|``: the 1-Wasserstein
    distance between the two intensity histograms (sorted-values matching, as in sliced
    Wasserstein losses). It does not care where a value is (a permutation of the voxels inside the
    mask costs nothing) and it is never above the masked L1 (the identity is one coupling of the
    two histograms). What it adds to a voxel-wise loss is the pull against regression to the mean:
    a network that predicts the conditional mean narrows the histogram, in particular its tails,
    which the protocol's percentile rescaling (p0.5, p99.5 of the prediction) then stretches.
    Computed in float32 under any autocast. A sample with an empty mask gives 0 (still in the
    graph, so backward works on any batch).

    Args:
        reduction: ``"mean"`` | ``"sum"`` over the batch, or ``"none"`` for the ``(B,)`` per-sample losses.

    Call ``loss(prediction, target, mask)`` with ``(B, 1, ...)`` tensors of one shape (2D or 3D);
    ``mask`` is binarised as ``mask > 0``.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_one_shape(prediction, target, mask)
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            # One sort per tensor for the whole batch: voxels outside the mask become +inf, so each row's
            # first n (its mask's size) sorted values are its masked values in order; the rest are dropped.
            inside = mask.detach().flatten(1) > 0
            outside = torch.tensor(float("inf"), device=prediction.device)
            predicted = torch.sort(torch.where(inside, prediction.float().flatten(1), outside), dim=1).values
            reference = torch.sort(torch.where(inside, target.detach().float().flatten(1), outside), dim=1).values
            count = inside.sum(1, keepdim=True)
            ranked = torch.arange(inside.shape[1], device=prediction.device)[None] < count
            differences = torch.where(ranked, predicted - reference, torch.zeros_like(predicted)).abs()
            per_sample = differences.sum(1) / count[:, 0].clamp_min(1)  # an empty mask: 0, still in the graph
            return _reduce(per_sample, self.reduction)


# ----------------------------------------------------------------------------- brain-masked base loss


class MaskedL1SSIMLoss(nn.Module):
    """``l1_weight * L1 + ssim_weight * (1 - SSIM)``, both averaged over brain voxels only.

    The protocol of ``EVALUATION.md`` scores inside the brain mask only; this loss trains in the
    same place. Outside the brain both prediction and target are 0 after masking, which an
    unmasked SSIM counts as perfect windows, diluting the gradient of the voxels that are
    scored. The SSIM map uses the protocol's window (Gaussian 11, sigma 1.5, K1 0.01, K2 0.03,
    data range 1, 'valid' borders: :func:`monai_t1t2.metrics.ssim_map`) and is averaged over the
    mask voxels it covers, like :func:`monai_t1t2.metrics.masked_ssim`. Works in 2D
    ``(B, 1, X, Y)`` and 3D ``(B, 1, X, Y, Z)``.

    Args:
        l1_weight, ssim_weight: weights of the two terms.
    """

    def __init__(self, l1_weight: float = 1.0, ssim_weight: float = 1.0) -> None:
        super().__init__()
        self.l1_weight, self.ssim_weight = l1_weight, ssim_weight

    def terms(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"l1", "ssim"}``: masked L1 and ``1 - masked SSIM`` (0 when the mask is empty)."""
        _check_one_shape(prediction, target, mask)
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            # SSIM is a difference of local second moments: bf16 / fp16 (mixed precision) cancels
            # it to noise, so both terms are computed in float32.
            return self._terms(prediction.float(), target.float(), mask)

    def _terms(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        inside = (mask > 0).to(prediction.dtype)
        count = inside.sum()
        if count == 0:
            zero = prediction.sum() * 0
            return {"l1": zero, "ssim": zero}
        prediction = prediction * inside  # the protocol scores a masked prediction
        l1 = ((prediction - target).abs() * inside).sum() / count
        dims = prediction.ndim - 2
        radius = SSIM_KERNEL_SIZE // 2
        if min(prediction.shape[2:]) < SSIM_KERNEL_SIZE:
            return {"l1": l1, "ssim": prediction.sum() * 0}
        ssim = ssim_map(prediction, target)
        covered = inside[(slice(None), slice(None)) + (slice(radius, -radius),) * dims]
        if covered.sum() == 0:
            return {"l1": l1, "ssim": prediction.sum() * 0}
        return {"l1": l1, "ssim": 1.0 - (ssim * covered).sum() / covered.sum()}

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        terms = self.terms(prediction, target, mask)
        return self.l1_weight * terms["l1"] + self.ssim_weight * terms["ssim"]
