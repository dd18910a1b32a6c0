"""BIDS in and out (monai_t1t2.bids): ``predict BIDS_ROOT --bids`` writes a valid derivative dataset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import synthetic_head, tiny_translation_bundle
from monai_t1t2.bids import derivative_path, find_t1w, source_uri

T1W = ("sub-01/anat/sub-01_T1w.nii.gz", "sub-02/ses-pre/anat/sub-02_ses-pre_run-1_T1w.nii.gz")


def _bids_validator() -> str | None:
    """The schema-based BIDS validator (PyPI ``bids-validator-deno``; it runs offline), if installed."""
    beside_python = Path(sys.executable).parent / "bids-validator-deno"
    return str(beside_python) if beside_python.is_file() else shutil.which("bids-validator-deno")


def make_bids_dataset(root: Path) -> Path:
    """Two subjects (one with a session and a run), each T1w with a JSON sidecar, a README and a description."""
    (root).mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0",
                                                               "Authors": ["A. Tester"]}))
    (root / "README").write_text("A tiny test dataset.\n")
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    for index, relative in enumerate(T1W):
        image = nib.Nifti1Image(synthetic_head(seed=index), np.eye(4))
        image.header.set_xyzt_units("mm", "sec")
        (root / relative).parent.mkdir(parents=True)
        nib.save(image, str(root / relative))
        (root / relative.replace(".nii.gz", ".json")).write_text(json.dumps({"RepetitionTime": 2.3, "EchoTime": 0.003}))
    return root


def test_inputs_and_derivative_paths_follow_bids(tmp_path):
    root = make_bids_dataset(tmp_path / "ds")
    (root / "derivatives" / "other" / "sub-01" / "anat").mkdir(parents=True)  # never an input
    found = find_t1w(root)
    assert [p.relative_to(root).as_posix() for p in found] == list(T1W)
    derivatives = root / "derivatives" / "monai-t1t2"
    assert derivative_path(found[1], root, derivatives) == \
        derivatives / "sub-02/ses-pre/anat/sub-02_ses-pre_run-1_desc-synthetic_T2w.nii.gz"
    assert source_uri(found[0], root) == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"


def test_predict_bids_writes_a_valid_derivative_dataset(tmp_path):
    from monai_t1t2.cli import main

    root = make_bids_dataset(tmp_path / "ds")
    bundle = tiny_translation_bundle(tmp_path)
    args = ["predict", str(root), "--bids", "--model", str(bundle), "--device", "cpu", "--qc", "off",
            "--mask-method", "nonzero"]
    assert main(args) == 0
    derivatives = root / "derivatives" / "monai-t1t2"
    description = json.loads((derivatives / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "monai-t1t2"
    assert description["DatasetLinks"] == {"raw": "../../"}
    for relative in T1W:
        output = derivative_path(root / relative, root, derivatives)
        assert output.is_file() and nib.load(output).shape == (32, 32, 24)
        sidecar = json.loads(output.with_name(output.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["Sources"] == [f"bids:raw:{relative}"]
        assert sidecar["GeneratedBy"][0]["Name"] == "monai-t1t2" and len(sidecar["ModelSHA256"]) == 64
        assert sidecar["SkullStripped"] is True and sidecar["SyntheticImage"] is True
    assert main(args) == 0  # a rerun finds both done
    assert {r["status"] for r in json.loads((derivatives / "manifest.json").read_text())} == {"skipped"}

    validator = _bids_validator()
    if validator is None:
        pytest.skip("bids-validator-deno (the BIDS validator; PyPI, runs offline) is not installed: "
                    "the derivative dataset was not validated")
    result = subprocess.run([validator, str(derivatives), "--json"], capture_output=True, text=True, timeout=300)
    issues = json.loads(result.stdout)["issues"]["issues"]
    errors = [(i.get("code"), i.get("location")) for i in issues if i.get("severity") == "error"]
    assert not errors, errors
