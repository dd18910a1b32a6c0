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
import yaml

REPO = Path(__file__).resolve().parents[1]
DATALIST = REPO.parent / "shared" / "data" / "datalist.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="a bundle directory or checkpoint; default: the shipped bundle")
    parser.add_argument("--cases", nargs="+", default=None,
                        help="datalist cases (default: the ones --config's recipe holds out for validation)")
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu.yaml"), help="the recipe whose validation draw is the default")
    parser.add_argument("--datalist", default=str(DATALIST))
    args = parser.parse_args()
    if any("=" not in item for item in args.model):
        parser.error("--model takes NAME=PATH")
    models = dict(item.split("=", 1) for item in args.model) or {"shipped": str(REPO / "bundles" / "t1t2_translation")}

    from monai_t1t2.inference.translation import load_translator, translate
    from monai_t1t2.errors import T1T2Error
    from monai_t1t2.io import load_datalist
    from monai_t1t2.metrics import normalise_for_scoring
    from monai_t1t2.training.data import split_subjects

    try:
        subjects = {s["case"]: s for part in ("training", "test") for s in load_datalist(Path(args.datalist), part)}
        if args.cases is None:  # the recipe's own draw, as quality.py --validation makes it
            data = yaml.safe_load(Path(args.config).read_text()).get("data", {})
            _, held_out = split_subjects(load_datalist(Path(args.datalist), "training"), data.get("val_cases"),
                                         data.get("val_fraction", 0.25), data.get("seed", 0))
            args.cases = [s["case"] for s in held_out]
        translators = {name: load_translator(path, device="cpu") for name, path in models.items()}
    except (T1T2Error, OSError) as err:
        parser.error(str(err))
    missing = [case for case in args.cases if case not in subjects]
    if missing:
        parser.error(f"{args.datalist} has no case {', '.join(missing)}")

    print("| case | model | p0.5 | p1 | median | p99 | p99.5 | median rescaled | MAE as written | MAE rescaled |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        subject = subjects[case]
        t1 = nib.load(subject["t1"]).get_fdata(dtype=np.float32)
        t2 = nib.load(subject["t2"]).get_fdata(dtype=np.float32)
        brain = (t1 > 0) & (t2 > 0)  # the protocol's mask
        reference = normalise_for_scoring(t2, brain)[brain]
        p = np.percentile(reference, [0.5, 1, 50, 99, 99.5])
        print(f"| {case} | real T2, normalised | " + " | ".join(f"{v:.3f}" for v in p) + " | | | |")
        for name, translator in translators.items():
            prediction = np.asarray(translate(subject["t1"], translator)).squeeze().astype(np.float32)
            written = prediction[brain]
            rescaled = normalise_for_scoring(prediction, brain)[brain]
            p = np.percentile(written, [0.5, 1, 50, 99, 99.5])
            print(f"| {case} | {name} | " + " | ".join(f"{v:.3f}" for v in p)
                  + f" | {np.median(rescaled):.3f} | {np.abs(written - reference).mean():.4f} | {np.abs(rescaled - reference).mean():.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
