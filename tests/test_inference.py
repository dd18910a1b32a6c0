"""Inference: model loading, translate() on every input form, grids kept, predict CLI, the bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from conftest import write_model_zoo_schema, PAIRED, RAW, REPO, SHARED, synthetic_head, write_nifti

SHARED_COHORT = SHARED / "data" / "cohort"
from monai_t1t2 import masks
from monai_t1t2.inference import translation as inference
from monai_t1t2.cli import main
from monai_t1t2.errors import InvalidVolumeError, T1T2Error
from monai_t1t2.hardware import cpu_has_native_bf16
from monai_t1t2.quality import input_problems
from monai_t1t2.nets.generators import build_generator

BUNDLE = REPO / "bundles" / "t1t2_translation"
TINY = {"channels": [4, 8], "num_res_units": 0, "head": "sigmoid"}  # random weights act through the sigmoid head
TINY_ROI = [16, 16, 16]


def write_tiny_checkpoint(path: Path, roi_size=TINY_ROI, seed: int = 0, **hparams) -> Path:
    """A checkpoint as monai-t1t2 train writes it (``generator.*`` weights, hyper-parameters) of a tiny
    random-weight generator (nothing trained); ``hparams``: more hyper-parameters."""
    torch.manual_seed(seed)
    state = {"generator." + key: value for key, value in build_generator(**TINY).state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"generator": dict(TINY, name="unet", norm="instance"),
                                                          "spatial_dims": 3, "patch_size": list(roi_size), **hparams}}, path)
    return path


def make_tiny_bundle(folder: Path, roi_size=TINY_ROI, seed: int = 0) -> Path:
    """A bundle written by the export step from a checkpoint of a tiny random-weight generator (nothing trained)."""
    from monai_t1t2.training.module import export_bundle

    folder.mkdir(parents=True)
    return export_bundle(write_tiny_checkpoint(folder.parent / f"{folder.name}.ckpt", roi_size, seed), folder)


def test_shipped_bundle_config_is_the_export_steps():
    """configs/inference.json is what the export step writes for the shipped network: nothing edited by hand."""
    from monai_t1t2.training.module import bundle_inference_config

    shipped = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    network_def = {k: v for k, v in shipped["network_def"].items() if k not in ("_target_", "spatial_dims")}
    floor = next(step["floor"] for step in shipped["preprocessing"]["transforms"] if "floor" in step)
    assert shipped == bundle_inference_config(network_def, shipped["roi_size"], shipped["spatial_dims"], floor,
                                              shipped["calibrate_tails"])
    for component in ("network_def", "preprocessing", "inferer", "postprocessing"):
        assert component in shipped


def test_the_t1_input_floor_travels_with_the_model(tmp_path):
    """A model trained with a T1 input floor runs with it: the export step writes it into the bundle's
    preprocessing, a checkpoint's translator reads it, both translate alike; checkpoints from before the
    setting ran with 0, which leaves the darkest brain voxels dark under a residual head."""
    from monai_t1t2.training.module import export_bundle

    torch.manual_seed(0)
    generator = build_generator(channels=[4, 8], num_res_units=0, head="residual")
    state = {"generator." + key: value for key, value in generator.state_dict().items()}
    hparams = {"generator": {"channels": [4, 8], "num_res_units": 0, "head": "residual", "name": "unet",
                             "norm": "instance"}, "spatial_dims": 3, "patch_size": TINY_ROI}
    head = synthetic_head()
    t1 = MetaTensor(torch.as_tensor(head)[None], affine=torch.eye(4, dtype=torch.float64))
    outputs = {}
    for name, data in (("floored", {"datamodule_hyper_parameters": {"input_floor": 1e-3}}), ("before", {})):
        checkpoint = tmp_path / f"{name}.ckpt"
        torch.save({"state_dict": state, "hyper_parameters": hparams, **data}, checkpoint)
        bundle = export_bundle(checkpoint, tmp_path / name)
        config = json.loads((bundle / "configs" / "inference.json").read_text())
        floor = next(step["floor"] for step in config["preprocessing"]["transforms"] if "floor" in step)
        assert floor == (1e-3 if data else 0.0)
        outputs[name] = inference.translate(t1, model=bundle, device="cpu", mask_method="nonzero")[0].numpy()
        from_checkpoint = inference.translate(t1, model=checkpoint, device="cpu", mask_method="nonzero")[0].numpy()
        np.testing.assert_allclose(outputs[name], from_checkpoint, atol=1e-5)
    # Gate 0: the output is the prior, 1 - t1 in the brain; the darkest voxels are bright only with the floor.
    darkest = (head > 0) & (head <= np.percentile(head[head > 0], 0.5))
    assert darkest.any() and outputs["floored"][darkest].min() > 0.99 and outputs["before"][darkest].max() < 0.01


def test_a_checkpoint_validated_with_the_tails_step_translates_as_its_exported_bundle(tmp_path):
    """A checkpoint whose calibrate_tails hyper-parameter is on (configs/finetune.yaml) translates with the
    tails step, as export_bundle writes its bundle; one without it, without (before, a checkpoint never had it)."""
    from monai_t1t2.training.module import export_bundle

    head = synthetic_head()
    t1 = MetaTensor(torch.as_tensor(head)[None], affine=torch.eye(4, dtype=torch.float64))
    brain = head > 0
    for calibrate in (True, False):
        checkpoint = write_tiny_checkpoint(tmp_path / f"tails_{calibrate}.ckpt", calibrate_tails=calibrate)
        assert inference.tails_calibrated(inference.load_translator(checkpoint, "cpu").postprocessing) is calibrate
        bundle = export_bundle(checkpoint, tmp_path / f"bundle_{calibrate}")
        from_checkpoint = inference.translate(t1, model=checkpoint, device="cpu", mask_method="nonzero")[0].numpy()
        from_bundle = inference.translate(t1, model=bundle, device="cpu", mask_method="nonzero")[0].numpy()
        np.testing.assert_allclose(from_checkpoint, from_bundle, atol=2e-3)  # the bundle holds float16 weights
        # the step puts the brain's 0.5th / 99.5th percentiles at 0 / 1; a sigmoid head alone stays inside (0, 1)
        low, high = np.percentile(from_checkpoint[brain], [0.5, 99.5])
        assert (low < 0.01 and high > 0.99) if calibrate else (low > 0.05 and high < 0.95), (calibrate, low, high)


def test_tail_calibration_is_a_step_of_the_bundle_and_an_option_of_translate(tmp_path):
    """export_bundle(calibrate_tails=True) ends the bundle's postprocessing with CalibrateTailsd; translate()
    then writes the plain bundle's output with its brain's 0.5th / 99.5th percentiles at 0 / 1; the option
    switches the step on for a plain bundle and off for a calibrated one; predict records it in the sidecar."""
    from monai_t1t2.training.module import export_bundle
    from monai_t1t2.transforms import CalibrateTails

    plain = make_tiny_bundle(tmp_path / "plain")
    calibrated = export_bundle(tmp_path / "plain.ckpt", tmp_path / "calibrated", calibrate_tails=True)
    config = json.loads((calibrated / "configs" / "inference.json").read_text())
    assert config["calibrate_tails"] is True
    assert config["postprocessing"]["transforms"][-1]["_target_"] == "monai_t1t2.transforms.CalibrateTailsd"
    # the config item is the bundle's switch (python -m monai.bundle run ... --calibrate_tails False)
    from monai.bundle import ConfigParser

    for switch in (True, False):
        parser = ConfigParser(dict(config, calibrate_tails=switch))
        assert inference.tails_calibrated(parser.get_parsed_content("postprocessing")) is switch
    head = synthetic_head()
    t1 = MetaTensor(torch.as_tensor(head)[None], affine=torch.eye(4, dtype=torch.float64))
    run = lambda model, **kw: inference.translate(t1, model=model, device="cpu", mask_method="nonzero", **kw)[0].numpy()  # noqa: E731
    as_written, with_step = run(plain), run(calibrated)
    brain = head > 0
    assert np.percentile(as_written[brain], 0.5) > 0.01  # a sigmoid head: its darkest brain voxels are not at 0
    np.testing.assert_allclose(with_step, CalibrateTails()(as_written, brain), atol=1e-6)
    assert np.percentile(with_step[brain], 0.5) < 5e-3 and np.percentile(with_step[brain], 99.5) > 1 - 5e-3
    np.testing.assert_allclose(run(plain, calibrate_tails=True), with_step, atol=1e-6)
    np.testing.assert_allclose(run(calibrated, calibrate_tails=False), as_written, atol=1e-6)
    source = write_nifti(tmp_path / "t1.nii.gz", head)
    assert main(["predict", str(source), "-o", str(tmp_path / "out"), "--model", str(calibrated), "--qc", "off",
                 "--device", "cpu"]) == 0
    sidecar = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert sidecar["TailsCalibrated"] is True


def test_a_mask_input_model_runs_from_its_bundle_and_its_checkpoint_alike(tmp_path):
    """A generator with the brain mask as a second input channel: the export step writes ``mask_input``
    and its floor into the bundle, which translates as the checkpoint does; the darkest brain voxels
    (at the floor) keep the prior's 0, the mask reaching the backbone."""
    from monai_t1t2.training.module import export_bundle

    torch.manual_seed(0)
    settings = {"channels": [4, 8], "num_res_units": 0, "head": "residual", "name": "unet", "norm": "instance",
                "mask_input": True}
    generator = build_generator(**settings)
    with torch.no_grad():
        generator.gate.fill_(0.5)
    checkpoint = tmp_path / "masked.ckpt"
    torch.save({"state_dict": {"generator." + k: v for k, v in generator.state_dict().items()},
                "hyper_parameters": {"generator": settings, "spatial_dims": 3, "patch_size": TINY_ROI},
                "datamodule_hyper_parameters": {"input_floor": 1e-3}}, checkpoint)
    bundle = export_bundle(checkpoint, tmp_path / "masked")
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert config["network_def"]["mask_input"] is True
    head = synthetic_head()
    t1 = MetaTensor(torch.as_tensor(head)[None], affine=torch.eye(4, dtype=torch.float64))
    from_bundle = inference.translate(t1, model=bundle, device="cpu", mask_method="nonzero")[0].numpy()
    from_checkpoint = inference.translate(t1, model=checkpoint, device="cpu", mask_method="nonzero")[0].numpy()
    np.testing.assert_allclose(from_bundle, from_checkpoint, atol=5e-3)  # the bundle's weights are float16
    with torch.no_grad():
        generator.gate.fill_(0.0)
    torch.save({"state_dict": {"generator." + k: v for k, v in generator.state_dict().items()},
                "hyper_parameters": {"generator": settings, "spatial_dims": 3, "patch_size": TINY_ROI},
                "datamodule_hyper_parameters": {"input_floor": 1e-3}}, checkpoint)
    prior = inference.translate(t1, model=checkpoint, device="cpu", mask_method="nonzero")[0].numpy()
    darkest = (head > 0) & (head <= np.percentile(head[head > 0], 0.5))
    assert darkest.any() and prior[darkest].max() < 0.01 and prior[(head > 0) & ~darkest].mean() > 0.2


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "t1t2_translation")


