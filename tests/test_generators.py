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
