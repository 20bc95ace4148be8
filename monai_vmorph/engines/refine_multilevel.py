"""Coarse-to-fine instance optimisation of a model's velocity field, stopped on convergence.

:func:`refine_multilevel` refines the network's field for one pair level by level: at level ``factor = s`` the
images are smoothed and resampled to ``1 / s`` of the (padded) network grid, the velocity lives on
``1 / max(s, int_downsize)`` of it, and Adam runs on that level's loss until the relative decrease of the loss
over ``window`` steps falls below ``tol`` (or ``max_steps``). Each level starts from the level below: the
update found there (its velocity minus the network's, resampled) is added to the network's velocity on the
finer grid, so the network's fine detail is kept. Only the field is optimised, never the network's weights;
the result is the model's own output for the final velocity (:meth:`VoxelMorph.from_velocity`), so it is
integrated by scaling and squaring (diffeomorphic) exactly like the network's.

A level's loss is the given loss on that level's images: local NCC (with the fixed image's window
statistics computed once per level, :func:`~monai_vmorph.losses.ncc_target_statistics`, and an analytic
gradient), MSE, or MIND-SSC (the fixed image's descriptor computed once per level, the warped moving image's at
every step, :mod:`monai_vmorph.losses.mind`), plus ``smoothness_weight * loss_mult`` times the Grad penalty of the
velocity on its grid.
The Grad penalty of a smooth field does not depend on the grid (differences of voxel-unit values between
neighbours are the dimensionless gradient), so every level optimises the same objective seen at a coarser
resolution. Coarse levels may integrate with fewer scaling-and-squaring steps (``integration_steps``): the
field there is small in that grid's voxels. At the network's own resolution with the model's integration
steps the level's loss is the model's loss for the pair, so the last loss reported is comparable with the
network's.

Each level's loss is evaluated on the box where the fixed image or the moving image warped by the level's starting
field has signal, widened by the NCC window and a margin (``_Level.focus``): around a skull-stripped, resampled scan
both images are exactly zero, where the similarity and its gradient are zero, so the value is the whole grid's
with fewer voxels per step (the whole grid when the images have signal everywhere). For MIND-SSC the value is that of
the box itself: its descriptor normalises by the mean patch variance over the image it is given, here the box.

Everything is deterministic for a fixed input (no random numbers; the same operations in the same order), so
two runs stop after the same number of steps with the same field.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from monai_vmorph.engines.refine import LevelRecord, RefineOutput
from monai_vmorph.losses import RegistrationLoss, gradient_loss, mse
from monai_vmorph.losses.mind import mind_ssc
from monai_vmorph.losses.similarity import local_ncc_to_target, ncc_target_statistics
from monai_vmorph.networks.blocks.integrate import integrate_velocity
from monai_vmorph.networks.blocks.resize import resize_field
from monai_vmorph.networks.blocks.warp import _warp, identity_grid, linear_mode, warp
from monai_vmorph.networks.nets.voxelmorph import RegistrationResult, VoxelMorph

__all__ = ["REFINE_PRESETS", "RefineLevel", "RefinePreset", "refine_multilevel"]

#: Voxels from a voxel that its MIND-SSC descriptor reads (the default dilation 2 plus patch radius 1).
_MIND_REACH = 3

#: Voxels (of a level's grid) by which the region of a level's loss extends beyond where the images have signal at
#: the level's start, for the field's change during the level (see :meth:`_Level.focus`).
_REGION_MARGIN = 4


@dataclass(frozen=True)
class RefineLevel:
    """One level of :func:`refine_multilevel`.

    Attributes:
        factor: image downsampling factor relative to the network grid (``1`` = the network's resolution,
            ``2`` = half, ...); a whole number >= 1.
        max_steps: most Adam steps at this level (``>= 0``).
        lr: Adam learning rate, in voxels of the level's velocity grid per step (``> 0``).
        ncc_window: local NCC window at this level (odd); ``None`` uses the loss's own window.
        integration_steps: scaling-and-squaring steps at this level; ``None`` uses the model's. Ignored (the
            model's are used) for a model without integration.
        exact_gradient: differentiate through scaling and squaring (``True``), or pass the displacement's
            gradient straight to the velocity (``False``: ``d exp(v) / dv`` taken as the identity, exact for
            small fields), which skips the integration's backward pass, the costliest part of a step. The loss
            values and the field itself are exact either way.
    """

    factor: int
    max_steps: int
    lr: float
    ncc_window: int | None = None
    integration_steps: int | None = None
    exact_gradient: bool = True

    def __post_init__(self) -> None:
        for name, value, low in (("factor", self.factor, 1), ("max_steps", self.max_steps, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"RefineLevel.{name} must be a whole number >= {low}, got {value!r}.")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr):
            raise ValueError(f"RefineLevel.lr must be a finite number > 0, got {self.lr!r}.")
        if not self.lr > 0:
            raise ValueError(f"RefineLevel.lr must be a finite number > 0, got {self.lr!r}.")
        window = self.ncc_window
        bad_window = isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0
        if window is not None and bad_window:
            raise ValueError(f"RefineLevel.ncc_window must be None or an odd whole number >= 1, got {window!r}.")
        steps = self.integration_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"RefineLevel.integration_steps must be None or a whole number >= 1, got {steps!r}.")


@dataclass(frozen=True)
class RefinePreset:
    """A named refinement setting shared by the command line, the bundles and the benchmarks.

    Attributes:
        levels: the coarse-to-fine levels (empty: the network alone, no refinement).
        tol: convergence threshold on the relative loss decrease over ``window`` steps.
        window: steps over which the decrease is measured.
        description: one line for help texts and reports.
    """

    levels: tuple[RefineLevel, ...]
    tol: float
    window: int
    description: str

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`refine_multilevel` for this preset."""
        return {"levels": self.levels, "tol": self.tol, "window": self.window}

    def to_dict(self) -> dict:
        """JSON-ready form (for metrics files and configs)."""
        return {
            "levels": [asdict(level) for level in self.levels],
            "tol": self.tol,
            "window": self.window,
            "description": self.description,
        }


