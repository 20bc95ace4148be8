"""The deformable stage of :func:`~monai_vmorph.pipeline.register_pair`: the network's field (where it helped) as the
start, optimised on the fixed scan's own grid over its whole foreground.

Transforms (RAS mm, pull-back as everywhere): the affine stage's ``A`` maps fixed world points to moving world
points; the working grid (:func:`~monai_vmorph.optimisation.grid.deformable_grid`) has the affine ``W``, and the
stage's voxel field ``u`` on it makes the whole transform ``T(p) = A @ W @ (r + u(r))`` with ``r = inv(W) @ p``,
the form of the network grid's (:func:`~monai_vmorph.io.native_displacement` with ``moving_net_affine = A @ W``).

The network's velocity ``v`` (voxels of the network grid ``N``) becomes the start on the working grid by the change
of coordinates ``v_W(r) = inv(W_lin) @ N_lin @ v(inv(N) @ W @ r)``, under which the exponential of a stationary
velocity is exact (zero outside the network grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from monai_vmorph.errors import UserError
from monai_vmorph.io import resample, resample_displacement
from monai_vmorph.networks import resize_field, warp
from monai_vmorph.optimisation.deformable import DeformableSettings, exponential, optimise_velocity, unfold
from monai_vmorph.optimisation.grid import (
    BYTES_PER_VOXEL,
    DeformableGrid,
    available_memory,
    deformable_grid,
    edge_taper,
)
from monai_vmorph.transforms import match_contrast

__all__ = ["DeformableStage", "network_velocity", "run_deformable_stage", "velocity_on_grid"]

#: Largest fraction of folding voxels (``det J <= 0``) the stage leaves in its field (:func:`unfold`).
MAX_FOLDING = 1e-4


@dataclass
class DeformableStage:
    """The stage's result: ``ddf`` ``(1, ndim, *grid.shape)`` (voxels of the working grid, zero at cut edges),
    its ``velocity`` (before the taper), the grid, and JSON-ready ``metrics`` (levels, grid, memory, settings)."""

    ddf: torch.Tensor
    velocity: torch.Tensor
    grid: DeformableGrid
    metrics: dict


def network_velocity(model, result, shape: list[int]) -> torch.Tensor:
    """The network's velocity ``(1, ndim, *shape)`` on its input grid (voxels of that grid): resampled from the
    integration grid to the padded input grid and cropped, as the model does with its displacement."""
    padded = model.padded_shape(list(shape))
    velocity = resize_field(result.velocity.detach().float(), padded)
    for axis, n in enumerate(shape):
        velocity = velocity.narrow(2 + axis, 0, n)
    return velocity


def velocity_on_grid(velocity: torch.Tensor, net_affine: np.ndarray, grid: DeformableGrid) -> torch.Tensor:
    """A ``(1, ndim, *S_net)`` velocity in voxels of the grid ``net_affine`` on the working grid, in its voxels."""
    ndim = velocity.dim() - 2
    to_mm = torch.as_tensor(net_affine[:ndim, :ndim], dtype=torch.float32)
    mm = velocity[0].cpu().movedim(0, -1) @ to_mm.T
    on_grid = resample_displacement(mm, net_affine, grid.shape, grid.affine)
    to_voxels = torch.as_tensor(np.linalg.inv(grid.affine[:ndim, :ndim]), dtype=torch.float32)
    return (on_grid @ to_voxels.T).movedim(-1, 0)[None].contiguous().to(velocity.device)


def run_deformable_stage(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    moving: np.ndarray,
    placed_affine: np.ndarray,
    similarity: str,
    contrast_mapped: bool,
    settings: DeformableSettings,
    *,
    resolution: float | None = None,
    initial: torch.Tensor | None = None,
    net_affine: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    callback=None,
) -> DeformableStage:
    """Register the normalised ``moving`` (placed by the affine stage: ``placed_affine``) to ``fixed`` on the
    fixed scan's working grid.

    Args:
        fixed: normalised fixed intensities on its own grid (``fixed_affine``).
        fixed_affine: its RAS affine.
        moving: normalised moving intensities on its own grid.
        placed_affine: ``inv(A) @ moving_affine``, the moving grid where the affine stage placed it.
        similarity: one of :data:`~monai_vmorph.optimisation.deformable.DEFORMABLE_SIMILARITIES`.
        contrast_mapped: map the moving intensities to the fixed contrast on the working grid
            (:func:`~monai_vmorph.transforms.match_contrast`, from the pair as ``initial`` aligns it).
        settings: the optimiser's levels and regularisation.
        resolution: the working grid's voxel size (mm); ``None``: the fixed scan's own.
        initial: the network's ``(1, ndim, *S_net)`` velocity (voxels of ``net_affine``'s grid), or ``None``.
        net_affine: the network grid's affine (with ``initial``).
        device: where to optimise.
        callback: ``callback(level, iteration, similarity)`` after every iteration.

    Raises:
        UserError: the working grid would need more memory than the machine has free.
    """
    grid, f = deformable_grid(torch.as_tensor(fixed), fixed_affine, resolution)
    need, free = grid.voxels * BYTES_PER_VOXEL, available_memory()
    if free is not None and need > free:
        raise UserError(
            f"the deformable stage needs about {need / 2**30:.1f} GB on a {'x'.join(map(str, grid.shape))} grid "
            f"and {free / 2**30:.1f} GB is free; pass a coarser --resolution (mm)"
        )
    f = f.to(device)
    m = torch.as_tensor(resample(moving, placed_affine, grid.shape, grid.affine))[None, None].to(device)
    velocity = None if initial is None else velocity_on_grid(initial, net_affine, grid)
    if contrast_mapped:
        aligned = m if velocity is None else warp(m, exponential(velocity, settings.integration_steps))
        m = match_contrast(m, f, aligned=aligned)
    velocity, records = optimise_velocity(
        m, f, similarity, settings, initial=velocity, callback=callback, spacing=grid.voxel_size
    )
    velocity, smoothings = unfold(velocity, settings.integration_steps, MAX_FOLDING)
    ddf = exponential(velocity, settings.integration_steps)
    taper = edge_taper(grid, ddf.device)
    if taper is not None:
        ddf = ddf * taper
    metrics = {
        "grid_shape": list(grid.shape),
        "grid_voxel_mm": [round(v, 4) for v in grid.voxel_size],
        "memory_estimate_gb": need / 2**30,
        "levels": [record._asdict() for record in records],
        "unfold_smoothings": smoothings,
        "settings": settings.to_dict(),
    }
    return DeformableStage(ddf.detach(), velocity.detach(), grid, metrics)
