"""The trust map: calibrate a model's interval and predicted SSIM, and measure them on the test split.

    python benchmarks/uncertainty.py --calibrate    # fit and write <bundle>/models/trust_calibration.json
    python benchmarks/uncertainty.py                # score it on the 12 test subjects: one table

Calibration subjects (never a test subject, none the shipped model trained on): the 2 validation
subjects held out of ``training`` when the shipped model was made, the healthy HCP MNI152 template pair,
IXI002 and the three raw MSLUB sessions, the last four put on their T1's grid by ``monai-t1t2
prepare-pairs`` (rigid registration; the MS sessions skull-stripped too), cached under ``--cache-dir``.
For each subject the model's synthetic T2 and its trust features
(:func:`monai_t1t2.inference.translation.translate_with_features`) are cached as ``.npz`` too.

The test table (the protocol's normalised units, brain = ``t1 > 0 & t2 > 0``, :func:`monai_t1t2.metrics.evaluate`
with ``lower`` / ``upper``): brain coverage of the interval, coverage in the tumour, the mean width in and
out of the tumour, the AUROC of the width for voxels with ``|error| > 0.15``, the constant-width split
conformal interval of the same level fitted on the same calibration subjects (its coverage and width:
the baseline), and the predicted against the real brain SSIM. ``--cost N`` times ``translate`` with and
without the interval on the first N test subjects.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_t1t2.io import file_sha256, read_volume

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
BUNDLE = REPO / "bundles" / "t1t2_translation"
VALIDATION = ("Brats18_CBICA_AQO_1", "Brats18_TCIA10_637_1")  # held out of training for every shipped model
RAW_PAIRS = {"IXI002-Guys-0828": False, "MSLUB-long-patient01-study1": True, "MSLUB-long-patient01-study2": True,
             "MSLUB-long-patient04-study1": True}  # name: skull-strip


def calibration_subjects(cache: Path) -> dict[str, dict[str, Path]]:
    subjects = {case: {"t1": SHARED / "cohort" / case / "t1.nii.gz", "t2": SHARED / "cohort" / case / "t2.nii.gz"}
                for case in VALIDATION}
    template = SHARED / "templates" / "HCP-MNI152-1mm-brain"
    subjects["HCP-MNI152-1mm-brain"] = {"t1": template / "t1.nii.gz", "t2": template / "t2.nii.gz"}
    out = prepared_pairs(cache)
    subjects.update({case: {"t1": out / case / "t1.nii.gz", "t2": out / case / "t2.nii.gz"} for case in RAW_PAIRS})
    return subjects


def prepared_pairs(cache: Path) -> Path:
    """``cache/pairs/<case>/t1.nii.gz, t2.nii.gz``: the raw pairs on their T1's grid (``monai-t1t2 prepare-pairs``)."""
    out = cache / "pairs"
    for strip in (False, True):
        cases = [case for case, s in RAW_PAIRS.items() if s == strip and not (out / case / "t2.nii.gz").is_file()]
        if not cases:
            continue
        raw = cache / ("raw_strip" if strip else "raw_plain")
        raw.mkdir(parents=True, exist_ok=True)
        for case in cases:
            if not (raw / case).exists():
                (raw / case).symlink_to(SHARED / "raw" / case)
        command = [sys.executable, "-m", "monai_t1t2", "prepare-pairs", str(raw), str(out)]
        subprocess.run(command + (["--skull-strip"] if strip else []), check=True)
    return out


def test_subjects() -> dict[str, dict[str, Path]]:
    datalist = json.loads((SHARED / "datalist.json").read_text())
    return {row["case"]: {key: SHARED / row[key] for key in ("t1", "t2", "tumor_seg")} for row in datalist["test"]}


