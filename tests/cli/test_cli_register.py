"""``register`` writes fields that SimpleITK reproduces; 2D inputs; real brains with the shipped weights."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
BRAIN_3D = ROOT / "data" / "brain_3d"
BRAIN_2D = ROOT / "data" / "brain_2d"


def _rotation(angle_deg, axes=(0, 1)):
    r = np.eye(3)
    a, b = axes
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def _oblique_scan(path, shape, spacing, rotation, shift):
    """A smooth 'head' sampled on an oblique anisotropic grid centred near the world origin."""
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2) + shift
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    r = np.linalg.norm(world / np.array([70.0, 85.0, 65.0]), axis=1)
    image = np.clip(1.2 - r, 0, 1) * (1 + 0.3 * np.sin(world[:, 0] / 9) * np.cos(world[:, 1] / 11))
    nib.save(nib.Nifti1Image(image.reshape(shape).astype(np.float32), affine), path)
    return path


@pytest.mark.slow
def test_simpleitk_resample_with_the_written_field_reproduces_warped(cli, weights_3d, tmp_path):
    fixed = _oblique_scan(tmp_path / "f.nii.gz", (50, 46, 30), (3.5, 4.0, 5.0), _rotation(12), (2, -3, 1))
    moving = _oblique_scan(
        tmp_path / "m.nii.gz", (44, 52, 26), (4.0, 3.6, 6.0), _rotation(-9, (1, 2)) @ np.diag([-1, 1, 1]), (-4, 2, 3)
    )
    out = tmp_path / "out"
    code, _, err = cli("register", "--fixed", fixed, "--moving", moving, "--out-dir", out, "--weights", weights_3d)
    assert code == 0, err
    field = nib.load(out / "ddf.nii.gz")
    assert field.shape == (50, 46, 30, 1, 3) and int(field.header["intent_code"]) == 1007
    np.testing.assert_allclose(field.affine, nib.load(fixed).affine, atol=1e-4)
    magnitude = np.linalg.norm(np.asarray(field.dataobj)[..., 0, :], axis=-1)
    assert magnitude.max() > 1.0  # a real deformation (mm), not the identity

    transform = sitk.DisplacementFieldTransform(sitk.ReadImage(str(out / "ddf.nii.gz"), sitk.sitkVectorFloat64))
    fixed_itk, moving_itk = sitk.ReadImage(str(fixed)), sitk.ReadImage(str(moving))
    reference = sitk.GetArrayFromImage(sitk.Resample(moving_itk, fixed_itk, transform, sitk.sitkLinear, 0.0))
    warped = nib.load(out / "warped.nii.gz")
    np.testing.assert_allclose(warped.affine, nib.load(fixed).affine)
    ours = np.asarray(warped.dataobj).transpose(2, 1, 0)  # SimpleITK arrays are (z, y, x)
    np.testing.assert_allclose(ours, reference, atol=2e-4 * reference.max())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["folding_percent"] >= 0 and metrics["sdlogj"] > 0 and metrics["seconds"] > 0

    # affine.txt is the affine stage alone, read by SimpleITK: it maps points as metrics.json's RAS matrix does
    matrix = np.array(metrics["affine"]["matrix"])
    assert metrics["affine"]["mode"] == "affine" and not np.allclose(matrix, np.eye(4), atol=1e-3)
    affine_itk = sitk.ReadTransform(str(out / "affine.txt"))
    flip = np.array([-1.0, -1.0, 1.0])
    points = np.random.default_rng(0).uniform(-60, 60, (20, 3))
    mapped = np.array([affine_itk.TransformPoint(tuple(p * flip)) for p in points]) * flip
    np.testing.assert_allclose(mapped, points @ matrix[:3, :3].T + matrix[:3, 3], atol=1e-6)


@pytest.mark.slow
def test_2d_slices_use_the_2d_model_and_keep_label_dtype(cli, weights_2d, tmp_path):
    fixed = BRAIN_2D / "imagesTr" / "colin27_z+0_0000.nii.gz"
    moving = BRAIN_2D / "imagesTr" / "icbm09a_z+10_0000.nii.gz"
    labels = [BRAIN_2D / "labelsTr" / p.name for p in (moving, fixed)]
    out = tmp_path / "out"
    code, stdout, err = cli(
        "register",
        "--fixed",
        fixed,
        "--moving",
        moving,
        "--moving-labels",
        labels[0],
        "--fixed-labels",
        labels[1],
        "--out-dir",
        out,
        "--weights",
        weights_2d,
        "--refine",
        3,
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "affine.txt",
        "ddf.nii.gz",
        "metrics.json",
        "warped.nii.gz",
        "warped_labels.nii.gz",
    ]
    warped_labels = nib.load(out / "warped_labels.nii.gz")
    assert warped_labels.shape == (96, 112) and warped_labels.get_data_dtype() == nib.load(labels[0]).get_data_dtype()
    assert set(np.unique(np.asarray(warped_labels.dataobj))) <= {0, 1, 2, 3}
    np.testing.assert_allclose(warped_labels.affine, nib.load(fixed).affine)  # the slice keeps its z position
    assert nib.load(out / "ddf.nii.gz").shape == (96, 112, 1, 1, 2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["dice"]) == {"1", "2", "3"} and metrics["refine_steps"] == 3
    assert metrics["loss_refined"] < metrics["loss_network"]
    assert "mean_dice" in stdout


def _shipped_pair(cli, out, refine, fast=False):
    moving, fixed = BRAIN_3D / "imagesTr" / "colin27_0000.nii.gz", BRAIN_3D / "imagesTr" / "icbm09a_0000.nii.gz"
    code, _, err = cli(
        "register",
        "--fixed",
        fixed,
        "--moving",
        moving,
        "--moving-labels",
        BRAIN_3D / "labelsTr" / moving.name,
        "--fixed-labels",
        BRAIN_3D / "labelsTr" / fixed.name,
        "--out-dir",
        out,
        "--refine",
        refine,
        "--quiet",
        *(["--fast"] if fast else []),
    )
    assert code == 0, err
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_shipped_weights_improve_dice_on_real_brains_and_refine_improves_further(cli, tmp_path):
    network = _shipped_pair(cli, tmp_path / "net", 0, fast=True)  # --fast: the network alone
    assert network["mean_dice_before"] == pytest.approx(0.540, abs=0.002)  # identity, as in data/README.md
    assert network["mean_dice"] > network["mean_dice_before"] + 0.08  # 0.646 in the bundle evaluation
    assert network["folding_percent"] < 0.1
    refined = _shipped_pair(cli, tmp_path / "refined", 0)  # the default: network, then the deformable stage
    assert refined["mean_dice"] > network["mean_dice"] + 0.03
    stage = refined["deformable"]
    assert all(level["final_similarity"] < level["initial_similarity"] for level in stage["levels"])
    assert stage["grid_voxel_mm"] == pytest.approx([2.0, 2.0, 2.0])  # the fixed scan's own voxels
    assert refined["folding_percent"] <= 0.01 and refined["sdlogj"] > 0