@pytest.fixture(scope="module")
def real_size_bundle(tmp_path_factory) -> Path:
    """Tiny network, 64^3 ROI: few windows on a whole real brain, so real-data tests stay short."""
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle64") / "t1t2_translation", roi_size=(64, 64, 64))


@pytest.fixture(scope="module")
def translator(tiny_bundle):
    return inference.load_translator(tiny_bundle, device="cpu")


def lps_affine() -> np.ndarray:
    affine = np.diag([-1.2, -1.0, 2.0, 1.0])
    affine[:3, 3] = [30.0, 20.0, -25.0]
    return affine


# ----------------------------------------------------------------------------- loading


def test_bundle_without_weights_is_a_clear_error(tmp_path):
    shutil.copytree(BUNDLE / "configs", tmp_path / "bundle" / "configs")
    with pytest.raises(T1T2Error, match=r"model\.pt: no trained weights"):
        inference.load_translator(tmp_path / "bundle")
    with pytest.raises(T1T2Error, match="no such file"):
        inference.load_translator(tmp_path / "missing")
    with pytest.raises(T1T2Error, match="bare weight file"):
        torch.save({}, tmp_path / "loose.pt")
        inference.load_translator(tmp_path / "loose.pt")


def test_loaders_agree_on_bundle_model_pt_and_checkpoint(tiny_bundle, tmp_path, translator):
    assert translator.roi_size == tuple(TINY_ROI) and not translator.network.training
    via_file = inference.load_translator(tiny_bundle / "models" / "model.pt", device="cpu")
    # A Lightning-style checkpoint as monai-t1t2 train writes it: generator.* weights + hyper-parameters.
    state = {"generator." + key: value for key, value in torch.load(tiny_bundle / "models" / "model.pt").items()}
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"generator": dict(TINY, name="unet", norm="instance"),
                                                          "spatial_dims": 3, "patch_size": [24, 24, 24]}}, checkpoint)
    via_checkpoint = inference.load_translator(checkpoint, device="cpu")
    assert via_checkpoint.roi_size == (24, 24, 24)
    patch = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = translator(patch)
        for other in (via_file, via_checkpoint):
            torch.testing.assert_close(other(patch), reference)


