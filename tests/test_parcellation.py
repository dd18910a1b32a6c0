"""Parcellation: brainchop importer equivalence, label mapping, cache, bundle, real-data plausibility."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from conftest import write_model_zoo_schema, BRAINCHOP, PAIRED, REPO, synthetic_head, write_nifti
from monai_t1t2 import io, parcellation
from monai_t1t2.nets import meshnet
from monai_t1t2.errors import T1T2Error
from monai_t1t2.regions import label_groups_table

HAS_BRAINCHOP = (BRAINCHOP / "model30chan18cls" / "model.json").is_file()
needs_brainchop = pytest.mark.skipif(not HAS_BRAINCHOP, reason=f"{BRAINCHOP} is absent")


# ----------------------------------------------------------------------------- independent reference


def read_tfjs_weights(folder: Path) -> dict[str, np.ndarray]:
    """The test's own reader of a tf.js manifest (not the module's), kernels kept channels-last."""
    manifest = json.loads((folder / "model.json").read_text())["weightsManifest"]
    weights = {}
    for group in manifest:
        buffer = np.concatenate([np.fromfile(folder / name, dtype="<f4") for name in group["paths"]])
        offset = 0
        for entry in group["weights"]:
            count = int(np.prod(entry["shape"]))
            weights[entry["name"]] = buffer[offset:offset + count].reshape(entry["shape"])
            offset += count
    return weights


def conv3d_direct(volume: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, dilation: int) -> np.ndarray:
    """'same' dilated convolution as a direct sum over kernel taps.

    volume ``(C_in, D, H, W)``; kernel channels-last ``[kD, kH, kW, C_in, C_out]``; returns ``(C_out, D, H, W)``.
    """
    size = kernel.shape[0]
    pad = dilation * (size - 1) // 2
    padded = np.pad(volume.astype(np.float64), [(0, 0)] + [(pad, pad)] * 3)
    depth, height, width = volume.shape[1:]
    out = np.zeros((kernel.shape[4], depth, height, width))
    for a in range(size):
        for b in range(size):
            for c in range(size):
                window = padded[:, a * dilation:a * dilation + depth, b * dilation:b * dilation + height,
                                c * dilation:c * dilation + width]
                out += np.einsum("io,idhw->odhw", kernel[a, b, c].astype(np.float64), window)
    if bias is not None:
        out += bias[:, None, None, None]
    return out


def activation_reference(name: str, x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return {"elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))),
            "relu": lambda v: np.maximum(v, 0),
            "gelu": lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2)))}[name](x)


def keras_forward(folder: Path, volume: np.ndarray) -> np.ndarray:
    """Forward pass of a tf.js MeshNet folder in numpy, read straight from model.json: ``(C, D, H, W)``."""
    topology = json.loads((folder / "model.json").read_text())["modelTopology"]["model_config"]["config"]["layers"]
    weights = read_tfjs_weights(folder)
    x = volume[None].astype(np.float64)
    for layer in topology:
        config = layer["config"]
        if layer["class_name"] == "Conv3D":
            x = conv3d_direct(x, weights[f"{config['name']}/kernel"], weights.get(f"{config['name']}/bias"),
                              config["dilation_rate"][0])
            if config["name"].endswith("_gn"):
                x = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(1, 2, 3), keepdims=True) + 1e-5)
        elif layer["class_name"] == "Activation":
            x = activation_reference(config["activation"], x)
    return x


def write_tiny_brainchop(folder: Path, seed: int = 0) -> Path:
    """A 3-class tf.js MeshNet: conv(_gn, dilation 2, no bias) - gelu - conv(dilation 1) - elu - 1x1x1 conv."""
    rng = np.random.default_rng(seed)
    layers = [{"class_name": "InputLayer", "config": {"batch_input_shape": [None, 256, 256, 256, 1], "name": "input"}}]
    shapes = [("conv_0_gn", 1, 4, 3, 2, False, "gelu"), ("conv_1", 4, 4, 3, 1, True, "elu"), ("output", 4, 3, 1, 1, True, None)]
    manifest, arrays = [], []
    previous = "input"
    for name, c_in, c_out, size, dilation, bias, activation in shapes:
        layers.append({"class_name": "Conv3D", "name": name, "inbound_nodes": [[[previous, 0, 0, {}]]],
                       "config": {"name": name, "filters": c_out, "kernel_size": [size] * 3, "strides": [1, 1, 1],
                                  "dilation_rate": [dilation] * 3, "padding": "same", "data_format": "channels_last",
                                  "activation": "linear", "use_bias": bias}})
        previous = name
        kernel = rng.normal(0, 0.5, (size, size, size, c_in, c_out)).astype("<f4")
        manifest.append({"name": f"{name}/kernel", "shape": list(kernel.shape), "dtype": "float32"})
        arrays.append(kernel)
        if bias:
            manifest.append({"name": f"{name}/bias", "shape": [c_out], "dtype": "float32"})
            arrays.append(rng.normal(0, 0.1, c_out).astype("<f4"))
        if activation:
            act_name = f"act_{name}"
            layers.append({"class_name": "Activation", "name": act_name, "inbound_nodes": [[[previous, 0, 0, {}]]],
                           "config": {"name": act_name, "activation": activation}})
            previous = act_name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(b"".join(a.tobytes() for a in arrays))
    model = {"format": "layers-model", "modelTopology": {"model_config": {"class_name": "Functional",
             "config": {"name": "tiny", "layers": layers}}},
             "weightsManifest": [{"paths": ["weights.bin"], "weights": manifest}]}
    (folder / "model.json").write_text(json.dumps(model))
    (folder / "colormap.json").write_text(json.dumps({"labels": ["Unknown", "Cerebral-White-Matter", "Cerebral-Cortex"]}))
    return folder


# ----------------------------------------------------------------------------- importer


def test_tiny_model_matches_direct_convolution(tmp_path):
    folder = write_tiny_brainchop(tmp_path / "tiny")
    network = meshnet.load_meshnet(folder)
    volume = np.random.default_rng(1).random((9, 10, 11)).astype(np.float32)
    with torch.inference_mode():
        logits = network(torch.from_numpy(volume)[None, None])[0].numpy()
    expected = keras_forward(folder, volume)
    assert logits.shape == expected.shape == (3, 9, 10, 11)
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    assert network.label_names == ["Unknown", "Cerebral-White-Matter", "Cerebral-Cortex"]


def test_saved_pt_round_trip_and_cli(tmp_path):
    folder = write_tiny_brainchop(tmp_path / "tiny")
    output = tmp_path / "tiny.pt"
    from monai_t1t2.cli import main

    assert main(["import-brainchop", str(folder), str(output)]) == 0
    original, reloaded = meshnet.load_meshnet(folder), meshnet.load_meshnet(output)
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.inference_mode():
        assert torch.equal(original(x), reloaded(x))
    assert reloaded.spec == original.spec and reloaded.label_names == original.label_names
    with pytest.raises(T1T2Error, match="exists"):
        parcellation.run_import_brainchop(folder, output)


def test_importer_rejects_unknown_layer_and_short_weights(tmp_path):
    folder = write_tiny_brainchop(tmp_path / "tiny")
    model = json.loads((folder / "model.json").read_text())
    model["modelTopology"]["model_config"]["config"]["layers"][2]["class_name"] = "MaxPooling3D"
    (folder / "model.json").write_text(json.dumps(model))
    with pytest.raises(T1T2Error, match="MaxPooling3D"):
        meshnet.load_meshnet(folder)
    folder = write_tiny_brainchop(tmp_path / "short")
    (folder / "weights.bin").write_bytes((folder / "weights.bin").read_bytes()[:-8])
    with pytest.raises(T1T2Error, match="short|truncated"):
        meshnet.load_meshnet(folder)


@needs_brainchop
@pytest.mark.parametrize("name", ["model30chan18cls", "mindgrab"])
def test_real_model_matches_direct_convolution(name):
    network = meshnet.load_meshnet(BRAINCHOP / name)
    volume = np.random.default_rng(2).random((12, 12, 12)).astype(np.float32)
    with torch.inference_mode():
        logits = network(torch.from_numpy(volume)[None, None])[0].numpy()
    np.testing.assert_allclose(logits, keras_forward(BRAINCHOP / name, volume), atol=1e-4)


@needs_brainchop
def test_brainchop_parameters_and_label_names():
    options = meshnet.parse_brainchop_parameters(BRAINCHOP / "brainchop-parameters.js")
    assert options["mindgrab"]["autoThreshold"] == 0.5 and options["mindgrab"]["cropPadding"] == 20
    assert options["model30chan50cls"]["enableQuantileNorm"] and options["model30chan50cls"]["preModel"] == "model5_gw_ae"
    names = meshnet.label_names("model30chan18cls")
    assert names == json.loads((BRAINCHOP / "model30chan18cls" / "colormap.json").read_text())["labels"]
    groups = label_groups_table(names)
    assert groups[names.index("Cerebral-White-Matter")] == 1 and groups[names.index("Thalamus")] == 3
    assert (groups[1:] > 0).all(), "every 18cls label maps to a region group"


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(meshnet.BRAINCHOP_DIR_ENV, str(tmp_path))
    with pytest.raises(T1T2Error, match="MONAI_T1T2_BRAINCHOP_DIR"):
        meshnet.load_parcellator("model30chan18cls")


# ----------------------------------------------------------------------------- geometry


def test_labels_return_to_input_grid_in_world_space():
    """Labels computed on the conformed LIA grid land on the right voxels of an oblique LPS input."""
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    affine[:3, 3] = [40, 40, -30]
    t1 = MetaTensor(torch.ones(1, 40, 40, 20), affine=torch.as_tensor(affine))
    conformed, conformed_affine = meshnet.conform_t1(t1)
    ijk = np.stack(np.meshgrid(*[np.arange(256)] * 3, indexing="ij"), -1)
    world_x = (ijk @ conformed_affine[:3, :3].T + conformed_affine[:3, 3])[..., 0]
    right = np.where(world_x > 0, 2, 1).astype(np.int16)
    labels = meshnet.labels_to_input_grid(right, conformed_affine, t1)[0].numpy()
    in_ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (40, 40, 20)], indexing="ij"), -1)
    input_x = (in_ijk @ affine[:3, :3].T + affine[:3, 3])[..., 0]
    away_from_midline = np.abs(input_x) > 1
    np.testing.assert_array_equal(labels[away_from_midline], np.where(input_x > 0, 2, 1)[away_from_midline])


def test_robust_range_ignores_a_few_hot_voxels():
    """FreeSurfer's conform range: 0.05 % of voxels 100x brighter than the brain do not set the maximum."""
    rng = np.random.default_rng(0)
    data = np.zeros((60, 60, 60), np.float32)
    data[5:55, 5:55, 5:45] = rng.uniform(1, 1000, (50, 50, 40))
    hot = rng.choice(data.size, 50, replace=False)
    data.flat[hot] = 1e5
    low, high = meshnet.robust_range(data)
    assert low == 0.0 and 500 < high < 1000
    # 0.1 % of the non-zero voxels lie above the robust maximum, as the rule asks
    assert (data > high).sum() >= 0.001 * np.count_nonzero(data)


