"""Training: overfitting, resume, 2-process DDP on CPU, and clear errors for bad data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from conftest import PAIRED, REPO, synthetic_head, write_nifti
from monai_t1t2.cli import main
from monai_t1t2.hardware import cpu_has_native_bf16
from monai_t1t2.training.module import TranslationModule, export_generator
from monai_t1t2.transforms import PercentileNormalise

TINY = ["--model.generator", "{name: unet, channels: [4, 8], num_res_units: 0, norm: instance}",
        "--data.patch_size", "[16, 16, 16]",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--data.samples_per_volume", "2", "--data.repeats_per_epoch", "1", "--data.batch_size", "1",
        "--trainer.enable_progress_bar", "false"]


def synthetic_dataset(root: Path, cases: int = 3, shape=(40, 40, 32)) -> Path:
    for index in range(cases):
        t1 = synthetic_head(shape, seed=index)
        write_nifti(root / f"case{index}" / "t1.nii.gz", t1)
        write_nifti(root / f"case{index}" / "t2.nii.gz", np.where(t1 > 0, 200.0 - t1, 0.0).astype(np.float32))
    return root


def train_command(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "fit", "--config", str(REPO / "configs" / "cpu_smoke.yaml"), "--data.data_dir", str(data_dir),
            "--data.val_cases", "[case0]", "--trainer.default_root_dir", str(run_dir), *TINY, *extra]


def checkpoint_step(path: Path) -> int:
    return int(torch.load(str(path), map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.realdata
def test_overfits_one_real_patch_pair():
    """A tiny network fitted to one real 24^3 T1/T2 patch pair: the loss falls at least 4-fold."""
    import nibabel as nib

    crop = (slice(100, 124), slice(100, 124), slice(70, 94))
    t1, t2 = (nib.load(str(PAIRED / "BraTS-GLI-00001-000" / f"{m}.nii.gz")).get_fdata(dtype=np.float32) for m in ("t1", "t2"))
    patch = {key: torch.as_tensor(PercentileNormalise()(volume)[crop])[None] for key, volume in (("t1", t1), ("t2", t2))}
    assert (patch["t1"] > 0).float().mean() > 0.9, "the patch should lie inside the brain"
    pl.seed_everything(0)
    module = TranslationModule(generator={"name": "unet", "channels": [8, 16], "num_res_units": 1},
                               patch_size=(24, 24, 24), learning_rate=3e-3)
    batch = {key: value[None] for key, value in patch.items()}
    initial = float(module.generator_loss(batch, module(batch["t1"]))["total"])
    loader = torch.utils.data.DataLoader([patch] * 300, batch_size=1)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    module.eval()
    with torch.no_grad():
        final = float(module.generator_loss(batch, module(batch["t1"]))["total"])
    assert final < initial / 4, (initial, final)


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_brain_masked_loss_ignores_errors_outside_the_brain(spatial_dims):
    shape = (1, 1, 16, 16, 16 if spatial_dims == 3 else 1)
    module = TranslationModule(generator={"name": "unet", "channels": [4, 8], "num_res_units": 0},
                               spatial_dims=spatial_dims, patch_size=shape[2:], brain_masked_loss=True)
    target, brain = torch.rand(shape), torch.zeros(shape)
    brain[:, :, 2:14, 2:14] = 1
    batch = {"t1": target, "t2": target * brain, "brain": brain}
    outside = module.generator_loss(batch, target * brain + 0.5 * (1 - brain))
    assert float(outside["total"]) == pytest.approx(0.0, abs=1e-5)
    inside = module.generator_loss(batch, target * brain * 0.5)
    assert float(inside["l1"]) > 0.1 and float(inside["total"]) > float(inside["l1"])


def test_fit_then_resume_continues_global_step(tmp_path):
    data = synthetic_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert main(train_command(data, run, "--trainer.max_epochs", "1")) == 0
    first = next(run.rglob("last.ckpt"))
    steps_one_epoch = checkpoint_step(first)
    assert steps_one_epoch == 2
    assert main(train_command(data, run, "--trainer.max_epochs", "2", "--ckpt_path", str(first))) == 0
    resumed = sorted(run.rglob("last*.ckpt"), key=os.path.getmtime)[-1]
    assert checkpoint_step(resumed) == 2 * steps_one_epoch
    assert list(run.rglob("validation_png/*.png")), "validation writes a three-plane PNG"
    weights = export_generator(resumed, tmp_path / "model.pt")
    assert weights["channels"] == [4, 8] and (tmp_path / "model.pt").stat().st_size > 0


def run_two_process_ddp(tmp_path: Path, *extra: str) -> Path:
    """Train on 5 synthetic cases with 2-process DDP on CPU (gloo); assert both ranks ran; return last.ckpt."""
    data = synthetic_dataset(tmp_path / "data", cases=5)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "monai_t1t2", *train_command(
        data, run, "--trainer.strategy", "ddp", "--trainer.devices", "2",
        "--trainer.use_distributed_sampler", "false", "--data.shard_by_rank", "true", *extra)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PL_DISABLE_FORK="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "GLOBAL_RANK: 0" in output and "GLOBAL_RANK: 1" in output, output[-3000:]
    return next(run.rglob("last.ckpt"))


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    checkpoint = run_two_process_ddp(tmp_path, "--trainer.max_epochs", "1")
    restored = TranslationModule.load_from_checkpoint(str(checkpoint), map_location="cpu")
    assert checkpoint_step(checkpoint) == 2
    assert restored(torch.rand(1, 1, 16, 16, 16)).shape == (1, 1, 16, 16, 16)


@pytest.mark.slow
def test_two_process_ddp_with_a_wall_clock_budget(tmp_path):
    """DDP stopped by ``max_time``: both ranks stop together and the cosine rate has reached ~0."""
    path = run_two_process_ddp(tmp_path, "--trainer.max_epochs", "-1", "--trainer.max_steps", "-1",
                               "--trainer.max_time", "00:00:00:15", "--trainer.limit_val_batches", "0",
                               "--model.learning_rate", "0.01")
    checkpoint = torch.load(str(path), map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] > 2, "several epochs ran before the clock stopped training"
    assert checkpoint["lr_schedulers"][0]["_last_lr"][0] < 0.02 * 0.01


def test_2d_baseline_is_a_config_switch(tmp_path):
    data = synthetic_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert main(train_command(data, run, "--trainer.max_epochs", "1", "--model.spatial_dims", "2",
                              "--data.patch_size", "[24, 24, 1]")) == 0
    module = TranslationModule.load_from_checkpoint(str(next(run.rglob("last.ckpt"))), map_location="cpu")
    assert any(isinstance(layer, torch.nn.Conv2d) for layer in module.generator.modules())
    assert module(torch.rand(1, 1, 24, 24, 1)).shape == (1, 1, 24, 24, 1)


@pytest.mark.parametrize("problem", ["missing", "empty", "grid", "unreadable"])
def test_bad_data_gives_one_line_error(tmp_path, problem, capsys):
    data = tmp_path / "data"
    if problem == "empty":
        data.mkdir()
    elif problem == "grid":
        synthetic_dataset(data)
        write_nifti(data / "case1" / "t2.nii.gz", synthetic_head((40, 40, 30)))
    elif problem == "unreadable":
        synthetic_dataset(data)
        (data / "case2" / "t1.nii.gz").write_text("not a volume")
    code = main(train_command(data, tmp_path / "run", "--trainer.max_epochs", "1"))
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert error[-1].startswith("monai-t1t2: error:")
    expected = {"missing": "does not exist", "empty": "no subjects found", "grid": "case1",
                "unreadable": "case2/t1.nii.gz: not a readable NIfTI volume"}[problem]
    assert expected in error[-1] and str(data) in error[-1]


def _learning_rate_after_fit(**trainer_budget) -> tuple[float, int]:
    pl.seed_everything(0)
    module = TranslationModule(generator={"name": "unet", "channels": [4, 8], "num_res_units": 0},
                               patch_size=(16, 16, 16), learning_rate=1e-2)
    patch = {"t1": torch.rand(1, 16, 16, 16), "t2": torch.rand(1, 16, 16, 16)}
    loader = torch.utils.data.DataLoader([patch] * 10_000, batch_size=1)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_epochs=-1, **trainer_budget)
    trainer.fit(module, loader)
    return module.lr_schedulers().optimizer.param_groups[0]["lr"], trainer.global_step


def test_learning_rate_decays_over_the_step_budget():
    rate, steps = _learning_rate_after_fit(max_steps=20)
    assert steps == 20 and rate == pytest.approx(0.0, abs=1e-12)


def test_learning_rate_decays_over_a_wall_clock_budget():
    """With max_time and no step limit the cosine runs over the clock: the rate is ~0 when time is up."""
    rate, steps = _learning_rate_after_fit(max_steps=-1, max_time={"seconds": 4})
    assert 0 < steps < 10_000, "the run is stopped by its clock, not by running out of data"
    assert rate < 0.02 * 1e-2, rate


# Overlay recipes are composed on the recipe they change (a later --config overrides an earlier one).
COMPOSED = {"cpu_2d.yaml": ["cpu.yaml", "cpu_2d.yaml"], "cpu_batchnorm.yaml": ["cpu.yaml", "cpu_batchnorm.yaml"],
            "ddp.yaml": ["default.yaml", "ddp.yaml"], "finetune.yaml": ["cpu.yaml", "finetune.yaml"]}


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_config_parses_against_the_module_and_data_signatures(config, capsys):
    """A misspelt key or a wrong type in a shipped config fails here, not an hour into a GPU job."""
    import yaml

    files = [arg for name in COMPOSED.get(config, [config]) for arg in ("--config", str(REPO / "configs" / name))]
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "fit", *files, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["generator"]["name"] in ("unet", "dynunet", "swinunetr")
    assert len(printed["data"]["patch_size"]) == 3
    assert "patch_size" not in printed["model"], "the model's patch size is linked to the data's, not set twice"


def test_the_finetune_overlay_builds_the_shipped_bundles_network():
    """configs/finetune.yaml starts from the shipped bundle's weights, so its generator is the bundle's network_def."""
    import json

    import yaml

    overlay = yaml.safe_load((REPO / "configs" / "finetune.yaml").read_text())["model"]
    bundle = Path(overlay["init_weights"]) if Path(overlay["init_weights"]).is_absolute() else REPO / overlay["init_weights"]
    shipped = json.loads((bundle / "configs" / "inference.json").read_text())["network_def"]
    assert overlay["generator"] == {k: v for k, v in shipped.items() if k not in ("_target_", "spatial_dims")}


def test_batchnorm_overlay_changes_only_the_norm_of_the_cpu_recipe():
    """A later --config replaces the whole generator dict, so the overlay repeats cpu.yaml's: keep them in step."""
    import yaml

    base = yaml.safe_load((REPO / "configs" / "cpu.yaml").read_text())["model"]["generator"]
    overlay = yaml.safe_load((REPO / "configs" / "cpu_batchnorm.yaml").read_text())["model"]["generator"]
    assert overlay["norm"] == "batch" and base["norm"] == "instance"
    assert {k: v for k, v in overlay.items() if k != "norm"} == {k: v for k, v in base.items() if k != "norm"}


