"""Which scans are thick axial slabs resampled to 1 mm? A through-plane blur index per volume.

Many TCIA and BraTS 2013 scans of the cohort were acquired as 5-6 mm axial stacks and resampled to the
1 mm grid (``cohort/PROVENANCE.md``): they are sharp in-plane and blurred from slice to slice. The blur
index of a volume is ``mean |d/dz| / mean(|d/dx|, |d/dy|)``: finite differences of the protocol-
normalised image (RAS, z the superior-inferior axis) over the voxel pairs inside the brain (``> 0``).
About 1 for an isotropic 1 mm scan, lower the thicker the slabs.

``--calibrate CASE`` also thickens that subject's T1 and T2 with the training augmentation
(:meth:`monai_t1t2.transforms.RandThickSlicesd.thicken`) at several slab thicknesses, to pick the
augmentation's range by the index of the real thick scans.

``--slab-contrast CASE ...`` thickens those training subjects' real T2 and reports how the slabs move its
tumour contrast (``EVALUATION.md``: tumour over normal white matter, the cached parcellation's):
whether slab thickness alone can explain the low contrast of the thick-slice scans' T2s.

``--results`` with ``--compare BASE CANDIDATE`` reads ``quality.py`` JSONs of the test split and
splits two variants' paired differences (SSIM, tumour contrast error against the floor's) by whether
the subject's T1 is thick-slice (index below :data:`THICK_BELOW`):

    python benchmarks/slice_thickness.py --calibrate Brats18_CBICA_AME_1
    python benchmarks/slice_thickness.py --slab-contrast Brats18_CBICA_AME_1 ... --output benchmarks/results/slice_thickness_slab.json
    python benchmarks/slice_thickness.py --compare 3d_ft64hr5_tails 3d_ft64ts_tails --results \
        benchmarks/results/split_ft64hr5_{a,b}/quality.json benchmarks/results/split_ft64ts_{a,b}/quality.json \
        --output benchmarks/results/slice_thickness_compare.json

Every run writes the blur indices (and what else it measured) to ``--output``, by default
``results/slice_thickness.json``: give the later runs their own.
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
from quality import DATALIST  # noqa: E402

from monai_t1t2.io import atomic_write_text, case_source, load_datalist  # noqa: E402

#: Below this index a volume counts as thick-slice in the table (isotropic scans read 1.0-1.4).
THICK_BELOW = 0.8
CALIBRATION_THICKNESS = (2.0, 3.0, 4.0, 5.0, 6.0, 7.0)


def blur_index(image: np.ndarray, brain: np.ndarray) -> float:
    """``mean |dz| / mean(|dx|, |dy|)`` over voxel pairs inside ``brain`` (the last axis is z)."""
    inner = brain[1:, 1:, 1:] & brain[:-1, 1:, 1:] & brain[1:, :-1, 1:] & brain[1:, 1:, :-1]
    dx = np.abs(np.diff(image, axis=0))[:, 1:, 1:][inner].mean()
    dy = np.abs(np.diff(image, axis=1))[1:, :, 1:][inner].mean()
    dz = np.abs(np.diff(image, axis=2))[1:, 1:, :][inner].mean()
    return float(dz / (0.5 * (dx + dy)))


def load_ras(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The protocol-normalised volume in RAS and its brain (``> 0``)."""
    import nibabel as nib

    from monai_t1t2.metrics import normalise_for_scoring

    volume = np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj, dtype=np.float32)
    brain = volume > 0
    return normalise_for_scoring(volume, brain), brain


SLAB_CONTRAST_THICKNESS = (5.0, 7.0)


def slab_contrast(cases: list[str], datalist: str, cache_dir: Path) -> dict:
    """Tumour contrast of each training subject's real T2, as acquired and thickened by the augmentation."""
    import torch
    from quality import load_case

    from monai_t1t2.metrics import evaluate
    from monai_t1t2.transforms import RandThickSlicesd

    subjects = {s["case"]: s for s in load_datalist(datalist, "training")}
    unknown = [c for c in cases if c not in subjects]
    if unknown:
        raise SystemExit(f"--slab-contrast: not training subjects of {datalist}: {', '.join(unknown)}")
    out = {}
    for case in tqdm(cases, desc="slab contrast"):
        volumes = load_case(subjects[case], cache_dir)
        contrasts = {}
        for t in (1.0, *SLAB_CONTRAST_THICKNESS):
            t2 = volumes["t2"] if t == 1.0 else RandThickSlicesd.thicken(torch.from_numpy(volumes["t2"])[None], t, 2)[0].numpy()
            contrasts[f"{t:g}"] = evaluate(t2, volumes["t2"], mask=volumes["mask"], tumor_seg=volumes["tumor_seg"],
                                           labels=volumes["labels"])["c_pred"]
        out[case] = contrasts
    widths = [f"{t:g}" for t in SLAB_CONTRAST_THICKNESS]
    print("\n| subject | T2 tumour contrast as acquired | " + " | ".join(f"{w}-voxel slabs" for w in widths) + " |")
    print("|---|---|" + "---|" * len(widths))
    for case, c in out.items():
        print(f"| {case} | {c['1']:.3f} | " + " | ".join(f"{c[w]:.3f} ({c[w] - c['1']:+.3f})" for w in widths) + " |")
    for w in widths:
        change = np.array([c[w] - c["1"] for c in out.values()])
        print(f"\n{w}-voxel slabs: contrast change median {np.median(change):+.3f}, range {change.min():+.3f} to {change.max():+.3f}")
    return out


