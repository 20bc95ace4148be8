"""RegistrationWriter: the network's result on the native grid of each fixed scan.

A known network field (a constant translation in network voxels) on scans whose native grids are neither the
network's 2 mm grid nor each other's: the expected transform is derived here from the batch's grid affines, the
moving image is a linear ramp in world coordinates (so linear interpolation is exact) and SimpleITK applies the
written ITK field as an independent reference.
"""

import errno

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from io_helpers import continuous_index, oblique_affine, rotation, sitk_array, world_points
from monai.data import DataLoader, Dataset, MetaTensor
from monai.utils import CommonKeys

from monai_vmorph.data.keys import FIXED_IMAGE, FIXED_NAME, MOVING_IMAGE, MOVING_LABEL, MOVING_NAME
from monai_vmorph.engines import RegistrationWriter
from monai_vmorph.engines import writer as writer_module
from monai_vmorph.errors import UserError
from monai_vmorph.io.atomic import OutputWriteError
from monai_vmorph.networks import RegistrationResult
from monai_vmorph.pipeline import AFFINE_META_KEY
from monai_vmorph.transforms import registration_preprocessing

NET = 16  # network grid: 16 voxels of 2 mm per axis
SHIFT = np.array([0.75, -0.5, 0.4])  # the network's field, in network voxels
RAMP = np.array([0.02, -0.015, 0.01])  # moving intensity: 1 + RAMP . p (p in RAS mm)
SLICE_Z = 7.0  # z position of the 2D slices in their files


def _ramp(points):
    return 1.0 + points @ RAMP[: points.shape[-1]]


def _labels(points):
    return (1 + (points[..., 0] > 1.0) + 2 * (points[..., 1] > 0.5)).astype(np.uint8)


def _save(path, array, affine):
    """Save on the grid ``affine``; 2D images as an ``(X, Y, 1)`` slice at ``z = SLICE_Z``."""
    if affine.shape == (3, 3):
        full = np.eye(4)
        full[np.ix_([0, 1, 3], [0, 1, 3])] = affine
        full[2, 3] = SLICE_Z
        affine, array = full, array[..., None]
    nib.save(nib.Nifti1Image(array, affine, dtype=array.dtype), str(path))
    return str(path)


def _batch(tmp_path, ndim, label_dtype=np.uint8):
    """A collated one-pair batch with its native grids: fixed anisotropic, oblique, one axis reversed."""
    fixed_shape, moving_shape = (40, 18, 13)[:ndim], (18, 16, 12)[:ndim]
    angles = (0.12, -0.07, 0.05) if ndim == 3 else (0.12,)
    fixed_affine = oblique_affine(fixed_shape, (0.9, 1.5, 2.5)[:ndim], (3.0, -4.0, 6.0)[:ndim], angles, flip_axis=1)
    moving_affine = oblique_affine(moving_shape, (1.2, 1.2, 2.0)[:ndim], (1.0, 2.0, -1.0)[:ndim], (0.0,) * len(angles))
    moving_points = world_points(moving_shape, moving_affine)
    pair = {
        FIXED_IMAGE: _save(tmp_path / "f.nii.gz", np.ones(fixed_shape, np.float32), fixed_affine),
        MOVING_IMAGE: _save(tmp_path / "m.nii.gz", _ramp(moving_points).astype(np.float32), moving_affine),
        MOVING_LABEL: _save(tmp_path / "ml.nii.gz", _labels(moving_points).astype(label_dtype), moving_affine),
        FIXED_NAME: "f",
        MOVING_NAME: "m",
    }
    transform = registration_preprocessing(ndim, pixdim=2.0, spatial_size=(NET,) * ndim)
    batch = next(iter(DataLoader(Dataset([pair], transform), batch_size=1)))
    ddf = torch.tensor(SHIFT[:ndim], dtype=torch.float32).view(1, ndim, *[1] * ndim).expand(1, ndim, *[NET] * ndim)
    batch[CommonKeys.PRED] = RegistrationResult(warped=torch.zeros(1, 1, *[NET] * ndim), ddf=ddf, velocity=ddf)
    return batch, (fixed_shape, fixed_affine), (moving_shape, moving_affine)


def _affine(tensor, ndim):
    a = tensor.affine[0].double().numpy()
    return a if a.shape == (ndim + 1, ndim + 1) else a[np.ix_([0, 1, 3], [0, 1, 3])]


