"""Whole-brain parcellation of a T1: brainchop MeshNets in PyTorch, or any MONAI bundle.

Pipeline (reproduces brainchop's ``inference-logic.js`` at commit 4c87885):

1. conform the T1 to 256^3 at 1 mm in FreeSurfer's ``LIA`` voxel order and scale intensities
   as niivue's ``conform`` does for brainchop (FreeSurfer's ``mri_convert --conform`` rule, as in
   FastSurfer's ``getscale``): input minimum to 0, the robust maximum (a 1000-bin histogram of the
   input voxels, 0.1 % of the non-zero voxels above it) to 255, clipped and floored to uint8, / 255;
2. min-max or quantile (5 %, 95 %) normalisation, as the model's entry in
   ``brainchop-parameters.js`` asks;
3. crop to the bounding box of a mask (intensity above ``autoThreshold * max``, or a pre-model's
   labels) plus ``cropPadding`` voxels: the network only sees the head, which also saves CPU time;
4. run the MeshNet on the crop (voxel axes i, j, k fed as D, H, W; brainchop's double transpose
   amounts to that), argmax over classes;
5. put the labels back into the 256^3 cube and resample them, nearest neighbour, onto the input grid.

Weights come from a brainchop folder (``model.json`` + ``.bin``) or from the ``.pt`` that
``monai-t1t2 import-brainchop`` writes; nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from monai_t1t2.errors import InvalidVolumeError, T1T2Error
from monai_t1t2.geometry import bounding_box, largest_component, resample_to_grid
from monai_t1t2.io import PathLike, file_sha256, read_torch_file, read_volume, save_torch, volume_stem, write_volume

REPO_ROOT = Path(__file__).resolve().parents[2]
BRAINCHOP_DIR_ENV = "MONAI_T1T2_BRAINCHOP_DIR"
DEFAULT_MODEL = "model30chan18cls"
# brainchop's grey/white tissue model: it labels the brain voxels the parcellation leaves "Unknown"
# (the blurry cortex of thick-slice scans; benchmarks/README.md at 8a776e7, "Labelled share of the brain").
DEFAULT_TISSUE_MODEL = "model5_gw_ae"
TISSUE_TO_LABEL = {"White Matter": "Cerebral-White-Matter", "Grey Matter": "Cerebral-Cortex"}
BRAIN_MASK_MODEL = "mindgrab"
MESHNET_FORMAT = "monai_t1t2.meshnet/1"
CONFORMED_SHAPE = (256, 256, 256)
# FreeSurfer's conformed voxel order; feeding the network an RAS volume gives mostly "Unknown".
CONFORMED_ORIENTATION = "LIA"
# How conform_t1 scales intensities: "freesurfer" (what brainchop is fed, the default) or
# "percentile" (the 99.5th percentile of the resampled head to 1, this package's rule before 0.6).
CONFORM_INTENSITIES = ("freesurfer", "percentile")
DEFAULT_CONFORM_INTENSITY = "freesurfer"
INTENSITY_PERCENTILE = 99.5
ROBUST_MAX_FRACTION = 0.999
# What brainchop assumes for a model that has no entry in brainchop-parameters.js.
DEFAULT_OPTIONS = {"enableQuantileNorm": False, "autoThreshold": 0.0, "cropPadding": 0, "preModel": None}

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    # tf.js layers' 'gelu' is the exact erf form, as is torch's default.
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=1),
}


# ----------------------------------------------------------------------------- network


class MeshNet(nn.Module):
    """A brainchop MeshNet: dilated 3D convolutions, optional instance norm, activations.

    Args:
        spec: layers in order, each a dict: ``{"type": "conv", "in_channels", "out_channels",
            "kernel_size", "dilation", "padding" ("same" | "valid"), "bias", "instance_norm"}``
            or ``{"type": "activation", "name": "elu" | "relu" | "gelu" | ...}``.
        label_names: class names, index = label value.
        preprocessing: brainchop options of this model (see :func:`brainchop_options`).

    Input ``(B, 1, D, H, W)``, output logits ``(B, num_classes, D, H, W)``.
    """

    def __init__(self, spec: Sequence[dict], label_names: Sequence[str] = (), preprocessing: dict | None = None):
        super().__init__()
        self.spec = [dict(layer) for layer in spec]
        self.label_names = list(label_names)
        self.preprocessing = {**DEFAULT_OPTIONS, **(preprocessing or {})}
        self.layers = nn.Sequential(*[module for layer in self.spec for module in _modules_of(layer)])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


def _modules_of(layer: dict) -> list[nn.Module]:
    if layer["type"] == "activation":
        if layer["name"] not in _ACTIVATIONS:
            raise T1T2Error(f"MeshNet: activation {layer['name']!r} is not supported ({', '.join(_ACTIVATIONS)})")
        return [_ACTIVATIONS[layer["name"]]()]
    kernel, dilation = layer["kernel_size"], layer["dilation"]
    # TF 'same' with stride 1 pads d*(k-1)/2 on each side for odd kernels.
    padding = [d * (k - 1) // 2 for k, d in zip(kernel, dilation)] if layer["padding"] == "same" else 0
    modules: list[nn.Module] = [
        nn.Conv3d(layer["in_channels"], layer["out_channels"], kernel, dilation=dilation,
                  padding=padding, bias=layer["bias"])
    ]
    if layer.get("instance_norm"):
        # brainchop normalises the output of every layer whose name ends in '_gn' (LayerNormInPlace):
        # per channel over the spatial axes, eps 1e-5, no affine parameters.
        modules.append(nn.InstanceNorm3d(layer["out_channels"], eps=1e-5, affine=False))
    return modules


# ----------------------------------------------------------------------------- importer


def _keras_layers(topology: dict, path: Path) -> list[dict]:
    model_config = topology.get("model_config", topology)
    config = model_config.get("config", {})
    layers = config["layers"] if isinstance(config, dict) else config
    if not isinstance(layers, list) or not layers:
        raise T1T2Error(f"{path}: modelTopology holds no layer list")
    names = [layer.get("config", {}).get("name", layer.get("name")) for layer in layers]
    for previous, layer in zip(names, layers[1:]):
        inbound = layer.get("inbound_nodes")
        if inbound and inbound[0][0][0] != previous:
            raise T1T2Error(f"{path}: layer {layer.get('name')} is not fed by {previous}; only chains are supported")
    return layers


def _read_manifest_weights(model_json: dict, folder: Path) -> dict[str, np.ndarray]:
    """All weights of a tf.js layers-model by name, read from its .bin shards in manifest order."""
    weights: dict[str, np.ndarray] = {}
    for group in model_json.get("weightsManifest", []):
        shards = []
        for shard in group["paths"]:
            shard_path = folder / shard
            if not shard_path.is_file():
                raise T1T2Error(f"{shard_path}: weight file named in model.json is missing")
            shards.append(shard_path.read_bytes())
        buffer, offset = b"".join(shards), 0
        for entry in group["weights"]:
            if entry.get("dtype", "float32") != "float32" or "quantization" in entry:
                raise T1T2Error(f"{folder}/model.json: weight {entry['name']} is not plain float32")
            count = int(np.prod(entry["shape"])) if entry["shape"] else 1
            end = offset + 4 * count
            if end > len(buffer):
                raise T1T2Error(f"{folder}: weight files end before {entry['name']} (truncated .bin?)")
            weights[entry["name"]] = np.frombuffer(buffer[offset:end], dtype="<f4").reshape(entry["shape"]).copy()
            offset = end
        if offset != len(buffer):
            raise T1T2Error(f"{folder}: {len(buffer) - offset} bytes of weights are not named in model.json")
    return weights


def _convert_layers(layers: list[dict], weights: dict[str, np.ndarray], path: Path):
    """Keras layer list -> (MeshNet spec, PyTorch state dict)."""
    spec: list[dict] = []
    state: dict[str, torch.Tensor] = {}
    module_index, in_channels = 0, None
    for layer in layers:
        kind, config = layer["class_name"], layer.get("config", {})
        name = config.get("name", layer.get("name"))
        if kind == "InputLayer":
            shape = config.get("batch_input_shape") or config.get("batchInputShape")
            if config.get("data_format", "channels_last") != "channels_last" and shape:
                in_channels = shape[1]
            else:
                in_channels = shape[-1] if shape else 1
        elif kind == "Conv3D":
            if config.get("data_format", "channels_last") != "channels_last":
                raise T1T2Error(f"{path}: layer {name} is channels_first; brainchop models are channels_last")
            if any(s != 1 for s in config.get("strides", [1, 1, 1])):
                raise T1T2Error(f"{path}: layer {name} has strides {config['strides']}; MeshNets use stride 1")
            kernel = weights.get(f"{name}/kernel")
            if kernel is None:
                raise T1T2Error(f"{path}: no weights '{name}/kernel' in the manifest")
            use_bias = bool(config.get("use_bias", True))
            conv = {"type": "conv", "in_channels": int(kernel.shape[3]), "out_channels": int(kernel.shape[4]),
                    "kernel_size": list(config["kernel_size"]), "dilation": list(config.get("dilation_rate", [1, 1, 1])),
                    "padding": config.get("padding", "valid"), "bias": use_bias,
                    "instance_norm": str(name).endswith("_gn"), "keras_name": name}
            if in_channels is not None and conv["in_channels"] != in_channels:
                raise T1T2Error(f"{path}: layer {name} expects {conv['in_channels']} channels, gets {in_channels}")
            spec.append(conv)
            # channels-last [kD, kH, kW, in, out] -> PyTorch [out, in, kD, kH, kW]
            state[f"layers.{module_index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)))
            if use_bias:
                state[f"layers.{module_index}.bias"] = torch.from_numpy(weights[f"{name}/bias"])
            module_index += 2 if conv["instance_norm"] else 1
            in_channels = conv["out_channels"]
            if config.get("activation", "linear") != "linear":
                spec.append({"type": "activation", "name": config["activation"]})
                module_index += 1
        elif kind == "Activation":
            spec.append({"type": "activation", "name": config["activation"]})
            module_index += 1
        elif kind in ("Dropout", "SpatialDropout3D"):
            continue  # identity at inference
        else:
            raise T1T2Error(f"{path}: layer type {kind} ({name}) is not supported by the MeshNet importer")
    return spec, state


def parse_brainchop_parameters(path: PathLike) -> dict[str, dict]:
    """Per-model options from brainchop's ``brainchop-parameters.js``, keyed by model folder name.

    The first entry of a model wins (brainchop lists the fast, high-memory variant first).
    ``preModel`` is the folder name of the model brainchop runs first to find the brain, or None.
    """
    text = Path(path).read_text(encoding="utf-8")
    # Split at each "id: N," (model names hold '\u{...}' escapes, so braces cannot delimit entries).
    parts = re.split(r"\bid:\s*(\d+)\s*,", text)
    entries = [(int(parts[i]), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    folder_of_id = {}
    for entry_id, body in entries:
        match = re.search(r"path:\s*'/models/([^/']+)/model\.json'", body)
        if match:
            folder_of_id[entry_id] = match.group(1)
    options: dict[str, dict] = {}
    for entry_id, body in entries:
        folder = folder_of_id.get(entry_id)
        if folder is None or folder in options:
            continue
        values = dict(re.findall(r"^\s*(enableQuantileNorm|autoThreshold|cropPadding|preModelId):\s*([\w.]+)", body, re.M))
        pre_model_id = values.get("preModelId", "null")
        options[folder] = {
            "enableQuantileNorm": values.get("enableQuantileNorm") == "true",
            "autoThreshold": float(values.get("autoThreshold", 0)),
            "cropPadding": int(values.get("cropPadding", 0)),
            "preModel": folder_of_id.get(int(pre_model_id)) if pre_model_id.isdigit() else None,
        }
    return options


def brainchop_options(folder: PathLike) -> dict:
    """brainchop's options for the model in ``folder`` (read from ``../brainchop-parameters.js``)."""
    folder = Path(folder)
    table_path = folder.parent / "brainchop-parameters.js"
    table = parse_brainchop_parameters(table_path) if table_path.is_file() else {}
    return {**DEFAULT_OPTIONS, **table.get(folder.name, {})}