def translated(case: str, files: dict[str, Path], translator, cache: Path, model_hash: str) -> dict[str, np.ndarray]:
    """The synthetic T2, the trust features and the brain of one subject (cached per model)."""
    from monai_t1t2.inference.translation import translate_with_features
    from monai_t1t2.io import read_volume, spacing_of
    from monai_t1t2.uncertainty import MIRROR_OVERLAP, input_features

    path = cache / "trust" / f"{model_hash[:12]}-mirror{MIRROR_OVERLAP}" / f"{case}.npz"
    if not path.is_file():
        started = time.perf_counter()
        synthetic, features, inside = translate_with_features(files["t1"], translator)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, synthetic=synthetic[0].numpy(), features=features[:4].astype(np.float16), inside=inside)
        print(f"  {case}: translated with features in {time.perf_counter() - started:.0f} s", flush=True)
    with np.load(path) as data:
        parts = {key: data[key] for key in data.files}
    # The cache holds the network-grid features; the input-grid ones are recomputed as translate() does.
    t1 = read_volume(files["t1"])
    own = input_features(t1.as_tensor()[0].numpy(), parts["inside"], spacing_of(t1.affine))
    parts["features"] = np.concatenate([parts["features"].astype(np.float32), own])
    return parts


def reference(files: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """The real T2 and the protocol's brain ``t1 > 0 & t2 > 0``, on the T1's grid (voxel order as stored)."""
    t1 = np.asarray(nib.load(str(files["t1"])).dataobj, dtype=np.float32)
    t2 = np.asarray(nib.load(str(files["t2"])).dataobj, dtype=np.float32)
    return t2, (t1 > 0) & (t2 > 0)


def calibrate(args) -> None:
    from monai_t1t2.inference.translation import load_translator
    from monai_t1t2.metrics import masked_ssim, normalise_for_scoring
    from monai_t1t2.uncertainty import CALIBRATION_FILE, fit_calibration

    model_file = args.model / "models" / "model.pt"
    model_hash = file_sha256(model_file)
    translator = load_translator(args.model, "cpu")
    cases = []
    for case, files in calibration_subjects(args.cache_dir).items():
        parts = translated(case, files, translator, args.cache_dir, model_hash)
        t2, brain = reference(files)
        pred_n, ref_n = normalise_for_scoring(parts["synthetic"], brain), normalise_for_scoring(t2, brain)
        cases.append({"subject": case, "features": parts["features"][:, brain].astype(np.float32),
                      "error": (pred_n - ref_n)[brain], "ssim": masked_ssim(pred_n, ref_n, brain)})
        print(f"  {case}: brain SSIM {cases[-1]['ssim']:.4f}", flush=True)
    calibration = fit_calibration(cases)
    calibration.model_sha256 = model_hash
    # The constant-width baseline of the same calibration, kept for the reports (not used by predict).
    constant = np.concatenate([np.abs(c["error"][np.random.default_rng(0).permutation(c["error"].size)[:200_000]])
                               for c in cases])
    target = args.model / "models" / CALIBRATION_FILE
    calibration.save(target)
    baseline = {"levels": calibration.levels, "half_widths": [float(np.quantile(constant, level, method="higher"))
                                                               for level in calibration.levels]}
    (args.cache_dir / "trust" / "constant_baseline.json").write_text(json.dumps(baseline))
    print(f"wrote {target}: weights {np.round(calibration.weights, 4).tolist()} (intercept, {', '.join(calibration.terms)}), "
          f"q(0.9) {calibration.quantile(0.9):.3f}, SSIM = {calibration.ssim_intercept:.3f} + "
          f"{calibration.ssim_slope:.3f} x mean scale")


def score(args) -> None:
    from monai_t1t2.inference.translation import load_translator
    from monai_t1t2.metrics import evaluate, normalise_for_scoring
    from monai_t1t2.uncertainty import CALIBRATION_FILE, TrustCalibration

    model_hash = file_sha256(args.model / "models" / "model.pt")
    calibration = TrustCalibration.load(args.model / "models" / CALIBRATION_FILE)
    baseline = json.loads((args.cache_dir / "trust" / "constant_baseline.json").read_text())
    constant_half = float(np.interp(args.level, baseline["levels"], baseline["half_widths"]))
    translator = load_translator(args.model, "cpu")
    rows = {}
    for case, files in test_subjects().items():
        parts = translated(case, files, translator, args.cache_dir, model_hash)
        t2, brain = reference(files)
        tumour = np.asarray(nib.load(str(files["tumor_seg"])).dataobj) > 0
        synthetic, inside = parts["synthetic"], parts["inside"]
        scale = calibration.scale(parts["features"].astype(np.float32))
        lower, upper = calibration.interval(synthetic, scale, inside, args.level)
        scores = evaluate(synthetic, t2, mask=brain, tumor_seg=tumour, lower=lower, upper=upper)
        flat = evaluate(synthetic, t2, mask=brain, tumor_seg=tumour,
                        lower=np.clip(synthetic - constant_half, 0, 1), upper=np.clip(synthetic + constant_half, 0, 1))
        rows[case] = {"group": "cross-source" if (SHARED / "paired" / case).is_dir() else "cohort",
                      "ssim": scores["ssim"], "predicted_ssim": calibration.predicted_ssim(scale, inside),
                      **{key: scores[key] for key in ("coverage", "coverage_tumour", "coverage_non_tumour", "width",
                                                      "width_tumour", "width_non_tumour", "width_auroc")},
                      "constant_coverage": flat["coverage"], "constant_width": flat["width"],
                      "constant_coverage_tumour": flat["coverage_tumour"]}
        print(f"  {case}: coverage {scores['coverage']:.3f}, tumour {scores['coverage_tumour']:.3f}", flush=True)
        if case == args.figure_case:
            figure(args.out / f"{case}.png", files, synthetic, t2, lower, upper, brain, tumour)
    mean = {key: float(np.mean([r[key] for r in rows.values()])) for key in next(iter(rows.values())) if key != "group"}
    rows["mean of 12"] = {"group": "", **mean}
    rows_cost = cost(args, translator) if args.cost else None
    rows_ood = out_of_distribution(args, translator) if args.ood else None
    table = format_table(rows, args.level, calibration, rows_cost, rows_ood)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "uncertainty.json").write_text(json.dumps({"level": args.level, "calibration_subjects": calibration.subjects,
                                                           "rows": rows, "cost": rows_cost,
                                                           "out_of_distribution": rows_ood}, indent=1))
    (args.out / "uncertainty.md").write_text(table)
    print(table)