@pytest.mark.parametrize("ndim", [3, 2])
def test_outputs_are_the_network_transform_on_the_native_fixed_grid(tmp_path, ndim):
    batch, (fixed_shape, fixed_affine), (moving_shape, moving_affine) = _batch(tmp_path, ndim)
    net_fixed, net_moving = _affine(batch[FIXED_IMAGE], ndim), _affine(batch[MOVING_IMAGE], ndim)
    assert not np.allclose(net_fixed, net_moving)  # each image got its own preprocessed grid
    RegistrationWriter(tmp_path / "out")(batch)

    # the network matched fixed voxel q to moving voxel q + SHIFT (inside its grid), so T(p) = M (q + SHIFT)
    p = world_points(fixed_shape, fixed_affine)
    q = continuous_index(p, net_fixed)
    seen = np.all((q >= -0.5) & (q < NET - 0.5), axis=-1)
    assert 0.1 < seen.mean() < 0.9  # some fixed voxels lie outside the network's field of view
    moved = q + SHIFT[:ndim] * seen[..., None]
    target = moved @ net_moving[:ndim, :ndim].T + net_moving[:ndim, ndim]
    c = continuous_index(target, moving_affine)
    exact = np.all((c >= 0) & (c <= np.array(moving_shape) - 1), axis=-1)  # linear interpolation exact
    outside = np.any((c < -0.5) | (c >= np.array(moving_shape) - 0.5), axis=-1)
    assert exact.mean() > 0.2 and outside.mean() > 0.05

    warped = nib.load(tmp_path / "out" / "m_to_f_warped.nii.gz")
    file_affine = nib.load(tmp_path / "f.nii.gz").affine
    np.testing.assert_allclose(warped.affine, file_affine, atol=1e-6)  # 2D: the slice keeps its z position
    file_shape = nib.load(tmp_path / "f.nii.gz").shape  # a 2D slice's outputs keep its (X, Y, 1) form
    assert warped.shape == file_shape and warped.get_data_dtype() == np.float32
    values = np.asarray(warped.dataobj).reshape(fixed_shape)
    np.testing.assert_allclose(values[exact], _ramp(target)[exact], atol=1e-5)
    assert np.all(values[outside] == 0)

    labels = nib.load(tmp_path / "out" / "m_to_f_warped_label.nii.gz")
    assert labels.get_data_dtype() == np.uint8 and labels.shape == file_shape
    away = exact & (np.abs(target[..., 0] - 1.0) > 1.5) & (np.abs(target[..., 1] - 0.5) > 1.5)
    assert away.sum() > 50
    np.testing.assert_array_equal(np.asarray(labels.dataobj).reshape(fixed_shape)[away], _labels(target)[away])

    field = nib.load(tmp_path / "out" / "m_to_f_ddf.nii.gz")  # ITK: LPS mm vectors, (X, Y, Z, 1, ndim)
    assert field.shape == (*fixed_shape, *(1,) * (4 - ndim), ndim)
    lps = np.asarray(field.dataobj).reshape(*fixed_shape, ndim)
    np.testing.assert_allclose(lps * np.array([-1.0, -1.0, 1.0][:ndim]), target - p, atol=1e-4)


