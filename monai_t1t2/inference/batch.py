"""Translating a whole collection: ``monai-t1t2 predict`` over many volumes, on one or many devices.

- **Inputs** are files, folders (searched recursively), glob patterns and MONAI datalist JSON files
  (the ``test`` list, or the key the user names; items give the T1 as ``t1`` or ``image``).
- **Failure isolation**: an input that cannot be read, fails validation or is rejected by QC is
  recorded (path and a one-line reason) and skipped; the batch goes on. Exit status: 0 when every
  input was translated (or was already), 1 when some failed and others did not, 2 when none could
  be translated (so a single bad file still ends with exit 2 and one line, as every command does).
- **Resumable**: outputs are atomic, and their provenance sidecar (written first) records the
  input's and the model's SHA-256; a rerun skips an input whose output and sidecar exist and match
  (``overwrite`` redoes it). An output this package did not write, or wrote from another input or
  model, is refused before any work unless ``overwrite``.
- **Manifest** (``manifest``: ``.json`` list or ``.csv``; default ``OUT/manifest.json``): one row per
  input, rewritten atomically after every input, so a killed batch keeps what it did.
- **QC gate** (``qc``): ``reject`` (default) does not translate an input that fails
  :func:`monai_t1t2.quality.input_problems`; ``flag`` translates it and records the reasons; ``off``
  skips the checks.
- **Many devices and nodes**: ``devices > 1`` or ``num_nodes > 1`` run Lightning's ``Trainer.predict``
  (DDP; under SLURM ``srun`` and ``torchrun`` too): each rank translates the inputs ``rank::world``
  (no input duplicated or lost, unlike a padded ``DistributedSampler``) and writes its own manifest
  part; rank 0 merges them.
- **Report** (``report``: ``.html``): one self-contained page: the manifest table with a three-plane
  thumbnail of each input and its synthetic T2, QC rejects and failures first, with their reasons.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import glob
import html
import io as _io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from monai.data import MetaTensor

import monai_t1t2
from monai_t1t2.errors import DatasetError, InvalidVolumeError, OutputExistsError, T1T2Error
from monai_t1t2.inference.translation import (
    StageClock,
    tails_calibrated,
    Translator,
    _as_mask,
    check_memory,
    check_precision,
    check_uncertainty,
    load_translator,
    memory_problem,
    model_file,
    resolve_device,
    save_translation_png,
    translate,
)
from monai_t1t2.io import (
    PathLike,
    atomic_write_text,
    check_output_dir,
    check_output_path,
    file_sha256,
    is_volume_file,
    read_datalist,
    read_volume,
    spacing_of,
    volume_stem,
    write_volume,
)
from monai_t1t2.nets.generators import patch_inferer
from monai_t1t2.masks import MASK_METHODS, brain_mask, mask_volume_ml, resolve_mask_method
from monai_t1t2.quality import brain_volume_problems, image_problems, t1_contrast_problems

QC_MODES = ("reject", "flag", "off")
THUMBNAILS = ".thumbnails"
THUMBNAIL_DPI = 120  # the report's thumbnails: 1080 px wide, each plane about 260-340 px
PARTS = ".manifest-parts"
WRITTEN = ("translated", "skipped")  # the statuses whose row names an output that exists
MANIFEST_FIELDS = ("input", "input_sha256", "output", "status", "qc_passed", "qc_reasons", "brain_ml", "mask_method",
                   "predicted_ssim", "device", "seconds", "error")


class InputRejected(T1T2Error):
    """An input that QC or the plausibility checks reject (not translated in ``qc="reject"`` mode)."""


# ----------------------------------------------------------------------------- inputs
def _datalist_t1s(path: Path, key: str) -> list[Path]:

    found = []
    items = read_datalist(path, key)
    for index, item in enumerate(items):
        value = item.get("t1", item.get("image")) if isinstance(item, dict) else item
        if not value:
            raise DatasetError(f"{path}: item {index} of '{key}' has no 't1' (or 'image')")
        found.append(Path(value))
    return found


def collect_inputs(items: Sequence[PathLike], datalist_key: str = "test", exclude_dir: Path | None = None,
                   series_uid: str | None = None) -> list[Path]:
    """Expand files, folders, glob patterns and datalist JSON files into an ordered list without repeats.

    A named file that does not exist is kept (the batch records it as failed); a glob that matches
    nothing, an empty folder or a bad datalist is an error before any work. A named folder that holds
    a DICOM series is one input, checked from its headers before any work (several series and no
    ``series_uid``, not MR, a localizer, missing slices, a gantry tilt: an error naming the folder);
    the series folders found below a named folder are inputs beside its volume files (checked when
    read; with ``series_uid``, only the folders that hold that series).
    Volumes inside ``exclude_dir`` ending in ``_synT2`` (earlier outputs) are left out of folder searches.
    """
    from monai_t1t2.dicom import holds_dicom, series_uids, validate_series_folder
    from monai_t1t2.io import volumes_in_folder

    def earlier_output(found: Path) -> bool:
        return (exclude_dir is not None and volume_stem(found).endswith((OUTPUT_SUFFIX, OUTPUT_SUFFIX + DICOM_SUFFIX))
                and found.resolve().parent == exclude_dir.resolve())

    found: list[Path] = []
    for item in map(str, items):
        path = Path(item)
        if path.suffix.lower() == ".json" and path.is_file():
            found += _datalist_t1s(path, datalist_key)
        elif path.is_dir() and holds_dicom(path):
            validate_series_folder(path, series_uid)
            found.append(path)
        elif path.is_dir():
            in_folder = [p for p in volumes_in_folder(path) if not earlier_output(p)]
            if series_uid is not None:
                in_folder = [p for p in in_folder if p.is_file() or series_uid in series_uids(p)]
            if not in_folder:
                raise InvalidVolumeError(f"{path}: folder holds no volume (*.nii.gz, *.nii) and no DICOM series"
                                         + (f" {series_uid}" if series_uid is not None else ""))
            found += in_folder
        elif not path.exists() and any(c in item for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise InvalidVolumeError(f"{item}: the pattern matches no file")
            found += matches
        else:
            found.append(path)
    unique, seen = [], set()
    for path in found:
        key = str(path.resolve())
        if key not in seen:
            seen.add(key)
            unique.append(path)
    if not unique:
        raise T1T2Error("no T1 volume to translate")
    return unique


# ----------------------------------------------------------------------------- one input
@dataclass
class Settings:
    """What every input of a batch is translated with."""

    output_dir: Path
    model: Any = None
    device: str | None = None
    overlap: float | None = None
    sw_batch_size: int | None = None
    flip_axes: list[int] | None = None
    calibrate_tails: bool | None = None
    precision: str = "32-true"
    uncertainty: float | None = None
    png: bool = False
    overwrite: bool = False
    mask_method: str = "auto"
    mask: Path | None = None
    qc: str = "reject"
    thumbnails: bool = False
    inputs: list[Path] = field(default_factory=list)
    series_uid: str | None = None
    dicom_out: bool = False
    bids_root: Path | None = None


def translate_one(path: Path, target: Path, translator, settings: Settings) -> dict[str, Any]:
    """Translate one file into ``target`` with its sidecar (and PNG, thumbnail); return its manifest row.

    Raises:
        InputRejected: ``qc="reject"`` and the input fails the plausibility checks.
        T1T2Error: the input cannot be read or is invalid.
    """

    started = time.time()
    stages: dict[str, float] = {}
    clock = StageClock(stages)
    t1 = read_volume(path, settings.series_uid)
    clock.lap("read")
    # The cheap checks first: an input QC refuses is refused before the brain-mask network runs over it.
    problems = image_problems(t1) if settings.qc != "off" else []
    clock.lap("qc")
    if problems and settings.qc == "reject":
        mask, method = None, None
    elif settings.mask is not None:
        mask, method = _as_mask(settings.mask, t1), f"file {settings.mask}"
    else:
        method = resolve_mask_method(t1, settings.mask_method)
        mask = brain_mask(t1, method, translator.device)
    clock.lap("mask")
    if mask is not None and settings.qc != "off":
        problems = brain_volume_problems(mask, spacing_of(t1.affine)) + problems
        if not problems or settings.qc == "flag":  # the contrast check may parcellate: only when still needed
            problems += t1_contrast_problems(t1, mask)
            clock.lap("contrast")
    row = {"input": str(path), "output": str(target), "mask_method": method, "device": str(translator.device),
           "brain_ml": round(mask_volume_ml(mask, spacing_of(t1.affine)), 1) if mask is not None else None,
           "qc_passed": not problems if settings.qc != "off" else None, "qc_reasons": problems}
    if problems and settings.qc == "reject":
        if settings.thumbnails:
            _thumbnail(t1, None, settings.output_dir, path)
        rejected = InputRejected(f"{path}: refused, not a plausible brain T1: {'; '.join(problems)} "
                                 "(pass --force or --qc flag to translate it anyway)")
        rejected.row = row
        raise rejected
    if problems:
        print(f"monai-t1t2: warning: {path}: translated although {'; '.join(problems)}", file=sys.stderr)
    result = translate(t1, translator, mask=mask, overlap=settings.overlap, sw_batch_size=settings.sw_batch_size,
                       stages=stages, flip_axes=settings.flip_axes, calibrate_tails=settings.calibrate_tails,
                       precision=settings.precision, uncertainty=settings.uncertainty)
    synthetic, bounds = (result[0], result[1:]) if settings.uncertainty is not None else (result, ())
    predicted = float(synthetic.meta["predicted_ssim"]) if bounds else None
    if bounds and translator.trust.out_of_range(predicted):
        print(f"monai-t1t2: warning: {path}: predicted SSIM {predicted:.2f} is below every calibration subject's "
              f"({translator.trust.ssim_range[0]:.2f}): not a T1 brain like those the model was made for? "
              "Do not use this output", file=sys.stderr)
    width = MetaTensor(bounds[1].as_tensor() - bounds[0].as_tensor(), affine=synthetic.affine) if bounds else None
    clock.reset()
    # The sidecar first: an output with a matching sidecar is complete; a sidecar alone is an interrupted
    # one. The synthetic T2 itself last, after its interval.
    dicom = _dicom_record(t1, target) if settings.dicom_out else None
    write_sidecar(target, path, translator, settings, method, problems, predicted,
                  extra={"DICOMOutput": dicom} if dicom else None)
    inputs = [*settings.inputs, *([settings.mask] if settings.mask else [])]
    for bound, bound_path, side in zip(bounds, interval_paths(target), ("lower", "upper")):
        write_volume(bound, bound_path, reference=path, overwrite=True, inputs=inputs,
                     descrip=f"synthetic T2w {side} {settings.uncertainty:g} bound, monai-t1t2 {monai_t1t2.__version__}",
                     intent_name=f"synthetic T2w {side}")
    if dicom:
        _write_dicom(synthetic, path, target, translator, settings, dicom)
    write_volume(synthetic, target, reference=path, overwrite=True, inputs=inputs,
                 descrip=f"synthetic T2w, monai-t1t2 {monai_t1t2.__version__}", intent_name="synthetic T2w")
    if settings.png:
        save_translation_png(t1, synthetic, target.with_name(f"{volume_stem(target)}.png"),
                             title=f"{path.name} -> synthetic T2" + (f", predicted SSIM {predicted:.2f}" if bounds else ""),
                             width=width, level=settings.uncertainty)
    clock.lap("write")
    if settings.thumbnails:
        _thumbnail(t1, synthetic, settings.output_dir, path, width, settings.uncertainty)
        clock.lap("thumbnail")
    if bounds:
        row["predicted_ssim"] = round(predicted, 4)
    row.update(status="translated", seconds=round(time.time() - started, 2), sidecar=str(sidecar_path(target)),
               stage_seconds={name: round(value, 3) for name, value in stages.items()})
    return row


def _thumbnail_path(output_dir: Path, path: Path) -> Path:

    return output_dir / THUMBNAILS / f"{volume_stem(output_path(path, output_dir))}.png"


def _thumbnail(t1, synthetic, output_dir: Path, path: Path, width=None, level: float | None = None) -> None:

    save_translation_png(t1, synthetic, _thumbnail_path(output_dir, path), width=width, level=level, dpi=THUMBNAIL_DPI)


def dicom_output_path(target: Path) -> Path:
    """``<stem>_synT2_dicom/`` beside ``<stem>_synT2.nii.gz``: the synthetic T2 as a DICOM series (``--dicom-out``)."""
    return target.with_name(f"{volume_stem(target)}{DICOM_SUFFIX}")


def _dicom_record(t1: MetaTensor, target: Path) -> dict[str, str]:
    """The sidecar's record of the derived DICOM series, its UID made before it is written."""
    from pydicom.uid import generate_uid

    return {"Folder": dicom_output_path(target).name, "SeriesInstanceUID": str(generate_uid()),
            "SourceSeriesInstanceUID": str(t1.meta.get("SeriesInstanceUID", ""))}


