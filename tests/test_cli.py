import subprocess
import sys

from conftest import write_nifti
from monai_t1t2.cli import main


def test_every_subcommand_dispatches_to_its_stage(capsys):
    """Each subcommand parses and answers --help with its own options (the stage's, not the top level's)."""
    import pytest

    own_option = {"qc": "--report", "parcellate": "--model", "predict": "--mask-method", "evaluate": "--ref",
                  "prepare-pairs": "--register", "import-brainchop": "source"}
    for command, option in own_option.items():
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert option in capsys.readouterr().out, command


def test_user_error_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "missing.nii.gz"
    result = subprocess.run([sys.executable, "-m", "monai_t1t2.cli", "qc", str(missing), "--report", str(tmp_path / "r.json")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0]


# ----- one rule for every output: never an input, location checked before any work -----------
import os  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import synthetic_head  # noqa: E402


def _one_line_error(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("monai-t1t2: error: ") and "\n" not in error, error
    return error


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_qc_report_never_replaces_an_input_even_with_overwrite(tmp_path, capsys, link):
    volume = write_nifti(tmp_path / "a.nii.gz", synthetic_head())
    before = volume.read_bytes()
    report = volume
    if link == "symlink":
        report = tmp_path / "link.json"
        report.symlink_to(volume)
    elif link == "hardlink":
        report = tmp_path / "hard.json"
        os.link(volume, report)
    assert main(["qc", str(volume), "--report", str(report), "--overwrite"]) == 2
    assert "is an input" in _one_line_error(capsys)
    assert volume.read_bytes() == before


@pytest.mark.parametrize("target", ["pred", "ref"])
def test_evaluate_json_never_replaces_an_input(tmp_path, capsys, target):
    head = synthetic_head()
    pred = write_nifti(tmp_path / "p.nii.gz", head)
    ref = write_nifti(tmp_path / "R" / "t2.nii.gz", np.where(head > 0, 200 - head, 0).astype(np.float32))
    chosen = {"pred": pred, "ref": ref}[target]
    before = chosen.read_bytes()
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--json", str(chosen), "--overwrite"]) == 2
    assert "is an input" in _one_line_error(capsys)
    assert chosen.read_bytes() == before


def test_output_locations_are_checked_before_any_work(tmp_path, capsys):
    volume = write_nifti(tmp_path / "a.nii.gz", synthetic_head())
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    # predict: an output folder that is a file, or that cannot be created, fails before the model is loaded
    # (no --model here, and no bundle weights are needed to get the error).
    assert main(["predict", str(volume), "-o", str(a_file), "--model", str(tmp_path / "no_model.pt")]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)
    assert main(["predict", str(volume), "-o", "/proc/monai-t1t2-x", "--model", str(tmp_path / "no_model.pt")]) == 2
    assert "cannot write here" in _one_line_error(capsys)
    # qc: a report in a folder that cannot be made fails before any volume is measured
    assert main(["qc", str(volume), "--report", str(a_file / "r.json")]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)
    assert main(["qc", str(volume), "--report", "/proc/monai-t1t2-x/r.json"]) == 2
    assert "cannot write here" in _one_line_error(capsys)
    assert main(["qc", str(volume), "--report", str(tmp_path)]) == 2
    assert "is a folder" in _one_line_error(capsys)
    assert not list(tmp_path.glob(".monai-t1t2-write-check.*")), "the write probe leaves nothing behind"


# ----- issue 52, item 8: --version, and every option says what it does ------------------------
def test_version_prints_the_version_and_exits_0(capsys):
    import monai_t1t2

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"monai-t1t2 {monai_t1t2.__version__}"


def test_every_option_of_every_subcommand_has_help_text():
    import argparse

    from monai_t1t2.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    silent = [f"{name} {action.option_strings[0]}" for name, sub in subparsers.choices.items()
              for action in sub._actions
              if action.option_strings and not isinstance(action, argparse._HelpAction) and not action.help]
    assert silent == [], f"options without help text: {silent}"
