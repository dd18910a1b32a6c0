"""Generator (and discriminator) construction from plain config values.

Generators map a normalised T1 patch ``(B, 1, X, Y, Z)`` (or ``(B, 1, X, Y)`` for the 2D
baseline) to a T2 patch of the same shape in ``[0, 1]``-ish units (sigmoid output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from monai.inferers import Inferer
from monai.networks.nets import UNet
from torch import nn

from monai_t1t2.errors import T1T2Error
from monai_t1t2.transforms import at_input_floor


#: The generator a module or a checkpoint gets when no ``generator`` settings are given (the one
#: place the default architecture is written; the shipped recipes name theirs in ``configs/``).
DEFAULT_GENERATOR = {"name": "unet", "channels": [16, 32, 64, 128], "num_res_units": 2, "norm": "instance", "head": "sigmoid"}


class Generator(nn.Module):
    """A MONAI backbone with an output head that keeps predictions in normalised T2 units.

    Two heads:

    - ``"sigmoid"``: ``sigmoid(backbone(t1))``.
    - ``"residual"``: ``prior(t1) + gate * backbone(t1)``, where ``prior`` is the inverted T1
      inside the brain (``1 - t1`` where ``t1 > 0``, else 0: the protocol's floor, EVALUATION.md)
      and ``gate`` a learnable scalar that starts at 0 (ReZero, Bachlechner et al. 2020). Training
      starts exactly at the floor and learns the correction, so the network keeps the T1's
      anatomy sharp from the first step and spends its few CPU steps on the contrast.
      In eval mode the output is clamped to ``[0, 1]``.

    With ``mask_input``, the T1 must come with the input floor (:data:`~monai_t1t2.transforms.INPUT_FLOOR`
    on every brain voxel, 0 outside: the data module's and the bundle's ``input_floor``). The backbone
    then sees two channels, the T1 and the brain mask ``t1 > 0``, so it can tell the brain's darkest
    voxels (ventricular CSF or the skull-stripped rim, at the floor) from the background and the rim
    from the CSF; the prior stays 0 at the floor as without it. A one-channel model's weights load
    into it with :func:`expand_input_channels` (the mask's weights 0), so a fine-tune starts from
    exactly what that model computes on the T1.

    With ``refine > 0`` (residual head only) a small full-resolution network follows: three 3^3
    convolutions (``refine`` channels) read the T1 and the residual head's output and add their
    correction through a second gate that starts at 0 (ReZero again). MONAI's ``UNet`` computes its
    full-resolution output from half-resolution features alone, through one stride-2 transposed
    convolution to a single channel; that convolution writes a 2-voxel ripple (benchmarks/README.md at 8a776e7,
    "bf16-mixed and a full-resolution refiner"). The refiner sees every voxel of the T1 and that
    output, so it can remove the ripple and add detail at the T1's own resolution; a model without it
    loads into one with it (:func:`add_refiner`) and starts from exactly what it computed.

    Args:
        backbone: any MONAI network with one output channel, and one input channel (two with ``mask_input``).
        head: ``"sigmoid"`` or ``"residual"``.
        mask_input: give the backbone the brain mask as a second channel (needs the input floor).
        refine: channels of the full-resolution refiner (0: none; residual head only).
        spatial_dims: 3, or 2 for the slice-wise baseline (the refiner's convolutions).
    """

    def __init__(self, backbone: nn.Module, head: str = "sigmoid", mask_input: bool = False, refine: int = 0,
                 spatial_dims: int = 3) -> None:
        super().__init__()
        if head not in ("sigmoid", "residual"):
            raise ValueError(f"unknown generator head '{head}': choose sigmoid or residual")
        if refine < 0 or (refine and head != "residual"):
            raise ValueError(f"refine {refine}: a refiner needs the residual head and a positive channel count")
        self.backbone, self.head, self.mask_input, self.refine = backbone, head, mask_input, int(refine)
        if head == "residual":
            self.gate = nn.Parameter(torch.zeros(()))
        if self.refine:
            conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
            inputs = (2 if mask_input else 1) + 1  # the T1 (and mask) and the residual head's output
            self.refiner = nn.Sequential(conv(inputs, self.refine, 3, padding=1), nn.PReLU(),
                                         conv(self.refine, self.refine, 3, padding=1), nn.PReLU(),
                                         conv(self.refine, 1, 3, padding=1))
            self.refine_gate = nn.Parameter(torch.zeros(()))

    def forward(self, t1: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *spatial)`` normalised T1 in ``[0, 1]`` -> synthetic T2 of the same shape."""
        features = torch.cat([t1, (t1 > 0).to(t1.dtype)], 1) if self.mask_input else t1
        if self.head == "sigmoid":
            return torch.sigmoid(self.backbone(features))
        lit = ~at_input_floor(t1) if self.mask_input else t1 > 0
        prior = torch.where(lit, 1.0 - t1, torch.zeros_like(t1))
        output = prior + self.gate * self.backbone(features)
        if self.refine:
            output = output + self.refine_gate * self.refiner(torch.cat([features, output], 1))
        return output if self.training else output.clamp(0.0, 1.0)


def build_generator(
    name: str = DEFAULT_GENERATOR["name"],
    spatial_dims: int = 3,
    channels: Sequence[int] = tuple(DEFAULT_GENERATOR["channels"]),
    num_res_units: int = DEFAULT_GENERATOR["num_res_units"],
    norm: str = DEFAULT_GENERATOR["norm"],
    dropout: float = 0.0,
    feature_size: int = 24,
    img_size: Sequence[int] = (64, 64, 64),
    head: str = DEFAULT_GENERATOR["head"],
    mask_input: bool = False,
    refine: int = 0,
) -> Generator:
    """Build a generator by name.

    Args:
        name: ``"unet"`` (MONAI ``UNet``, residual units), ``"dynunet"`` (MONAI ``DynUNet``,
            nnU-Net-style) or ``"swinunetr"`` (MONAI ``SwinUNETR``, 3D only).
        spatial_dims: 3 for the 3D model, 2 for the slice-wise baseline (same family, same loss).
        channels: feature channels per resolution level (UNet / DynUNet).
        num_res_units: residual units per level (UNet).
        norm: normalisation layer (``"instance"``, ``"batch"``); batch norm becomes SyncBatchNorm under DDP.
        dropout: dropout probability.
        feature_size, img_size: SwinUNETR only.
        head: output head of :class:`Generator` (``"sigmoid"`` or ``"residual"``).
        mask_input: the brain mask as a second input channel (:class:`Generator`; needs the T1 input floor).
        refine: channels of a full-resolution refiner after the residual head (:class:`Generator`; 0: none).
    """
    name = name.lower()
    in_channels = 2 if mask_input else 1
    if name == "unet":
        backbone = UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, channels=tuple(channels),
                        strides=(2,) * (len(channels) - 1), num_res_units=num_res_units, norm=norm, dropout=dropout)
    elif name == "dynunet":
        from monai.networks.nets import DynUNet

        levels = len(channels)
        backbone = DynUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, kernel_size=[3] * levels,
                           strides=[1] + [2] * (levels - 1), upsample_kernel_size=[2] * (levels - 1),
                           filters=list(channels), norm_name=norm, dropout=dropout or None, res_block=True)
    elif name == "swinunetr":
        from monai.networks.nets import SwinUNETR

        if spatial_dims != 3:
            raise ValueError("swinunetr is built in 3D only")
        backbone = SwinUNETR(in_channels=in_channels, out_channels=1, feature_size=feature_size, spatial_dims=3)
    else:
        raise ValueError(f"unknown generator '{name}': choose unet, dynunet or swinunetr")
    return Generator(backbone, head=head, mask_input=mask_input, refine=refine, spatial_dims=spatial_dims)


def build_discriminator(spatial_dims: int = 3, channels: int = 32, num_layers_d: int = 3) -> nn.Module:
    """pix2pix-style conditional PatchGAN (MONAI ``PatchDiscriminator``) on ``cat(T1, T2)``."""
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=spatial_dims, num_layers_d=num_layers_d, channels=channels,
                              in_channels=2, out_channels=1, norm="INSTANCE")


