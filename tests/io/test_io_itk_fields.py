"""ITK displacement-field files: our writer/reader against SimpleITK's own reader, writer and Resample."""

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import smooth_random_field
from io_helpers import nifti_to_sitk, oblique_affine, sitk_array, sitk_to_nifti

from monai_vmorph.data.errors import DataError
from monai_vmorph.io import (
    affine_to_itk,
    itk_to_affine,
    read_itk_displacement,
    resample_displacement,
    warp_physical,
    write_itk_displacement,
)
from monai_vmorph.io import itk_fields as itk_fields_module

LPS = {2: np.array([-1.0, -1.0]), 3: np.array([-1.0, -1.0, 1.0])}

# reference (field) and moving grids: oblique, anisotropic, overlapping, different from each other
GRIDS = {
    3: dict(
        ref_shape=(18, 16, 14),
        ref_affine=oblique_affine((18, 16, 14), (1.3, 0.8, 1.1), (-10, 5, 3), (0.3, -0.2, 0.15)),
        mov_shape=(20, 18, 16),
        mov_affine=oblique_affine((20, 18, 16), (0.9, 1.2, 1.0), (-9, 6, 2), (-0.25, 0.1, 0.3), flip_axis=1),
    ),
    2: dict(
        ref_shape=(20, 17),
        ref_affine=oblique_affine((20, 17), (1.3, 0.8), (-10, 5), (0.3,)),
        mov_shape=(22, 19),
        mov_affine=oblique_affine((22, 19), (0.9, 1.2), (-9, 6), (-0.25,), flip_axis=1),
    ),
}


def _field(shape, magnitude, seed):
    """(*shape, ndim) smooth random displacement in mm."""
    ndim = len(shape)
    return smooth_random_field(shape, magnitude, seed=seed)[0].permute(*range(1, ndim + 1), 0).numpy()


def _interior(shape, margin=2):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(margin, n - margin) for n in shape)] = True
    return mask


def _sitk_warp(moving, reference, field_path, interpolator):
    transform = sitk.DisplacementFieldTransform(sitk.ReadImage(str(field_path), sitk.sitkVectorFloat64))
    return sitk_array(sitk.Resample(moving, reference, transform, interpolator, 0.0, sitk.sitkFloat64))


@pytest.mark.parametrize("ndim", [3, 2])
def test_written_field_applied_by_sitk_equals_warp_physical(tmp_path, ndim):
    g = GRIDS[ndim]
    moving = np.random.default_rng(0).random(g["mov_shape"]) + 1.0
    displacement = _field(g["ref_shape"], 3.0, seed=1)
    path = write_itk_displacement(tmp_path / "warp.nii.gz", displacement, g["ref_affine"])

    header = nib.load(path).header
    assert header["intent_code"] == 1007
    assert nib.load(path).shape == (*g["ref_shape"], *([1] * (4 - ndim)), ndim)
    moving_sitk = nifti_to_sitk(moving, g["mov_affine"], tmp_path / "moving.nii.gz")
    reference = nifti_to_sitk(np.zeros(g["ref_shape"]), g["ref_affine"], tmp_path / "reference.nii.gz")

    expected = _sitk_warp(moving_sitk, reference, path, sitk.sitkLinear)
    ours = warp_physical(moving, g["mov_affine"], g["ref_shape"], g["ref_affine"], displacement, "linear")
    inside = _interior(g["ref_shape"]) & (expected != 0)
    assert inside.mean() > 0.3  # the test is not vacuous: the grids overlap
    np.testing.assert_allclose(ours[inside], expected[inside], rtol=1e-4)
    # ITK's border rule (half-voxel border extension, then padding) is reproduced on the whole grid too
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)

    expected = _sitk_warp(moving_sitk, reference, path, sitk.sitkNearestNeighbor)
    ours = warp_physical(moving, g["mov_affine"], g["ref_shape"], g["ref_affine"], displacement, "nearest")
    assert (ours == expected).mean() >= 0.99


@pytest.mark.parametrize("ndim", [3, 2])
def test_written_vectors_are_lps_on_the_reference_grid(tmp_path, ndim):
    g = GRIDS[ndim]
    displacement = _field(g["ref_shape"], 2.0, seed=2).astype(np.float32)
    path = write_itk_displacement(tmp_path / "warp.nii", displacement, g["ref_affine"])
    field = sitk.ReadImage(str(path))
    stored = sitk_array(field)
    np.testing.assert_array_equal(stored, displacement * LPS[ndim].astype(np.float32))
    index = tuple(int(n) - 2 for n in g["ref_shape"])
    world_lps = np.array(field.TransformIndexToPhysicalPoint(index))
    world_ras = g["ref_affine"][:ndim, :ndim] @ np.array(index) + g["ref_affine"][:ndim, ndim]
    np.testing.assert_allclose(world_lps, world_ras * LPS[ndim], atol=1e-4)

    read, affine = read_itk_displacement(path, spatial_dims=ndim)
    assert read.dtype == np.float32 and read.shape == (*g["ref_shape"], ndim)
    np.testing.assert_array_equal(read, displacement)
    np.testing.assert_allclose(affine, g["ref_affine"], atol=1e-5)


