"""Three-plane PNGs: the parcellation overlay names its classes and paints them apart (issue 52, item 7)."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

from conftest import synthetic_head, write_nifti

# brainchop model30chan18cls, index = label value
NAMES = ["Unknown", "Cerebral-White-Matter", "Cerebral-Cortex", "Lateral-Ventricle", "Inferior-Lateral-Ventricle",
         "Cerebellum-White-Matter", "Cerebellum-Cortex", "Thalamus", "Caudate", "Putamen", "Pallidum", "3rd-Ventricle",
         "4th-Ventricle", "Brain-Stem", "Hippocampus", "Amygdala", "Accumbens-area", "VentralDC"]


def _pixels(path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(str(path))[..., :3].reshape(-1, 3)


def _has_colour(pixels: np.ndarray, colour: str, tolerance: float = 0.02) -> bool:
    from matplotlib.colors import to_rgb

    return bool((np.abs(pixels - np.array(to_rgb(colour))).max(axis=1) < tolerance).any())


def _overlay_hue(pixels: np.ndarray) -> np.ndarray:
    """Mean colour of the coloured (not grey) pixels."""
    coloured = pixels[np.ptp(pixels, axis=1) > 0.08]
    return coloured.mean(axis=0)


def test_parcellate_png_has_a_legend_and_white_matter_and_cortex_apart(tmp_path, monkeypatch, capsys):
    from monai_t1t2 import parcellation
    from monai_t1t2.nets import meshnet
    from monai_t1t2.regions import REGION_LEGEND

    head = synthetic_head((32, 32, 24))
    t1_path = write_nifti(tmp_path / "t1.nii.gz", head)
    hues = {}
    for name, label in (("white_matter", 1), ("cortex", 2)):
        labels = np.where(head > 0, label, 0)
        labels[:, :4] = np.where(head[:, :4] > 0, 3, 0)  # a little ventricle in every plane
        monkeypatch.setattr(parcellation, "parcellate",
                            lambda volume, model, labels=labels: MetaTensor(torch.as_tensor(labels)[None], affine=volume.affine))
        monkeypatch.setattr(meshnet, "label_names", lambda model: NAMES)
        output = tmp_path / f"{name}_labels.nii.gz"
        assert parcellation.run_parcellate(t1_path, output, model="model30chan18cls", png=True) == 0
        pixels = _pixels(tmp_path / f"{name}_labels.png")
        # The legend's swatches are the groups' own colours, unblended; the planes show them over the T1.
        assert _has_colour(pixels, REGION_LEGEND[label][1]), f"{name}: no legend swatch of its group"
        assert _has_colour(pixels, REGION_LEGEND[4][1]), "ventricles / CSF in the legend"
        hues[name] = _overlay_hue(pixels)
    assert np.abs(hues["white_matter"] - hues["cortex"]).max() > 0.3, f"white matter and cortex alike: {hues}"
    capsys.readouterr()


def test_label_overlay_without_names_gives_each_value_a_colour():
    from monai_t1t2.viz import _painted

    legend = {1: ("label 1", "#ff0000"), 2: ("label 2", "#0000ff")}
    painted = _painted(np.array([[0, 1], [2, 5]]), legend)
    assert painted[0, 0, 3] == 0 and painted[1, 1, 3] == 0, "background and unnamed values stay transparent"
    assert painted[0, 1, 0] == 1 and painted[1, 0, 2] == 1 and 0 < painted[0, 1, 3] < 1


def test_the_parcellation_bundle_run_shows_progress(tmp_path, capsys):
    from monai_t1t2.parcellation import parcellate_files

    paths = [write_nifti(tmp_path / f"t1-{i}.nii.gz", synthetic_head((16, 16, 12), seed=i)) for i in range(2)]
    fake = lambda path: MetaTensor(torch.ones(1, 16, 16, 12), affine=torch.eye(4))  # noqa: E731
    parcellate_files(paths, tmp_path / "out", parcellator=fake)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[1].startswith("monai-t1t2: parcellating 2/2: ") and "parcellated in" in lines[1]