def _colormap_labels(folder: Path, num_classes: int) -> list[str]:
    """Label names from the colormap of ``folder`` that has ``num_classes`` entries."""
    for candidate in sorted(folder.glob("colormap*.json")):
        labels = json.loads(candidate.read_text()).get("labels", [])
        if len(labels) == num_classes:
            return list(labels)
    return [f"label_{index}" for index in range(num_classes)]


def import_brainchop(folder: PathLike) -> MeshNet:
    """Build a :class:`MeshNet` from a brainchop tf.js folder (``model.json`` + ``.bin`` shards).

    Raises:
        T1T2Error: missing files, unsupported layers, or weights that do not match the topology.
    """
    folder = Path(folder)
    model_path = folder / "model.json"
    if not model_path.is_file():
        raise T1T2Error(f"{folder}: no model.json (not a brainchop tf.js model folder)")
    try:
        model_json = json.loads(model_path.read_text())
        layers = _keras_layers(model_json["modelTopology"], model_path)
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as err:
        raise T1T2Error(f"{model_path}: not a tf.js layers-model ({type(err).__name__}: {err})") from None
    spec, state = _convert_layers(layers, _read_manifest_weights(model_json, folder), model_path)
    num_classes = [layer for layer in spec if layer["type"] == "conv"][-1]["out_channels"]
    network = MeshNet(spec, _colormap_labels(folder, num_classes), brainchop_options(folder))
    network.load_state_dict(state)
    network.name = folder.name
    return network.eval()