@pytest.mark.parametrize("ndim", [3, 2])
def test_affine_itk_geometry_round_trip(ndim):
    affine = GRIDS[ndim]["mov_affine"]
    origin, spacing, direction = affine_to_itk(affine)
    image = sitk.Image([4] * ndim, sitk.sitkFloat32)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    index = [3, 1, 2][:ndim]
    point = np.array(image.TransformIndexToPhysicalPoint(index))
    np.testing.assert_allclose(point, (affine[:ndim, :ndim] @ index + affine[:ndim, ndim]) * LPS[ndim], atol=1e-9)
    np.testing.assert_allclose(itk_to_affine(origin, spacing, direction), affine, atol=1e-12)


def _sitk_field(ndim, seed):
    """A field built and written by SimpleITK: a translation plus a smooth part, on its own oblique grid."""
    shape = (16, 15, 13)[:ndim]
    field = sitk.GetImageFromArray(np.zeros((*reversed(shape), ndim)), isVector=True)
    field.SetSpacing((1.1, 1.4, 0.9)[:ndim])
    field.SetOrigin((12.0, -4.0, 1.0)[:ndim])  # LPS
    angle = 0.2
    c, s = np.cos(angle), np.sin(angle)
    field.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1) if ndim == 3 else (c, -s, s, c))
    translation = np.array([1.7, -2.2, 0.8][:ndim])
    vectors = translation + _field(shape, 1.5, seed=seed)  # LPS mm, nibabel order
    values = sitk.GetImageFromArray(vectors.transpose(*reversed(range(ndim)), ndim), isVector=True)
    values.CopyInformation(field)
    return values


