"""Plausibility of the default parcellation on every shared subject; prints a table.

Usage (from the repo root; about 5 minutes on 2 CPU cores)::

    OMP_NUM_THREADS=2 python benchmarks/parcellation_check.py [--png-dir /tmp/parcellation_png]

Per subject: labels present and white matter / cortex / ventricle volumes (ml) from the default
``model30chan18cls``; left/right volume ratios of its paired structures (its labels are not
lateralised, so each structure is split at the mid-sagittal plane, the median x of the midline
labels 3rd ventricle and brain stem); left/right ratios of the lateralised ``model21_104class``
labels for comparison; and the Dice of the ``mindgrab`` brain mask against ``t1 > 0`` (the inputs
are skull-stripped). A structure touching the tumour dilated by 10 mm is skipped on both sides.
Then the same on the healthy IXI subject (skull-stripped with HD-BET as shared, on its own grid: a
control without a tumour) and the mindgrab mask of the raw clinical T1 (skull, 5.5 mm slices).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from monai_t1t2.io import read_volume, spacing_of
from monai_t1t2.nets.meshnet import label_names, parcellate, predict_brain_mask
from monai_t1t2.parcellation import save_label_overlay_png

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VENTRICLES = ("Lateral-Ventricle", "Inferior-Lateral-Ventricle", "3rd-Ventricle", "4th-Ventricle")
MIDLINE = ("3rd-Ventricle", "Brain-Stem")  # labels on the mid-sagittal plane
UNPAIRED = MIDLINE + ("Unknown", "4th-Ventricle")
WITHIN = np.log(1.15)  # the plausibility bound: left/right within 15 %


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


def world_x(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS x (mm) of every voxel, shaped like ``labels``."""
    ijk = np.indices(labels.shape, dtype=np.float32)
    return affine[0, 0] * ijk[0] + affine[0, 1] * ijk[1] + affine[0, 2] * ijk[2] + affine[0, 3]


def hemisphere_ratios(labels: np.ndarray, names: list[str], x: np.ndarray, near_tumour: np.ndarray) -> dict[str, float]:
    """Left/right volume ratio of each non-midline label, split at the midline labels' median x."""
    midline = np.isin(labels, [names.index(name) for name in MIDLINE])
    middle = float(np.median(x[midline]))
    ratios = {}
    for index, name in enumerate(names):
        if name in UNPAIRED:
            continue
        structure = labels == index
        left, right = structure & (x < middle), structure & (x > middle)
        if left.sum() < 100 or right.sum() < 100 or structure[near_tumour].any():
            continue
        ratios[name] = left.sum() / right.sum()
    return ratios


def ratio_summary(ratios: dict[str, float], prefix: str) -> dict:
    deviations = np.abs(np.log(np.asarray(list(ratios.values()) or [np.nan])))
    worst = max(ratios, key=lambda name: abs(np.log(ratios[name]))) if ratios else "-"
    return {f"{prefix}_pairs": len(ratios), f"{prefix}_within": int((deviations < WITHIN).sum()),
            f"{prefix}_median": float(np.median(list(ratios.values()))) if ratios else float("nan"),
            f"{prefix}_worst": f"{worst} {ratios[worst]:.2f}" if ratios else "-", f"{prefix}_all": ratios}


def check_subject(case: Path, png_dir: Path | None, t1_name: str = "t1.nii.gz") -> dict:
    t1 = read_volume(case / t1_name)
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
    default = hemisphere_ratios(array, names, world_x(array, np.asarray(labels.affine)), near_tumour)
    row.update(ratio_summary(default, "default"))
    row["wm_lr"] = default.get("Cerebral-White-Matter", float("nan"))
    fine = parcellate(t1, model="model21_104class")[0].numpy()
    row.update(ratio_summary(left_right_ratios(fine, label_names("model21_104class"), near_tumour), "fine"))
    if t1_name == "t1.nii.gz" and case.parent.name == "paired":
        mask = predict_brain_mask(t1)[0].numpy()
        reference = t1[0].numpy() > 0
        row["mask_dice"] = 2 * float((mask & reference).sum()) / float(mask.sum() + reference.sum())
    else:
        row["mask_dice"] = float("nan")
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
    cases = [case for case in sorted((SHARED / "paired").iterdir()) if case.is_dir()]
    rows = [check_subject(case, args.png_dir) for case in cases]
    rows.append(check_subject(SHARED / "raw" / "IXI002-Guys-0828", args.png_dir))
    rows[-1]["case"] = "IXI002 (healthy)"
    print("| case | s | labels | WM ml | cortex ml | ventricles ml | brain ml | default L/R within 15 % | "
          "default worst | WM L/R | 104-class L/R within 15 % | 104-class median L/R | mindgrab Dice |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['seconds']:.1f} | {r['labels']} | {r['wm_ml']:.0f} | {r['cortex_ml']:.0f} | "
              f"{r['ventricles_ml']:.1f} | {r['brain_ml']:.0f} | {r['default_within']}/{r['default_pairs']} | "
              f"{r['default_worst']} | {r['wm_lr']:.3f} | {r['fine_within']}/{r['fine_pairs']} | "
              f"{r['fine_median']:.3f} | {r['mask_dice']:.3f} |")
    print()
    for r in rows:
        print(r["case"], "default L/R:", ", ".join(f"{k} {v:.2f}" for k, v in r["default_all"].items()))
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