def save_meshnet(network: MeshNet, path: PathLike, overwrite: bool = False) -> Path:
    """Write architecture spec, state dict, label names and preprocessing options to one ``.pt``."""
    path = Path(path)
    payload = {"format": MESHNET_FORMAT, "name": getattr(network, "name", path.stem), "spec": network.spec,
               "label_names": network.label_names, "preprocessing": network.preprocessing,
               "state_dict": network.state_dict()}
    return save_torch(payload, path, overwrite=overwrite)


def load_meshnet(path_or_dir: PathLike) -> MeshNet:
    """Load a MeshNet from a brainchop folder or from a ``.pt`` written by :func:`save_meshnet`."""
    path = Path(path_or_dir)
    if path.is_dir():
        return import_brainchop(path)
    if not path.is_file():
        raise T1T2Error(f"{path}: no such MeshNet file or brainchop folder")
    payload = read_torch_file(path)
    try:
        if payload.get("format") != MESHNET_FORMAT:
            raise KeyError("format")
        network = MeshNet(payload["spec"], payload["label_names"], payload["preprocessing"])
        network.load_state_dict(payload["state_dict"])
    except (KeyError, AttributeError, RuntimeError, TypeError, ValueError) as err:
        raise T1T2Error(f"{path}: not a MeshNet file from import-brainchop ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None
    network.name = payload.get("name", path.stem)
    return network.eval()


# ----------------------------------------------------------------------------- model lookup


def brainchop_dir() -> Path:
    """Folder of brainchop models: ``$MONAI_T1T2_BRAINCHOP_DIR`` or ``../shared/models/brainchop``."""
    return Path(os.environ.get(BRAINCHOP_DIR_ENV, REPO_ROOT.parent / "shared" / "models" / "brainchop"))


def is_bundle_dir(path: PathLike) -> bool:
    """True for a MONAI bundle folder (``configs/metadata.json`` and an inference config)."""
    path = Path(path)
    return (path / "configs" / "metadata.json").is_file() and any((path / "configs").glob("inference.*"))


def resolve_model_path(model: PathLike) -> Path:
    """Model name / folder / file -> an existing path (brainchop folder, ``.pt`` or bundle folder)."""
    path = Path(model)
    if path.exists():
        return path
    named = brainchop_dir() / str(model)
    if named.is_dir():
        return named
    raise T1T2Error(
        f"model {model!r}: not found as a file or folder, nor as {named} "
        f"(set {BRAINCHOP_DIR_ENV} to the folder holding brainchop's models)"
    )


# ----------------------------------------------------------------------------- preprocessing


def conformed_affine(affine: np.ndarray, shape) -> np.ndarray:
    """The affine of the conformed grid (:data:`CONFORMED_SHAPE` at 1 mm, :data:`CONFORMED_ORIENTATION`)
    for a volume of ``shape`` with ``affine``: nibabel's ``conform`` geometry (the input reoriented,
    its field of view's centre kept), computed without resampling."""
    from nibabel.affines import rescale_affine
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    shape = tuple(int(n) for n in shape)
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(CONFORMED_ORIENTATION))
    reoriented = affine @ inv_ornt_aff(transform, shape)
    reoriented_shape = [0, 0, 0]
    for old_axis, (new_axis, _) in enumerate(transform):
        reoriented_shape[int(new_axis)] = shape[old_axis]
    return rescale_affine(reoriented, reoriented_shape, (1.0, 1.0, 1.0), CONFORMED_SHAPE)