@pytest.mark.parametrize("ndim", [3, 2])
def test_field_written_by_sitk_is_read_and_applied_like_sitk(tmp_path, ndim):
    field = _sitk_field(ndim, seed=4)
    path = tmp_path / "ants_like_Warp.nii.gz"
    sitk.WriteImage(field, str(path))
    displacement, affine = read_itk_displacement(path)
    assert displacement.shape == (*field.GetSize(), ndim) and affine.shape == (ndim + 1, ndim + 1)
    # vector and position of one voxel, against SimpleITK's own reading of the file
    index = (3, 5, 7)[:ndim]
    field_read = sitk.ReadImage(str(path))
    np.testing.assert_allclose(displacement[index] * LPS[ndim], field_read[index], atol=1e-6)
    world_lps = np.array(field_read.TransformIndexToPhysicalPoint(index))
    np.testing.assert_allclose(affine[:ndim, :ndim] @ index + affine[:ndim, ndim], world_lps * LPS[ndim], atol=1e-4)

    # moving / reference images on other grids, written by ITK and read by nibabel (independent conversion)
    g = GRIDS[ndim]
    rng = np.random.default_rng(5)
    moving_np = np.kron(rng.integers(0, 6, [n // 2 + 1 for n in g["mov_shape"]]), np.ones([2] * ndim))
    moving_np = moving_np[tuple(slice(0, n) for n in g["mov_shape"])].astype(np.float64)
    moving_nifti = nifti_to_sitk(moving_np, g["mov_affine"], tmp_path / "m0.nii.gz")
    moving, moving_affine = sitk_to_nifti(moving_nifti, tmp_path / "moving.nii.gz")
    reference = nifti_to_sitk(np.zeros(g["ref_shape"]), g["ref_affine"], tmp_path / "r0.nii.gz")
    _, ref_affine = sitk_to_nifti(reference, tmp_path / "reference.nii.gz")
    on_ref = resample_displacement(displacement, affine, g["ref_shape"], ref_affine)

    for mode, interpolator in (("linear", sitk.sitkLinear), ("nearest", sitk.sitkNearestNeighbor)):
        expected = _sitk_warp(moving_nifti, reference, path, interpolator)
        ours = warp_physical(moving, moving_affine, g["ref_shape"], ref_affine, on_ref, mode)
        assert (expected != 0).mean() > 0.3
        if mode == "linear":
            inside = _interior(g["ref_shape"])
            # 1e-4 of the intensity range: the grids pass through float32 NIfTI headers
            np.testing.assert_allclose(ours[inside], expected[inside], rtol=1e-4, atol=1e-4 * np.abs(expected).max())
        else:
            assert (ours == expected).mean() >= 0.99


def test_resample_displacement_is_zero_outside_the_field_like_itk(tmp_path):
    field = _sitk_field(3, seed=6)
    path = tmp_path / "w.nii.gz"
    sitk.WriteImage(field, str(path))
    displacement, affine = read_itk_displacement(path)
    transform = sitk.DisplacementFieldTransform(sitk.ReadImage(str(path), sitk.sitkVectorFloat64))
    # a larger reference grid: part of it lies outside the field's domain
    ref_shape = (20, 20, 18)
    ref_affine = oblique_affine(ref_shape, (1.5, 1.5, 1.5), (-12.0, 4.0, 1.0), (0.1, 0.2, -0.1))
    on_ref = resample_displacement(displacement, affine, ref_shape, ref_affine)
    rng = np.random.default_rng(0)
    for index in rng.integers(0, 18, size=(40, 3)):
        p_ras = ref_affine[:3, :3] @ index + ref_affine[:3, 3]
        moved_lps = np.array(transform.TransformPoint(tuple(p_ras * LPS[3])))
        np.testing.assert_allclose(on_ref[tuple(index)], moved_lps * LPS[3] - p_ras, atol=1e-5)
    assert (np.abs(on_ref).sum(-1) == 0).mean() > 0.1


def _save(path, data, affine=None, intent=None):
    image = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    if intent is not None:
        image.header.set_intent(intent)
    nib.save(image, str(path))
    return path


def test_bad_fields_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="not an ITK displacement field"):
        read_itk_displacement(_save(tmp_path / "scalar.nii.gz", np.zeros((5, 6, 7), np.float32)))
    with pytest.raises(DataError, match="not an ITK displacement field"):
        read_itk_displacement(_save(tmp_path / "4d.nii.gz", np.zeros((5, 6, 7, 3), np.float32)))
    with pytest.raises(DataError, match="intent"):
        read_itk_displacement(_save(tmp_path / "sym.nii.gz", np.zeros((5, 6, 7, 1, 3)), intent="symmetric matrix"))
    thin = _save(tmp_path / "thin.nii.gz", np.zeros((5, 6, 1, 1, 3), np.float32), intent="vector")
    assert read_itk_displacement(thin)[0].shape == (5, 6, 1, 3)  # a one-slice 3D field is valid in 3D...
    with pytest.raises(DataError, match="2D"):  # ...but not for 2D images
        read_itk_displacement(thin, spatial_dims=2)
    with pytest.raises(DataError, match="2 components"):
        read_itk_displacement(_save(tmp_path / "two.nii.gz", np.zeros((5, 6, 7, 1, 2), np.float32), intent="vector"))
    with pytest.raises(DataError, match="3D"):
        read_itk_displacement(_save(tmp_path / "2d.nii.gz", np.zeros((5, 6, 1, 1, 2), np.float32)), spatial_dims=3)
    nan = np.zeros((5, 6, 7, 1, 3), np.float32)
    nan[1, 2, 3, 0, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        read_itk_displacement(_save(tmp_path / "nan.nii.gz", nan, intent="vector"))
    with pytest.raises(DataError, match="does not exist"):
        read_itk_displacement(tmp_path / "missing.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="could not be read"):
        read_itk_displacement(tmp_path / "junk.nii.gz")


def test_write_refuses_to_overwrite_and_is_atomic(tmp_path, monkeypatch):
    affine = GRIDS[3]["ref_affine"]
    field = _field((6, 5, 4), 1.0, seed=0)
    path = write_itk_displacement(tmp_path / "out" / "warp.nii.gz", field, affine)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_itk_displacement(path, 2 * field, affine)
    assert path.read_bytes() == before
    write_itk_displacement(path, 2 * field, affine, overwrite=True)
    np.testing.assert_allclose(read_itk_displacement(path)[0], 2 * field, rtol=1e-12)

    def failing_write(image, name, *args, **kwargs):
        with open(name, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(itk_fields_module.sitk, "WriteImage", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        write_itk_displacement(path, 3 * field, affine, overwrite=True)
    with pytest.raises(RuntimeError, match="disk full"):
        write_itk_displacement(tmp_path / "out" / "new.nii.gz", field, affine)
    assert sorted(os.listdir(tmp_path / "out")) == ["warp.nii.gz"]
    np.testing.assert_allclose(read_itk_displacement(path)[0], 2 * field, rtol=1e-12)


def test_write_rejects_bad_fields(tmp_path):
    affine = GRIDS[3]["ref_affine"]
    field = _field((6, 5, 4), 1.0, seed=0)
    with pytest.raises(ValueError, match=r"\.nii"):
        write_itk_displacement(tmp_path / "w.mha", field, affine)
    bad = field.copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        write_itk_displacement(tmp_path / "w.nii.gz", bad, affine)
    with pytest.raises(ValueError, match="floating"):
        write_itk_displacement(tmp_path / "w.nii.gz", field[..., :2], affine)
    assert not list(tmp_path.iterdir())
