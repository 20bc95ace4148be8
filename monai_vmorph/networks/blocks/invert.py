"""The inverse of a displacement field by fixed-point iteration, for fields that are not integrated velocities.

A stationary velocity field has the exact inverse ``exp(-v)`` (:func:`~monai_vmorph.networks.integrate_velocity` of
the negated velocity, which is what :class:`~monai_vmorph.networks.VoxelMorph` uses when bidirectional). A plain
displacement ``u`` (a network with ``integration_steps=0``) has no such closed form; its inverse ``w`` satisfies
``x + u(x) + w(x + u(x)) = x`` for the forward map, equivalently ``w(y) = -u(y + w(y))``, which this module
solves by the fixed-point iteration of Chen et al. (Med. Phys. 2008), convergent where ``u`` is a contraction
(no folding, ``|∇u| < 1``). Fields follow :mod:`monai_vmorph.networks.blocks.warp`'s convention.
"""

from __future__ import annotations

import torch

from monai_vmorph.networks.blocks.warp import _warp
from monai_vmorph.validation import check_field

__all__ = ["invert_ddf"]


def invert_ddf(
    ddf: torch.Tensor, iterations: int = 50, tolerance: float = 1e-4, initial: torch.Tensor | None = None
) -> torch.Tensor:
    """The displacement ``w`` of the inverse map of ``x -> x + ddf(x)``: ``w(y) = -ddf(y + w(y))``.

    Args:
        ddf: ``(B, ndim, *S)`` displacement in voxel units.
        iterations: at most this many fixed-point steps.
        tolerance: stop once no voxel's update exceeds this (voxels).
        initial: ``(B, ndim, *S)`` first guess (default ``-ddf``), e.g. ``exp(-v)`` for ``ddf = exp(v)``: the
            iteration then removes the integration's discretisation error (the inverse of the field as sampled).

    Returns:
        ``(B, ndim, *S)`` inverse displacement, same dtype; where ``y + w(y)`` leaves the grid the field is extended
        by its border values.
    """
    check_field(ddf, "ddf")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations!r}.")
    if initial is not None:
        check_field(initial, "initial", spatial_shape=ddf.shape[2:])
    inverse = -ddf if initial is None else initial.to(ddf.dtype)
    for _ in range(iterations):
        updated = -_warp(ddf, inverse, "bilinear", "border")  # grid_sample: linear in 2D and 3D
        change = float((updated - inverse).abs().max())
        inverse = updated
        if change <= tolerance:
            break
    return inverse