def test_conform_intensity_rules():
    """The default rule gives niivue's 256 grey levels in [0, 1]; hot voxels do not dim the brain,
    as they would under a plain maximum; an unknown rule is refused."""
    rng = np.random.default_rng(1)
    data = np.zeros((40, 40, 40), np.float32)
    data[8:32, 8:32, 8:32] = rng.uniform(100, 200, (24, 24, 24))
    data[20, 20, 20] = 1e4
    t1 = MetaTensor(torch.from_numpy(data)[None], affine=torch.eye(4, dtype=torch.float64))
    conformed, _ = meshnet.conform_t1(t1)
    assert conformed.min() >= 0 and conformed.max() <= 1
    levels = np.unique(conformed)
    np.testing.assert_allclose(levels * 255, np.rint(levels * 255), atol=1e-4)
    assert np.median(conformed[conformed > 0]) > 0.5
    percentile, _ = meshnet.conform_t1(t1, "percentile")
    assert not np.allclose(percentile, conformed)
    with pytest.raises(T1T2Error, match="conform intensity"):
        meshnet.conform_t1(t1, "zscore")


def write_tiny_tissue_model(folder: Path) -> Path:
    """A tiny 3-class MeshNet with the class names of brainchop's grey/white tissue model."""
    write_tiny_brainchop(folder, seed=3)
    (folder / "colormap.json").write_text(json.dumps({"labels": ["background", "White Matter", "Grey Matter"]}))
    return folder


