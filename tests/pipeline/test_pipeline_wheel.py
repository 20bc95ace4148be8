"""A wheel install (not editable) carries the shipped bundles: ``register`` works from any folder."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BRAIN_3D = ROOT / "data" / "brain_3d"


@pytest.mark.slow
def test_wheel_install_registers_the_embedded_brains_outside_the_source_tree(tmp_path):
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)]
    if importlib.util.find_spec("setuptools") is not None:
        build.insert(4, "--no-build-isolation")  # offline-friendly when the build backend is already here
    subprocess.run(build, check=True, cwd=tmp_path, capture_output=True, timeout=900)
    wheel = next(dist.glob("monai_vmorph-*.whl"))
    site = tmp_path / "site"  # the wheel alone; its dependencies (torch, MONAI, ...) come from this interpreter
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=900)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install of the source tree
    where = subprocess.run(
        [sys.executable, "-c", "import monai_vmorph.pipeline as p; print(p.__file__); print(p.default_bundle(3))"],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    ).stdout.split()
    assert all(line.startswith(str(site)) for line in where), where  # the installed copy, not the source tree
    command = [sys.executable, "-m", "monai_vmorph", "register", "--quiet", "--out-dir", "out", "--fast"]
    command += ["--affine", "none"]  # the packaging is under test here; the stages are tested elsewhere
    command += ["--fixed", str(BRAIN_3D / "imagesTr" / "icbm09a_0000.nii.gz")]
    command += ["--moving", str(BRAIN_3D / "imagesTr" / "colin27_0000.nii.gz")]
    command += ["--moving-labels", str(BRAIN_3D / "labelsTr" / "colin27_0000.nii.gz")]
    command += ["--fixed-labels", str(BRAIN_3D / "labelsTr" / "icbm09a_0000.nii.gz")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=work, env=env, timeout=900)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    assert metrics["weights"].startswith(str(site))
    assert metrics["mean_dice"] > metrics["mean_dice_before"] + 0.05  # the shipped weights, not an untrained net
