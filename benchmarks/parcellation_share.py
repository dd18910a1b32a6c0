"""How much of the brain the default parcellation labels, per subject (issue: "a parcellation that holds on unseen brains").

For each subject: the share of the brain (T1 > 0, eroded by 3 voxels, outside the tumour dilated by 3
voxels) that gets a tissue label (not "Unknown"), and the shares of cortical grey and of white matter
in the labelled brain; a three-plane overlay PNG per subject with ``--png-dir``. The default
parcellation is the package's: ``model30chan18cls`` with brainchop's grey/white tissue model
``model5_gw_ae`` labelling what it leaves unknown. Parcellations are cached by file hash and
settings in ``--cache-dir``.

    python benchmarks/parcellation_share.py --list test             # the 12 test subjects
    python benchmarks/parcellation_share.py --list training test --png-dir /tmp/share_png   # all 40
    python benchmarks/parcellation_share.py --list test --tissue-model none      # the parcellation alone
    python benchmarks/parcellation_share.py --list test --tissue-model none --intensity percentile  # before 0.6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_t1t2.io import load_datalist  # noqa: E402
from monai_t1t2.io import read_volume  # noqa: E402
from monai_t1t2.geometry import dilate  # noqa: E402
from monai_t1t2.nets.meshnet import CONFORM_INTENSITIES, DEFAULT_CONFORM_INTENSITY, DEFAULT_MODEL, DEFAULT_TISSUE_MODEL, cached_parcellation, label_names  # noqa: E402
from monai_t1t2.regions import labels_to_groups  # noqa: E402
from monai_t1t2.parcellation import save_label_overlay_png  # noqa: E402



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", default=str(REPO.parent / "shared" / "data" / "datalist.json"))
    parser.add_argument("--list", nargs="+", default=["test"], help="datalist keys (training, test)")
    parser.add_argument("--cache-dir", default=str(REPO / "cache"))
    parser.add_argument("--png-dir")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="parcellation model (default %(default)s)")
    parser.add_argument("--tissue-model", default=DEFAULT_TISSUE_MODEL,
                        help="tissue model that labels what the parcellation leaves unknown; 'none' for the parcellation alone")
    parser.add_argument("--intensity", choices=CONFORM_INTENSITIES, default=DEFAULT_CONFORM_INTENSITY,
                        help="conform intensity rule of the parcellation (default %(default)s)")
    args = parser.parse_args()
    names = label_names(args.model)
    print("| case | labelled share | cortical grey / labelled | white matter / labelled |\n|---|---|---|---|")
    shares = []
    for key in args.list:
        for subject in load_datalist(args.datalist, key):
            path = cached_parcellation(subject["t1"], args.cache_dir, model=args.model, intensity=args.intensity,
                                       tissue_model=None if args.tissue_model == "none" else args.tissue_model)
            labels = np.asarray(nib.load(str(path)).dataobj).astype(np.int64)
            t1 = np.asarray(nib.load(subject["t1"]).dataobj, dtype=np.float32)
            brain = ndimage.binary_erosion(t1 > 0, iterations=3)
            if subject.get("tumor_seg"):
                tumour = np.asarray(nib.load(subject["tumor_seg"]).dataobj) > 0
                brain &= ~dilate(tumour, 3)
            labelled = brain & (labels > 0)
            share = float(labelled.sum() / brain.sum())
            shares.append(share)
            groups = labels_to_groups(labels[labelled], names)  # region groups: 1 white matter, 2 cortical grey
            print(f"| {subject['case']} | {share:.3f} | {float((groups == 2).mean()):.3f} | "
                  f"{float((groups == 1).mean()):.3f} |", flush=True)
            if args.png_dir:
                from monai.data import MetaTensor
                import torch

                volume = read_volume(subject["t1"])
                overlay = MetaTensor(torch.from_numpy(labels)[None], affine=volume.affine)
                save_label_overlay_png(volume, overlay, Path(args.png_dir) / f"{subject['case']}.png",
                                       title=f"{subject['case']}: labelled share {share:.2f}")
    print(f"\n{len(shares)} subjects: labelled share {min(shares):.3f}-{max(shares):.3f}, "
          f"{sum(s < 0.8 for s in shares)} below 0.80")


if __name__ == "__main__":
    main()
