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


def _predict_process(inputs: Path, out: Path, model: Path) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a ``predict`` run in its own process, on one thread."""
    command = [sys.executable, "-m", "monai_t1t2", "predict", str(inputs), "-o", str(out),
               "--model", str(model), "--device", "cpu"]
    return command, dict(os.environ, OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_killed_midway_a_rerun_finishes_the_rest_without_redoing(tmp_path, tiny_model):
    make_collection(tmp_path / "in", valid=12, broken=False)
    out = tmp_path / "out"
    command, env = _predict_process(tmp_path / "in", out, tiny_model)
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


# ----- issue 52, item 7: a readable report that names only outputs that exist -----------------
def _png_width(data: bytes) -> int:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big")


def test_report_thumbnails_are_readable_and_failed_rows_name_no_output(tmp_path, tiny_model, capsys):
    import base64

    make_collection(tmp_path / "in", valid=1)
    out, report = tmp_path / "out", tmp_path / "report.html"
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model), "--device", "cpu",
                 "--report", str(report)]) == 1
    capsys.readouterr()
    page = report.read_text()
    rows = re.findall(r"<tr class='(\w+)'>(.*?)</tr>", page, flags=re.S)
    assert len(rows) == 5
    for status, cells in rows:
        if status in ("rejected", "failed"):
            assert "_synT2" not in cells, f"a {status} row names an output that was never written: {cells[:300]}"
        else:
            assert "sub-00_synT2.nii.gz" in cells
    manifest = json.loads((out / "manifest.json").read_text())
    assert all((r["output"] is None) == (r["status"] in ("rejected", "failed")) for r in manifest)
    assert all(Path(r["output"]).is_file() for r in manifest if r["output"])
    # Thumbnails at their own size (not shrunk to a few dozen pixels a plane: 1080 px for 3 planes) and
    # enlarged on a click.
    images = re.findall(r"<img class='thumbnail'[^>]*src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 2, "the translation and the rejected noise volume"
    assert all(_png_width(base64.b64decode(data)) >= 1000 for data in images)
    widths = [int(w) for w in re.findall(r"img[^{}]*\{[^}]*\bwidth:\s*(\d+)px", page)]
    assert all(width >= 800 for width in widths), f"thumbnails shown shrunk: {widths}"
    assert "classList.toggle(\"zoomed\")" in page and "img.thumbnail.zoomed" in page


# ----- issue 52, item 6: parallel runs into one folder share the work ---------------------------
def _claim(target: Path, host: str, pid: int, age_s: float = 0.0) -> Path:
    claim = batch.claim_path(target)
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(json.dumps({"host": host, "pid": pid, "token": "someone", "since": "earlier"}))
    if age_s:
        os.utime(claim, (time.time() - age_s, time.time() - age_s))
    return claim


def test_claimed_outputs_are_left_to_their_live_run_and_dead_claims_taken_over(tmp_path, tiny_model, capsys):
    import socket

    files = make_collection(tmp_path / "in", valid=4, broken=False)
    out = tmp_path / "out"
    here = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claims = {"sub-00": _claim(out / "sub-00_synT2.nii.gz", here, os.getppid()),          # a live run here
              "sub-01": _claim(out / "sub-01_synT2.nii.gz", here, dead.pid),             # a killed run here
              "sub-02": _claim(out / "sub-02_synT2.nii.gz", "elsewhere", 4242, 3600.0),  # silent for an hour
              "sub-03": _claim(out / "sub-03_synT2.nii.gz", "elsewhere", 4242)}          # a live run elsewhere
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "4 inputs: 2 translated, 0 already done, 0 rejected by QC, 0 failed, 2 left to another run" in captured.out
    assert sorted(p.name for p in out.glob("*_synT2.nii.gz")) == ["sub-01_synT2.nii.gz", "sub-02_synT2.nii.gz"]
    assert captured.err.count("taking over the claim") == 2
    assert claims["sub-00"].exists() and claims["sub-03"].exists(), "a live run's claim is not ours to remove"
    assert not claims["sub-01"].exists() and not claims["sub-02"].exists(), "our claims are removed when done"
    rows = {Path(r["input"]).name: r for r in json.loads((out / "manifest.json").read_text())}
    assert [rows[f"sub-0{i}.nii.gz"]["status"] for i in range(4)] == ["claimed", "translated", "translated", "claimed"]
    assert f"pid {os.getppid()}" in rows["sub-00.nii.gz"]["claimed_by"]
    # The claiming run finishes (its rows land in the shared manifest), its claims go: a rerun has nothing left.
    claims["sub-00"].unlink()
    claims["sub-03"].unlink()
    assert main(["predict", str(files["sub-00"]), str(files["sub-03"]), "-o", str(out), "--model", str(tiny_model),
                 "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.glob("*_synT2.nii.gz")) == [f"sub-0{i}_synT2.nii.gz" for i in range(4)]
    assert not list(out.glob(".*.claim"))


def test_an_output_written_by_another_run_meanwhile_is_not_redone(tmp_path, tiny_model):
    from monai_t1t2.inference.translation import load_translator

    files = make_collection(tmp_path / "in", valid=1, broken=False)
    out = tmp_path / "out"
    target = batch.output_path(files["sub-00"], out)
    translator = load_translator(tiny_model, "cpu")
    settings = batch.Settings(output_dir=out, inputs=[files["sub-00"]])
    job = {"input": str(files["sub-00"]), "output": str(target), "input_sha256": batch._sha256(files["sub-00"]),
           "model_sha256": batch._sha256(tiny_model / "models" / "model.pt"), "sidecar": None}
    batch.translate_one(files["sub-00"], target, translator, settings)  # the other run, after this one looked
    written = target.stat().st_mtime_ns
    (row,) = batch._job_rows([job], settings, translator)
    assert row["status"] == "claimed" and row["claimed_by"] == "translated by another run"
    assert target.stat().st_mtime_ns == written


def _append_rows(manifest: str, name: str, count: int) -> None:
    for index in range(count):
        batch.update_manifest([{"input": f"/data/{name}-{i}.nii.gz", "status": "translated", "output": f"/o/{name}-{i}"}
                               for i in range(index + 1)], Path(manifest))


def test_manifest_rows_of_parallel_runs_are_merged_not_lost(tmp_path):
    import multiprocessing

    manifest = tmp_path / "manifest.json"
    context = multiprocessing.get_context("fork")
    runs = [context.Process(target=_append_rows, args=(str(manifest), name, 15)) for name in ("a", "b")]
    for run in runs:
        run.start()
    for run in runs:
        run.join(60)
    assert all(run.exitcode == 0 for run in runs)
    rows = json.loads(manifest.read_text())
    assert sorted(r["input"] for r in rows) == sorted(f"/data/{n}-{i}.nii.gz" for n in "ab" for i in range(15))
    # One row per input: a later row replaces, a "claimed" row never does, a failure names no output.
    batch.update_manifest([{"input": "/data/a-0.nii.gz", "status": "claimed", "output": "/o/a-0", "claimed_by": "x"},
                           {"input": "/data/a-1.nii.gz", "status": "failed", "output": "/o/a-1", "error": "gone"},
                           {"input": "/data/c.nii.gz", "status": "claimed", "output": "/o/c", "claimed_by": "x"}],
                          manifest, order=["/data/c.nii.gz"])
    rows = json.loads(manifest.read_text())
    by_input = {r["input"]: r for r in rows}
    assert len(rows) == 31 and rows[0]["input"] == "/data/c.nii.gz"
    assert by_input["/data/a-0.nii.gz"]["status"] == "translated"
    assert by_input["/data/a-1.nii.gz"]["status"] == "failed" and by_input["/data/a-1.nii.gz"]["output"] is None
    assert by_input["/data/c.nii.gz"]["status"] == "claimed"
    # A CSV manifest merges too, its reasons kept as they were written.
    table = tmp_path / "rows.csv"
    batch.update_manifest([{"input": "/d/x.nii.gz", "status": "rejected", "qc_reasons": ["QC: a", "QC: b"]}], table)
    batch.update_manifest([{"input": "/d/y.nii.gz", "status": "translated", "output": "/o/y"}], table)
    rows = batch.read_manifest(table)
    assert [r["input"] for r in rows] == ["/d/x.nii.gz", "/d/y.nii.gz"] and rows[0]["qc_reasons"] == "QC: a; QC: b"


@pytest.mark.slow
def test_two_predict_runs_on_one_folder_translate_each_input_once(tmp_path, tiny_model):
    make_collection(tmp_path / "in", valid=8, broken=False)
    out = tmp_path / "out"
    command, env = _predict_process(tmp_path / "in", out, tiny_model)
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in results]
    translated = [int(re.search(r"(\d+) translated", stdout).group(1)) for stdout, _ in results]
    assert sum(translated) == 8, f"each input translated once over both runs, not {translated}"
    rows = json.loads((out / "manifest.json").read_text())
    assert len(rows) == 8 and all(r["status"] in ("translated", "skipped") for r in rows), rows
    assert not list(out.glob(".*.claim"))


# ----- issue 52, item 8: progress while volumes are translated ---------------------------------
def test_predict_and_the_bundle_run_show_progress_per_volume(tmp_path, tiny_model, capsys, monkeypatch):
    from monai_t1t2 import progress
    from monai_t1t2.inference.translation import load_translator

    make_collection(tmp_path / "in", valid=2, broken=False)
    # Off a terminal (a log, a pipe, this test): one plain line per volume, no bar.
    assert main(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_model),
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "\r" not in err and len(lines) == 2, err
    assert re.fullmatch(r"monai-t1t2: translating 1/2: .*sub-00\.nii\.gz: translated in \d+\.\d s", lines[0])
    # The bundle's run step, the same.
    batch.translate_folder(tmp_path / "in", tmp_path / "bundle_out", model=tiny_model, device="cpu")
    assert len([line for line in capsys.readouterr().err.splitlines() if "translating" in line]) == 2
    # On a terminal: a bar over the volumes and MONAI's bar over each volume's sliding windows.
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: True)
    translator = load_translator(tiny_model, "cpu")
    batch.translate_files([tmp_path / "in" / "sub-00.nii.gz"], tmp_path / "terminal", model=translator)
    err = capsys.readouterr().err
    assert "translating" in err and "volume" in err
    windows = re.findall(r"(\d+)/(\d+) \[", err)
    assert any(total != "1" for _, total in windows), f"no sliding-window bar: {err[-500:]}"
    assert translator.inferer.progress is False, "the model's inferer is left as it was"
