"""The deformable stage's working grid: pooling keeps world positions, the crop keeps the foreground and a margin,
the taper is zero only at cut edges."""

import numpy as np
import pytest
import torch

from monai_vmorph.optimisation import deformable_grid, edge_taper
from monai_vmorph.optimisation.grid import available_memory

AFFINE_3D = np.array([[0.0, 0.0, 1.5, -30.0], [-1.0, 0.0, 0.0, 40.0], [0.0, 1.2, 0.0, -20.0], [0, 0, 0, 1.0]])


def test_native_grid_crops_to_the_foreground_and_a_margin():
    image = torch.zeros(40, 50, 30)
    image[10:20, 5:45, 0:30] = 1.0  # foreground box: axis 0 10..19, axis 1 5..44, axis 2 the whole extent
    grid, fixed = deformable_grid(image, AFFINE_3D, None, margin_mm=3.0)
    # margin 3 mm: ceil(3 / 1.5) = 2, ceil(3 / 1.0) = 3, ceil(3 / 1.2) = 3 voxels along the axes' voxel sizes
    voxel = np.linalg.norm(AFFINE_3D[:3, :3], axis=0)
    assert np.allclose(grid.voxel_size, voxel)
    margin = np.ceil(3.0 / voxel).astype(int)
    low = [10 - margin[0], 5 - margin[1], 0]
    high = [20 + margin[0], 45 + margin[1], 30]
    assert grid.shape == tuple(h - lo for lo, h in zip(low, high, strict=True))
    assert torch.equal(fixed[0, 0], image[low[0] : high[0], low[1] : high[1], :])
    # the grid's voxel 0 is native voxel `low` at the same world point
    assert np.allclose(grid.affine[:3, 3], AFFINE_3D[:3, :3] @ low + AFFINE_3D[:3, 3])
    assert grid.ramps == ((margin[0], margin[0]), (margin[1], margin[1]), (0, 0))
    assert grid.factor == (1, 1, 1)


def test_pooled_grid_keeps_world_positions():
    affine = np.diag([1.0, 1.0, 1.0])
    image = torch.arange(16 * 12, dtype=torch.float32).reshape(16, 12) / 200 + 0.1  # all foreground
    grid, fixed = deformable_grid(image, affine, resolution=2.0)
    assert grid.factor == (2, 2) and grid.shape == (8, 6) and grid.ramps == ((0, 0), (0, 0))
    # pooled voxel (i, j) is the mean of native voxels 2i..2i+1, 2j..2j+1, centred at native (2i + 0.5, 2j + 0.5)
    assert torch.allclose(fixed[0, 0, 3, 2], image[6:8, 4:6].mean())
    assert np.allclose(grid.affine @ [3, 2, 1], [6.5, 4.5, 1])
    assert edge_taper(grid) is None


def test_taper_falls_to_zero_at_cut_edges_only():
    image = torch.zeros(30, 20)
    image[10:20, :] = 1.0
    grid, _ = deformable_grid(image, np.eye(3), None, margin_mm=4.0)
    assert grid.ramps == ((4, 4), (0, 0))
    taper = edge_taper(grid)[0, 0]
    assert torch.allclose(taper[:, 0], torch.tensor([0, 0.25, 0.5, 0.75] + [1.0] * 10 + [0.75, 0.5, 0.25, 0]))
    assert torch.equal(taper[:, 0], taper[:, -1])  # the uncut axis is not tapered


def test_empty_foreground_keeps_the_whole_grid():
    grid, fixed = deformable_grid(torch.zeros(10, 12), np.eye(3))
    assert grid.shape == (10, 12) and fixed.shape == (1, 1, 10, 12)


@pytest.mark.skipif(available_memory() is None, reason="the system does not report its free memory")
def test_available_memory_is_plausible():
    assert 2**20 < available_memory() < 2**50
