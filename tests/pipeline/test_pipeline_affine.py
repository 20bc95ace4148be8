"""Affine pre-alignment: known affines recovered on the embedded brains, conventions, similarity, input errors."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from io_helpers import oblique_affine, rotation
from monai.losses import GlobalMutualInformationLoss

from monai_vmorph.errors import UserError
from monai_vmorph.io import affine_2d, resample, warp_physical
from monai_vmorph.metrics import label_dice
from monai_vmorph.pipeline.affine import (
    AFFINE_MODES,
    affine_displacement,
    affine_register,
    aligned_moving_affine,
)
from monai_vmorph.pipeline.similarity import SIMILARITIES, MutualInformation

DATA = Path(__file__).resolve().parents[2] / "data"


def _load(path):
    image = nib.load(path)
    array = np.asarray(image.dataobj).astype(np.float32)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return array, affine_2d(image.affine)
    return array, np.asarray(image.affine, dtype=np.float64)


def _brain_3d(name="colin27"):
    return _load(DATA / "brain_3d" / "imagesTr" / f"{name}_0000.nii.gz")


def _brain_2d(name="itk_t1"):
    return _load(DATA / "brain_2d" / "imagesTr" / f"{name}_0000.nii.gz")


def _world_affine(linear, shift, centre):
    """``(ndim + 1)`` world map ``p -> linear (p - centre) + centre + shift``."""
    ndim = len(shift)
    out = np.eye(ndim + 1)
    out[:ndim, :ndim] = linear
    out[:ndim, ndim] = np.asarray(centre) + np.asarray(shift) - linear @ np.asarray(centre)
    return out


def _brain_points(array, affine):
    """World points ``(N, ndim + 1)`` (homogeneous) of the voxels above background."""
    index = np.argwhere(array > 0.05).astype(np.float64)
    return np.c_[index, np.ones(len(index))] @ affine.T


def _rms_mm(estimate, truth, points):
    """RMS distance (mm) between the points mapped by two world matrices."""
    return float(np.sqrt(np.mean(np.sum(((points @ (estimate - truth).T)[:, :-1]) ** 2, axis=1))))


def _moved(array, affine, truth, moving_shape, moving_affine):
    """The moving scan for a known fixed -> moving world map ``truth``: ``moving(q) = fixed(inv(truth) q)``, on
    the moving grid (resampling ``array`` placed by ``truth @ affine``)."""
    return resample(array, truth @ affine, moving_shape, moving_affine)


# --------------------------------------------------------------------------------------------------- conventions
def test_aligned_moving_affine_and_displacement_follow_the_pull_back_convention():
    # a moving image whose value is its world x coordinate (mm) on an oblique grid: aligned(p) = moving(M p) = (M p)_x
    fixed_shape, fixed_affine = (12, 10, 8), oblique_affine((12, 10, 8), (2.0, 2.0, 2.0), (0, 0, 0), (0.1, 0, 0))
    moving_shape = (30, 28, 26)
    moving_affine = oblique_affine(moving_shape, (1.5, 1.5, 1.5), (3, -2, 1), (0.2, -0.1, 0.3), flip_axis=2)
    index = np.stack(np.meshgrid(*[np.arange(s) for s in moving_shape], indexing="ij"), axis=-1)
    moving = (index @ moving_affine[:3, :3].T + moving_affine[:3, 3])[..., 0]
    truth = _world_affine(rotation(3, (0.2, -0.1, 0.15)) * 1.05, (4.0, -3.0, 2.0), (1.0, 2.0, 3.0))
    fixed_index = np.stack(np.meshgrid(*[np.arange(s) for s in fixed_shape], indexing="ij"), axis=-1)
    p = fixed_index @ fixed_affine[:3, :3].T + fixed_affine[:3, 3]
    expected = (p @ truth[:3, :3].T + truth[:3, 3])[..., 0]
    aligned = resample(moving, aligned_moving_affine(truth, moving_affine), fixed_shape, fixed_affine)
    np.testing.assert_allclose(aligned, expected, atol=1e-6)  # linear interpolation of a linear image is exact
    displacement = affine_displacement(truth, fixed_shape, fixed_affine)
    np.testing.assert_allclose(displacement, p @ truth[:3, :3].T + truth[:3, 3] - p, atol=1e-9)
    warped = warp_physical(moving, moving_affine, fixed_shape, fixed_affine, displacement)
    np.testing.assert_allclose(warped, expected, atol=1e-6)


def test_mutual_information_equals_monai_bspline_loss():
    generator = torch.Generator().manual_seed(0)
    fixed = torch.rand((1, 1, 14, 12, 10), generator=generator)
    moving = (0.6 * fixed + 0.4 * torch.rand(fixed.shape, generator=generator)) ** 2
    for image in (fixed, moving):  # MONAI rescales by each image's own range: give both the range [0, 1]
        image.view(-1)[:2] = torch.tensor([0.0, 1.0])
    moving.requires_grad_(True)
    for bins in (23, 32):
        ours = MutualInformation(bins)
        ours.prepare(fixed)
        value = ours(moving)[0]
        reference = GlobalMutualInformationLoss(kernel_type="b-spline", num_bins=bins)(moving, fixed)
        assert float(value.detach()) == pytest.approx(float(reference), abs=1e-5)
        assert float(reference.detach()) < -0.3  # a real dependence, not a degenerate histogram
        grad = torch.autograd.grad(value, moving)[0].reshape(-1)
        grad_ref = torch.autograd.grad(reference, moving)[0].reshape(-1)
        # MONAI's gradient also flows through the image's min/max (voxels 0 and 1); everywhere else they agree
        torch.testing.assert_close(grad[2:], grad_ref[2:], atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------------------------------- recovery
@pytest.mark.slow
def test_known_affine_3d_is_recovered_across_grids():
    fixed, fixed_affine = _brain_3d()
    points = _brain_points(fixed, fixed_affine)
    centre = points[:, :3].mean(axis=0)
    linear = rotation(3, np.deg2rad([30.0, -18.0, 12.0])) @ np.diag([1.06, 0.93, 1.04])
    linear = linear @ np.array([[1, 0.04, -0.03], [0, 1, 0.02], [0, 0, 1]])
    truth = _world_affine(linear, (25.0, -40.0, 15.0), centre)
    # the moving scan lives on a bigger, oblique, flipped, anisotropic grid
    moving_shape = (84, 110, 92)
    moving_affine = oblique_affine(moving_shape, (2.5, 2.2, 2.3), centre, (0.3, -0.2, 0.1), flip_axis=1)
    moving = _moved(fixed, fixed_affine, truth, moving_shape, moving_affine)
    result = affine_register(fixed, fixed_affine, moving, moving_affine)
    assert result.mode == "affine" and result.matrix.shape == (4, 4) and result.matrix.dtype == np.float64
    assert _rms_mm(np.eye(4), truth, points) > 40  # far from the start
    assert _rms_mm(result.matrix, truth, points) <= 0.5
    assert result.loss_after < result.loss_before
    assert [level["spacing_mm"] for level in result.levels] == [8.0, 8.0, 4.0, 2.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_known_affine_2d_is_recovered(seed):
    fixed, fixed_affine = _brain_2d("icbm09a_z+10")
    points = _brain_points(fixed, fixed_affine)
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(rng.choice([-1, 1]) * rng.uniform(15, 30))
    linear = (
        rotation(2, [angle]) @ np.diag(rng.uniform(0.92, 1.08, 2)) @ np.array([[1, rng.uniform(-0.05, 0.05)], [0, 1]])
    )
    truth = _world_affine(linear, rng.uniform(-40, 40, 2), points[:, :2].mean(axis=0))
    moving_shape = (90, 100)
    moving_affine = oblique_affine(moving_shape, (2.5, 2.5), points[:, :2].mean(axis=0), (0.4,), flip_axis=0)
    moving = _moved(fixed, fixed_affine, truth, moving_shape, moving_affine)
    result = affine_register(torch.as_tensor(fixed), fixed_affine, moving, moving_affine)  # torch input works too
    assert result.matrix.shape == (3, 3)
    assert _rms_mm(result.matrix, truth, points) <= 0.5


def test_rigid_mode_recovers_a_rigid_motion_with_a_rigid_matrix():
    fixed, fixed_affine = _brain_2d("colin27_z+20")
    points = _brain_points(fixed, fixed_affine)
    truth = _world_affine(rotation(2, [np.deg2rad(-27.0)]), (-30.0, 35.0), points[:, :2].mean(axis=0))
    moving_affine = np.array([[2.0, 0.0, -130.0], [0.0, 2.0, -150.0], [0.0, 0.0, 1.0]])  # x, y in [-130, 128] mm
    moving = _moved(fixed, fixed_affine, truth, (130, 140), moving_affine)
    result = affine_register(fixed, fixed_affine, moving, moving_affine, "rigid")
    linear = result.matrix[:2, :2]
    np.testing.assert_allclose(linear.T @ linear, np.eye(2), atol=1e-9)  # a rotation: no scale or shear
    assert np.linalg.det(linear) == pytest.approx(1.0)
    assert _rms_mm(result.matrix, truth, points) <= 0.5
    assert {level["stage"] for level in result.levels} == {"rigid"}


@pytest.mark.slow
def test_identical_pair_gives_the_identity():
    fixed, fixed_affine = _brain_3d("icbm09a")
    result = affine_register(fixed, fixed_affine, fixed.copy(), fixed_affine, "affine", "ncc")
    assert _rms_mm(result.matrix, np.eye(4), _brain_points(fixed, fixed_affine)) < 0.1
    assert result.loss_after <= result.loss_before


@pytest.mark.slow
def test_pair_without_motion_is_not_made_worse():
    # two subjects already affinely aligned in MNI space: the tissue overlap must not drop
    fixed, fixed_affine = _brain_3d("icbm09a")
    moving, moving_affine = _brain_3d("colin27")
    fixed_labels = np.asarray(nib.load(DATA / "brain_3d" / "labelsTr" / "icbm09a_0000.nii.gz").dataobj)
    moving_labels = np.asarray(nib.load(DATA / "brain_3d" / "labelsTr" / "colin27_0000.nii.gz").dataobj)
    result = affine_register(fixed, fixed_affine, moving, moving_affine)

    def dice(matrix):
        placed = aligned_moving_affine(matrix, moving_affine)
        warped = resample(moving_labels.astype(np.int32), placed, fixed.shape, fixed_affine, "nearest")
        scores = label_dice(torch.as_tensor(warped)[None, None], torch.as_tensor(fixed_labels)[None, None], (1, 2, 3))
        return float(scores.mean())

    assert dice(result.matrix) >= dice(np.eye(4)) - 0.005
    assert _rms_mm(result.matrix, np.eye(4), _brain_points(fixed, fixed_affine)) < 5  # a small correction


def test_mutual_information_aligns_a_non_monotonic_contrast():
    fixed, fixed_affine = _brain_2d("itk_t1")
    points = _brain_points(fixed, fixed_affine)
    # CSF (~0.45) -> bright, GM (~0.7) -> dark, WM (~0.9) -> middle; background stays 0
    remapped = np.interp(fixed, [0.0, 0.05, 0.45, 0.7, 0.9, 1.0], [0.0, 0.1, 0.9, 0.25, 0.6, 0.65]).astype(np.float32)
    truth = _world_affine(rotation(2, [np.deg2rad(22.0)]) @ np.diag([1.05, 0.95]), (20.0, -25.0), points[:, :2].mean(0))
    moving_affine = np.array([[2.0, 0.0, -120.0], [0.0, 2.0, -160.0], [0.0, 0.0, 1.0]])
    moving = _moved(remapped, fixed_affine, truth, (120, 130), moving_affine)
    result = affine_register(fixed, fixed_affine, moving, moving_affine, similarity="mi")
    assert _rms_mm(result.matrix, truth, points) <= 0.5


def test_mode_none_returns_the_identity_and_reports_progress():
    fixed, fixed_affine = _brain_2d("itk_t1")
    moving, _ = _brain_2d("itk_pd")
    lines = []
    result = affine_register(fixed, fixed_affine, moving, fixed_affine, "none", progress=lines.append)
    np.testing.assert_array_equal(result.matrix, np.eye(3))
    assert result.loss_before == result.loss_after < 0 and result.levels == [] and lines == []
    result = affine_register(fixed, fixed_affine, moving, fixed_affine, "rigid", progress=lines.append)
    assert len(lines) == len(result.levels) == 3 and lines[0].startswith("affine rigid at 8 mm: ")


# --------------------------------------------------------------------------------------------------- input errors
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "similarity"}, "affine mode 'similarity' is unknown; choose one of affine, rigid, none"),
        ({"similarity": "mse"}, "affine similarity 'mse' is unknown; choose one of mi, ncc"),
        ({"moving": np.zeros((0, 5))}, "the moving image has shape (0, 5)"),
        ({"moving": np.ones((8, 8, 8))}, "the fixed image is 2D and the moving image 3D"),
        ({"moving_affine": np.eye(4)}, "the moving affine has shape (4, 4) but its image is 2D"),
        ({"moving": np.full((20, 20), 3.0)}, "the moving image is constant (every voxel 3)"),
        ({"fixed": np.full((20, 20), np.nan)}, "the fixed image has NaN/inf values"),
        ({"fixed_affine": np.zeros((3, 3))}, "the fixed affine is not a finite invertible affine"),
        ({"spacings_mm": [8, -1]}, "spacings_mm must be positive voxel sizes in mm"),
    ],
)
def test_bad_input_is_a_one_line_user_error(change, message):
    image, affine = _brain_2d("itk_t1")
    kwargs = {"fixed": image, "fixed_affine": affine, "moving": image, "moving_affine": affine, **change}
    with pytest.raises(UserError) as error:
        affine_register(**kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_allowed_values_are_the_documented_lists():
    assert AFFINE_MODES == ("affine", "rigid", "none")
    assert SIMILARITIES == ("mi", "ncc")
