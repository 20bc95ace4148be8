"""The deformable stage's working grid: the fixed scan's own voxels, pooled to a resolution and cropped to the
foreground.

The grid is the fixed scan's voxel grid itself (any orientation, any spacing; affine voxel -> RAS mm as in
:mod:`monai_vmorph.io.spaces`), so the fixed image is never resampled, only box-averaged by a whole factor per
axis when a coarser ``resolution`` is asked (pooled voxel ``i`` is native continuous index ``k i + (k - 1) / 2``),
then cropped to the bounding box of its foreground plus a margin. The field is zero outside the crop; where the
crop cuts into the fixed scan, :func:`edge_taper` brings it to zero across the margin so that the written field
has no step there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BYTES_PER_VOXEL", "FOREGROUND", "DeformableGrid", "available_memory", "deformable_grid", "edge_taper"]

#: Normalised fixed intensity above which a voxel is foreground (that of the affine stage's working grids).
FOREGROUND = 0.05

#: Peak memory of a registration per working-grid voxel (float32 images, NCC statistics, velocity, displacement,
#: gradients and autograd buffers at the finest level, and the native outputs): ``benchmarks/bench_native.py``
#: measured 2.38 GB above the process's baseline for the whole ``register_pair`` call of a 1 mm brain on a
#: 179x213x178 grid (351 bytes per voxel, 2026-12-08).
BYTES_PER_VOXEL = 360


@dataclass(frozen=True)
class DeformableGrid:
    """The working grid: ``shape``, ``affine`` (voxel -> RAS mm), the pooling ``factor`` per axis, and the
    ``ramps``: per axis, how many voxels at the (low, high) end lie in a margin cut out of the fixed scan (the
    field tapers to zero across them; 0 where the grid ends with the scan)."""

    shape: tuple[int, ...]
    affine: np.ndarray
    factor: tuple[int, ...]
    ramps: tuple[tuple[int, int], ...]

    @property
    def voxel_size(self) -> tuple[float, ...]:
        ndim = len(self.shape)
        return tuple(float(v) for v in np.linalg.norm(self.affine[:ndim, :ndim], axis=0))

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)


def _pool_factor(voxel: np.ndarray, shape: Sequence[int], resolution: float | None) -> tuple[int, ...]:
    if resolution is None:
        return tuple(1 for _ in shape)
    return tuple(int(max(1, min(round(resolution / v), n // 4))) for v, n in zip(voxel, shape, strict=True))


def deformable_grid(
    fixed: torch.Tensor, affine: np.ndarray, resolution: float | None = None, margin_mm: float = 16.0
) -> tuple[DeformableGrid, torch.Tensor]:
    """The working grid of a fixed scan and the fixed image on it.

    Args:
        fixed: the fixed scan's normalised intensities (``[0, 1]``), spatial shape ``S`` (2D or 3D).
        affine: its ``(ndim + 1, ndim + 1)`` RAS affine.
        resolution: the grid's voxel size in mm (each axis pooled by the whole factor nearest
            ``resolution / voxel``, at least 1); ``None``: the scan's own voxels.
        margin_mm: the margin kept around the foreground's bounding box.

    Returns:
        ``(grid, image)``: the :class:`DeformableGrid` and the ``(1, 1, *grid.shape)`` fixed image on it.
    """
    ndim = fixed.dim()
    affine = np.asarray(affine, dtype=np.float64)
    voxel = np.linalg.norm(affine[:ndim, :ndim], axis=0)
    factor = _pool_factor(voxel, fixed.shape, resolution)
    x = fixed[None, None].float()
    if any(k > 1 for k in factor):
        x = (F.avg_pool3d if ndim == 3 else F.avg_pool2d)(x, kernel_size=factor, stride=factor)
    scale = np.eye(ndim + 1)
    scale[:ndim, :ndim] = np.diag(factor)
    scale[:ndim, ndim] = (np.asarray(factor) - 1) / 2
    shape = x.shape[2:]
    inside = torch.nonzero(x[0, 0] > FOREGROUND)
    low, high = [0] * ndim, list(shape)
    if len(inside):
        margin = [math.ceil(margin_mm / (v * k)) for v, k in zip(voxel, factor, strict=True)]
        low = [max(0, int(i) - m) for i, m in zip(inside.min(dim=0).values, margin, strict=True)]
        high = [min(n, int(i) + m + 1) for i, m, n in zip(inside.max(dim=0).values, margin, shape, strict=True)]
        high = [max(h, min(n, lo + 4)) for lo, h, n in zip(low, high, shape, strict=True)]
        ramps = tuple(
            (m if lo > 0 else 0, m if h < n else 0) for lo, h, n, m in zip(low, high, shape, margin, strict=True)
        )
    else:
        ramps = tuple((0, 0) for _ in shape)
    x = x[(..., *[slice(lo, h) for lo, h in zip(low, high, strict=True)])].contiguous()
    shift = np.eye(ndim + 1)
    shift[:ndim, ndim] = low
    grid = DeformableGrid(tuple(x.shape[2:]), affine @ scale @ shift, factor, ramps)
    return grid, x


def edge_taper(grid: DeformableGrid, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """``(1, 1, *grid.shape)`` weights: 1 inside, falling linearly to 0 across each cut margin (``None`` when the
    grid is not cut anywhere)."""
    if not any(a or b for a, b in grid.ramps):
        return None
    weight = torch.ones(1, 1, *grid.shape, device=device)
    for axis, ((a, b), n) in enumerate(zip(grid.ramps, grid.shape, strict=True)):
        index = torch.arange(n, device=device, dtype=torch.float32)
        ramp = torch.ones(n, device=device)
        if a:
            ramp = torch.minimum(ramp, (index / a).clamp(0, 1))
        if b:
            ramp = torch.minimum(ramp, ((n - 1 - index) / b).clamp(0, 1))
        view = [1] * len(grid.shape)
        view[axis] = n
        weight = weight * ramp.view(1, 1, *view)
    return weight


def available_memory() -> int | None:
    """Bytes of physical memory available now (``None`` where the system does not say)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