def robust_range(data: np.ndarray, f_high: float = ROBUST_MAX_FRACTION, bins: int = 1000) -> tuple[float, float]:
    """``(min, robust max)`` of ``data`` as FreeSurfer's conform finds them (FastSurfer ``getscale``,
    lower fraction 0): the minimum, and the histogram bin (of ``bins`` over the full range) that
    leaves ``1 - f_high`` of the non-zero voxels above it, two bins down."""
    data = np.asarray(data, dtype=np.float64)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return low, high
    counts, _ = np.histogram(data, bins)
    cumulative = np.concatenate(([0], np.cumsum(counts)))
    nonzero = int(np.count_nonzero(np.abs(data) >= 1e-15))
    first = int(np.flatnonzero(cumulative >= data.size - int((1.0 - f_high) * nonzero))[0])
    return low, low + (first - 2) * (high - low) / bins


def conform_t1(t1: MetaTensor, intensity: str = DEFAULT_CONFORM_INTENSITY) -> tuple[np.ndarray, np.ndarray]:
    """Resample a T1 ``(1, X, Y, Z)`` onto the conformed 256^3, 1 mm, LIA grid; scale to [0, 1].

    Args:
        intensity: ``"freesurfer"``: niivue's conform for brainchop (:func:`robust_range` of the
            input to 0..255, clipped, floored to uint8, / 255); ``"percentile"``: the resampled
            volume over the 99.5th percentile of its positive voxels, clipped to 1.

    Returns:
        ``(volume (256, 256, 256) float32, affine 4x4 of the conformed grid)``.
    """
    if intensity not in CONFORM_INTENSITIES:
        raise T1T2Error(f"conform intensity {intensity!r}: expected one of {', '.join(CONFORM_INTENSITIES)}")
    affine = np.asarray(t1.affine, dtype=np.float64)
    target = conformed_affine(affine, t1.shape[1:])
    data = np.asarray(t1[0].detach().cpu(), dtype=np.float32)
    volume = np.clip(resample_to_grid(data, affine, CONFORMED_SHAPE, target, order=1), 0, None)
    head = volume[volume > 0]
    if head.size == 0:
        raise InvalidVolumeError(f"{t1.meta.get('filename_or_obj', 'T1')}: no positive voxel to parcellate")
    if intensity == "percentile":
        scale = float(np.percentile(head, INTENSITY_PERCENTILE))
        return np.clip(volume / scale, 0.0, 1.0).astype(np.float32), target
    low, high = robust_range(data)
    if high <= low:  # a (nearly) constant volume: its full range, from 0
        low, high = min(float(data.min()), 0.0), float(data.max())
    # niivue's conform resamples, then scales and floors to uint8: brainchop sees 256 grey levels.
    scaled = np.floor(np.clip((volume - low) * (255.0 / (high - low)), 0.0, 255.0))
    return (scaled / 255.0).astype(np.float32), target


