"""Sliding-window translation of whole T1 volumes into synthetic T2 volumes.

Pipeline of :func:`translate`, for a T1 on any grid (orientation, voxel size, with or without skull):

1. brain mask on the input grid (:func:`monai_t1t2.masks.brain_mask`);
2. the model's ``preprocessing`` (MONAI dictionary transforms; by default those of
   :func:`monai_t1t2.transforms.translation_components`: crop to the brain's box plus a margin on
   the input grid, so a full-head or large-field volume is not resampled in full; RAS at 1 mm, the
   grid the network was trained on; percentile normalisation inside the mask, ``EVALUATION.md`` units);
3. the model's ``inferer`` (:func:`monai_t1t2.nets.generators.patch_inferer`: sliding window, Gaussian blending);
4. the model's ``postprocessing``: masked, brought back onto the input grid by the inverse of the
   preprocessing (``Invertd``), masked by the input-grid brain so the background stays exactly 0.

A bundle's ``configs/inference.json`` holds the three as config items, so they can be swapped there.

The brain mask and its rule are :mod:`monai_t1t2.masks`' (:func:`~monai_t1t2.masks.brain_mask`).

Before translating a file, :func:`translate_files` (``monai-t1t2 predict``, the bundle) checks that
the input is plausible (:func:`monai_t1t2.quality.input_problems`: the QC verdict, checked before the brain
mask is made, the brain mask's volume against an adult brain's, then its T1 contrast); otherwise the file is
refused with the reason (``force=True`` / ``--force`` translates it with a warning). The working set is
estimated from the headers before the network is loaded, and inputs that would not fit in memory are
refused. Every output says it is synthetic: NIfTI ``descrip`` and ``intent_name``, and a BIDS-style
JSON sidecar (package version, model and input SHA-256, mask method, QC verdict, date).

Output: float32 ``MetaTensor`` ``(1, X, Y, Z)`` on the input's grid with its affine, in normalised
T2 units ``[0, 1]`` (the 0.5th-99.5th percentile range of a T2 inside the brain), 0 outside the brain.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from monai_t1t2.errors import InvalidVolumeError, T1T2Error
from monai_t1t2.geometry import to_ras
from monai_t1t2.hardware import cpu_has_native_bf16, cpu_name
from monai_t1t2.io import PathLike, file_sha256, read_torch_file, read_volume, spacing_of, validate_array
from monai_t1t2.masks import brain_mask
from monai_t1t2.nets.generators import SliceWise, generator_entries, input_floor_of, patch_inferer, tails_calibrated_of
from monai_t1t2.uncertainty import CALIBRATION_FILE, MIRROR_OVERLAP, TrustCalibration, input_features, trust_features

# Package data (``importlib.resources``): ``monai_t1t2/bundles`` links to the top-level ``bundles/``; a wheel holds a copy.
DEFAULT_BUNDLE = Path(str(importlib.resources.files("monai_t1t2") / "bundles" / "t1t2_translation"))
# Working-set factors of translate(): float32 copies of the input grid and of the 1 mm network grid.
INPUT_GRID_COPIES, NETWORK_GRID_COPIES = 6, 12
# Arithmetic of the network's forward pass: Lightning's names for full float32 and for bfloat16 autocast.
PRECISIONS = ("32-true", "bf16-mixed")


# ----------------------------------------------------------------------------- the model


@dataclass
class Translator:
    """A generator in eval mode with its sliding-window ROI.

    Args:
        network: maps ``(B, 1, X, Y, Z)`` normalised T1 patches to T2 patches (3D), or
            ``(B, 1, X, Y)`` slices when ``spatial_dims == 2``.
        roi_size: sliding-window ROI in voxels at 1 mm; ``(P, P, 1)`` for a 2D network.
        spatial_dims: 3, or 2 for the slice-wise baseline.
        device: where the network runs.
        source: where it came from (for messages).
        preprocessing, inferer, postprocessing: the pipeline around the network (a bundle's config
            components); None: those of :func:`monai_t1t2.transforms.translation_components`.
        trust: the model's :class:`~monai_t1t2.uncertainty.TrustCalibration` (a bundle's
            ``models/trust_calibration.json``), None where it has none: then no interval can be given.
    """

    network: nn.Module
    roi_size: tuple[int, int, int]
    spatial_dims: int = 3
    device: torch.device = torch.device("cpu")
    source: str = ""
    preprocessing: Any = None
    inferer: Any = None
    postprocessing: Any = None
    trust: Any = None

    def __post_init__(self) -> None:
        self.roi_size = tuple(int(v) for v in self.roi_size)
        if len(self.roi_size) != 3:
            raise T1T2Error(f"{self.source or 'model'}: roi_size {self.roi_size} must have 3 entries")
        if self.spatial_dims == 2 and self.roi_size[2] != 1:
            raise T1T2Error(f"{self.source or 'model'}: a 2D network needs a (P, P, 1) roi_size, got {self.roi_size}")
        self.device = torch.device(self.device)
        self.network = self.network.to(self.device).eval()
        if self.spatial_dims == 3 and self.device.type == "cpu":
            # oneDNN's channels-last 3D convolutions: the same float32 output (to 2e-6) in about 0.8 of the
            # time on 2 CPU cores (benchmarks/README.md at 8a776e7, "Channels-last weights on the CPU"). On CUDA unmeasured.
            self.network = self.network.to(memory_format=torch.channels_last_3d)
        self._forward = SliceWise(self.network) if self.spatial_dims == 2 else self.network
        if self.preprocessing is None or self.inferer is None or self.postprocessing is None:
            default = pipeline_components({}, self.roi_size)
            for name, component in default.items():
                if getattr(self, name) is None:
                    setattr(self, name, component)

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y, Z)`` normalised T1 patches -> T2 patches of the same shape."""
        return self._forward(patches)