def test_wrong_weights_name_the_file(tiny_bundle, tmp_path):
    bad = tmp_path / "bundle"
    shutil.copytree(tiny_bundle / "configs", bad / "configs")
    (bad / "models").mkdir()
    torch.save(build_generator(channels=[4, 8, 16], num_res_units=0).state_dict(), bad / "models" / "model.pt")
    with pytest.raises(T1T2Error, match=r"model\.pt: weights do not fit"):
        inference.load_translator(bad)


def test_slice_wise_translator_sees_single_slices():
    network = build_generator(spatial_dims=2, **TINY)
    translator = inference.Translator(network, (16, 16, 1), spatial_dims=2)
    patches = torch.rand(2, 1, 16, 16, 1)
    with torch.inference_mode():
        assert translator(patches).shape == patches.shape
    with pytest.raises(T1T2Error, match=r"\(P, P, 1\)"):
        inference.Translator(network, (16, 16, 16), spatial_dims=2)


# ----------------------------------------------------------------------------- masks


# ----------------------------------------------------------------------------- translate()


def test_translate_path_array_and_metatensor_agree(tmp_path, translator):
    head = synthetic_head()
    path = write_nifti(tmp_path / "t1.nii.gz", head, lps_affine())
    affine = nib.load(path).affine  # the header stores the affine in float32
    from_path = inference.translate(path, model=translator)
    from_array = inference.translate(head, model=translator, affine=affine)
    from_meta = inference.translate(MetaTensor(torch.from_numpy(head)[None], affine=torch.as_tensor(affine)),
                                    model=translator)
    for result in (from_path, from_array, from_meta):
        assert isinstance(result, MetaTensor) and result.dtype == torch.float32
        assert tuple(result.shape) == (1, *head.shape)
        np.testing.assert_array_equal(result.affine.numpy(), affine)
    torch.testing.assert_close(from_array.as_tensor(), from_path.as_tensor())
    torch.testing.assert_close(from_meta.as_tensor(), from_path.as_tensor())
    values = from_path[0].numpy()
    assert (values[head <= 0] == 0).all(), "background must stay exactly 0"
    assert values.min() >= 0 and values.max() <= 1
    assert (values[head > 0] > 0).mean() > 0.99


