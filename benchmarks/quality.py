"""Quality benchmark on the fixed split of ../shared/EVALUATION.md (``../shared/data/datalist.json``).

Trains on the ``training`` list only, scores every ``test`` subject against its real T2 inside
the brain mask, and reports the two test groups apart: the 8 cohort subjects (same sources as
training) and the 4 cross-source subjects of ``paired/`` (other preprocessing pipelines).

Variants:

- ``inverted_t1``: the floor, ``1 - normalised T1`` (no training);
- ``lut``: the non-spatial lookup table of EVALUATION.md (normalised T1 in 128 bins -> the median over
  training subjects of each subject's median normalised T2 in that bin; empty bins interpolated),
  fitted on the ``training`` subjects only;
- trained models, either scored from a checkpoint (``--checkpoint NAME=PATH``, e.g. the runs of
  ``configs/cpu.yaml`` and ``configs/cpu_2d.yaml``) or trained here (``--train NAME ...``) from the
  recipe of ``--config``: ``3d`` (the recipe), ``2d`` (axial slices of ``min(2P, 128)`` squared, the
  same voxels per step), and the ablation's variants, which set every anatomy term whatever the
  recipe carries: ``3d_l1_ssim`` (none), ``3d_tumour``, ``3d_perceptual``, ``3d_region_stats``,
  ``3d_anatomy`` (perceptual + tumour), ``3d_all`` (the three) (see :func:`variants`); with
  ``--init-from`` they fine-tune a trained checkpoint's generator instead of starting from scratch
  (the loss-term ablation of benchmarks/README.md at 8a776e7).

Prints per-case tables (SSIM / PSNR / MAE in the brain, tumour SSIM and MAE beside the same outside the
tumour, tumour contrast error, ``R_z``) and the group means, says on which subjects a model does not beat
both the floor and the lookup table, writes every number to ``quality.json`` and a three-plane PNG per case.

    python benchmarks/quality.py --checkpoint 3d=runs/cpu/lightning_logs/version_0/checkpoints/last.ckpt \\
        --checkpoint 2d=runs/cpu_2d/lightning_logs/version_0/checkpoints/last.ckpt   # the shipped recipe
    python benchmarks/quality.py --train 3d 2d --max-time 1200          # train both (20 min each) and score
    python benchmarks/quality.py --train 3d --steps 50 --cases Brats18_CBICA_ASY_1   # a smoke run
    python benchmarks/quality.py --report a/quality.json b/quality.json  # merge and print earlier runs
    python benchmarks/quality.py --report a/quality.json b/quality.json --reference 3d_rs   # differences against 3d_rs
    python benchmarks/quality.py --checkpoint 3d=CKPT --checkpoint 3d_roi64=CKPT --roi 3d_roi64=64   # window size
    python benchmarks/quality.py --checkpoint 3d=CKPT --checkpoint 3d_o75=CKPT --overlap 3d_o75=0.75   # window overlap
    python benchmarks/quality.py --init-from runs/cpu/.../last.ckpt --learning-rate 2e-4 --max-time 600 \
        --train 3d_l1_ssim 3d_perceptual 3d_tumour 3d_region_stats 3d_all   # the ablation, fine-tuning
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

from monai_t1t2.geometry import bounding_box  # noqa: E402
from monai_t1t2.masks import nonzero_brain  # noqa: E402
from monai_t1t2.io import load_datalist  # noqa: E402
from monai_t1t2.training.data import PairedDataModule, split_subjects  # noqa: E402
from monai_t1t2.metrics import evaluate  # noqa: E402
from monai_t1t2.training.module import TranslationModule, module_from_state  # noqa: E402
from monai_t1t2.nets.generators import input_floor_of, patch_inferer  # noqa: E402
from monai_t1t2.nets.meshnet import DEFAULT_MODEL, cached_parcellation, label_names  # noqa: E402
from monai_t1t2.transforms import CalibrateTails, PercentileNormalise  # noqa: E402
from monai_t1t2.regions import REGION_GROUPS  # noqa: E402

DATALIST = REPO.parent / "shared" / "data" / "datalist.json"
PARCELLATION_MODEL = DEFAULT_MODEL
LUT_BINS = 128
BASELINES = ("inverted_t1", "lut")
# The test groups of the split; ``validation`` when --validation scores the recipe's held-out training subjects,
# ``training`` when --fit-check scores subjects the models trained on (a diagnostic of fit, never a test result).
GROUPS = ("cohort", "cross-source", "validation", "training")
ANATOMY_OFF = {"perceptual_weight": 0.0, "tumour_weight": 0.0, "region_stats_weight": 0.0}
# Metrics of the tables: brain, tumour (BraSyn-style: inside the tumour and outside it), consistency.
METRICS = ("ssim", "psnr", "mae", "ssim_tumour", "ssim_non_tumour", "mae_tumour", "mae_non_tumour",
           "tumour_contrast_error", "r_z", "slice_flicker", "mae_white_matter", "mae_cortical_grey",
           "mae_deep_grey", "mae_ventricles_csf")


def variants(config: dict) -> dict:
    """Config overrides of each trainable variant, derived from the 3D recipe in ``config``.

    The 2D baseline sees the same number of voxels per optimiser step as the 3D model: 3D
    patches of ``P^3`` (``n`` per step) become ``n * P^3 / S^2`` axial slices of ``S x S``,
    ``S = min(2P, 128)``; it is ``configs/cpu_2d.yaml`` for the CPU recipe.
    """
    side = int(config["data"]["patch_size"][0])
    samples = int(config["data"]["samples_per_volume"])
    slice_side = min(2 * side, 128)
    slices = [slice_side, slice_side, 1]
    return {
        "2d": {"model": {"spatial_dims": 2, "patch_size": slices},
               "data": {"patch_size": slices, "samples_per_volume": samples * side**3 // slice_side**2}},
        "3d": {},
        # The loss-term ablation: each variant names every anatomy term, whatever the recipe carries.
        "3d_l1_ssim": {"model": dict(ANATOMY_OFF)},
        "3d_tumour": {"model": dict(ANATOMY_OFF, tumour_weight=1.0)},
        "3d_perceptual": {"model": dict(ANATOMY_OFF, perceptual_weight=1.0), "data": {"parcellation_model": PARCELLATION_MODEL}},
        "3d_region_stats": {"model": dict(ANATOMY_OFF, region_stats_weight=1.0), "data": {"parcellation_model": PARCELLATION_MODEL}},
        "3d_anatomy": {"model": dict(ANATOMY_OFF, perceptual_weight=1.0, tumour_weight=1.0),
                       "data": {"parcellation_model": PARCELLATION_MODEL}},
        "3d_all": {"model": {"perceptual_weight": 1.0, "tumour_weight": 1.0, "region_stats_weight": 1.0},
                   "data": {"parcellation_model": PARCELLATION_MODEL}},
    }


def merged(base: dict, override: dict) -> dict:
    result = copy.deepcopy(base)
    for key, value in override.items():
        result[key] = merged(result.get(key, {}), value) if isinstance(value, dict) else value
    return result


def match_histogram(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``prediction`` with its values inside ``mask`` replaced, rank for rank, by the sorted values of
    ``reference`` inside ``mask`` (exact histogram matching: a monotone map, ties broken by position);
    outside ``mask`` unchanged."""
    matched = np.array(prediction, dtype=np.float32, copy=True)
    order = np.argsort(prediction[mask], kind="stable")
    values = np.empty(order.size, dtype=np.float32)
    values[order] = np.sort(reference[mask])
    matched[mask] = values
    return matched