def test_simpleitk_applies_the_written_field_like_the_written_warp(tmp_path):
    batch, *_ = _batch(tmp_path, 3)
    RegistrationWriter(tmp_path / "out")(batch)
    field = sitk.ReadImage(str(tmp_path / "out" / "m_to_f_ddf.nii.gz"), sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(field)
    reference = sitk.Resample(
        sitk.ReadImage(str(tmp_path / "m.nii.gz")), sitk.ReadImage(str(tmp_path / "f.nii.gz")), transform
    )
    ours = np.asarray(nib.load(tmp_path / "out" / "m_to_f_warped.nii.gz").dataobj)
    np.testing.assert_allclose(ours, sitk_array(reference), atol=1e-5)
    assert np.count_nonzero(ours) > 0.3 * ours.size


def test_existing_outputs_are_kept_unless_overwrite(tmp_path):
    batch, *_ = _batch(tmp_path, 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "m_to_f_warped_label.nii.gz").write_bytes(b"keep me")
    with pytest.raises(UserError, match=r"m_to_f_warped_label\.nii\.gz exists; pass --overwrite true"):
        RegistrationWriter(out)(batch)
    assert sorted(p.name for p in out.iterdir()) == ["m_to_f_warped_label.nii.gz"]  # nothing else was written
    assert (out / "m_to_f_warped_label.nii.gz").read_bytes() == b"keep me"
    RegistrationWriter(out, overwrite=True)(batch)
    assert nib.load(out / "m_to_f_warped_label.nii.gz").shape == (40, 18, 1)


def test_in_memory_images_are_written_on_their_own_grid(tmp_path):
    """Without source files, the preprocessed tensors are the native grid: a zero field returns the moving image."""
    affine = torch.diag(torch.tensor([2.0, 3.0, 1.5, 1.0]))
    moving = MetaTensor(torch.rand(1, 1, 6, 5, 4), affine=affine[None])
    data = {
        FIXED_IMAGE: MetaTensor(torch.rand(1, 1, 6, 5, 4), affine=affine[None]),
        MOVING_IMAGE: moving,
        FIXED_NAME: ["f"],
        MOVING_NAME: ["m"],
        CommonKeys.PRED: RegistrationResult(warped=moving, ddf=torch.zeros(1, 3, 6, 5, 4), velocity=moving),
    }
    (tmp_path / "m_to_f_warped_label.nii.gz").write_bytes(b"another run's")  # not an output of a pair without labels
    RegistrationWriter(tmp_path)(data)
    assert (tmp_path / "m_to_f_warped_label.nii.gz").read_bytes() == b"another run's"
    warped = nib.load(tmp_path / "m_to_f_warped.nii.gz")
    np.testing.assert_allclose(warped.affine, affine.numpy())
    np.testing.assert_allclose(np.asarray(warped.dataobj), moving[0, 0].numpy(), atol=1e-6)


@pytest.mark.parametrize("stored", [np.uint16, np.uint32, np.int64, np.uint64, np.int16, np.float32])
def test_labels_of_any_type_are_written_in_their_files_type(tmp_path, stored):
    """Whatever the loader widens a label map to, its warped map is stored in the label file's own type."""
    written = stored
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    reference, *_ = _batch(tmp_path / "a", 3)
    RegistrationWriter(tmp_path / "a" / "out")(reference)
    batch, *_ = _batch(tmp_path / "b", 3, label_dtype=stored)
    RegistrationWriter(tmp_path / "b" / "out")(batch)
    labels = nib.load(tmp_path / "b" / "out" / "m_to_f_warped_label.nii.gz")
    assert labels.get_data_dtype() == written
    expected = np.asarray(nib.load(tmp_path / "a" / "out" / "m_to_f_warped_label.nii.gz").dataobj)
    np.testing.assert_array_equal(np.asarray(labels.dataobj), expected)


def test_a_failure_while_writing_a_pair_leaves_none_of_its_files(tmp_path, monkeypatch):
    batch, *_ = _batch(tmp_path, 3)

    def fail(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_module, "write_itk_displacement", fail)
    with pytest.raises(OutputWriteError, match=r"^no space left on device writing m_to_f_ddf\.nii\.gz in "):
        RegistrationWriter(tmp_path / "out")(batch)
    assert list((tmp_path / "out").iterdir()) == []  # neither the warped images nor any temporary file


@pytest.mark.parametrize("ndim", [3, 2])
def test_an_affine_stage_matrix_in_the_batch_is_composed_into_the_field(tmp_path, ndim):
    """AffineAlignd records A (fixed world -> moving world); the written transform is T(p) = A M (q + u(q))."""
    batch, (fixed_shape, fixed_affine), _ = _batch(tmp_path, ndim)
    matrix = np.eye(ndim + 1)
    matrix[:ndim, :ndim] = rotation(ndim, (0.2, -0.1, 0.05)[: 1 if ndim == 2 else 3]) * 1.05
    matrix[:ndim, ndim] = (4.0, -6.0, 3.0)[:ndim]
    batch[MOVING_IMAGE].meta[AFFINE_META_KEY] = torch.as_tensor(matrix)[None]  # collated: (B, n + 1, n + 1)
    RegistrationWriter(tmp_path / "out")(batch)
    net_fixed, net_moving = _affine(batch[FIXED_IMAGE], ndim), _affine(batch[MOVING_IMAGE], ndim)
    p = world_points(fixed_shape, fixed_affine)
    q = continuous_index(p, net_fixed)
    seen = np.all((q >= -0.5) & (q < NET - 0.5), axis=-1)
    moved = q + SHIFT[:ndim] * seen[..., None]
    target = moved @ net_moving[:ndim, :ndim].T + net_moving[:ndim, ndim]
    target = target @ matrix[:ndim, :ndim].T + matrix[:ndim, ndim]  # the affine stage, applied last
    lps = np.asarray(nib.load(tmp_path / "out" / "m_to_f_ddf.nii.gz").dataobj).reshape(*fixed_shape, ndim)
    np.testing.assert_allclose(lps * np.array([-1.0, -1.0, 1.0][:ndim]), target - p, atol=1e-4)
