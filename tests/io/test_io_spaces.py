"""Network grid, resampling, native displacements and physical warps, against analytic and SimpleITK references."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import affine_ddf, rotation_matrix, smooth_random_field
from io_helpers import continuous_index, nifti_to_sitk, oblique_affine, sitk_array, smooth_image, world_points
from monai.data import MetaTensor

from monai_vmorph.data.keys import FIXED_IMAGE
from monai_vmorph.io import affine_2d, native_displacement, network_grid, resample, resample_displacement, warp_physical
from monai_vmorph.io import spaces as spaces_module
from monai_vmorph.networks import warp
from monai_vmorph.transforms import registration_preprocessing

# a permuted, flipped, anisotropic axis-aligned affine (array axes -> world: i->-y, j->+z, k->-x)
PERMUTED = np.array([[0.0, 0.0, -2.5, 50.0], [-1.5, 0.0, 0.0, 30.0], [0.0, 1.2, 0.0, -20.0], [0, 0, 0, 1]])
FIXED = {
    3: ((22, 20, 16), oblique_affine((22, 20, 16), (1.1, 0.9, 1.4), (5, -3, 8), (0.35, -0.2, 0.25), flip_axis=0)),
    2: ((26, 21), oblique_affine((26, 21), (1.1, 0.9), (5, -3), (0.35,), flip_axis=0)),
}
MOVING = {
    3: ((24, 22, 20), oblique_affine((24, 22, 20), (1.2, 1.0, 1.1), (4, -2, 7), (-0.2, 0.15, 0.1))),
    2: ((28, 24), oblique_affine((28, 24), (1.2, 1.0), (4, -2), (-0.2,))),
}


def _inside(index, shape, low=-0.5, high=-0.5):
    """Mask of continuous indices ``(..., ndim)`` with ``low <= c < n + high`` on every axis."""
    return ((index >= low) & (index < np.array(shape) + high)).all(-1)


# ----------------------------------------------------------------------------------------------- network_grid
def test_network_grid_is_axis_aligned_ras_centred_on_the_fixed_field_of_view():
    shape, affine = FIXED[3]
    net_shape, net_affine = network_grid(shape, affine, (1.25, 1.0, 1.1), (16, 12, 10))
    assert net_shape == (16, 12, 10)
    np.testing.assert_array_equal(net_affine[:3, :3], np.diag([1.25, 1.0, 1.1]))
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    np.testing.assert_allclose(net_affine[:3, :3] @ ((np.array(net_shape) - 1) / 2) + net_affine[:3, 3], centre)
    # one value for every axis
    _, iso = network_grid(shape, affine, 2.0, (16, 12, 10))
    np.testing.assert_array_equal(np.diag(iso)[:3], [2.0, 2.0, 2.0])


def test_network_grid_keeps_native_voxel_sizes_in_ras_order():
    _, net_affine = network_grid((20, 24, 16), PERMUTED, None, (8, 8, 8))
    np.testing.assert_allclose(net_affine[:3, :3], np.diag([2.5, 1.5, 1.2]))
    affine2 = np.array([[0.0, -0.7, 3.0], [1.9, 0.0, -1.0], [0, 0, 1]])
    net_shape, net2 = network_grid((10, 12), affine2, None, (6, 5))
    assert net_shape == (6, 5)
    np.testing.assert_allclose(net2[:2, :2], np.diag([0.7, 1.9]))
    np.testing.assert_allclose(net2 @ [2.5, 2.0, 1.0], affine2 @ [4.5, 5.5, 1.0])


def test_network_grid_is_the_bundle_preprocessing_space_up_to_a_subvoxel_shift():
    shape, pixdim, size = (20, 24, 16), (1.0, 1.25, 1.5), (32, 24, 16)
    image = MetaTensor(torch.rand(1, *shape), affine=torch.as_tensor(PERMUTED))
    chain = registration_preprocessing(
        3, image_keys=[FIXED_IMAGE], label_keys=[], pixdim=pixdim, spatial_size=size, load=False
    )
    monai_out = chain({FIXED_IMAGE: image})[FIXED_IMAGE]
    monai_affine = monai_out.affine.numpy().astype(float)
    net_shape, net_affine = network_grid(shape, PERMUTED, pixdim, size)
    assert tuple(monai_out.shape[1:]) == net_shape
    np.testing.assert_allclose(monai_affine[:3, :3], net_affine[:3, :3], atol=1e-6)
    assert np.all(np.abs(monai_affine[:3, 3] - net_affine[:3, 3]) <= np.array(pixdim) + 1e-6)


def test_network_grid_rejects_bad_arguments():
    shape, affine = FIXED[3]
    with pytest.raises(ValueError, match="spatial_size"):
        network_grid(shape, affine, 1.0, (16, 16))
    with pytest.raises(ValueError, match="pixdim"):
        network_grid(shape, affine, (1.0, 0.0, 1.0), (8, 8, 8))
    with pytest.raises(ValueError, match="3x3"):
        network_grid((10, 12), np.eye(4), None, (8, 8))


# ----------------------------------------------------------------------------------------------- resample
@pytest.mark.parametrize("ndim", [3, 2])
def test_resample_matches_sitk_resample(tmp_path, monkeypatch, ndim):
    monkeypatch.setattr(spaces_module, "_CHUNK", 97)  # several slabs, so the chunked path is what is checked
    (shape, affine), (out_shape, out_affine) = MOVING[ndim], FIXED[ndim]
    rng = np.random.default_rng(0)
    image = rng.random(shape)
    labels = rng.integers(0, 5, shape).astype(np.int16)
    reference = nifti_to_sitk(np.zeros(out_shape), out_affine, tmp_path / "ref.nii.gz")
    identity = sitk.Transform(ndim, sitk.sitkIdentity)
    cases = ((image, "linear", sitk.sitkLinear), (labels, "nearest", sitk.sitkNearestNeighbor))
    for values, mode, interpolator in cases:
        moving = nifti_to_sitk(values, affine, tmp_path / f"{mode}.nii.gz")
        expected = sitk_array(sitk.Resample(moving, reference, identity, interpolator, 0.0, sitk.sitkFloat64))
        ours = resample(values, affine, out_shape, out_affine, mode)
        assert ours.dtype == values.dtype and ours.shape == out_shape
        assert (expected != 0).mean() > 0.5
        if mode == "linear":
            np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)
        else:
            assert (ours == expected).mean() >= 0.99


def test_resample_identity_channels_tensors_and_dtypes():
    shape, affine = FIXED[3]
    image = torch.rand(2, *shape, dtype=torch.float32)
    out = resample(image, affine, shape, affine)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == image.shape
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)
    labels = np.arange(np.prod(shape), dtype=np.int64).reshape(shape)
    np.testing.assert_array_equal(resample(labels, affine, shape, affine, "nearest"), labels)
    assert resample(labels, affine, shape, affine, "linear").dtype == np.float32
    # a whole-voxel translation of the output grid shifts the array; voxels beyond get the padding value
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ [2, -1, 0] + affine[:3, 3]
    out = resample(image[0].numpy(), affine, shape, shifted, padding_value=-7.0)
    np.testing.assert_allclose(out[:-2, 1:], image[0, 2:, :-1].numpy(), atol=1e-6)
    assert np.all(out[-2:] == -7.0) and np.all(out[:, 0] == -7.0)


def test_resample_rejects_ambiguous_or_bad_inputs():
    shape, affine = FIXED[2]
    with pytest.raises(ValueError, match="3x3"):
        resample(np.zeros(shape), np.eye(4), shape, np.eye(4))
    with pytest.raises(ValueError, match="mode"):
        resample(np.zeros(shape), affine, shape, affine, "cubic")
    with pytest.raises(ValueError, match="spatial dims"):
        resample(np.zeros((2, 3, *shape)), affine, shape, affine)
    np.testing.assert_allclose(affine_2d(np.diag([2.0, 3.0, 4.0, 1.0])), np.diag([2.0, 3.0, 1.0]))


# ----------------------------------------------------------------------------------------------- native_displacement
@pytest.mark.parametrize("ndim", [3, 2])
def test_native_displacement_of_a_translation_is_spacing_times_voxels(ndim):
    shape, affine = FIXED[ndim]
    pixdim = (1.5, 1.0, 1.25)[:ndim]
    net_shape, net_affine = network_grid(shape, affine, pixdim, (12, 14, 12)[:ndim])
    t = np.array([0.7, -1.2, 0.4][:ndim])
    ddf = torch.tensor(t, dtype=torch.float32).view(1, ndim, *([1] * ndim)).expand(1, ndim, *net_shape)
    out = native_displacement(ddf, net_affine, shape, affine)
    assert out.shape == (*shape, ndim) and out.dtype == np.float32
    q = continuous_index(world_points(shape, affine), net_affine)
    inside = _inside(q, net_shape)
    assert 0.2 < inside.mean() < 1.0  # some native voxels are outside the network grid
    np.testing.assert_allclose(out[inside], np.broadcast_to(np.array(pixdim) * t, out[inside].shape), rtol=1e-6)
    assert np.all(out[~inside] == 0)


def test_native_displacement_of_an_affine_ddf_is_the_analytic_composition():
    shape, affine = FIXED[3]
    net_shape, net_affine = network_grid(shape, affine, (1.2, 1.1, 1.3), (14, 14, 12))
    a = np.array([[1.05, 0.04, -0.02], [-0.03, 0.97, 0.05], [0.02, -0.04, 1.02]])
    b, c = np.array([0.6, -0.4, 0.9]), (np.array(net_shape) - 1) / 2
    ddf = affine_ddf(a, b, net_shape, center=c)  # u(q) = (A - I)(q - c) + b, float64
    out = native_displacement(ddf, net_affine, shape, affine)
    assert out.dtype == np.float64
    p = world_points(shape, affine)
    q = continuous_index(p, net_affine)
    moved = (q - c) @ a.T + c + b  # q + u(q): the network's transform in its voxels
    expected = moved @ net_affine[:3, :3].T + net_affine[:3, 3] - p  # T(p) - p in mm
    exact = _inside(q, net_shape, 0.0, -1.0 + 1e-9)  # linear interpolation of an affine field is exact here
    assert exact.mean() > 0.2
    np.testing.assert_allclose(out[exact], expected[exact], atol=1e-9)


@pytest.mark.parametrize("ndim", [3, 2])
def test_native_displacement_with_the_moving_image_on_a_grid_of_its_own(ndim):
    """Fixed network voxel q matches moving voxel q + u(q) of the grid M: T(p) = M (q + u(q)), and T = M inv(N)
    where the network saw nothing (u = 0 there)."""
    shape, affine = FIXED[ndim]
    net_shape, net_affine = network_grid(shape, affine, (1.2, 1.1, 1.3)[:ndim], (14, 14, 12)[:ndim])
    moving_affine = net_affine.copy()
    moving_affine[:ndim, :ndim] = np.diag((1.5, 1.0, 1.25)[:ndim]) @ rotation_matrix(ndim, 0.1)
    moving_affine[:ndim, ndim] += (3.0, -2.0, 1.5)[:ndim]
    a = np.eye(ndim) + 0.03 * np.arange(ndim * ndim).reshape(ndim, ndim) / ndim
    b, c = np.array([0.6, -0.4, 0.9][:ndim]), (np.array(net_shape) - 1) / 2
    ddf = affine_ddf(a, b, net_shape, center=c)
    out = native_displacement(ddf, net_affine, shape, affine, moving_net_affine=moving_affine)
    p = world_points(shape, affine)
    q = continuous_index(p, net_affine)
    exact, seen = _inside(q, net_shape, 0.0, -1.0 + 1e-9), _inside(q, net_shape)
    assert exact.mean() > 0.2 and (~seen).mean() > 0.1
    moved = np.where(exact[..., None], (q - c) @ a.T + c + b, q)
    expected = moved @ moving_affine[:ndim, :ndim].T + moving_affine[:ndim, ndim] - p
    np.testing.assert_allclose(out[exact | ~seen], expected[exact | ~seen], atol=1e-9)
    same = native_displacement(ddf, net_affine, shape, affine, moving_net_affine=net_affine)
    np.testing.assert_array_equal(same, native_displacement(ddf, net_affine, shape, affine))


@pytest.mark.parametrize("ndim", [3, 2])
def test_network_warp_equals_physical_warp_by_the_native_displacement(ndim):
    """The network's warp on its grid, brought back to the native grid, equals warp_physical by
    native_displacement on the native grid.

    Both approximate ``f(T(p))`` for a smooth analytic image ``f``: path A interpolates linearly three times
    (moving -> network grid, network warp, network -> native), path B once (plus the DDF). Linear interpolation
    errs by at most ``h^2 / 8 * sum |d2f/dx_k^2|`` per step: voxels ``h <= 1.4`` mm and ``|f''| <= 0.05 / mm^2``
    give ``~0.012`` per step, so 0.035 (vs values in ``[-0.5, 2.5]``) covers three steps. A DDF applied with a
    wrong convention (sign or axis order) differs by more than 0.2, so the test discriminates.
    """
    shape, affine = FIXED[ndim]
    mov_shape, mov_affine = MOVING[ndim]
    moving = smooth_image(world_points(mov_shape, mov_affine))
    net_shape, net_affine = network_grid(shape, affine, (1.25, 1.0, 1.1)[:ndim], (16, 16, 16)[:ndim])
    ddf = smooth_random_field(net_shape, 1.5, seed=3)

    def path_a(field):
        moving_net = torch.from_numpy(resample(moving, mov_affine, net_shape, net_affine))[None, None]
        return resample(warp(moving_net, field)[0, 0].numpy(), net_affine, shape, affine)

    displacement = native_displacement(ddf, net_affine, shape, affine)
    path_b = warp_physical(moving, mov_affine, shape, affine, displacement, "linear")
    # interior: 2 voxels inside the network grid, and the displaced point 2 voxels inside the moving grid (path A
    # interpolates the moving image at network nodes up to a diagonal network voxel, ~2 mm, away from it)
    inner = _inside(continuous_index(world_points(shape, affine), net_affine), net_shape, 2.0, -3.0)
    moved = world_points(shape, affine) + displacement
    inner &= _inside(continuous_index(moved, mov_affine), mov_shape, 2.0, -3.0)
    assert inner.sum() > (100 if ndim == 2 else 500)
    np.testing.assert_allclose(path_a(ddf)[inner], path_b[inner], atol=0.035)
    np.testing.assert_allclose(path_b[inner], smooth_image(moved)[inner], atol=0.015)  # path B vs analytic
    for wrong in (-ddf, ddf.flip(1)):
        assert np.abs(path_a(wrong) - path_b)[inner].max() > 0.2


# ----------------------------------------------------------------------------------------------- warp_physical
@pytest.mark.parametrize("ndim", [3, 2])
def test_label_mode_keeps_values_and_dtype(ndim):
    shape, affine = FIXED[ndim]
    rng = np.random.default_rng(1)
    blocks = np.kron(rng.choice([0, 3, 17, 250], [n // 3 + 1 for n in shape]), np.ones([3] * ndim))
    labels = blocks[tuple(slice(0, n) for n in shape)].astype(np.uint8)
    zero = np.zeros((*shape, ndim))
    np.testing.assert_array_equal(warp_physical(labels, affine, shape, affine, zero, "label"), labels)
    # a whole-voxel shift along array axis 0, written in mm
    shift = np.broadcast_to(affine[:ndim, 0] * 2, (*shape, ndim))
    out = warp_physical(labels, affine, shape, affine, shift, "label", padding_value=9)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:-2], labels[2:])
    assert np.all(out[-2:] == 9)
    smooth = smooth_random_field(shape, 2.0, seed=2)[0].movedim(0, -1).numpy()
    by_label = warp_physical(torch.from_numpy(labels), affine, shape, affine, smooth, "label")
    by_nearest = warp_physical(labels, affine, shape, affine, smooth, "nearest")
    assert isinstance(by_label, torch.Tensor) and by_label.dtype == torch.uint8
    assert set(np.unique(by_label.numpy())) <= {0, 3, 17, 250}
    assert (by_label.numpy() == by_nearest).mean() > 0.9


@pytest.mark.parametrize("ndim", [3, 2])
def test_label_mode_is_the_argmax_of_linearly_warped_indicators(ndim):
    """The definition, computed the slow way: each value's indicator warped with mode="linear", argmax over values
    (ties to the smaller value), padding where the point falls outside (where the linear warp pads with -1)."""
    (shape, affine), (ref_shape, ref_affine) = MOVING[ndim], FIXED[ndim]
    labels = np.random.default_rng(3).integers(0, 9, shape).astype(np.int16) * 7  # 9 values, many neighbours differ
    field = smooth_random_field(ref_shape, 2.5, seed=4)[0].movedim(0, -1).numpy()
    out = warp_physical(labels, affine, ref_shape, ref_affine, field, "label", padding_value=-3)
    values = np.unique(labels)
    indicators = [
        warp_physical((labels == v).astype(np.float64), affine, ref_shape, ref_affine, field, padding_value=-1.0)
        for v in values
    ]
    expected = np.where(indicators[0] < 0, -3, values[np.argmax(np.stack(indicators), axis=0)])
    assert out.dtype == np.int16 and 0.05 < (expected == -3).mean() < 0.9
    ties = np.sort(np.stack(indicators), axis=0)
    clear = (ties[-1] - ties[-2] > 1e-6) | (expected == -3)  # rounding may break exact ties either way
    np.testing.assert_array_equal(out[clear], expected[clear])
    assert clear.mean() > 0.9


def test_warp_physical_rejects_bad_fields_and_label_images():
    shape, affine = FIXED[3]
    image = np.random.default_rng(0).random(shape)
    with pytest.raises(ValueError, match="displacement_ras must have shape"):
        warp_physical(image, affine, shape, affine, np.zeros((*shape, 2)))
    bad = np.zeros((*shape, 3))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        warp_physical(image, affine, shape, affine, bad)
    with pytest.raises(ValueError, match="label map"):
        warp_physical(image, affine, shape, affine, np.zeros((*shape, 3)), "label")


def test_resample_displacement_of_an_affine_field_is_exact_inside_and_zero_outside():
    (shape, affine), (ref_shape, ref_affine) = MOVING[3], FIXED[3]
    m, v = np.array([[0.02, -0.01, 0.0], [0.01, 0.03, -0.02], [0.0, 0.01, -0.01]]), np.array([1.0, -2.0, 0.5])
    field = world_points(shape, affine) @ m.T + v  # linear in world position: interpolated exactly
    out = resample_displacement(torch.from_numpy(field), affine, ref_shape, ref_affine)
    assert isinstance(out, torch.Tensor) and out.shape == (*ref_shape, 3)
    c = continuous_index(world_points(ref_shape, ref_affine), affine)
    exact, outside = _inside(c, shape, 0.0, -1.0 + 1e-9), ~_inside(c, shape)
    assert exact.mean() > 0.3 and outside.mean() > 0.05
    expected = world_points(ref_shape, ref_affine) @ m.T + v
    np.testing.assert_allclose(out.numpy()[exact], expected[exact], atol=1e-9)
    assert np.all(out.numpy()[outside] == 0)
