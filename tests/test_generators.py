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