def fit_check_subjects(training: list[dict], cases) -> tuple[list[dict], dict]:
    """``--fit-check``: the named ``training`` subjects become the scored ones (``{case: subject}``), the
    rest stay the lookup table's training subjects."""
    unknown = sorted(set(cases) - {s["case"] for s in training})
    if unknown:
        raise ValueError(f"{unknown} not in the `training` list")
    return ([s for s in training if s["case"] not in cases],
            {s["case"]: s for s in training if s["case"] in cases})


def group_of(subject: dict) -> str:
    """``cross-source`` for the subjects of ``paired/`` (other pipelines), else ``cohort``."""
    return "cross-source" if Path(subject["t1"]).parent.parent.name == "paired" else "cohort"


def load_case(subject: dict, cache_dir: Path | None = None, parcellation: bool = True) -> dict:
    """A subject's volumes in RAS as arrays ``(X, Y, Z)``: T1, T2, the protocol's brain mask, tumour, labels."""
    images = {key: nib.as_closest_canonical(nib.load(subject[key])) for key in ("t1", "t2")}
    case = {key: image.get_fdata(dtype=np.float32) for key, image in images.items()}
    case["mask"] = (case["t1"] > 0) & (case["t2"] > 0)
    case["tumor_seg"] = (nib.as_closest_canonical(nib.load(subject["tumor_seg"])).get_fdata() > 0
                         if subject.get("tumor_seg") else None)
    case["labels"] = None
    if parcellation:
        labels_path = cached_parcellation(subject["t1"], cache_dir, model=PARCELLATION_MODEL)
        case["labels"] = np.asarray(nib.as_closest_canonical(nib.load(str(labels_path))).dataobj).astype(np.int64)
    return case


