import subprocess
import sys

from conftest import write_nifti
from monai_t1t2.cli import build_parser, main


def test_help_lists_subcommands():
    text = build_parser().format_help()
    for command in ("qc", "train", "parcellate", "predict", "evaluate", "prepare-pairs", "import-brainchop"):
        assert command in text


def test_user_error_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "missing.nii.gz"
    result = subprocess.run([sys.executable, "-m", "monai_t1t2.cli", "qc", str(missing), "--report", str(tmp_path / "r.json")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0]
