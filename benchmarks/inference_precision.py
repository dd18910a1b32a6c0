"""bfloat16 inference: the network's time and the protocol's scores of ``translate(..., precision=...)``.

Each subject's T1 is translated whole, as ``monai-t1t2 predict`` does it (brain mask, resampling, sliding
window, tails step), once in float32 (``"32-true"``) and once under bfloat16 autocast (``"bf16-mixed"``),
with one loaded model. Prints, per subject and as means, the seconds the sliding window took (the
``network`` stage of :func:`monai_t1t2.inference.translation.translate`; the rest of the pipeline is the
same in both) and brain SSIM / PSNR / MAE against the real T2 with the protocol of
``../shared/EVALUATION.md`` (inside ``t1 > 0 & t2 > 0``), and the largest voxel difference between the
two outputs. The order of the two runs alternates from subject to subject, and one untimed translation
warms the model up first.

    python benchmarks/inference_precision.py                          # the 12 test subjects, the shipped bundle
    python benchmarks/inference_precision.py --cases TCGA-DU-7294 --model runs/x/last.ckpt --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from monai_t1t2.evaluation import evaluate
from monai_t1t2.inference.translation import PRECISIONS, load_translator, translate
from monai_t1t2.io import load_datalist, read_volume

DATALIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "datalist.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle folder, models/model.pt or .ckpt (default: the shipped bundle)")
    parser.add_argument("--datalist", default=str(DATALIST))
    parser.add_argument("--key", default="test", help="the datalist's list to take subjects from (default: test)")
    parser.add_argument("--cases", nargs="*", help="subjects of that list (default: all of it)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()

    subjects = {s["case"]: s for s in load_datalist(Path(args.datalist), args.key)}
    cases = args.cases or list(subjects)
    unknown = sorted(set(cases) - set(subjects))
    if unknown:
        parser.error(f"--cases {unknown}: not in {args.datalist}'s {args.key!r} list")
    translator = load_translator(args.model, args.device)
    translate(subjects[cases[0]]["t1"], translator)  # warm-up, untimed
    print(f"model {translator.source}; device {args.device}, {torch.get_num_threads()} threads; "
          f"{len(cases)} subjects of {args.key!r}\n")
    print("| case | network s 32-true | network s bf16-mixed | speed-up | SSIM 32 / bf16 | PSNR dB 32 / bf16 "
          "| MAE 32 / bf16 | largest difference |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for index, case in enumerate(cases):
        subject = subjects[case]
        t1 = nib.as_closest_canonical(nib.load(subject["t1"])).get_fdata(dtype=np.float32)
        t2 = nib.as_closest_canonical(nib.load(subject["t2"])).get_fdata(dtype=np.float32)
        mask = (t1 > 0) & (t2 > 0)
        volume = read_volume(subject["t1"])  # read once, translated both ways
        outputs, seconds, scores = {}, {}, {}
        for precision in PRECISIONS if index % 2 == 0 else PRECISIONS[::-1]:
            stages: dict[str, float] = {}
            prediction = translate(volume, translator, stages=stages, precision=precision)
            image = nib.as_closest_canonical(nib.Nifti1Image(prediction[0].numpy(), prediction.affine.numpy()))
            outputs[precision] = np.asarray(image.dataobj, dtype=np.float32)
            seconds[precision] = stages["network"]
            scores[precision] = evaluate(outputs[precision], t2, mask=mask)
        difference = float(np.abs(outputs["32-true"] - outputs["bf16-mixed"]).max())
        row = {"case": case, "difference": difference, **{f"seconds {p}": seconds[p] for p in PRECISIONS},
               **{f"{m} {p}": float(scores[p][m]) for p in PRECISIONS for m in ("ssim", "psnr", "mae")}}
        rows.append(row)
        print(f"| {case} | {seconds['32-true']:.1f} | {seconds['bf16-mixed']:.1f} | "
              f"{seconds['32-true'] / seconds['bf16-mixed']:.2f} | {row['ssim 32-true']:.4f} / {row['ssim bf16-mixed']:.4f} | "
              f"{row['psnr 32-true']:.2f} / {row['psnr bf16-mixed']:.2f} | {row['mae 32-true']:.4f} / {row['mae bf16-mixed']:.4f} "
              f"| {difference:.4f} |", flush=True)

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in rows)

    print(f"| mean | {mean('seconds 32-true'):.1f} | {mean('seconds bf16-mixed'):.1f} | "
          f"{mean('seconds 32-true') / mean('seconds bf16-mixed'):.2f} | {mean('ssim 32-true'):.4f} / {mean('ssim bf16-mixed'):.4f} | "
          f"{mean('psnr 32-true'):.2f} / {mean('psnr bf16-mixed'):.2f} | {mean('mae 32-true'):.4f} / {mean('mae bf16-mixed'):.4f} "
          f"| {max(r['difference'] for r in rows):.4f} |")
    for metric in ("ssim", "psnr", "mae"):
        differences = [r[f"{metric} bf16-mixed"] - r[f"{metric} 32-true"] for r in rows]
        spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
        print(f"\n{metric.upper()} bf16-mixed - 32-true per subject: {statistics.fmean(differences):+.5f} ± {spread:.5f} "
              f"(from {min(differences):+.5f} to {max(differences):+.5f})", end="")
    print()


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"\n{time.time() - started:.0f} s in all")
