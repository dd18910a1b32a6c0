"""Anatomy-guided losses: region-weighted perceptual loss, tumour preservation, MeshNet features."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
import pytest
import torch
from torch import nn

from conftest import PAIRED, synthetic_head
from monai_t1t2.errors import T1T2Error
from monai_t1t2.losses import (FrozenFeatureExtractor, IntensityDistributionLoss, MaskedL1SSIMLoss, RegionStatisticsLoss, RegionWeightedPerceptualLoss,
                               SubgridDilatedConv3d, TumourPreservationLoss, meshnet_blocks, meshnet_feature_extractor)
from monai_t1t2.nets.meshnet import MeshNet, save_meshnet
from monai_t1t2.regions import region_weight_map

SHAPE = (16, 16, 16)
# Two cubes of the same size: one inside the brain's inner region, one in the background.
REGION_CUBE = (slice(6, 10), slice(6, 10), slice(6, 10))
BACKGROUND_CUBE = (slice(0, 4), slice(0, 4), slice(0, 4))


def tiny_meshnet(seed: int = 0, channels: int = 4) -> MeshNet:
    """A randomly initialised 3-block MeshNet (dilations 1, 2, 4) plus a 1x1x1 classifier."""
    torch.manual_seed(seed)
    conv = lambda cin, cout, d, k=3: {"type": "conv", "in_channels": cin, "out_channels": cout,  # noqa: E731
                                      "kernel_size": [k] * 3, "dilation": [d] * 3, "padding": "same", "bias": True}
    spec = [conv(1, channels, 1), {"type": "activation", "name": "elu"},
            conv(channels, channels, 2), {"type": "activation", "name": "elu"},
            conv(channels, channels, 4), {"type": "activation", "name": "elu"},
            conv(channels, 3, 1, k=1)]
    return MeshNet(spec, ["Unknown", "a", "b"]).eval()


def tiny_extractor(num_layers: int = 2) -> FrozenFeatureExtractor:
    return FrozenFeatureExtractor(meshnet_blocks(tiny_meshnet(), num_layers), input_orientation="RAS")


def head_patch(seed: int = 0) -> torch.Tensor:
    """A synthetic head ``(1, 1, 16, 16, 16)`` scaled to [0, 1]: background 0, tissue ~0.6, core ~1."""
    volume = synthetic_head(SHAPE, seed=seed)
    return torch.from_numpy(volume / volume.max()).clamp(0, 1)[None, None]


def altered(image: torch.Tensor, cube: tuple[slice, ...], change: float = 0.3) -> torch.Tensor:
    out = image.clone()
    out[(..., *cube)] += change
    return out


def group_map() -> np.ndarray:
    """Region groups of :func:`head_patch`: 0 background, 1 tissue, 3 inner core (around REGION_CUBE)."""
    head = head_patch()[0, 0].numpy()
    groups = np.where(head > 0, 1, 0)
    groups[4:12, 4:12, 4:12] = 3
    return groups


def weights_for(groups: np.ndarray, configured: dict | None = None) -> torch.Tensor:
    return torch.from_numpy(region_weight_map(groups, configured))[None, None]


# ----------------------------------------------------------------------------- feature extractor


def test_extractor_from_saved_meshnet_is_frozen_and_keeps_shapes(tmp_path):
    path = save_meshnet(tiny_meshnet(), tmp_path / "tiny.pt")
    extractor = meshnet_feature_extractor(str(path), num_layers=2)
    assert all(not p.requires_grad for p in extractor.parameters()) and len(list(extractor.parameters())) == 4
    extractor.train()
    assert not extractor.training and not any(m.training for m in extractor.modules())
    image = head_patch().requires_grad_(True)
    features = extractor(image)
    assert [tuple(f.shape) for f in features] == [(1, 4, *SHAPE)] * 2
    features[-1].sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0, "gradients reach the input"


def test_extractor_puts_features_back_in_patch_voxel_order():
    """A feature of voxel v describes patch voxel v: a one-voxel change moves features near that voxel."""
    extractor = FrozenFeatureExtractor(meshnet_blocks(tiny_meshnet(), 1), input_orientation="RAS")
    image = head_patch()
    changed = image.clone()
    changed[0, 0, 2, 5, 13] += 1.0
    difference = (extractor(changed)[0] - extractor(image)[0]).abs().sum(1)[0]
    touched = torch.nonzero(difference > 1e-6)
    assert touched.min(0).values.tolist() == [1, 4, 12] and touched.max(0).values.tolist() == [3, 6, 14]


@pytest.mark.parametrize("dilation", [2, 4, 5])
def test_subgrid_dilated_conv_equals_the_dilated_conv(dilation):
    torch.manual_seed(dilation)
    conv = nn.Conv3d(3, 2, 3, dilation=dilation, padding=dilation)
    image = torch.randn(2, 3, 13, 10, 9, requires_grad=True)
    expected = conv(image)
    (expected * torch.arange(expected.numel()).reshape(expected.shape)).sum().backward()
    expected_grad, image.grad = image.grad.clone(), None
    result = SubgridDilatedConv3d(conv)(image)
    assert result.shape == expected.shape and torch.allclose(result, expected, atol=1e-5)
    (result * torch.arange(result.numel()).reshape(result.shape)).sum().backward()
    assert torch.allclose(image.grad, expected_grad, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError):
        SubgridDilatedConv3d(nn.Conv3d(1, 1, 3, dilation=2, padding=1))


def test_extractor_features_equal_the_meshnet_layers(tmp_path):
    network = tiny_meshnet()
    extractor = meshnet_feature_extractor(str(save_meshnet(network, tmp_path / "tiny.pt")), num_layers=3,
                                          input_orientation=None)
    assert any(isinstance(m, SubgridDilatedConv3d) for m in extractor.modules()), "dilation 4 runs on sub-grids"
    image = head_patch()
    with torch.no_grad():
        assert torch.allclose(extractor(image)[-1], network.layers[:6](image), atol=1e-5)


def test_extractor_errors_name_the_problem(tmp_path):
    with pytest.raises(T1T2Error, match="no_such_model"):
        meshnet_feature_extractor("no_such_model")
    path = save_meshnet(tiny_meshnet(), tmp_path / "tiny.pt")
    with pytest.raises(T1T2Error, match="3 feature layers"):
        meshnet_feature_extractor(str(path), num_layers=4)


# ----------------------------------------------------------------------------- perceptual loss


def test_perceptual_loss_zero_for_identical_positive_and_differentiable():
    loss = RegionWeightedPerceptualLoss(tiny_extractor())
    target = head_patch()
    weights = weights_for(group_map())
    assert float(loss(target.clone(), target, weights)) == pytest.approx(0.0, abs=1e-9)
    prediction = altered(target, REGION_CUBE).requires_grad_(True)
    value = loss(prediction, target, weights)
    assert value.ndim == 0 and float(value.detach()) > 1e-4
    value.backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0


def test_perceptual_loss_larger_for_region_change_than_background_change():
    loss = RegionWeightedPerceptualLoss(tiny_extractor())
    target, weights = head_patch(), weights_for(group_map())
    region = float(loss(altered(target, REGION_CUBE), target, weights))
    background = float(loss(altered(target, BACKGROUND_CUBE), target, weights))
    assert region > background > 0, (region, background)
    # The weights make the difference: unit-normalised features make a change in flat zero
    # background large on its own, so without weights the ratio is lower.
    uniform_region = float(loss(altered(target, REGION_CUBE), target))
    uniform_background = float(loss(altered(target, BACKGROUND_CUBE), target))
    assert region / background > 2 * uniform_region / uniform_background


def test_region_weights_change_the_loss_as_configured():
    loss = RegionWeightedPerceptualLoss(tiny_extractor())
    target, groups = head_patch(), group_map()
    prediction = altered(target, REGION_CUBE)
    heavy = float(loss(prediction, target, weights_for(groups, {"deep_grey": 5.0, "background": 0.5})))
    light = float(loss(prediction, target, weights_for(groups, {"deep_grey": 0.5, "background": 5.0})))
    assert heavy > 2 * light, (heavy, light)
    # Weighted mean: a constant map equals uniform weighting, whatever the constant.
    uniform = float(loss(prediction, target, None))
    assert float(loss(prediction, target, torch.full_like(target, 3.0))) == pytest.approx(uniform, rel=1e-5)
    weights = weights_for(groups, {"deep_grey": 5.0})
    distance = loss.distance_map(prediction, target)
    assert float(loss(prediction, target, weights)) == pytest.approx(float((weights * distance).sum() / weights.sum()), rel=1e-5)


def test_perceptual_reduction_and_empty_weights():
    target = torch.cat([head_patch(0), head_patch(1)])
    prediction = altered(target, REGION_CUBE)
    weights = torch.ones_like(target)
    weights[1] = 0  # a sample whose weights are all zero counts 0
    per_sample = RegionWeightedPerceptualLoss(tiny_extractor(), reduction="none")(prediction, target, weights)
    assert per_sample.shape == (2,) and float(per_sample[0]) > 0 and float(per_sample[1]) == 0.0
    extractor = tiny_extractor()
    assert float(RegionWeightedPerceptualLoss(extractor)(prediction, target, weights)) == pytest.approx(float(per_sample.mean()))
    assert float(RegionWeightedPerceptualLoss(extractor, reduction="sum")(prediction, target, weights)) == pytest.approx(float(per_sample.sum()))
    with pytest.raises(ValueError, match="reduction"):
        RegionWeightedPerceptualLoss(extractor, reduction="max")
    with pytest.raises(ValueError, match="weights"):
        RegionWeightedPerceptualLoss(extractor)(prediction, target, weights[:, :, :8])


def test_layer_weights_select_layers():
    target = head_patch()
    prediction = altered(target, REGION_CUBE)
    first_only = RegionWeightedPerceptualLoss(tiny_extractor(2), layer_weights=[1.0, 0.0])(prediction, target)
    one_layer = RegionWeightedPerceptualLoss(tiny_extractor(1))(prediction, target)
    assert float(first_only) == pytest.approx(float(one_layer), rel=1e-6)
    with pytest.raises(ValueError, match="layer_weights"):
        RegionWeightedPerceptualLoss(tiny_extractor(2), layer_weights=[1.0])(prediction, target)


def test_feature_maps_smaller_than_the_patch_are_resampled():
    torch.manual_seed(0)
    extractor = FrozenFeatureExtractor([nn.Sequential(nn.Conv3d(1, 3, 3), nn.ELU())])  # 'valid': 14^3
    loss = RegionWeightedPerceptualLoss(extractor)
    target = head_patch()
    prediction = altered(target, REGION_CUBE)
    assert loss.distance_map(prediction, target).shape == target.shape
    assert float(loss(prediction, target, weights_for(group_map()))) > 0


# ----------------------------------------------------------------------------- tumour preservation


def tumour_patch() -> tuple[torch.Tensor, torch.Tensor]:
    """Target: tissue 0.5 with a bright 4^3 tumour (0.9); mask of the tumour, ``(1, 1, 16, 16, 16)`` each."""
    target = torch.full((1, 1, *SHAPE), 0.5)
    tumour = torch.zeros_like(target)
    tumour[..., 6:10, 6:10, 6:10] = 1
    return torch.where(tumour > 0, torch.tensor(0.9), target), tumour




def test_tumour_loss_zero_for_identical_and_differentiable():
    target, tumour = tumour_patch()
    loss = TumourPreservationLoss()
    assert float(loss(target.clone(), target, tumour)) == 0.0
    prediction = altered(target, (slice(6, 10),) * 3, change=-0.2).requires_grad_(True)
    value = loss(prediction, target, tumour)
    assert value.ndim == 0 and float(value.detach()) > 0
    value.backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0


def test_tumour_loss_terms_have_the_configured_values():
    target, tumour = tumour_patch()
    # Uniform shift: intensity term = shift, contrast unchanged.
    assert float(TumourPreservationLoss()(target + 0.1, target, tumour)) == pytest.approx(0.1, abs=1e-6)
    # Tumour flattened to the tissue value: contrast 0.4 lost; L1 0.4 on the 64 tumour voxels of the
    # voxels of the tumour dilated by 2.
    flat = torch.full_like(target, 0.5)
    contrast_only = TumourPreservationLoss(intensity_weight=0.0)(flat, target, tumour)
    intensity_only = TumourPreservationLoss(contrast_weight=0.0)(flat, target, tumour)
    assert float(contrast_only) == pytest.approx(0.4, abs=1e-6)
    dilated = int(ndimage.binary_dilation(tumour[0, 0].numpy() > 0, iterations=2).sum())  # city-block ball
    assert float(intensity_only) == pytest.approx(0.4 * 64 / dilated, abs=1e-6)
    _, dilated, ring = TumourPreservationLoss(dilation=2, ring_width=3).regions(tumour, target)
    grown = [ndimage.binary_dilation(tumour[0, 0].numpy() > 0, iterations=n) for n in (2, 5)]  # 2, then a 3-voxel ring
    assert int(dilated.sum()) == grown[0].sum() and int(ring.sum()) == (grown[1] & ~grown[0]).sum()


def test_tumour_ring_excludes_background():
    target, tumour = tumour_patch()
    target[..., :, :, 12:] = 0  # skull-stripped: no tissue there
    _, dilated, ring = TumourPreservationLoss().regions(tumour, target)
    grown = [ndimage.binary_dilation(tumour[0, 0].numpy() > 0, iterations=n) for n in (2, 5)]
    assert int(ring[..., 12:].sum()) == 0 and int(ring.sum()) == (grown[1] & ~grown[0])[..., :12].sum()


def test_tumour_loss_larger_for_tumour_change_than_background_change():
    target, tumour = tumour_patch()
    target[..., :2, :, :] = 0  # a slab of background
    loss = TumourPreservationLoss()
    in_tumour = float(loss(altered(target, (slice(6, 10),) * 3, change=0.3), target, tumour))
    in_background = float(loss(altered(target, (slice(0, 2), slice(6, 10), slice(6, 10)), change=0.3), target, tumour))
    assert in_tumour > 0.1 and in_background == 0.0


def test_tumour_loss_zero_without_tumour_and_batch_mean():
    target, tumour = tumour_patch()
    prediction = torch.full_like(target, 0.5)
    per_sample = TumourPreservationLoss(reduction="none")(
        torch.cat([prediction, prediction]), torch.cat([target, target]), torch.cat([tumour, torch.zeros_like(tumour)]))
    assert per_sample.shape == (2,) and float(per_sample[0]) > 0 and float(per_sample[1]) == 0.0
    batch = torch.cat([prediction, prediction]).requires_grad_(True)
    mean = TumourPreservationLoss()(batch, torch.cat([target, target]), torch.cat([tumour, torch.zeros_like(tumour)]))
    assert float(mean.detach()) == pytest.approx(float(per_sample[0]) / 2)
    no_tumour = TumourPreservationLoss()(batch, torch.cat([target, target]), torch.zeros_like(batch))
    assert float(no_tumour.detach()) == 0.0
    no_tumour.backward()  # an all-background batch still backpropagates (zero gradient)
    assert batch.grad is not None and float(batch.grad.abs().sum()) == 0.0


# ----------------------------------------------------------------------------- region statistics


def region_patch() -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, 1, 12, 12, 12) target with three region groups and background, and its group map."""
    torch.manual_seed(0)
    groups = torch.zeros(1, 1, 12, 12, 12)
    groups[..., 2:10, 2:10, 2:6] = 1
    groups[..., 2:10, 2:10, 6:10] = 2
    groups[..., 4:6, 4:6, 4:8] = 3  # a small structure: 16 voxels
    target = torch.where(groups > 0, 0.2 * groups + 0.05 * torch.rand_like(groups), torch.zeros_like(groups))
    return target, groups


