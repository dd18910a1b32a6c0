"""Healthy brains: what a model trained on glioma subjects alone writes for the two healthy pairs of ``../shared``.

Every subject of the split has a glioma. ``../shared`` holds two healthy T1/T2 pairs that no model here
trained on:

- ``templates/HCP-MNI152-1mm-brain``: the HCP pipelines' MNI152 T1w/T2w brain templates (one grid,
  skull-stripped; an average of many brains, smoother than any subject);
- ``raw/IXI002-Guys-0828``: a healthy adult as IXI ships it (skull-stripped, T1 sagittal and T2 axial,
  each on its own grid), put on the T1's grid by the package's own ``prepare_pair`` (world coordinates,
  then rigid registration; cached under ``--cache-dir``).

Each is scored with the protocol of ``../shared/EVALUATION.md`` (``quality.py``'s scoring: inside
``t1 > 0 & t2 > 0``, region MAE by the default parcellation) for the floor (inverted T1), the lookup
table (fitted on the ``training`` subjects) and each model as its pipeline writes it
(:func:`monai_t1t2.inference.translation.translate`, resampling included), with a three-plane PNG per
pair. No tumour, so no tumour metrics. ``checkerboard``: the largest, over the three axes, relative
difference between the mean absolute step from even to odd voxels and from odd to even ones inside the
brain (:func:`checkerboard`): 0 for an image without a 2-voxel pattern, the mark a stride-2 up-sampling
can leave where the input is smooth (the template).

    python benchmarks/healthy.py                                    # the shipped bundle
    python benchmarks/healthy.py --model 0.8.0=runs/soup/shipped_080.ckpt --model 0.9.0=bundles/t1t2_translation
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import quality  # noqa: E402

from monai_t1t2.errors import T1T2Error  # noqa: E402
from monai_t1t2.io import load_datalist  # noqa: E402
from monai_t1t2.metrics import evaluate  # noqa: E402
from monai_t1t2.nets.meshnet import label_names  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
METRICS = ("ssim", "psnr", "mae", "mae_white_matter", "mae_cortical_grey", "mae_deep_grey", "mae_ventricles_csf",
           "r_z", "checkerboard")


def checkerboard(volume: np.ndarray, brain: np.ndarray) -> float:
    """The largest of :func:`checkerboard_by_axis`."""
    return max(checkerboard_by_axis(volume, brain))


def checkerboard_by_axis(volume: np.ndarray, brain: np.ndarray) -> list[float]:
    """Per axis, ``|a - b| / mean(a, b)``, ``a`` and ``b`` the mean absolute difference between
    neighbours along the axis inside ``brain``, taken at even and at odd positions (0: no 2-voxel pattern)."""
    out = []
    for axis in range(3):
        steps = np.abs(np.diff(volume, axis=axis))
        inside = brain & np.roll(brain, -1, axis=axis)
        inside = np.delete(inside, -1, axis=axis)
        position = np.arange(steps.shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)]) % 2
        even, odd = steps[inside & (position == 0)].mean(), steps[inside & (position == 1)].mean()
        out.append(float(abs(even - odd) / ((even + odd) / 2)))
    return out


def healthy_pairs(cache_dir: Path) -> list[dict]:
    """The two healthy pairs as quality.py subjects (``case``, ``t1``, ``t2``), the IXI pair prepared
    onto its T1's grid (once; ``prepare_pair`` skips a case prepared from the same files)."""
    from monai_t1t2.registration import prepare_pair

    template = SHARED / "templates" / "HCP-MNI152-1mm-brain"
    raw = SHARED / "raw" / "IXI002-Guys-0828"
    for path in (template / "t1.nii.gz", template / "t2.nii.gz", raw / "t1.nii.gz", raw / "t2.nii.gz"):
        if not path.is_file():
            raise T1T2Error(f"{path}: missing (the healthy pairs of ../shared)")
    prepared = cache_dir / "healthy" / raw.name
    prepare_pair({"case": raw.name, "t1": str(raw / "t1.nii.gz"), "t2": str(raw / "t2.nii.gz")}, prepared)
    return [{"case": template.name, "t1": str(template / "t1.nii.gz"), "t2": str(template / "t2.nii.gz")},
            {"case": raw.name, "t1": str(prepared / "t1.nii.gz"), "t2": str(prepared / "t2.nii.gz")}]


