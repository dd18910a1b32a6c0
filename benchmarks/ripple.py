"""Where a generator's 2-voxel ripple comes from: the layers of MONAI UNet's way back to full resolution.

One forward pass of a model on a 96^3 block at the centre of a T1 (the HCP template by default),
hooks on the up-path's last two layers (the stride-2 transposed convolution to one channel and the
1-to-1 3^3 convolution after it). For each layer output, the model's output and the T1, along each
axis: the mean absolute second difference ``|x_i - (x_(i-1) + x_(i+1)) / 2|`` inside the brain (a
2-voxel alternation maximises it) and the checkerboard index of ``healthy.py``; then the transposed
convolution's centre-tap and side-tap weight magnitudes per axis.

    OMP_NUM_THREADS=1 python benchmarks/ripple.py                        # the shipped bundle
    python benchmarks/ripple.py --model runs/x/.../last.ckpt --t1 other_t1.nii.gz

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.networks.nets import UNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from healthy import SHARED, checkerboard_by_axis  # noqa: E402

from monai_t1t2.errors import T1T2Error  # noqa: E402
from monai_t1t2.inference.translation import load_translator  # noqa: E402
from monai_t1t2.transforms import PercentileNormalise  # noqa: E402

AXES = ("L-R", "P-A", "I-S")


def second_difference(volume: np.ndarray, brain: np.ndarray, axis: int) -> float:
    """Mean ``|x_i - (x_(i-1) + x_(i+1)) / 2|`` along ``axis`` over voxels whose two neighbours are in ``brain``."""
    a, m = np.moveaxis(volume, axis, 0), np.moveaxis(brain, axis, 0)
    inside = m[1:-1] & m[:-2] & m[2:]
    return float(np.abs(a[1:-1] - (a[:-2] + a[2:]) / 2)[inside].mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="bundle folder or .ckpt (default: the shipped bundle)")
    parser.add_argument("--t1", default=str(SHARED / "templates" / "HCP-MNI152-1mm-brain" / "t1.nii.gz"))
    parser.add_argument("--block", type=int, default=96, help="side of the centred block")
    args = parser.parse_args(argv)
    if not Path(args.t1).is_file():
        parser.error(f"--t1 {args.t1}: no such file")
    try:
        translator = load_translator(args.model, device="cpu")
    except T1T2Error as err:
        parser.error(str(err))
    generator = translator.network.eval()
    if not isinstance(getattr(generator, "backbone", None), UNet):
        parser.error(f"{translator.source}: not a MONAI UNet generator (the probe hooks UNet's up-sampling layers)")
    up = generator.backbone.model[2]  # MONAI UNet: (down, SkipConnection(...), up); up = (transposed conv, residual unit)
    t1 = nib.as_closest_canonical(nib.load(args.t1)).get_fdata(dtype=np.float32)
    brain = t1 > 0
    normalised = np.asarray(PercentileNormalise()(t1, brain), dtype=np.float32)
    centre = [side // 2 for side in t1.shape]
    block = tuple(slice(c - args.block // 2, c + args.block // 2) for c in centre)
    inner = np.zeros(brain[block].shape, dtype=bool)
    inner[2:-2, 2:-2, 2:-2] = True  # away from the block's border
    inner &= brain[block]
    outputs = {}
    up[0].conv.register_forward_hook(lambda m, i, o: outputs.__setitem__("transposed convolution, before its norm", o))
    up[0].register_forward_hook(lambda m, i, o: outputs.__setitem__("after its norm and PReLU", o))
    generator.backbone.register_forward_hook(lambda m, i, o: outputs.__setitem__("backbone output", o))
    with torch.no_grad():
        outputs["model output"] = generator(torch.from_numpy(normalised[block])[None, None])
    outputs["T1 (normalised)"] = torch.from_numpy(normalised[block])[None, None]
    print(f"{translator.source}, {Path(args.t1).name}, {args.block}^3 block at the centre\n")
    print("| layer output | " + " | ".join(f"2nd difference {a}" for a in AXES) + " | "
          + " | ".join(f"checkerboard {a}" for a in AXES) + " |")
    print("|---|" + "---|" * 6)
    for name, value in outputs.items():
        volume = value[0, 0].float().numpy()
        seconds = [second_difference(volume, inner, axis) for axis in range(3)]
        print(f"| {name} | " + " | ".join(f"{v:.4g}" for v in seconds) + " | "
              + " | ".join(f"{v:.3f}" for v in checkerboard_by_axis(volume, inner)) + " |")
    weight = up[0].conv.weight.detach().abs()  # (in, 1, 3, 3, 3)
    print("\n| transposed convolution, axis | mean abs weight, centre tap | side taps |\n|---|---|---|")
    for axis, label in enumerate(AXES):
        pick = lambda k: weight.select(2 + axis, k).mean().item()  # noqa: E731
        print(f"| {label} | {pick(1):.4f} | {(pick(0) + pick(2)) / 2:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