def compare(rows: list[dict], results: list[str], base: str, candidate: str) -> None:
    """Per test subject and by T1 thickness: SSIM and tumour contrast error of ``base`` and ``candidate``."""
    scores: dict = {}
    for path in results:
        for case, variants in json.loads(Path(path).read_text())["results"].items():
            scores.setdefault(case, {}).update(variants)
    thick = {r["case"] for r in rows if r["t1"] < THICK_BELOW}
    cases = [r["case"] for r in rows if r["split"] == "test" and {base, candidate} <= set(scores.get(r["case"], {}))]
    error = lambda case, variant: scores[case][variant].get("tumour_contrast_error")  # noqa: E731
    cell = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"\n| subject | thick T1 | SSIM {base} | SSIM {candidate} | contrast error floor | {base} | {candidate} |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        print(f"| {case} | {'yes' if case in thick else 'no'} | {scores[case][base]['ssim']:.4f} | "
              f"{scores[case][candidate]['ssim']:.4f} | {cell(error(case, 'inverted_t1'))} | "
              f"{cell(error(case, base))} | {cell(error(case, candidate))} |")
    for label, group in (("thick-slice T1", [c for c in cases if c in thick]),
                         ("isotropic T1", [c for c in cases if c not in thick])):
        if not group:
            continue
        diff = np.array([scores[c][candidate]["ssim"] - scores[c][base]["ssim"] for c in group])
        masked = [c for c in group if error(c, base) is not None and error(c, "inverted_t1") is not None]
        above = {v: sum(error(c, v) > error(c, "inverted_t1") for c in masked) for v in (base, candidate)}
        spread = f" ± {diff.std(ddof=1):.4f}" if len(diff) > 1 else ""
        print(f"\n{label}, {len(group)} subjects: SSIM {candidate} - {base} {diff.mean():+.4f}{spread}, higher on "
              f"{int((diff > 0).sum())}; contrast error above the floor's: {base} {above[base]}, {candidate} "
              f"{above[candidate]} of {len(masked)}")


def _marked(index: float) -> str:
    """A blur index for the table, in bold below :data:`THICK_BELOW`."""
    return f"**{index:.3f}**" if index < THICK_BELOW else f"{index:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datalist", default=str(DATALIST))
    parser.add_argument("--calibrate", metavar="CASE", help="a subject to thicken at several slab widths")
    parser.add_argument("--slab-contrast", nargs="+", default=[], metavar="CASE",
                        help="training subjects whose real T2 is thickened and its tumour contrast scored")
    parser.add_argument("--cache-dir", default=str(REPO / "cache"), help="the parcellation cache")
    parser.add_argument("--results", nargs="+", default=[], help="quality.py JSONs of the test split")
    parser.add_argument("--compare", nargs=2, metavar=("BASE", "CANDIDATE"), help="two variants of --results")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "slice_thickness.json"))
    args = parser.parse_args(argv)

    subjects = [(split, s) for split in ("training", "test") for s in load_datalist(args.datalist, split)]
    if args.calibrate and args.calibrate not in {s["case"] for _, s in subjects}:
        parser.error(f"--calibrate {args.calibrate}: not a subject of {args.datalist}")
    rows, to_calibrate = [], {}
    for split, subject in tqdm(subjects, desc="subjects"):
        row = {"case": subject["case"], "split": split, "source": case_source(subject)}
        for key in ("t1", "t2"):
            image, brain = load_ras(subject[key])
            row[key] = blur_index(image, brain)
            if subject["case"] == args.calibrate:
                to_calibrate[key] = image, brain  # kept, not read again below
        rows.append(row)
    print("| subject | split | source | T1 blur index | T2 blur index |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['split']} | {r['source']} | {_marked(r['t1'])} | {_marked(r['t2'])} |")
    for split in ("training", "test"):
        thick = [r["case"] for r in rows if r["split"] == split and r["t1"] < THICK_BELOW]
        print(f"\n{split}: {len(thick)} of {sum(r['split'] == split for r in rows)} T1s below {THICK_BELOW}: {', '.join(thick)}")

    calibration = {}
    if args.calibrate:
        import torch

        from monai_t1t2.transforms import RandThickSlicesd

        print(f"\n{args.calibrate} thickened by RandThickSlicesd (slab width in voxels -> blur index)\n")
        print("| image | as acquired | " + " | ".join(f"{t:g}" for t in CALIBRATION_THICKNESS) + " |")
        print("|---|---|" + "---|" * len(CALIBRATION_THICKNESS))
        for key, (image, brain) in to_calibrate.items():
            values = [blur_index(image, brain)] + [
                blur_index(RandThickSlicesd.thicken(torch.from_numpy(image)[None], t, axis=2)[0].numpy(), brain)
                for t in CALIBRATION_THICKNESS]
            calibration[key] = dict(zip(["acquired", *map(str, CALIBRATION_THICKNESS)], values))
            print(f"| {key.upper()} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    slab_contrasts = slab_contrast(args.slab_contrast, args.datalist, Path(args.cache_dir)) if args.slab_contrast else {}
    if args.compare:
        compare(rows, args.results, *args.compare)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({"subjects": rows, "slab_contrast": slab_contrasts, "calibration": {args.calibrate: calibration}
                                 if args.calibrate else {}}, indent=1), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