def _write_dicom(synthetic: MetaTensor, source: Path, target: Path, translator: Translator, settings: Settings,
                 record: dict[str, str]) -> Path:
    """The synthetic T2 as a new series in the DICOM input's study (:func:`monai_t1t2.dicom.write_derived_series`)."""
    from monai_t1t2.dicom import write_derived_series

    version = model_version(translator.source)
    model = f"{Path(translator.source).parent.parent.name} {version}" if version else Path(translator.source).name
    return write_derived_series(
        synthetic, source, dicom_output_path(target), series_uid=record["SourceSeriesInstanceUID"] or None,
        new_series_uid=record["SeriesInstanceUID"], description="SYNTHETIC T2w",
        comments=(f"SYNTHETIC T2-weighted image computed by monai-t1t2 {monai_t1t2.__version__} (model {model}) "
                  "from the T1-weighted series it references; not an acquisition; do not use for diagnosis alone"),
        software_versions=[f"monai-t1t2 {monai_t1t2.__version__}", f"model {model}"],
        derivation=(f"T1w to T2w translation by a neural network (monai-t1t2 {monai_t1t2.__version__}); "
                    f"model {model}, SHA-256 {_sha256(translator.source)}"),
        overwrite=True)


def interval_paths(target: Path) -> tuple[Path, Path]:
    """``<stem>_synT2_lower.nii.gz`` and ``<stem>_synT2_upper.nii.gz`` beside ``<stem>_synT2.nii.gz``."""
    stem = volume_stem(target)
    return target.with_name(f"{stem}_lower.nii.gz"), target.with_name(f"{stem}_upper.nii.gz")


