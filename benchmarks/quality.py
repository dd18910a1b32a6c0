"""Leave-one-subject-out quality benchmark of ../shared/EVALUATION.md.

For every shared paired subject: train on the other three, translate the held-out T1, and
score it against its real T2 inside the brain mask. Variants (same generator family, same
optimiser steps, the same number of voxels per step; recipe from ``--config``, default
``configs/cpu.yaml``):

- ``inverted_t1``: the floor, ``1 - normalised T1`` (no training);
- ``2d``: the slice-wise baseline (``spatial_dims: 2``, axial slices of ``min(2P, 128)`` squared, see :func:`variants`);
- ``3d``: the 3D patch model (``P^3`` patches) with L1 + SSIM -- the recipe of the shipped model;
- ``3d_tumour``: ``3d`` + tumour-preservation loss;
- ``3d_perceptual``: ``3d`` + region-weighted perceptual loss;
- ``3d_anatomy``: ``3d`` + region-weighted perceptual loss + tumour-preservation loss;
- ``<variant>+extra``: that variant trained with the subjects of ``--extra-data-dir`` added to the
  training set of every fold (e.g. the IXI pair made by ``monai-t1t2 prepare-pairs``); they are
  never scored.

Prints one markdown table per metric (per case and mean), writes every number to JSON and
a PNG with a sagittal and a coronal slice of each variant (where 2D flicker shows).

    python benchmarks/quality.py                                  # the config's steps, CPU
    python benchmarks/quality.py --variants 3d 3d_perceptual 3d_anatomy --cases TCGA-DU-7294  # ablation
    python benchmarks/quality.py --config configs/default.yaml --max-time 600   # on a GPU, 10 min per model
    python benchmarks/quality.py --variants 3d 3d+extra --extra-data-dir prepared_ixi   # more training subjects
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytorch_lightning as pl
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_t1t2.data import PairedDataModule, find_subjects  # noqa: E402
from monai_t1t2.metrics import evaluate  # noqa: E402
from monai_t1t2.module import TranslationModule  # noqa: E402
from monai_t1t2.parcellation import cached_parcellation, label_names  # noqa: E402
from monai_t1t2.transforms import PercentileNormalise  # noqa: E402

def variants(config: dict) -> dict:
    """Config overrides of each trained variant, derived from the 3D recipe in ``config``.

    The 2D baseline sees the same number of voxels per optimiser step as the 3D model: 3D
    patches of ``P^3`` (``n`` per step) become ``n * P^3 / S^2`` axial slices of ``S x S``,
    ``S = min(2P, 128)`` (128 fits inside every shared brain's bounding box).
    """
    side = int(config["data"]["patch_size"][0])
    samples = int(config["data"]["samples_per_volume"])
    slice_side = min(2 * side, 128)
    slices = [slice_side, slice_side, 1]
    return {
        "2d": {"model": {"spatial_dims": 2, "patch_size": slices},
               "data": {"patch_size": slices, "samples_per_volume": samples * side**3 // slice_side**2}},
        "3d": {},
        "3d_tumour": {"model": {"tumour_weight": 1.0}},
        "3d_perceptual": {"model": {"perceptual_weight": 1.0},
                          "data": {"parcellation_model": "model30chan18cls"}},
        "3d_anatomy": {"model": {"perceptual_weight": 1.0, "tumour_weight": 1.0},
                       "data": {"parcellation_model": "model30chan18cls"}},
    }


METRICS = ("ssim", "psnr", "mae", "r_z", "slice_flicker", "tumour_contrast_error",
           "mae_white_matter", "mae_cortical_grey", "mae_deep_grey", "mae_ventricles_csf", "mae_tumour")


def merged(base: dict, override: dict) -> dict:
    result = copy.deepcopy(base)
    for key, value in override.items():
        result[key] = merged(result.get(key, {}), value) if isinstance(value, dict) else value
    return result


def load_case(subject: dict, cache_dir: Path, parcellation_model: str) -> dict:
    """Held-out volumes in RAS, the brain mask and the parcellation, as float arrays (X, Y, Z)."""
    images = {key: nib.as_closest_canonical(nib.load(subject[key])) for key in ("t1", "t2")}
    case = {key: image.get_fdata(dtype=np.float32) for key, image in images.items()}
    case["mask"] = (case["t1"] > 0) & (case["t2"] > 0)
    case["tumor_seg"] = (nib.as_closest_canonical(nib.load(subject["tumor_seg"])).get_fdata() > 0
                         if subject.get("tumor_seg") else None)
    labels_path = cached_parcellation(subject["t1"], cache_dir, model=parcellation_model)
    case["labels"] = np.asarray(nib.as_closest_canonical(nib.load(str(labels_path))).dataobj).astype(np.int64)
    return case


def predict_in_brain_box(t1: np.ndarray, translate_window) -> np.ndarray:
    """Translate the brain's bounding box (+8 voxels) of a raw T1 ``(X, Y, Z)``; zero outside the brain.

    ``translate_window`` maps the percentile-normalised box ``(1, 1, *box)`` (a CPU tensor) to a
    prediction of the same shape.
    """
    brain = t1 > 0
    normalised = PercentileNormalise()(t1, brain)
    lower = np.maximum(np.argwhere(brain).min(0) - 8, 0)
    upper = np.minimum(np.argwhere(brain).max(0) + 9, t1.shape)
    box = tuple(slice(a, b) for a, b in zip(lower, upper))
    output = np.zeros_like(t1)
    with torch.inference_mode():
        output[box] = translate_window(torch.as_tensor(normalised[box])[None, None])[0, 0].float().cpu().numpy()
    return output * brain


def predict(module: TranslationModule, t1: np.ndarray) -> np.ndarray:
    """:func:`predict_in_brain_box` with the module's own sliding window, on the module's device."""
    module.eval()

    def translate_window(window: torch.Tensor) -> torch.Tensor:
        window = window.to(module.device)
        return module.predict_volume(window, (window > 0).float())

    return predict_in_brain_box(t1, translate_window)


def train(config: dict, variant: str, held_out: str | None, steps: int | None, data_dir: Path, cache_dir: Path,
          seed: int, max_time: float | None = None, extra_data_dirs: list[str] | None = None):
    """Train one variant without ``held_out``: for ``steps`` optimiser steps, or for ``max_time`` seconds.

    A variant named ``<name>+extra`` is ``<name>`` with the subjects of ``extra_data_dirs`` added.
    Returns the module (on the training device), the wall time of ``fit`` and the steps taken.
    """
    name, _, extra = variant.partition("+")
    settings = merged(config, variants(config)[name])
    pl.seed_everything(seed)
    data = PairedDataModule(**dict(settings["data"], data_dir=str(data_dir), val_cases=[held_out] if held_out else None,
                                   val_fraction=0.0, cache_dir=str(cache_dir),
                                   extra_data_dirs=list(extra_data_dirs) if extra else None))
    if extra:
        print(f"{variant} without {held_out}: training on {', '.join(s['case'] for s in data.train_subjects)}", flush=True)
    module = TranslationModule(**settings["model"])
    budget = {"max_time": {"seconds": max_time}, "max_steps": -1} if max_time else {"max_steps": steps}
    trainer = pl.Trainer(accelerator="auto", devices=1, max_epochs=-1, limit_val_batches=0, **budget,
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False, precision=config.get("precision", "32-true"),
                         benchmark=torch.cuda.is_available())
    started = time.time()
    trainer.fit(module, data)
    return module, time.time() - started, int(trainer.global_step)


def markdown_tables(results: dict, cases: list[str], variants: list[str]) -> str:
    lines = []
    for metric in METRICS:
        lines += [f"\n### {metric}\n", "| variant | " + " | ".join(cases) + " | mean |",
                  "|---|" + "---|" * (len(cases) + 1)]
        for variant in variants:
            values = [results[case][variant].get(metric, float("nan")) for case in cases]
            finite = [v for v in values if v is not None and np.isfinite(v)]
            cells = [f"{v:.4g}" if v is not None and np.isfinite(v) else "n/a" for v in values]
            mean = f"{np.mean(finite):.4g}" if finite else "n/a"
            lines.append(f"| {variant} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def save_png(path: Path, slices: dict, cases: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(next(iter(slices.values())).keys())
    figure, axes = plt.subplots(len(rows), 2 * len(cases), figsize=(3 * 2 * len(cases), 2.6 * len(rows)), squeeze=False)
    for column, case in enumerate(cases):
        for row, name in enumerate(rows):
            for plane, image in enumerate(slices[case][name]):
                axis = axes[row, 2 * column + plane]
                axis.imshow(image.T, cmap="gray", origin="lower", vmin=0, vmax=1, aspect="auto")
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0:
                    axis.set_title(f"{case}\n{'sagittal' if plane == 0 else 'coronal'}", fontsize=8)
            axes[row, 2 * column].set_ylabel(name)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def print_report(paths: list[str]) -> None:
    """Merge the ``quality.json`` of several runs (e.g. one process per held-out case or variant) into one report.

    Runs are merged per case and variant; a (case, variant) measured twice keeps the later file's numbers.
    """
    results, timings, steps, settings = {}, {}, {}, set()
    for path in paths:
        run = json.loads(Path(path).read_text())
        for merged_table, table in ((results, run["results"]), (timings, run["train_seconds"]),
                                    (steps, run.get("train_steps", {}))):
            for case, per_variant in table.items():
                merged_table.setdefault(case, {}).update(per_variant)
        settings.add(run["settings"])
    cases = sorted(results)
    variants = list(dict.fromkeys(v for case in cases for v in results[case]))
    for case in cases:
        for variant in variants:
            results[case].setdefault(variant, {})
    print("\n".join(sorted(settings)) + "\n" + markdown_tables(results, cases, variants))
    for variant in variants:
        seconds = [timings[c][variant] for c in cases if variant in timings.get(c, {}) and variant != "inverted_t1"]
        taken = [steps[c][variant] for c in cases if variant in steps.get(c, {})]
        if seconds:
            print(f"training wall time, {variant}: mean {np.mean(seconds):.0f} s over {len(seconds)} runs"
                  + (f", {min(taken)}-{max(taken)} optimiser steps" if taken else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu.yaml"))
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "paired"))
    parser.add_argument("--steps", type=int, help="optimiser steps per training (default: the config's max_steps)")
    parser.add_argument("--quick", action="store_true", help="50 steps per training (a smoke run of the benchmark)")
    parser.add_argument("--max-time", type=float, metavar="SECONDS",
                        help="train each model for this wall time instead of a number of steps (the learning "
                             "rate decays over the budget); the steps taken are reported")
    parser.add_argument("--variants", nargs="+", default=["inverted_t1", "2d", "3d", "3d_anatomy"],
                        help="inverted_t1, 2d, 3d, 3d_tumour, 3d_perceptual, 3d_anatomy; '+extra' after a name "
                             "adds the --extra-data-dir subjects to its training set")
    parser.add_argument("--extra-data-dir", action="append", metavar="DIR",
                        help="training-only subjects (folder or datalist) for the '+extra' variants; repeatable")
    parser.add_argument("--cases", nargs="+", help="held-out cases (default: all)")
    parser.add_argument("--patch-size", type=int, metavar="P", help="train on P^3 patches instead of the config's")
    parser.add_argument("--precision", help="Lightning precision instead of the config's (e.g. 32-true on a CPU)")
    parser.add_argument("--cache-dir", default=str(REPO / "cache"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", nargs="+", metavar="JSON",
                        help="only print the tables of earlier runs' quality.json files (e.g. one run per case)")
    args = parser.parse_args()
    if args.report:
        print_report(args.report)
        return
    config = yaml.safe_load(Path(args.config).read_text())
    for variant in args.variants:
        name, plus, extra = variant.partition("+")
        trained_with_extra = name != "inverted_t1" and extra == "extra" and args.extra_data_dir
        if name not in ("inverted_t1", *variants(config)) or (plus and not trained_with_extra):
            parser.error(f"variant {variant}: unknown, or '+extra' without --extra-data-dir")
    steps = 50 if args.quick else args.steps or config["trainer"].get("max_steps")
    if not (steps or args.max_time):
        parser.error(f"{args.config} has no trainer.max_steps: give --steps or --max-time")
    config = {"model": config["model"], "data": config["data"],
              "precision": args.precision or config["trainer"].get("precision", "32-true")}
    if args.patch_size:
        config["model"]["patch_size"] = config["data"]["patch_size"] = [args.patch_size] * 3
    data_dir, cache_dir, output = Path(args.data_dir), Path(args.cache_dir), Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    subjects = {s["case"]: s for s in find_subjects(data_dir)}
    cases = args.cases or sorted(subjects)
    names = label_names("model30chan18cls")
    voxels = int(np.prod(config["data"]["patch_size"])) * int(config["data"]["samples_per_volume"])
    budget = f"wall time per training: {args.max_time:.0f} s" if args.max_time else f"steps per training: {steps}"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    header = (f"{budget}, voxels per step: {voxels} (patch {config['data']['patch_size']}), "
              f"precision {config['precision']}, config: {Path(args.config).name}, device: {device}")
    results, slices, timings, steps_taken = {}, {}, {}, {}
    for case in cases:
        volumes = load_case(subjects[case], cache_dir, "model30chan18cls")
        results[case], timings[case], steps_taken[case] = {}, {}, {}
        centre = np.round(np.argwhere(volumes["mask"]).mean(0)).astype(int)
        reference = PercentileNormalise()(volumes["t2"], volumes["mask"])
        slices[case] = {"real T2": (reference[centre[0]], reference[:, centre[1]])}
        for variant in args.variants:
            if variant == "inverted_t1":
                prediction, seconds = (1 - PercentileNormalise()(volumes["t1"], volumes["mask"])) * volumes["mask"], 0.0
            else:
                module, seconds, steps_taken[case][variant] = train(config, variant, case, steps, data_dir, cache_dir,
                                                                    args.seed, args.max_time, args.extra_data_dir)
                prediction = predict(module, volumes["t1"])
                del module
                torch.cuda.empty_cache()
            scores = evaluate(prediction, volumes["t2"], mask=volumes["mask"], tumor_seg=volumes["tumor_seg"],
                              labels=volumes["labels"], label_names=names)
            results[case][variant] = {key: float(value) for key, value in scores.items()
                                      if isinstance(value, (int, float, np.floating))}
            timings[case][variant] = seconds
            shown = PercentileNormalise()(prediction, volumes["mask"])
            slices[case][variant] = (shown[centre[0]], shown[:, centre[1]])
            print(f"{case} {variant}: ssim {scores['ssim']:.3f} psnr {scores['psnr']:.2f} mae {scores['mae']:.3f} "
                  f"r_z {scores.get('r_z', float('nan')):.3f} ({seconds:.0f} s, {steps_taken[case].get(variant, 0)} steps "
                  "training)", flush=True)
            # Written after every variant, so a long run that is stopped keeps what it measured.
            (output / "quality.json").write_text(json.dumps(
                {"settings": header, "results": results, "train_seconds": timings, "train_steps": steps_taken},
                indent=2))
    print(header + "\n" + markdown_tables(results, cases, args.variants))
    mean_time = np.mean([t for c in timings.values() for v, t in c.items() if v != "inverted_t1"] or [0])
    print(f"\nmean training wall time per run: {mean_time:.0f} s")
    save_png(output / "quality.png", slices, cases)


if __name__ == "__main__":
    main()