def pipeline_components(config: dict, roi_size: Sequence[int], sw_batch_size: int = 4, overlap: float = 0.5,
                        flip_axes: Sequence[int] = (), input_floor: float = 0.0, calibrate_tails: bool = False) -> dict:
    """``preprocessing``, ``inferer`` and ``postprocessing`` parsed from a bundle config (a dict of its
    items), each falling back to :func:`monai_t1t2.transforms.translation_components`' (with the T1
    ``input_floor`` the model was trained with, and its tails step when ``calibrate_tails``)."""
    from monai.bundle import ConfigParser

    from monai_t1t2.transforms import translation_components

    items = {"roi_size": list(roi_size), "sw_batch_size": sw_batch_size, "overlap": overlap, "flip_axes": list(flip_axes),
             **translation_components(input_floor=input_floor, calibrate_tails=calibrate_tails), **config}
    parser = ConfigParser(items)
    return {name: parser.get_parsed_content(name) for name in ("preprocessing", "inferer", "postprocessing")}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; asking for CUDA without one is a user error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise T1T2Error("--device cuda: no CUDA device is available here; use --device cpu")
    return device


def _load_state(network: nn.Module, weights: PathLike) -> nn.Module:
    weights = Path(weights)
    state = read_torch_file(weights)  # text, empty or truncated: T1T2Error "<path>: not a PyTorch weight file (...)"
    try:
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        network.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise T1T2Error(f"{weights}: weights do not fit the bundle's network_def ({type(err).__name__}: {first})") from None
    return network


def build_translator(network: nn.Module, weights: PathLike | None, roi_size: Sequence[int], spatial_dims: int = 3,
                     device: str | torch.device | None = None, preprocessing=None, inferer=None,
                     postprocessing=None) -> Translator:
    """A :class:`Translator` from a built network and a state-dict file (None keeps its weights).

    This is what a bundle's ``configs/inference.json`` instantiates (``network_def`` + ``models/model.pt``);
    a trust calibration beside the weights (``models/trust_calibration.json``) comes with it.
    """
    if weights is not None:
        if not Path(weights).is_file():
            raise T1T2Error(
                f"{weights}: no trained weights; train a model (monai-t1t2 train fit ...), export its generator "
                "(monai_t1t2.training.module.export_generator) to this path, or pass --model BUNDLE_DIR / CHECKPOINT.ckpt"
            )
        network = _load_state(network, weights)
    calibration = Path(weights).parent / CALIBRATION_FILE if weights is not None else None
    trust = TrustCalibration.load(calibration) if calibration is not None and calibration.is_file() else None
    return Translator(network, tuple(roi_size), spatial_dims, resolve_device(device), str(weights or "random weights"),
                      preprocessing, inferer, postprocessing, trust)


