import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from helpers import affine_ddf, index_grid, rotation_matrix, smooth_random_field
from scipy.ndimage import map_coordinates

from monai_vmorph.networks import SpatialTransformer, identity_grid, warp
from monai_vmorph.networks.blocks.warp import grid_sample_3d_parallel

SHAPES = {2: (13, 17), 3: (9, 11, 8)}
# the module itself (``monai_vmorph.networks.blocks.warp`` the attribute is the ``warp`` function)
_WARP_MODULE = sys.modules["monai_vmorph.networks.blocks.warp"]


def _random_image(shape, channels=1, batch=1, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, *shape, generator=gen, dtype=dtype)


def _inside(ddf):
    """(B, *S) mask of voxels whose sample point x + u(x) lies inside the grid."""
    shape = ddf.shape[2:]
    points = index_grid(shape, ddf.dtype) + ddf
    limits = torch.tensor([n - 1 for n in shape], dtype=ddf.dtype).view(1, -1, *([1] * len(shape)))
    return ((points >= 0) & (points <= limits)).all(dim=1)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_zero_field_returns_input_exactly(ndim, dtype):
    image = _random_image(SHAPES[ndim], channels=3, batch=2, dtype=dtype)
    ddf = torch.zeros(2, ndim, *SHAPES[ndim], dtype=dtype)
    out = SpatialTransformer()(image, ddf)
    assert out.dtype == dtype
    torch.testing.assert_close(out, image, rtol=0, atol=1e-3 if dtype == torch.float16 else 1e-6)


def test_identity_grid_is_normalised_and_reversed():
    grid = identity_grid((3, 5))
    assert grid.shape == (1, 3, 5, 2)
    # last axis lists (x, y) = (array axis 1, array axis 0)
    torch.testing.assert_close(grid[0, :, :, 0], torch.linspace(-1, 1, 5).expand(3, 5))
    torch.testing.assert_close(grid[0, :, :, 1], torch.linspace(-1, 1, 3)[:, None].expand(3, 5))


@pytest.mark.parametrize("ndim", [2, 3])
def test_integer_shift_moves_channel_k_along_axis_k(ndim):
    shape = SHAPES[ndim]
    image = _random_image(shape)
    shift = [2, -1, 3][:ndim]
    ddf = torch.zeros(1, ndim, *shape, dtype=torch.float64)
    for k, s in enumerate(shift):
        ddf[:, k] = s
    out = warp(image, ddf)
    # independent reference: out[x] = image[x + shift] inside, 0 outside
    expected = torch.zeros_like(image)
    src = tuple(slice(max(s, 0), n + min(s, 0)) for n, s in zip(shape, shift, strict=True))
    dst = tuple(slice(max(-s, 0), n + min(-s, 0)) for n, s in zip(shape, shift, strict=True))
    expected[(..., *dst)] = image[(..., *src)]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
