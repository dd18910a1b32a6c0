"""The package's contract on bad input: one clear line naming the file and the problem.

In Python a :class:`monai_t1t2.errors.T1T2Error`; on the command line ``monai-t1t2: error: ...`` and exit 2,
never a traceback. Here: ``evaluate`` given plain arrays beside files it reorients, and model files that are
not PyTorch files (text, empty, truncated) for ``predict`` and ``parcellate``.
"""

from __future__ import annotations

import io
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import PAIRED, REPO, SAMPLE_T1, synthetic_head, write_nifti
from monai_t1t2.cli import main
from monai_t1t2.errors import GridMismatchError, T1T2Error
from monai_t1t2.metrics import evaluate

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ----- evaluate: a plain array has no orientation ---------------------------------------------------------
@pytest.mark.realdata
def test_evaluate_refuses_plain_mask_beside_lps_files():
    case = PAIRED / "TCGA-DU-7294"
    t1, t2 = case / "t1.nii.gz", case / "t2.nii.gz"
    assert nib.aff2axcodes(nib.load(t1).affine) != ("R", "A", "S")  # stored LPS: reorientation matters
    mask = np.asarray(nib.load(t1).dataobj) > 0
    with pytest.raises(GridMismatchError) as caught:
        evaluate(t2, t2, mask=mask)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("mask: a plain array has no orientation")
    assert str(t2) in message and "MetaTensor" in message
    # the same mask as a file is reoriented with the rest and scores
    scores = evaluate(t2, t2, mask=t1)
    assert scores["ssim"] == pytest.approx(1.0) and scores["mae"] == 0.0


@pytest.mark.realdata
def test_evaluate_refuses_plain_reference_beside_lps_prediction():
    case = PAIRED / "TCGA-DU-7294"
    with pytest.raises(GridMismatchError, match=r"^ref: a plain array has no orientation"):
        evaluate(case / "t2.nii.gz", nib.load(case / "t2.nii.gz").get_fdata(), mask=case / "t1.nii.gz")


def test_evaluate_plain_array_beside_lps_metatensor_is_refused():
    from monai.data import MetaTensor

    head = synthetic_head()
    pred = MetaTensor(torch.from_numpy(head)[None], affine=torch.as_tensor(LPS))
    with pytest.raises(GridMismatchError, match=r"^mask: .*stored LPS"):
        evaluate(pred, pred, mask=head > 0)
    with pytest.raises(GridMismatchError, match=r"^ref: "):
        evaluate(pred, torch.from_numpy(head), mask=head > 0)


def test_evaluate_plain_arrays_and_ras_files_still_work(tmp_path):
    head = synthetic_head()
    other = synthetic_head(seed=1)
    plain = evaluate(other, head, mask=head > 0)  # no affine anywhere: all taken as RAS
    ras_file = write_nifti(tmp_path / "ref.nii.gz", head)  # identity affine: RAS, nothing to reorient
    mixed = evaluate(other, ras_file, mask=head > 0)
    assert mixed["ssim"] == pytest.approx(plain["ssim"]) and mixed["mae"] == pytest.approx(plain["mae"])
    # files stored LPS, scored with files only: the same numbers
    lps_ref = write_nifti(tmp_path / "ref_lps.nii.gz", head[::-1, ::-1].copy(), LPS)
    lps_pred = write_nifti(tmp_path / "pred_lps.nii.gz", other[::-1, ::-1].copy(), LPS)
    lps_mask = write_nifti(tmp_path / "mask_lps.nii.gz", (head[::-1, ::-1] > 0).astype(np.uint8), LPS)
    assert evaluate(lps_pred, lps_ref, mask=lps_mask)["ssim"] == pytest.approx(plain["ssim"], abs=1e-6)
    with pytest.raises(GridMismatchError):
        evaluate(other, lps_ref, mask=lps_mask)


# ----- model files that are not PyTorch files -------------------------------------------------------------
def _torch_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(64)}, buffer)
    return buffer.getvalue()


