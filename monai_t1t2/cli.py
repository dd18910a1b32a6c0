"""The ``monai-t1t2`` command. Each subcommand parses its options and calls one module.

Errors a user can cause (:class:`~monai_t1t2.errors.T1T2Error`) print one line on stderr
and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from monai_t1t2.errors import T1T2Error

EXIT_USER_ERROR = 2


def _cmd_qc(args: argparse.Namespace) -> int:
    from monai_t1t2.qc import run_qc

    return run_qc(args.paths, report=args.report, png_dir=args.png_dir, overwrite=args.overwrite, expect=args.expect,
                  series_uid=args.series_uid)


def _cmd_parcellate(args: argparse.Namespace) -> int:
    from monai_t1t2.parcellation import run_parcellate

    model = {} if args.model is None else {"model": args.model}  # None: the package's default model
    return run_parcellate(args.t1, output=args.output, png=args.png, overwrite=args.overwrite, **model)


def _cmd_import_brainchop(args: argparse.Namespace) -> int:
    from monai_t1t2.parcellation import run_import_brainchop

    return run_import_brainchop(args.source, args.output, overwrite=args.overwrite)


def _cmd_predict(args: argparse.Namespace) -> int:
    from monai_t1t2.inference.batch import run_predict

    return run_predict(args.inputs, output_dir=args.output_dir, model=args.model, png=args.png, device=args.device,
                       overlap=args.overlap, sw_batch_size=args.sw_batch_size, overwrite=args.overwrite,
                       mask=args.mask, mask_method=args.mask_method, force=args.force, qc=args.qc,
                       manifest=args.manifest, report=args.report, devices=args.devices, num_nodes=args.num_nodes,
                       datalist_key=args.datalist_key, flip_axes=args.flip_axes, calibrate_tails=args.calibrate_tails,
                       precision=args.precision,
                       uncertainty=args.uncertainty_level if args.uncertainty else None,
                       series_uid=args.series_uid, dicom_out=args.dicom_out, bids=args.bids)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from monai_t1t2.evaluation import run_evaluate

    return run_evaluate(pred=args.pred, ref=args.ref, mask=args.mask, tumor_seg=args.tumor_seg,
                        labels=args.labels, json_path=args.json, overwrite=args.overwrite, t1=args.t1,
                        mask_from_ref=args.mask_from_ref)


def _cmd_prepare_pairs(args: argparse.Namespace) -> int:
    from monai_t1t2.registration import run_prepare_pairs

    return run_prepare_pairs(args.input_dir, args.output_dir, register=args.register, overwrite=args.overwrite,
                             skull_strip=args.skull_strip)


def build_parser() -> argparse.ArgumentParser:
    from monai_t1t2 import __version__

    parser = argparse.ArgumentParser(prog="monai-t1t2", description="T1-weighted to T2-weighted brain MRI translation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    qc = add("qc", _cmd_qc, "Measure image quality (MRIQC-style) and decide keep / reject with reasons.")
    qc.add_argument("paths", nargs="+", help="volumes or folders (searched for *.nii.gz / *.nii)")
    qc.add_argument("--report", required=True, help="JSON report to write")
    qc.add_argument("--png-dir", help="write a three-plane PNG of each rejected or flagged volume here")
    qc.add_argument("--overwrite", action="store_true", help="replace an existing report")
    qc.add_argument("--series-uid", metavar="UID", help="the DICOM series to check in a folder that holds several")
    qc.add_argument("--expect", choices=("t1", "any"), default="t1",
                    help="t1 (default): also what predict checks after its brain mask (brain volume, T1 contrast: "
                         "a T2, FLAIR or CT is rejected); any: the image checks only, for any MR weighting")

    parcellate = add("parcellate", _cmd_parcellate, "Label brain regions of a T1 with a pretrained parcellation network.")
    parcellate.add_argument("t1", help="T1-weighted volume")
    parcellate.add_argument("-o", "--output", required=True, help="label volume to write (.nii.gz)")
    parcellate.add_argument("--model", help="a brainchop model name or folder (model.json + .bin), the .pt that "
                                            "monai-t1t2 import-brainchop writes, or a MONAI segmentation bundle folder "
                                            "(configs/ + models/model.pt) (default: monai_t1t2.nets.meshnet.DEFAULT_MODEL, "
                                            "brainchop's model30chan18cls)")
    parcellate.add_argument("--png", action="store_true", help="also write a three-plane overlay PNG")
    parcellate.add_argument("--overwrite", action="store_true", help="replace an existing label volume (and PNG)")

    importer = add("import-brainchop", _cmd_import_brainchop,
                   "Convert a brainchop TensorFlow.js MeshNet (model.json + .bin) into a PyTorch file.")
    importer.add_argument("source", help="folder holding model.json and its weights")
    importer.add_argument("output", help="PyTorch file to write (.pt)")
    importer.add_argument("--overwrite", action="store_true", help="replace an existing .pt file")

    predict = add("predict", _cmd_predict, "Translate T1 volumes into synthetic T2 volumes.")
    predict.add_argument("inputs", nargs="+", help="T1 volumes, folders (a folder of one DICOM series is one volume, "
                                                   "its name the stem), glob patterns or MONAI datalist .json files")
    predict.add_argument("-o", "--output-dir", help="writes <stem>_synT2.nii.gz here (required unless --bids)")
    predict.add_argument("--series-uid", metavar="UID",
                         help="the DICOM series to translate where a folder holds several (the error lists them)")
    predict.add_argument("--dicom-out", action="store_true",
                         help="also write each synthetic T2 of a DICOM input as a new series in the input's study, "
                              "<stem>_synT2_dicom/ (one file per slice, DERIVED\\SECONDARY, marked synthetic)")
    predict.add_argument("--bids", action="store_true",
                         help="the input is a BIDS dataset: translate every sub-*/[ses-*/]anat/*_T1w.nii.gz into the "
                              "derivative dataset BIDS_ROOT/derivatives/monai-t1t2 (or -o) as "
                              "<entities>_desc-synthetic_T2w.nii.gz with JSON sidecars")
    predict.add_argument("--model", help="a translation bundle folder (configs/inference.json + models/model.pt), the "
                                         "models/model.pt inside one, or a Lightning .ckpt from monai-t1t2 train; a bare "
                                         ".pt outside a bundle has no architecture and is refused (default: the "
                                         "t1t2_translation bundle)")
    predict.add_argument("--png", action="store_true", help="also write <stem>_synT2.png (T1 and synthetic T2)")
    predict.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    predict.add_argument("--overlap", type=float, help="sliding-window overlap in [0, 1) (default: the model's, 0.5)")
    predict.add_argument("--sw-batch-size", type=int, help="patches per network call (default: the model's, 4)")
    predict.add_argument("--flip-axes", type=int, nargs="*", metavar="AXIS",
                         help="mirror test-time augmentation: also translate the T1 mirrored along these RAS axes "
                              "(0 = left-right) and average; each axis adds one pass of the network (default: the model's, none; "
                              "measured in benchmarks/README.md at 8a776e7, 'Mirror averaging')")
    predict.add_argument("--calibrate-tails", action=argparse.BooleanOptionalAction, default=None,
                         help="put the synthetic brain's 0.5th / 99.5th percentiles at 0 / 1, its 2nd-98th percentile "
                              "range as the network wrote it (default: the model's; measured in benchmarks/README.md at 8a776e7, "
                              "'Pinning the prediction's tails')")
    predict.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"),
                         help="the network's arithmetic: float32, or bfloat16 autocast (on 2 Intel Xeon cores with AMX-bf16 "
                              "0.55 of the network's time, SSIM within 0.0006 per subject; not measured on GPUs). A CPU "
                              "without native bfloat16 (AVX2 only, e.g. AMD EPYC Zen 3) runs float32 instead, with a warning")
    predict.add_argument("--uncertainty", action="store_true",
                         help="also write <stem>_synT2_lower.nii.gz / _upper.nii.gz: per voxel, the interval that holds "
                              "the real T2 with probability --uncertainty-level (split conformal, calibrated on subjects "
                              "the model never trained on), and the predicted brain SSIM in the sidecar and manifest; "
                              "one more pass of the network (docs/user-guide.md, 'The trust map')")
    predict.add_argument("--uncertainty-level", type=float, default=0.9, metavar="P",
                         help="the interval's probability (default 0.9)")
    predict.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    predict.add_argument("--mask", help="brain mask of the (single) input, on its grid; overrides --mask-method")
    predict.add_argument("--mask-method", default="auto", choices=("auto", "nonzero", "network", "head"),
                         help="auto: nonzero for a skull-stripped T1, else brainchop's mindgrab network (or the head "
                              "mask without it); nonzero: t1 > 0, enclosed cavities filled; network: mindgrab; "
                              "head: a head mask (keeps the skull)")
    predict.add_argument("--force", action="store_true",
                         help="translate inputs that fail QC or whose brain volume is implausible (with a warning); "
                              "the same as --qc flag")
    predict.add_argument("--qc", choices=("reject", "flag", "off"), default="reject",
                         help="reject: do not translate inputs that fail QC or the brain-volume check (default); "
                              "flag: translate them and record why; off: no checks")
    predict.add_argument("--manifest", help="one row per input (.json list or .csv; default OUT/manifest.json)")
    predict.add_argument("--report", help="write a self-contained HTML report (table and thumbnails) here")
    predict.add_argument("--devices", type=int, default=1, help="devices (processes) per node; > 1 runs DDP")
    predict.add_argument("--num-nodes", type=int, default=1, help="nodes (SLURM / torchrun)")
    predict.add_argument("--datalist-key", default="test", help="list of a datalist .json input to translate")

    evaluate = add("evaluate", _cmd_evaluate, "Score synthetic T2 against real T2 (../shared/EVALUATION.md protocol).")
    evaluate.add_argument("--pred", required=True, help="synthetic T2 volume or folder")
    evaluate.add_argument("--ref", required=True, help="real T2 volume or folder")
    evaluate.add_argument("--mask", help="brain mask (volume, or folder by case)")
    evaluate.add_argument("--t1", help="the T1 (volume, or folder by case): mask (t1 > 0) & (t2 > 0), the protocol's; "
                          "default: the t1.* beside a reference <case>/t2.*")
    evaluate.add_argument("--mask-from-ref", action="store_true",
                          help="score inside ref > 0 where no mask or T1 is given (otherwise that is an error)")
    evaluate.add_argument("--tumor-seg", help="tumour label volume (any label > 0 is tumour)")
    evaluate.add_argument("--labels", help="parcellation label volume for region MAE")
    evaluate.add_argument("--json", help="write every metric here")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --json file")

    prepare = add("prepare-pairs", _cmd_prepare_pairs,
                  "Resample each T2 onto its T1's grid and register it rigidly (IXI-style data).")
    prepare.add_argument("input_dir", help="folder of <case>/t1.*, t2.* [, tumor_seg.*]")
    prepare.add_argument("output_dir", help="writes <case>/t1.nii.gz, t2.nii.gz, registration.json, PNG")
    prepare.add_argument("--register", choices=("rigid", "none"), default="rigid",
                         help="rigid: register each T2 to its T1 (default); none: only resample it onto the T1's grid")
    prepare.add_argument("--skull-strip", action="store_true",
                         help="set T1 and T2 to 0 outside the T1's brain (brainchop mindgrab): pairs with skull become "
                              "training pairs like data/paired")
    prepare.add_argument("--overwrite", action="store_true", help="replace existing pairs in OUTPUT_DIR")

    # `train` hands everything after it to LightningCLI (fit / validate / test, --config ...).
    train = add("train", None, "Train with PyTorch Lightning (LightningCLI): monai-t1t2 train fit --config configs/cpu_smoke.yaml")
    train.add_argument("lightning_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from monai_t1t2.training.module import run_training_cli

        return _guarded(lambda: run_training_cli(argv[1:]))
    args = build_parser().parse_args(argv)
    return _guarded(lambda: args.handler(args))


def _guarded(call: Callable[[], int | None]) -> int:
    try:
        return int(call() or 0)
    except T1T2Error as err:
        print(f"monai-t1t2: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("monai-t1t2: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
