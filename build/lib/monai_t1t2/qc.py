"""The QC stage: ``monai-t1t2 qc`` over files and folders (report JSON and three-plane PNGs).

The measures and the keep / reject rules are :mod:`monai_t1t2.quality`'s.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from monai_t1t2.geometry import to_ras
from monai_t1t2.io import PathLike, atomic_write_text, find_volumes, read_volume, spacing_of, volume_stem
from monai_t1t2.quality import quality_report


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


def run_qc(paths: Sequence[PathLike], report: PathLike, png_dir: PathLike | None = None, overwrite: bool = False) -> int:
    """The ``monai-t1t2 qc`` command: a JSON report (list, one object per volume) and optional PNGs.

    Returns 0 once the report is written, whatever the verdicts.

    Raises:
        InvalidVolumeError: a path is missing or a file is not a valid volume (exit status 2).
        OutputExistsError: ``report`` exists and ``overwrite`` is False.
    """
    from tqdm import tqdm

    from monai_t1t2.io import check_output_dir, check_output_path

    files = find_volumes(paths)
    report = check_output_path(report, inputs=[*paths, *files], overwrite=overwrite)
    if png_dir is not None:
        check_output_dir(png_dir)
    results, used = [], set()
    for path in tqdm(files, desc="qc", unit="volume"):
        volume = read_volume(path)
        result = quality_report(volume)
        result["path"] = str(path)
        results.append(result)
        if png_dir is not None and result["reasons"]:
            _save_png(volume, result, Path(png_dir) / _png_name(path, used))
    atomic_write_text(json.dumps(results, indent=2) + "\n", report, overwrite=True)
    failed = sum(not r["passed"] for r in results)
    print(f"qc: {len(results)} volumes, {len(results) - failed} passed, {failed} rejected; report: {report}")
    return 0