NOT_TORCH = {
    "text": b"this is not a model\n",
    "text_pickle_like": b"(lp0\nI1\naI2\na.",  # a protocol-0 pickle: parses as text, not a torch file
    "empty": b"",
    "truncated": _torch_bytes()[:200],
    "pickle": pickle.dumps([1, 2], protocol=4),  # a binary pickle, not torch.save's archive
}


def _written(output: Path) -> set[str]:
    """What a refused predict left in its output folder (the model is loaded before the manifest is written)."""
    return {p.name for p in output.iterdir()} if output.exists() else set()


def _assert_one_line_error(capsys, code: int, name: str) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("monai-t1t2: error: ") and name in lines[0], lines[0]
    assert "Traceback" not in captured.err and "weights_only=False" not in captured.err
    assert "weights_only" not in captured.err
    return lines[0]


@pytest.fixture
def text_bundle(tmp_path) -> Path:
    """A copy of the shipped bundle's configs whose models/model.pt is not a PyTorch file."""
    bundle = tmp_path / "bundle"
    shutil.copytree(REPO / "bundles" / "t1t2_translation" / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    return bundle


@pytest.mark.parametrize("kind", sorted(NOT_TORCH))
def test_predict_with_a_bundle_whose_weights_are_not_torch(text_bundle, tmp_path, capsys, kind):
    weights = text_bundle / "models" / "model.pt"
    weights.write_bytes(NOT_TORCH[kind])
    output = tmp_path / "out"
    for model in (text_bundle, weights):
        code = main(["predict", str(SAMPLE_T1), "-o", str(output), "--model", str(model), "--device", "cpu"])
        line = _assert_one_line_error(capsys, code, str(weights))
        assert "not a PyTorch weight file" in line
        assert not _written(output)


def test_predict_with_a_text_checkpoint(tmp_path, capsys):
    checkpoint = tmp_path / "last.ckpt"
    checkpoint.write_text("this is not a checkpoint\n")
    output = tmp_path / "out"
    code = main(["predict", str(SAMPLE_T1), "-o", str(output), "--model", str(checkpoint), "--device", "cpu"])
    assert "not a PyTorch weight file" in _assert_one_line_error(capsys, code, str(checkpoint))
    assert not _written(output)


def test_predict_bare_pt_is_refused_and_help_says_what_it_takes(tmp_path, capsys):
    bare = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(4)}, bare)
    code = main(["predict", str(SAMPLE_T1), "-o", str(tmp_path / "out"), "--model", str(bare), "--device", "cpu"])
    assert "no architecture" in _assert_one_line_error(capsys, code, str(bare))
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "bundle folder" in help_text and ".ckpt" in help_text and "bare .pt" in help_text


@pytest.mark.parametrize("kind", sorted(NOT_TORCH))
def test_parcellate_with_a_garbage_pt(tmp_path, capsys, kind):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(NOT_TORCH[kind])
    output = tmp_path / "out" / "labels.nii.gz"
    code = main(["parcellate", str(SAMPLE_T1), "-o", str(output), "--model", str(garbage)])
    assert "not a PyTorch weight file" in _assert_one_line_error(capsys, code, str(garbage))
    assert not output.parent.exists() or not any(output.parent.iterdir())


def test_read_torch_file_raises_t1t2error(tmp_path):
    from monai_t1t2.io import read_torch_file

    path = tmp_path / "model.pt"
    expected = {"text": "it is text", "text_pickle_like": "it is text", "empty": "the file is empty",
                "truncated": "truncated or damaged zip archive", "pickle": "not a PyTorch weight file ("}
    for kind, content in NOT_TORCH.items():
        path.write_bytes(content)
        for weights_only in (True, False):
            with pytest.raises(T1T2Error) as caught:
                read_torch_file(path, weights_only=weights_only)
            message = str(caught.value)
            assert message.startswith(f"{path}: not a PyTorch weight file (") and expected[kind] in message, message
            assert "\n" not in message and "weights_only" not in message