def normalize_intensity(volume: np.ndarray, quantile: bool) -> np.ndarray:
    """brainchop's normalisation over the whole cube: quantiles (5 %, 95 %) or min-max, to ~[0, 1]."""
    if quantile:
        ordered = np.sort(volume, axis=None)
        low = ordered[int(np.floor(ordered.size * 0.05))]
        high = ordered[int(np.ceil(ordered.size * 0.95)) - 1]
    else:
        low, high = float(volume.min()), float(volume.max())
    return ((volume - low) / max(high - low, 1e-8)).astype(np.float32)




def labels_to_input_grid(labels: np.ndarray, conformed: np.ndarray, t1: MetaTensor) -> MetaTensor:
    """Nearest-neighbour resampling of conformed labels back onto the grid of ``t1``: ``(1, X, Y, Z)``."""
    target_affine = np.asarray(t1.affine, dtype=np.float64)
    resampled = resample_to_grid(labels.astype(np.int16), conformed, t1.shape[1:], target_affine, order=0)
    array = torch.from_numpy(resampled.astype(np.int64))[None]
    return MetaTensor(array, affine=torch.as_tensor(target_affine), meta={"filename_or_obj": t1.meta.get("filename_or_obj")})


# ----------------------------------------------------------------------------- inference


def _as_t1(t1: PathLike | MetaTensor) -> MetaTensor:
    if isinstance(t1, MetaTensor):
        if t1.ndim != 4 or t1.shape[0] != 1:
            raise InvalidVolumeError(f"{t1.meta.get('filename_or_obj', 'T1')}: expected shape (1, X, Y, Z), got {tuple(t1.shape)}")
        return t1
    return read_volume(t1)


