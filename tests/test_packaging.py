"""A built wheel holds the bundles and translates the sample with its default model, outside the source tree."""

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import nibabel as nib
import pytest

from conftest import REPO
from monai_t1t2.masks import nonzero_brain


@pytest.mark.slow
def test_wheel_installed_package_translates_the_sample_with_the_default_model(tmp_path):
    dist, source = tmp_path / "dist", tmp_path / "source"
    # Built from a copy of the tracked tree (setuptools writes build/ beside the sources), without
    # build isolation: setuptools of this environment, nothing downloaded.
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():
            (source / name).symlink_to(os.readlink(REPO / name))
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
                   check=True, cwd=tmp_path)
    wheel = next(dist.glob("monai_t1t2-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    # The wheel alone goes into the fresh environment; its dependencies (torch, MONAI, ...) are read
    # from this one's site-packages, appended after it (a path entry: this environment's editable
    # install of the source tree is not activated there).
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(purelib), str(wheel)], check=True)
    (purelib / "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import monai_t1t2, pathlib; print(pathlib.Path(monai_t1t2.__file__).parent)"],
                           check=True, capture_output=True, text=True, cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(purelib), f"imported from {where}, not from the wheel"
    assert (Path(where) / "bundles" / "t1t2_translation" / "models" / "model.pt").is_file()
    sample = REPO / "tests" / "data" / "sample_t1.nii.gz"
    done = subprocess.run([str(python), "-m", "monai_t1t2", "predict", str(sample), "-o", str(work / "out"), "--device", "cpu"],
                          capture_output=True, text=True, cwd=work, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (work / "out" / "sample_t1_synT2.nii.gz").is_file()
    # The sample's T1 (TCGA-DU-7294's) is <= 0 at 2,143 voxels inside its ventricles: the shipped model
    # writes them, not the background's 0 (black specks before the brain's cavities were filled)
    t1 = nib.load(sample).get_fdata()
    cavities = nonzero_brain(t1) & (t1 <= 0)
    written = nib.load(work / "out" / "sample_t1_synT2.nii.gz").get_fdata()
    assert cavities.sum() > 1000 and (written[cavities] > 0.05).mean() > 0.9
    sidecar = json.loads((work / "out" / "sample_t1_synT2.json").read_text())
    assert Path(sidecar["Model"]).is_relative_to(where), f"the default model came from {sidecar['Model']}"
