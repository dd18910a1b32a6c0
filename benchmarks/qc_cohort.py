"""QC of every real subject (false rejects) and the skull-stripped ghost rule on simulated N/2 ghosts.

    python benchmarks/qc_cohort.py                     # the 36 cohort and 4 paired subjects, T1 and T2
    python benchmarks/qc_cohort.py --ghost-sweep       # also: ghosts of several amplitudes on a real T1
    python benchmarks/qc_cohort.py --t1-check          # is it a T1 brain? every T1 and T2 of ../shared

Prints one line per image with the verdict, its reasons and the largest ghost-copy amplitude and
correlation (``monai_t1t2.quality.replicated_object_amplitude``), then the counts. ``--t1-check`` runs
instead what ``predict`` checks after the brain mask (``quality.t1_contrast_problems``) on every T1 and T2
of the cohort, paired, raw (after the brain mask) and template folders: the fine structure, the shell
contrast, whether the parcellation decided, the verdict and the seconds; then the T1s refused (should be
none) and the T2s passed (should be none).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import time  # noqa: E402

from monai_t1t2 import qc  # noqa: E402
from monai_t1t2 import quality  # noqa: E402
from monai_t1t2.io import read_volume, spacing_of  # noqa: E402
from monai_t1t2.masks import brain_mask  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", nargs="+", default=["cohort", "paired"])
    parser.add_argument("--ghost-sweep", action="store_true")
    parser.add_argument("--t1-check", action="store_true")
    args = parser.parse_args()
    if args.t1_check:
        return t1_check()
    rows = []
    print("| image | passed | reasons | max ghost_copy | max ghost-copy correlation |\n|---|---|---|---|---|")
    for group in args.groups:
        for case in sorted(p for p in (DATA / group).iterdir() if p.is_dir()):
            for contrast in ("t1", "t2"):
                report = qc.quality_report(case / f"{contrast}.nii.gz")
                m = report["metrics"]
                copy = max(m.get(f"ghost_copy_{a}", 0.0) for a in "xyz")
                correlation = max(m.get(f"ghost_copy_correlation_{a}", 0.0) for a in "xyz")
                rows.append((report["passed"], bool(report["reasons"]), copy, correlation))
                print(f"| {group}/{case.name} {contrast} | {report['passed']} | {'; '.join(report['reasons']) or '-'} "
                      f"| {copy:.3g} | {correlation:.3g} |", flush=True)
    print(f"\n{len(rows)} images: {sum(not r[0] for r in rows)} rejected, {sum(r[1] for r in rows)} with a reason; "
          f"largest ghost_copy {max(r[2] for r in rows):.3g}, largest ghost-copy correlation {max(r[3] for r in rows):.3g}")
    if args.ghost_sweep:
        t1 = read_volume(DATA / "paired" / "TCGA-DU-7294" / "t1.nii.gz")[0].numpy()
        print("\n| axis | amplitude | passed | ghost_copy (rule) | gsr (air-band rule) | head_fraction |\n|---|---|---|---|---|---|")
        for axis in (0, 1):
            for amplitude in (0.01, 0.03, 0.05, 0.1, 0.2, 0.4):
                report = qc.quality_report(qc.simulate_ghost(t1, axis=axis, amplitude=amplitude))
                m, name = report["metrics"], "xyz"[axis]
                print(f"| {name} | {amplitude} | {report['passed']} | {m.get('ghost_copy_' + name, 0):.4f} | "
                      f"{m.get('gsr_' + name, 0):.4f} | {m['head_fraction']:.3f} |", flush=True)


def t1_check() -> None:
    images = sorted(DATA.glob("*/*/t[12].nii.gz"))
    print("| image | fine structure | shell contrast | parcellated | verdict | s |\n|---|---|---|---|---|---|")
    wrong = []
    for path in images:
        started = time.perf_counter()
        volume = read_volume(path)
        brain = brain_mask(volume, "auto")
        image, mask, spacing = volume[0].numpy(), brain[0].numpy() > 0, spacing_of(volume.affine)
        shell = quality.shell_contrast(image, mask, spacing)
        problems = quality.t1_contrast_problems(volume, brain)
        parcellated = quality.SHELL_CLEAR_T1 < shell < quality.SHELL_NOT_T1
        is_t1 = path.name.startswith("t1")
        if is_t1 == bool(problems):
            wrong.append(str(path.relative_to(DATA)))
        print(f"| {path.relative_to(DATA)} | {quality.fine_structure(image, mask, spacing):.4f} | {shell:+.3f} | "
              f"{parcellated} | {'; '.join(problems) or 'T1 brain'} | {time.perf_counter() - started:.1f} |", flush=True)
    t1s = sum(p.name.startswith("t1") for p in images)
    print(f"\n{t1s} T1s, {len(images) - t1s} T2s; wrong verdicts (a T1 refused or a T2 passed): {wrong or 'none'}")


if __name__ == "__main__":
    main()
