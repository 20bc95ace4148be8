"""The inverse transform: forward ∘ inverse ≈ identity on an analytic diffeomorphism, through oblique native grids and
an affine stage, checked by SciPy interpolation (not our samplers); the fixed-point inverse of a plain field."""

import numpy as np
import pytest
import torch
from io_helpers import oblique_affine, rotation
from scipy.ndimage import map_coordinates

from monai_vmorph.io import native_displacement
from monai_vmorph.networks import integrate_velocity, invert_ddf, warp
from monai_vmorph.pipeline import inverse_native_displacement

NET_SHAPE = (28, 32, 28)


def _net_affine() -> np.ndarray:
    out = np.diag([2.0, 2.0, 2.0, 1.0])
    out[:3, 3] = -np.array(NET_SHAPE) + 1.0  # centred on the origin
    return out


def _velocity(amplitude: float) -> torch.Tensor:
    """A smooth analytic velocity (voxels of the network grid), zero at the grid's faces."""
    axes = [torch.linspace(0, 1, n, dtype=torch.float64) for n in NET_SHAPE]
    q = torch.meshgrid(*axes, indexing="ij")
    bump = torch.sin(np.pi * q[0]) * torch.sin(np.pi * q[1]) * torch.sin(np.pi * q[2])
    v = torch.stack(
        [bump * torch.cos(2 * np.pi * q[1]), bump * torch.sin(2 * np.pi * q[2]), -bump * torch.cos(np.pi * q[0])]
    )
    return amplitude * v[None]


def _sample_field(field: np.ndarray, affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 3)`` values of a ``(*S, 3)`` field at world points ``(N, 3)``, by SciPy's linear interpolation."""
    index = (np.linalg.inv(affine) @ np.c_[points, np.ones(len(points))].T)[:3]
    return np.stack([map_coordinates(field[..., k], index, order=1, mode="nearest") for k in range(3)], axis=-1)


def test_forward_composed_with_inverse_is_the_identity_within_0p1_mm():
    velocity = _velocity(2.5)  # up to 2.5 voxels = 5 mm, displacements about 5 mm
    u = integrate_velocity(velocity, 7)[0]
    w = integrate_velocity(-velocity, 7)[0]
    net = _net_affine()
    matrix = np.eye(4)  # the affine stage: 8 degrees, a 6 mm shift and 5 % scaling
    matrix[:3, :3] = 1.05 * rotation(3, (np.radians(8), 0.05, -0.03))
    matrix[:3, 3] = (6.0, -4.0, 3.0)
    fixed_shape, moving_shape = (40, 44, 38), (42, 40, 44)
    fixed_affine = oblique_affine(fixed_shape, (1.5, 1.5, 1.6), (1.0, -2.0, 0.5), (0.2, -0.1, 0.15))
    moving_affine = oblique_affine(moving_shape, (1.7, 1.6, 1.5), (6.0, -5.0, 4.0), (-0.1, 0.25, 0.05), flip_axis=0)

    forward = native_displacement(u, net, fixed_shape, fixed_affine, moving_net_affine=matrix @ net)
    inverse = inverse_native_displacement(w, net, matrix, moving_shape, moving_affine)
    assert inverse.shape == (*moving_shape, 3)

    # fixed voxels well inside the network grid, whose image point lies well inside the moving grid
    index = np.stack(np.meshgrid(*[np.arange(4, n - 4) for n in fixed_shape], indexing="ij"), -1).reshape(-1, 3)
    points = (fixed_affine @ np.c_[index, np.ones(len(index))].T)[:3].T
    q = (np.linalg.inv(net) @ np.c_[points, np.ones(len(points))].T)[:3].T
    images = points + forward[tuple(index.T)]
    c = (np.linalg.inv(moving_affine) @ np.c_[images, np.ones(len(images))].T)[:3].T
    keep = np.all((q > 1) & (q < np.array(NET_SHAPE) - 2), axis=1) & np.all(
        (c > 1) & (c < np.array(moving_shape) - 2), axis=1
    )
    assert keep.sum() > 10_000
    moved = np.linalg.norm(forward[tuple(index[keep].T)] - (matrix[:3, :3] @ points[keep].T).T - matrix[:3, 3]
                           + points[keep], axis=1)  # fmt: skip
    assert moved.max() > 3.0  # the deformable part moves points by millimetres, not a trivial case
    back = images[keep] + _sample_field(inverse, moving_affine, images[keep])
    error = np.linalg.norm(back - points[keep], axis=1)
    assert error.max() <= 0.1, error.max()  # mm
    assert error.mean() <= 0.02, error.mean()

    # outside the network grid the inverse is the affine stage's inverse alone
    far = np.array([[0, 0, 0]])
    world = (moving_affine @ np.r_[far[0], 1])[:3]
    if not np.all((np.linalg.inv(matrix @ net) @ np.r_[world, 1])[:3] < np.array(NET_SHAPE)):
        expected = (np.linalg.inv(matrix) @ np.r_[world, 1])[:3] - world
        np.testing.assert_allclose(inverse[0, 0, 0], expected, atol=1e-4)


@pytest.mark.parametrize("ndim", [2, 3])
def test_fixed_point_inverse_of_a_plain_field(ndim):
    shape = (24, 28, 20)[:ndim]
    axes = [torch.linspace(0, 1, n, dtype=torch.float64) for n in shape]
    q = torch.meshgrid(*axes, indexing="ij")
    bump = torch.ones_like(q[0])
    for x in q:
        bump = bump * torch.sin(np.pi * x)
    u = torch.stack([1.8 * bump * torch.cos(np.pi * q[(k + 1) % ndim]) for k in range(ndim)])[None]
    w = invert_ddf(u, iterations=100, tolerance=1e-10)
    # the equation the iteration solves at every voxel: w + u∘(Id + w) = 0 (measured 1e-11)
    inner = (slice(None), slice(None), *(slice(2, n - 2) for n in shape))
    assert float((w + warp(u, w))[inner].abs().max()) < 1e-8
    # the other order, u + w∘(Id + u) = 0, holds up to interpolating w between voxels (measured 0.019 / 0.028 voxels)
    assert float((u + warp(w, u))[inner].abs().max()) < 0.05
    assert float((u + w)[inner].abs().max()) > 0.15  # -u is not the inverse: the iteration did something
    with pytest.raises(ValueError, match="iterations"):
        invert_ddf(u, iterations=0)