# ----- baselines ------------------------------------------------------------------------------
def inverted_t1(case: dict) -> np.ndarray:
    return (1 - PercentileNormalise()(case["t1"], case["mask"])) * case["mask"]


def _bins(normalised_t1: np.ndarray) -> np.ndarray:
    return np.minimum((normalised_t1 * LUT_BINS).astype(np.int64), LUT_BINS - 1)


def bin_medians(case: dict) -> np.ndarray:
    """``(LUT_BINS,)``: per normalised-T1 bin, the median normalised T2 of one case inside its mask (NaN where empty)."""
    t1 = PercentileNormalise()(case["t1"], case["mask"])[case["mask"]]
    t2 = PercentileNormalise()(case["t2"], case["mask"])[case["mask"]]
    bins = _bins(t1)
    order = np.argsort(bins, kind="stable")
    bins, t2 = bins[order], t2[order]
    edges = np.searchsorted(bins, np.arange(LUT_BINS + 1))
    medians = np.full(LUT_BINS, np.nan)
    for b in range(LUT_BINS):
        if edges[b + 1] > edges[b]:
            medians[b] = np.median(t2[edges[b]:edges[b + 1]])
    return medians


def fill_empty_bins(table: np.ndarray) -> np.ndarray:
    """``table`` with its NaN bins linearly interpolated from the filled ones."""
    filled = np.isfinite(table)
    return np.interp(np.arange(LUT_BINS), np.flatnonzero(filled), table[filled])


def fit_lookup_table(subjects: list[dict]) -> np.ndarray:
    """The lookup table of EVALUATION.md, fitted on ``subjects``: ``(LUT_BINS,)`` normalised T2 per T1 bin."""
    return fit_training_references(subjects)[0]