def test_region_statistics_zero_for_identical_and_for_a_shuffle_inside_each_region():
    target, groups = region_patch()
    loss = RegionStatisticsLoss()
    assert float(loss(target, target, groups)) == pytest.approx(0.0, abs=1e-6)
    shuffled = target.clone().flatten()
    for code in (1, 2, 3):
        where = torch.nonzero(groups.flatten() == code).flatten()
        shuffled[where] = shuffled[where[torch.randperm(len(where))]]
    shuffled = shuffled.view_as(target)
    assert float((shuffled - target).abs().mean()) > 0.005  # voxel-wise it is wrong ...
    assert float(loss(shuffled, target, groups)) == pytest.approx(0.0, abs=1e-5)  # ... region-wise it is not


def test_region_statistics_values_weights_and_background():
    target, groups = region_patch()
    brighter = target + 0.1 * (groups == 3)  # the small structure too bright, same spread
    # three groups count equally without weights: 0.1 / 3
    assert float(RegionStatisticsLoss()(brighter, target, groups)) == pytest.approx(0.1 / 3, rel=1e-3)
    weights = torch.where(groups == 3, 4.0, 1.0)
    assert float(RegionStatisticsLoss()(brighter, target, groups, weights)) == pytest.approx(0.4 / 6, rel=1e-3)
    flat = torch.where(groups == 1, target[groups == 1].mean(), target)  # white matter washed out: spread lost
    spread = float(target[groups == 1].std(unbiased=False))
    assert float(RegionStatisticsLoss()(flat, target, groups)) == pytest.approx(spread / 3, abs=1e-4)  # sqrt(var + 1e-8)
    assert float(RegionStatisticsLoss(spread_weight=0.0)(flat, target, groups)) == pytest.approx(0.0, abs=1e-6)
    background = target + 0.3 * (groups == 0)  # background is not a region
    assert float(RegionStatisticsLoss()(background, target, groups)) == pytest.approx(0.0, abs=1e-6)
    tiny = RegionStatisticsLoss(min_voxels=17)(brighter, target, groups)  # the 16-voxel group no longer counts
    assert float(tiny) == pytest.approx(0.0, abs=1e-6)


