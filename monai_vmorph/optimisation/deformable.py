"""The deformable stage: a stationary velocity field on the fixed scan's own grid, optimised coarse to fine.

The scheme is Greedy's (Yushkevich et al.; ``greedy -sv``) in torch: at every iteration the similarity's gradient
with respect to the displacement is smoothed by a Gaussian (``sigma_gradient``, the fluid-like regulariser), scaled
so that its largest vector moves ``step`` voxels of the level, and added to the velocity, which is then smoothed
again (``sigma_field``, the elastic-like regulariser). The displacement is the velocity's exponential by scaling
and squaring (:func:`~monai_vmorph.networks.blocks.integrate.integrate_velocity`), so the transform is
diffeomorphic; the gradient with respect to the velocity is taken as the displacement's (exact for small fields,
as Greedy and the network's refinement do).

**Grids.** Every array lives on one *working grid* (:class:`WorkingGrid`): the fixed scan's own voxels (or pooled
to a coarser resolution), cropped to the foreground's bounding box and a margin. The levels are that grid
shrunk by ``2**k`` (Gaussian pre-smoothing, corner-aligned resampling), so a field moves between them by
:func:`~monai_vmorph.networks.blocks.resize.resize_field`. Fields are in voxels of their level
(``(1, ndim, *S)``, channel ``k`` along array axis ``k``), the moving image is the one the affine stage placed on
the working grid (``warped(x) = moving(x + u(x))``).

**Similarities** (the pure functions of :mod:`monai_vmorph.losses`): local NCC (the fixed window statistics once
per level, :func:`~monai_vmorph.losses.similarity.ncc_target_statistics`, an analytic gradient), MIND-SSC
(:mod:`monai_vmorph.losses.mind`, the fixed descriptor once per level) and MSE.

Why not MONAI: MONAI has no instance optimiser for displacement fields; its ``GaussianFilter`` is used for both
smoothings.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from monai.networks.layers import GaussianFilter

from monai_vmorph.losses.mind import mind_ssc
from monai_vmorph.losses.similarity import local_ncc_to_target, mse, ncc_target_statistics
from monai_vmorph.metrics import jacobian_determinant
from monai_vmorph.networks.blocks.integrate import integrate_velocity
from monai_vmorph.networks.blocks.resize import resize_field
from monai_vmorph.networks.blocks.warp import linear_mode, warp

__all__ = [
    "DEFORMABLE_SIMILARITIES",
    "DeformableLevel",
    "DeformableRecord",
    "DeformableSettings",
    "exponential",
    "level_schedule",
    "level_shape",
    "optimise_velocity",
    "smooth_resample",
    "unfold",
]

#: The similarities the deformable stage optimises.
DEFORMABLE_SIMILARITIES = ("ncc", "mind", "mse")


@dataclass(frozen=True)
class DeformableLevel:
    """One level: the working grid at about ``spacing`` mm per voxel, at most ``iterations`` updates.

    A level is run on the working grid shrunk by the largest power of two whose voxels are at most ``spacing``
    (:func:`level_schedule`); levels finer than the grid are left out, so one schedule serves 2 mm and 1 mm scans.
    """

    spacing: float
    iterations: int

    def __post_init__(self) -> None:
        spacing, iterations = self.spacing, self.iterations
        if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) or not 0 < spacing < math.inf:
            raise ValueError(f"DeformableLevel.spacing must be a positive number of mm, got {spacing!r}.")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"DeformableLevel.iterations must be a whole number >= 0, got {iterations!r}.")


def level_schedule(levels: Sequence[DeformableLevel], spacing: Sequence[float]) -> list[tuple[int, int]]:
    """``(shrink, iterations)`` per level for a working grid of voxel size ``spacing`` (mm per axis): the shrink is
    the largest power of two with ``shrink * min(spacing) <= level.spacing`` (1 % tolerance); a level finer than
    3/4 of the grid's voxel is left out, and levels that land on one shrink run as one (their iterations added)."""
    voxel = min(float(v) for v in spacing)
    schedule: list[tuple[int, int]] = []
    for level in levels:
        ratio = level.spacing / voxel
        if ratio < 0.75:
            continue
        shrink = 2 ** max(0, math.floor(math.log2(ratio * 1.01)))
        if schedule and schedule[-1][0] == shrink:
            schedule[-1] = (shrink, schedule[-1][1] + level.iterations)
        else:
            schedule.append((shrink, level.iterations))
    return schedule


