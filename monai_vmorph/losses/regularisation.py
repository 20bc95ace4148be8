"""Smoothness regularisation of displacement fields: VoxelMorph's ``Grad`` loss.

Fields follow the package convention (:mod:`monai_vmorph.networks.blocks.warp`): ``(B, ndim, *S)`` in voxel
units, channel ``k`` along array axis ``k``.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_vmorph.losses._checks import check_nonnegative, compute_dtypes
from monai_vmorph.validation import check_field

__all__ = ["GradLoss", "gradient_loss"]

_PENALTIES = ("l1", "l2")


def _check_penalty(penalty: str) -> str:
    if penalty not in _PENALTIES:
        raise ValueError(f"penalty must be one of {list(_PENALTIES)}, got {penalty!r}.")
    return penalty


def _check_loss_mult(loss_mult: float | None) -> float | None:
    return None if loss_mult is None else check_nonnegative(loss_mult, "loss_mult")


def gradient_loss(ddf: torch.Tensor, penalty: str = "l2", loss_mult: float | None = None) -> torch.Tensor:
    """Mean forward-difference penalty of a field (VoxelMorph's ``Grad`` loss).

    For each spatial axis ``i``, ``d = ddf[..., 1:, ...] - ddf[..., :-1, ...]`` along that axis (all
    channels, all batch items); the per-axis term is ``mean(|d|)`` (``"l1"``) or ``mean(d * d)``
    (``"l2"``), and the loss is the average of the per-axis terms, times ``loss_mult`` if given. VoxelMorph
    passes ``loss_mult = int_downsize`` when the field is predicted at ``1 / int_downsize`` resolution, so
    that the differences are measured per full-resolution voxel.

    Example: the 2D field ``u_k(x) = a_k * x_0`` has ``d = a_k`` along axis 0 and ``0`` along axis 1, so the
    ``"l2"`` loss is ``(a_0**2 + a_1**2) / 2 / 2``.

    Args:
        ddf: ``(B, ndim, *S)`` displacement (or velocity) field, floating point, every spatial size >= 2.
        penalty: ``"l1"`` or ``"l2"``.
        loss_mult: optional factor applied to the result.

    Returns:
        Scalar tensor in the dtype of ``ddf``.

    Raises:
        ValueError: on a field that is not ``(B, ndim, *S)`` with ndim 2 or 3, an integer dtype, a spatial
            size below 2, an unknown ``penalty`` or a negative ``loss_mult``.
    """
    ndim = check_field(ddf, "ddf")
    if min(ddf.shape[2:]) < 2:
        raise ValueError(
            f"ddf needs at least 2 voxels along every spatial axis for forward differences, "
            f"got shape {tuple(ddf.shape)}."
        )
    _check_penalty(penalty)
    loss_mult = _check_loss_mult(loss_mult)
    compute, out = compute_dtypes(ddf)
    field = ddf.to(compute)
    terms = []
    for axis in range(2, 2 + ndim):
        n = field.shape[axis]
        d = field.narrow(axis, 1, n - 1) - field.narrow(axis, 0, n - 1)
        terms.append(d.abs().mean() if penalty == "l1" else d.square().mean())
    loss = torch.stack(terms).mean()
    return (loss if loss_mult is None else loss * loss_mult).to(out)


class GradLoss(nn.Module):
    """Module form of :func:`gradient_loss`.

    Args:
        penalty: ``"l1"`` or ``"l2"``.
        loss_mult: optional factor applied to the result (VoxelMorph uses ``int_downsize``).
    """

    def __init__(self, penalty: str = "l2", loss_mult: float | None = None) -> None:
        super().__init__()
        self.penalty = _check_penalty(penalty)
        self.loss_mult = _check_loss_mult(loss_mult)

    def forward(self, ddf: torch.Tensor) -> torch.Tensor:
        """``ddf``: ``(B, ndim, *S)``; returns the scalar loss."""
        return gradient_loss(ddf, self.penalty, self.loss_mult)

    def extra_repr(self) -> str:
        return f"penalty={self.penalty!r}, loss_mult={self.loss_mult}"