def _device_of(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def run_meshnet_conformed(
    network: MeshNet, conformed: np.ndarray, device: str | torch.device | None = None,
    crop_mask: np.ndarray | None = None,
) -> np.ndarray:
    """brainchop steps 2-4 on a conformed ``(256, 256, 256)`` [0, 1] volume; labels ``(256, 256, 256)``.

    Args:
        crop_mask: the brain as a pre-model found it; None uses the model's intensity threshold.
    """
    options = network.preprocessing
    volume = normalize_intensity(conformed, options["enableQuantileNorm"])
    if crop_mask is None:
        threshold = options["autoThreshold"]
        crop_mask = volume > threshold * volume.max() if 0 < threshold <= 1 else volume > 0
    box = bounding_box(crop_mask, int(options["cropPadding"]))
    device = _device_of(device)
    network = network.to(device)
    with torch.inference_mode():
        image = torch.from_numpy(np.ascontiguousarray(volume[box]))[None, None].to(device)
        cropped = network(image).argmax(dim=1)[0].to(torch.int16).cpu().numpy()
    labels = np.zeros(conformed.shape, dtype=np.int16)
    labels[box] = cropped
    return labels


def _pre_model_mask(network: MeshNet, conformed: np.ndarray, device) -> np.ndarray | None:
    """Brain mask from the model brainchop runs first (``preModelId``), when its folder is at hand."""
    name = network.preprocessing.get("preModel")
    if not name or not (brainchop_dir() / name).is_dir():
        return None
    return run_meshnet_conformed(load_meshnet(brainchop_dir() / name), conformed, device) > 0


@dataclass
class MeshNetParcellator:
    """A brainchop MeshNet with its brainchop preprocessing, callable on a T1.

    Args:
        model: brainchop model name (folder under :func:`brainchop_dir`), folder, or ``.pt``.
        device: torch device; None = CPU.
        intensity: how the conform scales the T1 (:func:`conform_t1`).
        tissue_model: a grey/white tissue MeshNet (brainchop's ``model5_gw_ae``: background, white
            matter, grey matter) whose classes fill the brain voxels the parcellation leaves
            "Unknown", as the parcellation's own ``Cerebral-White-Matter`` / ``Cerebral-Cortex``
            labels (:func:`fill_unknown_with_tissue`); None, a model without those two labels, or
            a tissue model that cannot be found (warned) leaves the parcellation as it is.
    """

    model: PathLike = DEFAULT_MODEL
    device: str | torch.device | None = None
    intensity: str = DEFAULT_CONFORM_INTENSITY
    tissue_model: PathLike | None = DEFAULT_TISSUE_MODEL
    network: MeshNet = field(init=False, repr=False)
    tissue_network: MeshNet | None = field(init=False, repr=False)

    def __post_init__(self):
        self.network = load_meshnet(resolve_model_path(self.model))
        self.tissue_network = None
        if self.tissue_model is not None and all(name in self.network.label_names for name in TISSUE_TO_LABEL.values()):
            try:
                self.tissue_network = load_meshnet(resolve_model_path(self.tissue_model))
            except T1T2Error as err:
                warnings.warn(f"tissue model not used, the parcellation keeps its Unknown voxels: {err}", stacklevel=2)

    @property
    def label_names(self) -> list[str]:
        return self.network.label_names

    @property
    def name(self) -> str:
        return getattr(self.network, "name", Path(str(self.model)).stem)

    @property
    def settings(self) -> str:
        """What, besides the model, decides the labels: ``<intensity>`` or ``<intensity>+<tissue model>``."""
        if self.tissue_network is None:
            return self.intensity
        return f"{self.intensity}+{getattr(self.tissue_network, 'name', None) or _model_key(self.tissue_model)}"

    def __call__(self, t1: PathLike | MetaTensor) -> MetaTensor:
        """Int labels ``(1, X, Y, Z)`` on the grid of ``t1``."""
        t1 = _as_t1(t1)
        conformed, affine = conform_t1(t1, self.intensity)
        labels = run_meshnet_conformed(self.network, conformed, self.device,
                                       _pre_model_mask(self.network, conformed, self.device))
        if self.tissue_network is not None:
            tissue = run_meshnet_conformed(self.tissue_network, conformed, self.device)
            labels = fill_unknown_with_tissue(labels, tissue, self.tissue_network.label_names, self.label_names,
                                              where=conformed > 0)
        return labels_to_input_grid(labels, affine, t1)


def fill_unknown_with_tissue(labels: np.ndarray, tissue: np.ndarray, tissue_names: Sequence[str],
                             label_names: Sequence[str], where: np.ndarray) -> np.ndarray:
    """Give the voxels of ``where`` that ``labels`` leaves 0 ("Unknown") the tissue class of ``tissue``,
    as the parcellation's label of that tissue (:data:`TISSUE_TO_LABEL`: white matter ->
    ``Cerebral-White-Matter``, grey matter -> ``Cerebral-Cortex``: the voxels a parcellation leaves
    unknown are mostly the outer cortical ribbon). Labels the parcellation gave are kept."""
    filled = labels.copy()
    unknown = (labels == 0) & np.asarray(where, bool)
    for tissue_name, label_name in TISSUE_TO_LABEL.items():
        if tissue_name in tissue_names:
            filled[unknown & (tissue == tissue_names.index(tissue_name))] = label_names.index(label_name)
    return filled


@dataclass
class BundleParcellator:
    """Any MONAI whole-brain segmentation bundle (e.g. wholeBrainSeg_Large_UNEST_segmentation).

    Uses the bundle's own ``network_def``, ``preprocessing`` (dictionary transforms on key
    ``image``) and ``inferer`` from ``configs/inference.json``, weights from ``models/model.pt``,
    and the label table of ``metadata.json`` (``network_data_format.outputs.pred.channel_def``).
    Labels are mapped back through the inverse of the preprocessing, then nearest-neighbour
    onto the input grid.
    """

    bundle_dir: PathLike
    device: str | torch.device | None = None

    def __post_init__(self):
        from monai.bundle import ConfigParser

        self.bundle_dir = Path(self.bundle_dir)
        config_file = next(iter(sorted((self.bundle_dir / "configs").glob("inference.*"))))
        parser = ConfigParser()
        parser.read_config(str(config_file))
        parser.read_meta(str(self.bundle_dir / "configs" / "metadata.json"))
        parser["bundle_root"] = str(self.bundle_dir)
        self._parser = parser
        weights = self.bundle_dir / "models" / "model.pt"
        if not weights.is_file():
            raise T1T2Error(f"{weights}: bundle has no weights")
        self.network = parser.get_parsed_content("network_def")
        state = read_torch_file(weights)
        try:
            self.network.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except (RuntimeError, KeyError, TypeError, AttributeError) as err:
            raise T1T2Error(f"{weights}: weights do not fit the bundle's network_def ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''})") from None
        self.network.eval()
        self.preprocessing = parser.get_parsed_content("preprocessing") if "preprocessing" in parser else None
        self.inferer = parser.get_parsed_content("inferer") if "inferer" in parser else None
        self.label_names = self._labels(parser)
        self.name = self.bundle_dir.name

    def _labels(self, parser) -> list[str]:
        try:
            channels = parser["_meta_"]["network_data_format"]["outputs"]["pred"]["channel_def"]
        except KeyError:
            raise T1T2Error(f"{self.bundle_dir}/configs/metadata.json: no outputs.pred.channel_def label table") from None
        table = {int(key): str(value) for key, value in channels.items()}
        return [table.get(index, f"label_{index}") for index in range(max(table) + 1)]

    def __call__(self, t1: PathLike | MetaTensor) -> MetaTensor:
        t1 = _as_t1(t1)
        source = t1.meta.get("filename_or_obj")
        if self.preprocessing is None or not isinstance(source, (str, os.PathLike)):
            raise T1T2Error(f"{self.bundle_dir}: bundle parcellation needs a T1 file and a 'preprocessing' config")
        data = self.preprocessing({"image": str(source)})
        device = _device_of(self.device)
        network = self.network.to(device)
        with torch.inference_mode():
            image = data["image"][None].to(device)
            logits = self.inferer(image, network) if self.inferer is not None else network(image)
        labels = logits.argmax(dim=1, keepdim=False)[0].cpu()
        meta = {key: value for key, value in data["image"].meta.items() if key != "affine"}
        prediction = MetaTensor(labels[None].float(), affine=data["image"].affine, meta=meta)
        prediction.applied_operations = list(data["image"].applied_operations)
        inverted = self.preprocessing.inverse({"image": prediction})["image"] if prediction.applied_operations else prediction
        image = nib.Nifti1Image(np.rint(np.asarray(inverted[0])).astype(np.int16), np.asarray(inverted.affine, dtype=np.float64))
        return labels_to_input_grid(np.asarray(image.dataobj), image.affine, t1)


def load_parcellator(model: PathLike = DEFAULT_MODEL, device: str | torch.device | None = None,
                     intensity: str = DEFAULT_CONFORM_INTENSITY, tissue_model: PathLike | None = DEFAULT_TISSUE_MODEL):
    """A callable ``T1 -> labels`` for a brainchop name, folder, ``.pt`` or MONAI bundle folder
    (``intensity`` and ``tissue_model``: see :class:`MeshNetParcellator`; a bundle has its own)."""
    path = resolve_model_path(model)
    if path.is_dir() and is_bundle_dir(path):
        return BundleParcellator(path, device=device)
    return MeshNetParcellator(path, device=device, intensity=intensity, tissue_model=tissue_model)


def parcellate(t1: PathLike | MetaTensor, model: PathLike = DEFAULT_MODEL, device: str | torch.device | None = None,
               intensity: str = DEFAULT_CONFORM_INTENSITY, tissue_model: PathLike | None = DEFAULT_TISSUE_MODEL) -> MetaTensor:
    """Parcellate a T1 into the model's labels.

    Args:
        t1: a T1 file or a ``MetaTensor`` ``(1, X, Y, Z)`` with an RAS affine. It should be
            skull-stripped (parcellation networks expect a brain); for a full head, multiply by
            :func:`predict_brain_mask` first.
        model: brainchop model name (default ``model30chan18cls``), folder, ``.pt``, or MONAI bundle folder.
        device: torch device; None = CPU.
        intensity: how a MeshNet's conform scales the T1 (:func:`conform_t1`).
        tissue_model: the tissue MeshNet that labels what the parcellation leaves unknown
            (:class:`MeshNetParcellator`); None keeps the parcellation alone.

    Returns:
        ``MetaTensor`` of int64 labels ``(1, X, Y, Z)`` on the grid of ``t1``; names: :func:`label_names`.

    Example:
        >>> labels = parcellate("../shared/data/paired/TCGA-DU-7294/t1.nii.gz")  # doctest: +SKIP
    """
    return load_parcellator(model, device=device, intensity=intensity, tissue_model=tissue_model)(t1)


def label_names(model: PathLike = DEFAULT_MODEL) -> list[str]:
    """Label names of a model, index = label value (brainchop ``colormap.json`` or bundle metadata)."""
    path = resolve_model_path(model)
    if path.is_dir() and is_bundle_dir(path):
        return BundleParcellator(path).label_names
    if path.is_dir():
        model_json = json.loads((path / "model.json").read_text()) if (path / "model.json").is_file() else None
        if model_json is None:
            raise T1T2Error(f"{path}: no model.json")
        outputs = [w["shape"][-1] for g in model_json["weightsManifest"] for w in g["weights"] if w["name"].endswith("/kernel")]
        return _colormap_labels(path, outputs[-1])
    return load_meshnet(path).label_names


def predict_brain_mask(t1: PathLike | MetaTensor, device: str | torch.device | None = None,
                       model: PathLike = BRAIN_MASK_MODEL) -> MetaTensor:
    """Brain mask of a T1 with or without skull (brainchop's ``mindgrab``).

    Returns:
        bool ``MetaTensor`` ``(1, X, Y, Z)`` on the grid of ``t1``.
    """
    labels = parcellate(t1, model=model, device=device)
    return MetaTensor(torch.from_numpy(largest_component(labels[0].numpy() > 0, connectivity=3))[None], affine=labels.affine,
                      meta={"filename_or_obj": labels.meta.get("filename_or_obj")})




# ----------------------------------------------------------------------------- cache, files, CLI


def _model_key(model: PathLike) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", volume_stem(model) if Path(str(model)).suffix else Path(str(model)).name)


@functools.lru_cache(maxsize=4)
def _loaded_parcellator(model: PathLike, device, intensity: str, tissue_model: PathLike | None):
    return load_parcellator(model, device=device, intensity=intensity, tissue_model=tissue_model)


def cached_parcellation(t1_path: PathLike, cache_dir: PathLike, model: PathLike = DEFAULT_MODEL,
                        device: str | torch.device | None = None, intensity: str = DEFAULT_CONFORM_INTENSITY,
                        tissue_model: PathLike | None = DEFAULT_TISSUE_MODEL) -> Path:
    """Parcellate once per file content and settings:
    ``<cache_dir>/<sha256 of file bytes>_<model>_<settings>.nii.gz`` (``settings``: the conform
    intensity rule and the tissue model, see :attr:`MeshNetParcellator.settings`).

    Returns the cached label file; computes and writes it (atomically) only when absent.

    Raises:
        T1T2Error: ``cache_dir`` cannot be written (e.g. it is the read-only shared data folder).
    """
    cache_dir = Path(cache_dir)
    # Loaded once per settings, not once per file: a datalist's worth of calls reuses the networks.
    parcellator = _loaded_parcellator(model, device, intensity, tissue_model)
    settings = getattr(parcellator, "settings", "bundle")
    target = cache_dir / f"{file_sha256(t1_path)}_{_model_key(model)}_{_model_key(settings)}.nii.gz"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(cache_dir, os.W_OK):
        raise T1T2Error(f"{cache_dir}: parcellation cache folder is not writable")
    labels = parcellator(t1_path)
    return write_volume(labels, target, reference=labels.affine.numpy(), overwrite=True, inputs=[t1_path], dtype=np.int16)