#: The refinement presets: ``"fast"`` is the network alone; ``"default"`` adds coarse-to-fine refinement.
REFINE_PRESETS: dict[str, RefinePreset] = {
    "fast": RefinePreset(levels=(), tol=0.0, window=1, description="network alone, no refinement"),
    "default": RefinePreset(
        levels=(
            RefineLevel(factor=4, max_steps=50, lr=0.1, ncc_window=3, integration_steps=4, exact_gradient=False),
            RefineLevel(factor=2, max_steps=20, lr=0.1, ncc_window=5, integration_steps=4, exact_gradient=False),
            RefineLevel(factor=1, max_steps=10, lr=0.1, integration_steps=4, exact_gradient=False),
        ),
        tol=1e-3,
        window=5,
        description="network, then instance optimisation at 1/4, 1/2 and full network resolution until converged",
    ),
}


def _check_levels(levels: Sequence[RefineLevel]) -> tuple[RefineLevel, ...]:
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
        raise ValueError(f"levels must be a sequence of RefineLevel, got {levels!r}.")
    levels = tuple(levels)
    if not all(isinstance(level, RefineLevel) for level in levels):
        raise ValueError(f"levels must hold RefineLevel objects, got {levels!r}.")
    factors = [level.factor for level in levels]
    if any(a <= b for a, b in itertools.pairwise(factors)):
        raise ValueError(f"levels must go from coarse to fine (strictly decreasing factors), got factors {factors}.")
    return levels


def _check_loss(loss_fn: RegistrationLoss, model: VoxelMorph) -> None:
    if not isinstance(loss_fn, RegistrationLoss):
        raise ValueError(
            f"refine_multilevel needs a monai_vmorph.losses.RegistrationLoss (it rebuilds the loss per level), got "
            f"{type(loss_fn).__name__}; use refine_registration for other losses."
        )
    if loss_fn.dice_weight > 0:
        raise ValueError("refine_multilevel optimises image similarity only; give a loss with dice_weight=0.")
    if model.bidirectional:
        raise ValueError("refine_multilevel refines one-way models; use refine_registration for a bidirectional one.")