class SliceWise(nn.Module):
    """Apply a 2D network to ``(B, C, X, Y, 1)`` patches (the slice-wise baseline)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.network(patches[..., 0])[..., None]


class FlipAveragingInferer(Inferer):
    """Test-time augmentation around a sliding window: the mean of ``inferer(volume)`` and, for each
    axis in ``flip_axes``, ``inferer`` on the volume mirrored along that spatial axis, mirrored back.

    Axes count the spatial dimensions of ``(B, C, X, Y, Z)`` from 0; the package's preprocessing puts
    volumes in RAS, so ``(0,)`` is the left-right mirror (the brain's near-symmetry). Each axis costs one
    more pass of the sliding window. ``roi_size``, ``sw_batch_size`` and ``overlap`` are the wrapped
    inferer's (:func:`patch_inferer` builds it).
    """

    def __init__(self, inferer: Inferer, flip_axes: Sequence[int]) -> None:
        super().__init__()
        self.inferer = inferer
        self.flip_axes = tuple(int(axis) for axis in flip_axes)

    def __getattr__(self, name: str) -> Any:
        if name in ("roi_size", "sw_batch_size", "overlap", "mode", "progress"):
            return getattr(self.inferer, name)
        raise AttributeError(name)

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any) -> torch.Tensor:
        total = self.inferer(inputs, network, *args, **kwargs)
        for axis in self.flip_axes:
            dim = 2 + axis
            total = total + self.inferer(inputs.flip(dim), network, *args, **kwargs).flip(dim)
        return total / (1 + len(self.flip_axes))


def patch_inferer(roi_size: Sequence[int], sw_batch_size: int = 4, overlap: float = 0.5,
                  flip_axes: Sequence[int] = (), progress: bool = False):
    """The sliding window that applies a patch-trained generator to a whole volume: MONAI
    ``SlidingWindowInferer`` with Gaussian blending of the overlaps and zero padding; with
    ``flip_axes``, wrapped in :class:`FlipAveragingInferer` (mirror test-time augmentation); ``progress``:
    MONAI's tqdm bar over the windows.

    The one inferer of the package: training's validation, :func:`monai_t1t2.inference.translation.translate`
    and the translation bundle's ``inferer`` component all build theirs here.

    Raises:
        ValueError: ``overlap`` outside ``[0, 1)``, ``sw_batch_size`` below 1, or a flip axis not in
            0, 1, 2 (or repeated).
    """
    from monai.inferers import SlidingWindowInferer

    if not 0 <= overlap < 1:
        raise ValueError(f"overlap {overlap}: must be in [0, 1)")
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size {sw_batch_size}: must be at least 1")
    flip_axes = tuple(flip_axes or ())
    if any(axis not in (0, 1, 2) for axis in flip_axes) or len(set(flip_axes)) != len(flip_axes):
        raise ValueError(f"flip_axes {list(flip_axes)}: spatial axes 0, 1, 2, each at most once")
    inferer = SlidingWindowInferer(roi_size=tuple(int(v) for v in roi_size), sw_batch_size=int(sw_batch_size),
                                   overlap=float(overlap), mode="gaussian", padding_mode="constant", cval=0.0,
                                   progress=bool(progress))
    return FlipAveragingInferer(inferer, flip_axes) if flip_axes else inferer


def generator_weights(source: str | Path) -> dict[str, torch.Tensor]:
    """The generator's plain state dict from a bundle directory (its ``models/model.pt``), a
    ``models/model.pt`` file or a ``monai-t1t2 train`` Lightning checkpoint (``generator.*`` entries)."""
    source = Path(source)
    path = source / "models" / "model.pt" if source.is_dir() else source
    if not path.is_file():
        raise T1T2Error(f"{source}: no weights there (give a bundle directory, its models/model.pt or a .ckpt)")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=False)
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise T1T2Error(f"{path}: not a PyTorch weights file ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = generator_entries(state["state_dict"])
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise T1T2Error(f"{path}: holds no state dict of tensors")
    return state


def expand_input_channels(weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` of a one-input-channel generator made to fit ``own`` (its state dict) where ``own``
    takes more input channels: each tensor that reads the input (a convolution weight with one input
    channel) and differs from ``own``'s only there is padded with zeros, so the added channels start
    with no effect. Any other difference is left for the caller's shape check."""
    out = dict(weights)
    for key, target in own.items():
        source = weights.get(key)
        if (source is None or source.dim() < 3 or source.dim() != target.dim() or source.shape[1] != 1
                or target.shape[1] <= 1 or source.shape[0] != target.shape[0] or source.shape[2:] != target.shape[2:]):
            continue
        padded = torch.zeros(target.shape, dtype=source.dtype)
        padded[:, : source.shape[1]] = source
        out[key] = padded
    return out


def add_refiner(weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` of a generator without a refiner made to fit ``own`` (the state dict of one with it):
    the refiner's entries are taken from ``own`` (its fresh initialisation) with its gate at 0, so the
    refined generator starts from exactly what ``weights`` compute. Weights that already hold a refiner
    are returned as they are."""
    if any(key.startswith("refiner.") for key in weights) or "refine_gate" not in own:
        return weights
    out = dict(weights)
    out.update({key: value for key, value in own.items() if key.startswith("refiner.")})
    out["refine_gate"] = torch.zeros_like(own["refine_gate"])
    return out


def input_floor_of(checkpoint_state: dict[str, Any]) -> float:
    """The T1 input floor a checkpoint's model was trained with (its data module's ``input_floor``);
    checkpoints from before the setting existed were trained with 0."""
    return float((checkpoint_state.get("datamodule_hyper_parameters") or {}).get("input_floor", 0.0))


def tails_calibrated_of(checkpoint_state: dict[str, Any]) -> bool:
    """Whether a checkpoint's model was validated with the output's tails step (its ``calibrate_tails``
    hyper-parameter); checkpoints from before the setting existed were not."""
    return bool(checkpoint_state["hyper_parameters"].get("calibrate_tails", False))


def generator_entries(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A Lightning state dict's ``generator.*`` entries without the prefix (others as they are)."""
    if not any(key.startswith("generator.") for key in state_dict):
        return state_dict
    return {key[len("generator."):]: value for key, value in state_dict.items() if key.startswith("generator.")}
