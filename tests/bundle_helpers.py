"""Tiny Learn2Reg datasets and workflow runners shared by the bundle tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
# bundle -> (spatial dims, overrides that keep the tests fast)
BUNDLES = {
    "voxelmorph_brain_3d": (3, {}),
    "voxelmorph_brain_2d": (2, {"features": [8, 16, 32, 64], "batch_size": 2}),
}


def _subject(rng, shift, ndim):
    grid = np.stack(np.meshgrid(*[np.arange(SIZE)] * ndim, indexing="ij"), axis=-1).astype(float)
    radius = np.linalg.norm(grid - (SIZE / 2 + np.asarray(shift[:ndim])), axis=-1)
    label = np.select([radius < 5, radius < 9, radius < 12], [1, 2, 3], 0).astype(np.uint8)
    image = (label * 0.3 + 0.05 * rng.random(label.shape)) * (label > 0)
    return image.astype(np.float32), label


def make_tiny_dataset(root: Path, ndim: int) -> Path:
    """Three labelled ``SIZE``-voxel subjects (nested spheres) and two validation pairs, Learn2Reg layout."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(0)
    training = []
    for i, shift in enumerate([(0, 0, 0), (2, -1, 1), (-2, 1, 0)]):
        image, label = _subject(rng, shift, ndim)
        name = f"s{i}_0000.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    pairs = [
        {"fixed": "./imagesTr/s0_0000.nii.gz", "moving": "./imagesTr/s1_0000.nii.gz"},
        {"fixed": "./imagesTr/s2_0000.nii.gz", "moving": "./imagesTr/s0_0000.nii.gz"},
    ]
    (root / "tiny_dataset.json").write_text(json.dumps({"training": training, "registration_val": pairs}))
    return root


def overrides(name: str, dataset_dir: Path, out: Path) -> dict:
    """Config overrides that point a bundle at a tiny dataset and keep every output under ``out``."""
    ndim, extra = BUNDLES[name]
    return {
        "bundle_root": str(ROOT / "bundles" / name),
        "dataset_dir": str(dataset_dir),
        "spatial_size": [SIZE] * ndim,
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
        **extra,
    }


def workflow(name: str, files: list[str], workflow_type: str, **config) -> ConfigWorkflow:
    """An initialised ``ConfigWorkflow`` of bundle ``name`` from its config ``files``."""
    configs = ROOT / "bundles" / name / "configs"
    flow = ConfigWorkflow(
        config_file=[str(configs / f) for f in files],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **config,
    )
    flow.initialize()
    return flow


def cli(name: str, command: str, files: list[str], launcher: list[str] | None = None, **config):
    """Run ``python -m monai.bundle <command>`` on bundle ``name`` in a subprocess; returns the CompletedProcess."""
    configs = ROOT / "bundles" / name / "configs"
    args = [*(launcher or [sys.executable]), "-m", "monai.bundle", *command.split()]
    args += ["--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf")]
    args += ["--config_file", str([str(configs / f) for f in files])]
    for key, value in config.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
