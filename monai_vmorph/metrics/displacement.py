"""Endpoint error between a predicted and a ground-truth displacement field (synthetic pairs).

Fields follow the package convention (:mod:`monai_vmorph.networks.blocks.warp`): ``(B, ndim, *S)`` in voxel
units, channel ``k`` along array axis ``k``. With ``spacing`` the error is measured in mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_vmorph.metrics._checks import check_spacing
from monai_vmorph.validation import check_field, check_same_shape

__all__ = ["endpoint_error"]


def endpoint_error(
    ddf: torch.Tensor,
    ddf_true: torch.Tensor,
    spacing: Sequence[float] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean Euclidean distance between the points the two fields map each voxel to.

    Args:
        ddf: ``(B, ndim, *S)`` predicted displacement in voxels.
        ddf_true: ``(B, ndim, *S)`` ground-truth displacement in voxels.
        spacing: voxel size in mm per array axis (``ndim`` floats); ``None`` measures in voxels.
        mask: optional ``(B, 1, *S)`` or ``(B, *S)`` boolean/0-1 region (e.g. the brain) to average over.

    Returns:
        ``(B,)`` mean endpoint error (mm with ``spacing``, else voxels).
    """
    ndim = check_field(ddf, "ddf")
    check_field(ddf_true, "ddf_true")
    check_same_shape(ddf, ddf_true, "ddf", "ddf_true")
    diff = ddf - ddf_true
    spacing = check_spacing(spacing, ndim)
    if spacing is not None:
        diff = diff * torch.tensor(spacing, dtype=diff.dtype, device=diff.device).view(1, ndim, *([1] * ndim))
    error = diff.square().sum(dim=1).sqrt()  # (B, *S)
    if mask is None:
        return error.flatten(1).mean(dim=1)
    weights = mask.reshape(error.shape).to(error.dtype) if mask.dim() == error.dim() + 1 else mask.to(error.dtype)
    if weights.shape != error.shape:
        raise ValueError(
            f"mask must have shape (B, 1, *S) = {(error.shape[0], 1, *error.shape[1:])}, got {tuple(mask.shape)}."
        )
    return (error * weights).flatten(1).sum(dim=1) / weights.flatten(1).sum(dim=1).clamp_min(1)