# ----------------------------------------------------------------------------- resumable outputs
def output_state(target: Path, input_hash: str | None, model_hash: str | None) -> str:
    """``absent``, ``complete`` (ours, same input and model), ``interrupted`` (our sidecar, no volume),
    ``other`` (ours, from another input or model) or ``foreign`` (a file this package did not write)."""

    sidecar = sidecar_path(target)
    record = None
    if sidecar.is_file():
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            record = None
    if not target.exists():
        return "interrupted" if record is not None else "absent"
    if record is None or not record.get("SyntheticImage"):
        return "foreign"
    if record.get("SourceSHA256") == input_hash and record.get("ModelSHA256") == model_hash:
        return "complete"
    return "other"


# ----------------------------------------------------------------------------- manifest and report
def write_manifest(rows: Sequence[dict], path: Path) -> Path:
    """Rows as a JSON list or, for a ``.csv`` path, CSV (reasons joined by ``; ``); written atomically."""
    if path.suffix.lower() == ".csv":
        buffer = _io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            reasons = row.get("qc_reasons") or []
            writer.writerow({**row, "qc_reasons": reasons if isinstance(reasons, str) else "; ".join(reasons)})
        return atomic_write_text(buffer.getvalue(), path)
    return atomic_write_text(json.dumps(list(rows), indent=2) + "\n", path)


def read_manifest(path: Path) -> list[dict]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as stream:
            return list(csv.DictReader(stream))
    return json.loads(path.read_text())


def update_manifest(rows: Sequence[dict], path: Path, order: Sequence[PathLike] = ()) -> list[dict]:
    """Write this run's ``rows`` into the manifest at ``path``, keeping the rows other runs wrote there; return
    the manifest's rows.

    One row per input: a row of this run replaces the input's earlier row (a rerun's ``skipped`` replaces
    ``translated``), except a ``claimed`` row (an input another run holds or did), which only fills in for an
    input the manifest does not have yet. The read-merge-write holds a lock (``.<manifest name>.lock``
    beside it), so parallel runs into one folder neither lose nor repeat each other's rows, and the file is
    replaced atomically. This run's inputs come first, in ``order``; a failed or rejected row names no output.
    """
    from filelock import FileLock

    with FileLock(str(path.with_name(f".{path.name}.lock"))):
        merged = _merged_rows(_readable_manifest(path), rows)
        position = {str(Path(p).resolve()): index for index, p in enumerate(order)}
        merged.sort(key=lambda row: position.get(_row_key(row), len(position)))  # stable: others keep their order
        write_manifest(merged, path)
    return merged


def _row_key(row: dict) -> str:
    return str(Path(row["input"]).resolve())


def _readable_manifest(path: Path) -> list[dict]:
    """The rows of an existing manifest; none when there is none, or it is not one (it is replaced)."""
    try:
        rows = read_manifest(path) if path.is_file() else []
    except (OSError, ValueError, csv.Error):
        return []
    return [row for row in rows if isinstance(row, dict) and row.get("input")] if isinstance(rows, list) else []


def _merged_rows(existing: Sequence[dict], rows: Sequence[dict]) -> list[dict]:
    merged = list(existing)
    where = {_row_key(row): index for index, row in enumerate(merged)}
    for row in rows:
        if row.get("status") not in (*WRITTEN, "claimed"):
            row = {**row, "output": None}  # never written
        index = where.get(_row_key(row))
        if index is None:
            where[_row_key(row)] = len(merged)
            merged.append(row)
        elif row.get("status") != "claimed":
            merged[index] = row
    return merged


# ----------------------------------------------------------------------------- parallel runs: one claim per output
CLAIM_HEARTBEAT_SECONDS = 30.0
CLAIM_STALE_SECONDS = 600.0  # a claim not kept fresh for this long is a dead run's, wherever it ran
CLAIMS_LOCK = ".claims.lock"


def claim_path(target: Path) -> Path:
    """``.<output name>.claim`` beside the output ``target``: the claim of the run translating into it."""
    return target.with_name(f".{target.name}.claim")


