import re

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_vmorph.data.keys import FIXED_IMAGE, FIXED_LABEL, MOVING_IMAGE, MOVING_LABEL
from monai_vmorph.transforms import EnsureSpatialDimsd, registration_preprocessing

# an oblique-free but permuted, flipped, anisotropic affine (array axes -> world: i->-y, j->+z, k->-x)
AFFINE = np.array([[0.0, 0.0, -2.5, 50.0], [-1.5, 0.0, 0.0, 30.0], [0.0, 1.2, 0.0, -20.0], [0, 0, 0, 1]])
SHAPE = (20, 24, 16)
LANDMARK = np.array([6.3, 15.6, 9.2])  # voxel coordinates of a Gaussian blob's centre


def _blob(shape, center, sigma=1.5):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return np.exp(-((grid - center) ** 2).sum(-1) / (2 * sigma**2))


def _center_of_mass(x):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in x.shape], indexing="ij"), axis=-1)
    return (grid * x[..., None]).reshape(-1, x.ndim).sum(0) / x.sum()


def _world(affine, voxel):
    affine = np.asarray(affine, dtype=float)
    return affine[:-1, :-1] @ voxel + affine[:-1, -1]


def test_landmark_keeps_its_world_position_through_orientation_spacing_and_padding(tmp_path):
    image = 100.0 * _blob(SHAPE, LANDMARK)
    label = (_blob(SHAPE, LANDMARK) > 0.3).astype(np.uint8) * 3
    nib.save(nib.Nifti1Image(image.astype(np.float32), AFFINE), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(label, AFFINE), tmp_path / "lab.nii.gz")
    world = _world(AFFINE, LANDMARK)
    world_label = _world(AFFINE, _center_of_mass(label.astype(float)))

    chain = registration_preprocessing(3, pixdim=(1.0, 1.0, 1.0), divisor=16, percentiles=(0.0, 100.0))
    out = chain(
        {
            MOVING_IMAGE: str(tmp_path / "img.nii.gz"),
            FIXED_IMAGE: str(tmp_path / "img.nii.gz"),
            MOVING_LABEL: str(tmp_path / "lab.nii.gz"),
        }
    )
    moving, moving_label = out[MOVING_IMAGE], out[MOVING_LABEL]
    assert FIXED_LABEL not in out
    affine = moving.affine.numpy()
    # RAS at 1 mm: the affine's linear part is the identity
    np.testing.assert_allclose(affine[:3, :3], np.eye(3), atol=1e-6)
    assert all(n % 16 == 0 for n in moving.shape[1:]) and moving.dtype == torch.float32
    assert moving.min() >= 0 and moving.max() == pytest.approx(1.0)
    np.testing.assert_allclose(_world(affine, _center_of_mass(moving[0].numpy())), world, atol=0.15)
    np.testing.assert_allclose(
        _world(moving_label.affine.numpy(), _center_of_mass(moving_label[0].numpy())), world_label, atol=0.5
    )
    assert set(np.unique(moving_label.numpy())) <= {0.0, 3.0}


def test_two_d_slice_stored_as_3d_file_is_squeezed_and_keeps_world_coordinates(tmp_path):
    affine = np.diag([-0.8, 1.3, 2.0, 1.0])
    affine[:3, 3] = [40.0, -30.0, 12.0]
    center = np.array([7.4, 11.2])
    image = _blob((18, 22), center)[..., None]  # (H, W, 1)
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), tmp_path / "slice.nii.gz")
    chain = registration_preprocessing(2, image_keys=[MOVING_IMAGE], label_keys=[], pixdim=(1.0, 1.0), divisor=8)
    out = chain({MOVING_IMAGE: str(tmp_path / "slice.nii.gz")})[MOVING_IMAGE]
    assert out.dim() == 3 and all(n % 8 == 0 for n in out.shape[1:])
    expected = affine[:2, :2] @ center + affine[:2, 3]
    np.testing.assert_allclose(_world(out.affine.numpy(), _center_of_mass(out[0].numpy())), expected, atol=0.15)


def test_mixing_2d_and_3d_names_the_file(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    chain = registration_preprocessing(3, label_keys=[])
    with pytest.raises(RuntimeError) as error:  # MONAI's Compose wraps the transform's ValueError
        chain({MOVING_IMAGE: str(tmp_path / "vol.nii.gz"), FIXED_IMAGE: str(tmp_path / "flat.nii.gz")})
    cause = error.value.__cause__
    assert isinstance(cause, ValueError)
    assert re.search(r"flat\.nii\.gz: expected a 3D image for 'fixed_image'", str(cause))
    with pytest.raises(ValueError, match=r"expected a 2D image.*\(8, 8, 8\)"):
        EnsureSpatialDimsd("x", 2)({"x": torch.zeros(1, 8, 8, 8)})


def test_fixed_spatial_size_brings_pairs_from_different_grids_to_one_shape(tmp_path):
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((10, 12, 9), np.float32), np.diag([2, 2, 2, 1.0])), tmp_path / "a.nii")
    nib.save(nib.Nifti1Image(rng.random((30, 20, 25), np.float32), np.eye(4)), tmp_path / "b.nii")
    chain = registration_preprocessing(3, label_keys=[], pixdim=1.5, spatial_size=(16, 16, 16))
    out = chain({MOVING_IMAGE: str(tmp_path / "a.nii"), FIXED_IMAGE: str(tmp_path / "b.nii")})
    assert out[MOVING_IMAGE].shape == out[FIXED_IMAGE].shape == (1, 16, 16, 16)
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        registration_preprocessing(3, percentiles=(50.0, 10.0))
