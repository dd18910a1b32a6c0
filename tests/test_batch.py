"""Translating a collection: failure isolation, manifest, resume after a kill, HTML report, 2-process sharding."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import synthetic_head, tiny_translation_bundle, write_nifti
from monai_t1t2 import quality as qc
from monai_t1t2.inference import batch
from monai_t1t2.cli import main
from monai_t1t2.hardware import native_bf16

# 4.5 mm voxels: a 40 x 40 x 30 synthetic head is an adult-sized brain (1.2 l), so it passes the
# plausibility gate, and it is small enough to translate in about 2 s with the tiny network.
PLAUSIBLE = np.diag([4.5, 4.5, 4.5, 1.0])


def plausible_head(seed: int) -> np.ndarray:
    return synthetic_head((40, 40, 30), seed=seed)


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    """A bundle folder with a tiny random-weight generator (nothing trained)."""
    return tiny_translation_bundle(tmp_path)


def make_collection(folder: Path, valid: int = 16, broken: bool = True) -> dict[str, Path]:
    """``valid`` plausible heads, then a text file, a truncated gzip, a 2D image and a noise-only volume."""
    files = {}
    for index in range(valid):
        files[f"sub-{index:02d}"] = write_nifti(folder / f"sub-{index:02d}.nii.gz", plausible_head(index), PLAUSIBLE)
    if broken:
        text = folder / "text.nii.gz"
        text.write_text("this is not a volume")
        truncated = folder / "truncated.nii.gz"
        whole = gzip.compress(nib.Nifti1Image(plausible_head(99), PLAUSIBLE).to_bytes())
        truncated.write_bytes(whole[: len(whole) // 2])
        flat = write_nifti(folder / "flat.nii.gz", np.ones((40, 40), np.float32))
        noise = write_nifti(folder / "noise.nii.gz", qc.simulate_noise_only((40, 40, 30), 10.0), PLAUSIBLE)
        files.update(text=text, truncated=truncated, flat=flat, noise=noise)
    return files


@pytest.mark.slow
def test_a_collection_with_broken_files_and_a_reject(tmp_path, tiny_model, capsys):
    make_collection(tmp_path / "in")
    out = tmp_path / "out"
    report = tmp_path / "report.html"
    code = main(["predict", str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model), "--device", "cpu",
                 "--report", str(report)])
    assert code == 1, "some inputs failed, others were translated"
    streams = capsys.readouterr()
    assert len([line for line in streams.err.splitlines() if line.startswith("monai-t1t2: error:")]) == 4
    assert "20 inputs: 16 translated, 0 already done, 1 rejected by QC, 3 failed" in streams.out
    assert sorted(p.name for p in out.glob("*_synT2.nii.gz")) == [f"sub-{i:02d}_synT2.nii.gz" for i in range(16)]
    rows = json.loads((out / "manifest.json").read_text())
    assert len(rows) == 20
    reasons = {Path(r["input"]).name: r["error"] for r in rows if r["status"] in ("failed", "rejected")}
    assert set(reasons) == {"text.nii.gz", "truncated.nii.gz", "flat.nii.gz", "noise.nii.gz"}
    assert all(name in reason for name, reason in reasons.items())
    assert "refused" in reasons["noise.nii.gz"] and "noise only" in reasons["noise.nii.gz"]
    for row in rows:
        assert {"input", "input_sha256", "output", "status", "device", "seconds"} <= set(row)
    translated = [r for r in rows if r["status"] == "translated"]
    assert all(r["qc_passed"] and 700 < r["brain_ml"] < 2200 for r in translated)
    # The report: rejects first, one table row per input, a thumbnail per readable input.
    page = report.read_text()
    assert page.count("<tr class=") == 20 and page.index("noise.nii.gz") < page.index("sub-00.nii.gz")
    assert page.count("data:image/png;base64,") == 17  # 16 translations and the rejected noise volume
    # Rerun: nothing left to do, everything already done is skipped; exit still 1 for the 4 bad inputs.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_synT2.nii.gz")}
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"]) == 1
    assert "16 already done" in capsys.readouterr().out
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*_synT2.nii.gz")}


def test_inputs_as_globs_datalists_and_csv_manifest(tmp_path, tiny_model, capsys):
    files = make_collection(tmp_path / "in", valid=2, broken=False)
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"test": [{"t1": "in/sub-01.nii.gz"}], "other": [{"image": "in/sub-00.nii.gz"}]}))
    assert [p.name for p in batch.collect_inputs([str(tmp_path / "in" / "*.nii.gz")])] == ["sub-00.nii.gz", "sub-01.nii.gz"]
    assert [p.name for p in batch.collect_inputs([datalist])] == ["sub-01.nii.gz"]
    assert [p.name for p in batch.collect_inputs([datalist], datalist_key="other")] == ["sub-00.nii.gz"]
    assert [p.name for p in batch.collect_inputs([files["sub-00"], tmp_path / "in"])] == ["sub-00.nii.gz", "sub-01.nii.gz"]
    with pytest.raises(Exception, match="matches no file"):
        batch.collect_inputs([str(tmp_path / "nothing*.nii.gz")])
    manifest = tmp_path / "rows.csv"
    assert main(["predict", str(datalist), "-o", str(tmp_path / "out"), "--model", str(tiny_model), "--device", "cpu",
                 "--manifest", str(manifest)]) == 0
    rows = batch.read_manifest(manifest)
    assert len(rows) == 1 and rows[0]["status"] == "translated" and rows[0]["input"].endswith("sub-01.nii.gz")


@pytest.mark.slow
def test_killed_midway_a_rerun_finishes_the_rest_without_redoing(tmp_path, tiny_model):
    make_collection(tmp_path / "in", valid=12, broken=False)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "monai_t1t2", "predict", str(tmp_path / "in"), "-o", str(out),
               "--model", str(tiny_model), "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.json"
    deadline = time.time() + 240
    done = []
    while time.time() < deadline and process.poll() is None:
        try:
            done = [r for r in json.loads(manifest.read_text()) if r["status"] == "translated"]
        except (OSError, json.JSONDecodeError):
            done = []
        if len(done) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 3 <= len(done) < 12, "killed midway"
    finished = {Path(r["output"]).name: Path(r["output"]).stat().st_mtime_ns for r in done}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(manifest.read_text())
    assert len(rows) == 12 and {r["status"] for r in rows} <= {"translated", "skipped"}
    skipped = {Path(r["output"]).name for r in rows if r["status"] == "skipped"}
    assert set(finished) <= skipped, "what was done before the kill is not redone"
    assert all(Path(r["output"]).stat().st_mtime_ns == finished[Path(r["output"]).name] for r in rows
               if Path(r["output"]).name in finished)
    assert len(list(out.glob("*_synT2.nii.gz"))) == 12


def test_foreign_output_is_refused_before_any_work_and_other_model_outputs_too(tmp_path, tiny_model, capsys):
    files = make_collection(tmp_path / "in", valid=1, broken=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub-00_synT2.nii.gz").write_bytes(b"someone else's file")
    args = ["predict", str(files["sub-00"]), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"]
    assert main(args) == 2
    assert "sub-00_synT2.nii.gz: exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    # The same output under another model is not "complete": refused unless --overwrite.
    other = tmp_path / "other.pt"
    import torch

    state = torch.load(tiny_model / "models" / "model.pt")
    torch.save({k: v + 0.01 for k, v in state.items()}, other)
    shutil.copytree(tiny_model, tmp_path / "bundle2")
    shutil.copy(other, tmp_path / "bundle2" / "models" / "model.pt")
    assert main(["predict", str(files["sub-00"]), "-o", str(out), "--model", str(tmp_path / "bundle2"), "--device", "cpu"]) == 2
    assert "from another input or model" in capsys.readouterr().err


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_report_renders_in_a_headless_browser(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium installed (.ci/run installs Debian's chromium)")
    from monai.data import MetaTensor
    import torch

    head = plausible_head(0)
    t1 = MetaTensor(torch.from_numpy(head)[None], affine=torch.as_tensor(PLAUSIBLE))
    batch._thumbnail(t1, t1 * 0.5, tmp_path, tmp_path / "a.nii.gz")
    rows = [{"input": str(tmp_path / "a.nii.gz"), "output": "a_synT2.nii.gz", "status": "translated", "brain_ml": 1206.5},
            {"input": str(tmp_path / "b.nii.gz"), "status": "failed", "error": "b.nii.gz: not a volume"}]
    report = batch.write_report(rows, tmp_path / "report.html", tmp_path)
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", report.as_uri()],
                            capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert "<table" in dom and dom.count("<tr class=") == 2, result.stderr[-2000:]
    images = re.search(r'data-images="(\d+)" data-images-loaded="(\d+)"', dom)
    assert images and images.group(1) == images.group(2) == "1", "the thumbnail decoded and rendered"
    assert dom.index("b.nii.gz: not a volume") < dom.index("a_synT2.nii.gz"), "failures first"


@pytest.mark.slow
def test_two_process_predict_shards_without_loss_or_duplication(tmp_path, tiny_model):
    make_collection(tmp_path / "in", valid=5, broken=False)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "monai_t1t2", "predict", str(tmp_path / "in"), "-o", str(out),
               "--model", str(tiny_model), "--device", "cpu", "--devices", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PL_DISABLE_FORK="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = json.loads((out / "manifest.json").read_text())
    inputs = [Path(r["input"]).name for r in rows]
    assert sorted(inputs) == [f"sub-{i:02d}.nii.gz" for i in range(5)], "every input exactly once"
    assert {r["rank"] for r in rows} == {0, 1}, "both ranks translated"
    assert len(list(out.glob("*_synT2.nii.gz"))) == 5
    assert not (out / batch.PARTS).exists() or not list((out / batch.PARTS).iterdir()), "the parts are merged"



def test_precision_from_the_command_line(tmp_path, tiny_model, capsys):
    files = make_collection(tmp_path / "in", valid=1, broken=False)
    common = [str(files["sub-00"]), "--model", str(tiny_model), "--device", "cpu"]
    with pytest.raises(SystemExit):  # argparse's choices
        main(["predict", *common, "-o", str(tmp_path / "bad"), "--precision", "fp16"])
    assert "bf16-mixed" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    # bfloat16 where the CPU computes it; elsewhere (AVX2 only) float32 with one warning line, recorded as such.
    assert main(["predict", *common, "-o", str(tmp_path / "mixed"), "--precision", "bf16-mixed"]) == 0
    native = native_bf16("cpu")
    recorded = json.loads((tmp_path / "mixed" / "sub-00_synT2.json").read_text())["NetworkPrecision"]
    assert recorded == ("bf16-mixed" if native else "32-true")
    assert ("no native bfloat16" in capsys.readouterr().err) is not native
    # The Python entry point refuses an unknown precision before any output folder is made.
    from monai_t1t2.inference.batch import run_batch
    from monai_t1t2.errors import T1T2Error

    with pytest.raises(T1T2Error, match="--precision fp16"):
        run_batch([files["sub-00"]], tmp_path / "bad", model=tiny_model, device="cpu", precision="fp16")
    assert not (tmp_path / "bad").exists()


def test_mirror_averaging_from_the_command_line(tmp_path, tiny_model, capsys):
    import torch

    weights = torch.load(tiny_model / "models" / "model.pt")
    weights["gate"] = torch.ones_like(weights["gate"])  # the residual head on: a network that is not mirror-symmetric
    torch.save(weights, tiny_model / "models" / "model.pt")
    files = make_collection(tmp_path / "in", valid=1, broken=False)
    common = [str(files["sub-00"]), "--model", str(tiny_model), "--device", "cpu"]
    assert main(["predict", *common, "-o", str(tmp_path / "bad"), "--flip-axes", "3"]) != 0
    assert "--flip-axes [3]" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["predict", *common, "-o", str(tmp_path / "plain")]) == 0
    assert main(["predict", *common, "-o", str(tmp_path / "mirrored"), "--flip-axes", "0"]) == 0
    volumes, sidecars = {}, {}
    for name in ("plain", "mirrored"):
        volumes[name] = nib.load(str(tmp_path / name / "sub-00_synT2.nii.gz")).get_fdata()
        sidecars[name] = json.loads((tmp_path / name / "sub-00_synT2.json").read_text())
    assert sidecars["plain"]["MirrorAveragedAxes"] == [] and sidecars["mirrored"]["MirrorAveragedAxes"] == [0]
    # The average differs from the plain output and stays in the output's [0, 1] units.
    assert not np.allclose(volumes["plain"], volumes["mirrored"])
    assert volumes["mirrored"].min() >= 0 and volumes["mirrored"].max() <= 1