class Claim:
    """This process's claim on one output: its claim file, kept fresh (its modification time, every
    :data:`CLAIM_HEARTBEAT_SECONDS`) while the work goes on, removed on release (``with claim: ...``)."""

    def __init__(self, path: Path, record: dict) -> None:
        import threading

        self.path, self.record = path, record
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._keep_fresh, name=f"claim {path.name}", daemon=True)
        self._heartbeat.start()

    def _keep_fresh(self) -> None:
        while not self._stop.wait(CLAIM_HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        self._heartbeat.join()
        if _claim_record(self.path) == self.record:  # not a claim another run has taken over since
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_output(target: Path) -> Claim | str:
    """Claim ``target`` for this process, or say who holds it.

    The claim file is created atomically (``O_CREAT | O_EXCL``) and records the host, PID and start of
    the claiming run; of two runs only one creates it. A claim is stale, and taken over with a warning,
    when its process is gone (same host, PID not running) or it has not been kept fresh for
    :data:`CLAIM_STALE_SECONDS` (a killed run on another host): a dead run never blocks a rerun for long.

    Returns:
        A :class:`Claim` to release when done, or a line naming the run that holds ``target``.
    """
    import datetime
    import socket
    import uuid

    path = claim_path(target)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
              "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(3):
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _break_stale_claim(path, target):
                continue
            holder = _claim_record(path) or {}
            return (f"claimed by {holder.get('host', 'another run')} pid {holder.get('pid', '?')} "
                    f"since {holder.get('since', '?')}")
        with os.fdopen(descriptor, "w") as stream:
            json.dump(record, stream)
        return Claim(path, record)
    return "claimed by another run"


def _claim_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # gone, or being written
    return record if isinstance(record, dict) else None


def _running_here(record: dict | None) -> bool:
    """False when ``record`` names a process of this host that is not running; True otherwise (elsewhere:
    unknown, the claim's age decides)."""
    import socket

    if record is None or record.get("host") != socket.gethostname():
        return True
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: running
    return True


def _break_stale_claim(path: Path, target: Path) -> bool:
    """Remove the claim at ``path`` if it is stale; True when there is none now. One breaker at a time (a
    lock beside it), so a fresh claim made meanwhile is never taken for the stale one."""
    from filelock import FileLock

    with FileLock(str(path.parent / CLAIMS_LOCK)):
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        record = _claim_record(path)
        if age <= CLAIM_STALE_SECONDS and _running_here(record):
            return False
        holder = f"{record.get('host')} pid {record.get('pid')}" if record else "an unfinished claim"
        print(f"monai-t1t2: warning: {target}: taking over the claim of {holder} "
              f"({'no longer running' if age <= CLAIM_STALE_SECONDS else f'silent for {age / 60:.0f} min'})",
              file=sys.stderr)
        path.unlink(missing_ok=True)
        return True


def _stamp(path: Path) -> tuple[int, int] | None:
    """(modification time, size) of a file, None when there is none: whether another run wrote it since."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def _status_order(row: dict) -> tuple[int, float]:
    """Rejects and failures first, then the translations from the lowest predicted SSIM (least to be trusted) up."""
    predicted = row.get("predicted_ssim")
    predicted = float(predicted) if predicted not in (None, "") else math.inf
    return {"rejected": 0, "failed": 1, "translated": 2, "skipped": 3}.get(row.get("status"), 4), predicted


def write_report(rows: Sequence[dict], path: Path, output_dir: Path, title: str = "monai-t1t2 batch") -> Path:
    """One self-contained HTML page: the manifest as a table with embedded thumbnails, rejects first, then
    the translations by their predicted SSIM, lowest first (``--uncertainty``: the thumbnail has a row with
    the interval's width). Thumbnails are shown at their own size (:data:`THUMBNAIL_DPI`: each plane about
    300 px) and fill the window when clicked; the output column names only outputs that were written (translated or already done)."""
    def image(row: dict) -> str:
        thumbnail = _thumbnail_path(output_dir, Path(row["input"]))
        if not thumbnail.is_file():
            return "<span class='none'>no image</span>"
        data = base64.b64encode(thumbnail.read_bytes()).decode("ascii")
        return (f"<img class='thumbnail' title='click to enlarge' alt='{html.escape(Path(row['input']).name)}' "
                f"src='data:image/png;base64,{data}'>")

    def output(row: dict) -> str:
        return str(row.get("output") or "") if row.get("status") in WRITTEN else ""

    counts = {status: sum(r.get("status") == status for r in rows)
              for status in ("translated", "skipped", "rejected", "failed", "claimed")}
    body = []
    for row in sorted(rows, key=_status_order):
        reasons = row.get("error") or "; ".join(row.get("qc_reasons") or []) or ""
        body.append(
            f"<tr class='{html.escape(str(row.get('status')))}'><td>{html.escape(str(row.get('status')))}</td>"
            f"<td class='path'>{html.escape(str(row['input']))}</td><td class='reason'>{html.escape(reasons)}</td>"
            f"<td>{html.escape(str('' if row.get('brain_ml') is None else row['brain_ml']))}</td>"
            f"<td>{html.escape(str('' if row.get('predicted_ssim') in (None, '') else row['predicted_ssim']))}</td>"
            f"<td>{html.escape(str(row.get('seconds', '')))}</td>"
            f"<td class='path'>{html.escape(output(row))}</td><td>{image(row)}</td></tr>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; font-size: 13px; }}
tr.rejected td, tr.failed td {{ background: #fde8e8; }} td.path {{ max-width: 16em; overflow-wrap: anywhere; }}
td.reason {{ max-width: 24em; }} img.thumbnail {{ cursor: zoom-in; }}
img.thumbnail.zoomed {{ position: fixed; top: 0; left: 0; width: 100vw; height: 100vh; object-fit: contain;
  background: rgba(0, 0, 0, 0.85); cursor: zoom-out; z-index: 10; }}
</style></head>
<body data-images="0" data-images-loaded="0">
<h1>{html.escape(title)}</h1>
<p id="summary">{len(rows)} inputs: {counts['translated']} translated, {counts['skipped']} already done,
{counts['rejected']} rejected by QC, {counts['failed']} failed{f", {counts['claimed']} left to another run" if counts['claimed'] else ""}.
Synthetic T2 images are not acquisitions.</p>
<table id="manifest"><thead><tr><th>status</th><th>input</th><th>reason</th><th>brain ml</th><th>predicted SSIM</th><th>seconds</th>
<th>output</th><th>T1 / synthetic T2</th></tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<script>
window.addEventListener("load", function () {{
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {{ if (images[i].complete && images[i].naturalWidth > 0) loaded++; }}
  document.body.dataset.images = images.length;
  document.body.dataset.imagesLoaded = loaded;
}});
// Click a thumbnail to see it filling the window; click again (or Escape) to put it back.
document.addEventListener("click", function (event) {{
  if (event.target.classList.contains("thumbnail")) event.target.classList.toggle("zoomed");
}});
document.addEventListener("keydown", function (event) {{
  if (event.key === "Escape") document.querySelectorAll("img.zoomed").forEach(function (i) {{ i.classList.remove("zoomed"); }});
}});
</script>
</body></html>
"""
    return atomic_write_text(page, path)


# ----------------------------------------------------------------------------- the batch
def _job_rows(jobs: Sequence[dict], settings: Settings, translator, on_row=None, progress: bool = False) -> list[dict]:
    """Run ``jobs`` (``{"input", "output", "input_sha256", "model_sha256", "sidecar"}``) one after the other,
    isolating failures, each under its claim (:func:`_claimed_job`); ``on_row(rows)`` after each (the
    incremental manifest). ``progress``: :class:`~monai_t1t2.progress.VolumeProgress` over the jobs and, on a
    terminal, MONAI's sliding-window bar over each volume's windows."""
    from monai_t1t2.progress import VolumeProgress

    rows = []
    with VolumeProgress(len(jobs), "translating", enabled=progress) as shown, _window_progress(translator, shown.terminal):
        for job in jobs:
            path, target = Path(job["input"]), Path(job["output"])
            started = time.time()
            row = _claimed_job(job, settings, translator)
            row = {"input": str(path), "output": str(target), "device": str(translator.device),
                   "seconds": round(time.time() - started, 2), **row, "input_sha256": job.get("input_sha256")}
            rows.append(row)
            status = row["status"] if row["status"] != "claimed" else f"left to another run ({row['claimed_by']})"
            shown.done(path, status, row["seconds"] if row["status"] == "translated" else None,
                       failed=row["status"] in ("rejected", "failed"))
            if on_row is not None:
                on_row(rows)
    return rows


def _claimed_job(job: dict, settings: Settings, translator) -> dict:
    """One job's row: translated under this run's claim on its output, or ``claimed`` when another run holds
    that output or wrote it since this run looked (parallel runs into one folder share the work)."""
    path, target = Path(job["input"]), Path(job["output"])
    claim = claim_output(target)
    if not isinstance(claim, Claim):
        return {"status": "claimed", "error": None, "claimed_by": claim}
    with claim:
        sidecar = _stamp(sidecar_path(target))
        if (sidecar != job.get("sidecar") and output_state(target, job.get("input_sha256"), job.get("model_sha256")) == "complete"
                and (settings.uncertainty is None or all(p.is_file() for p in interval_paths(target)))):
            return {"status": "claimed", "error": None, "claimed_by": "translated by another run"}
        try:
            return translate_one(path, target, translator, settings)
        except InputRejected as err:
            print(f"monai-t1t2: error: {err}", file=sys.stderr)
            return {"status": "rejected", "error": str(err), "qc_passed": False, **getattr(err, "row", {})}
        except T1T2Error as err:
            print(f"monai-t1t2: error: {err}", file=sys.stderr)
            return {"status": "failed", "error": str(err)}


@contextlib.contextmanager
def _window_progress(translator, shown: bool):
    """MONAI's sliding-window progress bar (``SlidingWindowInferer(progress=True)``) on the translator's
    inferer while the batch runs, then back as it was: a bar that moves while one volume is translated."""
    window = getattr(getattr(translator, "inferer", None), "inferer", getattr(translator, "inferer", None))
    before = getattr(window, "progress", None)
    if not shown or before is None:
        yield
        return
    window.progress = True
    try:
        yield
    finally:
        window.progress = before


def run_batch(
    inputs: Sequence[PathLike],
    output_dir: PathLike | None,
    model: PathLike | None = None,
    device: str | None = None,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    png: bool = False,
    overwrite: bool = False,
    mask: PathLike | None = None,
    mask_method: str = "auto",
    qc: str = "reject",
    manifest: PathLike | None = None,
    report: PathLike | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    datalist_key: str = "test",
    progress: bool = True,
    flip_axes: Sequence[int] | None = None,
    calibrate_tails: bool | None = None,
    precision: str = "32-true",
    uncertainty: float | None = None,
    series_uid: str | None = None,
    dicom_out: bool = False,
    bids: bool = False,
) -> int:
    """``monai-t1t2 predict``: translate a collection; exit status (module docstring).

    ``flip_axes``: mirror test-time augmentation, ``calibrate_tails``: the output's tails put at 0 and 1
    (None: the model's setting), ``precision``: the network's arithmetic
    (:func:`monai_t1t2.inference.translation.translate`). ``series_uid``: the DICOM series to translate
    where a folder holds several; ``dicom_out``: also write each synthetic T2 of a DICOM input as a new
    series in its study, ``<stem>_synT2_dicom/`` (:mod:`monai_t1t2.dicom`); ``bids``: ``inputs`` is one
    BIDS dataset, ``output_dir`` its derivative dataset (None: ``BIDS_ROOT/derivatives/monai-t1t2``;
    :mod:`monai_t1t2.bids`)."""
    from monai_t1t2 import bids as bids_layout
    from monai_t1t2.dicom import check_series_target

    try:
        # The sliding window's own checks, before any work (None: the model's inferer decides).
        patch_inferer((1, 1, 1), 4 if sw_batch_size is None else sw_batch_size, 0.5 if overlap is None else overlap,
                      flip_axes or ())
    except ValueError as err:
        raise T1T2Error("--" + str(err).replace("sw_batch_size", "sw-batch-size").replace("flip_axes", "flip-axes")) from None
    if qc not in QC_MODES:
        raise T1T2Error(f"--qc {qc}: choose one of {', '.join(QC_MODES)}")
    precision = check_precision(precision, resolve_device(device))
    check_uncertainty(uncertainty, model)
    if mask_method not in MASK_METHODS:
        raise T1T2Error(f"--mask-method {mask_method}: choose one of {', '.join(MASK_METHODS)}")
    if devices < 1 or num_nodes < 1:
        raise T1T2Error(f"--devices {devices} --num-nodes {num_nodes}: both must be at least 1")
    bids_root = None
    if bids:
        if len(inputs) != 1:
            raise T1T2Error(f"--bids takes one BIDS dataset folder; {len(inputs)} inputs were given")
        bids_root = Path(inputs[0])
        paths = bids_layout.find_t1w(bids_root)
        output_dir = Path(output_dir) if output_dir is not None else bids_layout.default_derivatives(bids_root)
    elif output_dir is None:
        raise T1T2Error("name an output folder (-o OUT), or pass --bids with a BIDS dataset")
    else:
        # The inputs first: a bad one (a DICOM folder that is not an MR volume) stops the run before anything is written.
        paths = collect_inputs(inputs, datalist_key, exclude_dir=Path(output_dir), series_uid=series_uid)
    if dicom_out:
        not_dicom = [path for path in paths if not path.is_dir()]
        if not_dicom:
            raise T1T2Error(f"--dicom-out writes the synthetic T2 into the DICOM input's study; {not_dicom[0]} is not a "
                            "DICOM series folder")
    output_dir = check_output_dir(output_dir)
    if mask is not None:
        if len(paths) != 1:
            raise T1T2Error(f"--mask {mask}: a mask belongs to one input; {len(paths)} were given")
        if not Path(mask).is_file():
            raise InvalidVolumeError(f"{mask}: mask file does not exist")
    manifest = Path(manifest) if manifest is not None else output_dir / "manifest.json"
    if manifest.suffix.lower() not in (".json", ".csv"):
        raise T1T2Error(f"--manifest {manifest}: name a .json or .csv file")
    protected = [*paths, *([Path(mask)] if mask is not None else [])]
    check_output_path(manifest, inputs=protected, overwrite=True)
    if report is not None:
        if Path(report).suffix.lower() not in (".html", ".htm"):
            raise T1T2Error(f"--report {report}: name an .html file")
        check_output_path(report, inputs=protected, overwrite=True)


    # The model file's hash decides whether an earlier output is complete; the network is loaded
    # only after every input's header has been checked for memory.
    model_hash = _sha256(model_file(model))
    rows_before, jobs, seen_targets = [], [], {}
    for path in paths:
        target = (bids_layout.derivative_path(path, bids_root, output_dir) if bids_root is not None
                  else output_path(path, output_dir))
        if target in seen_targets:
            raise OutputExistsError(f"{path} and {seen_targets[target]} would both write {target}; rename one or run them apart")
        seen_targets[target] = path
        candidates = ([target, sidecar_path(target)] + ([target.with_name(f"{target.name[:-7]}.png")] if png else [])
                      + (list(interval_paths(target)) if uncertainty is not None else []))
        for candidate in candidates:
            check_output_path(candidate, inputs=protected, overwrite=True)  # never an input, location writable
        if dicom_out:
            check_series_target(dicom_output_path(target), overwrite=True)
        if not (path.is_file() or path.is_dir()):
            rows_before.append({"input": str(path), "output": str(target), "status": "failed",
                                "error": f"{path}: no such file"})
            print(f"monai-t1t2: error: {path}: no such file", file=sys.stderr)
            continue
        input_hash = _sha256(path)
        state = output_state(target, input_hash, model_hash)
        if state == "complete" and uncertainty is not None and not all(p.is_file() for p in interval_paths(target)):
            state = "interrupted"  # translated before without the interval: translate again
        if state == "complete" and dicom_out and not dicom_output_path(target).is_dir():
            state = "interrupted"  # translated before without the DICOM series: translate again
        if state == "absent" and dicom_out and dicom_output_path(target).exists() and not overwrite:
            raise OutputExistsError(f"{dicom_output_path(target)}: exists; pass --overwrite to replace it")
        if state == "complete" and not overwrite:
            rows_before.append({"input": str(path), "input_sha256": input_hash, "output": str(target),
                                "status": "skipped", "error": None})
            continue
        if state in ("foreign", "other") and not overwrite:
            raise OutputExistsError(f"{target}: exists{' (from another input or model)' if state == 'other' else ''}; "
                                    "pass --overwrite to replace it")
        problem = memory_problem(path)
        if problem:
            rows_before.append({"input": str(path), "input_sha256": input_hash, "output": str(target),
                                "status": "failed", "error": problem})
            print(f"monai-t1t2: error: {problem}", file=sys.stderr)
            continue
        jobs.append({"input": str(path), "output": str(target), "input_sha256": input_hash, "model_sha256": model_hash,
                     "sidecar": _stamp(sidecar_path(target))})
    settings = Settings(output_dir=output_dir, model=model, device=device, overlap=overlap,
                        sw_batch_size=sw_batch_size, flip_axes=None if flip_axes is None else list(flip_axes),
                        calibrate_tails=calibrate_tails, precision=precision, uncertainty=uncertainty,
                        png=png, overwrite=overwrite, mask_method=mask_method,
                        mask=Path(mask) if mask is not None else None, qc=qc, thumbnails=report is not None,
                        inputs=list(paths), series_uid=series_uid, dicom_out=dicom_out, bids_root=bids_root)
    if bids_root is not None:
        bids_layout.write_dataset_files(bids_root, output_dir, overwrite=overwrite)
    if devices == 1 and num_nodes == 1:
        translator = load_translator(model, device) if jobs else None  # a broken model file: refused before any write
        update_manifest(rows_before, manifest, order=paths)
        rows = rows_before + _job_rows(jobs, settings, translator, progress=progress,
                                       on_row=lambda done: update_manifest(rows_before + done, manifest, order=paths))
    else:
        rows = _run_distributed(jobs, rows_before, settings, devices, num_nodes, manifest)
        if rows is None:  # not rank 0
            return 0
    folder_rows = update_manifest(rows, manifest, order=paths)
    if report is not None:
        write_report(folder_rows, Path(report), output_dir)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("translated", "skipped", "rejected", "failed", "claimed")}
    print(f"{output_dir}: {len(rows)} inputs: {counts['translated']} translated, {counts['skipped']} already done, "
          f"{counts['rejected']} rejected by QC, {counts['failed']} failed"
          + (f", {counts['claimed']} left to another run" if counts["claimed"] else "") + f"; manifest: {manifest}"
          + (f"; report: {report}" if report is not None else ""))
    bad = counts["rejected"] + counts["failed"]
    if not bad:
        return 0
    return 1 if counts["translated"] + counts["skipped"] + counts["claimed"] else 2


