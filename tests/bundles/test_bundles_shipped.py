"""The shipped weights beat the identity transform on the embedded validation pairs (MONAI's evaluate workflow)."""

import pytest
import torch
from bundle_helpers import ROOT, workflow

# bundle -> (identity mean Dice over CSF/GM/WM on its registration_val pairs, required gain of the shipped weights,
#            largest folding fraction: the 3D model is diffeomorphic, the 2D one (the seed's) predicts a plain field)
SHIPPED = {
    "voxelmorph_brain_3d": (0.5091, 0.10, 1e-3),
    "voxelmorph_brain_2d": (0.5975, 0.12, 0.02),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_beat_identity_on_the_validation_pairs(name, tmp_path):
    identity, margin, folding = SHIPPED[name]
    weights = ROOT / "bundles" / name / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)  # plain tensors: loads without unpickling code
    assert all(k.startswith("model.") and isinstance(v, torch.Tensor) for k, v in state.items())
    evaluate = workflow(
        name,
        ["train.json", "evaluate.json"],
        "infer",
        bundle_root=str(ROOT / "bundles" / name),
        output_dir=str(tmp_path),
    )
    evaluate.run()
    metrics = evaluate.evaluator.state.metrics
    assert metrics["val_mean_dice"] > identity + margin
    assert metrics["val_folding"] < folding