def test_region_statistics_differentiable_and_zero_without_regions():
    target, groups = region_patch()
    prediction = (target + 0.05).requires_grad_(True)
    RegionStatisticsLoss()(prediction, target, groups).backward()
    assert prediction.grad is not None and float(prediction.grad.abs().sum()) > 0
    empty = torch.rand(2, 1, 6, 6, 6, requires_grad=True)
    loss = RegionStatisticsLoss(reduction="none")(empty, torch.zeros_like(empty), torch.zeros_like(empty))
    assert loss.shape == (2,) and float(loss.abs().sum()) == 0.0
    loss.sum().backward()
    with pytest.raises(ValueError, match="groups must have the shape"):
        RegionStatisticsLoss()(target, target, groups[..., :6])


# ----------------------------------------------------------------------------- intensity distribution


def test_intensity_distribution_is_blind_to_where_a_value_is_inside_the_mask():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 6, 6, 6)
    mask = torch.ones_like(target)
    mask[..., :2] = 0
    shuffled = target.clone()
    inside = mask[0, 0] > 0
    shuffled[0, 0][inside] = target[0, 0][inside][torch.randperm(int(inside.sum()))]
    shuffled[..., :2] = 5.0  # outside the mask: not counted
    loss = IntensityDistributionLoss(reduction="none")(shuffled, target, mask)
    assert loss.shape == (2,) and torch.allclose(loss, torch.zeros(2), atol=1e-7)
    assert float(MaskedL1SSIMLoss(1.0, 0.0)(shuffled[:1], target[:1], mask[:1])) > 0.1  # the L1 sees the shuffle