def fit_training_references(subjects: list[dict], levels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The lookup table and, with ``levels``, the population levels of ``subjects`` (``(len(LEVEL_PERCENTILES),)``:
    the median over them of their normalised T2's brain percentiles, the protocol's normalisation inside the
    protocol's mask: a standard T2 histogram), each subject read once for both."""
    medians, percentiles = [], []
    for subject in subjects:
        case = load_case(subject, parcellation=False)
        medians.append(bin_medians(case))
        if levels:
            percentiles.append(t2_levels(case))
    with np.errstate(all="ignore"):
        table = fill_empty_bins(np.nanmedian(np.stack(medians), axis=0))
    return table, np.median(np.stack(percentiles), axis=0) if levels else None


def apply_lookup_table(table: np.ndarray, case: dict) -> np.ndarray:
    t1 = PercentileNormalise()(case["t1"], case["mask"])
    return np.where(case["mask"], table[_bins(t1)], 0).astype(np.float32)


# Percentiles of the brain's intensities the population-level map holds (Nyul-Udupa-style landmarks).
LEVEL_PERCENTILES = (0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5)


def t2_levels(case: dict) -> np.ndarray:
    """A loaded case's normalised T2 brain percentiles at ``LEVEL_PERCENTILES``."""
    return np.percentile(PercentileNormalise()(case["t2"], case["mask"])[case["mask"]], LEVEL_PERCENTILES)


def population_levels(prediction: np.ndarray, brain: np.ndarray, standard: np.ndarray) -> np.ndarray:
    """``prediction`` mapped piecewise-linearly so that its brain percentiles (``LEVEL_PERCENTILES``)
    land on ``standard`` (:func:`fit_training_references`); values beyond the end percentiles take the
    end levels; zero outside ``brain``. Uses the prediction and training subjects only, never the
    subject's own T2."""
    own = np.percentile(prediction[brain], LEVEL_PERCENTILES)
    own = own + 1e-6 * np.arange(own.size)  # strictly increasing where percentiles tie
    return np.where(brain, np.interp(prediction, own, standard), 0).astype(np.float32)


# ----- trained models -------------------------------------------------------------------------
def predict_in_brain_box(t1: np.ndarray, translate_window, input_floor: float = 0.0,
                         brain: np.ndarray | None = None) -> np.ndarray:
    """Translate the brain's bounding box (+8 voxels) of a raw T1 ``(X, Y, Z)``; zero outside the brain
    (``brain``, computed when not given as ``monai_t1t2.masks.nonzero_brain(t1)``, the pipeline's mask
    of a skull-stripped T1).

    ``translate_window`` maps the percentile-normalised box ``(1, 1, *box)`` (a CPU tensor; brain voxels
    at least ``input_floor``, the floor the model was trained with) to a prediction of the same shape.
    """
    brain = nonzero_brain(t1) if brain is None else brain
    normalised = PercentileNormalise(floor=input_floor, positive_only=True)(t1, brain)
    box = bounding_box(brain, 8)
    output = np.zeros_like(t1)
    with torch.inference_mode():
        output[box] = translate_window(torch.as_tensor(normalised[box])[None, None])[0, 0].float().cpu().numpy()
    return output * brain


def predict(module: TranslationModule, t1: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """:func:`predict_in_brain_box` with the module's own sliding window, on the module's device, with
    the T1 input floor it was trained with (``module.input_floor``, set by :func:`load_checkpoint` and
    :func:`train`). The prediction is masked by ``brain`` (default: ``nonzero_brain(t1)``, the raw T1's
    brain with its enclosed cavities), not by the normalised T1 > 0, which would drop the brain's darkest
    voxels when the floor is 0."""
    module.eval()

    def translate_window(window: torch.Tensor) -> torch.Tensor:
        return module.predict_volume(window.to(module.device))

    return predict_in_brain_box(t1, translate_window, getattr(module, "input_floor", 0.0), brain)


def train(config: dict, variant: str, datalist: Path, cache_dir: Path, seed: int, steps: int | None,
          max_time: float | None, init_from: str | None = None,
          save_to: Path | None = None) -> tuple[TranslationModule, float, int]:
    """Train ``variant`` on the datalist's ``training`` list for ``steps`` steps or ``max_time`` seconds,
    from scratch or, with ``init_from``, from those generator weights (a checkpoint or a bundle); with ``save_to``,
    write the trained module there as a Lightning checkpoint (for ``export_bundle``)."""
    settings = merged(config, variants(config)[variant])
    pl.seed_everything(seed)
    data = PairedDataModule(**dict(settings["data"], data_dir=str(datalist), val_fraction=0.0, val_cases=None,
                                   cache_dir=str(cache_dir)))
    # init_weights: the module loads them when the fit starts (and says if they do not fit the variant).
    module = TranslationModule(**dict(settings["model"], **({"init_weights": init_from} if init_from else {})))
    budget = {"max_time": {"seconds": max_time}, "max_steps": -1} if max_time else {"max_steps": steps}
    trainer = pl.Trainer(accelerator="auto", devices=1, max_epochs=-1, limit_val_batches=0, **budget,
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False, precision=config.get("precision", "32-true"),
                         benchmark=torch.cuda.is_available())
    started = time.time()
    trainer.fit(module, data)
    seconds = time.time() - started
    module.input_floor = float(data.hparams.input_floor)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(str(save_to))
    return module, seconds, int(trainer.global_step)


def load_checkpoint(path: str) -> tuple[TranslationModule, int]:
    """The module of a checkpoint and its step; ``module.input_floor`` is the T1 input floor it was trained with."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    module = module_from_state(state)
    module.input_floor = input_floor_of(state)
    return module, int(state.get("global_step", 0))


# ----- report ---------------------------------------------------------------------------------
def _cell(value) -> str:
    return f"{value:.4g}" if value is not None and np.isfinite(value) else "n/a"


def markdown_report(results: dict, groups: dict, names: list[str], reference: str | None = None) -> str:
    """Per-case tables (one per metric) and the group means, then where a model misses a baseline, and
    every trained variant's paired differences against ``reference`` (default ``3d_l1_ssim`` or ``3d``)."""
    cases = sorted(results, key=lambda c: (groups[c], c))
    lines = []
    for metric in METRICS:
        lines += [f"\n### {metric}\n", "| case | group | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for case in cases:
            lines.append(f"| {case} | {groups[case]} | "
                         + " | ".join(_cell(results[case].get(n, {}).get(metric)) for n in names) + " |")
        for group in GROUPS:
            members = [c for c in cases if groups[c] == group]
            if not members:
                continue
            means = []
            for name in names:
                values = [results[c].get(name, {}).get(metric) for c in members]
                finite = [v for v in values if v is not None and np.isfinite(v)]
                means.append(_cell(np.mean(finite)) if finite else "n/a")
            lines.append(f"| **mean, {len(members)} {group}** | | " + " | ".join(means) + " |")
    lines += ["\n### group means (SSIM / PSNR / MAE in the brain; tumour SSIM | non-tumour SSIM; tumour contrast error)\n",
              "| group | variant | SSIM | PSNR dB | MAE | tumour SSIM | non-tumour SSIM | tumour MAE | non-tumour MAE "
              "| tumour contrast error | R_z | slice flicker |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += _group_mean_rows(results, groups, cases, names, ("ssim", "psnr", "mae", "ssim_tumour", "ssim_non_tumour",
                              "mae_tumour", "mae_non_tumour", "tumour_contrast_error", "r_z", "slice_flicker"))
    region_metrics = [f"mae_{group}" for group in REGION_GROUPS.values() if group != "tumour"]
    lines += ["\n### group means of the MAE per region group (parcellation groups; tumour voxels are the tumour group)\n",
              "| group | variant | " + " | ".join(m[4:] for m in region_metrics) + " |",
              "|---|---|" + "---|" * len(region_metrics)]
    lines += _group_mean_rows(results, groups, cases, names, region_metrics)
    reference = reference or ("3d_l1_ssim" if "3d_l1_ssim" in names else "3d")
    lines += paired_differences(results, groups, cases, names, reference)
    for name in names:
        if name in BASELINES:
            continue
        misses = []
        for case in cases:
            scores = results[case].get(name)
            if not scores:
                continue
            for baseline in BASELINES:
                base = results[case][baseline]
                for metric, better in (("ssim", 1), ("psnr", 1), ("mae", -1)):
                    if not better * (scores[metric] - base[metric]) > 0:
                        misses.append(f"{case}: {metric} {scores[metric]:.4g} vs {baseline} {base[metric]:.4g}")
                contrast, floor = scores.get("tumour_contrast_error"), results[case]["inverted_t1"].get("tumour_contrast_error")
                if baseline == "inverted_t1" and np.isfinite(contrast) and np.isfinite(floor) and not contrast < floor:
                    misses.append(f"{case}: tumour contrast error {contrast:.4g} vs inverted_t1 {floor:.4g}")
        lines.append(f"\n{name}: " + ("beats the floor and the lookup table in SSIM, PSNR and MAE, and the floor's "
                                      "tumour contrast error, on every scored case" if not misses
                                      else "does not beat a baseline on: " + "; ".join(misses)))
    return "\n".join(lines)


def _group_mean_rows(results: dict, groups: dict, cases: list[str], names: list[str], metrics) -> list[str]:
    """Table rows ``| group (n) | variant | mean of each metric |`` per test group, finite values only."""
    rows = []
    for group in GROUPS:
        members = [c for c in cases if groups[c] == group]
        for name in names if members else []:
            means = []
            for metric in metrics:
                finite = [v for c in members if np.isfinite(v := results[c].get(name, {}).get(metric, np.nan))]
                means.append(_cell(np.mean(finite)) if finite else "n/a")
            rows.append(f"| {group} ({len(members)}) | {name} | " + " | ".join(means) + " |")
    return rows


def paired_differences(results: dict, groups: dict, cases: list[str], names: list[str], reference: str = "3d") -> list[str]:
    """Per-case differences of each other trained variant against ``reference``: mean and the
    case-to-case standard deviation over each test group (the ablation's yardstick: a change is
    real when its mean is beyond that spread)."""
    others = [n for n in names if n not in BASELINES and n != reference]
    if reference not in names or not others:
        return []
    metrics = ("ssim", "psnr", "mae", "ssim_tumour", "mae_tumour", "tumour_contrast_error")
    lines = [f"\n### differences against {reference}, per case: mean ± standard deviation over the cases\n",
             "| group | variant | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for group in GROUPS:
        members = [c for c in cases if groups[c] == group]
        for name in others if members else []:
            row = []
            for metric in metrics:
                deltas = [results[c][name][metric] - results[c][reference][metric] for c in members
                          if name in results[c] and reference in results[c]
                          and np.isfinite(results[c][name].get(metric, np.nan))
                          and np.isfinite(results[c][reference].get(metric, np.nan))]
                row.append(f"{np.mean(deltas):+.4f} ± {np.std(deltas):.4f}" if deltas else "n/a")
            lines.append(f"| {group} ({len(members)}) | {name} | " + " | ".join(row) + " |")
    return lines


def save_case_png(path: Path, case: dict, predictions: dict[str, np.ndarray], title: str) -> None:
    """Three orthogonal planes through the tumour's centre (or the brain's): T1, real T2, each variant."""
    from monai_t1t2.viz import save_three_plane_png

    focus = case["tumor_seg"] if case["tumor_seg"] is not None and case["tumor_seg"].any() else case["mask"]
    centre = np.round(np.argwhere(focus).mean(0)).astype(int)
    volumes = [PercentileNormalise()(case["t1"], case["mask"]), PercentileNormalise()(case["t2"], case["mask"])]
    volumes += [PercentileNormalise()(p, case["mask"]) for p in predictions.values()]
    save_three_plane_png(path, volumes, ["T1", "real T2", *predictions], title=title, center=centre)


def print_report(paths: list[str], reference: str | None = None) -> None:
    """Merge the ``quality.json`` of several runs (later files win per case and variant) and print the tables."""
    results, groups, notes = {}, {}, []
    for path in paths:
        try:
            run = json.loads(Path(path).read_text())
            run["results"], run["groups"], run["settings"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SystemExit(f"--report {path}: not a quality.json of this benchmark ({type(err).__name__}: {err})") from None
        for case, per_variant in run["results"].items():
            results.setdefault(case, {}).update(per_variant)
        groups.update(run["groups"])
        notes.append(run["settings"])
    names = list(dict.fromkeys(n for case in results.values() for n in case))
    if reference and reference not in names:
        raise SystemExit(f"--reference {reference}: no such variant in {paths} (they hold {names})")
    print("\n".join(notes) + "\n" + markdown_report(results, groups, names, reference))


def named_settings(items: list[str], names, convert) -> dict | None:
    """``NAME=VALUE`` items of a per-checkpoint option (``--roi``, ``--overlap``, ``--flip``) as
    ``{NAME: convert(VALUE)}``; ``None`` when one has no ``=``, repeats a NAME, names no checkpoint or
    fails ``convert`` (a ``ValueError``)."""
    pairs = [item.split("=", 1) for item in items]
    named = [pair[0] for pair in pairs]
    if any(len(pair) != 2 for pair in pairs) or len(set(named)) != len(named) or not set(named) <= set(names):
        return None
    try:
        return {name: convert(value) for name, value in pairs}
    except ValueError:
        return None


def _window(value: str) -> int:
    if not value.isdigit():
        raise ValueError(value)
    return int(value)


def _overlap(value: str) -> float:
    overlap = float(value)
    if not 0 <= overlap < 1:
        raise ValueError(value)
    return overlap


def _axes(value: str) -> list[int]:
    if not all(axis.strip().isdigit() for axis in value.split(",")):
        raise ValueError(value)
    return [int(axis) for axis in value.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", default=str(DATALIST))
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu.yaml"), help="recipe of --train")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="score a trained Lightning checkpoint under NAME; repeatable")
    parser.add_argument("--roi", action="append", default=[], metavar="NAME=N",
                        help="score checkpoint NAME with an N^3 sliding window instead of its training patch (3D only)")
    parser.add_argument("--overlap", action="append", default=[], metavar="NAME=F",
                        help="score checkpoint NAME with sliding-window overlap F in [0, 1) instead of its own")
    parser.add_argument("--flip", action="append", default=[], metavar="NAME=AXES",
                        help="score checkpoint NAME with mirror test-time augmentation along AXES (e.g. 0 = left-right, "
                             "0,1); see monai_t1t2.nets.generators.FlipAveragingInferer")
    parser.add_argument("--zero-darkest", action="append", default=[], metavar="NAME",
                        help="score checkpoint NAME also zeroed where the normalised T1 is 0 (the brain's darkest "
                             "0.5 %%), as this benchmark scored every model before 2026-12-04: for comparison with "
                             "recorded scores of that time whose checkpoints are gone (the 2D baseline)")
    parser.add_argument("--level-oracle", action="append", default=[], metavar="NAME",
                        help="score checkpoint (or baseline) NAME also as NAME_levels: its brain intensities mapped "
                             "monotonically onto the real T2's brain histogram (the subject's own T2: a reference, "
                             "not a model). What NAME would score with every intensity level right and its "
                             "structure as it is")
    parser.add_argument("--population-levels", action="append", default=[], metavar="NAME",
                        help="score checkpoint NAME also as NAME_pop: its brain percentiles mapped onto the median "
                             "normalised-T2 percentiles of the training subjects (a standard T2 histogram; no "
                             "test T2 used)")
    parser.add_argument("--tail-calibration", action="append", default=[], metavar="NAME",
                        help="score checkpoint NAME also as NAME_tails: its brain's 0.5th and 99.5th percentiles put "
                             "at 0 and 1, its 2nd-98th percentile range unchanged (monai_t1t2.transforms.CalibrateTails; "
                             "no T2 used)")
    parser.add_argument("--validation", action="store_true",
                        help="score the validation subjects that --config's recipe holds out of `training` (its "
                             "val_cases, or val_fraction drawn with the data seed) instead of the test list; the "
                             "lookup table is then fitted on the other training subjects")
    parser.add_argument("--fit-check", nargs="+", metavar="CASE",
                        help="score these `training` subjects (ones the checkpoints trained on) instead of the test "
                             "list, as the group `training`; the lookup table is fitted on the other training "
                             "subjects. A diagnostic: a model far better here than on the test subjects overfits, "
                             "one about as good underfits; never a test result")
    parser.add_argument("--train", nargs="+", default=[], metavar="VARIANT",
                        help="train these variants here (see the module docstring), e.g. 3d 2d 3d_l1_ssim 3d_region_stats")
    parser.add_argument("--steps", type=int, help="optimiser steps per training (default: the config's max_steps)")
    parser.add_argument("--max-time", type=float, metavar="SECONDS", help="wall time per training instead of steps")
    parser.add_argument("--init-from", metavar="WEIGHTS",
                        help="--train variants fine-tune these generator weights (a checkpoint, a bundle or its model.pt)")
    parser.add_argument("--learning-rate", type=float, help="learning rate of --train (default: the config's)")
    parser.add_argument("--save-dir", help="write each --train variant's checkpoint to SAVE_DIR/<variant>.ckpt")
    parser.add_argument("--cases", nargs="+", help="test cases to score (default: the whole test list)")
    parser.add_argument("--cache-dir", default=str(REPO / "cache"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "split"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", nargs="+", metavar="JSON", help="only print the tables of earlier quality.json files")
    parser.add_argument("--reference", metavar="VARIANT",
                        help="--report: the variant the paired differences are taken against (default 3d_l1_ssim or 3d)")
    args = parser.parse_args()
    if args.report:
        print_report(args.report, args.reference)
        return
    config = yaml.safe_load(Path(args.config).read_text())
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint if "=" in item)
    if len(checkpoints) != len(args.checkpoint):
        parser.error("--checkpoint takes NAME=PATH")
    unknown = [v for v in args.train if v not in variants(config)]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {sorted(variants(config))}")
    for name, path in checkpoints.items():
        if not Path(path).is_file():
            parser.error(f"--checkpoint {name}: {path} does not exist")
    rois = named_settings(args.roi, checkpoints, _window)
    if rois is None:
        parser.error("--roi takes NAME=N, NAME one of the --checkpoint names, N an integer")
    overlaps = named_settings(args.overlap, checkpoints, _overlap)
    if overlaps is None:
        parser.error("--overlap takes NAME=F, NAME one of the --checkpoint names, F a number in [0, 1)")
    flips = named_settings(args.flip, checkpoints, _axes)
    if flips is None:
        parser.error("--flip takes NAME=AXES, NAME one of the --checkpoint names, AXES integers joined by commas")
    model_names = set(checkpoints) | set(args.train)
    for option, named, allowed in (("--zero-darkest", args.zero_darkest, model_names),
                                   ("--level-oracle", args.level_oracle, model_names | set(BASELINES)),
                                   ("--population-levels", args.population_levels, model_names),
                                   ("--tail-calibration", args.tail_calibration, model_names)):
        if set(named) - allowed:
            parser.error(f"{option} {sorted(set(named) - allowed)}: not a --checkpoint or --train name"
                         + (" or a baseline" if option == "--level-oracle" else ""))
    steps = args.steps or (config["trainer"].get("max_steps") if config["trainer"].get("max_steps", -1) > 0 else None)
    if args.train and not (steps or args.max_time):
        parser.error(f"{args.config} has no positive trainer.max_steps: give --steps or --max-time")
    data_config = config["data"]
    config = {"model": config["model"], "data": config["data"],
              "precision": config["trainer"].get("precision", "32-true")}
    if args.learning_rate:
        config["model"] = dict(config["model"], learning_rate=args.learning_rate)
    if args.init_from and not Path(args.init_from).exists():
        parser.error(f"--init-from {args.init_from} does not exist")
    datalist, cache_dir, output = Path(args.datalist), Path(args.cache_dir), Path(args.output)
    training, test = load_datalist(datalist, "training"), load_datalist(datalist, "test")
    test_cases = {s["case"]: s for s in test}
    if set(test_cases) & {s["case"] for s in training}:
        raise SystemExit(f"{datalist}: a test subject is in the training list")
    if args.fit_check and (args.validation or args.train or args.cases):
        parser.error("--fit-check scores trained checkpoints on training subjects: not with --validation, --train "
                     "or --cases")
    if args.validation or args.fit_check:
        # The recipe's own draw (PairedDataModule's split): the cases its training never saw.
        recipe_training, held_out = split_subjects(training, data_config.get("val_cases"),
                                                   data_config.get("val_fraction", 0.25), data_config.get("seed", 0))
    if args.validation:
        training, test_cases = recipe_training, {s["case"]: s for s in held_out}
    if args.fit_check:
        never_trained = sorted(set(args.fit_check) & {s["case"] for s in held_out})
        if never_trained:
            parser.error(f"--fit-check {never_trained}: held out for validation by {args.config}'s recipe, so never "
                         "trained on; score it with --validation")
        try:
            training, test_cases = fit_check_subjects(training, args.fit_check)
        except ValueError as err:
            parser.error(f"--fit-check: {err} ({datalist})")
    unknown_cases = sorted(set(args.cases or []) - set(test_cases))
    if unknown_cases:
        parser.error(f"--cases {unknown_cases}: not among the scored subjects {sorted(test_cases)}")
    cases = args.cases or list(test_cases)
    fixed_group = "validation" if args.validation else "training" if args.fit_check else None
    groups = {case: fixed_group or group_of(test_cases[case]) for case in cases}
    output.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"

    started = time.time()
    table, standard = fit_training_references(training, levels=bool(args.population_levels))
    print(f"lookup table fitted on {len(training)} training subjects ({time.time() - started:.0f} s)", flush=True)
    models, trained = {}, {}
    for name, path in checkpoints.items():
        module, step = load_checkpoint(path)
        models[name] = module
        trained[name] = {"checkpoint": str(path), "steps": step}
        if name in rois and module.hparams.spatial_dims != 3:
            parser.error(f"--roi {name}: {path} is not a 3D model")
        if name in rois or name in flips or name in overlaps:
            roi = (rois[name],) * 3 if name in rois else module.hparams.patch_size
            try:
                module.inferer = patch_inferer(roi, module.hparams.sw_batch_size, overlaps.get(name, module.hparams.overlap),
                                               flips.get(name, ()))
            except ValueError as err:
                parser.error(f"--flip/--overlap {name}: {err}")
            trained[name].update({"roi": rois[name]} if name in rois else {},
                                 **({"flip_axes": flips[name]} if name in flips else {}),
                                 **({"overlap": overlaps[name]} if name in overlaps else {}))
    for variant in args.train:
        save_to = Path(args.save_dir) / f"{variant}.ckpt" if args.save_dir else None
        module, seconds, step = train(config, variant, datalist, cache_dir, args.seed, steps, args.max_time,
                                      args.init_from, save_to)
        models[variant] = module
        trained[variant] = {"seconds": seconds, "steps": step, **({"init_from": args.init_from} if args.init_from else {}),
                            **({"learning_rate": args.learning_rate} if args.learning_rate else {})}
        print(f"{variant}: trained {step} steps in {seconds:.0f} s", flush=True)
    names = [n for name in list(BASELINES) + list(models)
             for n in [name] + [f"{name}_zeroed"] * (name in args.zero_darkest)
             + [f"{name}_levels"] * (name in args.level_oracle) + [f"{name}_pop"] * (name in args.population_levels)
             + [f"{name}_tails"] * (name in args.tail_calibration)]
    header = (f"split {datalist.name}: {len(training)} training subjects, {len(cases)} test subjects; device {device}; "
              + "; ".join(f"{n}: {t}" for n, t in trained.items()))
    results, label_list = {}, label_names(PARCELLATION_MODEL)
    for case in cases:
        volumes = load_case(test_cases[case], cache_dir)
        predictions = {"inverted_t1": inverted_t1(volumes), "lut": apply_lookup_table(table, volumes)}
        seconds, brain = {}, nonzero_brain(volumes["t1"])  # one hole fill per case, for every model and step
        for name, module in models.items():
            begun = time.time()
            predictions[name] = predict(module, volumes["t1"], brain)
            seconds[name] = time.time() - begun
            if name in args.zero_darkest:  # the old benchmark's mask (raw T1 > 0), not the case's `brain`
                positive = volumes["t1"] > 0
                predictions[f"{name}_zeroed"] = predictions[name] * (PercentileNormalise()(volumes["t1"], positive) > 0)
        for name in args.population_levels:
            predictions[f"{name}_pop"] = population_levels(predictions[name], brain, standard)
        for name in args.tail_calibration:
            predictions[f"{name}_tails"] = CalibrateTails()(predictions[name], brain)
        for name in args.level_oracle:
            predictions[f"{name}_levels"] = match_histogram(predictions[name], volumes["t2"], volumes["mask"])
        results[case] = {}
        for name, prediction in predictions.items():
            scores = evaluate(prediction, volumes["t2"], mask=volumes["mask"], tumor_seg=volumes["tumor_seg"],
                              labels=volumes["labels"], label_names=label_list)
            results[case][name] = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float, np.floating))}
            if name in seconds:
                results[case][name]["predict_seconds"] = seconds[name]
            print(f"{case} ({groups[case]}) {name}: ssim {scores['ssim']:.3f} psnr {scores['psnr']:.2f} "
                  f"mae {scores['mae']:.3f} tumour ssim {scores['ssim_tumour']:.3f} "
                  f"contrast err {scores['tumour_contrast_error']:.3f} r_z {scores['r_z']:.3f}", flush=True)
        save_case_png(output / f"{case}.png", volumes, {n: predictions[n] for n in names},
                      title=f"{case} ({groups[case]})")
        # Written after every case, so a run that is stopped keeps what it measured.
        (output / "quality.json").write_text(json.dumps(
            {"settings": header, "groups": groups, "trained": trained, "results": results,
             "lookup_table": table.tolist()}, indent=1))
    print(header + "\n" + markdown_report(results, groups, names))


if __name__ == "__main__":
    main()