def _bundle_translator(bundle_dir: Path, device: str | torch.device | None, weights: Path | None = None) -> Translator:
    """Network and ROI from the bundle's ``configs/inference.json``, weights from ``models/model.pt``."""
    from monai.bundle import ConfigParser

    config_file = bundle_dir / "configs" / "inference.json"
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle_dir)
    try:
        network = parser.get_parsed_content("network_def")
        roi_size = parser.get_parsed_content("roi_size")
        spatial_dims = int(parser.get_parsed_content("spatial_dims")) if "spatial_dims" in parser else 3
        components = {name: parser.get_parsed_content(name) if name in parser else None
                      for name in ("preprocessing", "inferer", "postprocessing")}
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise T1T2Error(f"{config_file}: needs network_def, roi_size and spatial_dims, and valid preprocessing, "
                        f"inferer and postprocessing where given ({type(err).__name__}: {err})") from None
    return build_translator(network, weights or bundle_dir / "models" / "model.pt", roi_size, spatial_dims, device,
                            **components)


def _checkpoint_translator(checkpoint: Path, device: str | torch.device | None) -> Translator:
    """Generator of a ``monai-t1t2 train`` checkpoint, read without building the losses it was trained with."""
    from monai_t1t2.nets.generators import DEFAULT_GENERATOR
    from monai_t1t2.nets.generators import build_generator

    # A checkpoint holds Python objects (hyper-parameters), so weights_only=False: a .ckpt is trusted as the
    # user's own training output. Text, empty or truncated files: one T1T2Error line.
    state = read_torch_file(checkpoint, weights_only=False)
    try:
        hparams, weights = state["hyper_parameters"], state["state_dict"]
    except (KeyError, TypeError, IndexError) as err:
        raise T1T2Error(f"{checkpoint}: not a Lightning checkpoint of monai-t1t2 train (no {err})") from None
    spatial_dims = int(hparams.get("spatial_dims", 3))
    network = build_generator(spatial_dims=spatial_dims, **dict(hparams.get("generator") or DEFAULT_GENERATOR))
    try:
        network.load_state_dict(generator_entries(weights))
    except RuntimeError as err:
        raise T1T2Error(f"{checkpoint}: generator weights do not match its hyper-parameters ({err})") from None
    roi_size = tuple(hparams.get("patch_size", (64, 64, 64)))
    # The pipeline around it with the T1 input floor it was trained with, and the tails step when it was
    # validated with it (calibrate_tails): what export_bundle would write for it, so a checkpoint and its
    # exported bundle translate alike.
    components = pipeline_components({}, roi_size, input_floor=input_floor_of(state),
                                     calibrate_tails=tails_calibrated_of(state))
    return Translator(network, roi_size, spatial_dims, resolve_device(device), str(checkpoint), **components)


def load_translator(model: PathLike | Translator | None = None, device: str | torch.device | None = None) -> Translator:
    """Load a translation model.

    Args:
        model: ``None`` (the repository's ``bundles/t1t2_translation``), a bundle folder, the
            ``models/model.pt`` inside one, a Lightning ``.ckpt`` from ``monai-t1t2 train``, or a
            :class:`Translator` (returned as is).
        device: ``"cpu"``, ``"cuda"``; None = CUDA when available.

    Raises:
        T1T2Error: the model is missing, lacks weights, or is not one of the forms above.
    """
    if isinstance(model, Translator):
        return model
    path = Path(model) if model is not None else DEFAULT_BUNDLE
    if not path.exists():
        raise T1T2Error(f"model {path}: no such file or folder")
    if path.is_dir():
        if not (path / "configs" / "inference.json").is_file():
            raise T1T2Error(f"{path}: not a translation bundle (no configs/inference.json)")
        return _bundle_translator(path, device)
    if path.suffix == ".ckpt":
        return _checkpoint_translator(path, device)
    bundle_dir = path.parent.parent
    if path.parent.name == "models" and (bundle_dir / "configs" / "inference.json").is_file():
        return _bundle_translator(bundle_dir, device, weights=path)
    raise T1T2Error(f"{path}: a bare weight file has no architecture; pass its bundle folder "
                    "(configs/inference.json + models/model.pt) or a Lightning .ckpt from monai-t1t2 train")