@dataclass(frozen=True)
class DeformableSettings:
    """Every parameter of the deformable stage (the command line and the benchmarks name one of these).

    Attributes:
        levels: coarse to fine (strictly decreasing ``spacing``); the default runs 100 iterations at 8 and 4 mm,
            30 at 2 mm and 10 at 1 mm (those at or above the grid's voxel size).
        step: the largest update of one iteration, in voxels of the level (Greedy's ``-e``).
        sigma_gradient: Gaussian sigma (mm) of the similarity's gradient (Greedy's first ``-s``, in mm).
        sigma_field: Gaussian sigma (mm) of the velocity after each update (Greedy's second ``-s``, in mm).
        ncc_window: local NCC window (odd, voxels of the level; Greedy's ``NCC 2x2x2`` is a radius 2, window 5).
        integration_steps: the most scaling-and-squaring steps; each integration takes the fewest that bring the
            velocity's largest vector to at most half a voxel before squaring (:func:`exponential`).
        tol: a level stops early when its similarity improved by less than ``tol`` (relative) over ``window``
            iterations (``0``: every level runs all its iterations).
        window: iterations over which that improvement is measured.
    """

    levels: tuple[DeformableLevel, ...] = (
        DeformableLevel(8.0, 100),
        DeformableLevel(4.0, 100),
        DeformableLevel(2.0, 30),
        DeformableLevel(1.0, 10),
    )
    step: float = 1.0
    sigma_gradient: float = 1.0
    sigma_field: float = 0.0
    ncc_window: int = 5
    integration_steps: int = 6
    tol: float = 1e-3
    window: int = 10

    def __post_init__(self) -> None:
        levels = tuple(self.levels)
        if not all(isinstance(level, DeformableLevel) for level in levels):
            raise ValueError(f"DeformableSettings.levels must hold DeformableLevel items, got {levels!r}.")
        spacings = [level.spacing for level in levels]
        if any(a <= b for a, b in itertools.pairwise(spacings)):
            raise ValueError(f"DeformableSettings.levels must go from coarse to fine, got spacings {spacings}.")
        object.__setattr__(self, "levels", levels)
        for name in ("step", "sigma_gradient", "sigma_field", "tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"DeformableSettings.{name} must be a finite number, got {value!r}.")
            if value < 0 or (name == "step" and value == 0):
                raise ValueError(f"DeformableSettings.{name} must be {'> 0' if name == 'step' else '>= 0'}.")
        window = self.ncc_window
        if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise ValueError(f"DeformableSettings.ncc_window must be an odd whole number, got {window!r}.")
        for name in ("integration_steps", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DeformableSettings.{name} must be a whole number >= 1, got {value!r}.")

    def to_dict(self) -> dict:
        """JSON-ready form (for ``metrics.json``)."""
        return asdict(self)


@dataclass(frozen=True)
class DeformableRecord:
    """What one level did: its shrink (of the working grid), grid shape, iterations run, similarity before / after,
    seconds."""

    shrink: int
    shape: tuple[int, ...]
    iterations: int
    initial_similarity: float
    final_similarity: float
    seconds: float
    converged: bool

    def _asdict(self) -> dict:
        return asdict(self)


def level_shape(shape: Sequence[int], shrink: int) -> tuple[int, ...]:
    """The shape of the working grid ``shape`` shrunk by ``shrink`` (corner-aligned: ``(n - 1) / shrink + 1``
    rounded up, at least 2 voxels per axis)."""
    return tuple(max(2, math.ceil((n - 1) / shrink) + 1) for n in shape)


def smooth_resample(image: torch.Tensor, shape: Sequence[int], shrink: float) -> torch.Tensor:
    """``(1, C, *S)`` image Gaussian-smoothed (sigma ``shrink / 2`` voxels, none for ``shrink <= 1``) and resampled
    (linear, corner-aligned) onto ``shape``."""
    ndim = image.dim() - 2
    out = image
    if shrink > 1:
        out = GaussianFilter(ndim, sigma=shrink / 2.0).to(image.device)(image)
    if tuple(out.shape[2:]) != tuple(shape):
        out = F.interpolate(out, size=tuple(shape), mode=linear_mode(ndim), align_corners=True)
    return out


class _Similarity:
    """The similarity of one level against its fixed image (what can be computed once, is)."""

    def __init__(self, name: str, fixed: torch.Tensor, window: int) -> None:
        if name not in DEFORMABLE_SIMILARITIES:
            raise ValueError(f"similarity must be one of {list(DEFORMABLE_SIMILARITIES)}, got {name!r}.")
        self.name = name
        if name == "ncc":
            self.target = ncc_target_statistics(fixed, window)
        elif name == "mind":
            self.target = mind_ssc(fixed)
        else:
            self.target = fixed

    def __call__(self, warped: torch.Tensor) -> torch.Tensor:
        if self.name == "ncc":
            return local_ncc_to_target(warped, self.target)
        if self.name == "mind":
            return mse(mind_ssc(warped), self.target)
        return mse(warped, self.target)


def exponential(velocity: torch.Tensor, max_steps: int) -> torch.Tensor:
    """The displacement ``exp(velocity)`` (``(1, ndim, *S)``, voxels) by scaling and squaring, with the fewest steps
    (at most ``max_steps``) after which the scaled velocity's largest vector is at most half a voxel (the accuracy
    of the first-order start; a 4-voxel velocity takes 3 squarings)."""
    largest = float(velocity.detach().square().sum(1).max().sqrt()) if velocity.numel() else 0.0
    steps = max(1, min(max_steps, math.ceil(math.log2(max(largest, 1e-6) / 0.5)))) if largest > 0.5 else 1
    return integrate_velocity(velocity, steps)


def _smoother(
    ndim: int, sigma: float | Sequence[float], device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Gaussian filter of ``sigma`` voxels (one per axis, or one for all); the identity for ``sigma <= 0``."""
    sigmas = [float(sigma)] * ndim if isinstance(sigma, (int, float)) else [float(v) for v in sigma]
    if max(sigmas) <= 0:
        return lambda x: x
    return GaussianFilter(ndim, sigma=sigmas).to(device)


def _converged(values: list[float], tol: float, window: int) -> bool:
    if tol <= 0 or len(values) <= window:
        return False
    before, recent = min(values[:-window]), min(values[-window:])
    return (before - recent) < tol * max(abs(before), 1e-12)


def optimise_velocity(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    similarity: str = "ncc",
    settings: DeformableSettings | None = None,
    initial: torch.Tensor | None = None,
    callback: Callable[[int, int, float], None] | None = None,
    spacing: Sequence[float] | None = None,
) -> tuple[torch.Tensor, list[DeformableRecord]]:
    """Register ``moving`` to ``fixed`` on one working grid; the velocity and one record per level.

    Args:
        moving: ``(1, C, *S)`` moving image on the working grid (placed there by the affine stage).
        fixed: ``(1, C, *S)`` fixed image on the same grid.
        similarity: one of :data:`DEFORMABLE_SIMILARITIES`.
        settings: the levels and regularisation (:class:`DeformableSettings`; ``None``: the defaults).
        initial: ``(1, ndim, *S)`` velocity (voxels of the working grid) to start from, e.g. the network's;
            ``None`` starts from zero.
        callback: ``callback(level_index, iteration, similarity)`` after every iteration.
        spacing: the working grid's voxel size (mm) per axis, by which the sigmas become voxels (``None``: 1 mm).

    Returns:
        ``(velocity, records)``: the ``(1, ndim, *S)`` velocity on the working grid (its displacement is
        ``exponential(velocity, settings.integration_steps)``) and a :class:`DeformableRecord` per level.
        A level keeps its best iterate.
    """
    settings = settings or DeformableSettings()
    if moving.dim() < 4 or moving.shape[0] != 1 or moving.shape != fixed.shape:
        raise ValueError(
            f"moving and fixed must be two (1, C, *S) images of one shape, got {tuple(moving.shape)} and "
            f"{tuple(fixed.shape)}."
        )
    ndim = moving.dim() - 2
    shape = tuple(moving.shape[2:])
    spacing = [1.0] * ndim if spacing is None else [float(v) for v in spacing]
    if len(spacing) != ndim or min(spacing) <= 0:
        raise ValueError(f"spacing must hold {ndim} positive voxel sizes (mm), got {spacing!r}.")
    zero = torch.zeros(1, ndim, *shape, dtype=moving.dtype, device=moving.device)
    velocity = zero if initial is None else initial.detach().to(moving)
    if velocity.shape != zero.shape:
        raise ValueError(f"initial must be a (1, {ndim}, *{shape}) velocity, got {tuple(velocity.shape)}.")
    records = []
    steps = settings.integration_steps
    for index, (shrink, iterations) in enumerate(level_schedule(settings.levels, spacing)):
        start = time.perf_counter()
        grid = level_shape(shape, shrink)
        m, f = smooth_resample(moving, grid, shrink), smooth_resample(fixed, grid, shrink)
        score = _Similarity(similarity, f, settings.ncc_window)
        voxel = [v * shrink for v in spacing]
        smooth_gradient = _smoother(ndim, [settings.sigma_gradient / v for v in voxel], moving.device)
        smooth_field = _smoother(ndim, [settings.sigma_field / v for v in voxel], moving.device)
        v = resize_field(velocity, list(grid)) if grid != tuple(velocity.shape[2:]) else velocity
        values: list[float] = []
        best, best_value, converged = v, math.inf, False
        for iteration in range(iterations + 1):
            with torch.no_grad():
                ddf = exponential(v, steps)
            ddf.requires_grad_(True)
            value = score(warp(m, ddf))
            (gradient,) = torch.autograd.grad(value, ddf)
            values.append(float(value.detach()))
            if values[-1] < best_value:
                best, best_value = v, values[-1]
            if iteration > 0 and callback is not None:
                callback(index, iteration, values[-1])
            converged = _converged(values, settings.tol, settings.window)
            if iteration == iterations or converged:
                break
            with torch.no_grad():
                gradient = smooth_gradient(gradient)
                largest = float(gradient.square().sum(1).max().sqrt())
                if largest <= 0:
                    break
                v = smooth_field(v - gradient * (settings.step / largest))
        velocity = best
        records.append(
            DeformableRecord(
                shrink, grid, len(values) - 1, values[0], best_value, time.perf_counter() - start, converged
            )
        )
    if tuple(velocity.shape[2:]) != shape:
        velocity = resize_field(velocity, list(shape))
    return velocity.detach(), records


def unfold(
    velocity: torch.Tensor, integration_steps: int, max_folding: float, sigma: float = 1.0, rounds: int = 10
) -> tuple[torch.Tensor, int]:
    """``velocity`` smoothed where its displacement folds (``det J <= 0``) until at most ``max_folding`` of the
    voxels fold, at most ``rounds`` times; the velocity and the number of rounds.

    The optimiser's regularisation is light, as the strongest optimisers' is (Greedy's ``-s 1.5mm 0.5mm``), and a
    few voxels of a detailed field may fold. Each round replaces the velocity near the folding voxels (within 2
    voxels, blended over a Gaussian of ``sigma``) by its Gaussian-smoothed self, so that the detail elsewhere is
    kept.
    """
    ndim = velocity.dim() - 2
    smooth = _smoother(ndim, sigma, velocity.device)
    pool = F.max_pool3d if ndim == 3 else F.max_pool2d
    done = 0
    with torch.no_grad():
        while done < rounds:
            folds = (jacobian_determinant(exponential(velocity, integration_steps)) <= 0)[:, None].float()
            if float(folds.mean()) <= max_folding:
                break
            weight = smooth(pool(folds, kernel_size=5, stride=1, padding=2)).clamp(0, 1)
            velocity = velocity + weight * (smooth(velocity) - velocity)
            done += 1
    return velocity, done