def test_model_patch_size_follows_the_data_patch_size(tmp_path):
    """LightningCLI's link: the model (its validation window) gets the data module's patch size."""
    from pytorch_lightning.cli import LightningCLI

    from monai_t1t2.training.data import PairedDataModule
    from monai_t1t2.training.module import TranslationModule, add_links

    class _CLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            add_links(parser)

    cli = _CLI(TranslationModule, PairedDataModule, run=False,
               args=["--config", str(REPO / "configs" / "cpu.yaml"), "--config", str(REPO / "configs" / "cpu_2d.yaml"),
                     "--data.data_dir", str(synthetic_dataset(tmp_path / "data")), "--trainer.logger", "false",
                     "--trainer.callbacks", "[]", "--trainer.default_root_dir", str(tmp_path)])
    assert tuple(cli.model.hparams.patch_size) == tuple(cli.datamodule.hparams.patch_size) == (64, 64, 1)


def test_resume_refuses_missing_garbage_and_foreign_checkpoints(tmp_path, capsys):
    data = synthetic_dataset(tmp_path / "data")
    run = tmp_path / "run"
    command = train_command(data, run, "--trainer.max_epochs", "1")
    assert main(command + ["--ckpt_path", str(tmp_path / "nope.ckpt")]) == 2
    assert "nope.ckpt: no such file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x80\x04 this is not a pickle")
    assert main(command + ["--ckpt_path", str(garbage)]) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert main(command) == 0
    checkpoint = next(run.rglob("last.ckpt"))
    # The same checkpoint under a config with another learning rate and loss: refused, naming both settings.
    code = main(command + ["--model.learning_rate", "0.5", "--model.ssim_weight", "3", "--ckpt_path", str(checkpoint)])
    error = (capsys.readouterr().err.strip().splitlines() or [""])[-1]
    assert code == 2, error
    assert error.startswith("monai-t1t2: error:") and "learning_rate" in error and "ssim_weight" in error