# ----------------------------------------------------------------------------- many devices
def _run_distributed(jobs: list[dict], rows_before: list[dict], settings: Settings, devices: int, num_nodes: int,
                     manifest: Path) -> list[dict] | None:
    """Shard ``jobs`` over Lightning's DDP ranks; rank 0 returns every row, the other ranks None."""
    import pytorch_lightning as pl
    import torch


    class Shard(torch.utils.data.Sampler):
        """Indices ``rank::world``: every job exactly once over all ranks (no padding)."""

        def __init__(self, size: int, rank: int, world: int) -> None:
            self.indices = list(range(rank, size, world))

        def __iter__(self):
            return iter(self.indices)

        def __len__(self) -> int:
            return len(self.indices)

    class Predictor(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict] = []

        def setup(self, stage: str) -> None:
            self.translator = load_translator(settings.model, self.trainer.strategy.root_device)
            self.part = settings.output_dir / PARTS / f"rank{self.trainer.global_rank}.json"

        def predict_dataloader(self):
            rank, world = self.trainer.global_rank, self.trainer.world_size
            return torch.utils.data.DataLoader(list(range(len(jobs))), batch_size=1,
                                               sampler=Shard(len(jobs), rank, world), collate_fn=lambda b: b[0])

        def predict_step(self, index: int, batch_idx: int = 0):
            self.rows += [dict(row, rank=self.trainer.global_rank)
                          for row in _job_rows([jobs[index]], settings, self.translator)]
            write_manifest(self.rows, self.part)
            return None

        def on_predict_end(self) -> None:
            write_manifest(self.rows, self.part)
            self.trainer.strategy.barrier("monai_t1t2_batch_done")

    accelerator = "gpu" if (settings.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda" else "cpu"
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                         strategy="ddp" if devices * num_nodes > 1 else "auto", use_distributed_sampler=False,
                         logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    predictor = Predictor()
    trainer.predict(predictor, return_predictions=False)
    if trainer.global_rank != 0:
        return None
    rows = list(rows_before)
    for rank in range(trainer.world_size):
        part = settings.output_dir / PARTS / f"rank{rank}.json"
        if part.is_file():
            rows += read_manifest(part)
            part.unlink()
    return rows


# ----------------------------------------------------------------------------- files: the Python API of predict


OUTPUT_SUFFIX = "_synT2"
DICOM_SUFFIX = "_dicom"  # <stem>_synT2_dicom/: the synthetic T2 as a DICOM series (--dicom-out)


def output_path(t1_path: PathLike, output_dir: PathLike) -> Path:
    """``<output_dir>/<stem>_synT2.nii.gz`` for a T1 file."""
    return Path(output_dir) / f"{volume_stem(t1_path)}{OUTPUT_SUFFIX}.nii.gz"


def sidecar_path(target: Path) -> Path:
    """``<stem>_synT2.json`` beside ``<stem>_synT2.nii.gz`` (BIDS-style sidecar)."""
    return target.with_name(f"{volume_stem(target)}.json")


def _sha256(path: PathLike) -> str | None:
    """SHA-256 of a file (None if it is not one), computed once per file version (:func:`monai_t1t2.io.file_sha256`);
    of a DICOM series folder, one over its files (:func:`monai_t1t2.dicom.folder_sha256`)."""
    if Path(path).is_dir():
        from monai_t1t2.dicom import folder_sha256

        return folder_sha256(path)
    return file_sha256(path) if Path(path).is_file() else None


def model_version(model: PathLike) -> str | None:
    """The bundle version (``configs/metadata.json``) of a bundle's ``models/model.pt``; None for a
    checkpoint or weights outside a bundle."""
    metadata = Path(model).parent.parent / "configs" / "metadata.json"
    try:
        version = json.loads(metadata.read_text())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(version)


def write_sidecar(target: Path, source: Path, translator: Translator, settings: Settings, mask_method: str,
                  problems: Sequence[str], predicted_ssim: float | None = None, extra: dict | None = None) -> Path:
    """The provenance sidecar of one synthetic T2 (written atomically): the batch ``settings`` it was
    translated with, where a setting left at ``None`` reads as the model's own (its inferer's mirror
    axes, its tails step); ``extra`` fields added (the derived DICOM series). In a BIDS run
    (``settings.bids_root``) ``Sources`` is the T1's BIDS URI (``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``)."""
    import datetime

    from monai_t1t2.bids import source_uri

    flip_axes = getattr(translator.inferer, "flip_axes", []) if settings.flip_axes is None else settings.flip_axes
    calibrated_tails = (tails_calibrated(translator.postprocessing) if settings.calibrate_tails is None
                        else settings.calibrate_tails)
    record = {
        "Modality": "MR", "SyntheticImage": True,
        "Description": "synthetic T2-weighted image translated from a T1-weighted image; not an acquisition",
        "GeneratedBy": [{"Name": "monai-t1t2", "Version": monai_t1t2.__version__}],
        "Sources": [source_uri(source, settings.bids_root) if settings.bids_root else str(source)],
        "SourceSHA256": _sha256(source),
        "Model": translator.source, "ModelVersion": model_version(translator.source),
        "ModelSHA256": _sha256(translator.source),
        "SlidingWindowROI": list(translator.roi_size), "MirrorAveragedAxes": [int(a) for a in flip_axes],
        "TailsCalibrated": bool(calibrated_tails), "NetworkPrecision": settings.precision,
        "MaskMethod": mask_method, "SkullStripped": mask_method != "head",
        "InputProblems": list(problems), "Forced": bool(problems),
        "Units": "normalised T2 (0.5th-99.5th brain percentile range mapped to [0, 1])",
        "DateCreated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if settings.uncertainty is not None:
        trust = translator.trust
        lower, upper = interval_paths(target)
        record.update(PredictedSSIM=round(float(predicted_ssim), 4),
                      PredictedSSIMBelowCalibration=bool(trust.out_of_range(predicted_ssim)), Uncertainty={
            "Level": settings.uncertainty, "Lower": lower.name, "Upper": upper.name, "Method": trust.method,
            "Features": list(trust.features), "CalibrationSubjects": list(trust.subjects),
            "Meaning": f"per voxel, the real T2 (in the protocol's normalised units) lies in [lower, upper] with "
                       f"probability {settings.uncertainty:g} on subjects like the calibration subjects"})
    record.update(extra or {})
    return atomic_write_text(json.dumps(record, indent=2) + "\n", sidecar_path(target), overwrite=True)


def _planned_outputs(paths: Sequence[Path], output_dir: Path, png: bool, overwrite: bool,
                     protected: Sequence[PathLike] = (), interval: bool = False) -> list[Path]:
    """Output paths of every input, all checked free (and distinct) before anything is translated."""

    check_output_dir(output_dir)
    targets = [output_path(path, output_dir) for path in paths]
    seen: dict[Path, Path] = {}
    for path, target in zip(paths, targets):
        if target in seen:
            raise OutputExistsError(f"{path} and {seen[target]} would both write {target}; rename one or run them apart")
        seen[target] = path
        for candidate in ([target, sidecar_path(target)] + ([target.with_name(f"{volume_stem(target)}.png")] if png else [])
                          + (list(interval_paths(target)) if interval else [])):
            check_output_path(candidate, inputs=[*paths, *protected], overwrite=overwrite)
    return targets


def translate_files(
    paths: Sequence[PathLike],
    output_dir: PathLike,
    model: PathLike | Translator | None = None,
    device: str | torch.device | None = None,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    png: bool = False,
    overwrite: bool = False,
    mask_method: str = "auto",
    progress: bool = True,
    mask: PathLike | None = None,
    force: bool = False,
    precision: str = "32-true",
    uncertainty: float | None = None,
) -> list[Path]:
    """Translate each T1 file into ``<output_dir>/<stem>_synT2.nii.gz`` (and ``.png`` with ``png``).

    Every output path is checked before the first volume is translated, and the memory each input
    needs is estimated from its header before the network is loaded; inputs are never written over;
    each output is written atomically with the input's affine and header, marked synthetic in its
    header, with a JSON sidecar ``<stem>_synT2.json`` (provenance). An input that fails
    :func:`monai_t1t2.quality.input_problems` (QC reject, brain volume outside the adult range, not T1) is refused with the
    reason unless ``force``, which translates it with a warning (recorded in the sidecar).
    ``progress``: on a terminal a bar over the files and MONAI's sliding-window bar over each one's
    windows; elsewhere (a log) one line per volume translated (:mod:`monai_t1t2.progress`).

    Args:
        mask: a brain-mask file on the grid of the (single) input; overrides ``mask_method``.
        precision: the network's arithmetic, ``"32-true"`` or ``"bf16-mixed"`` (:func:`translate`).
        uncertainty: a level (e.g. 0.9): also write ``<stem>_synT2_lower.nii.gz`` / ``_upper.nii.gz``,
            the interval holding the real T2 with that probability, and the predicted SSIM in the sidecar.

    Returns:
        The written volume paths, in input order.
    """
    from monai_t1t2.inference.batch import Settings, translate_one
    from monai_t1t2.progress import VolumeProgress

    paths = [Path(p) for p in paths]
    if not paths:
        raise T1T2Error("no T1 volume to translate (no *.nii.gz / *.nii among the inputs)")
    if mask is not None and len(paths) != 1:
        raise T1T2Error(f"--mask {mask}: a mask belongs to one input; {len(paths)} were given")
    if mask_method not in MASK_METHODS:
        raise T1T2Error(f"mask method {mask_method!r}: choose one of {', '.join(MASK_METHODS)}")
    if mask is not None and not Path(mask).is_file():
        raise InvalidVolumeError(f"{mask}: mask file does not exist")
    precision = check_precision(precision, resolve_device(device) if not isinstance(model, Translator) else model.device)
    check_uncertainty(uncertainty, model)
    output_dir = Path(output_dir)
    targets = _planned_outputs(paths, output_dir, png, overwrite, protected=[mask] if mask is not None else [],
                               interval=uncertainty is not None)
    check_memory(paths)
    translator = load_translator(model, device)
    settings = Settings(output_dir=output_dir, overlap=overlap, sw_batch_size=sw_batch_size, png=png,
                        overwrite=overwrite, mask_method=mask_method, mask=Path(mask) if mask is not None else None,
                        qc="flag" if force else "reject", inputs=paths, precision=precision, uncertainty=uncertainty)
    with VolumeProgress(len(paths), "translating", enabled=progress) as shown, _window_progress(translator, shown.terminal):
        for path, target in zip(paths, targets):
            started = time.time()
            translate_one(path, target, translator, settings)
            shown.done(path, "translated", time.time() - started)
    return targets


def translate_folder(dataset_dir: PathLike, output_dir: PathLike, model: PathLike | Translator | None = None,
                     device: str | torch.device | None = None, overlap: float | None = None, sw_batch_size: int | None = None,
                     png: bool = False, overwrite: bool = False, mask_method: str = "auto", force: bool = False,
                     precision: str = "32-true", uncertainty: float | None = None) -> list[Path]:
    """The bundle's ``run``: translate every ``dataset_dir/*.nii.gz`` (and ``*.nii``) into ``output_dir``.

    Errors a user can cause end the run with one line on stderr, in the bundle's terms (its
    settings are ``--dataset_dir``, ``--overwrite true`` ...), and exit status 2, not a traceback.
    """
    import sys

    try:
        folder = Path(dataset_dir)
        if not folder.is_dir():
            raise T1T2Error(f"dataset_dir {folder}: no such folder (pass --dataset_dir FOLDER of T1 volumes)")
        paths = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith((".nii.gz", ".nii")))
        if not paths:
            raise T1T2Error(f"dataset_dir {folder}: holds no *.nii.gz or *.nii file")
        return translate_files(paths, output_dir, model=model, device=device, overlap=overlap,
                               sw_batch_size=sw_batch_size, png=png, overwrite=overwrite, mask_method=mask_method,
                               force=force, precision=precision, uncertainty=uncertainty)
    except T1T2Error as err:
        message = str(err).replace("pass --overwrite", "pass --overwrite true").replace("pass --force", "pass --force true")
        print(f"monai-t1t2 bundle: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def run_predict(inputs: Sequence[PathLike], output_dir: PathLike | None, model: PathLike | None = None, png: bool = False,
                device: str | None = None, overlap: float | None = None, sw_batch_size: int | None = None, overwrite: bool = False,
                mask: PathLike | None = None, mask_method: str = "auto", force: bool = False, qc: str = "reject",
                manifest: PathLike | None = None, report: PathLike | None = None, devices: int = 1,
                num_nodes: int = 1, datalist_key: str = "test", flip_axes: Sequence[int] | None = None,
                calibrate_tails: bool | None = None, precision: str = "32-true", uncertainty: float | None = None,
                series_uid: str | None = None, dicom_out: bool = False, bids: bool = False) -> int:
    """``monai-t1t2 predict``: translate a collection (:func:`monai_t1t2.inference.batch.run_batch`); exit status."""
    from monai_t1t2.inference.batch import run_batch

    return run_batch(inputs, output_dir, model=model, device=device, overlap=overlap, sw_batch_size=sw_batch_size,
                     png=png, overwrite=overwrite, mask=mask, mask_method=mask_method, qc="flag" if force else qc,
                     manifest=manifest, report=report, devices=devices, num_nodes=num_nodes, datalist_key=datalist_key,
                     flip_axes=flip_axes, calibrate_tails=calibrate_tails, precision=precision, uncertainty=uncertainty,
                     series_uid=series_uid, dicom_out=dicom_out, bids=bids)
