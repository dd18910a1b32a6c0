"""Can the whole T1 tell how bright the T2's white matter is? (the larger factor of the tumour contrast error)

``tumour_contrast.py`` splits a model's tumour contrast error into a tumour factor and a white-matter
factor; the white-matter factor is the larger one, because the real T2's normal white matter, after the
protocol's normalisation (``(x - p0.5) / (p99.5 - p0.5)`` in the brain), sits at a subject-specific
level (0.09-0.41 on the test subjects) that a patch model follows only half-way. This asks whether a
model that saw the *whole* T1 could do better: it fits the level from whole-brain T1 features on the
28 ``training`` subjects and scores the fit leave-one-out there (no test subject is used to choose
anything), then applies the fit on all 28 to the 12 test subjects, beside a model's recorded level.

Features, all of the T1 after the same normalisation: the mean in normal white matter, cortical grey
and ventricles (the package's parcellation groups; white matter as in ``EVALUATION.md``), the 5th, 25th,
50th and 75th percentiles in the brain, and the share of the brain below 0.25. Predictors: the training
mean (a constant), a least-squares line on each feature alone, ridge regression on all (standardised,
``alpha`` fixed at 1), and, as a reference a T1 cannot give, the mean of the subject's source (the
case-name prefix: CBICA, TCIA, 2013, ...), i.e. what knowing the acquisition site would give.

    python benchmarks/wm_level.py --model-levels benchmarks/results/tumour_contrast_ft64.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from quality import DATALIST, _cell  # noqa: E402
from tumour_contrast import levels, load  # noqa: E402

from monai_t1t2.io import case_source as source, load_datalist  # noqa: E402
from monai_t1t2.metrics import normalise_for_scoring  # noqa: E402

FEATURES = ("t1_wm", "t1_grey", "t1_csf", "t1_p5", "t1_p25", "t1_p50", "t1_p75", "dark_share")


def features(case: dict) -> dict[str, float]:
    """Whole-brain features of the normalised T1, and the real T2's normal white-matter level (``wm_ref``)."""
    t1 = normalise_for_scoring(case["t1"], case["mask"])
    _, white, groups = case["regions"]
    brain = t1[case["mask"]]
    p5, p25, p50, p75 = np.percentile(brain, [5, 25, 50, 75])
    return {"t1_wm": float(t1[white].mean(dtype=np.float64)),  # = levels(case["t1"], case)["wm"]
            "t1_grey": float(t1[(groups == 2) & case["mask"]].mean()),
            "t1_csf": float(t1[(groups == 4) & case["mask"]].mean()),
            "t1_p5": float(p5), "t1_p25": float(p25), "t1_p50": float(p50), "t1_p75": float(p75),
            "dark_share": float((brain < 0.25).mean()),
            "wm_ref": levels(case["t2"], case)["wm"]}


def ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0):
    """Ridge on standardised ``x``; returns a predictor of new rows."""
    mean, scale = x.mean(0), x.std(0) + 1e-9
    z = (x - mean) / scale
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return lambda new: (np.atleast_2d(new) - mean) / scale @ coef + y.mean()


def predictors() -> dict[str, Callable]:
    """Each predictor as ``fit(train_rows) -> predict(row) -> level``."""
    def constant(train):
        value = np.mean([r["wm_ref"] for r in train])
        return lambda row: value

    def line(feature):
        def fit(train):
            slope, intercept = np.polyfit([r[feature] for r in train], [r["wm_ref"] for r in train], 1)
            return lambda row: intercept + slope * row[feature]
        return fit

    def all_features(train):
        model = ridge(np.array([[r[f] for f in FEATURES] for r in train]), np.array([r["wm_ref"] for r in train]))
        return lambda row: float(model(np.array([row[f] for f in FEATURES]))[0])

    def by_source(train):
        overall = np.mean([r["wm_ref"] for r in train])
        means = {s: np.mean([r["wm_ref"] for r in train if r["source"] == s]) for s in {r["source"] for r in train}}
        return lambda row: means.get(row["source"], overall)

    return {"constant": constant, **{f"line {f}": line(f) for f in FEATURES}, "ridge (all)": all_features,
            "source mean": by_source}


def scores(truth: list[float], predicted: list[float], correlate: bool = True) -> dict[str, float]:
    """MAE, correlation (NaN without ``correlate`` or for a flat prediction) and spread of the predicted levels."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    r = float(np.corrcoef(truth, predicted)[0, 1]) if correlate and np.std(predicted) > 1e-9 else float("nan")
    return {"mae": float(np.abs(truth - predicted).mean()), "r": r, "sd_pred": float(predicted.std())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", default=str(DATALIST))
    parser.add_argument("--cache-dir", default=str(REPO / "cache"))
    parser.add_argument("--model-levels", action="append", default=[], metavar="JSON",
                        help="tumour_contrast.py output: its models' white-matter levels on the test subjects")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "wm_level.json"))
    args = parser.parse_args()

    rows = {}
    for split in ("training", "test"):
        rows[split] = []
        for subject in tqdm(load_datalist(args.datalist, split), desc=split):
            if subject.get("tumor_seg"):
                row = features(load(subject, Path(args.cache_dir)))
                rows[split].append({**row, "case": subject["case"], "source": source(subject["case"])})
    training, test = rows["training"], rows["test"]
    truth = [r["wm_ref"] for r in training]
    print(f"real T2 white-matter level: training mean {np.mean(truth):.3f} sd {np.std(truth):.3f} (n = {len(training)}); "
          f"test mean {np.mean([r['wm_ref'] for r in test]):.3f} sd {np.std([r['wm_ref'] for r in test]):.3f} (n = {len(test)})")

    table = {}
    for name, fit in predictors().items():
        loo = [fit(training[:i] + training[i + 1:])(row) for i, row in enumerate(training)]
        final = fit(training)
        # The constant's leave-one-out values move against the left-out case: its r (-1) says nothing.
        correlate = name != "constant"
        table[name] = {**{f"loo_{k}": v for k, v in scores(truth, loo, correlate).items()},
                       **{f"test_{k}": v for k, v in scores([r["wm_ref"] for r in test], [final(r) for r in test],
                                                            correlate).items()}}
    for path in args.model_levels:
        for model, factors in json.loads(Path(path).read_text())["factors"].items():
            table[f"model {model}"] = {"loo_mae": float("nan"), "loo_r": float("nan"), "loo_sd_pred": float("nan"),
                                       **{f"test_{k}": v for k, v in scores(
                                           [factors[r["case"]]["wm_ref"] for r in test],
                                           [factors[r["case"]]["wm_pred"] for r in test]).items()}}
    columns = ["loo_mae", "loo_r", "loo_sd_pred", "test_mae", "test_r", "test_sd_pred"]
    print("| predictor | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(_cell(row[c]) for c in columns) + " |")
    Path(args.output).write_text(json.dumps({"rows": rows, "table": table}, indent=1))


if __name__ == "__main__":
    main()
