"""The brain's darkest T1 voxels: what the real T2 holds there and what a model writes there.

The protocol's percentile normalisation maps the darkest 0.5 % of the brain's T1 to 0, the background's
value; a model fed that T1 (input floor 0) can take them for background. Per subject this prints the
share of brain voxels at 0 after normalisation, the share of them inside the tumour, the real T2 there
(protocol units), and with ``--checkpoint`` the mean a model writes there (as ``translate`` writes it,
with the checkpoint's own input floor; ``quality.predict``) and its mean absolute error against the real
T2 there. With ``--fill-sigma`` it also prints, for the
first checkpoint, the mean absolute error there of the prediction as written and of a fill from the
neighbours (normalised convolution: the Gaussian-weighted mean of the prediction over the other brain
voxels, one column per sigma in voxels): does the context say what those voxels should
be? With ``--depth R`` it splits those voxels by their distance to the brain's edge: the share deeper
than ``R`` voxels (the interior: ventricles, necrosis) and the real T2 in the interior and on the rim
(the skull-stripped edge): can depth tell CSF from rim where the T1's value cannot? The fills then
replace the interior only (without ``--depth``, every voxel at 0). Prints a markdown table.

    python benchmarks/darkest_voxels.py --checkpoint 0.8.0=runs/soup/shipped_080.ckpt \\
        --cases Brats18_CBICA_AQO_1 Brats18_TCIA10_637_1 Brats18_CBICA_ASY_1 BrainLesion-case-A Brats18_TCIA02_606_1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from quality import DATALIST, load_case, load_checkpoint, predict  # noqa: E402
from monai_t1t2.io import load_datalist  # noqa: E402
from monai_t1t2.transforms import PercentileNormalise  # noqa: E402


def fill_from_neighbours(prediction: np.ndarray, neighbours: np.ndarray, refill: np.ndarray, sigma: float) -> np.ndarray:
    """``prediction`` with the ``refill`` voxels replaced by the Gaussian-weighted mean (width ``sigma``
    voxels) of the prediction over the ``neighbours`` voxels (normalised convolution)."""
    others = neighbours.astype(np.float32)
    mean = gaussian_filter(prediction * others, sigma) / np.maximum(gaussian_filter(others, sigma), 1e-6)
    return np.where(refill, mean, prediction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=[], help="training or test case names of the datalist")
    parser.add_argument("--training", action="store_true", help="every subject of the datalist's training list")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--datalist", default=str(DATALIST))
    parser.add_argument("--fill-sigma", nargs="*", type=float, default=[], metavar="SIGMA",
                        help="with --checkpoint: errors of the first model there, as written and filled from its neighbours")
    parser.add_argument("--depth", type=float, default=None, metavar="R",
                        help="split the voxels at 0 by their distance to the brain's edge (voxels): rim <= R < interior")
    args = parser.parse_args()
    subjects = {s["case"]: s for key in ("training", "test") for s in load_datalist(Path(args.datalist), key)}
    if args.training:
        args.cases = args.cases + [s["case"] for s in load_datalist(Path(args.datalist), "training")]
    if not args.cases:
        parser.error("name --cases or --training")
    unknown = sorted(set(args.cases) - set(subjects))
    if unknown:
        parser.error(f"--cases {unknown}: not in {args.datalist}")
    models = {name: load_checkpoint(path)[0] for name, path in (item.split("=", 1) for item in args.checkpoint)}
    if args.fill_sigma and not models:
        parser.error("--fill-sigma needs a --checkpoint")
    errors = []
    if args.fill_sigma:
        errors = [f"{next(iter(models))} error as written"] + [f"error filled (sigma {s:g})" for s in args.fill_sigma]
    depth_columns = [] if args.depth is None else [f"of them deeper than {args.depth:g}", "real T2 interior", "real T2 rim"]
    columns = depth_columns + [f"{name} there" for name in models] + [f"{name} error" for name in models] + errors
    print("| " + " | ".join(["case", "brain voxels at 0", "of them in the tumour", "real T2 there"] + columns) + " |")
    print("|---|---|---|---|" + "---|" * len(columns))
    for case in args.cases:
        volumes = load_case(subjects[case], parcellation=False)
        brain = volumes["t1"] > 0
        darkest = brain & (PercentileNormalise()(volumes["t1"], brain) == 0)
        tumour = volumes["tumor_seg"] if volumes["tumor_seg"] is not None else np.zeros_like(brain)
        t2 = PercentileNormalise()(volumes["t2"], volumes["mask"])
        real = t2[darkest & volumes["mask"]].mean()
        predictions = [predict(module, volumes["t1"]) for module in models.values()]
        scored = darkest & volumes["mask"]
        by_depth, interior = [], darkest
        if args.depth is not None:
            interior = darkest & (distance_transform_edt(brain) > args.depth)
            rim = scored & ~interior
            by_depth = [(scored & interior).sum() / max(scored.sum(), 1)] + [
                t2[part].mean() if part.any() else float("nan") for part in (scored & interior, rim)]
        written = by_depth + ([prediction[darkest].mean() for prediction in predictions]
                   + [np.abs(prediction - t2)[scored].mean() for prediction in predictions])
        if args.fill_sigma:
            fills = [predictions[0]] + [fill_from_neighbours(predictions[0], brain & ~darkest, interior, sigma)
                                        for sigma in args.fill_sigma]
            written += [np.abs(fill - t2)[scored].mean() for fill in fills]
        print(f"| {case} | {darkest.sum() / brain.sum():.4f} | {(darkest & tumour).sum() / max(darkest.sum(), 1):.3f} "
              f"| {real:.3f} |" + "".join(f" {value:.3f} |" for value in written), flush=True)


if __name__ == "__main__":
    main()
