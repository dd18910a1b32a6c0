"""Training throughput of the candidate CPU (or GPU) recipes: voxels per second of one optimiser step.

Each candidate runs the real :class:`~monai_t1t2.training.module.TranslationModule` loss and AdamW step
(brain-masked L1 + SSIM, residual head) on random ``(samples, 1, P, P, P)`` batches, ``--warmup``
steps first, then ``--steps`` timed ones; the data pipeline is timed apart (``--data``) on one real
subject: the cached volume's random steps (tumour-aware patch sampling, T1 intensity augmentation).

    OMP_NUM_THREADS=1 python benchmarks/train_speed.py                 # one thread, as each CPU run uses
    python benchmarks/train_speed.py --candidates fp32 bf16 --steps 10

Prints a markdown table: candidate, patch, samples per step, parameters, seconds per step, voxels/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_t1t2.training.module import TranslationModule  # noqa: E402

UNET = {"name": "unet", "channels": [16, 32, 64, 128], "num_res_units": 1, "norm": "instance", "head": "residual"}
WIDE_RES2 = dict(UNET, channels=[32, 64, 128, 256], num_res_units=2)  # the shipped network's backbone
SHIPPED = dict(WIDE_RES2, refine=16)  # ... with its full-resolution refiner (the shipped bundle's network)
CANDIDATES = {
    # name: (patch side, samples per step, generator, precision, channels_last, compile)
    "fp32": (32, 4, UNET, "fp32", False, False),
    "bf16": (32, 4, UNET, "bf16", False, False),
    "fp32_channels_last": (32, 4, UNET, "fp32", True, False),
    "fp32_compile": (32, 4, UNET, "fp32", False, True),
    "fp32_p48": (48, 1, UNET, "fp32", False, False),
    "fp32_p64": (64, 1, UNET, "fp32", False, False),
    "fp32_wide": (32, 4, dict(UNET, channels=[32, 64, 128, 256]), "fp32", False, False),
    "fp32_narrow": (32, 4, dict(UNET, channels=[8, 16, 32, 64]), "fp32", False, False),
    "fp32_wide_res2": (32, 4, WIDE_RES2, "fp32", False, False),
    "bf16_wide_res2": (32, 4, WIDE_RES2, "bf16", False, False),
    "fp32_wide5": (32, 4, dict(UNET, channels=[32, 64, 128, 256, 512]), "fp32", False, False),
    "fp32_wide_p48": (48, 1, dict(UNET, channels=[32, 64, 128, 256]), "fp32", False, False),
    # the fine-tunes of the shipped network: 64^3 patches, one per step
    "fp32_wide_res2_p64": (64, 1, WIDE_RES2, "fp32", False, False),
    "bf16_wide_res2_p64": (64, 1, WIDE_RES2, "bf16", False, False),
    # ... with a full-resolution refiner of 8 or 16 channels (Generator's refine)
    "bf16_wide_res2_p64_refine8": (64, 1, dict(WIDE_RES2, refine=8), "bf16", False, False),
    "bf16_wide_res2_p64_refine16": (64, 1, SHIPPED, "bf16", False, False),
    # ... with the weights and the batch in channels-last layout (as Translator holds them on the CPU)
    "fp32_wide_res2_p64_refine16_cl": (64, 1, SHIPPED, "fp32", True, False),
    "fp32_wide_res2_p64_refine16": (64, 1, SHIPPED, "fp32", False, False),
    "bf16_wide_res2_p64_refine16_cl": (64, 1, SHIPPED, "bf16", True, False),
}


def time_candidate(name: str, steps: int, warmup: int) -> dict:
    side, samples, generator, precision, channels_last, compiled = CANDIDATES[name]
    module = TranslationModule(generator=generator, patch_size=(side,) * 3, brain_masked_loss=True, ssim_weight=2.0)
    network = module.generator
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    network = network.to(memory_format=memory_format)
    forward = torch.compile(network) if compiled else network
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    t1 = torch.rand((samples, 1, side, side, side), generator=generator).to(memory_format=memory_format)
    batch = {"t1": t1, "t2": 1 - t1, "brain": torch.ones_like(t1)}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            prediction = forward(batch["t1"])
            loss = module.generator_loss(batch, prediction.float())["total"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    started = time.perf_counter()
    for _ in range(warmup):
        step()
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    return {"candidate": name, "patch": side, "samples": samples, "parameters": sum(p.numel() for p in network.parameters()),
            "warmup_s": warm, "s_per_step": seconds, "voxels_per_s": samples * side**3 / seconds}


def time_data(subject_index: int, visits: int) -> dict:
    from monai_t1t2.training.data import PairedDataModule

    datalist = REPO.parent / "shared" / "data" / "datalist.json"
    data = PairedDataModule(str(datalist), val_fraction=0.0, patch_size=(32, 32, 32), samples_per_volume=4,
                            repeats_per_epoch=1, augment=False, intensity_augment=True, tumour_fraction=1 / 3,
                            quality_control=False)
    data.train_subjects = data.train_subjects[subject_index:subject_index + 1]
    started = time.perf_counter()
    data.setup("fit")
    cache = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(visits):
        data.train_dataset[0]
    return {"cache_s": cache, "s_per_visit": (time.perf_counter() - started) / visits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data", action="store_true", help="also time the data pipeline on one real subject")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| candidate | patch | samples/step | parameters | warm-up s | s/step | voxels/s |\n|---|---|---|---|---|---|---|")
    for name in args.candidates:
        r = time_candidate(name, args.steps, args.warmup)
        print(f"| {r['candidate']} | {r['patch']}^3 | {r['samples']} | {r['parameters']:,} | {r['warmup_s']:.1f} | "
              f"{r['s_per_step']:.3f} | {r['voxels_per_s']:,.0f} |", flush=True)
    if args.data:
        d = time_data(0, 20)
        print(f"\ndata pipeline (one cohort subject): cache {d['cache_s']:.1f} s, {d['s_per_visit']:.3f} s per visit "
              "(4 patches of 32^3, tumour-aware sampling, T1 intensity augmentation)")


if __name__ == "__main__":
    main()
