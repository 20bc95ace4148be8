"""Resizing displacement fields between resolutions with correctly rescaled values.

A field in voxel units must change its *values* as well as its grid when resampled: under the
``align_corners=True`` convention (see :mod:`monai_vmorph.networks.blocks.warp`) index ``i`` of an axis of
length ``n`` maps to index ``i * (m - 1) / (n - 1)`` of the same axis at length ``m``, so a displacement of
``d`` voxels becomes ``d * (m - 1) / (n - 1)`` voxels. This factor is exact per axis; the commonly used
``1 / factor`` is only approximately right.

MONAI 1.6's ``VoxelMorph(half_res=True)`` multiplies the field by 2 when halving the grid and by 0.5 when
doubling it (the wrong way round, a factor 4 error overall) and always interpolates with ``"trilinear"``,
which fails for 2D fields; this module is the replacement.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_vmorph.networks.blocks.warp import linear_mode
from monai_vmorph.validation import check_field

__all__ = ["ResizeField", "field_scale_factors", "resize_field"]


def field_scale_factors(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[float]:
    """Per-axis factors ``(m - 1) / (n - 1)`` that convert voxel displacements from ``in_shape`` to ``out_shape``."""
    if len(in_shape) != len(out_shape):
        raise ValueError(f"in_shape and out_shape must have as many axes, got {in_shape} and {out_shape}.")
    return _scale_factors([int(n) for n in in_shape], [int(m) for m in out_shape])


def _scale_factors(in_shape: list[int], out_shape: list[int]) -> list[float]:
    factors: list[float] = []
    for axis, n in enumerate(in_shape):  # (TorchScript has no zip(strict=True); the caller checked the lengths)
        factors.append((out_shape[axis] - 1) / (n - 1) if n > 1 else 1.0)
    return factors


def resize_field(ddf: torch.Tensor, spatial_size: list[int]) -> torch.Tensor:
    """Resample a displacement field to ``spatial_size`` with linear interpolation and rescaled values.

    Args:
        ddf: ``(B, ndim, *S)`` field in voxel units of the ``S`` grid.
        spatial_size: the target spatial shape ``S'`` (``ndim`` ints; any sequence in eager mode).

    Returns:
        ``(B, ndim, *S')`` field in voxel units of the ``S'`` grid. Returns ``ddf`` itself when ``S' == S``.
    """
    if not torch.jit.is_scripting():
        spatial_size = _checked_size(ddf, spatial_size)
    ndim = ddf.dim() - 2
    in_shape = list(ddf.shape[2:])
    if spatial_size == in_shape:
        return ddf
    scale = torch.tensor(_scale_factors(in_shape, spatial_size), device=ddf.device, dtype=ddf.dtype)
    scale = scale.view([1, ndim] + [1] * ndim)
    # a per-channel factor commutes with linear interpolation: apply it on the smaller of the two grids
    if _volume(spatial_size) > _volume(in_shape):
        return F.interpolate(ddf * scale, size=spatial_size, mode=linear_mode(ndim), align_corners=True)
    return F.interpolate(ddf, size=spatial_size, mode=linear_mode(ndim), align_corners=True) * scale


def _volume(shape: list[int]) -> int:
    volume = 1
    for n in shape:
        volume *= n
    return volume


@torch.jit.unused
def _checked_size(ddf: torch.Tensor, spatial_size: list[int]) -> list[int]:
    """:func:`resize_field`'s argument checks (eager mode): ``spatial_size`` as a list of ints."""
    ndim = check_field(ddf, "ddf")
    size = [int(s) for s in spatial_size]
    if len(size) != ndim or any(s < 1 for s in size):
        raise ValueError(f"spatial_size must be {ndim} positive ints for a {ndim}D field, got {tuple(size)}.")
    return size


class ResizeField(nn.Module):
    """Resize a displacement field by a scale factor; a thin module around :func:`resize_field`.

    Args:
        scale_factor: output size is ``round(n * scale_factor)`` per axis (e.g. ``0.5`` halves the grid).
    """

    def __init__(self, scale_factor: float) -> None:
        super().__init__()
        if not scale_factor > 0:
            raise ValueError(f"scale_factor must be positive, got {scale_factor!r}.")
        self.scale_factor = float(scale_factor)

    def forward(self, ddf: torch.Tensor) -> torch.Tensor:
        """Resize ``ddf`` ``(B, ndim, *S)`` to ``(B, ndim, *round(S * scale_factor))``."""
        size = [max(1, round(n * self.scale_factor)) for n in ddf.shape[2:]]
        return resize_field(ddf, size)

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}"
