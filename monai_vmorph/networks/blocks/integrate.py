"""Scaling and squaring: integrate a stationary velocity field into a diffeomorphic displacement field.

For a stationary velocity field ``v`` (same convention as a DDF: ``(B, ndim, *S)``, voxel units, channel
``k`` along array axis ``k``) the transform at time 1 is ``exp(v)``. Scaling and squaring computes it as
``u_0 = v / 2**N`` followed by ``N`` self-compositions ``u_{i+1}(x) = u_i(x) + u_i(x + u_i(x))``.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_vmorph.networks.blocks.warp import _check_padding_mode, _grid_units, _identity, grid_sample_3d_parallel
from monai_vmorph.validation import check_field, check_finite

__all__ = ["VecInt", "integrate_velocity"]


def integrate_velocity(velocity: torch.Tensor, num_steps: int = 7, padding_mode: str = "border") -> torch.Tensor:
    """Integrate a stationary velocity field by scaling and squaring.

    Args:
        velocity: ``(B, ndim, *S)`` velocity field in voxel units.
        num_steps: number of squaring steps ``N`` (the field is scaled by ``2**-N`` first). ``0`` returns
            ``velocity`` unchanged (a plain displacement field).
        padding_mode: how the field is extrapolated when a composition samples outside the grid.
            ``"border"`` (default) repeats the edge displacement, which keeps smooth fields smooth at the
            boundary; voxelmorph and MONAI's ``DVF2DDF`` use ``"zeros"``, which pulls edge displacements
            towards zero.

    Returns:
        ``(B, ndim, *S)`` displacement field ``exp(v) - Id`` in voxel units.
    """
    if not torch.jit.is_scripting():
        _check_arguments(velocity, num_steps, padding_mode)
    if num_steps == 0:
        return velocity
    shape = list(velocity.shape[2:])
    identity = _identity(shape, velocity.device, velocity.dtype)
    # The compositions run on the field in grid_sample's units: normalised coordinates, axes reversed, in the last
    # dimension ``(B, *S, ndim)``. Sampling commutes with that per-voxel linear map, so each step is one addition for
    # the sampling grid and one for the composition, without the flip and scaling that every warp of a voxel-unit
    # field needs (and their backward passes).
    unit = _grid_units(shape, velocity)
    field = velocity.flip([1]).movedim(1, -1) * (unit / float(2**num_steps))
    for _ in range(num_steps):
        sampled = grid_sample_3d_parallel(field.movedim(-1, 1), identity + field, "bilinear", padding_mode)
        field = field + sampled.movedim(1, -1)
    return (field / unit).movedim(-1, 1).flip([1]).contiguous()


@torch.jit.unused
def _check_arguments(velocity: torch.Tensor, num_steps: int, padding_mode: str) -> None:
    """:func:`integrate_velocity`'s argument checks (eager mode; a TorchScript caller passes checked values)."""
    check_field(velocity, "velocity")
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative int, got {num_steps!r}.")
    _check_padding_mode(padding_mode)


class VecInt(nn.Module):
    """Scaling-and-squaring integration layer; a thin module around :func:`integrate_velocity`.

    Args:
        num_steps: number of squaring steps (``0``: identity, the velocity is returned as the DDF).
        padding_mode: extrapolation of the field outside the grid, see :func:`integrate_velocity`.
        check_finite: raise a ``ValueError`` when the velocity holds NaN/inf.
    """

    def __init__(self, num_steps: int = 7, padding_mode: str = "border", check_finite: bool = False) -> None:
        super().__init__()
        if not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be a non-negative int, got {num_steps!r}.")
        _check_padding_mode(padding_mode)
        self.num_steps = num_steps
        self.padding_mode = padding_mode
        self.check_finite = check_finite

    def forward(self, velocity: torch.Tensor) -> torch.Tensor:
        """Integrate ``velocity`` ``(B, ndim, *S)``; returns the DDF ``(B, ndim, *S)`` in voxel units."""
        if self.check_finite:
            check_finite(velocity, "velocity")
        return integrate_velocity(velocity, self.num_steps, self.padding_mode)

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, padding_mode={self.padding_mode!r}"
