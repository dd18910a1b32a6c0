"""Shared fixtures: the real data in ../shared and small synthetic volumes."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MONAI_T1T2_SHARED", REPO.parent / "shared"))
PAIRED = SHARED / "data" / "paired"
RAW = SHARED / "data" / "raw"
BRAINCHOP = SHARED / "models" / "brainchop"
SAMPLE_T1 = REPO / "tests" / "data" / "sample_t1.nii.gz"
PAIRED_CASES = ("BraTS-GLI-00001-000", "BrainLesion-case-A", "TCGA-DU-7294", "TCGA-FG-6692")


def pytest_collection_modifyitems(config, items):
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real data folder {SHARED} is absent")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shared() -> Path:
    return SHARED


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``array`` as NIfTI (identity affine by default) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


def synthetic_head(shape=(32, 32, 24), seed: int = 0) -> np.ndarray:
    """A smooth ellipsoid 'brain' with two tissue intensities and mild noise, float32."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2 / np.array([0.8, 0.9, 0.8])[:, None, None, None] ** 2).sum(0))
    volume = np.where(radius < 1, 100.0, 0.0) + np.where(radius < 0.5, 60.0, 0.0)
    return (volume + rng.normal(0, 2, shape) * (radius < 1)).astype(np.float32)


@pytest.fixture
def synthetic_pair(tmp_path: Path):
    """A tiny T1/T2 subject folder: ``tmp/data/case0/t1.nii.gz``, ``t2.nii.gz``."""
    t1 = synthetic_head()
    t2 = np.where(t1 > 0, 200.0 - t1, 0.0).astype(np.float32)
    case = tmp_path / "data" / "case0"
    write_nifti(case / "t1.nii.gz", t1)
    write_nifti(case / "t2.nii.gz", t2)
    return case


def write_model_zoo_schema(path: Path) -> Path:
    """A local JSON schema of the metadata fields the MONAI model zoo requires (our own transcription,
    not MONAI's file, which ``verify_metadata`` would download), for offline bundle checks."""
    import json

    field = {"type": "object", "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"]}
    schema = {"type": "object",
              "required": ["version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                           "required_packages_version", "task", "description", "authors", "copyright",
                           "network_data_format"],
              "properties": {"network_data_format": {"type": "object", "required": ["inputs", "outputs"],
                             "properties": {"inputs": {"type": "object", "additionalProperties": field},
                                            "outputs": {"type": "object", "additionalProperties": field}}}}}
    path.write_text(json.dumps(schema))
    return path


def padded_head(seed: int = 0) -> np.ndarray:
    """A 64 x 64 x 32 field of view with a 32 x 32 x 24 synthetic head in its centre (air = 0)."""
    return np.pad(synthetic_head((32, 32, 24), seed), ((16, 16), (16, 16), (4, 4)))


def tiny_translation_bundle(folder: Path) -> Path:
    """``folder/bundle``: the shipped translation bundle's configs with a tiny random-weight generator
    (the shipped network made tiny, no full-resolution refiner: nothing trained, fast)."""
    import json
    import shutil

    import torch

    from monai_t1t2.nets.generators import build_generator

    bundle = folder / "bundle"
    shutil.copytree(REPO / "bundles" / "t1t2_translation" / "configs", bundle / "configs")
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["network_def"].update(channels=[4, 8], num_res_units=0, refine=0)
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    (bundle / "models").mkdir()
    torch.manual_seed(0)
    network = {k: v for k, v in config["network_def"].items() if k not in ("_target_", "spatial_dims")}
    torch.save(build_generator(**network).state_dict(), bundle / "models" / "model.pt")
    return bundle
