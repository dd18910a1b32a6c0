"""Batch throughput of ``monai-t1t2 predict`` over a folder: volumes per hour and the per-stage split.

Translates ``--count`` real T1 volumes of ``../shared/data/datalist.json`` (the test list first, then
training subjects; links in a temporary folder, so the inputs are untouched) with the shipped model
through :func:`monai_t1t2.inference.batch.run_batch`, then reads the manifest's per-input ``stage_seconds``.

    python benchmarks/batch_throughput.py                    # 20 volumes, CPU
    python benchmarks/batch_throughput.py --device cuda      # on a GPU
    python benchmarks/batch_throughput.py --count 12 --precision bf16-mixed   # the network under bfloat16 autocast
    python benchmarks/batch_throughput.py --count 3 --noise 3    # + 3 noise-only volumes: what a refusal costs

Prints one markdown table: volumes, wall seconds, volumes per hour, and the mean seconds per volume
of each stage (read, mask, qc, resample, network, write). With ``--noise N``, N noise-only volumes
(256 x 256 x 150 at 1 x 1 x 1.2 mm, no brain; QC refuses them) join the folder, and a second table gives
the seconds a refusal took against a translation.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_t1t2.inference.batch import run_batch  # noqa: E402
from monai_t1t2.inference.translation import PRECISIONS  # noqa: E402
from monai_t1t2.hardware import describe  # noqa: E402
from monai_t1t2.io import load_datalist  # noqa: E402
from monai_t1t2.quality import simulate_noise_only  # noqa: E402

DATALIST = REPO.parent / "shared" / "data" / "datalist.json"
STAGES = ("read", "mask", "qc", "resample", "network", "write")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="default: the shipped bundle")
    parser.add_argument("--noise", type=int, default=0, help="noise-only volumes to add (refused by QC)")
    parser.add_argument("--precision", default="32-true", choices=PRECISIONS,
                        help="the network's arithmetic (monai-t1t2 predict --precision)")
    args = parser.parse_args()
    subjects = load_datalist(DATALIST, "test") + load_datalist(DATALIST, "training")
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "in"
        inputs.mkdir()
        for subject in subjects[: args.count]:
            (inputs / f"{subject['case']}.nii.gz").symlink_to(Path(subject["t1"]).resolve())
        for index in range(args.noise):
            noise = simulate_noise_only((256, 256, 150), 20.0, seed=index)
            nib.save(nib.Nifti1Image(noise, np.diag([1.0, 1.0, 1.2, 1.0])), str(inputs / f"noise-{index}.nii.gz"))
        started = time.time()
        code = run_batch([inputs], Path(folder) / "out", model=args.model, device=args.device, progress=False,
                         precision=args.precision)
        wall = time.time() - started
        rows = json.loads((Path(folder) / "out" / "manifest.json").read_text())
    done = [r for r in rows if r["status"] == "translated"]
    device = describe(args.device)
    print(f"exit status {code}; {len(done)} of {len(rows)} translated; device: {device}; precision {args.precision}")
    print("| volumes | wall s | volumes / hour | " + " | ".join(f"{s} s" for s in STAGES) + " |")
    print("|---" * (3 + len(STAGES)) + "|")
    means = [sum(r["stage_seconds"].get(s, 0.0) for r in done) / max(len(done), 1) for s in STAGES]
    print(f"| {len(done)} | {wall:.0f} | {3600 * len(done) / wall:.0f} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    refused = [r for r in rows if r["status"] == "rejected"]
    if refused:
        translated_s = sum(r["seconds"] for r in done) / max(len(done), 1)
        refused_s = sum(r["seconds"] for r in refused) / len(refused)
        print("\n| refused (noise only) | s per refusal | s per translation | ratio |\n|---|---|---|---|")
        print(f"| {len(refused)} | {refused_s:.1f} | {translated_s:.1f} | {refused_s / translated_s:.2f} |")


if __name__ == "__main__":
    main()
