"""The brain mask, its skull-stripped rule, the head mask and the usable-slice rule (monai_t1t2.masks)."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from conftest import PAIRED, RAW, padded_head, synthetic_head
from monai_t1t2 import masks
from monai_t1t2 import quality as qc
from monai_t1t2.errors import T1T2Error
from monai_t1t2.io import read_volume


def noisy_head(seed: int = 0) -> np.ndarray:
    """synthetic_head inside a bright 'skull' shell on a noisy, non-zero background."""
    rng = np.random.default_rng(seed)
    head = synthetic_head(shape=(40, 40, 30), seed=seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in head.shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    skull = (radius > 0.85) & (radius < 0.95)
    return (head + 150.0 * skull + np.abs(rng.normal(0, 5, head.shape))).astype(np.float32)


def test_mask_rule_picks_nonzero_for_skull_stripped_and_fallback_otherwise(monkeypatch, tmp_path):
    stripped = synthetic_head()
    assert masks.is_skull_stripped(stripped)
    assert not masks.is_skull_stripped(noisy_head())
    volume = MetaTensor(torch.from_numpy(stripped)[None], affine=torch.eye(4, dtype=torch.float64))
    assert torch.equal(masks.brain_mask(volume), torch.from_numpy(stripped > 0)[None])
    # Without brainchop's models, "auto" on a head with noisy background falls back to the head mask.
    monkeypatch.setenv("MONAI_T1T2_BRAINCHOP_DIR", str(tmp_path / "no_brainchop"))
    head = noisy_head()
    mask = masks.brain_mask(MetaTensor(torch.from_numpy(head)[None], affine=torch.eye(4, dtype=torch.float64)))[0].numpy()
    assert not mask[0, 0, 0] and not mask[:, :, 0].any()  # corners and the noisy edge slices are background
    assert mask[20, 20, 15] and mask[20, 20, 15 + 4]     # brain centre inside, filled through the shell
    assert mask.mean() < 0.7
    with pytest.raises(T1T2Error, match="mask method"):
        masks.brain_mask(volume, method="magic")


@pytest.mark.realdata
def test_a_full_head_with_zero_air_is_not_taken_for_skull_stripped():
    raw = read_volume(RAW / "TCGA-FG-6692" / "t1.nii.gz")
    zeroed = raw.clone()
    zeroed[zeroed < 60] = 0
    assert float((zeroed == 0).float().mean()) >= masks.SKULL_STRIPPED_ZERO_FRACTION, "the old rule would say stripped"
    assert not masks.is_skull_stripped(zeroed)
    assert masks.resolve_mask_method(zeroed) in ("network", "head")
    assert masks.is_skull_stripped(read_volume(PAIRED / "TCGA-FG-6692" / "t1.nii.gz"))


@pytest.mark.parametrize("noise_sigma", [0.0, 8.0])
def test_head_mask_finds_head_with_and_without_background_noise(noise_sigma):
    image = padded_head()
    if noise_sigma:
        image = qc.simulate_rician_noise(image, noise_sigma, seed=1)
    head = masks.head_mask(image)
    truth = padded_head() > 0
    dice = 2 * (head & truth).sum() / (head.sum() + truth.sum())
    assert dice > 0.95


def test_head_mask_of_pure_noise_is_empty():
    assert not masks.head_mask(qc.simulate_noise_only((48, 48, 32), 10.0)).any()


def test_unusable_slices_by_brain_fraction():
    brain = np.zeros((20, 20, 6), dtype=bool)
    brain[:, :, 1:4] = True
    brain[9:11, 9:11, 4] = True  # 4 voxels of 400: 1 % of the largest slice
    assert masks.unusable_slices(brain) == [0, 4, 5]
    assert masks.unusable_slices(brain, min_brain_fraction=0.0) == [0, 5]


def test_slice_axis_is_the_thickest():
    assert masks.slice_axis_of((0.9, 0.9, 5.5)) == 2
    assert masks.slice_axis_of((1.2, 0.94, 0.94)) == 0
    assert masks.slice_axis_of((1.0, 1.0, 1.0)) == 2


def test_nonzero_brain_fills_enclosed_cavities_and_keeps_open_notches():
    """A skull-stripped block with a cavity at or below 0 inside it (ventricles an upstream pipeline
    left at 0 or undershot) is brain; a notch open to the background is not; tensors in, tensors out."""
    t1 = np.zeros((20, 20, 20), np.float32)
    t1[4:16, 4:16, 4:16] = 100.0
    t1[8:11, 8:11, 8:11] = 0.0
    t1[9, 9, 9] = -30.0
    t1[4:7, 9:11, 9:11] = 0.0  # a notch from the block's face
    brain = masks.nonzero_brain(t1)
    assert brain[8:11, 8:11, 8:11].all() and not brain[4:7, 9:11, 9:11].any()
    assert brain.sum() == (t1 > 0).sum() + 27
    tensor = masks.nonzero_brain(torch.as_tensor(t1)[None])
    assert tensor.dtype == torch.bool and tensor.shape == (1, 20, 20, 20) and (tensor[0].numpy() == brain).all()
    assert (masks.brain_mask(MetaTensor(torch.as_tensor(t1)[None]), "nonzero")[0].numpy() == brain).all()