def test_fill_unknown_with_tissue_maps_tissue_to_the_parcellation_labels():
    names = ["Unknown", "Cerebral-White-Matter", "Cerebral-Cortex", "Thalamus"]
    labels = np.array([0, 0, 0, 3, 1, 0])
    tissue = np.array([1, 2, 0, 2, 2, 2])  # background, White Matter, Grey Matter
    where = np.array([1, 1, 1, 1, 1, 0], bool)
    filled = meshnet.fill_unknown_with_tissue(labels, tissue, ["background", "White Matter", "Grey Matter"], names, where)
    # unknown voxels take the tissue's label; labelled voxels, tissue background and voxels outside `where` keep theirs
    np.testing.assert_array_equal(filled, [1, 2, 0, 3, 1, 0])


def test_tissue_model_only_fills_unknown_voxels(tmp_path):
    """The tissue fallback changes only voxels the parcellation left 0, and the parcellator says it used it."""
    t1 = write_nifti(tmp_path / "t1.nii.gz", synthetic_head((24, 24, 20)))
    model, tissue = write_tiny_brainchop(tmp_path / "tiny"), write_tiny_tissue_model(tmp_path / "tissue")
    alone = meshnet.MeshNetParcellator(model, tissue_model=None)
    fused = meshnet.MeshNetParcellator(model, tissue_model=tissue)
    assert alone.settings == "freesurfer" and fused.settings == "freesurfer+tissue"
    before, after = alone(t1)[0].numpy(), fused(t1)[0].numpy()
    np.testing.assert_array_equal(after[before > 0], before[before > 0])
    assert (after > 0).sum() >= (before > 0).sum()
    other = write_tiny_brainchop(tmp_path / "other_names")
    (other / "colormap.json").write_text(json.dumps({"labels": ["BG", "Left-Thalamus", "Right-Thalamus"]}))
    assert meshnet.MeshNetParcellator(other, tissue_model=tissue).tissue_network is None  # nothing to map tissue to