def test_intensity_distribution_values_and_bound_by_the_l1():
    torch.manual_seed(1)
    target = torch.rand(1, 1, 8, 8, 8)
    mask = torch.ones_like(target)
    loss = IntensityDistributionLoss()
    assert float(loss(target + 0.1, target, mask)) == pytest.approx(0.1, abs=1e-6)  # a shift moves every quantile
    narrowed = 0.5 + 0.5 * (target - 0.5)  # regression to the mean: half the spread, same mean
    expected = float((torch.sort(narrowed.flatten()).values - torch.sort(target.flatten()).values).abs().mean())
    assert float(loss(narrowed, target, mask)) == pytest.approx(expected, rel=1e-6) and expected > 0.1
    prediction = torch.rand_like(target)
    assert float(loss(prediction, target, mask)) <= float(MaskedL1SSIMLoss(1.0, 0.0)(prediction, target, mask)) + 1e-7


def test_intensity_distribution_of_a_batch_is_each_samples_own_with_masks_of_any_size():
    """One sort for the batch: each sample's loss is that of the sample alone, whatever its mask's size."""
    torch.manual_seed(3)
    target, prediction = torch.rand(3, 1, 7, 6, 5), torch.rand(3, 1, 7, 6, 5) * 1.5 - 0.2
    mask = (torch.rand_like(target) < torch.tensor([0.2, 0.7, 1.0]).view(3, 1, 1, 1, 1)).float()
    loss = IntensityDistributionLoss(reduction="none")(prediction, target, mask)
    for b in range(3):
        inside = mask[b] > 0
        alone = (torch.sort(prediction[b][inside]).values - torch.sort(target[b][inside]).values).abs().mean()
        assert float(loss[b]) == pytest.approx(float(alone), rel=1e-6), b
    assert len(set(mask.flatten(1).sum(1).tolist())) == 3


