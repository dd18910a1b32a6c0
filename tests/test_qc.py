"""``monai-t1t2 qc`` over a collection: a broken file is recorded and the others are measured (issue 52, item 5)."""

from __future__ import annotations

import json

from conftest import padded_head, write_nifti
from monai_t1t2.cli import main
from monai_t1t2 import quality


def test_qc_records_a_broken_file_and_goes_on(tmp_path, capsys):
    broken = tmp_path / "broken.nii.gz"
    broken.write_text("this is not a volume")
    good = write_nifti(tmp_path / "good.nii.gz", padded_head())
    noise = write_nifti(tmp_path / "noise.nii.gz", quality.simulate_noise_only(padded_head().shape, 10.0))
    missing = tmp_path / "missing.nii.gz"
    report = tmp_path / "q.json"
    code = main(["qc", str(broken), str(good), str(missing), str(noise), "--report", str(report), "--expect", "any"])
    assert code == 1, "some inputs could not be read, others could: exit 1, as predict"
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("monai-t1t2: error:")]
    assert len(errors) == 2 and str(broken) in errors[0] and str(missing) in errors[1]
    assert "Traceback" not in captured.err
    assert "4 volumes, 1 passed, 1 rejected, 2 unreadable" in captured.out
    rows = {row["path"]: row for row in json.loads(report.read_text())}
    assert list(rows) == [str(broken), str(good), str(missing), str(noise)], "input order kept"
    assert rows[str(good)]["passed"] and rows[str(good)]["error"] is None and rows[str(good)]["metrics"]
    assert not rows[str(noise)]["passed"] and rows[str(noise)]["error"] is None
    for path in (broken, missing):
        row = rows[str(path)]
        assert not row["passed"] and str(path) in row["error"] and "\n" not in row["error"]
        assert row["reasons"] == [row["error"]]


def test_qc_where_nothing_can_be_read_is_one_line_per_file_and_exit_2(tmp_path, capsys):
    for name in ("a.nii.gz", "b.nii.gz"):
        (tmp_path / name).write_bytes(b"not a volume")
    report = tmp_path / "q.json"
    assert main(["qc", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz"), "--report", str(report)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("monai-t1t2: error: ") for line in lines)
    assert not report.exists(), "nothing was measured: no report"


def test_qc_progress_is_one_line_per_volume_off_a_terminal(tmp_path, capsys):
    write_nifti(tmp_path / "in" / "a.nii.gz", padded_head())
    write_nifti(tmp_path / "in" / "b.nii.gz", padded_head(1))
    assert main(["qc", str(tmp_path / "in"), "--report", str(tmp_path / "q.json"), "--expect", "any"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err, "no bar drawn into a log"
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("monai-t1t2: qc 1/2: ") and lines[1].endswith("b.nii.gz: passed")