def test_translate_rejects_bad_arguments(translator):
    with pytest.raises(InvalidVolumeError, match="affine"):
        inference.translate(synthetic_head(), model=translator)
    with pytest.raises(InvalidVolumeError, match="same value"):
        inference.translate(np.zeros((8, 8, 8)), model=translator, affine=np.eye(4))
    with pytest.raises(T1T2Error, match="overlap"):
        inference.translate(synthetic_head(), model=translator, affine=np.eye(4), overlap=1.0)


@pytest.mark.parametrize("affine", [np.zeros((4, 4)), np.diag([1.0, 1.0, np.nan, 1.0]), np.diag([1.0, 0.0, 1.0, 1.0])])
def test_translate_rejects_a_singular_or_non_finite_affine(translator, affine):
    with pytest.raises(InvalidVolumeError, match="affine"):
        inference.translate(synthetic_head(), translator, affine=affine)
    with pytest.raises(InvalidVolumeError, match="affine"):
        inference.translate(MetaTensor(torch.as_tensor(synthetic_head())[None], affine=torch.as_tensor(affine)), translator)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16 / AMX-BF16): "
                    "bf16-mixed falls back to float32 here (test_bf16_falls_back_to_float32_on_a_cpu_without_it)")
def test_bf16_precision_runs_the_convolutions_in_bfloat16_and_blends_in_float32(translator):
    """``precision="bf16-mixed"``: the network's convolutions see bfloat16 (autocast), the written volume is
    float32, close to the float32 run but not equal to it; an unknown precision is refused, naming the choices."""
    head = synthetic_head()
    seen = []
    convolution = next(m for m in translator.network.modules() if isinstance(m, torch.nn.Conv3d))
    hook = convolution.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    try:
        full = inference.translate(head, model=translator, affine=np.eye(4))
        assert set(seen) == {torch.float32}
        seen.clear()
        mixed = inference.translate(head, model=translator, affine=np.eye(4), precision="bf16-mixed")
        assert set(seen) == {torch.bfloat16}
    finally:
        hook.remove()
    assert mixed.dtype == torch.float32 and mixed.shape == full.shape
    difference = (mixed - full).abs()
    assert 0 < difference.max() < 0.05, float(difference.max())
    assert ((mixed == 0) == (full == 0)).all(), "the background stays exactly 0"
    with pytest.raises(T1T2Error, match="32-true, bf16-mixed"):
        inference.translate(head, model=translator, affine=np.eye(4), precision="fp16")


def test_bf16_falls_back_to_float32_on_a_cpu_without_it(translator, monkeypatch, capsys):
    """On a CPU without native bfloat16 (emulated there, many times slower), ``bf16-mixed`` runs the
    network in float32, the same volume as ``32-true``, with one warning line per process naming the CPU."""
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    inference._warn_bf16_fallback.cache_clear()
    assert inference.check_precision("bf16-mixed", torch.device("cpu")) == "32-true"
    assert inference.check_precision("bf16-mixed", None) == "bf16-mixed", "no device: nothing to decide yet"
    head = synthetic_head()
    seen = []
    convolution = next(m for m in translator.network.modules() if isinstance(m, torch.nn.Conv3d))
    hook = convolution.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    try:
        mixed = inference.translate(head, model=translator, affine=np.eye(4), precision="bf16-mixed")
    finally:
        hook.remove()
    assert set(seen) == {torch.float32}
    full = inference.translate(head, model=translator, affine=np.eye(4))
    assert torch.equal(mixed, full)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "no native bfloat16" in line]
    assert len(warnings) == 1 and "32-true" in warnings[0], warnings
    inference._warn_bf16_fallback.cache_clear()


def test_a_cpu_translator_holds_its_3d_weights_channels_last_and_writes_the_same(tiny_bundle):
    """Channels-last 3D weights on the CPU change the convolutions' memory layout, not their float32 result."""
    translator = inference.load_translator(tiny_bundle, device="cpu")
    convolution = next(m for m in translator.network.modules()
                       if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1 and m.kernel_size != (1, 1, 1))
    assert convolution.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not convolution.weight.is_contiguous()
    head = synthetic_head()
    channels_last = inference.translate(head, model=translator, affine=np.eye(4))
    translator.network.to(memory_format=torch.contiguous_format)
    assert convolution.weight.is_contiguous()
    contiguous = inference.translate(head, model=translator, affine=np.eye(4))
    torch.testing.assert_close(channels_last.as_tensor(), contiguous.as_tensor(), atol=1e-5, rtol=0)