def test_intensity_distribution_differentiable_under_bf16_and_zero_on_an_empty_mask():
    torch.manual_seed(2)
    target = torch.rand(2, 1, 6, 6, 6)
    prediction = (0.5 + 0.5 * (target - 0.5)).requires_grad_(True)
    mask = torch.ones_like(target)
    mask[1] = 0
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = IntensityDistributionLoss(reduction="none")(prediction, target, mask)
    assert loss.dtype == torch.float32 and float(loss[0]) > 0 and float(loss[1]) == 0.0
    loss.sum().backward()
    assert float(prediction.grad[0].abs().sum()) > 0 and float(prediction.grad[1].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        IntensityDistributionLoss()(prediction, target, mask[..., :5])


# ----------------------------------------------------------------------------- in the LightningModule


def module_batch(patch: int = 16) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    t1 = torch.rand(2, 1, patch, patch, patch)
    tumour = torch.zeros_like(t1)
    tumour[0, :, 5:9, 5:9, 5:9] = 1
    groups = torch.ones_like(t1)
    groups[..., 8:, :, :] = 2
    return {"t1": t1, "t2": 1 - t1, "weights": torch.rand_like(t1) + 0.5, "tumour": tumour, "groups": groups}


def check_module_losses(perceptual_model: str) -> None:
    from monai_t1t2.training.module import TranslationModule

    module = TranslationModule(perceptual_weight=1.0, tumour_weight=1.0, region_stats_weight=1.0, perceptual_model=perceptual_model,
                               generator={"name": "unet", "channels": [4, 8], "num_res_units": 0},
                               patch_size=(16, 16, 16))
    module.train()
    assert not module.perceptual_loss.extractor.training, "Lightning's train() must not unfreeze the extractor"
    batch = module_batch()
    terms = module.generator_loss(batch, module(batch["t1"]))
    assert {"perceptual", "tumour", "region_stats", "total"} <= set(terms)
    assert all(torch.isfinite(terms[name]) and float(terms[name].detach()) > 0 for name in ("perceptual", "tumour", "region_stats"))
    terms["total"].backward()
    assert all(p.grad is None for p in module.perceptual_loss.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.generator.parameters())


def test_translation_module_trains_with_the_anatomy_losses(tmp_path):
    check_module_losses(str(save_meshnet(tiny_meshnet(), tmp_path / "tiny.pt")))


@pytest.mark.realdata
def test_pretrained_meshnet_extractor_on_a_real_patch():
    import nibabel as nib

    from monai_t1t2.transforms import PercentileNormalise

    extractor = meshnet_feature_extractor()
    assert all(not p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not any(m.training for m in extractor.modules())
    t2 = nib.load(str(PAIRED / "TCGA-DU-7294" / "t2.nii.gz")).get_fdata(dtype=np.float32)
    crop = (slice(100, 124), slice(100, 124), slice(70, 94))
    target = torch.as_tensor(PercentileNormalise()(t2)[crop])[None, None]
    features = extractor(target)
    assert [tuple(f.shape) for f in features] == [(1, 30, 24, 24, 24)] * 3
    loss = RegionWeightedPerceptualLoss(extractor)
    assert float(loss(target.clone(), target)) == pytest.approx(0.0, abs=1e-9)
    blurred = torch.nn.functional.avg_pool3d(target, 3, stride=1, padding=1, count_include_pad=False)
    assert float(loss(blurred, target)) > 1e-4
    patch, weights = head_patch(), weights_for(group_map())
    region = float(loss(altered(patch, REGION_CUBE), patch, weights))
    background = float(loss(altered(patch, BACKGROUND_CUBE), patch, weights))
    assert region > 1.5 * background > 0, (region, background)
    check_module_losses("model30chan18cls")


# ----------------------------------------------------------------------------- brain-masked L1 + SSIM


def _masked_pair(seed: int = 0, shape=(24, 24, 24)):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand((1, 1, *shape), generator=generator)
    mask = torch.zeros_like(target)
    mask[..., 4:20, 4:20, 4:20] = 1
    return target * mask, mask


def test_masked_l1_ssim_is_zero_for_identical_brains_and_ignores_background():
    target, mask = _masked_pair()
    loss = MaskedL1SSIMLoss()
    assert loss(target, target, mask).item() == pytest.approx(0.0, abs=1e-5)
    # Anything the network puts outside the brain is masked away, as the protocol does.
    assert loss(target + (1 - mask) * 0.7, target, mask).item() == pytest.approx(0.0, abs=1e-5)
    inside = target + mask * 0.2
    assert loss(inside, target, mask).item() > 0.1


def test_masked_ssim_term_equals_the_protocol_ssim():
    from monai_t1t2.metrics import masked_ssim

    target, mask = _masked_pair(1)
    prediction = (target + 0.1 * torch.rand_like(target)).clamp(0, 1) * mask
    terms = MaskedL1SSIMLoss().terms(prediction, target, mask)
    as_np = lambda t: t[0, 0].numpy()  # noqa: E731
    expected = masked_ssim(as_np(prediction), as_np(target), as_np(mask) > 0)
    assert 1 - terms["ssim"].item() == pytest.approx(expected, abs=1e-4)
    assert terms["l1"].item() == pytest.approx(float((prediction - target).abs()[mask > 0].mean()), rel=1e-5)


def test_masked_l1_ssim_is_differentiable_in_2d_and_3d_and_zero_without_brain():
    for shape in ((20, 20), (16, 16, 16)):
        target = torch.rand((2, 1, *shape))
        prediction = torch.rand((2, 1, *shape), requires_grad=True)
        MaskedL1SSIMLoss()(prediction, target, torch.ones_like(target)).backward()
        assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    empty = MaskedL1SSIMLoss()(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16), torch.zeros(1, 1, 16, 16, 16))
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="one shape"):
        MaskedL1SSIMLoss()(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 8, 8, 8), torch.ones(1, 1, 8, 8, 8))