# ----------------------------------------------------------------------------- cache


def test_cached_parcellation_computes_once(tmp_path, monkeypatch):
    model = write_tiny_brainchop(tmp_path / "tiny")
    t1 = write_nifti(tmp_path / "t1.nii.gz", synthetic_head((24, 24, 20)))
    calls = []
    real_call = meshnet.MeshNetParcellator.__call__
    monkeypatch.setattr(meshnet.MeshNetParcellator, "__call__", lambda self, t1: calls.append(t1) or real_call(self, t1))
    first = meshnet.cached_parcellation(t1, tmp_path / "cache", model=model, tissue_model=None)
    second = meshnet.cached_parcellation(t1, tmp_path / "cache", model=model, tissue_model=None)
    assert first == second and len(calls) == 1
    assert first.name == f"{io.file_sha256(t1)}_tiny_freesurfer.nii.gz"
    other = meshnet.cached_parcellation(t1, tmp_path / "cache", model=model, intensity="percentile", tissue_model=None)
    assert other.name == f"{io.file_sha256(t1)}_tiny_percentile.nii.gz" and len(calls) == 2
    tissue = write_tiny_tissue_model(tmp_path / "tissue")
    fused = meshnet.cached_parcellation(t1, tmp_path / "cache", model=model, tissue_model=tissue)
    assert fused.name == f"{io.file_sha256(t1)}_tiny_freesurfer_tissue.nii.gz" and len(calls) == 3
    image = nib.load(str(first))
    assert image.shape == (24, 24, 20) and np.allclose(image.affine, nib.load(str(t1)).affine)
    assert set(np.unique(np.asarray(image.dataobj))) <= {0, 1, 2}


# ----------------------------------------------------------------------------- MONAI bundles