def test_translate_uses_a_given_mask(tmp_path, translator):
    head = synthetic_head()
    mask = np.zeros(head.shape, dtype=np.uint8)
    mask[8:24, 8:24, 6:18] = 1
    result = inference.translate(head, model=translator, affine=np.eye(4), mask=mask)[0].numpy()
    assert (result[mask == 0] == 0).all() and (result[mask > 0] > 0).mean() > 0.99
    mask_path = write_nifti(tmp_path / "mask.nii.gz", mask)
    np.testing.assert_array_equal(inference.translate(head, model=translator, affine=np.eye(4), mask=mask_path)[0].numpy(), result)


def test_same_head_in_lps_and_ras_gives_the_same_world_image(tmp_path):
    """An RAS file and its LPS twin (same world positions) must give the same synthetic T2 per world point."""
    head = synthetic_head(shape=(32, 28, 24))
    ras = np.diag([1.0, 1.0, 1.0, 1.0])
    ras[:3, 3] = [-15.5, -13.5, -11.5]
    lps = ras.copy()
    lps[0, 0], lps[1, 1] = -1.0, -1.0
    lps[:3, 3] = ras[:3, 3] + [31.0, 27.0, 0.0]  # first voxel of the flipped array is the last of the RAS one
    folder = tmp_path / "in"
    write_nifti(folder / "ras.nii.gz", head, ras)
    write_nifti(folder / "lps.nii.gz", head[::-1, ::-1].copy(), lps)
    bundle = make_tiny_bundle(tmp_path / "bundle", seed=1)
    assert main(["predict", str(folder), "-o", str(tmp_path / "out"), "--model", str(bundle), "--device", "cpu",
                 "--force"]) == 0  # tiny synthetic heads are no adult brain: --force
    for name in ("ras", "lps"):
        source, output = nib.load(folder / f"{name}.nii.gz"), nib.load(tmp_path / "out" / f"{name}_synT2.nii.gz")
        np.testing.assert_array_equal(output.affine, source.affine)
        assert output.shape == source.shape and output.get_data_dtype() == np.float32
    from_ras = nib.load(tmp_path / "out" / "ras_synT2.nii.gz").get_fdata()
    from_lps = nib.load(tmp_path / "out" / "lps_synT2.nii.gz").get_fdata()[::-1, ::-1]
    assert from_ras.max() > 0.1
    np.testing.assert_allclose(from_lps, from_ras, atol=1e-4)


# ----------------------------------------------------------------------------- predict CLI


