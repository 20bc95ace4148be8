"""Instance optimisation: refine a network's field for one pair by gradient descent on that pair's loss.

Learn2Reg's best learned methods finish with a few dozen Adam steps on the test pair itself. Here the
optimised variable is the model's own field (``RegistrationResult.velocity``, the stationary velocity of a
diffeomorphic model or the plain field), passed through :meth:`VoxelMorph.from_velocity`, so the refined
transform keeps the model's properties (integration, resolution, border handling) and the backbone is not run.

:func:`refine_registration` runs a fixed number of steps at the network's resolution with any loss;
:func:`monai_vmorph.engines.refine_multilevel.refine_multilevel` runs coarse to fine and stops on convergence
(the command line's default), sharing :class:`RefineOutput` and :class:`LevelRecord` with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from monai_vmorph.data.keys import FIXED_IMAGE, MOVING_IMAGE
from monai_vmorph.networks.nets.voxelmorph import RegistrationResult, VoxelMorph

__all__ = ["LevelRecord", "RefineOutput", "refine_registration"]


class LevelRecord(NamedTuple):
    """What one level of :func:`~monai_vmorph.engines.refine_multilevel.refine_multilevel` did.

    Attributes:
        factor: the level's image downsampling factor (``1`` = the network grid).
        steps: Adam steps taken.
        initial_loss: the level's loss before its first step.
        final_loss: the level's loss after its last step.
        seconds: wall time of the level (setup included).
        converged: whether it stopped on the convergence test rather than its step limit.
    """

    factor: int
    steps: int
    initial_loss: float
    final_loss: float
    seconds: float
    converged: bool


class RefineOutput(NamedTuple):
    """Result of :func:`refine_registration` and :func:`~monai_vmorph.engines.refine_multilevel.refine_multilevel`.

    Attributes:
        result: the model's output for the refined field (tensors detached).
        losses: the loss before the first step and after every step (``steps + 1`` values); for several levels,
            each level's history one after the other.
        levels: one :class:`LevelRecord` per level (empty for :func:`refine_registration`).
    """

    result: RegistrationResult
    losses: list[float]
    levels: tuple[LevelRecord, ...] = ()


def refine_registration(
    model: VoxelMorph,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    loss_fn: Callable[[RegistrationResult, dict[str, torch.Tensor]], torch.Tensor],
    steps: int,
    lr: float = 0.05,
    initial: RegistrationResult | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> RefineOutput:
    """Optimise the field of ``model`` for the pair (``moving``, ``fixed``) with Adam.

    Args:
        model: a :class:`~monai_vmorph.networks.VoxelMorph`; its weights are not changed.
        moving: ``(1, C, *S)`` image on the network grid.
        fixed: ``(1, C, *S)`` image on the same grid.
        loss_fn: ``loss_fn(result, {"moving_image": moving, "fixed_image": fixed})`` → scalar, e.g. the
            bundle's :class:`~monai_vmorph.losses.RegistrationLoss`.
        steps: number of Adam steps, ``>= 0``.
        lr: Adam learning rate, in voxels of the field's grid per step (``> 0``).
        initial: the network's result for this pair (computed when ``None``).
        callback: called as ``callback(step, loss)`` after every step (progress bars).

    Returns:
        :class:`RefineOutput` with the refined result and the loss history.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a whole number >= 0, got {steps!r}.")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}.")
    targets = {MOVING_IMAGE: moving, FIXED_IMAGE: fixed}
    if initial is None:
        with torch.no_grad():
            initial = model(moving, fixed)
    velocity = initial.velocity.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([velocity], lr=lr)
    losses = []
    for step in range(steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model.from_velocity(moving, fixed, velocity), targets)
        losses.append(float(loss.detach()))
        if step == steps:
            break
        loss.backward()
        optimizer.step()
        if callback is not None:
            callback(step + 1, losses[-1])
    with torch.no_grad():
        result = model.from_velocity(moving, fixed, velocity.detach())
    return RefineOutput(
        result=RegistrationResult(*(t.detach() if t is not None else None for t in result)), losses=losses
    )
