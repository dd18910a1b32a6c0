"""What stands between a T1-only model and the tumour contrast of the real T2, per test subject.

The tumour contrast error of ``../shared/EVALUATION.md`` compares ``C = mean(tumour) / mean(normal WM)``
of the prediction and of the real T2. A model sees only the T1, so this script measures how much of the
T2's tumour contrast the T1's *intensities* carry, subject by subject:

- ``c_ref``: the real T2's tumour contrast; ``c_t1``: the same ratio on the T1 (normalised as the
  protocol normalises a prediction), both from the protocol's tumour and normal white matter;
- ``located``: the contrast error of a predictor that knows exactly where the tumour is and how dark it is
  in the T1, and predicts its T2 contrast from that with the training cohort's relation (a least-squares
  line ``c_ref = a + b c_t1`` fitted on the 28 ``training`` subjects): what the T1's tumour intensity
  tells about the tumour's T2 brightness, across subjects;
- ``oracle``: the contrast error of the best voxel-wise map *for this subject*, the lookup table fitted
  on the subject's own T1 and T2 (a bound no fitted lookup table, nor any network that maps intensity
  without spatial context, can beat on average over a bin);
- the contrast errors of the floor, the training lookup table and the trained models, read from the
  quality benchmark's ``quality.json`` files (``--results``).

A subject on which the oracle's error is large is one where the tumour is not visible as such in the
T1's intensity: a model can only get it from shape and context.

With ``--checkpoint NAME=PATH`` it also splits a model's error into its two factors, since
``C_pred / C_ref = (tumour_pred / tumour_ref) * (wm_ref / wm_pred)`` (the mean normalised intensity
in the tumour and in normal white matter, after the protocol's normalisation of each image): the
error the model's tumour level alone would give, ``|tumour_pred / tumour_ref - 1|``, and the error its
white-matter level alone would give, ``|wm_ref / wm_pred - 1|``; and the 99.5th percentile of the raw
prediction in the brain (the protocol rescales the prediction so that it is 1).

    python benchmarks/tumour_contrast.py --results benchmarks/results/split_a/quality.json \\
        benchmarks/results/split_b/quality.json \\
        --checkpoint 3d=runs/cpu/lightning_logs/version_2/checkpoints/last.ckpt

``--tail-calibration`` scores the ``--checkpoint`` models as a bundle exported with ``CalibrateTailsd``
writes them (from 0.13.0 on).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from quality import (DATALIST, PARCELLATION_MODEL, _cell, apply_lookup_table, bin_medians,  # noqa: E402
                     fill_empty_bins, load_case, load_checkpoint, predict)
from monai_t1t2.io import load_datalist  # noqa: E402
from monai_t1t2.masks import nonzero_brain  # noqa: E402
from monai_t1t2.metrics import evaluate, normal_white_matter, normalise_for_scoring  # noqa: E402
from monai_t1t2.nets.meshnet import label_names  # noqa: E402
from monai_t1t2.regions import labels_to_groups  # noqa: E402
from monai_t1t2.transforms import CalibrateTails  # noqa: E402


def regions(case: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The protocol's tumour (inside the brain), normal white matter (metrics.py) and region groups of a case."""
    tumour = case["tumor_seg"] & case["mask"]
    groups = labels_to_groups(case["labels"], label_names(PARCELLATION_MODEL), tumour)
    return tumour, normal_white_matter(groups, tumour, case["mask"]), groups


def levels(image: np.ndarray, case: dict) -> dict[str, float]:
    """Mean of ``image``, normalised as the protocol does, in the tumour and in normal white matter."""
    tumour, white, _ = case["regions"]
    normalised = normalise_for_scoring(image, case["mask"])
    return {"tumour": float(normalised[tumour].mean(dtype=np.float64)),
            "wm": float(normalised[white].mean(dtype=np.float64))}


def load(subject: dict, cache_dir: Path) -> dict:
    case = load_case(subject, cache_dir)
    case["regions"] = regions(case)
    return case


def contrasts(case: dict) -> dict[str, float]:
    """The real T2's tumour contrast and the T1's (the T1 normalised as if it were a prediction)."""
    (t1, t2) = (levels(case[key], case) for key in ("t1", "t2"))
    return {"c_ref": t2["tumour"] / t2["wm"], "c_t1": t1["tumour"] / t1["wm"]}


def oracle(case: dict) -> dict[str, float]:
    """The subject's own lookup table: its contrast error, contrast and brain SSIM."""
    prediction = apply_lookup_table(fill_empty_bins(bin_medians(case)), case)
    scores = evaluate(prediction, case["t2"], case["mask"], case["tumor_seg"], case["labels"])
    return {"oracle": scores["tumour_contrast_error"], "oracle_c": scores["c_pred"], "oracle_ssim": scores["ssim"]}


