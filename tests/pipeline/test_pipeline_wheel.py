"""A wheel install (not editable) carries the shipped bundles: ``register`` works from any folder."""

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BRAIN_3D = ROOT / "data" / "brain_3d"


@pytest.mark.slow
def test_wheel_install_registers_the_embedded_brains_outside_the_source_tree(tmp_path):
    dist = tmp_path / "dist"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(dist),
        str(ROOT),
    ]
    subprocess.run(build, check=True, cwd=tmp_path, capture_output=True, timeout=600)
    wheel = next(dist.glob("monai_vmorph-*.whl"))
    env_dir = tmp_path / "venv"  # dependencies (torch, MONAI, ...) come from this interpreter's site-packages
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [str(python), "-c", "import monai_vmorph.pipeline as p; print(p.__file__); print(p.default_bundle(3))"],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    ).stdout.split()
    assert all(line.startswith(site) for line in where), where  # the installed copy, not the source tree
    command = [str(python), "-m", "monai_vmorph", "register", "--quiet", "--out-dir", "out", "--affine", "none"]
    command += ["--fixed", str(BRAIN_3D / "imagesTr" / "icbm09a_0000.nii.gz")]
    command += ["--moving", str(BRAIN_3D / "imagesTr" / "colin27_0000.nii.gz")]
    command += ["--moving-labels", str(BRAIN_3D / "labelsTr" / "colin27_0000.nii.gz")]
    command += ["--fixed-labels", str(BRAIN_3D / "labelsTr" / "icbm09a_0000.nii.gz")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=work, env=env, timeout=900)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    assert metrics["weights"].startswith(site)
    assert metrics["mean_dice"] > metrics["mean_dice_before"] + 0.05  # the shipped weights, not an untrained net
