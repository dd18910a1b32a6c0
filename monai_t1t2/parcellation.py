"""The parcellation stage: ``monai-t1t2 parcellate`` and ``import-brainchop``, and the brain_parcellation bundle's run step.

The networks and their preprocessing are :mod:`monai_t1t2.nets.meshnet`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from monai.data import MetaTensor

from monai_t1t2.errors import T1T2Error
from monai_t1t2.geometry import to_ras
from monai_t1t2.io import PathLike, read_volume, volume_stem, write_volume
from monai_t1t2.nets.meshnet import DEFAULT_MODEL, import_brainchop, load_parcellator, parcellate, save_meshnet


def parcellate_files(paths: Sequence[PathLike], output_dir: PathLike, parcellator: Callable | None = None,
                     overwrite: bool = True) -> list[Path]:
    """Parcellate each T1 file into ``<output_dir>/<stem>_labels.nii.gz`` (the bundle's run step), with
    progress (:class:`~monai_t1t2.progress.VolumeProgress`)."""
    import time

    from monai_t1t2.progress import VolumeProgress

    if not paths:
        raise T1T2Error("no T1 volume to parcellate (dataset_dir holds no *.nii.gz?)")
    parcellator = parcellator or load_parcellator()
    written = []
    with VolumeProgress(len(paths), "parcellating") as shown:
        for path in paths:
            started = time.time()
            labels = parcellator(path)
            target = Path(output_dir) / f"{volume_stem(path)}_labels.nii.gz"
            written.append(write_volume(labels, target, reference=path, overwrite=overwrite, inputs=[path], dtype=np.int16))
            shown.done(path, "parcellated", time.time() - started)
    return written


def save_label_overlay_png(t1: MetaTensor, labels: MetaTensor, path: PathLike, title: str = "",
                           label_names: Sequence[str] | None = None) -> Path:
    """Three-plane PNG of the T1 with the labels on top, both reoriented to RAS for display, and a legend.

    With the model's ``label_names`` (index = label value) the labels are drawn as their region groups
    (white matter, cortical grey, deep grey, ventricles / CSF, cerebellum, brainstem:
    :data:`monai_t1t2.regions.REGION_LEGEND`), each in its own colour; without them each label value
    present gets a colour of its own and is named by its value.
    """
    from matplotlib import colormaps

    from monai_t1t2.io import spacing_of
    from monai_t1t2.regions import REGION_LEGEND, labels_to_groups
    from monai_t1t2.viz import save_three_plane_png

    values = np.rint(np.asarray(labels.detach().cpu())).astype(np.int64)
    if label_names:
        values = labels_to_groups(values, label_names).astype(np.int64)
        legend = {code: REGION_LEGEND[code] for code in np.unique(values) if code in REGION_LEGEND}
    else:
        palette = colormaps["tab20"].colors
        legend = {int(v): (f"label {v}", palette[i % len(palette)]) for i, v in enumerate(np.unique(values)) if v != 0}
    t1_ras = to_ras(t1.clone())
    labels_ras = to_ras(MetaTensor(torch.as_tensor(values, dtype=torch.float32), affine=labels.affine))
    return save_three_plane_png(path, [t1_ras], ["T1 + labels"], title=title, overlays=[labels_ras],
                                spacing=spacing_of(t1_ras.affine), legend=legend)


def run_parcellate(t1: PathLike, output: PathLike, model: PathLike = DEFAULT_MODEL, png: bool = False,
                   overwrite: bool = False) -> int:
    """``monai-t1t2 parcellate``: labels (and optionally a PNG beside them) for one T1; exit code."""
    from monai_t1t2.io import check_output_path
    from monai_t1t2.nets.meshnet import label_names

    output = check_output_path(output, inputs=[t1], overwrite=overwrite)
    if png:
        check_output_path(output.with_name(f"{volume_stem(output)}.png"), inputs=[t1], overwrite=overwrite)
    volume = read_volume(t1)
    labels = parcellate(volume, model=model)
    write_volume(labels, output, reference=t1, overwrite=overwrite, inputs=[t1], dtype=np.int16)
    present = int(np.unique(labels.numpy()).size)
    print(f"{output}: {present} labels present")
    if png:
        png_path = output.with_name(f"{volume_stem(output)}.png")
        save_label_overlay_png(volume, labels, png_path, title=f"{Path(t1).name} - {Path(str(model)).name}",
                               label_names=label_names(model))
        print(png_path)
    return 0


def run_import_brainchop(source: PathLike, output: PathLike, overwrite: bool = False) -> int:
    """``monai-t1t2 import-brainchop``: brainchop folder -> ``.pt``; exit code."""
    from monai_t1t2.io import check_output_path

    source_files = [p for p in Path(source).iterdir()] if Path(source).is_dir() else [source]
    check_output_path(output, inputs=[source, *source_files], overwrite=overwrite)
    network = import_brainchop(source)
    path = save_meshnet(network, output, overwrite=overwrite)
    parameters = sum(p.numel() for p in network.parameters())
    print(f"{path}: {network.name}, {len(network.label_names)} classes, {parameters} parameters")
    return 0