def check_precision(precision: str, device: torch.device | None = None) -> str:
    """The precision to run: ``precision`` if it is one of :data:`PRECISIONS` and ``device`` can run it.

    ``"bf16-mixed"`` on a CPU without native bfloat16 (no AVX512-BF16 / AMX-BF16, e.g. an AVX2-only AMD
    EPYC) is emulated there and many times slower than float32: it falls back to ``"32-true"`` with one
    warning line on stderr (once per process). A CUDA device without bfloat16 is refused (T1T2Error).
    """
    if precision not in PRECISIONS:
        raise T1T2Error(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if precision != "bf16-mixed" or device is None:
        return precision
    if torch.device(device).type == "cuda" and not torch.cuda.is_bf16_supported():
        raise T1T2Error("--precision bf16-mixed: this CUDA device has no bfloat16; use --precision 32-true")
    if torch.device(device).type == "cpu" and not cpu_has_native_bf16():
        _warn_bf16_fallback()
        return "32-true"
    return precision


@functools.lru_cache(maxsize=1)
def _warn_bf16_fallback() -> None:
    print(f"monai-t1t2: warning: --precision bf16-mixed: this CPU ({cpu_name()}) has no native bfloat16 "
          "(AVX512-BF16 or AMX-BF16), where it is many times slower; running float32 (32-true) instead",
          file=sys.stderr)


def network_at(translator: Translator, precision: str = "32-true"):
    """The callable the sliding window runs: the translator itself for ``"32-true"``; for ``"bf16-mixed"``
    the translator under ``torch.autocast`` in bfloat16 (convolutions in bfloat16), its patches returned in
    float32 so the window blends them in float32."""
    if check_precision(precision, translator.device) == "32-true":
        return translator

    def forward(patches: torch.Tensor) -> torch.Tensor:
        with torch.autocast(translator.device.type, dtype=torch.bfloat16):
            return translator(patches).float()

    return forward


# ----------------------------------------------------------------------------- brain masks


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (None where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def estimated_working_set_bytes(shape: Sequence[int], spacing: Sequence[float]) -> int:
    """Upper estimate of :func:`translate`'s memory for a volume: copies of the input grid and of
    its whole field of view at 1 mm (the brain crop is smaller; this is the worst case)."""
    voxels = int(np.prod([int(n) for n in shape[:3]]))
    network_voxels = int(np.prod([math.ceil(n * s) for n, s in zip(shape[:3], spacing)]))
    return 4 * (INPUT_GRID_COPIES * voxels + NETWORK_GRID_COPIES * network_voxels)


def memory_problem(path: PathLike) -> str | None:
    """Why, from its header alone, a volume would not fit in memory to translate (None: it fits or cannot be told)."""
    import nibabel as nib

    available = available_memory_bytes()
    if available is None:
        return None
    try:
        header = nib.load(str(path)).header
        shape, spacing = header.get_data_shape(), header.get_zooms()[:3]
    except Exception:  # unreadable: read_volume names the problem when the file's turn comes
        return None
    if len(shape) < 3:
        return None
    needed = estimated_working_set_bytes(shape, spacing)
    if needed > 0.8 * available:
        return (f"{path}: {'x'.join(map(str, shape[:3]))} voxels need about {needed / 2**30:.1f} GiB to translate, "
                f"more than the {available / 2**30:.1f} GiB available; crop or downsample it first")
    return None


def check_memory(paths: Sequence[Path]) -> None:
    """Refuse, from the headers alone and before the network is loaded, inputs that would not fit in memory."""
    for path in paths:
        problem = memory_problem(path)
        if problem:
            raise T1T2Error(problem)


def model_file(model: PathLike | None) -> Path:
    """The weights file a ``model`` argument stands for (a bundle's ``models/model.pt``, or the file itself)."""
    path = Path(model) if model is not None else DEFAULT_BUNDLE
    return path / "models" / "model.pt" if path.is_dir() else path


def _as_mask(mask: PathLike | np.ndarray | torch.Tensor, t1: MetaTensor) -> torch.Tensor:
    """A caller's mask (file, array or tensor on the T1's grid) as bool ``(1, X, Y, Z)``."""
    if isinstance(mask, (str, os.PathLike)):
        from monai_t1t2.io import check_same_grid

        volume = read_volume(mask)
        check_same_grid(t1, volume)
        mask = volume
    mask = torch.as_tensor(np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)) > 0
    if mask.ndim == 3:
        mask = mask[None]
    if tuple(mask.shape[1:]) != tuple(t1.shape[1:]):
        raise InvalidVolumeError(f"mask of shape {tuple(mask.shape)} is not on the T1's grid {tuple(t1.shape)}")
    return mask


# ----------------------------------------------------------------------------- translation


def _as_volume(image: PathLike | np.ndarray | torch.Tensor, affine: np.ndarray | None) -> MetaTensor:
    """Path, array + affine, or MetaTensor -> validated float32 ``MetaTensor`` ``(1, X, Y, Z)``."""
    if isinstance(image, (str, os.PathLike)):
        return read_volume(image)
    if isinstance(image, MetaTensor) and affine is None:
        name = image.meta.get("filename_or_obj", "MetaTensor")
        array = validate_array(image.detach().cpu().numpy().squeeze(0) if image.ndim == 4 else image.detach().cpu().numpy(), name)
        from monai_t1t2.io import validate_affine

        affine = torch.as_tensor(validate_affine(image.affine, str(name)))
        return MetaTensor(torch.as_tensor(array, dtype=torch.float32)[None], affine=affine,
                          meta={"filename_or_obj": name})
    if affine is None:
        raise InvalidVolumeError("array input: pass its 4x4 voxel-to-RAS affine (translate(array, affine=...))")
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    array = validate_array(array[0] if array.ndim == 4 and array.shape[0] == 1 else array, "array")
    from monai_t1t2.io import validate_affine

    affine = validate_affine(affine, "array input")
    return MetaTensor(torch.as_tensor(array, dtype=torch.float32)[None], affine=torch.as_tensor(affine),
                      meta={"filename_or_obj": "array"})






def translate(
    image: PathLike | np.ndarray | torch.Tensor,
    model: PathLike | Translator | None = None,
    device: str | torch.device | None = None,
    affine: np.ndarray | None = None,
    mask: PathLike | np.ndarray | torch.Tensor | None = None,
    mask_method: str = "auto",
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    stages: dict[str, float] | None = None,
    flip_axes: Sequence[int] | None = None,
    calibrate_tails: bool | None = None,
    precision: str = "32-true",
    uncertainty: float | None = None,
) -> MetaTensor | TrustedTranslation:
    """Translate a T1-weighted volume into a synthetic T2-weighted volume on the same grid.

    Args:
        image: a volume file, a ``MetaTensor`` ``(1, X, Y, Z)`` (or ``(X, Y, Z)``) with its RAS
            affine, or a NumPy array / tensor ``(X, Y, Z)`` together with ``affine``.
        model: see :func:`load_translator` (default: the repository's ``t1t2_translation`` bundle);
            pass a loaded :class:`Translator` to translate many volumes without reloading.
        device: ``"cpu"`` / ``"cuda"``; None = CUDA when available.
        affine: 4x4 voxel-to-RAS (mm) affine of an array ``image``.
        mask: optional brain mask on the image's grid (file, array or tensor, > 0 inside);
            overrides ``mask_method``.
        mask_method: ``"auto"`` (:mod:`monai_t1t2.masks`), ``"nonzero"``, ``"network"`` or ``"head"``.
        overlap: sliding-window overlap in ``[0, 1)``; None: the model's inferer's (0.5 by default).
        sw_batch_size: patches per network call; None: the model's inferer's (4 by default).
        flip_axes: mirror test-time augmentation (:class:`~monai_t1t2.nets.generators.FlipAveragingInferer`):
            RAS axes to average over, e.g. ``[0]`` (left-right; one more pass of the network per axis); ``[]``: none;
            None: the model's inferer's (none by default). Measured on model 0.8.0
            (benchmarks/README.md at 8a776e7, "Mirror averaging"): SSIM higher on 10 of 12 test subjects, not on
            the 2 validation subjects.

        calibrate_tails: put the synthetic brain's 0.5th / 99.5th percentiles at 0 / 1, its 2nd-98th
            percentile range as the network wrote it (:class:`~monai_t1t2.transforms.CalibrateTails`);
            None: as the model's postprocessing does (:func:`tails_calibrated`).
        precision: the network's arithmetic, ``"32-true"`` (float32) or ``"bf16-mixed"`` (bfloat16
            autocast, :func:`network_at`). With model 0.16.0 on 2 Intel Xeon cores with AMX-bf16,
            ``"bf16-mixed"`` took the sliding window 7.7 s instead of 13.9 s per test volume, and moved
            brain SSIM by -0.00003 ± 0.00024 per test subject (benchmarks/README.md at 8a776e7, "bfloat16
            inference"). It is fast only where the hardware has bfloat16; on a CPU without it
            (AVX2 only) the network runs in float32 with a warning (:func:`check_precision`).
        stages: optional dict; the seconds spent resampling and in the network are added to its
            ``"resample"`` and ``"network"`` entries (the batch's per-stage timing).
        uncertainty: a level in ``(0.5, 0.995)`` (e.g. ``0.9``): also return the interval that holds
            the real T2 with that probability, per voxel (:mod:`monai_t1t2.uncertainty`: one more pass
            of the network, mirrored); needs a model with a trust calibration (the shipped bundle has one).

    Returns:
        float32 ``MetaTensor`` ``(1, X, Y, Z)`` with the input's affine; normalised T2 units in
        ``[0, 1]`` inside the brain, exactly 0 outside it. With ``uncertainty``: a
        :class:`TrustedTranslation` ``(synthetic, lower, upper)``, the three on that grid, each with
        ``meta["predicted_ssim"]`` (the brain SSIM the case is expected to reach) and
        ``meta["uncertainty_level"]``.

    Raises:
        InvalidVolumeError: unreadable or invalid input, or a mask on another grid.
        T1T2Error: a missing model, or an empty brain mask.

    Example:
        >>> t2 = translate("../shared/data/paired/TCGA-DU-7294/t1.nii.gz")  # doctest: +SKIP
        >>> t2.shape, t2.affine.shape  # doctest: +SKIP
        (torch.Size([1, 240, 240, 155]), torch.Size([4, 4]))
    """
    translator = load_translator(model, device)
    trust = trust_of(translator, uncertainty) if uncertainty is not None else None
    synthetic, features, inside = _translate_parts(image, translator, affine, mask, mask_method, overlap, sw_batch_size,
                                                   stages, flip_axes, calibrate_tails, precision, trust is not None)
    if trust is None:
        return synthetic
    scale = trust.scale(features)
    lower, upper = trust.interval(synthetic[0].numpy(), scale, inside, uncertainty)
    meta = {"predicted_ssim": trust.predicted_ssim(scale, inside), "uncertainty_level": float(uncertainty)}
    synthetic.meta.update(meta)
    bounds = [MetaTensor(torch.from_numpy(bound)[None], affine=synthetic.affine.clone(),
                         meta={"filename_or_obj": synthetic.meta["filename_or_obj"], **meta}) for bound in (lower, upper)]
    return TrustedTranslation(synthetic, *bounds)


def translate_with_features(image: PathLike | np.ndarray | torch.Tensor, model: PathLike | Translator | None = None,
                            device: str | torch.device | None = None, affine: np.ndarray | None = None,
                            mask: PathLike | np.ndarray | torch.Tensor | None = None,
                            mask_method: str = "auto") -> tuple[MetaTensor, np.ndarray, np.ndarray]:
    """The synthetic T2 (as :func:`translate` writes it), the trust map's scale features
    (:data:`monai_t1t2.uncertainty.FEATURES`, ``(6, X, Y, Z)``) and the brain mask, all on the input's
    grid: what :func:`monai_t1t2.uncertainty.fit_calibration` fits a model's trust calibration on."""
    return _translate_parts(image, load_translator(model, device), affine, mask, mask_method, None, None, None, None,
                            None, "32-true", True)


def _translate_parts(image, translator: Translator, affine, mask, mask_method, overlap, sw_batch_size, stages,
                     flip_axes, calibrate_tails, precision, with_features: bool):
    """:func:`translate`'s work: the synthetic T2, with ``with_features`` the trust features on the input grid
    (else None), and the input-grid brain as a bool array."""
    t1 = _as_volume(image, affine)
    name = t1.meta.get("filename_or_obj", "T1")
    network = network_at(translator, precision)
    inferer = translator.inferer
    if overlap is not None or sw_batch_size is not None or flip_axes is not None:
        try:
            inferer = patch_inferer(translator.roi_size, inferer.sw_batch_size if sw_batch_size is None else sw_batch_size,
                                    inferer.overlap if overlap is None else overlap,
                                    getattr(inferer, "flip_axes", ()) if flip_axes is None else flip_axes,
                                    progress=getattr(inferer, "progress", False))
        except ValueError as err:
            raise T1T2Error(str(err)) from None
    input_mask = _as_mask(mask, t1) if mask is not None else brain_mask(t1, mask_method, translator.device)
    if not input_mask.any():
        raise T1T2Error(f"{name}: the brain mask is empty; nothing to translate (pass a mask or another mask_method)")
    clock = StageClock(stages)
    brain = MetaTensor(input_mask.float(), affine=t1.affine.clone())
    data = translator.preprocessing({"image": t1, "brain": brain, "input_brain": brain.clone()})
    clock.lap("resample")
    with torch.inference_mode():
        prediction = inferer(data["image"][None].to(translator.device), network)[0].float().cpu()
        mirrored = _mirrored_prediction(translator, inferer, data["image"], network) if with_features else None
    clock.lap("network")
    postprocessing = translator.postprocessing
    if calibrate_tails is not None and calibrate_tails != tails_calibrated(postprocessing):
        postprocessing = with_tail_calibration(postprocessing, calibrate_tails)
    synthetic = _to_input_grid(postprocessing, data, prediction)
    clock.lap("resample")
    synthetic = MetaTensor(synthetic.as_tensor().float(), affine=t1.affine.clone(), meta={"filename_or_obj": name})
    inside = input_mask.cpu().numpy().reshape(synthetic.shape[1:]) > 0
    if not with_features:
        return synthetic, None, inside
    features = trust_features(prediction, mirrored, data["image"], data["brain"])
    features = _to_input_grid(with_tail_calibration(translator.postprocessing, False), data, features)
    own = input_features(t1.as_tensor()[0].cpu().numpy(), inside, spacing_of(t1.affine))
    clock.lap("resample")
    return synthetic, np.concatenate([features.as_tensor().numpy(), own]), inside


class TrustedTranslation(NamedTuple):
    """``translate(..., uncertainty=level)``: the synthetic T2 and the interval that holds the real T2 with
    probability ``level`` per voxel, three ``MetaTensor`` on the input's grid in the output's units."""

    synthetic: MetaTensor
    lower: MetaTensor
    upper: MetaTensor


def trust_of(translator: Translator, level: float) -> TrustCalibration:
    """The model's trust calibration, checked against ``level`` and the model's weights, before any work."""
    return _checked_trust(translator.trust, level, translator.source)


def check_uncertainty(level: float | None, model: PathLike | Translator | None) -> None:
    """Before any work: ``level`` is a probability the model's trust calibration covers, and the model has
    one made for its weights (read beside the weights, without loading the network). None: nothing to check."""
    if level is None:
        return
    if isinstance(model, Translator):
        trust_of(model, level)
        return
    path = Path(model) if model is not None else DEFAULT_BUNDLE
    weights = path / "models" / "model.pt" if path.is_dir() else path
    calibration = weights.parent / CALIBRATION_FILE
    _checked_trust(TrustCalibration.load(calibration) if calibration.is_file() else None, level, str(weights))


def _checked_trust(trust: TrustCalibration | None, level: float, weights: str) -> TrustCalibration:
    if trust is None:
        raise T1T2Error(f"{weights}: this model has no trust calibration ({CALIBRATION_FILE} beside its weights); "
                        "calibrate it (benchmarks/uncertainty.py --calibrate) or translate without --uncertainty")
    if not isinstance(level, (int, float)) or not math.isfinite(level):
        raise T1T2Error(f"--uncertainty-level {level}: a probability, e.g. 0.9")
    trust.quantile(float(level))  # refuses a level outside the calibrated table
    if trust.model_sha256 and Path(weights).is_file() and file_sha256(weights) != trust.model_sha256:
        raise T1T2Error(f"{weights}: its {CALIBRATION_FILE} was calibrated for other weights; "
                        "recalibrate it or translate without --uncertainty")
    return trust


def _mirrored_prediction(translator: Translator, inferer, image: torch.Tensor, network) -> torch.Tensor:
    """The network's output for the left-right mirrored T1 (RAS axis 0), mirrored back: one more sliding
    window, with :data:`~monai_t1t2.uncertainty.MIRROR_OVERLAP` (fewer windows than the prediction's)."""
    window = patch_inferer(translator.roi_size, inferer.sw_batch_size, MIRROR_OVERLAP,
                           progress=getattr(inferer, "progress", False))
    return window(image[None].flip(2).to(translator.device), network)[0].flip(1).float().cpu()


def _to_input_grid(postprocessing, data: dict, values: torch.Tensor) -> MetaTensor:
    """Network-grid ``values`` ``(C, X, Y, Z)`` through ``postprocessing`` (masks, the inverse of the
    preprocessing) onto the input's grid, with the T1's transform history for its ``Invertd``."""
    image = data["image"]
    staged = dict(data, pred=MetaTensor(values, meta=image.meta, applied_operations=image.applied_operations))
    return postprocessing(staged)["pred"]


def tails_calibrated(postprocessing) -> bool:
    """Whether a pipeline's ``postprocessing`` (a ``Compose``) holds :class:`~monai_t1t2.transforms.CalibrateTailsd`."""
    from monai_t1t2.transforms import CalibrateTailsd

    return any(isinstance(t, CalibrateTailsd) for t in getattr(postprocessing, "transforms", ()))


def with_tail_calibration(postprocessing, calibrate: bool):
    """A copy of a ``Compose`` postprocessing with :class:`~monai_t1t2.transforms.CalibrateTailsd` removed,
    or added as its last step (on the input grid's brain)."""
    from monai.bundle import ConfigComponent
    from monai.transforms import Compose

    from monai_t1t2.transforms import TAIL_STEP, CalibrateTailsd

    if not hasattr(postprocessing, "transforms"):
        raise T1T2Error("calibrate_tails: the model's postprocessing is not a Compose; edit it in its bundle config")
    steps = [t for t in postprocessing.transforms if not isinstance(t, CalibrateTailsd)]
    if calibrate:
        steps.append(ConfigComponent(TAIL_STEP).instantiate())  # as the bundle config instantiates it
    return Compose(steps)


class StageClock:
    """Adds the seconds since the last lap to ``stages[name]`` (no-op without a dict)."""

    def __init__(self, stages: dict[str, float] | None) -> None:
        import time

        self.stages, self.time = stages, time.perf_counter
        self.last = self.time()

    def reset(self) -> None:
        self.last = self.time()

    def lap(self, name: str) -> None:
        now = self.time()
        if self.stages is not None:
            self.stages[name] = self.stages.get(name, 0.0) + now - self.last
        self.last = now


# ----------------------------------------------------------------------------- files and CLI


def save_translation_png(t1: MetaTensor, synthetic: MetaTensor | None, path: PathLike, title: str = "",
                         width: MetaTensor | None = None, level: float | None = None, dpi: int = 90) -> Path:
    """Three-plane PNG: T1 above synthetic T2 (T1 alone when ``synthetic`` is None), reoriented to RAS; with
    ``width`` (``upper - lower`` of the ``level`` interval) a third row: the width over the T1 (bright: not to be
    trusted); ``dpi``: :func:`monai_t1t2.viz.save_three_plane_png`'s."""
    from monai_t1t2.viz import save_three_plane_png

    volumes = [to_ras(MetaTensor(v.as_tensor(), affine=v.affine.clone())) for v in (t1, synthetic) if v is not None]
    titles = ["T1", "synthetic T2"][:len(volumes)]
    overlays = None
    if width is not None:
        volumes.append(volumes[0])
        titles.append(f"{level:g} interval width on T1" if level is not None else "interval width on T1")
        overlays = [None] * (len(volumes) - 1) + [to_ras(MetaTensor(width.as_tensor(), affine=width.affine.clone()))]
    return save_three_plane_png(path, volumes, titles, title=title, spacing=spacing_of(volumes[0].affine), overlays=overlays,
                                dpi=dpi)


def describe(translator: Translator) -> dict[str, Any]:
    """Plain summary of a loaded model (for logs and benchmarks)."""
    parameters = sum(p.numel() for p in translator.network.parameters())
    return {"source": translator.source, "roi_size": list(translator.roi_size), "spatial_dims": translator.spatial_dims,
            "parameters": parameters, "device": str(translator.device)}