OOD_INPUTS = {  # inputs the model was not made for, built from ../shared (none is a calibration subject)
    "T2 given as the T1 (Brats18_CBICA_ARZ_1)": SHARED / "cohort" / "Brats18_CBICA_ARZ_1" / "t2.nii.gz",
    "T2 given as the T1 (TCGA-DU-7294)": SHARED / "paired" / "TCGA-DU-7294" / "t2.nii.gz",
    "raw 5.5 mm clinical stack with skull (TCGA-FG-6692)": SHARED / "raw" / "TCGA-FG-6692" / "t1.nii.gz",
}


def out_of_distribution(args, translator) -> list[dict]:
    """The predicted SSIM and the QC verdict of inputs the model was not made for (translated with force)."""
    from monai_t1t2.inference.translation import translate
    from monai_t1t2.quality import image_problems

    rows = []
    for name, path in OOD_INPUTS.items():
        synthetic, _, _ = translate(path, translator, uncertainty=args.level)
        problems = image_problems(read_volume(path))
        rows.append({"input": name, "predicted_ssim": float(synthetic.meta["predicted_ssim"]), "qc_problems": problems})
        print(f"  {name}: predicted SSIM {rows[-1]['predicted_ssim']:.3f}; QC: {problems or 'passed'}", flush=True)
    return rows


def cost(args, translator) -> list[dict]:
    from monai_t1t2.hardware import describe
    from monai_t1t2.inference.translation import translate

    rows = []
    for case, files in list(test_subjects().items())[: args.cost]:
        times = {}
        for name, level in (("plain", None), ("uncertainty", args.level)):
            started = time.perf_counter()
            translate(files["t1"], translator, uncertainty=level)
            times[name] = time.perf_counter() - started
        rows.append({"case": case, **times, "ratio": times["uncertainty"] / times["plain"], "hardware": describe("cpu")})
        print(f"  {case}: {times['plain']:.1f} s plain, {times['uncertainty']:.1f} s with the interval", flush=True)
    return rows