def pipeline_prediction(t1_path: str, model) -> np.ndarray:
    """What ``monai-t1t2 predict`` writes for ``t1_path`` (``model``: a path or a loaded
    :class:`~monai_t1t2.inference.translation.Translator`), as a RAS array on the T1's grid (quality.load_case's)."""
    from monai_t1t2.inference.translation import translate

    synthetic = translate(t1_path, model=model, device="cpu")
    image = nib.Nifti1Image(synthetic.numpy()[0], np.asarray(synthetic.affine, dtype=np.float64))
    return nib.as_closest_canonical(image).get_fdata(dtype=np.float32)


def markdown(results: dict, names: list[str]) -> str:
    lines = ["| case | variant | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for case, variants in results.items():
        for name in names:
            lines.append(f"| {case} | {name} | " + " | ".join(f"{variants[name][m]:.4g}" for m in METRICS) + " |")
        lines.append(f"| {case} | real T2 | " + " | ".join(
            f"{variants['real_t2'][m]:.4g}" if m in variants["real_t2"] else "" for m in METRICS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="a bundle folder, its models/model.pt or a Lightning .ckpt; repeatable "
                             "(default: shipped=bundles/t1t2_translation)")
    parser.add_argument("--datalist", default=str(quality.DATALIST), help="its `training` list fits the lookup table")
    parser.add_argument("--cache-dir", default=str(REPO / "cache"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "healthy"))
    args = parser.parse_args()
    models = dict(item.split("=", 1) for item in args.model if "=" in item)
    if len(models) != len(args.model):
        parser.error("--model takes NAME=PATH")
    models = models or {"shipped": str(REPO / "bundles" / "t1t2_translation")}
    for name, path in models.items():
        if not Path(path).exists():
            parser.error(f"--model {name}: {path} does not exist")
    from monai_t1t2.inference.translation import load_translator

    translators = {name: load_translator(path, "cpu") for name, path in models.items()}  # loaded once, not per pair
    output, cache_dir = Path(args.output), Path(args.cache_dir)
    try:
        subjects = healthy_pairs(cache_dir)
    except T1T2Error as err:
        raise SystemExit(f"healthy.py: {err}") from None
    output.mkdir(parents=True, exist_ok=True)
    started = time.time()
    table = quality.fit_lookup_table(load_datalist(Path(args.datalist), "training"))
    print(f"lookup table fitted on the training subjects ({time.time() - started:.0f} s)", flush=True)
    names = list(quality.BASELINES) + list(models)
    results, labels = {}, label_names(quality.PARCELLATION_MODEL)
    for subject in subjects:
        volumes = quality.load_case(subject, cache_dir)
        predictions = {"inverted_t1": quality.inverted_t1(volumes), "lut": quality.apply_lookup_table(table, volumes)}
        for name, translator in translators.items():
            begun = time.time()
            predictions[name] = pipeline_prediction(subject["t1"], translator)
            print(f"{subject['case']} {name}: translated in {time.time() - begun:.0f} s", flush=True)
        results[subject["case"]] = {}
        for name, prediction in predictions.items():
            scores = evaluate(prediction, volumes["t2"], mask=volumes["mask"], labels=volumes["labels"],
                              label_names=labels)
            results[subject["case"]][name] = {k: float(v) for k, v in scores.items()
                                              if isinstance(v, (int, float, np.floating))}
            results[subject["case"]][name]["checkerboard"] = checkerboard(prediction, volumes["mask"])
        # The checkerboard of the acquisition itself, for comparison.
        results[subject["case"]]["real_t2"] = {"checkerboard": checkerboard(volumes["t2"], volumes["mask"])}
        quality.save_case_png(output / f"{subject['case']}.png", volumes, predictions, title=f"{subject['case']} (healthy)")
        (output / "healthy.json").write_text(json.dumps({"models": models, "results": results}, indent=1))
    print(markdown(results, names))


if __name__ == "__main__":
    main()