def error_factors(prediction: np.ndarray, case: dict, ref: dict[str, float]) -> dict[str, float]:
    """The two factors of a prediction's contrast error against the real T2's ``levels`` ``ref``,
    its levels and its raw 99.5th percentile."""
    pred = levels(prediction, case)
    return {"wm_ref": ref["wm"], "wm_pred": pred["wm"], "tumour_ref": ref["tumour"], "tumour_pred": pred["tumour"],
            "error_tumour_level": abs(pred["tumour"] / ref["tumour"] - 1), "error_wm_level": abs(ref["wm"] / pred["wm"] - 1),
            "error": abs(pred["tumour"] / pred["wm"] / (ref["tumour"] / ref["wm"]) - 1),
            "top": float(np.percentile(prediction[case["mask"]], 99.5))}


def print_table(rows: dict[str, dict], columns: list[str]) -> dict[str, float]:
    print("| subject | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(_cell(row[column]) for column in columns) + " |")
    means = {column: float(np.nanmean([row[column] for row in rows.values()])) for column in columns}
    print("| **mean** | " + " | ".join(_cell(means[column]) for column in columns) + " |")
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", default=str(DATALIST))
    parser.add_argument("--cache-dir", default=str(REPO / "cache"))
    parser.add_argument("--results", nargs="*", default=[], help="quality.json files of benchmarks/quality.py")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="also split this model's contrast error into its tumour and white-matter factors")
    parser.add_argument("--tail-calibration", action="store_true",
                        help="score each --checkpoint model's prediction with its brain tails calibrated "
                             "(CalibrateTails), as a bundle exported with the step writes it")
    parser.add_argument("--training-factors", type=int, default=0, metavar="N",
                        help="also split the --checkpoint models' errors on the first N training subjects (seen in training)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "tumour_contrast.json"))
    args = parser.parse_args()

    recorded: dict[str, dict] = {}
    for path in args.results:
        for case, models in json.loads(Path(path).read_text())["results"].items():
            recorded.setdefault(case, {}).update(models)
    models = sorted({name for case in recorded.values() for name in case},
                    key=lambda name: (name not in ("inverted_t1", "lut"), name))

    checkpoints = {spec.split("=", 1)[0]: load_checkpoint(spec.split("=", 1)[1])[0] for spec in args.checkpoint}

    def prediction(module, case: dict) -> np.ndarray:
        if "brain" not in case:  # one hole fill per case, for every checkpoint
            case["brain"] = nonzero_brain(case["t1"])
        output = predict(module, case["t1"], case["brain"])
        return CalibrateTails()(output, case["brain"]) if args.tail_calibration else output

    training, training_factors = [], {name: {} for name in checkpoints}
    for index, subject in enumerate(tqdm(load_datalist(args.datalist, "training"), desc="training contrasts")):
        if subject.get("tumor_seg"):
            case = load(subject, Path(args.cache_dir))
            training.append(contrasts(case))
            for model, module in checkpoints.items() if index < args.training_factors else ():
                training_factors[model][subject["case"]] = error_factors(prediction(module, case), case,
                                                                         levels(case["t2"], case))
    slope, intercept = np.polyfit([row["c_t1"] for row in training], [row["c_ref"] for row in training], 1)
    print(f"training subjects: c_ref = {intercept:.3f} + {slope:.3f} c_t1 (n = {len(training)}, correlation "
          f"{np.corrcoef([r['c_t1'] for r in training], [r['c_ref'] for r in training])[0, 1]:.3f})")

    rows, factors = {}, {name: {} for name in checkpoints}
    for subject in tqdm(load_datalist(args.datalist, "test"), desc="test subjects"):
        if not subject.get("tumor_seg"):
            continue
        name = subject["case"]
        case = load(subject, Path(args.cache_dir))
        rows[name] = {**contrasts(case), **oracle(case)}
        reference = levels(case["t2"], case)
        located = intercept + slope * rows[name]["c_t1"]
        rows[name]["located"] = abs(located - rows[name]["c_ref"]) / rows[name]["c_ref"]
        for model in models:
            rows[name][model] = recorded.get(name, {}).get(model, {}).get("tumour_contrast_error", float("nan"))
        for model, module in checkpoints.items():
            factors[model][name] = error_factors(prediction(module, case), case, reference)

    means = print_table(rows, ["c_ref", "c_t1", "oracle", "located", *models])
    for model, table in factors.items():
        print(f"\n{model}: the contrast error and its two factors")
        means[model + "_factors"] = print_table(table, list(next(iter(table.values()))))
    for model, table in training_factors.items() if args.training_factors else ():
        print(f"\n{model}: the same on {len(table)} training subjects")
        means[model + "_training_factors"] = print_table(table, list(next(iter(table.values()))))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"fit": {"intercept": intercept, "slope": slope, "training": training},
                                             "rows": rows, "factors": factors,
                                             "training_factors": training_factors, "means": means}, indent=1))


if __name__ == "__main__":
    main()