def format_table(rows: dict, level: float, calibration, cost_rows, ood_rows=None) -> str:
    lines = [f"Interval level {level}; calibrated on {', '.join(calibration.subjects)}.", "",
             "| case | group | coverage | tumour cov. | width | width tumour / normal | AUROC | constant: cov. / width / tumour cov. | SSIM | predicted SSIM |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for case, r in rows.items():
        lines.append(f"| {case} | {r['group']} | {r['coverage']:.3f} | {r['coverage_tumour']:.3f} | {r['width']:.3f} | "
                     f"{r['width_tumour']:.3f} / {r['width_non_tumour']:.3f} | {r['width_auroc']:.3f} | "
                     f"{r['constant_coverage']:.3f} / {r['constant_width']:.3f} / {r['constant_coverage_tumour']:.3f} | "
                     f"{r['ssim']:.3f} | {r['predicted_ssim']:.3f} |")
    errors = [abs(r["ssim"] - r["predicted_ssim"]) for case, r in rows.items() if case != "mean of 12"]
    lines += ["", f"Predicted SSIM: mean absolute error {np.mean(errors):.3f} over the 12 (largest {max(errors):.3f})."]
    if cost_rows:
        lines += ["", "| case | translate (s) | with the interval (s) | ratio | hardware |", "|---|---|---|---|---|"]
        lines += [f"| {r['case']} | {r['plain']:.1f} | {r['uncertainty']:.1f} | {r['ratio']:.2f} | {r['hardware']} |"
                  for r in cost_rows]
    if ood_rows:
        lines += ["", "| input the model was not made for | predicted SSIM | QC |", "|---|---|---|"]
        lines += [f"| {r['input']} | {r['predicted_ssim']:.3f} | {'; '.join(r['qc_problems']) or 'passed'} |" for r in ood_rows]
    return "\n".join(lines) + "\n"


def figure(path: Path, files, synthetic, t2, lower, upper, brain, tumour) -> None:
    """Axial slice through the tumour's centre: T1, synthetic, real T2, interval width, |error|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from monai_t1t2.metrics import normalise_for_scoring

    t1 = np.asarray(nib.load(str(files["t1"])).dataobj, dtype=np.float32)
    z = int(np.round(np.argwhere(tumour).mean(0)[2]))
    ref_n, pred_n = normalise_for_scoring(t2, brain), normalise_for_scoring(synthetic, brain)
    panels = [("T1", normalise_for_scoring(t1, brain), "gray", (0, 1)), ("synthetic T2", pred_n, "gray", (0, 1)),
              ("real T2", ref_n, "gray", (0, 1)), ("interval width (90 %)", (upper - lower) * brain, "magma", (0, 0.6)),
              ("|error|", np.abs(pred_n - ref_n) * brain, "magma", (0, 0.6))]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for axis, (title, image, cmap, limits) in zip(axes, panels):
        shown = axis.imshow(np.rot90(image[:, :, z]), cmap=cmap, vmin=limits[0], vmax=limits[1])
        axis.contour(np.rot90(tumour[:, :, z]), levels=[0.5], colors="cyan", linewidths=0.6)
        axis.set_title(title, fontsize=9)
        axis.axis("off")
        if cmap == "magma":
            fig.colorbar(shown, ax=axis, fraction=0.046)
    fig.suptitle(f"{path.stem}: tumour outlined in cyan", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLE, help="a translation bundle folder")
    parser.add_argument("--calibrate", action="store_true", help="fit and write the bundle's trust calibration")
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--cost", type=int, default=0, help="time translate with and without the interval on N test subjects")
    parser.add_argument("--ood", action="store_true", help="also translate inputs the model was not made for")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "cache")
    parser.add_argument("--figure-case", default="Brats18_CBICA_ARZ_1")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "uncertainty")
    args = parser.parse_args(argv)
    calibrate(args) if args.calibrate else score(args)


if __name__ == "__main__":
    main()