def _smooth_resample(image: torch.Tensor, shape: tuple[int, ...], factor: int) -> torch.Tensor:
    """Gaussian pre-filter (sigma ``factor / 2`` voxels) and linear resampling onto ``shape``."""
    ndim = image.dim() - 2
    sigma = factor / 2.0
    radius = max(1, math.ceil(2.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    conv = (F.conv1d, F.conv2d, F.conv3d)[ndim - 1]
    channels = image.shape[1]
    out = image
    for axis in range(ndim):
        view = [1] * ndim
        view[axis] = kernel.numel()
        weight = kernel.view(1, 1, *view).expand(channels, 1, *view)
        padding = [0] * ndim
        padding[axis] = radius
        out = conv(out, weight, padding=tuple(padding), groups=channels)
    return F.interpolate(out, size=shape, mode=linear_mode(ndim), align_corners=True)


def _signal_region(moving: torch.Tensor, fixed: torch.Tensor, margin: int) -> tuple[slice, ...]:
    """Bounding box of the voxels where ``moving`` or ``fixed`` (``(1, C, *S)``, one shape) is not zero, widened by
    ``margin`` and clipped to the grid.

    Skull-stripped and resampled scans are exactly zero around the head; the similarity of two zero regions is zero
    with a zero gradient (local NCC's window variance is zero there, and so is the squared difference), so a level's
    loss only needs the box. Images with signal everywhere (noise, a field of view filled by the body) give the
    whole grid, i.e. the exact full-grid loss.
    """
    shape = tuple(fixed.shape[2:])
    signal = ((moving != 0) | (fixed != 0)).reshape(-1, *shape).any(0)
    if not bool(signal.any()):
        return tuple(slice(0, n) for n in shape)
    region = []
    for axis, n in enumerate(shape):
        present = signal.any(dim=tuple(a for a in range(len(shape)) if a != axis)).nonzero()
        start, stop = int(present[0]) - margin, int(present[-1]) + 1 + margin
        region.append(slice(max(0, start), min(n, stop)))
    return tuple(region)


class _Level:
    """The images, fixed statistics and field grid of one level (built once per level)."""

    def __init__(
        self,
        model: VoxelMorph,
        loss_fn: RegistrationLoss,
        moving: torch.Tensor,
        fixed: torch.Tensor,
        level: RefineLevel,
    ) -> None:
        shape = tuple(moving.shape[2:])
        padded = model.padded_shape(shape)
        self.model, self.loss_fn = model, loss_fn
        self.velocity_shape = tuple(n // max(level.factor, model.int_downsize) for n in padded)
        if min(self.velocity_shape) < 2:
            raise ValueError(
                f"level factor {level.factor} leaves a {self.velocity_shape} field grid for images of shape {shape}; "
                "use a smaller factor (every axis needs at least 2 points)."
            )
        self.steps = level.integration_steps or model.integration_steps
        if level.factor == 1:
            self.moving, self.fixed = moving, fixed
            self.padded, self.crop = padded, shape
        else:
            pad = [p for n, m in zip(reversed(shape), reversed(padded), strict=True) for p in (0, m - n)]
            image_shape = tuple(n // level.factor for n in padded)
            self.moving = _smooth_resample(F.pad(moving, pad), image_shape, level.factor)
            self.fixed = _smooth_resample(F.pad(fixed, pad), image_shape, level.factor)
            self.padded = self.crop = image_shape
        self.similarity = loss_fn.similarity
        self.window = level.ncc_window if level.ncc_window is not None else loss_fn.ncc_window
        self.weight = loss_fn.smoothness_weight
        self.exact_gradient = bool(level.exact_gradient)

    def focus(self, velocity: torch.Tensor) -> None:
        """Restrict the level's loss to the region where it can be non-zero for fields near ``velocity``.

        That is the bounding box of the voxels where the fixed image or the moving image warped by ``velocity`` is
        not zero, widened by the NCC window and by :data:`_REGION_MARGIN` voxels that the field may still move
        during the level. Outside it both images are zero, so the similarity there is zero with a zero gradient
        (local NCC's window variance vanishes, as does the squared difference); the loss is the region's mean times
        its share of the grid, the same value as over the whole grid. Images with signal everywhere (a noisy
        background, a field of view filled by the body) keep the whole grid.
        """
        radius = 0
        if self.similarity == "ncc":
            window = self.window
            radius = max(window if isinstance(window, Sequence) else [window]) // 2
        elif self.similarity == "mind":
            radius = _MIND_REACH
        with torch.no_grad():
            warped = warp(self.moving, self.ddf(velocity), self.model.mode, self.model.padding_mode)
        self.region = _signal_region(warped, self.fixed, radius + _REGION_MARGIN)
        self.region_fraction = math.prod(s.stop - s.start for s in self.region) / math.prod(self.crop)
        full = identity_grid(self.crop, self.moving.device, self.moving.dtype)
        self.region_identity = full[(slice(None), *self.region)].contiguous()
        fixed_region = self.fixed[(..., *self.region)]
        if self.similarity == "ncc":
            self.stats = ncc_target_statistics(fixed_region, self.window)
        elif self.similarity == "mind":
            self.fixed_descriptor = mind_ssc(fixed_region)
        else:
            self.fixed_region = fixed_region

    def ddf(self, velocity: torch.Tensor) -> torch.Tensor:
        ddf = velocity
        if self.model.diffeomorphic and self.exact_gradient:
            ddf = integrate_velocity(velocity, self.steps, self.model.integration_padding_mode)
        elif self.model.diffeomorphic:
            with torch.no_grad():
                exact = integrate_velocity(velocity, self.steps, self.model.integration_padding_mode)
            ddf = exact + (velocity - velocity.detach())  # value exp(v), gradient passed to v unchanged
        ddf = resize_field(ddf, self.padded)
        if self.padded != self.crop:
            ddf = ddf[(..., *(slice(0, n) for n in self.crop))]
        return ddf

    def loss(self, velocity: torch.Tensor) -> torch.Tensor:
        ddf = self.ddf(velocity)[(slice(None), slice(None), *self.region)]
        warped = _warp(self.moving, ddf, self.model.mode, self.model.padding_mode, self.region_identity)
        # outside the region both images are zero: the whole grid's mean is the region's times its fraction
        if self.similarity == "ncc":
            total = local_ncc_to_target(warped, self.stats) * self.region_fraction
        elif self.similarity == "mind":
            total = mse(mind_ssc(warped), self.fixed_descriptor) * self.region_fraction
        else:
            total = mse(warped, self.fixed_region) * self.region_fraction
        if self.weight > 0:
            penalty = gradient_loss(velocity, self.loss_fn.smoothness_penalty, self.loss_fn.loss_mult)
            total = total + self.weight * penalty
        return total


def _converged(losses: list[float], tol: float, window: int) -> bool:
    """The best loss of the last ``window`` steps improves on the best before them by less than ``tol`` (relative)."""
    if len(losses) <= window:
        return False
    before, recent = min(losses[:-window]), min(losses[-window:])
    return (before - recent) < tol * max(abs(before), 1e-12)


def refine_multilevel(
    model: VoxelMorph,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    loss_fn: RegistrationLoss,
    levels: Sequence[RefineLevel] = REFINE_PRESETS["default"].levels,
    tol: float = REFINE_PRESETS["default"].tol,
    window: int = REFINE_PRESETS["default"].window,
    initial: RegistrationResult | None = None,
    callback: Callable[[int, int, float], None] | None = None,
) -> RefineOutput:
    """Refine the field of ``model`` for the pair (``moving``, ``fixed``) coarse to fine.

    Args:
        model: a one-way :class:`~monai_vmorph.networks.VoxelMorph`; its weights are not changed.
        moving: ``(1, C, *S)`` image on the network grid.
        fixed: ``(1, C, *S)`` image on the same grid.
        loss_fn: the model's :class:`~monai_vmorph.losses.RegistrationLoss` (similarity, smoothness weight and
            penalty, ``loss_mult`` and NCC window are used; no Dice term).
        levels: :class:`RefineLevel` items from coarse to fine (strictly decreasing ``factor``); empty returns
            the network's result.
        tol: a level stops when the loss decreased by less than ``tol`` (relative) over ``window`` steps
            (``>= 0``; ``0`` runs every level to ``max_steps`` unless the loss rises).
        window: steps over which the decrease is measured (``>= 1``).
        initial: the network's result for this pair (computed when ``None``).
        callback: called as ``callback(level_index, step, loss)`` after every step (progress bars).

    Returns:
        :class:`~monai_vmorph.engines.refine.RefineOutput`: the refined result (detached), every level's loss
        history one after the other in ``losses``, and one :class:`~monai_vmorph.engines.refine.LevelRecord` per
        level. Each level keeps its best iterate (Adam may overshoot), so the result's loss is
        ``levels[-1].final_loss``, the lowest value of the last level's history.

    Raises:
        ValueError: on malformed levels, ``tol``, ``window``, a loss that is not a ``RegistrationLoss`` or has a
            Dice term, a bidirectional model, or images that are not ``(1, C, *S)`` pairs.
    """
    levels = _check_levels(levels)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}.")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a whole number >= 1, got {window!r}.")
    _check_loss(loss_fn, model)
    if moving.dim() != model.spatial_dims + 2 or moving.shape[0] != 1 or moving.shape != fixed.shape:
        raise ValueError(
            f"moving and fixed must be two (1, C, *S) images of one shape, got {tuple(moving.shape)} and "
            f"{tuple(fixed.shape)}."
        )
    if initial is None:
        with torch.no_grad():
            initial = model(moving, fixed)
    base = initial.velocity.detach()
    velocity, velocity_base = base, base
    history: list[float] = []
    records = []
    for index, level in enumerate(levels):
        start = time.perf_counter()
        setting = _Level(model, loss_fn, moving, fixed, level)
        level_base = resize_field(base, setting.velocity_shape)
        # carry the update of the level below over to this grid, on top of the network's own field here
        velocity = level_base + resize_field(velocity - velocity_base, setting.velocity_shape)
        velocity = velocity.detach().clone().requires_grad_(True)
        velocity_base = level_base
        setting.focus(velocity.detach())
        optimizer = torch.optim.Adam([velocity], lr=level.lr)
        losses: list[float] = []
        converged = False
        best, best_loss = velocity.detach().clone(), math.inf
        for step in range(level.max_steps + 1):
            optimizer.zero_grad(set_to_none=True)
            loss = setting.loss(velocity)
            losses.append(float(loss.detach()))
            if losses[-1] < best_loss:  # Adam may overshoot: the level keeps its best iterate
                best, best_loss = velocity.detach().clone(), losses[-1]
            if step > 0 and callback is not None:
                callback(index, step, losses[-1])
            converged = _converged(losses, tol, window)
            if step == level.max_steps or converged:
                break
            loss.backward()
            optimizer.step()
        velocity = best
        history.extend(losses)
        records.append(
            LevelRecord(
                factor=level.factor,
                steps=len(losses) - 1,
                initial_loss=losses[0],
                final_loss=best_loss,
                seconds=time.perf_counter() - start,
                converged=converged,
            )
        )
    final = base + resize_field(velocity - velocity_base, tuple(base.shape[2:]))
    with torch.no_grad():
        result = model.from_velocity(moving, fixed, final) if levels else initial
    return RefineOutput(
        result=RegistrationResult(*(t.detach() if t is not None else None for t in result)),
        losses=history,
        levels=tuple(records),
    )
