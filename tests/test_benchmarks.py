"""The quality benchmark scores what the package's pipeline writes, not a variant of it."""

from __future__ import annotations

import sys

import numpy as np
import torch

from conftest import REPO, synthetic_head


def test_quality_benchmark_predicts_what_translate_writes(tmp_path):
    """``benchmarks/quality.py``'s prediction of a checkpoint is ``translate``'s output of the same
    checkpoint (the bundle's pipeline; the bundle itself stores the weights in float16), voxel for voxel, including the brain's darkest voxels (which a mask on the normalised
    T1 once dropped), with the input floor 0 of older models and the floor of newer ones."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import quality

    from monai_t1t2.inference.translation import translate
    from monai_t1t2.training.module import TranslationModule

    generator = {"name": "unet", "channels": [4, 8], "num_res_units": 0, "norm": "instance", "head": "residual"}
    torch.manual_seed(0)
    module = TranslationModule(generator=generator, patch_size=(16, 16, 16))
    with torch.no_grad():
        module.generator.gate.fill_(1.0)  # the correction on: the darkest voxels are not the prior alone
    t1 = synthetic_head((40, 36, 28))
    for floor in (0.0, 1e-3):
        checkpoint = tmp_path / f"floor{floor}.ckpt"
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                    "datamodule_hyper_parameters": {"input_floor": floor}}, checkpoint)
        loaded, _ = quality.load_checkpoint(str(checkpoint))
        assert loaded.input_floor == floor
        benchmark = quality.predict(loaded, t1)
        written = translate(t1, model=checkpoint, affine=np.eye(4), mask_method="nonzero", device="cpu")[0].numpy()
        darkest = (t1 > 0) & (t1 <= np.percentile(t1[t1 > 0], 0.5))
        assert darkest.any() and benchmark[darkest].max() > 0
        np.testing.assert_allclose(benchmark, written, atol=1e-5)
