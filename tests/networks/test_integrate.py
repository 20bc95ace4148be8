import numpy as np
import pytest
import torch
from helpers import affine_ddf, index_grid, rotation_matrix, smooth_random_field

from monai_vmorph.networks import VecInt, integrate_velocity, warp


def _skew(ndim, angle):
    w = np.zeros((ndim, ndim))
    w[0, 1], w[1, 0] = -angle, angle
    return w


def _disk(shape, radius):
    """Voxels within ``radius`` of the centre in the plane of axes 0 and 1."""
    c = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float64).view(-1, *([1] * len(shape)))
    r = (index_grid(shape) - c)[:2].square().sum(0).sqrt()
    return r <= radius


@pytest.mark.parametrize("ndim", [2, 3])
def test_rotation_velocity_integrates_to_rotation(ndim):
    """v(x) = W (x - c) with W skew-symmetric integrates to the rotation exp(W) about c."""
    shape = (24, 24, 5)[:ndim]
    angle = 0.5
    center = [(n - 1) / 2 for n in shape]
    velocity = affine_ddf(np.eye(ndim) + _skew(ndim, angle), np.zeros(ndim), shape, center)
    ddf = VecInt(num_steps=7)(velocity)
    # scaling and squaring of a linear field is exact linear algebra, (I + W / 2^7) ^ (2^7), away from the
    # grid's edge (extrapolated values there reach radius ~7 through the seven compositions)
    s_and_s = np.linalg.matrix_power(np.eye(ndim) + _skew(ndim, angle) / 2**7, 2**7)
    expected = affine_ddf(s_and_s, np.zeros(ndim), shape, center)
    core = _disk(shape, 6.0)
    torch.testing.assert_close(ddf[0][:, core], expected[0][:, core], rtol=0, atol=1e-12)
    disk = _disk(shape, 9.0)
    # ...and close to the analytic rotation (error ~ r * angle^2 / 2^8)
    rotation = affine_ddf(rotation_matrix(ndim, angle), np.zeros(ndim), shape, center)
    error = (ddf[0][:, disk] - rotation[0][:, disk]).norm(dim=0).max()
    assert error < 0.02


def test_constant_velocity_is_exact_translation_everywhere():
    velocity = torch.zeros(1, 3, 10, 9, 8, dtype=torch.float64)
    velocity[:, 0], velocity[:, 1], velocity[:, 2] = 1.5, -2.25, 0.5
    torch.testing.assert_close(integrate_velocity(velocity, 7), velocity, rtol=0, atol=1e-12)
    # zero padding (voxelmorph / MONAI DVF2DDF) shrinks the translation at the border
    zeros = integrate_velocity(velocity, 7, padding_mode="zeros")
    assert (zeros - velocity).abs().max() > 0.1


def test_zero_steps_returns_the_field():
    v = smooth_random_field((8, 9), 2.0)
    assert integrate_velocity(v, 0) is v


@pytest.mark.parametrize("ndim", [2, 3])
def test_negated_velocity_integrates_to_the_inverse(ndim):
    shape = (20, 22, 18)[:ndim]
    v = smooth_random_field(shape, 2.0, seed=7)
    forward, backward = integrate_velocity(v, 7), integrate_velocity(-v, 7)
    composed = forward + warp(backward, forward)  # (phi^-1 o phi)(x) - x
    interior = (slice(None), slice(None), *[slice(3, n - 3) for n in shape])
    assert forward.abs().max() > 1.0
    assert composed[interior].abs().max() < 0.05


def test_gradients_flow_and_bad_steps_raise():
    v = smooth_random_field((8, 8, 8), 1.0).requires_grad_()
    integrate_velocity(v, 5).square().sum().backward()
    assert v.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="non-negative int, got -1"):
        VecInt(num_steps=-1)
    with pytest.raises(ValueError, match="one channel per spatial dim"):
        integrate_velocity(torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="velocity must be finite"):
        VecInt(check_finite=True)(torch.full((1, 2, 4, 4), float("nan")))


@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid behavior has changed for unit-size grids")
@pytest.mark.parametrize("padding_mode", ["border", "zeros", "reflection"])
@pytest.mark.parametrize("shape", [(2, 2, 9, 7), (1, 3, 12, 10, 8), (2, 3, 5, 1, 6)])
def test_integration_equals_its_definition_by_voxel_unit_warps(shape, padding_mode):
    """``integrate_velocity`` composes in grid_sample's units; the definition ``u <- u + u(x + u)`` in voxel units,
    written with the public ``warp``, gives the same field and gradients (float64), including a size-1 axis."""
    torch.manual_seed(0)
    velocity = (3 * torch.randn(shape, dtype=torch.float64)).requires_grad_()
    ddf = velocity / 2**5
    for _ in range(5):
        ddf = ddf + warp(ddf, ddf, padding_mode=padding_mode)
    got = integrate_velocity(velocity, 5, padding_mode)
    assert got.is_contiguous() and ddf.abs().max() > 1
    grad_out = torch.randn_like(ddf)
    (want_grad,) = torch.autograd.grad((ddf * grad_out).sum(), velocity)
    (got_grad,) = torch.autograd.grad((got * grad_out).sum(), velocity)
    torch.testing.assert_close(got, ddf, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)
