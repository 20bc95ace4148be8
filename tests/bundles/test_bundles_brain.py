"""Both brain bundles' workflows run on tiny Learn2Reg datasets (MONAI's ConfigWorkflow and the CLI)."""

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import BUNDLES, SIZE, overrides, workflow


@pytest.mark.slow
def test_train_then_evaluate_then_infer(bundle, tmp_path):
    name, dataset_dir = bundle
    ndim = BUNDLES[name][0]
    common = overrides(name, dataset_dir, tmp_path)
    train = workflow(
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

    evaluate = workflow(name, ["common.json", "evaluate.json"], "infer", ckpt_path=str(model_path), **common)
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
    again = workflow(
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
