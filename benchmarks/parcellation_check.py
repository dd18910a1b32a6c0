"""Plausibility of the default parcellation on every shared subject; prints a table.

Usage (from the repo root; about 5 minutes on 2 CPU cores)::

    OMP_NUM_THREADS=2 python benchmarks/parcellation_check.py [--png-dir /tmp/parcellation_png]

Per subject: labels present and white matter / cortex / ventricle volumes (ml) from
``model30chan18cls`` (not lateralised), left/right volume ratios of paired structures from
``model21_104class`` (lateralised; pairs touching the tumour dilated by 10 mm are skipped), and the
Dice of the ``mindgrab`` brain mask against ``t1 > 0`` (the inputs are skull-stripped).
Then the mindgrab mask of the raw clinical T1 (skull, 5.5 mm slices).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from monai_t1t2.io import read_volume, spacing_of
from monai_t1t2.parcellation import label_names, parcellate, predict_brain_mask, save_label_overlay_png

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VENTRICLES = ("Lateral-Ventricle", "Inferior-Lateral-Ventricle", "3rd-Ventricle", "4th-Ventricle")


def volumes_ml(labels: np.ndarray, names: list[str], voxel_ml: float) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=len(names))
    return {name: float(counts[index]) * voxel_ml for index, name in enumerate(names)}


def left_right_ratios(labels: np.ndarray, names: list[str], near_tumour: np.ndarray) -> dict[str, float]:
    """Left/right volume ratio of each lateralised structure that does not touch ``near_tumour``."""
    ratios = {}
    for index, name in enumerate(names):
        if name.startswith(("Left-", "ctx-lh-")):
            partner = name.replace("Left-", "Right-").replace("ctx-lh-", "ctx-rh-")
            left, right = labels == index, labels == names.index(partner)
            if left.sum() < 100 or right.sum() < 100 or (left | right)[near_tumour].any():
                continue
            ratios[name.replace("Left-", "").replace("ctx-lh-", "ctx-")] = left.sum() / right.sum()
    return ratios


def check_subject(case: Path, png_dir: Path | None) -> dict:
    t1 = read_volume(case / "t1.nii.gz")
    voxel_ml = float(np.prod(spacing_of(t1.affine))) / 1000
    start = time.perf_counter()
    labels = parcellate(t1)
    seconds = time.perf_counter() - start
    names = label_names()
    array = labels[0].numpy()
    ml = volumes_ml(array, names, voxel_ml)
    row = {"case": case.name, "seconds": seconds, "labels": int((np.bincount(array.ravel()) > 0).sum()),
           "wm_ml": ml["Cerebral-White-Matter"], "cortex_ml": ml["Cerebral-Cortex"],
           "ventricles_ml": sum(ml[name] for name in VENTRICLES), "brain_ml": float((array > 0).sum()) * voxel_ml}
    tumour_path = case / "tumor_seg.nii.gz"
    tumour = read_volume(tumour_path)[0].numpy() > 0 if tumour_path.exists() else np.zeros(array.shape, bool)
    near_tumour = ndimage.binary_dilation(tumour, iterations=10) if tumour.any() else tumour
    fine = parcellate(t1, model="model21_104class")[0].numpy()
    ratios = left_right_ratios(fine, label_names("model21_104class"), near_tumour)
    deviations = np.abs(np.log(list(ratios.values())))
    row.update(pairs=len(ratios), pairs_within_15=int((deviations < np.log(1.15)).sum()),
               median_lr=float(np.median(list(ratios.values()))),
               wm_lr=ratios.get("Cerebral-White-Matter", float("nan")))
    mask = predict_brain_mask(t1)[0].numpy()
    reference = t1[0].numpy() > 0
    row["mask_dice"] = 2 * float((mask & reference).sum()) / float(mask.sum() + reference.sum())
    if png_dir is not None:
        save_label_overlay_png(t1, labels, png_dir / f"{case.name}_model30chan18cls.png", title=case.name)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png-dir", type=Path, default=Path("/tmp/parcellation_png"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.png_dir.mkdir(parents=True, exist_ok=True)
    header = (f"{'case':<22}{'s':>6}{'labels':>7}{'WM ml':>8}{'ctx ml':>8}{'vent ml':>8}{'brain ml':>9}"
              f"{'L/R pairs':>10}{'<15%':>6}{'med L/R':>8}{'WM L/R':>7}{'mask Dice':>10}")
    rows = [check_subject(case, args.png_dir) for case in sorted((SHARED / "paired").iterdir()) if case.is_dir()]
    print(header)
    for r in rows:
        print(f"{r['case']:<22}{r['seconds']:>6.1f}{r['labels']:>7}{r['wm_ml']:>8.0f}{r['cortex_ml']:>8.0f}"
              f"{r['ventricles_ml']:>8.1f}{r['brain_ml']:>9.0f}{r['pairs']:>10}{r['pairs_within_15']:>6}"
              f"{r['median_lr']:>8.3f}{r['wm_lr']:>7.3f}{r['mask_dice']:>10.3f}")
    raw = read_volume(SHARED / "raw" / "TCGA-FG-6692" / "t1.nii.gz")
    start = time.perf_counter()
    mask = predict_brain_mask(raw)
    seconds = time.perf_counter() - start
    mask_ml = float(mask.sum()) * float(np.prod(spacing_of(raw.affine))) / 1000
    print(f"raw TCGA-FG-6692 (skull, 5.5 mm): mindgrab brain mask {mask_ml:.0f} ml in {seconds:.1f} s "
          f"({float(mask.float().mean()):.1%} of the field of view)")
    save_label_overlay_png(raw, mask.long(), args.png_dir / "raw_TCGA-FG-6692_mindgrab.png", title="raw mindgrab")
    print(f"PNGs in {args.png_dir}")


if __name__ == "__main__":
    main()