def test_predict_refuses_existing_outputs_before_translating_anything(tmp_path, tiny_bundle, capsys):
    first = write_nifti(tmp_path / "in" / "a.nii.gz", synthetic_head(seed=1))
    second = write_nifti(tmp_path / "in" / "b.nii.gz", synthetic_head(seed=2))
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_synT2.nii.gz").write_bytes(b"earlier result")
    args = ["predict", str(first), str(second), "-o", str(out), "--model", str(tiny_bundle), "--device", "cpu", "--force"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("monai-t1t2: error: ") and "b_synT2.nii.gz: exists" in error and "\n" not in error
    assert not (out / "a_synT2.nii.gz").exists(), "nothing may be translated when any output is taken"
    assert (out / "b_synT2.nii.gz").read_bytes() == b"earlier result"
    assert main(args + ["--overwrite", "--png"]) == 0
    assert nib.load(out / "b_synT2.nii.gz").shape == synthetic_head().shape
    assert (out / "a_synT2.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_bad_input_is_one_line_exit_2(tmp_path, tiny_bundle, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_text("not a volume")
    assert main(["predict", str(bad), "-o", str(tmp_path / "out"), "--model", str(tiny_bundle), "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("monai-t1t2: error: ") and "broken.nii.gz" in error and "\n" not in error
    assert main(["predict", str(bad), "-o", str(tmp_path / "out"), "--overlap", "1.5"]) == 2
    assert "--overlap" in capsys.readouterr().err


def test_predict_never_writes_over_an_input(tmp_path, tiny_bundle, capsys):
    source = write_nifti(tmp_path / "x_synT2.nii.gz", synthetic_head())
    before = source.read_bytes()
    # x_synT2 -> x_synT2_synT2 is fine; but an input named like another input's output is refused.
    other = write_nifti(tmp_path / "x.nii.gz", synthetic_head(seed=3))
    assert main(["predict", str(other), str(source), "-o", str(tmp_path), "--model", str(tiny_bundle),
                 "--overwrite", "--device", "cpu"]) == 2
    assert "is an input" in capsys.readouterr().err
    assert source.read_bytes() == before


# ----------------------------------------------------------------------------- the bundle


@pytest.mark.slow  # five bundle runs in subprocesses: about 22 s
def test_bundle_run_translates_a_folder(tmp_path, tiny_bundle):
    data = tmp_path / "data"
    write_nifti(data / "sub-01_T1w.nii.gz", synthetic_head(), lps_affine())
    out = tmp_path / "out"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(tiny_bundle / "configs" / "inference.json"),
               "--bundle_root", str(tiny_bundle), "--dataset_dir", str(data), "--output_dir", str(out), "--device", "cpu"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("monai-t1t2 bundle: error: ") and "refused" in error and "--force true" in error, error
    result = subprocess.run(command + ["--force", "true"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    written = nib.load(out / "sub-01_T1w_synT2.nii.gz")
    np.testing.assert_array_equal(written.affine, nib.load(data / "sub-01_T1w.nii.gz").affine)
    expected = inference.translate(data / "sub-01_T1w.nii.gz", model=tiny_bundle, device="cpu")[0].numpy()
    np.testing.assert_allclose(written.get_fdata(), expected, atol=1e-6)
    # The bundle's mirror averaging, set from the command line like any bundle setting, and recorded.
    mirrored = tmp_path / "mirrored"
    command[command.index(str(out))] = str(mirrored)
    result = subprocess.run(command + ["--force", "true", "--flip_axes", "[0]"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((mirrored / "sub-01_T1w_synT2.json").read_text())["MirrorAveragedAxes"] == [0]
    expected = inference.translate(data / "sub-01_T1w.nii.gz", model=tiny_bundle, device="cpu", flip_axes=[0])[0].numpy()
    np.testing.assert_allclose(nib.load(mirrored / "sub-01_T1w_synT2.nii.gz").get_fdata(), expected, atol=1e-6)
    # The output step's switch, a bundle setting too (the tiny bundle is exported without the step).
    calibrated = tmp_path / "calibrated"
    command[command.index(str(mirrored))] = str(calibrated)
    result = subprocess.run(command + ["--force", "true", "--calibrate_tails", "True"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((calibrated / "sub-01_T1w_synT2.json").read_text())["TailsCalibrated"] is True
    expected = inference.translate(data / "sub-01_T1w.nii.gz", model=tiny_bundle, device="cpu", calibrate_tails=True)[0].numpy()
    np.testing.assert_allclose(nib.load(calibrated / "sub-01_T1w_synT2.nii.gz").get_fdata(), expected, atol=1e-6)
    assert np.abs(expected - written.get_fdata()).max() > 0.05
    # bfloat16 autocast, a bundle setting as well, and recorded in the sidecar.
    mixed = tmp_path / "bf16"
    command[command.index(str(calibrated))] = str(mixed)
    result = subprocess.run(command + ["--force", "true", "--precision", "bf16-mixed"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    native = cpu_has_native_bf16()  # without it: float32, one warning line, recorded as 32-true
    assert ("no native bfloat16" in result.stderr) is not native
    assert json.loads((mixed / "sub-01_T1w_synT2.json").read_text())["NetworkPrecision"] == ("bf16-mixed" if native else "32-true")
    assert json.loads((out / "sub-01_T1w_synT2.json").read_text())["NetworkPrecision"] == "32-true"
    expected = inference.translate(data / "sub-01_T1w.nii.gz", model=tiny_bundle, device="cpu", precision="bf16-mixed")[0].numpy()
    np.testing.assert_allclose(nib.load(mixed / "sub-01_T1w_synT2.nii.gz").get_fdata(), expected, atol=1e-5)
    assert np.allclose(expected, written.get_fdata(), atol=1e-6) is not native


def test_bundle_metadata_validates_offline(tmp_path):
    """As for brain_parcellation: a local schema of the fields the model zoo requires (MONAI's own is downloaded)."""
    from monai.bundle import verify_metadata

    schema_path = write_model_zoo_schema(tmp_path / "schema.json")
    meta_file = BUNDLE / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta_file), filepath=str(schema_path))
    metadata = json.loads(meta_file.read_text())
    config = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    assert metadata["version"] in metadata["changelog"]
    assert metadata["network_data_format"]["inputs"]["image"]["spatial_shape"] == config["roi_size"]
    for name in ("LICENSE", "docs/README.md"):
        assert (BUNDLE / name).is_file()


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_skull_stripped_real_volume_takes_the_fast_path(real_size_bundle):
    path = PAIRED / "TCGA-DU-7294" / "t1.nii.gz"
    t1 = nib.load(path)
    result = inference.translate(path, model=real_size_bundle, device="cpu")
    np.testing.assert_array_equal(result.affine.numpy(), t1.affine)
    values, source = result[0].numpy(), np.asarray(t1.dataobj)
    assert values.shape == source.shape
    # the brain is t1 > 0 with the cavities it encloses (this T1 has 2,143 voxels <= 0 in its ventricles)
    brain = masks.nonzero_brain(source)
    assert (brain & (source <= 0)).sum() > 1000
    assert (values[~brain] == 0).all() and (values[brain] > 0).mean() > 0.99


@pytest.mark.realdata
def test_raw_clinical_volume_goes_through_on_its_own_grid(real_size_bundle):
    """Full head, noisy background, 0.9 x 0.9 x 5.5 mm, LAS (mask: the head-mask fallback, fast)."""
    path = RAW / "TCGA-FG-6692" / "t1.nii.gz"
    source = nib.load(path)
    result = inference.translate(path, model=real_size_bundle, device="cpu", mask_method="head")
    np.testing.assert_array_equal(result.affine.numpy(), source.affine)
    values = result[0].numpy()
    assert values.shape == source.shape
    assert values[:10, :10].max() == 0 and values[-10:, -10:].max() == 0, "background stays background"
    assert 0.1 < (values > 0).mean() < 0.7


@pytest.mark.realdata
@pytest.mark.slow
def test_raw_clinical_volume_with_mindgrab_mask(tmp_path, real_size_bundle):
    """The default path for a head with skull: brainchop mindgrab (several minutes on 2 CPU cores)."""
    from conftest import BRAINCHOP

    if not (BRAINCHOP / "mindgrab" / "model.json").is_file():
        pytest.skip("brainchop mindgrab is absent")
    path = RAW / "TCGA-FG-6692" / "t1.nii.gz"
    out = tmp_path / "out"
    assert main(["predict", str(path), "-o", str(out), "--model", str(real_size_bundle), "--device", "cpu", "--png"]) == 0
    written = nib.load(out / "t1_synT2.nii.gz")
    np.testing.assert_array_equal(written.affine, nib.load(path).affine)
    values = written.get_fdata()
    head = masks.head_mask(np.asarray(nib.load(path).dataobj, dtype=np.float32))
    from scipy import ndimage

    around_head = ndimage.binary_dilation(head, iterations=2)
    assert (values[~around_head] == 0).all(), "background stays background"
    assert 0.3 * head.sum() < (values > 0).sum() < 0.9 * head.sum(), "the brain mask is inside the head, smaller than it"


@pytest.mark.realdata
def test_shipped_model_beats_the_floor_on_a_held_out_subject():
    """The committed default model, on a 64^3 block of a test subject it never saw: closer to the real T2
    than the inverted T1 (the floor) in MAE and SSIM. An untrained residual head (gate 0) *is* the floor
    and fails this."""
    import nibabel as nib

    from monai_t1t2.inference.translation import load_translator, translate
    from monai_t1t2.metrics import evaluate

    case = SHARED_COHORT / "Brats18_CBICA_ASY_1"
    t1_image = nib.as_closest_canonical(nib.load(str(case / "t1.nii.gz")))
    t1 = t1_image.get_fdata(dtype=np.float32)
    t2 = nib.as_closest_canonical(nib.load(str(case / "t2.nii.gz"))).get_fdata(dtype=np.float32)
    centre = np.round(np.argwhere(t1 > 0).mean(0)).astype(int)
    block = tuple(slice(c - 32, c + 32) for c in centre)
    t1, t2 = t1[block], t2[block]
    brain = (t1 > 0) & (t2 > 0)
    assert brain.mean() > 0.8
    translator = load_translator(device="cpu")
    assert float(translator.network.gate) != 0, "the residual head learnt a correction"
    synthetic = translate(t1, model=translator, affine=t1_image.affine, device="cpu", mask_method="nonzero")[0].numpy()
    assert synthetic[~(t1 > 0)].max() == 0 and 0 <= synthetic.min() and synthetic.max() <= 1
    model = evaluate(synthetic, t2, mask=brain)
    floor = evaluate(np.where(t1 > 0, 1 - t1 / np.percentile(t1[brain], 99.5), 0), t2, mask=brain)
    # Strictly better than the floor on both (an untrained gate reproduces the floor exactly).
    assert model["mae"] < 0.95 * floor["mae"] and model["ssim"] > floor["ssim"] + 0.01, (model, floor)

# ----------------------------------------------------------------------------- no confident garbage
def _smooth_noise(shape, seed=0):
    from scipy import ndimage

    noise = np.random.default_rng(seed).normal(0, 1, shape)
    return (ndimage.gaussian_filter(noise, 4) * 1000 + 500).astype(np.float32)


@pytest.mark.realdata
def test_predict_refuses_a_non_brain_input_and_force_translates_it_with_a_warning(tmp_path, tiny_bundle, capsys):
    real = nib.load(str(PAIRED / "TCGA-DU-7294" / "t1.nii.gz"))
    noise = write_nifti(tmp_path / "noise.nii.gz", _smooth_noise((160, 160, 120)), real.affine)
    out = tmp_path / "out"
    # The whole volume as the mask, not mindgrab: the refusal is the QC's and the brain volume's, and the network would take a minute.
    args = ["predict", str(noise), "-o", str(out), "--model", str(tiny_bundle), "--device", "cpu", "--mask-method", "nonzero"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert "noise.nii.gz: refused, not a plausible brain T1" in error and "--force" in error and "\n" not in error
    assert not (out / "noise_synT2.nii.gz").exists()
    (row,) = json.loads((out / "manifest.json").read_text())
    assert row["status"] == "rejected" and row["qc_passed"] is False and row["qc_reasons"]
    assert main(args + ["--force"]) == 0
    assert "warning" in capsys.readouterr().err
    sidecar = json.loads((out / "noise_synT2.json").read_text())
    assert sidecar["Forced"] and sidecar["InputProblems"]


@pytest.mark.realdata
def test_a_real_brain_is_plausible_and_a_slab_of_it_is_not():
    t1 = inference.read_volume(PAIRED / "TCGA-DU-7294" / "t1.nii.gz")
    mask = masks.brain_mask(t1)
    assert input_problems(t1, mask) == []
    slab = t1.clone()
    slab[..., :60] = 0
    slab[..., 75:] = 0  # a 15 mm slab of brain
    problems = input_problems(slab, masks.brain_mask(slab))
    assert any("outside an adult brain" in p for p in problems), problems


def test_memory_guard_refuses_from_the_header_before_loading_the_network(tmp_path, monkeypatch):
    big = tmp_path / "big.nii"
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    nib.save(image, str(big))
    assert inference.estimated_working_set_bytes((512, 512, 400), (1.0, 1.0, 1.0)) > 6 * 2**30  # the 4.1 GB reported, and more
    inference.check_memory([big])  # 8 voxels fit
    monkeypatch.setattr(inference, "available_memory_bytes", lambda: 2**30)

    class Header:
        def get_data_shape(self):
            return (512, 512, 400)

        def get_zooms(self):
            return (1.0, 1.0, 1.0)

    monkeypatch.setattr(nib, "load", lambda path: type("Image", (), {"header": Header()})())
    with pytest.raises(T1T2Error, match="512x512x400 voxels need about .* GiB to translate"):
        inference.check_memory([big])


def test_predict_takes_a_mask_file_and_marks_outputs_synthetic(tmp_path, tiny_bundle):
    head = synthetic_head()
    t1 = write_nifti(tmp_path / "in" / "a.nii.gz", head)
    mask_array = np.zeros(head.shape, np.uint8)
    mask_array[8:24, 8:24, 6:18] = 1
    mask = write_nifti(tmp_path / "in" / "a_mask.nii.gz", mask_array)
    out = tmp_path / "out"
    assert main(["predict", str(t1), "-o", str(out), "--model", str(tiny_bundle), "--device", "cpu", "--force",
                 "--mask", str(mask)]) == 0
    written = nib.load(out / "a_synT2.nii.gz")
    assert (written.get_fdata()[mask_array == 0] == 0).all(), "the given mask is used"
    assert written.header["descrip"].tobytes().startswith(b"synthetic T2w, monai-t1t2")
    assert written.header.get_intent()[2] == "synthetic T2w"
    sidecar = json.loads((out / "a_synT2.json").read_text())
    import hashlib

    assert sidecar["SyntheticImage"] is True and sidecar["MaskMethod"] == f"file {mask}"
    assert sidecar["SourceSHA256"] == hashlib.sha256(t1.read_bytes()).hexdigest()
    assert sidecar["ModelSHA256"] and sidecar["GeneratedBy"][0]["Name"] == "monai-t1t2"
    assert sidecar["ModelVersion"] is None, "the tiny bundle has no metadata.json"
    assert main(["predict", str(t1), str(t1.with_name("b.nii.gz")), "-o", str(out), "--mask", str(mask)]) == 2


def test_bundle_errors_are_one_line_in_bundle_terms(tmp_path, tiny_bundle):
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(tiny_bundle / "configs" / "inference.json"),
               "--bundle_root", str(tiny_bundle), "--dataset_dir", str(tmp_path / "nowhere"),
               "--output_dir", str(tmp_path / "out"), "--device", "cpu"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (f"monai-t1t2 bundle: error: dataset_dir {tmp_path / 'nowhere'}: "
                                                      "no such folder (pass --dataset_dir FOLDER of T1 volumes)")


def test_model_version_is_the_bundles_metadata_version(tmp_path):
    """Each sidecar names the bundle version of the weights it was made with; a checkpoint has none."""
    from monai_t1t2.inference.batch import model_version

    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "configs").mkdir()
    (bundle / "models" / "model.pt").write_bytes(b"")
    assert model_version(bundle / "models" / "model.pt") is None
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "1.2.3"}))
    assert model_version(bundle / "models" / "model.pt") == "1.2.3"
    (bundle / "configs" / "metadata.json").write_text("{not json")
    assert model_version(bundle / "models" / "model.pt") is None
    assert model_version(tmp_path / "run" / "last.ckpt") is None
    shipped = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
    assert model_version(BUNDLE / "models" / "model.pt") == shipped