def test_init_weights_start_fit_and_validate_from_them_and_a_resume_keeps_its_checkpoint(tmp_path):
    from monai_t1t2.training.module import current_hparams

    run = tmp_path / "run"
    assert main(train_command(synthetic_dataset(tmp_path / "data"), run, "--trainer.max_epochs", "1")) == 0
    trained = next(run.rglob("last.ckpt"))
    export_generator(trained, tmp_path / "bundle" / "models" / "model.pt", half=False)
    state = torch.load(str(trained), map_location="cpu", weights_only=False)
    hparams = current_hparams(state["hyper_parameters"])
    expected = {k[len("generator."):]: v for k, v in state["state_dict"].items() if k.startswith("generator.")}

    def assert_generator_is(module, weights):
        for key, value in module.generator.state_dict().items():
            assert torch.equal(value, weights[key]), key

    # A bundle directory, its models/model.pt and a Lightning checkpoint all give the trained generator.
    for source in (tmp_path / "bundle", tmp_path / "bundle" / "models" / "model.pt", trained):
        pl.seed_everything(1)
        module = TranslationModule(**dict(hparams, init_weights=str(source)))
        assert not torch.equal(module.generator.state_dict()[next(iter(expected))], next(iter(expected.values())))
        module.setup("fit")
        assert_generator_is(module, expected)
    # train validate --model.init_weights scores them (setup loads them in every stage).
    module = TranslationModule(**dict(hparams, init_weights=str(tmp_path / "bundle")))
    module.setup("validate")
    assert_generator_is(module, expected)
    # Resumed with --ckpt_path, the checkpoint's weights win over init_weights (Lightning restores after setup).
    pl.seed_everything(2)
    torch.save(TranslationModule(**hparams).generator.state_dict(), tmp_path / "other.pt")
    module = TranslationModule(**dict(hparams, init_weights=str(tmp_path / "other.pt")))
    patch = {"t1": torch.rand(1, 16, 16, 16), "t2": torch.rand(1, 16, 16, 16), "brain": torch.ones(1, 16, 16, 16)}
    trainer = pl.Trainer(max_steps=int(state["global_step"]), accelerator="cpu", logger=False, limit_val_batches=0,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader([patch] * 4), ckpt_path=str(trained))
    assert_generator_is(module, expected)


