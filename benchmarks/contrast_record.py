"""Every recorded model's tumour contrast error on the test subjects, against the floor's, from the
``quality.json`` files that ``benchmarks/quality.py`` wrote (no model is run).

Issue 15 asks for a tumour contrast error below the floor's (the inverted T1) on every test subject with a
mask. This reads the recorded split results (``benchmarks/results/split*/quality.json`` by default, most of them
two halves of the 12 test subjects per run), keeps the variants scored on all of them, and prints, per
variant, its error on the subjects where the floor is beaten least often, and on how many subjects it
is below the floor:

    python benchmarks/contrast_record.py                      # the variants written as the bundle writes them
    python benchmarks/contrast_record.py --suffix "" --subjects 6

``--suffix _tails`` (default) keeps the variants scored with ``CalibrateTailsd``, as the bundles from 0.13.0
on write them; ``--suffix ""`` keeps every variant.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOOR = "inverted_t1"


def recorded_errors(paths: list[str]) -> dict[str, dict[str, float]]:
    """``{variant: {subject: tumour contrast error}}`` from ``quality.json`` files (subjects without a mask
    have none and are left out)."""
    errors: dict[str, dict[str, float]] = {}
    for path in paths:
        for subject, variants in json.loads(Path(path).read_text())["results"].items():
            for variant, scores in variants.items():
                error = scores.get("tumour_contrast_error")
                if error is not None and not math.isnan(error):
                    errors.setdefault(variant, {})[subject] = float(error)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="*", help="quality.json files (default: benchmarks/results/split*/quality.json)")
    parser.add_argument("--suffix", default="_tails", help="keep the variants whose name ends so ('' keeps all)")
    parser.add_argument("--subjects", type=int, default=5, help="show the N subjects where the floor is beaten least often")
    args = parser.parse_args()
    paths = args.results or sorted(glob.glob(str(REPO / "benchmarks" / "results" / "split*" / "quality.json")))
    errors = recorded_errors(paths)
    if FLOOR not in errors:
        parser.error(f"no {FLOOR} rows in {len(paths)} file(s)")
    floor = errors[FLOOR]
    variants = {name: row for name, row in errors.items()
                if name != FLOOR and name.endswith(args.suffix) and set(row) == set(floor)}
    if not variants:
        parser.error(f"no variant ending in {args.suffix!r} is scored on all {len(floor)} subjects")
    below = {subject: sum(row[subject] < floor[subject] for row in variants.values()) for subject in floor}
    shown = sorted(floor, key=lambda subject: (below[subject], subject))[:args.subjects]
    print(f"{len(variants)} variants scored on all {len(floor)} test subjects with a mask ({len(paths)} files)\n")
    print("| variant | " + " | ".join(shown) + " | below the floor on |")
    print("|---" * (len(shown) + 2) + "|")
    print(f"| {FLOOR} (floor) | " + " | ".join(f"{floor[s]:.3f}" for s in shown) + " | |")
    for name, row in variants.items():
        print(f"| {name} | " + " | ".join(f"{row[s]:.3f}" for s in shown)
              + f" | {sum(row[s] < floor[s] for s in floor)} of {len(floor)} |")
    print("| variants below the floor | " + " | ".join(f"{below[s]} of {len(variants)}" for s in shown) + " | |")


if __name__ == "__main__":
    main()
