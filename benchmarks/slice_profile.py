"""Is the 3D model's slice flicker made by the sliding window, or by what the model gets wrong?

Translates shared subjects with a model (default: the shipped bundle) at two window overlaps and
prints, per case, the protocol's SSIM, slice flicker and ``R_z`` (../shared/EVALUATION.md) and the
per-axial-slice mean signed error of the prediction and of the inverted-T1 floor (every 8th slice
with at least 1000 brain voxels, bottom to top). With the shipped model these subjects are its
training data: the numbers measure tiling artefacts and fit, not generalisation (that is
``quality.py``'s leave-one-subject-out job). A second table splits the floor's flicker into the
part that the axial change of tissue mix explains (each region group's mean error, from the
cached ``model30chan18cls`` parcellation) and what is left within tissues.

    python benchmarks/slice_profile.py                       # all four shared pairs, shipped model
    python benchmarks/slice_profile.py --model runs/x/last.ckpt --cases TCGA-DU-7294
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.inferers import sliding_window_inference

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from monai_t1t2.inference.translation import load_translator  # noqa: E402
from quality import predict_in_brain_box  # noqa: E402
from monai_t1t2.metrics import MIN_SLICE_VOXELS, evaluate, slice_flicker  # noqa: E402
from monai_t1t2.nets.meshnet import cached_parcellation, label_names  # noqa: E402
from monai_t1t2.regions import labels_to_groups  # noqa: E402
from monai_t1t2.transforms import PercentileNormalise  # noqa: E402


def slice_mean_error(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean signed error of the protocol-normalised prediction per axial slice (slices with enough brain)."""
    error = np.where(mask, PercentileNormalise()(prediction, mask) - PercentileNormalise()(reference, mask), 0)
    counts = mask.sum(axis=(0, 1))
    kept = counts >= MIN_SLICE_VOXELS
    return error.sum(axis=(0, 1))[kept] / counts[kept]


def flicker_by_tissue_mix(error: np.ndarray, mask: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """(flicker of each region group's mean error alone, flicker of the error minus it)."""
    explained = np.zeros_like(error)
    for group in np.unique(groups[mask]):
        selection = mask & (groups == group)
        explained[selection] = error[selection].mean()
    return slice_flicker(explained, mask), slice_flicker(error - explained, mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="bundle folder, models/model.pt or .ckpt (default: the shipped bundle)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "paired"))
    parser.add_argument("--cases", nargs="+", help="default: every case in --data-dir")
    parser.add_argument("--overlaps", nargs="+", type=float, default=[0.5, 0.75])
    parser.add_argument("--cache-dir", default=str(REPO / "cache"), help="parcellation cache (computed when missing)")
    args = parser.parse_args()
    translator = load_translator(args.model, device="cpu")
    data_dir = Path(args.data_dir)
    cases = args.cases or sorted(p.name for p in data_dir.iterdir() if (p / "t1.nii.gz").is_file())
    print("| case | prediction | SSIM | slice flicker | R_z | mean signed error per 8th axial slice |")
    print("|---|---|---|---|---|---|")
    mix_rows = []
    for case in cases:
        t1, t2 = (nib.as_closest_canonical(nib.load(str(data_dir / case / f"{m}.nii.gz"))).get_fdata(dtype=np.float32)
                  for m in ("t1", "t2"))
        mask = (t1 > 0) & (t2 > 0)
        rows = {f"model, overlap {overlap}": predict_in_brain_box(t1, lambda window, overlap=overlap: sliding_window_inference(
                    window, translator.roi_size, 4, translator.network, overlap, mode="gaussian"))
                for overlap in args.overlaps}
        rows["inverted T1 (floor)"] = np.where(mask, 1 - PercentileNormalise()(t1, mask), 0)
        for name, prediction in rows.items():
            scores = evaluate(prediction, t2, mask=mask)
            profile = " ".join(f"{value:+.3f}" for value in slice_mean_error(prediction, t2, mask)[::8])
            print(f"| {case} | {name} | {scores['ssim']:.3f} | {scores['slice_flicker']:.4f} | {scores['r_z']:.3f} | {profile} |",
                  flush=True)
        labels_path = cached_parcellation(data_dir / case / "t1.nii.gz", args.cache_dir, model="model30chan18cls")
        labels = np.asarray(nib.as_closest_canonical(nib.load(str(labels_path))).dataobj).astype(np.int64)
        floor_error = np.where(mask, rows["inverted T1 (floor)"] - PercentileNormalise()(t2, mask), 0)
        mix, within = flicker_by_tissue_mix(floor_error, mask, labels_to_groups(labels, label_names("model30chan18cls")))
        mix_rows.append(f"| {case} | {slice_flicker(floor_error, mask):.4f} | {mix:.4f} | {within:.4f} |")
    print("\n| case | floor flicker | from the tissue mix alone | left within tissues |\n|---|---|---|---|")
    print("\n".join(mix_rows))


if __name__ == "__main__":
    main()
