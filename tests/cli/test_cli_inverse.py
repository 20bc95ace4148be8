"""``register --inverse``: the inverse field pushes the fixed scan's labels onto the moving scan as well as the forward
field pulls the moving labels onto the fixed one, applied by ``warp`` and by SimpleITK alike."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from monai_vmorph.pipeline import dice_per_label

ROOT = Path(__file__).resolve().parents[2]
BRAIN_3D = ROOT / "data" / "brain_3d"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "dice_gap", "residual_mm"),
    [(("--fast",), 0.03, 0.3), ((), 0.08, 1.0)],  # measured: gap 0.01 / 0.058, residual 0.17 / 0.65 mm
    ids=["network", "deformable-stage"],
)
def test_inverse_field_pushes_fixed_labels_onto_the_moving_scan(cli, tmp_path, preset, dice_gap, residual_mm):
    """On the shipped 3D weights (diffeomorphic: the inverse is exp(-v), refined by fixed-point steps), two real
    brains, the network alone and the default deformable stage on the fixed scan's grid. The deformable stage's
    detailed field compresses tissue several-fold in places (det J < 0.2 in ~0.5 % of the grid), where labels pushed
    by the inverse and pulled by the forward field differ most: its Dice gap is allowed to be wider."""
    fixed = BRAIN_3D / "imagesTr" / "icbm09a_0000.nii.gz"
    moving = BRAIN_3D / "imagesTr" / "colin27_0000.nii.gz"
    fixed_labels, moving_labels = (BRAIN_3D / "labelsTr" / p.name for p in (fixed, moving))
    out = tmp_path / "out"
    code, _, err = cli("register", "--fixed", fixed, "--moving", moving, "--moving-labels", moving_labels,
                       "--fixed-labels", fixed_labels, "--out-dir", out, "--inverse", *preset, "--quiet")  # fmt: skip
    assert code == 0, err
    inverse = nib.load(out / "inverse_ddf.nii.gz")
    assert inverse.shape == (*nib.load(moving).shape, 1, 3)
    np.testing.assert_allclose(inverse.affine, nib.load(moving).affine)
    metrics = json.loads((out / "metrics.json").read_text())

    pushed = tmp_path / "pushed.nii.gz"
    code, _, err = cli("warp", "--field", out / "inverse_ddf.nii.gz", "--moving", fixed_labels, "--reference", moving,
                       "--out", pushed, "--interp", "label", "--quiet")  # fmt: skip
    assert code == 0, err
    target = np.asarray(nib.load(moving_labels).dataobj)
    pushed_labels = np.asarray(nib.load(pushed).dataobj).reshape(target.shape)
    dice = float(np.mean(list(dice_per_label(pushed_labels, target).values())))
    assert dice > metrics["mean_dice_before"] + 0.1, (dice, metrics["mean_dice_before"])
    assert abs(dice - metrics["mean_dice"]) < dice_gap, (dice, metrics["mean_dice"])

    # ITK composes the two written fields: inverse(forward(x)) - x inside the fixed brain is the inverse's error
    def transform(path):
        return sitk.DisplacementFieldTransform(sitk.ReadImage(str(path), sitk.sitkVectorFloat64))

    composite = sitk.CompositeTransform([transform(out / "inverse_ddf.nii.gz"), transform(out / "ddf.nii.gz")])
    fixed_image = sitk.ReadImage(str(fixed))
    residual = sitk.TransformToDisplacementField(composite, sitk.sitkVectorFloat64, fixed_image.GetSize(),
                                                 fixed_image.GetOrigin(), fixed_image.GetSpacing(),
                                                 fixed_image.GetDirection())  # fmt: skip
    error = np.linalg.norm(sitk.GetArrayFromImage(residual), axis=-1)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(fixed_labels))) > 0
    assert error[brain].mean() < residual_mm, error[brain].mean()

    # SimpleITK applies the same field the same way (nearest neighbour: our label mode interpolates indicators)
    field = sitk.ReadImage(str(out / "inverse_ddf.nii.gz"), sitk.sitkVectorFloat64)
    reference = sitk.ReadImage(str(moving))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    by_itk = sitk.Resample(sitk.ReadImage(str(fixed_labels)), reference, transform, sitk.sitkNearestNeighbor, 0)
    by_itk = sitk.GetArrayFromImage(by_itk).T.reshape(target.shape)
    assert np.mean(by_itk == pushed_labels) > 0.97
