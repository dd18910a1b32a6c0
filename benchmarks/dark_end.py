"""Where a prediction's dark end sits, and what the protocol's percentile rescaling does with it.

The protocol of ``EVALUATION.md`` rescales every prediction by its own 0.5th and 99.5th percentiles
inside the brain before it scores it. A prediction whose darkest 0.5 % is not dark is pulled down
as a whole. For each model and case this prints the prediction's percentiles as ``translate`` writes
it, the median after the rescaling, and the brain MAE against the protocol-normalised real T2, both
before and after the rescaling (benchmarks/README.md, "A histogram term against regression to the mean").

    python benchmarks/dark_end.py --model ft64h=runs/ft64h/.../last.ckpt --model ft64hr=runs/ft64hr/.../last.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
COHORT = REPO.parent / "shared" / "data" / "cohort"
VALIDATION = ["Brats18_CBICA_AQO_1", "Brats18_TCIA10_637_1"]  # the recipe's 2 validation subjects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="a bundle directory or checkpoint; default: the shipped bundle")
    parser.add_argument("--cases", nargs="+", default=VALIDATION, help="cohort cases (default: the 2 validation subjects)")
    args = parser.parse_args()
    if any("=" not in item for item in args.model):
        parser.error("--model takes NAME=PATH")
    models = dict(item.split("=", 1) for item in args.model) or {"shipped": str(REPO / "bundles" / "t1t2_translation")}
    missing = [case for case in args.cases if not (COHORT / case / "t1.nii.gz").exists()]
    if missing:
        parser.error(f"no t1.nii.gz under {COHORT} for: {', '.join(missing)}")

    from monai_t1t2 import translate
    from monai_t1t2.metrics import normalise_for_scoring

    print("| case | model | p0.5 | p1 | median | p99 | p99.5 | median rescaled | MAE as written | MAE rescaled |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        folder = COHORT / case
        t1 = nib.load(folder / "t1.nii.gz").get_fdata(dtype=np.float32)
        t2 = nib.load(folder / "t2.nii.gz").get_fdata(dtype=np.float32)
        brain = (t1 > 0) & (t2 > 0)  # the protocol's mask
        reference = normalise_for_scoring(t2, brain)[brain]
        p = np.percentile(reference, [0.5, 1, 50, 99, 99.5])
        print(f"| {case} | real T2, normalised | " + " | ".join(f"{v:.3f}" for v in p) + " | | | |")
        for name, path in models.items():
            prediction = np.asarray(translate(str(folder / "t1.nii.gz"), path)).squeeze().astype(np.float32)
            written = prediction[brain]
            rescaled = normalise_for_scoring(prediction, brain)[brain]
            p = np.percentile(written, [0.5, 1, 50, 99, 99.5])
            print(f"| {case} | {name} | " + " | ".join(f"{v:.3f}" for v in p)
                  + f" | {np.median(rescaled):.3f} | {np.abs(written - reference).mean():.4f} | {np.abs(rescaled - reference).mean():.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