def test_init_weights_that_are_missing_or_do_not_fit_give_one_line_errors(tmp_path, capsys):
    data = synthetic_dataset(tmp_path / "data")
    command = train_command(data, tmp_path / "run", "--trainer.max_epochs", "1")
    assert main(command + ["--model.init_weights", str(tmp_path / "nope")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("monai-t1t2: error:") and "nope: no weights there" in error, error
    wider = TranslationModule(generator={"name": "unet", "channels": [8, 16], "num_res_units": 0, "norm": "instance"})
    torch.save(wider.generator.state_dict(), tmp_path / "wider.pt")
    assert main(command + ["--model.init_weights", str(tmp_path / "wider.pt")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "wider.pt: its weights do not fit this generator" in error, error


def test_a_mask_input_generator_needs_the_input_floor_and_starts_from_one_channel_weights(tmp_path, capsys):
    data = synthetic_dataset(tmp_path / "data")
    masked = ["--model.generator", "{name: unet, channels: [4, 8], num_res_units: 0, norm: instance, mask_input: true}"]
    assert main(train_command(data, tmp_path / "run", "--trainer.max_epochs", "1", *masked)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "mask_input" in error and "--data.input_floor 0.001" in error, error
    # One-channel weights (a shipped bundle's) fit it, the mask channel's weights at 0.
    one = TranslationModule(generator={"name": "unet", "channels": [4, 8], "num_res_units": 0, "norm": "instance"})
    torch.save(one.generator.state_dict(), tmp_path / "one.pt")
    run = tmp_path / "run_floor"
    assert main(train_command(data, run, "--trainer.max_epochs", "1", *masked, "--data.input_floor", "0.001",
                              "--model.init_weights", str(tmp_path / "one.pt"))) == 0
    weights = torch.load(str(next(run.rglob("last.ckpt"))), map_location="cpu", weights_only=False)["state_dict"]
    first = next(key for key, value in weights.items() if key.startswith("generator.") and value.dim() == 5)
    assert weights[first].shape[1] == 2


def test_load_module_takes_an_older_checkpoints_renamed_settings(tmp_path):
    from monai_t1t2.training.module import load_module

    tiny = {"name": "unet", "channels": [4, 8], "num_res_units": 0, "norm": "instance"}
    module = TranslationModule(generator=tiny, patch_size=(16, 16, 16))
    hparams = dict(module.hparams, sw_overlap=0.25, _instantiator="lightning.pytorch.cli.instantiate_module")
    del hparams["overlap"]
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams}, tmp_path / "old.ckpt")
    loaded = load_module(tmp_path / "old.ckpt")
    assert loaded.hparams.overlap == 0.25 and loaded.inferer.overlap == 0.25
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_a_manual_optimisation_checkpoint_keeps_its_global_step():
    """Checkpoints from before automatic optimisation counted steps in the manual loop: carried over."""
    module = TranslationModule(generator={"name": "unet", "channels": [4, 8], "num_res_units": 0}, patch_size=(16, 16, 16))
    zero = {"ready": 0, "completed": 0}
    checkpoint = {"hyper_parameters": dict(module.hparams), "loops": {"fit_loop": {
        "epoch_loop.manual_optimization.optim_step_progress": {"total": {"ready": 700, "completed": 700},
                                                               "current": {"ready": 20, "completed": 20}},
        "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
            "step": {"total": dict(zero), "current": dict(zero)},
            "zero_grad": {"total": dict(zero, started=0), "current": dict(zero, started=0)}}}}}}
    module.on_load_checkpoint(checkpoint)
    loops = checkpoint["loops"]["fit_loop"]
    assert loops["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]["total"]["completed"] == 700
    assert loops["epoch_loop.manual_optimization.optim_step_progress"]["total"]["completed"] == 0


def test_validation_logs_the_tumour_metrics_over_the_cases_that_have_a_tumour():
    """``val/tumour_contrast_error`` (from the batch's region groups) and the tumour / non-tumour SSIM
    are the protocol's values, averaged over the validation cases with a tumour; a case without one
    adds nothing to them, and a validation without any tumour logs none of them."""
    from test_metrics import NAMES, tumour_phantom
    from monai_t1t2.metrics import evaluate
    from monai_t1t2.regions import labels_to_groups

    t2, labels, tumour, brain = tumour_phantom(150.0)
    t1 = np.where(brain, 1.0 - t2 / t2.max(), 0).astype(np.float32)
    as_item = lambda array: torch.as_tensor(np.asarray(array, np.float32))[None]  # noqa: E731
    with_tumour = {"t1": as_item(t1), "t2": as_item(t2 / t2.max()), "brain": as_item(brain),
                   "tumour": as_item(tumour), "groups": as_item(labels_to_groups(labels, NAMES, tumour))}
    without = dict(with_tumour, tumour=torch.zeros_like(with_tumour["tumour"]))
    pl.seed_everything(0)
    module = TranslationModule(generator={"name": "unet", "channels": [4, 8], "num_res_units": 0},
                               patch_size=(16, 16, 16), sw_batch_size=2)
    module.eval()
    with torch.no_grad():
        prediction = module.predict_volume(with_tumour["t1"][None], with_tumour["brain"][None])[0, 0].numpy()
    expected = evaluate(prediction, with_tumour["t2"][0].numpy(), mask=brain, tumor_seg=tumour,
                        groups=with_tumour["groups"][0].numpy())
    assert np.isfinite(expected["tumour_contrast_error"]) and expected["tumour_contrast_error"] > 0

    def validate(items):
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.validate(module, torch.utils.data.DataLoader(items, batch_size=1), verbose=False)
        return {key: float(value) for key, value in trainer.callback_metrics.items()}

    logged = validate([with_tumour, without])
    for name in ("tumour_contrast_error", "ssim_tumour", "ssim_non_tumour"):
        assert logged[f"val/{name}"] == pytest.approx(expected[name], rel=1e-4), name
    assert "val/ssim" in logged
    assert not any(key.endswith(("tumour_contrast_error", "ssim_tumour")) for key in validate([without, without]))


def test_validation_with_calibrate_tails_scores_the_output_the_bundle_writes_and_export_follows_it(tmp_path):
    """``calibrate_tails``: validation scores the prediction clipped to [0, 1] with its brain tails
    calibrated (as the exported bundle writes it); the plain module scores it as the network wrote it;
    ``export_bundle`` switches the bundle's step as the checkpoint was validated."""
    from monai_t1t2.inference.translation import load_translator, tails_calibrated
    from monai_t1t2.metrics import evaluate
    from monai_t1t2.training.module import export_bundle
    from monai_t1t2.transforms import CalibrateTails

    rng = np.random.default_rng(0)
    brain = np.zeros((24, 24, 24), bool)
    brain[3:21, 3:21, 3:21] = True
    t1 = np.where(brain, rng.uniform(0.1, 1.0, brain.shape), 0).astype(np.float32)
    t2 = np.where(brain, 1.0 - t1, 0).astype(np.float32)
    item = {key: torch.as_tensor(value.astype(np.float32))[None] for key, value in
            (("t1", t1), ("t2", t2), ("brain", brain))}
    generator = {"name": "unet", "channels": [4, 8], "num_res_units": 0, "head": "sigmoid"}
    scores = {}
    for calibrate in (False, True):
        pl.seed_everything(0)
        module = TranslationModule(generator=generator, patch_size=(16, 16, 16), sw_batch_size=2,
                                   calibrate_tails=calibrate)
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.validate(module, torch.utils.data.DataLoader([item], batch_size=1), verbose=False)
        scores[calibrate] = float(trainer.callback_metrics["val/ssim"])
        trainer.save_checkpoint(tmp_path / f"{calibrate}.ckpt")
        assert tails_calibrated(load_translator(export_bundle(tmp_path / f"{calibrate}.ckpt",
                                                              tmp_path / f"bundle{calibrate}")).postprocessing) is calibrate
    module.eval()
    with torch.no_grad():
        written = module.predict_volume(item["t1"][None], item["brain"][None])[0, 0].numpy()
    assert np.percentile(written[brain], 0.5) > 0.01  # a sigmoid head: the step moves the dark tail
    for calibrate, prediction in ((False, written), (True, CalibrateTails()(np.clip(written, 0, 1), brain))):
        expected = evaluate(prediction, t2, mask=brain)["ssim"]
        assert scores[calibrate] == pytest.approx(expected, rel=1e-4), calibrate
    assert abs(scores[True] - scores[False]) > 1e-3


def test_dark_term_is_the_mean_error_over_the_darkest_brain_voxels_only():
    from monai_t1t2.transforms import INPUT_FLOOR

    module = TranslationModule(generator={"name": "unet", "channels": [4, 8], "num_res_units": 0, "norm": "instance"},
                               brain_masked_loss=True, dark_weight=2.0)
    t1 = torch.full((1, 1, 8, 8, 8), 0.5)
    brain = torch.ones_like(t1)
    brain[..., :2] = 0
    t1[..., :2] = 0  # background: not dark brain
    t1[..., 4, 4, 4] = INPUT_FLOOR  # two darkest brain voxels
    t1[..., 5, 5, 5] = INPUT_FLOOR
    target = torch.full_like(t1, 0.3)
    prediction = target.clone()
    prediction[..., 4, 4, 4] = 0.0  # error 0.3 and 0.1 there, and a large one in the background (no loss)
    prediction[..., 5, 5, 5] = 0.2
    prediction[..., 0] = 1.0
    terms = module.generator_loss({"t1": t1, "t2": target, "brain": brain}, prediction)
    assert torch.isclose(terms["dark"], torch.tensor(0.2))
    plain = TranslationModule(generator={"name": "unet", "channels": [4, 8], "num_res_units": 0, "norm": "instance"},
                              brain_masked_loss=True).generator_loss({"t1": t1, "t2": target, "brain": brain}, prediction)
    assert "dark" not in plain and torch.isclose(terms["total"] - plain["total"], 2.0 * terms["dark"])


def test_distribution_term_is_the_brain_histogram_distance_and_adds_to_the_total():
    from monai_t1t2.losses import IntensityDistributionLoss

    settings = {"name": "unet", "channels": [4, 8], "num_res_units": 0, "norm": "instance"}
    torch.manual_seed(0)
    t1 = torch.rand(1, 1, 8, 8, 8)
    target = torch.rand_like(t1)
    brain = torch.ones_like(t1)
    brain[..., :2] = 0
    prediction = 0.5 + 0.5 * (target - 0.5)
    prediction[..., 0] = 1.0  # outside the brain: not counted
    batch = {"t1": t1, "t2": target, "brain": brain}
    terms = TranslationModule(generator=settings, brain_masked_loss=True, distribution_weight=3.0).generator_loss(batch, prediction)
    assert torch.isclose(terms["distribution"], IntensityDistributionLoss()(prediction, target, brain))
    assert float(terms["distribution"]) > 0.05
    plain = TranslationModule(generator=settings, brain_masked_loss=True).generator_loss(batch, prediction)
    assert "distribution" not in plain and torch.isclose(terms["total"] - plain["total"], 3.0 * terms["distribution"])


def test_a_refined_generator_fine_tunes_from_weights_without_a_refiner_and_exports_to_a_bundle(tmp_path):
    """--model.generator {..., refine: N} with --model.init_weights of a model without a refiner: the
    run starts from those weights (the refiner's gate at 0) and trains, here in bf16-mixed precision where the CPU has it,
    with its validation (which once failed on the SSIM's bf16 result); the bundle exported from it
    names the refiner in its network_def and translates as its checkpoint does."""
    from monai_t1t2.training.module import export_bundle

    data = synthetic_dataset(tmp_path / "data")
    settings = {"name": "unet", "channels": [4, 8], "num_res_units": 0, "norm": "instance", "head": "residual"}
    plain = TranslationModule(generator=settings)
    torch.save(plain.generator.state_dict(), tmp_path / "plain.pt")
    module = TranslationModule(generator=dict(settings, refine=4), init_weights=str(tmp_path / "plain.pt"))
    module.setup("fit")
    for key, value in plain.generator.state_dict().items():
        assert torch.equal(module.generator.state_dict()[key], value), key
    assert module.generator.refine_gate == 0
    run = tmp_path / "run"
    precision = "bf16-mixed" if cpu_has_native_bf16() else "32-true"  # bfloat16 is emulated, many times slower, without it
    assert main(train_command(data, run, "--trainer.max_epochs", "1", "--model.generator", json.dumps(dict(settings, refine=4)),
                              "--model.init_weights", str(tmp_path / "plain.pt"), "--trainer.precision", precision)) == 0
    checkpoint = next(run.rglob("last.ckpt"))
    logged = (next(run.rglob("metrics.csv"))).read_text()
    assert "val/ssim" in logged.splitlines()[0]  # it validated
    weights = torch.load(str(checkpoint), map_location="cpu", weights_only=False)["state_dict"]
    assert weights["generator.refine_gate"] != 0  # the refiner's gate moved in training
    bundle = export_bundle(checkpoint, tmp_path / "bundle")
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert config["network_def"]["refine"] == 4
    from monai.data import MetaTensor

    from monai_t1t2 import inference

    t1 = MetaTensor(torch.as_tensor(synthetic_head())[None], affine=torch.eye(4, dtype=torch.float64))
    from_bundle = inference.translate(t1, model=bundle, device="cpu", mask_method="nonzero")[0].numpy()
    from_checkpoint = inference.translate(t1, model=checkpoint, device="cpu", mask_method="nonzero")[0].numpy()
    np.testing.assert_allclose(from_bundle, from_checkpoint, atol=5e-3)  # the bundle's weights are float16


def test_generator_settings_that_cannot_be_built_give_one_line_errors(tmp_path, capsys):
    """An unknown generator name or setting, or a refiner without the residual head: one line, exit 2."""
    data = synthetic_dataset(tmp_path / "data", cases=2)
    for settings, expected in (("{name: nonsense, channels: [4, 8]}", "unknown generator 'nonsense'"),
                               ("{name: unet, channels: [4, 8], head: sigmoid, refine: 4}", "needs the residual head"),
                               ("{name: unet, channels: [4, 8], widht: 3}", "widht")):
        assert main(train_command(data, tmp_path / "run", "--model.generator", settings)) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("monai-t1t2: error: --model.generator") and expected in error, error


def test_a_run_with_an_ema_of_the_weights_exports_the_average(tmp_path):
    """Lightning's EMAWeightAveraging on the command line (candidate ft64hr7e, CHANGELOG.md; commit
    c83d2e8): the checkpoint's state_dict holds the average, and that is what
    export_generator and generator_weights take, not the last step's weights. With decay 0.5 and
    two steps the average is the mean of the two steps' weights, so it must differ from the last's."""
    from monai_t1t2.nets.generators import generator_weights

    data = synthetic_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert main(train_command(data, run, "--trainer.max_epochs", "1",
                              "--trainer.callbacks+=pytorch_lightning.callbacks.EMAWeightAveraging",
                              "--trainer.callbacks.decay", "0.5")) == 0
    checkpoint = next(run.rglob("last.ckpt"))
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    assert state["global_step"] == 2 and int(state["averaging_state"]["n_averaged"]) == 2  # after every step
    average = {k: v for k, v in state["state_dict"].items() if k.startswith("generator.")}
    current = {k: v for k, v in state["current_model_state"].items() if k.startswith("generator.")}
    assert average.keys() == current.keys()
    assert any(not torch.equal(average[k], current[k]) for k in average)  # the mean of the two steps' weights
    for key, value in generator_weights(checkpoint).items():
        assert torch.equal(value, average["generator." + key]), key
    export_generator(checkpoint, tmp_path / "model.pt")
    exported = torch.load(str(tmp_path / "model.pt"), map_location="cpu", weights_only=True)
    for key, value in exported.items():
        torch.testing.assert_close(value.float(), average["generator." + key].half().float())


def test_training_warns_when_bf16_is_emulated_on_this_cpu(monkeypatch, capsys):
    """bf16-mixed on a CPU without native bfloat16 trains as asked, with one warning line; not on a GPU
    run, not in float32, not on a CPU that has it."""
    from monai_t1t2 import hardware
    from monai_t1t2.training.module import warn_emulated_bf16

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert warn_emulated_bf16({"precision": "bf16-mixed", "accelerator": "cpu"})
    assert "no native bfloat16" in capsys.readouterr().err
    assert not warn_emulated_bf16({"precision": "32-true", "accelerator": "cpu"})
    assert not warn_emulated_bf16({"precision": "bf16-mixed", "accelerator": "gpu"})
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert not warn_emulated_bf16({"precision": "bf16-mixed", "accelerator": "cpu"})
    assert capsys.readouterr().err == ""
