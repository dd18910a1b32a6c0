"""Generator construction: backbones, output heads, the 2D baseline."""

import pytest
import torch

from monai_t1t2.nets.generators import build_discriminator, build_generator

TINY = {"channels": [4, 8], "num_res_units": 0}


def test_residual_head_starts_at_the_inverted_t1_floor():
    torch.manual_seed(0)
    generator = build_generator(head="residual", **TINY)
    t1 = torch.rand(2, 1, 16, 16, 16)
    t1[:, :, :4] = 0  # background
    generator.train()
    output = generator(t1)
    assert torch.allclose(output, torch.where(t1 > 0, 1 - t1, torch.zeros_like(t1)))


def test_residual_head_learns_and_clamps_in_eval_mode():
    torch.manual_seed(0)
    generator = build_generator(head="residual", **TINY)
    t1 = torch.rand(1, 1, 16, 16, 16)
    loss = (generator(t1) - 0.5).abs().mean()
    loss.backward()
    assert generator.gate.grad is not None and generator.gate.grad.abs() > 0
    with torch.no_grad():
        generator.gate.fill_(100.0)  # a large correction must still leave [0, 1] outputs
    generator.eval()
    output = generator(t1)
    assert output.min() >= 0 and output.max() <= 1
    generator.train()
    assert generator(t1).max() > 1 or generator(t1).min() < 0, "training outputs are not clamped"


def test_sigmoid_head_range_and_2d_baseline():
    generator = build_generator(spatial_dims=2, **TINY)
    output = generator(torch.rand(3, 1, 24, 24))
    assert output.shape == (3, 1, 24, 24) and output.min() > 0 and output.max() < 1
    assert any(isinstance(layer, torch.nn.Conv2d) for layer in generator.modules())


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="head"):
        build_generator(head="tanh", **TINY)
    with pytest.raises(ValueError, match="generator"):
        build_generator(name="resnet", **TINY)


def test_discriminator_scores_patches():
    discriminator = build_discriminator(channels=4, num_layers_d=2)
    scores = discriminator(torch.rand(1, 2, 32, 32, 32))[-1]
    assert scores.ndim == 5 and scores.shape[1] == 1


def test_flip_averaging_mirrors_along_the_named_axis_and_back():
    from monai_t1t2.nets.generators import FlipAveragingInferer, patch_inferer

    # A network that is not mirror-symmetric: it adds a ramp along the first spatial axis. With one
    # window (roi = the volume) the sliding window is the network itself, so the average is known.
    ramp = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1, 1)
    network = lambda x: x + ramp  # noqa: E731
    volume = torch.rand(1, 1, 8, 6, 4)
    plain = patch_inferer((8, 6, 4), 1, 0.0)
    assert torch.allclose(plain(volume, network), volume + ramp)
    mirrored = patch_inferer((8, 6, 4), 1, 0.0, flip_axes=[0])
    assert isinstance(mirrored, FlipAveragingInferer)
    assert torch.allclose(mirrored(volume, network), volume + 3.5, atol=1e-5)  # (ramp + its mirror) / 2
    # Along another axis the ramp is not mirrored: both passes add it as is.
    assert torch.allclose(patch_inferer((8, 6, 4), 1, 0.0, flip_axes=[2])(volume, network), volume + ramp, atol=1e-5)
    assert mirrored.roi_size == (8, 6, 4) and mirrored.overlap == 0.0 and mirrored.sw_batch_size == 1


@pytest.mark.parametrize("axes", [[3], [-1], [0, 0]])
def test_flip_axes_must_be_distinct_spatial_axes(axes):
    from monai_t1t2.nets.generators import patch_inferer

    with pytest.raises(ValueError, match="flip_axes"):
        patch_inferer((8, 8, 8), 1, 0.5, flip_axes=axes)


def test_mask_input_starts_from_a_one_channel_model_and_sees_the_mask():
    """One-channel weights load into a mask-input generator with the mask's weights at 0: on the T1
    with the input floor it computes what the one-channel model computes on the T1 without it (the
    prior 0 at the floor in both); the mask reaches the backbone once its weights move."""
    from monai_t1t2.nets.generators import expand_input_channels
    from monai_t1t2.transforms import INPUT_FLOOR

    torch.manual_seed(0)
    one = build_generator(head="residual", **TINY)
    with torch.no_grad():
        one.gate.fill_(0.5)
    masked = build_generator(head="residual", mask_input=True, **TINY)
    weights = expand_input_channels(one.state_dict(), masked.state_dict())
    widened = [key for key, value in weights.items() if value.shape != one.state_dict()[key].shape]
    assert widened and all(weights[key][:, 1].abs().sum() == 0 for key in widened)
    masked.load_state_dict(weights)
    t1 = torch.rand(1, 1, 16, 16, 16) * 0.9 + 0.05
    t1[..., :4] = 0  # background
    t1[..., 8, 8, 8] = 0  # a brain voxel the percentile clip took to 0
    brain = torch.zeros_like(t1, dtype=torch.bool)
    brain[..., 4:] = True
    floored = torch.where(brain, t1.clamp_min(INPUT_FLOOR), t1)
    one.eval(), masked.eval()
    with torch.no_grad():
        expected, got = one(t1), masked(floored)
        assert torch.allclose(expected, got, atol=1e-3)  # the floor itself moves the backbone by ~1e-4
        masked.state_dict()[widened[0]][:, 1].fill_(0.1)  # shares the parameter's storage
        assert not torch.allclose(expected, masked(floored), atol=1e-3)
    # Same shapes pass through; a tensor that differs elsewhere than in its input channels is left to the caller.
    assert expand_input_channels(one.state_dict(), one.state_dict()).keys() == one.state_dict().keys()
    wider = build_generator(head="residual", channels=[8, 8], num_res_units=0)
    kept = expand_input_channels(one.state_dict(), wider.state_dict())
    assert all(torch.equal(kept[key], value) for key, value in one.state_dict().items())


def test_a_refiner_starts_from_the_model_without_it_and_then_changes_the_output():
    """A model without a refiner loads into one with it (:func:`add_refiner`: the refiner's gate at 0)
    and computes exactly what it computed; once the gate moves, the full-resolution refiner, which reads
    the T1 and the head's output, changes the output. A refiner needs the residual head."""
    from monai_t1t2.nets.generators import add_refiner

    torch.manual_seed(0)
    plain = build_generator(head="residual", **TINY)
    with torch.no_grad():
        plain.gate.fill_(0.5)
    refined = build_generator(head="residual", refine=4, **TINY)
    weights = add_refiner(plain.state_dict(), refined.state_dict())
    assert weights["refine_gate"] == 0 and any(key.startswith("refiner.") for key in weights)
    refined.load_state_dict(weights)
    own = refined.state_dict()
    assert add_refiner(own, own) is own  # weights that hold a refiner load as they are
    t1 = torch.rand(1, 1, 16, 16, 16)
    t1[..., :4] = 0
    plain.eval(), refined.eval()
    with torch.no_grad():
        assert torch.equal(plain(t1), refined(t1))
        refined.refine_gate.fill_(0.5)
        assert not torch.allclose(plain(t1), refined(t1), atol=1e-4)
    slices = build_generator(head="residual", refine=4, spatial_dims=2, **TINY)
    assert slices(torch.rand(2, 1, 16, 16)).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="refine"):
        build_generator(head="sigmoid", refine=4, **TINY)
