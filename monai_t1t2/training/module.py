"""The LightningModule: 3D (or, as a baseline, 2D slice-wise) T1 -> T2 translation.

Training runs on brain-only patches from :class:`~monai_t1t2.training.data.PairedDataModule`;
validation translates whole held-out volumes with the package's sliding window (``patch_inferer``)
(Gaussian blending) and logs the brain-masked PSNR / SSIM / MAE of ``EVALUATION.md`` and, over the
cases with a tumour mask, the tumour / non-tumour SSIM and (with a parcellation) the tumour contrast error.
The 2D baseline is the same code with ``spatial_dims: 2`` and a ``(P, P, 1)`` patch: the
generator then sees one axial slice at a time, in training and in the sliding window.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch

from monai_t1t2.errors import T1T2Error
from monai_t1t2.losses import MaskedL1SSIMLoss
from monai_t1t2.nets.generators import (DEFAULT_GENERATOR, SliceWise, add_refiner, build_discriminator, build_generator,
                                        expand_input_channels, generator_weights, input_floor_of, patch_inferer,
                                        tails_calibrated_of)
from monai_t1t2.transforms import INPUT_FLOOR, at_input_floor



class TranslationModule(pl.LightningModule):
    """T1 -> T2 generator with L1 + SSIM and optional anatomy and adversarial terms.

    Args:
        generator: keyword arguments of :func:`monai_t1t2.nets.generators.build_generator`
            (``spatial_dims`` is taken from this module's argument).
        spatial_dims: 3 for the 3D model; 2 for the slice-wise baseline.
        patch_size: training patch and sliding-window ROI, ``(P, P, 1)`` when ``spatial_dims == 2``.
        learning_rate, weight_decay: AdamW settings; the rate decays on a cosine over all training steps,
            or over the wall-clock budget when the trainer has ``max_time`` and no step or epoch limit.
        l1_weight, ssim_weight: base loss ``l1_weight * L1 + ssim_weight * (1 - SSIM)``.
        brain_masked_loss: compute the base loss (:class:`~monai_t1t2.losses.MaskedL1SSIMLoss`,
            the protocol's SSIM window) inside the brain only; otherwise over the whole patch.
        perceptual_weight: weight of :class:`~monai_t1t2.losses.RegionWeightedPerceptualLoss`
            (needs region weights from the data module's ``parcellation_model``); 0 disables it.
        perceptual_model: brainchop model whose first layers are the frozen feature extractor.
        tumour_weight: weight of :class:`~monai_t1t2.losses.TumourPreservationLoss`; 0 disables it.
        region_stats_weight: weight of :class:`~monai_t1t2.losses.RegionStatisticsLoss` (needs the
            region groups of the data module's ``parcellation_model``); 0 disables it.
        dark_weight: weight of an L1 term over the brain's darkest T1 voxels alone
            (:func:`~monai_t1t2.transforms.at_input_floor`: 0.5 % of the brain, where the real T2 is the
            dark rim or mid-grey CSF), their mean error, so that at weight 1 they weigh as much as the
            brain's whole L1; 0 disables it.
        distribution_weight: weight of :class:`~monai_t1t2.losses.IntensityDistributionLoss` inside the
            brain (the 1-Wasserstein distance between the patch's predicted and real T2 histograms,
            never above the brain's L1); 0 disables it.
        adversarial_weight: weight of the pix2pix-style PatchGAN term; 0 (default) disables it.
        overlap, sw_batch_size: sliding-window settings of validation (:func:`~monai_t1t2.nets.generators.patch_inferer`).
        png_every_n_epochs: write a three-plane PNG (T1 / prediction / T2) every N epochs.
        calibrate_tails: validation scores the prediction clipped to [0, 1] and then with its brain tails
            calibrated (:class:`~monai_t1t2.transforms.CalibrateTails`), as a bundle exported with the
            step writes it; :func:`export_bundle` exports with the step by default when this is set.
            It changes what is scored and exported, not what is trained.
        init_weights: the generator starts from these weights (a bundle directory, its ``models/model.pt``
            or a ``monai-t1t2 train`` checkpoint) instead of random ones: ``fit`` fine-tunes them,
            ``validate`` scores them; a ``--ckpt_path`` restores its own weights over them.
    """

    def __init__(
        self,
        generator: dict[str, Any] | None = None,
        spatial_dims: int = 3,
        patch_size: Sequence[int] = (64, 64, 64),
        learning_rate: float = 2e-3,
        weight_decay: float = 1e-5,
        l1_weight: float = 1.0,
        ssim_weight: float = 0.5,
        brain_masked_loss: bool = False,
        perceptual_weight: float = 0.0,
        perceptual_model: str = "model30chan18cls",
        tumour_weight: float = 0.0,
        region_stats_weight: float = 0.0,
        adversarial_weight: float = 0.0,
        dark_weight: float = 0.0,
        distribution_weight: float = 0.0,
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        png_every_n_epochs: int = 5,
        init_weights: str | None = None,
        calibrate_tails: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Lightning's automatic optimisation; the GAN's two optimisers step by hand (toggle_optimizer).
        self.automatic_optimization = adversarial_weight <= 0
        self.inferer = patch_inferer(patch_size, sw_batch_size, overlap)
        generator = dict(DEFAULT_GENERATOR if generator is None else generator)
        self.hparams.generator = generator
        try:
            self.generator = build_generator(spatial_dims=spatial_dims, **generator)
        except (ValueError, TypeError) as err:  # an unknown name or setting, a refiner without the residual head
            raise T1T2Error(f"--model.generator {generator}: {err}") from None
        self.base_loss = MaskedL1SSIMLoss(l1_weight, ssim_weight)
        self.perceptual_loss = None
        if perceptual_weight > 0:
            from monai_t1t2.losses import RegionWeightedPerceptualLoss, meshnet_feature_extractor

            if spatial_dims != 3:
                raise ValueError("the region-weighted perceptual loss uses a 3D feature extractor: spatial_dims must be 3")
            self.perceptual_loss = RegionWeightedPerceptualLoss(meshnet_feature_extractor(perceptual_model))
        self.tumour_loss = None
        if tumour_weight > 0:
            from monai_t1t2.losses import TumourPreservationLoss

            self.tumour_loss = TumourPreservationLoss()
        self.region_stats_loss = None
        if region_stats_weight > 0:
            from monai_t1t2.losses import RegionStatisticsLoss

            self.region_stats_loss = RegionStatisticsLoss()
        self.distribution_loss = None
        if distribution_weight > 0:
            from monai_t1t2.losses import IntensityDistributionLoss

            self.distribution_loss = IntensityDistributionLoss()
        self.discriminator = None
        if adversarial_weight > 0:
            from monai.losses import PatchAdversarialLoss

            self.discriminator = build_discriminator(spatial_dims=spatial_dims)
            self.adversarial_loss = PatchAdversarialLoss(criterion="least_squares")

    # ----- the network on patches of shape (B, 1, X, Y, Z) --------------------------------
    def forward(self, t1: torch.Tensor) -> torch.Tensor:
        """Translate ``(B, 1, X, Y, Z)`` patches; the 2D baseline sees them as ``Z == 1`` slices."""
        return SliceWise(self.generator)(t1) if self.hparams.spatial_dims == 2 else self.generator(t1)

    def _as_network_dims(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[..., 0] if self.hparams.spatial_dims == 2 else tensor

    def generator_loss(self, batch: dict[str, torch.Tensor], prediction: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for ``prediction`` of ``batch["t2"]``; ``"total"`` is their weighted sum."""
        target = batch["t2"]
        hp = self.hparams
        where = batch["brain"] if hp.brain_masked_loss else torch.ones_like(target)
        terms = self.base_loss.terms(self._as_network_dims(prediction), self._as_network_dims(target),
                                     self._as_network_dims(where))
        total = hp.l1_weight * terms["l1"] + hp.ssim_weight * terms["ssim"]
        if self.perceptual_loss is not None:
            terms["perceptual"] = self.perceptual_loss(prediction, target, batch.get("weights"))
            total = total + hp.perceptual_weight * terms["perceptual"]
        if self.tumour_loss is not None:
            terms["tumour"] = self.tumour_loss(prediction, target, batch["tumour"])
            total = total + hp.tumour_weight * terms["tumour"]
        if self.region_stats_loss is not None:
            if "groups" not in batch:
                raise ValueError("region_stats_weight needs region groups in the batch: set data.parcellation_model")
            terms["region_stats"] = self.region_stats_loss(prediction, target, batch["groups"], batch.get("weights"))
            total = total + hp.region_stats_weight * terms["region_stats"]
        if hp.dark_weight > 0:
            darkest = (batch["brain"] > 0) & at_input_floor(batch["t1"])
            terms["dark"] = ((prediction - target).abs() * darkest).sum() / darkest.sum().clamp_min(1)
            total = total + hp.dark_weight * terms["dark"]
        if self.distribution_loss is not None:
            terms["distribution"] = self.distribution_loss(prediction, target, batch["brain"])
            total = total + hp.distribution_weight * terms["distribution"]
        if self.discriminator is not None:
            fake = self.discriminator(self._as_network_dims(torch.cat([batch["t1"], prediction], 1)))[-1]
            terms["adversarial"] = self.adversarial_loss(fake, target_is_real=True, for_discriminator=False)
            total = total + hp.adversarial_weight * terms["adversarial"]
        terms["total"] = total
        return terms

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        prediction = self(batch["t1"])
        if self.discriminator is None:  # automatic optimisation; the scheduler steps every step
            terms = self.generator_loss(batch, prediction)
        else:
            generator_optimizer, discriminator_optimizer = self.optimizers()
            self.toggle_optimizer(generator_optimizer)  # the discriminator's weights get no gradient here
            terms = self.generator_loss(batch, prediction)
            generator_optimizer.zero_grad()
            self.manual_backward(terms["total"])
            generator_optimizer.step()
            self.untoggle_optimizer(generator_optimizer)
            self.lr_schedulers().step()
            self.toggle_optimizer(discriminator_optimizer)
            terms["discriminator"] = self._discriminator_step(discriminator_optimizer, batch, prediction.detach())
            self.untoggle_optimizer(discriminator_optimizer)
        batch_size = batch["t1"].shape[0]
        self.log_dict({f"train/{name}": value.detach() for name, value in terms.items()},
                      prog_bar=False, batch_size=batch_size, sync_dist=False)
        self.log("train_loss", terms["total"].detach(), prog_bar=True, batch_size=batch_size)
        return terms["total"]

    def _discriminator_step(self, optimizer, batch, prediction: torch.Tensor) -> torch.Tensor:
        real = self.discriminator(self._as_network_dims(torch.cat([batch["t1"], batch["t2"]], 1)))[-1]
        fake = self.discriminator(self._as_network_dims(torch.cat([batch["t1"], prediction], 1)))[-1]
        loss = 0.5 * (self.adversarial_loss(real, target_is_real=True, for_discriminator=True)
                      + self.adversarial_loss(fake, target_is_real=False, for_discriminator=True))
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss.detach()

    # ----- whole-volume validation ---------------------------------------------------------
    def predict_volume(self, t1: torch.Tensor, brain: torch.Tensor | None = None) -> torch.Tensor:
        """Sliding-window translation of a whole normalised volume ``(1, 1, X, Y, Z)``."""
        prediction = self.inferer(t1, self)
        return prediction if brain is None else prediction * (brain > 0)

    # Logged only over the validation cases where they exist (a tumour mask; a parcellation for the contrast).
    _TUMOUR_METRICS = ("tumour_contrast_error", "ssim_tumour", "ssim_non_tumour")

    def on_validation_epoch_start(self) -> None:
        self._tumour_scores: dict[str, list[float]] = {name: [] for name in self._TUMOUR_METRICS}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        from monai_t1t2.metrics import evaluate

        prediction = self.predict_volume(batch["t1"], batch["brain"])
        if self.hparams.calibrate_tails:
            from monai_t1t2.transforms import CalibrateTails

            # as the bundle's postprocessing: clipped to [0, 1], then the tails (on the brain's voxels)
            prediction = CalibrateTails()(prediction.float().clamp(0, 1), batch["brain"] > 0)
        as_numpy = lambda tensor: tensor[0, 0].detach().float().cpu().numpy()  # noqa: E731
        tumour = as_numpy(batch["tumour"]) if "tumour" in batch and bool(batch["tumour"].any()) else None
        groups = as_numpy(batch["groups"]) if "groups" in batch else None
        scores = evaluate(as_numpy(prediction), as_numpy(batch["t2"]), mask=as_numpy(batch["brain"]) > 0,
                          tumor_seg=tumour, groups=groups)
        for name in ("psnr", "ssim", "mae"):
            self.log(f"val/{name}", float(scores[name]), batch_size=1, sync_dist=True, prog_bar=name == "ssim")
        for name in self._TUMOUR_METRICS:
            if math.isfinite(scores[name]):
                self._tumour_scores[name].append(float(scores[name]))
        if batch_idx == 0 and self._png_due():
            # Trainer.log_dir broadcasts under DDP: every rank must ask, or rank 0 waits forever.
            folder = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "validation_png"
            if self.trainer.is_global_zero:
                self._save_png(folder, batch, prediction)

    def on_validation_epoch_end(self) -> None:
        # Means over the cases that have them, summed over every rank first: under DDP each rank must
        # log the same keys (a rank whose cases have no tumour would otherwise never log and hang the sync).
        for name, values in self._tumour_scores.items():
            total = torch.tensor([sum(values), len(values)], dtype=torch.float64, device=self.device)
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
            if total[1] > 0:
                self.log(f"val/{name}", float(total[0] / total[1]), sync_dist=False, rank_zero_only=False)

    def _png_due(self) -> bool:
        every = self.hparams.png_every_n_epochs
        return bool(every) and (self.current_epoch + 1) % every == 0 or self.current_epoch + 1 == self.trainer.max_epochs

    def _save_png(self, folder: Path, batch: dict[str, torch.Tensor], prediction: torch.Tensor) -> None:
        from monai_t1t2.viz import save_three_plane_png

        save_three_plane_png(folder / f"epoch{self.current_epoch + 1:04d}.png",
                             [batch["t1"][0], prediction[0], batch["t2"][0]], ["T1", "synthetic T2", "T2"],
                             title=f"validation, epoch {self.current_epoch + 1}")

    # Settings that change what is trained; the sliding-window and PNG settings may differ on resume.
    _RESUME_FREE = ("overlap", "sw_batch_size", "png_every_n_epochs", "init_weights", "calibrate_tails")

    def setup(self, stage: str) -> None:
        """With ``init_weights``, load them into the generator (``fit`` fine-tunes them, ``validate``
        scores them). Lightning calls this before it restores a ``--ckpt_path``, so a resumed run
        continues from its checkpoint, not from these."""
        if self.generator.mask_input:
            # (the data module's floor, when a trainer with one is attached)
            floor = getattr(getattr(self._trainer, "datamodule", None), "hparams", {}).get("input_floor", INPUT_FLOOR)
            if floor != INPUT_FLOOR:
                raise T1T2Error(f"generator mask_input: the T1 must carry the input floor: set "
                                f"--data.input_floor {INPUT_FLOOR} (it is {floor})")
        if not self.hparams.get("init_weights"):
            return
        source = self.hparams.init_weights
        weights, own = generator_weights(source), self.generator.state_dict()
        if self.generator.mask_input:  # a one-channel model's weights, the mask's channel at 0
            weights = expand_input_channels(weights, own)
        weights = add_refiner(weights, own)  # a model without a refiner: the refiner's gate at 0
        missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        reshaped = [key for key in own if key in weights and weights[key].shape != own[key].shape]
        if missing or unexpected or reshaped:
            first = (f"; e.g. {reshaped[0]} is {tuple(weights[reshaped[0]].shape)}, here {tuple(own[reshaped[0]].shape)}"
                     if reshaped else "")
            raise T1T2Error(f"init_weights {source}: its weights do not fit this generator ({self.hparams.generator}, "
                            f"{self.hparams.spatial_dims}D): {len(missing)} missing, {len(unexpected)} unexpected, "
                            f"{len(reshaped)} of another shape{first}")
        self.generator.load_state_dict(weights)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to resume a checkpoint whose model settings differ from this module's (the user's config).

        A checkpoint written under manual optimisation (this module before it used Lightning's
        automatic optimisation) counted its steps in the manual loop: they are carried over to the
        automatic one, so a resumed run keeps its global step.
        """
        loops = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        manual = loops.get("epoch_loop.manual_optimization.optim_step_progress")
        automatic = loops.get("epoch_loop.automatic_optimization.optim_progress")
        if (self.automatic_optimization and manual and automatic
                and automatic["optimizer"]["step"]["total"]["completed"] == 0 and manual["total"]["completed"] > 0):
            automatic["optimizer"]["step"] = {part: dict(manual[part]) for part in ("total", "current")}
            automatic["optimizer"]["zero_grad"] = {part: dict(manual[part], started=manual[part]["completed"])
                                                   for part in ("total", "current")}
            manual.update(total={"ready": 0, "completed": 0}, current={"ready": 0, "completed": 0})

        saved = checkpoint.get("hyper_parameters") or {}
        differ = []
        for key, value in self.hparams.items():
            if key in self._RESUME_FREE or key not in saved:
                continue
            if _comparable(saved[key]) != _comparable(value):
                differ.append(f"{key}: checkpoint {_comparable(saved[key])} vs config {_comparable(value)}")
        if differ:
            source = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
            raise T1T2Error(f"{source or 'checkpoint'}: trained with other model settings than the config gives "
                            f"({'; '.join(differ)}); resume with the config it was trained with (its "
                            "lightning_logs/version_*/config.yaml) or start a new run without --ckpt_path")

    def configure_optimizers(self):
        hp = self.hparams
        generator_optimizer = torch.optim.AdamW(self.generator.parameters(), lr=hp.learning_rate,
                                                weight_decay=hp.weight_decay)
        # Cosine decay over the whole run, stepped per optimisation step.
        total_steps = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        total_steps = max(int(total_steps), 1) if math.isfinite(total_steps) else None  # None: no step limit
        optimizers = [generator_optimizer]
        if self.discriminator is not None:
            optimizers.append(torch.optim.AdamW(self.discriminator.parameters(), lr=hp.learning_rate, betas=(0.5, 0.999)))
        scheduler = torch.optim.lr_scheduler.LambdaLR(generator_optimizer, lambda step: _cosine(self._progress(step, total_steps)))
        if self.discriminator is None:
            return {"optimizer": generator_optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return optimizers, [scheduler]

    def _progress(self, step: int, total_steps: int | None) -> float:
        """Share of training done, in ``[0, 1]``, for the cosine learning-rate decay.

        By optimiser steps; under a wall-clock budget (``Trainer(max_time=...)`` with no
        ``max_steps``) by the share of that budget spent, so a run that is stopped by its clock
        has decayed its rate to 0, whatever the hardware's speed. Under DDP rank 0's clock is
        broadcast, so every replica takes the same rate.
        """
        trainer = self._trainer
        timer = _wall_clock_timer(trainer)
        if timer is None:
            return 0.0 if total_steps is None else step / total_steps
        elapsed, remaining = timer.time_elapsed("train"), timer.time_remaining("train")
        progress = elapsed / max(elapsed + remaining, 1e-9)
        if trainer.world_size > 1:
            progress = float(trainer.strategy.broadcast(progress, src=0))
        return progress


def _comparable(value: Any) -> Any:
    """Tuples as lists and dicts sorted, so a YAML config and a checkpoint's hparams compare equal."""
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(value[k]) for k in sorted(value)}
    return value


def check_checkpoint_argument(args: Sequence[str]) -> None:
    """``--ckpt_path FILE`` of ``monai-t1t2 train``: the file exists and is a Lightning checkpoint (else T1T2Error)."""
    args = list(args)
    paths = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--ckpt_path"]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--ckpt_path=")]
    for path in paths:
        if path in ("last", "best", "hpc", "registry", "null", "None"):
            continue
        if not Path(path).is_file():
            raise T1T2Error(f"--ckpt_path {path}: no such file")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # the unpickler raises many kinds on a file that is not a checkpoint
            raise T1T2Error(f"--ckpt_path {path}: not a readable PyTorch checkpoint ({type(err).__name__})") from None
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise T1T2Error(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict)")


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def _wall_clock_timer(trainer: "pl.Trainer | None"):
    """Lightning's ``Timer`` callback when the run is bounded by ``max_time`` alone, else None."""
    from pytorch_lightning.callbacks import Timer

    if trainer is None or trainer.max_steps not in (-1, None) or trainer.max_epochs not in (-1, None):
        return None
    return next((c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None), None)


# Hyper-parameters renamed since a checkpoint was written: old name -> new name.
LEGACY_HPARAMS = {"sw_overlap": "overlap"}


def current_hparams(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyper-parameters under today's names (:data:`LEGACY_HPARAMS`), without
    LightningCLI's own entries (``_instantiator``, ``_class_path``)."""
    hparams = {k: v for k, v in saved.items() if not k.startswith("_")}
    for old, new in LEGACY_HPARAMS.items():
        if old in hparams:
            hparams[new] = hparams.pop(old)
    return hparams


def load_module(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> TranslationModule:
    """A :class:`TranslationModule` with its weights from a ``monai-t1t2 train`` checkpoint (older
    checkpoints' renamed hyper-parameters are taken under their new names: :func:`current_hparams`)."""
    return module_from_state(torch.load(str(checkpoint), map_location=map_location, weights_only=False))


def module_from_state(state: dict[str, Any]) -> TranslationModule:
    """:func:`load_module` on a checkpoint already loaded (``torch.load``'s dictionary)."""
    module = TranslationModule(**current_hparams(state["hyper_parameters"]))
    module.load_state_dict(state["state_dict"])
    return module


def export_generator(checkpoint: str | Path, output: str | Path, half: bool = True) -> dict[str, Any]:
    """Write the generator's plain state dict (model-zoo ``models/model.pt``) from a Lightning checkpoint.

    ``half`` stores floating-point tensors as float16 (half the file; ``load_state_dict`` casts
    them back to the network's float32 on loading).

    Returns:
        The generator's build arguments (for the bundle's ``network_def``).
    """
    return _export_generator(torch.load(str(checkpoint), map_location="cpu", weights_only=False), output, half)


def _export_generator(state: dict[str, Any], output: str | Path, half: bool = True) -> dict[str, Any]:
    from monai_t1t2.io import save_torch

    weights = {key[len("generator."):]: value.half() if half and value.is_floating_point() else value
               for key, value in state["state_dict"].items() if key.startswith("generator.")}
    save_torch(weights, output)
    hparams = state["hyper_parameters"]
    return dict(hparams["generator"], spatial_dims=hparams["spatial_dims"])


def bundle_inference_config(network_def: dict[str, Any], roi_size: Sequence[int], spatial_dims: int = 3,
                            input_floor: float = 0.0, calibrate_tails: bool = False) -> dict[str, Any]:
    """The translation bundle's ``configs/inference.json`` (MONAI model-zoo shape) for a trained generator.

    Components: ``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``
    (:func:`monai_t1t2.transforms.translation_components`, with the T1 ``input_floor`` the model was
    trained with), the ``translator`` that joins them and
    the ``evaluator`` that translates ``dataset_dir`` into ``output_dir`` with the package's input
    checks and provenance sidecars (``python -m monai.bundle run``).
    """
    from monai_t1t2.transforms import translation_components

    network = {"_target_": "monai_t1t2.nets.generators.build_generator", "spatial_dims": "@spatial_dims",
               **{k: v for k, v in network_def.items() if k != "spatial_dims"}}
    components = translation_components(input_floor=input_floor, calibrate_tails=calibrate_tails)
    return {
        "imports": ["$import glob", "$import os", "$import torch"],
        "bundle_root": ".",
        "dataset_dir": "$os.path.join(@bundle_root, 'data')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "model_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
        "device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "spatial_dims": int(spatial_dims),
        "roi_size": [int(v) for v in roi_size],
        "overlap": 0.5,
        "sw_batch_size": 4,
        "flip_axes": [],
        "calibrate_tails": components.pop("calibrate_tails"),
        "precision": "32-true",
        "uncertainty": None,
        "mask_method": "auto",
        "png": False,
        "overwrite": False,
        "force": False,
        "network_def": network,
        **components,
        "translator": {"_target_": "monai_t1t2.inference.translation.build_translator", "network": "@network_def",
                       "weights": "@model_path", "roi_size": "@roi_size", "spatial_dims": "@spatial_dims",
                       "device": "@device", "preprocessing": "@preprocessing", "inferer": "@inferer",
                       "postprocessing": "@postprocessing"},
        "evaluator": {"_target_": "monai_t1t2.inference.batch.translate_folder", "dataset_dir": "@dataset_dir",
                      "output_dir": "@output_dir", "model": "@translator", "png": "@png", "overwrite": "@overwrite",
                      "mask_method": "@mask_method", "force": "@force", "precision": "@precision",
                      "uncertainty": "@uncertainty", "_mode_": "callable"},
        "run": ["$@evaluator()"],
    }


def export_bundle(checkpoint: str | Path, bundle_dir: str | Path, calibrate_tails: bool | None = None) -> Path:
    """The export step: a trained checkpoint into a translation bundle's ``models/model.pt`` and
    ``configs/inference.json`` (network, ROI and T1 input floor from the checkpoint's hyper-parameters;
    never edited by hand); ``calibrate_tails``: the postprocessing's last step,
    :class:`~monai_t1t2.transforms.CalibrateTailsd`, is on (the config item ``calibrate_tails``);
    None: as the checkpoint was validated (its ``calibrate_tails`` hyper-parameter, False before it existed).

    ``configs/metadata.json``, ``docs/`` and ``LICENSE`` are the bundle's own and are left as they are.
    """
    import json

    from monai_t1t2.io import atomic_write_text

    bundle_dir = Path(bundle_dir)
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    network_def = _export_generator(state, bundle_dir / "models" / "model.pt")
    spatial_dims = int(network_def.pop("spatial_dims"))
    if calibrate_tails is None:
        calibrate_tails = tails_calibrated_of(state)
    config = bundle_inference_config(network_def, state["hyper_parameters"]["patch_size"], spatial_dims,
                                     input_floor_of(state), calibrate_tails)
    atomic_write_text(json.dumps(config, indent=4) + "\n", bundle_dir / "configs" / "inference.json")
    return bundle_dir


def _parse_checkpoint_hparams(cli) -> None:
    """``--ckpt_path``: refuse a checkpoint whose model settings differ from the config's (Lightning
    would let them silently replace the config's), then Lightning's ``_parse_ckpt_path`` with the
    checkpoint's settings under today's names (:func:`current_hparams`) and without the linked
    ``patch_size`` (the data module's, :func:`add_links`). The checkpoint is read once."""
    import sys

    subcommand = cli.config.get("subcommand")
    ckpt_path = cli.config[subcommand].get("ckpt_path") if subcommand else None
    if not ckpt_path or not Path(ckpt_path).is_file():
        return
    saved = current_hparams(torch.load(ckpt_path, weights_only=False, map_location="cpu").get("hyper_parameters") or {})
    given = cli.config[subcommand]["model"]
    given = given.as_dict() if hasattr(given, "as_dict") else dict(given)
    given = dict(given.get("init_args", given))
    if given.get("generator") is None:
        given["generator"] = DEFAULT_GENERATOR
    differ = [f"{key}: checkpoint {_comparable(saved[key])} vs config {_comparable(given[key])}"
              for key in given if key in saved and key not in TranslationModule._RESUME_FREE
              and _comparable(saved[key]) != _comparable(given[key])]
    if differ:
        raise T1T2Error(f"--ckpt_path {ckpt_path}: trained with other model settings than the config gives "
                        f"({'; '.join(differ)}); resume with the config it was trained with (its "
                        "lightning_logs/version_*/config.yaml) or start a new run without --ckpt_path")
    saved.pop("patch_size", None)
    if not saved:
        return
    try:
        cli.config = cli.parser.parse_object({subcommand: {"model": saved}}, cli.config)
    except SystemExit:
        sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
        raise


def add_links(parser) -> None:
    """Settings a ``monai-t1t2 train`` config states once: the patch size is the data module's,
    and the model's (its validation window) follows it."""
    parser.link_arguments("data.patch_size", "model.patch_size")


def warn_emulated_bf16(trainer: Any) -> bool:
    """One warning line when a run asks for bfloat16 on a CPU that emulates it (no AVX512-BF16 / AMX-BF16:
    many times slower than float32 there); True when it warned. The run goes on as asked."""
    import sys

    from monai_t1t2.hardware import cpu_has_native_bf16, cpu_name

    precision, accelerator = str(trainer.get("precision") or ""), str(trainer.get("accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if not (precision.startswith("bf16") and on_cpu and not cpu_has_native_bf16()):
        return False
    print(f"monai-t1t2: warning: --trainer.precision {precision}: this CPU ({cpu_name()}) has no native bfloat16 "
          "(AVX512-BF16 or AMX-BF16) and emulates it, many times slower than --trainer.precision 32-true", file=sys.stderr)
    return True


def run_training_cli(args: Sequence[str]) -> int:
    """``monai-t1t2 train ...``: LightningCLI over :class:`TranslationModule` and the data module."""
    import warnings

    from pytorch_lightning.cli import LightningCLI

    from monai_t1t2.training.data import PairedDataModule

    check_checkpoint_argument(args)
    # `monai-t1t2 train ...` passes its own argv on purpose; Lightning's warning about it is noise.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    class _CLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            add_links(parser)

        def _parse_ckpt_path(self) -> None:
            _parse_checkpoint_hparams(self)

        def before_instantiate_classes(self) -> None:
            subcommand = self.config.get("subcommand")
            warn_emulated_bf16((self.config[subcommand] if subcommand else self.config).get("trainer", {}))

    _CLI(TranslationModule, PairedDataModule, args=list(args), seed_everything_default=0,
         save_config_kwargs={"overwrite": True})
    return 0
