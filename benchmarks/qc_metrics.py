"""QC metrics of the clean shared volumes, the raw clinical scans and simulated corruptions; prints markdown.

Usage (from the repo root; about 1-2 minutes on 2 CPU cores)::

    python benchmarks/qc_metrics.py [--cases TCGA-DU-7294 ...] [--ghost-amplitude 0.03] [--noise-sigma 0.1]

Rows: the T1 and T2 of every paired subject (clean; all must pass), the raw clinical T1 / T2 of
TCGA-FG-6692, then for each subject's T1 four corruptions built by :mod:`monai_t1t2.quality`:

- ``noise only``: Rician noise (Rayleigh magnitude), sigma = 10 % of the median brain signal, no anatomy;
- ``ghost y``: a copy of the volume at ``--ghost-amplitude`` shifted by half the field of view along y;
- ``background noise``: the volume plus complex Gaussian noise of sigma ``--noise-sigma`` x median
  brain signal (Rician in the brain, Rayleigh in the air);
- ``thin slab``: axial slices 70-89 kept, 3 slices of a 10-voxel square of brain above, the rest 0.

Each row shows the decision, the metrics and the seconds ``quality_report`` took on the array
(reading not included).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from monai_t1t2 import qc
from monai_t1t2.io import read_volume

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CASES = ("BraTS-GLI-00001-000", "BrainLesion-case-A", "TCGA-DU-7294", "TCGA-FG-6692")
COLUMNS = ("spatial_correlation", "efc", "fber", "snr", "snr_dietrich", "cnr", "gsr_x", "gsr_y",
           "background_noise", "usable_slice_fraction")


def corruptions(t1: np.ndarray, ghost_amplitude: float, noise_sigma: float) -> dict[str, np.ndarray]:
    signal = float(np.median(t1[t1 > 0]))
    return {
        "noise only": qc.simulate_noise_only(t1.shape, 0.1 * signal, seed=0),
        f"ghost y {ghost_amplitude:.0%}": qc.simulate_ghost(t1, axis=1, amplitude=ghost_amplitude),
        f"background noise {noise_sigma:.0%}": qc.simulate_rician_noise(t1, noise_sigma * signal, seed=0),
        "thin slab": qc.simulate_slab(t1, 70, 90, cap_slices=3),
    }


def row(name: str, volume) -> str:
    start = time.perf_counter()
    report = qc.quality_report(volume)
    seconds = time.perf_counter() - start
    metrics = report["metrics"]
    cells = [f"{metrics[c]:.4g}" if c in metrics else "-" for c in COLUMNS]
    verdict = "pass" if report["passed"] else "REJECT"
    reasons = "; ".join(r.split(":")[0] for r in report["reasons"]) or "-"
    return f"| {name} | {verdict} | {reasons} | " + " | ".join(cells) + f" | {seconds:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--ghost-amplitude", type=float, default=0.03)
    parser.add_argument("--noise-sigma", type=float, default=0.1)
    args = parser.parse_args()

    print("| volume | decision | reasons | " + " | ".join(COLUMNS) + " | seconds |")
    print("|" + "---|" * (len(COLUMNS) + 4))
    for case in args.cases:
        for contrast in ("t1", "t2"):
            print(row(f"{case} {contrast}", read_volume(SHARED / "paired" / case / f"{contrast}.nii.gz")), flush=True)
    for contrast in ("t1", "t2"):
        print(row(f"raw TCGA-FG-6692 {contrast}", read_volume(SHARED / "raw" / "TCGA-FG-6692" / f"{contrast}.nii.gz")),
              flush=True)
    for case in args.cases:
        t1 = read_volume(SHARED / "paired" / case / "t1.nii.gz")[0].numpy()
        for name, volume in corruptions(t1, args.ghost_amplitude, args.noise_sigma).items():
            print(row(f"{case} t1 + {name}", volume), flush=True)


if __name__ == "__main__":
    main()
