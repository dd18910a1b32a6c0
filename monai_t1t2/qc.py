"""The QC stage: ``monai-t1t2 qc`` over files and folders (report JSON and three-plane PNGs).

The measures and the keep / reject rules are :mod:`monai_t1t2.quality`'s.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from monai_t1t2.errors import T1T2Error
from monai_t1t2.geometry import to_ras
from monai_t1t2.io import PathLike, atomic_write_text, find_volumes, read_volume, spacing_of, volume_stem
from monai_t1t2.masks import brain_mask
from monai_t1t2.quality import brain_problems, quality_report


def _png_name(path: Path, used: set[str]) -> str:
    name = f"{path.parent.name}_{volume_stem(path)}_qc.png" if path.parent.name else f"{volume_stem(path)}_qc.png"
    candidate, index = name, 1
    while candidate in used:
        candidate = name.replace("_qc.png", f"_qc{index}.png")
        index += 1
    used.add(candidate)
    return candidate


def _save_png(volume, report: dict, path: Path) -> None:
    """Three planes of ``volume`` (RAS), a second row windowed at 5 % of its range so faint ghosts and air noise show."""
    from monai_t1t2.viz import save_three_plane_png

    ras = to_ras(volume)
    array = ras[0].numpy()
    faint = np.clip(array, 0, 0.05 * float(np.percentile(array, 99.5)))
    verdict = "REJECTED" if not report["passed"] else "FLAGGED"
    title = "\n".join(textwrap.wrap(f"{verdict}: {'; '.join(report['reasons'])}", 80))
    save_three_plane_png(path, [array, faint], [Path(report["path"]).name, "window 0-5 %"], title=title,
                         spacing=spacing_of(ras.affine))


def run_qc(paths: Sequence[PathLike], report: PathLike, png_dir: PathLike | None = None, overwrite: bool = False,
           progress: bool = True, expect: str = "t1", series_uid: str | None = None) -> int:
    """The ``monai-t1t2 qc`` command: a JSON report (list, one object per volume) and optional PNGs.

    ``expect="t1"`` (the default) also runs on each volume that passes the image checks what ``predict``
    runs after its brain mask (the brain's volume, its T1 contrast:
    :func:`monai_t1t2.quality.t1_contrast_problems`), so a T2 or a CT is rejected with its reason;
    ``"any"`` checks the image only (any MR weighting, no network). ``series_uid``: the DICOM series to
    read from a folder that holds several (as ``predict --series-uid``).

    A file that cannot be read (missing, not a volume, truncated, 2D ...) does not stop the others: it
    is reported on stderr (one line naming it) and recorded in the report (``passed`` false, ``error``
    and ``reasons`` its one-line reason; readable volumes have ``error`` null), as ``predict`` records
    its failed inputs.

    Returns:
        The exit status, as ``predict``'s: 0 when every volume was read and measured, whatever the
        verdicts; 1 when some could not be read and others could; 2 when none could (one line per
        file, and no report: there is nothing measured to report).

    Raises:
        InvalidVolumeError: a folder holds no volume (before any work).
        OutputExistsError: ``report`` exists and ``overwrite`` is False.
    """
    from monai_t1t2.io import check_output_dir, check_output_path
    from monai_t1t2.progress import VolumeProgress

    # A named file that does not exist is recorded like any unreadable one; a folder is searched.
    files = [file for path in paths for file in (find_volumes([path]) if Path(path).exists() else [Path(path)])]
    report = check_output_path(report, inputs=[*paths, *files], overwrite=overwrite)
    if png_dir is not None:
        check_output_dir(png_dir)
    results, used = [], set()
    with VolumeProgress(len(files), "qc", enabled=progress) as shown:
        for path in files:
            try:
                volume = read_volume(path, series_uid)
            except T1T2Error as err:
                print(f"monai-t1t2: error: {err}", file=sys.stderr)
                results.append({"path": str(path), "passed": False, "reasons": [str(err)], "error": str(err)})
                shown.done(path, "unreadable", failed=True)
                continue
            result = quality_report(volume)
            result.update(path=str(path), error=None)
            if expect == "t1" and result["passed"]:
                problems = brain_problems(volume, brain_mask(volume, "auto"))
                result.update(passed=not problems, reasons=result["reasons"] + problems)
            results.append(result)
            if png_dir is not None and result["reasons"]:
                _save_png(volume, result, Path(png_dir) / _png_name(path, used))
            shown.done(path, "passed" if result["passed"] else "rejected")
    unreadable = sum(r["error"] is not None for r in results)
    if unreadable == len(results):
        return 2
    atomic_write_text(json.dumps(results, indent=2) + "\n", report, overwrite=True)
    failed = sum(not r["passed"] for r in results) - unreadable
    print(f"qc: {len(results)} volumes, {len(results) - failed - unreadable} passed, {failed} rejected"
          + (f", {unreadable} unreadable" if unreadable else "") + f"; report: {report}")
    return 1 if unreadable else 0
