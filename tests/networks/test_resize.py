import numpy as np
import pytest
import torch
from helpers import affine_ddf, index_grid, rotation_matrix
from monai.networks.nets import VoxelMorph as MonaiVoxelMorph

from monai_vmorph.networks import ResizeField, VoxelMorph, field_scale_factors, resize_field


def _linear_field(shape, a, b):
    """u(x) = A x + b over array indices."""
    return affine_ddf(np.eye(len(shape)) + np.asarray(a), b, shape)


@pytest.mark.parametrize(("ndim", "in_shape", "out_shape"), [(2, (17, 12), (9, 6)), (3, (9, 13, 7), (17, 25, 13))])
def test_linear_field_resizes_exactly(ndim, in_shape, out_shape):
    """A displacement of d voxels at length n is d (m - 1) / (n - 1) voxels at length m."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.1, (ndim, ndim)), rng.normal(0, 2, ndim)
    out = resize_field(_linear_field(in_shape, a, b), out_shape)
    s = np.array([(m - 1) / (n - 1) for n, m in zip(in_shape, out_shape, strict=True)])
    # u_out(y)_k = s_k * u_k(y / s) = s_k * (sum_j A_kj y_j / s_j + b_k)
    expected = _linear_field(out_shape, s[:, None] * a / s[None, :], s * b)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert field_scale_factors(in_shape, out_shape) == pytest.approx(list(s))


def test_module_round_trip_and_errors():
    u = _linear_field((16, 16, 16), np.full((3, 3), 0.05), [1.0, -2.0, 0.5])
    half = ResizeField(0.5)(u)
    assert half.shape == (1, 3, 8, 8, 8)
    torch.testing.assert_close(ResizeField(2.0)(half), resize_field(half, (16, 16, 16)))
    torch.testing.assert_close(resize_field(half, (16, 16, 16)), u, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"3 positive ints.*\(8, 8\)"):
        resize_field(u, (8, 8))
    with pytest.raises(ValueError, match="scale_factor must be positive"):
        ResizeField(0)


class _FixedField(torch.nn.Module):
    """A 'backbone' that always predicts the same field."""

    def __init__(self, field):
        super().__init__()
        self.register_buffer("field", field.float(), persistent=False)

    def forward(self, x):
        return self.field.expand(x.shape[0], *self.field.shape[1:])


@pytest.mark.filterwarnings("ignore:monai.networks.blocks.Warp")
def test_half_resolution_integration_is_right_where_monai_half_res_is_not():
    """Integrate a rotation velocity at half resolution; compare the full-resolution DDF with exp(W)."""
    shape = (24, 24, 4)
    angle = 0.6
    center = [(n - 1) / 2 for n in shape]
    skew = np.zeros((3, 3))
    skew[0, 1], skew[1, 0] = -angle, angle
    velocity = affine_ddf(np.eye(3) + skew, np.zeros(3), shape, center)
    rotation = affine_ddf(rotation_matrix(3, angle), np.zeros(3), shape, center)[0].float()
    c = torch.tensor(center).view(3, 1, 1, 1)
    disk = (index_grid(shape, torch.float32) - c)[:2].square().sum(0).sqrt() <= 7.0
    images = torch.rand(1, 1, *shape), torch.rand(1, 1, *shape)

    ours = VoxelMorph(3, backbone=_FixedField(velocity), integration_steps=7, int_downsize=2)(*images).ddf[0]
    our_error = (ours[:, disk] - rotation[:, disk]).norm(dim=0).max()
    assert our_error < 0.05

    monai_net = MonaiVoxelMorph(backbone=_FixedField(velocity), integration_steps=7, half_res=True)
    monai_error = (monai_net(*images)[1][0][:, disk] - rotation[:, disk]).norm(dim=0).max()
    assert monai_error > 1.0  # values scaled by 2 at half size (should be 1/2): rotates by ~4x the angle

    with pytest.raises(NotImplementedError):  # and it interpolates 2D fields with "trilinear"
        MonaiVoxelMorph(backbone=_FixedField(velocity[:, :2, :, :, 0]), half_res=True, spatial_dims=2)(
            torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24)
        )
