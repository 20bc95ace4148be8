"""Both brain bundles' workflows run on tiny Learn2Reg datasets (MONAI's ConfigWorkflow and the CLI)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32
# bundle -> (spatial dims, overrides that keep the test fast)
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


def _dataset(root, ndim):
    (root / "imagesTr").mkdir()
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


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def bundle(request, tmp_path_factory):
    """(bundle name, its tiny dataset folder)."""
    ndim = BUNDLES[request.param][0]
    return request.param, _dataset(tmp_path_factory.mktemp(f"tiny_l2r_{ndim}d"), ndim)


def _overrides(name, dataset_dir, out):
    ndim, extra = BUNDLES[name]
    return {
        "bundle_root": str(ROOT / "bundles" / name),
        "dataset_dir": str(dataset_dir),
        "spatial_size": [SIZE] * ndim,
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
        **extra,
    }


def _workflow(name, files, workflow_type, **overrides):
    configs = ROOT / "bundles" / name / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(configs / f) for f in files],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    workflow.initialize()
    return workflow


@pytest.mark.slow
def test_train_then_evaluate_then_infer(bundle, tmp_path):
    name, dataset_dir = bundle
    ndim = BUNDLES[name][0]
    common = _overrides(name, dataset_dir, tmp_path)
    train = _workflow(
        name, ["common.json", "train.json"], "train", max_epochs=2, pairs_per_epoch=2, val_interval=1, **common
    )
    assert train.check_properties() == []
    train.run()
    train.finalize()
    model_path = tmp_path / "models" / "model.pt"
    state = torch.load(model_path, weights_only=True)
    assert any(k.startswith("model.backbone.") for k in state)
    rows = list(csv.reader(open(tmp_path / "eval" / "metrics.csv")))
    assert {r[0] for r in rows} >= {"val_mean_dice", "val_folding", "val_sdlogj", "val_hd95"}

    evaluate = _workflow(name, ["common.json", "evaluate.json"], "infer", ckpt_path=str(model_path), **common)
    assert evaluate.check_properties() == []
    evaluate.run()
    dice = evaluate.evaluator.state.metrics["val_mean_dice"]
    per_pair = list(csv.DictReader(open(tmp_path / "eval" / "val_mean_dice_raw.csv")))
    assert [r["filename"] for r in per_pair] == ["s1_0000_to_s0_0000", "s0_0000_to_s2_0000"]
    assert all(0 < float(r["mean"]) <= 1 for r in per_pair)
    assert dice == pytest.approx(np.mean([float(r["mean"]) for r in per_pair]), rel=1e-5)

    infer_out = tmp_path / "inference"
    infer = _workflow(
        name,
        ["common.json", "inference.json"],
        "infer",
        ckpt_path=str(model_path),
        **{**common, "output_dir": str(infer_out)},
    )
    assert infer.check_properties() == []
    infer.run()
    warped = nib.load(infer_out / "s1_0000_to_s0_0000_warped.nii.gz")
    ddf = nib.load(infer_out / "s1_0000_to_s0_0000_ddf.nii.gz")
    fixed = nib.load(dataset_dir / "imagesTr" / "s0_0000.nii.gz")
    assert warped.shape == (SIZE,) * ndim and ddf.shape == (SIZE,) * ndim + (ndim,)
    np.testing.assert_allclose(warped.affine, fixed.affine)
    # running again must not overwrite the outputs
    again = _workflow(
        name,
        ["common.json", "inference.json"],
        "infer",
        ckpt_path=str(model_path),
        **{**common, "output_dir": str(infer_out)},
    )
    with pytest.raises(RuntimeError) as error:
        again.run()
    cause = error.value
    while cause.__cause__ is not None:  # MONAI wraps the writer's error twice
        cause = cause.__cause__
    assert isinstance(cause, FileExistsError) and "exists; pass overwrite=True" in str(cause)


@pytest.mark.slow
def test_cli_training_command_with_a_bad_loss_name_fails_clearly(bundle, tmp_path):
    name, dataset_dir = bundle
    configs = ROOT / "bundles" / name / "configs"
    size = ",".join([str(SIZE)] * BUNDLES[name][0])
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--meta_file",
        str(configs / "metadata.json"),
        "--config_file",
        str([str(configs / "common.json"), str(configs / "train.json")]),
        "--bundle_root",
        str(ROOT / "bundles" / name),
        "--dataset_dir",
        str(dataset_dir),
        "--spatial_size",
        f"[{size}]",
        "--ckpt_dir",
        str(tmp_path / "m"),
        "--output_dir",
        str(tmp_path / "e"),
        "--max_epochs",
        "1",
        "--pairs_per_epoch",
        "1",
        "--similarity",
        "ssim",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "similarity must be one of ['ncc', 'mse'], got 'ssim'" in result.stderr