def make_tiny_monai_bundle(folder: Path) -> Path:
    """A 3-class MONAI bundle (BasicUNet-free: a 1x1x1 conv) with its own label table."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    network = torch.nn.Conv3d(1, 3, 1)
    with torch.no_grad():
        network.weight[:] = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1, 1)
        network.bias[:] = torch.tensor([0.25, 0.0, -0.75])
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    inference = {
        "network_def": {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 3, "kernel_size": 1},
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "ScaleIntensityd", "keys": "image"}]},
        "inferer": {"_target_": "SimpleInferer"},
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(inference))
    metadata = {"version": "0.1.0", "network_data_format": {
        "inputs": {"image": {"type": "image", "num_channels": 1}},
        "outputs": {"pred": {"type": "image", "num_channels": 3,
                             "channel_def": {"0": "background", "1": "Left-Thalamus", "2": "Right-Thalamus"}}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    return folder


def test_monai_bundle_as_model(tmp_path):
    bundle = make_tiny_monai_bundle(tmp_path / "tinybundle")
    ramp = np.broadcast_to(np.linspace(0, 1, 16)[:, None, None], (16, 12, 10)).astype(np.float32)
    affine = np.diag([-1.5, -1.5, 2.0, 1.0])  # LPS, so the bundle's RAS reorientation must be undone
    t1 = write_nifti(tmp_path / "t1.nii.gz", ramp, affine)
    assert meshnet.label_names(bundle) == ["background", "Left-Thalamus", "Right-Thalamus"]
    labels = meshnet.parcellate(t1, model=bundle)[0].numpy()
    # logits: 0.25 - x, 0, x - 0.75 -> label 0 below x = 0.25, 1 in between, 2 above 0.75
    expected = np.where(ramp < 0.25, 0, np.where(ramp > 0.75, 2, 1))
    assert labels.shape == ramp.shape
    assert (labels == expected).mean() > 0.95


@needs_brainchop
def test_bundle_run_and_verify(tmp_path):
    """The shipped bundle runs through ``monai.bundle run`` on a small volume (its model.pt imported here)."""
    bundle = tmp_path / "brain_parcellation"
    subprocess.run(["cp", "-r", str(REPO / "bundles" / "brain_parcellation"), str(bundle)], check=True)
    (bundle / "models").mkdir(exist_ok=True)
    parcellation.run_import_brainchop(BRAINCHOP / "model30chan18cls", bundle / "models" / "model.pt", overwrite=True)
    dataset = tmp_path / "in"
    head = synthetic_head((28, 30, 24))
    write_nifti(dataset / "case.nii.gz", head, np.diag([3.0, 3.0, 3.0, 1.0]))
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
         "--bundle_root", str(bundle), "--dataset_dir", str(dataset), "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    labels = nib.load(str(tmp_path / "out" / "case_labels.nii.gz"))
    assert labels.shape == head.shape
    assert np.asarray(labels.dataobj).max() > 0


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.slow
@needs_brainchop
def test_real_subject_parcellation_is_plausible():
    t1 = PAIRED / "TCGA-DU-7294" / "t1.nii.gz"
    labels = meshnet.parcellate(t1)[0].numpy()
    names = meshnet.label_names()
    voxel_ml = float(np.prod(nib.load(str(t1)).header.get_zooms()[:3])) / 1000
    volume_ml = {name: float((labels == index).sum()) * voxel_ml for index, name in enumerate(names)}
    assert sum(v > 0 for v in volume_ml.values()) >= 16
    assert 250 < volume_ml["Cerebral-White-Matter"] < 700
    assert 300 < volume_ml["Cerebral-Cortex"] < 800
    assert 3 < volume_ml["Lateral-Ventricle"] < 120
    assert labels[nib.load(str(t1)).get_fdata() == 0].max() == 0 or (labels[nib.load(str(t1)).get_fdata() == 0] > 0).mean() < 0.01


def test_bundle_metadata_validates_offline(tmp_path):
    """MONAI's verify_metadata downloads its schema; offline we hand it a local schema of the fields
    the model zoo requires (our own transcription, not MONAI's file) so the command path still runs."""
    from monai.bundle import verify_metadata

    schema_path = write_model_zoo_schema(tmp_path / "schema.json")
    meta_file = REPO / "bundles" / "brain_parcellation" / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta_file), filepath=str(schema_path))
    metadata = json.loads(meta_file.read_text())
    assert metadata["version"] in metadata["changelog"]
    if HAS_BRAINCHOP:
        channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
        assert [channel_def[str(i)] for i in range(len(channel_def))] == meshnet.label_names("model30chan18cls")


def test_region_weight_map_favours_small_regions():
    from monai_t1t2.regions import region_weight_map

    groups = np.zeros((10, 10, 10), dtype=np.uint8)
    groups[:5] = 1          # 500 voxels of white matter
    groups[5, :2, :5] = 3   # 10 voxels of deep grey
    weights = region_weight_map(groups, clip=None)
    assert weights[5, 0, 0] > weights[0, 0, 0] > 0
    np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-6)
    clipped = region_weight_map(groups)
    assert clipped.min() >= 0.5 and clipped.max() <= 5.0
    custom = region_weight_map(groups, weights={"background": 0.1, 1: 2.0}, clip=None)
    assert custom[9, 9, 9] == np.float32(0.1) and custom[0, 0, 0] == 2.0
