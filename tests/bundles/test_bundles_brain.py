"""Both brain bundles' workflows run on tiny Learn2Reg datasets (MONAI's ConfigWorkflow and the CLI)."""

import csv

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from bundle_helpers import BUNDLES, ROOT, SIZE, cli, overrides, workflow
from io_helpers import sitk_array

from monai_vmorph.errors import find_user_error


@pytest.mark.slow
def test_train_then_evaluate_then_infer(bundle, tmp_path):
    name, dataset_dir = bundle
    ndim = BUNDLES[name][0]
    common = overrides(name, dataset_dir, tmp_path)
    train = workflow(name, ["train.json"], "train", max_epochs=2, pairs_per_epoch=2, val_interval=1, **common)
    assert train.check_properties() == []
    train.run()
    train.finalize()
    model_path = tmp_path / "models" / "model.pt"
    state = torch.load(model_path, weights_only=True)
    assert any(k.startswith("model.backbone.") for k in state)
    rows = list(csv.reader(open(tmp_path / "eval" / "metrics.csv")))
    assert {r[0] for r in rows} >= {"val_mean_dice", "val_folding", "val_sdlogj", "val_hd95"}

    evaluate = workflow(name, ["train.json", "evaluate.json"], "infer", ckpt_path=str(model_path), **common)
    assert evaluate.check_properties() == []
    evaluate.run()
    dice = evaluate.evaluator.state.metrics["val_mean_dice"]
    per_pair = list(csv.DictReader(open(tmp_path / "eval" / "val_mean_dice_raw.csv")))
    assert [r["filename"] for r in per_pair] == ["s1_0000_to_s0_0000", "s0_0000_to_s2_0000"]
    assert all(0 < float(r["mean"]) <= 1 for r in per_pair)
    assert dice == pytest.approx(np.mean([float(r["mean"]) for r in per_pair]), rel=1e-5)

    infer_out = tmp_path / "inference"
    infer = workflow(
        name,
        ["inference.json"],
        "infer",
        ckpt_path=str(model_path),
        **{**common, "output_dir": str(infer_out)},
    )
    assert infer.check_properties() == []
    infer.run()
    warped = nib.load(infer_out / "s1_0000_to_s0_0000_warped.nii.gz")
    labels = nib.load(infer_out / "s1_0000_to_s0_0000_warped_label.nii.gz")
    ddf = nib.load(infer_out / "s1_0000_to_s0_0000_ddf.nii.gz")
    fixed = nib.load(dataset_dir / "imagesTr" / "s0_0000.nii.gz")
    assert warped.shape == labels.shape == (SIZE,) * ndim
    assert ddf.shape == (SIZE,) * ndim + (1,) * (4 - ndim) + (ndim,)  # ITK displacement field
    np.testing.assert_allclose(warped.affine, fixed.affine)
    assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2, 3}
    # running again must not overwrite the outputs: refused before any work, in one line
    with pytest.raises(RuntimeError) as error:
        workflow(
            name,
            ["inference.json"],
            "infer",
            ckpt_path=str(model_path),
            **{**common, "output_dir": str(infer_out)},
        )
    cause = find_user_error(error.value)  # MONAI wraps the check's error
    assert "s1_0000_to_s0_0000_warped.nii.gz exists (results of an earlier run); pass --overwrite true" in str(cause)


def _spheres(path, shape, spacing, flip, shift):
    """A subject of the tiny dataset (nested spheres around ``SIZE`` mm + ``2 * shift``) on another grid: voxel
    size ``spacing``, axis 1 reversed if ``flip``, centred on the same world point."""
    ndim = len(shape)
    affine = np.eye(4)
    linear = np.diag(np.asarray(spacing, dtype=float))
    if flip:
        linear[1, 1] *= -1
    centre = np.full(ndim, SIZE - 1.0)  # world centre of the tiny dataset's 2 mm grid
    affine[:ndim, :ndim], affine[:ndim, 3] = linear, centre - linear @ ((np.array(shape) - 1) / 2)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    radius = np.linalg.norm(index @ linear.T + affine[:ndim, 3] - (SIZE + 2 * np.asarray(shift[:ndim])), axis=-1)
    image = np.select([radius < 10, radius < 18, radius < 24], [0.3, 0.6, 0.9], 0).astype(np.float32)
    nib.save(nib.Nifti1Image(image, affine), str(path))
    return str(path)


@pytest.mark.slow
def test_inference_of_one_pair_writes_on_the_native_fixed_grid(bundle, tmp_path):
    """``--moving/--fixed`` scans finer than the network's 2 mm, anisotropic, one not RAS: the outputs lie on the
    fixed scan's own grid, and SimpleITK applying the written ITK field reproduces the written warped image."""
    name, _ = bundle
    ndim = BUNDLES[name][0]
    fixed = _spheres(tmp_path / "fixed.nii.gz", (52, 44, 40)[:ndim], (1.0, 1.5, 1.25)[:ndim], True, (0, 0, 0))
    moving = _spheres(tmp_path / "moving.nii.gz", (48, 56, 44)[:ndim], (1.25, 1.0, 1.5)[:ndim], False, (2, -1, 1))
    out = tmp_path / "inference"
    config = {"bundle_root": str(ROOT / "bundles" / name), "spatial_size": [SIZE] * ndim, "output_dir": str(out)}
    run = cli(name, "run inferring", ["inference.json"], moving=moving, fixed=fixed, **config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["moving_to_fixed_ddf.nii.gz", "moving_to_fixed_warped.nii.gz"]
    warped = nib.load(out / "moving_to_fixed_warped.nii.gz")
    np.testing.assert_allclose(warped.affine, nib.load(fixed).affine, atol=1e-6)
    assert warped.shape == (52, 44, 40)[:ndim]
    field = sitk.ReadImage(str(out / "moving_to_fixed_ddf.nii.gz"), sitk.sitkVectorFloat64)
    assert field.GetDimension() == ndim and field.GetSize() == (52, 44, 40)[:ndim]
    reference = sitk.Resample(sitk.ReadImage(moving), sitk.ReadImage(fixed), sitk.DisplacementFieldTransform(field))
    ours = np.asarray(warped.dataobj)
    np.testing.assert_allclose(ours, sitk_array(reference), atol=1e-5)
    assert np.count_nonzero(ours) > 0.2 * ours.size