def test_random_field_matches_scipy_map_coordinates(ndim):
    shape = SHAPES[ndim]
    image = _random_image(shape, seed=1)
    ddf = smooth_random_field(shape, magnitude=2.5, seed=2)
    out = warp(image, ddf)[0, 0]
    points = (index_grid(shape) + ddf[0]).numpy()
    ref = map_coordinates(image[0, 0].numpy(), points, order=1, mode="constant", cval=0.0)
    inside = _inside(ddf)[0]
    assert inside.float().mean() > 0.5
    np.testing.assert_allclose(out[inside].numpy(), ref[inside.numpy()], rtol=0, atol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
def test_translation_and_rotation_of_a_linear_image(ndim):
    """A linear intensity image f(x) = w·x + c warped by x -> R(x - c0) + c0 + t gives f(R(x - c0) + c0 + t)."""
    shape = SHAPES[ndim]
    w = torch.tensor([0.7, -1.3, 0.4][:ndim], dtype=torch.float64)
    f = torch.einsum("k,k...->...", w, index_grid(shape)) + 5.0
    center = [(n - 1) / 2 for n in shape]
    rot = rotation_matrix(ndim, 0.3)
    t = [0.25, -0.6, 0.4][:ndim]
    ddf = affine_ddf(rot, t, shape, center)
    out = warp(f[None, None], ddf)[0, 0]
    mapped = index_grid(shape) + ddf[0]
    expected = torch.einsum("k,k...->...", w, mapped) + 5.0
    inside = _inside(ddf)[0]
    assert inside.float().mean() > 0.4
    torch.testing.assert_close(out[inside], expected[inside], rtol=0, atol=1e-10)


def test_matches_simpleitk_resample_with_displacement_field_transform():
    """Our warp equals ITK's Resample; ITK vectors are (x, y, z) = array axes (2, 1, 0) in physical units."""
    shape = (12, 14, 10)
    spacing_xyz = (0.8, 1.2, 2.0)
    image = _random_image(shape, seed=3)[0, 0]
    ddf = smooth_random_field(shape, magnitude=2.5, seed=4)
    ours = warp(image[None, None], ddf)[0, 0]

    moving = sitk.GetImageFromArray(image.numpy())
    moving.SetSpacing(spacing_xyz)
    spacing_per_array_axis = np.array(spacing_xyz[::-1]).reshape(3, 1, 1, 1)
    vectors_mm = (ddf[0].numpy() * spacing_per_array_axis)[::-1]  # array axes (0,1,2) -> ITK (z,y,x) reversed
    field = sitk.GetImageFromArray(np.ascontiguousarray(vectors_mm.transpose(1, 2, 3, 0)), isVector=True)
    field.SetSpacing(spacing_xyz)
    transform = sitk.DisplacementFieldTransform(field)
    itk = sitk.GetArrayFromImage(sitk.Resample(moving, moving, transform, sitk.sitkLinear, 0.0))

    inside = _inside(ddf)[0].numpy()
    assert inside.mean() > 0.5
    np.testing.assert_allclose(ours.numpy()[inside], itk[inside], rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_nearest_keeps_integer_label_maps(dtype):
    shape = (10, 12, 9)
    gen = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 40, (2, 1, *shape), generator=gen).to(dtype)
    ddf = torch.zeros(2, 3, *shape)
    ddf[:, 1] = 1.0  # integer shift along axis 1
    out = SpatialTransformer(mode="nearest")(labels, ddf)
    assert out.dtype == dtype
    torch.testing.assert_close(out[:, :, :, :-1], labels[:, :, :, 1:], rtol=0, atol=0)
    assert (out[:, :, :, -1] == 0).all()


def test_nearest_rounds_to_closest_voxel():
    labels = torch.arange(6, dtype=torch.int64).view(1, 1, 6, 1).expand(1, 1, 6, 3).contiguous()
    ddf = torch.zeros(1, 2, 6, 3)
    ddf[:, 0] = 0.4
    assert torch.equal(warp(labels, ddf, mode="nearest"), labels)
    ddf[:, 0] = 0.6
    assert torch.equal(warp(labels, ddf, mode="nearest")[0, 0, :5, 0], torch.arange(1, 6))


def test_batch_of_one_broadcasts():
    image = _random_image((8, 9), batch=1)
    ddf = smooth_random_field((8, 9), 1.0, seed=1).expand(3, 2, 8, 9).contiguous()
    out = warp(image, ddf)
    assert out.shape == (3, 1, 8, 9)
    torch.testing.assert_close(out[2], warp(image, ddf[:1])[0])


@pytest.mark.parametrize("ndim", [2, 3])
def test_gradients_reach_image_and_field(ndim):
    image = _random_image(SHAPES[ndim]).requires_grad_()
    ddf = smooth_random_field(SHAPES[ndim], 1.0).requires_grad_()
    warp(image, ddf).square().sum().backward()
    assert image.grad.abs().sum() > 0 and ddf.grad.abs().sum() > 0


def test_bad_inputs_raise_clear_errors():
    st = SpatialTransformer()
    image = torch.rand(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match=r"spatial shape \(8, 8, 8\).*got \(8, 8, 7\)"):
        st(image, torch.zeros(1, 3, 8, 8, 7))
    with pytest.raises(ValueError, match=r"one channel per spatial dim.*2 channels"):
        st(image, torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match=r"2 or 3 spatial dims.*\(1, 1, 8\)"):
        st(torch.rand(1, 1, 8), torch.zeros(1, 1, 8))
    with pytest.raises(ValueError, match=r"4 spatial dims"):
        st(torch.rand(1, 1, 4, 4, 4, 4), torch.zeros(1, 4, 4, 4, 4, 4))
    with pytest.raises(ValueError, match=r"dtype torch.int64.*mode='nearest'"):
        st(torch.ones(1, 1, 8, 8, 8, dtype=torch.int64), torch.zeros(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match=r"ddf must be a floating-point.*torch.int32"):
        st(image, torch.zeros(1, 3, 8, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"ddf must be finite, got 1 NaN"):
        ddf = torch.zeros(1, 3, 8, 8, 8)
        ddf[0, 0, 1, 2, 3] = float("nan")
        st(image, ddf)
    with pytest.raises(ValueError, match=r"same batch size.*2 and 3"):
        st(torch.rand(2, 1, 8, 8, 8), torch.zeros(3, 3, 8, 8, 8))
    with pytest.raises(ValueError, match=r"mode must be one of.*'cubic'"):
        SpatialTransformer(mode="cubic")
    with pytest.raises(ValueError, match=r"padding_mode.*'wrap'"):
        SpatialTransformer(padding_mode="wrap")
    with pytest.raises(ValueError, match=r"bicubic.*3D"):
        warp(image, torch.zeros(1, 3, 8, 8, 8), mode="bicubic")


def test_internal_identity_grid_is_cached_but_not_under_tracing():
    warp_module = _WARP_MODULE
    a = warp_module._identity((5, 6, 7), torch.device("cpu"), torch.float32)
    b = warp_module._identity((5, 6, 7), torch.device("cpu"), torch.float32)
    assert a is b  # built once per (shape, device, dtype)
    torch.testing.assert_close(a, identity_grid((5, 6, 7)), rtol=0, atol=0)
    assert warp_module._identity((5, 6, 8), torch.device("cpu"), torch.float32).shape == (1, 5, 6, 8, 3)

    # a traced graph must not capture the cached tensor as a constant: tracing gets a fresh grid each call
    seen = []

    def fn(x):
        grid = warp_module._identity(tuple(x.shape[2:]), x.device, x.dtype)
        seen.append(grid)
        return x + grid[..., 0].unsqueeze(1)

    torch.jit.trace(fn, torch.zeros(1, 1, 5, 6, 7), check_trace=False)
    assert seen[0] is not a


def test_repeated_warps_with_the_cached_grid_give_identical_results():
    image = _random_image((9, 11, 8), dtype=torch.float32)
    ddf = 2 * torch.rand(1, 3, 9, 11, 8, generator=torch.Generator().manual_seed(3)) - 1
    first = warp(image, ddf)
    second = warp(image, ddf)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    # and the cached grid still equals a freshly built identity afterwards (nothing wrote into it)
    fresh = identity_grid((9, 11, 8))
    cached = _WARP_MODULE._identity((9, 11, 8), image.device, image.dtype)
    torch.testing.assert_close(cached, fresh, rtol=0, atol=0)


@pytest.mark.parametrize("depth", [16, 19, 7])  # even slabs, padded slabs, too thin to split
@pytest.mark.parametrize(("mode", "padding_mode"), [("bilinear", "zeros"), ("nearest", "border")])
def test_threaded_3d_grid_sample_equals_grid_sample(depth, mode, padding_mode, monkeypatch):
    gen = torch.Generator().manual_seed(depth)
    image = torch.rand(1, 2, 12, 10, 9, generator=gen).requires_grad_(True)
    grid = (torch.rand(1, depth, 6, 5, 3, generator=gen) * 2.4 - 1.2).requires_grad_(True)  # some points outside
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    expected = F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    out = grid_sample_3d_parallel(image, grid, mode, padding_mode)
    assert out.shape == expected.shape == (1, 2, depth, 6, 5)
    assert torch.equal(out, expected)  # each output voxel is computed by the same kernel code
    weights = torch.rand(expected.shape, generator=gen)
    expected_grads = torch.autograd.grad((expected * weights).sum(), (image, grid))
    grads = torch.autograd.grad((out * weights).sum(), (image, grid))
    torch.testing.assert_close(grads[0], expected_grads[0], rtol=0, atol=1e-5)  # summed over slabs: other order
    torch.testing.assert_close(grads[1], expected_grads[1], rtol=0, atol=0)
    # batches, one thread, 2D: grid_sample itself
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert torch.equal(grid_sample_3d_parallel(image, grid, mode, padding_mode), expected)
