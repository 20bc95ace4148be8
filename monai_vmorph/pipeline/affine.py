"""Affine pre-alignment of two scans in world space: rigid, then affine, multi-resolution, in torch (CPU or GPU).

VoxelMorph expects affinely aligned inputs; scans straight from the scanner are not (rotations of tens of degrees,
shifts of centimetres, a few percent of scale). :func:`affine_register` finds the affine map between two scans
given on any grids (orientation, spacing, shape; world conventions of :mod:`monai_vmorph.io.spaces`).

**Convention (the one statement).** The result is a homogeneous ``(ndim + 1, ndim + 1)`` float64 matrix ``M`` in
world RAS millimetres that maps a *fixed* world point ``p`` to the *moving* world point ``M @ p`` (a pull-back, as
ITK's transforms and :func:`monai_vmorph.io.warp_physical` use them): the aligned moving image is
``aligned(p) = moving(M @ p)``. It is applied by resampling the moving scan with the affine
:func:`aligned_moving_affine` ``inv(M) @ moving_affine`` onto the fixed grid
(``monai_vmorph.io.resample(moving, inv(M) @ moving_affine, fixed_shape, fixed_affine)``), or as the displacement
field :func:`affine_displacement` ``M @ p - p``.

**Method.**

1. Intensities are normalised per image to ``[0, 1]`` by their 0.5th and 99.5th percentiles.
2. Each image is box-averaged on its own grid into working grids of about ``spacings_mm`` (default 8, 4, then
   2 mm; the pooling factor per axis is the rounded ratio to the voxel size, so a grid is never finer than the
   scan). The fixed working grid is cropped to its foreground's bounding box plus 16 mm, and ``"mi"`` scores at
   most 16384 of its points (a seeded random subset, as ITK's Mattes metric samples), so a step costs about the
   same on every level and a 1 mm 160x192x224 scan about as much as a 2 mm one.
3. Initialisation: the translation maps the fixed foreground's centre of mass (values above 5 % of the range) to the
   moving one's; rotations are about the fixed centre of mass. On the coarsest grid, candidate rotations (the
   identity, +-15 and +-30 degrees about each axis, and the rotation between the principal axes of the two
   foregrounds closest to the identity) are scored, and the best three are each optimised rigidly; the best
   result is kept. This recovers rotations of 30 degrees and shifts of 40 mm.
4. Parameters: translation (mm), rotation (matrix exponential of a skew matrix), log-scales and shears
   (``L = R0 expm(K) diag(exp(s)) (I + upper(h))``, any linear map of positive determinant), each rotation, log-scale
   and shear divided by the foreground's RMS radius so that a unit step of any parameter moves the brain by about
   1 mm (well-conditioned for L-BFGS, which stops when the loss changes by less than 1e-6, or after
   ``max_steps`` loss evaluations).
5. Levels: ``"rigid"`` runs the rigid stage on every level; ``"affine"`` runs it on the coarsest level, then frees
   the scales and shears on every level.

**Similarity.** ``"mi"`` (global mutual information, MONAI's B-spline Parzen definition, see
:mod:`monai_vmorph.pipeline.similarity`) is the default. Measured (``BENCHMARKS.md``, "Affine pre-alignment"):
on the same-contrast Task A pairs MI and local NCC give the same Dice (0.827) in about the same CPU time; on 2D
known affines across contrasts both stay under 0.5 mm RMS: T1 vs PD MI 0.39-0.49 mm, NCC 0.25-0.32 mm; T1 vs a
non-monotonic remapping MI 0.09-0.13 mm, NCC 0.28-0.45 mm. MI assumes no relation between the two intensities
(the usual choice of ANTs, elastix and SimpleITK affine stages) and is point-sampled, so it also runs the 2 mm
level cheaply; ``"ncc"`` stops at 4 mm (it needs whole grids) and is a good choice for same-modality pairs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from monai_vmorph.errors import UserError
from monai_vmorph.pipeline.similarity import SIMILARITIES
from monai_vmorph.pipeline.working_grids import (
    WorkingLevel,
    crop_to_foreground,
    foreground_moments,
    intensity_range,
    working_image,
)

__all__ = [
    "AFFINE_MODES",
    "DEFAULT_SPACINGS_MM",
    "AffineResult",
    "affine_displacement",
    "affine_register",
    "aligned_moving_affine",
]

AFFINE_MODES = ("affine", "rigid", "none")  # the one list of allowed values (CLI options, configs)
DEFAULT_SPACINGS_MM = {"mi": (8.0, 4.0, 2.0), "ncc": (8.0, 4.0)}  # working voxel sizes per similarity
_MARGIN_MM = 16.0  # the fixed working grids keep this much background around the foreground's bounding box
_CANDIDATE_DEGREES = (15.0, 30.0)
_KEEP_CANDIDATES = 3


@dataclass
class AffineResult:
    """The result of :func:`affine_register`.

    Attributes:
        matrix: ``(ndim + 1, ndim + 1)`` float64 world RAS mm map from a fixed point ``p`` to the moving point
            ``matrix @ p`` (pull-back; module docstring). The identity for mode ``"none"``.
        mode: the mode used (one of :data:`AFFINE_MODES`).
        loss_before: similarity loss at the identity on the finest working grid (lower is better).
        loss_after: the same loss at ``matrix``.
        seconds: wall time of the call.
        levels: per optimised level and stage, ``{"spacing_mm", "stage", "steps", "loss", "seconds"}``.
    """

    matrix: np.ndarray
    mode: str
    loss_before: float
    loss_after: float
    seconds: float
    levels: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- public helpers
def aligned_moving_affine(matrix: np.ndarray, moving_affine: np.ndarray) -> np.ndarray:
    """The affine that places the moving scan's voxels onto the fixed scan: ``inv(matrix) @ moving_affine``.

    Resampling the moving array with this affine onto the fixed grid
    (``monai_vmorph.io.resample(moving, aligned_moving_affine(M, moving_affine), fixed_shape, fixed_affine)``)
    gives ``aligned(p) = moving(M @ p)`` at each fixed world point ``p``. Writing the moving array with this affine
    in its header moves the scan onto the fixed one without resampling.

    Args:
        matrix: ``(ndim + 1, ndim + 1)`` result of :func:`affine_register` (fixed world -> moving world).
        moving_affine: the moving scan's ``(ndim + 1, ndim + 1)`` voxel -> RAS mm affine.

    Returns:
        ``(ndim + 1, ndim + 1)`` float64 affine.
    """
    return np.linalg.inv(np.asarray(matrix, dtype=np.float64)) @ np.asarray(moving_affine, dtype=np.float64)


def affine_displacement(matrix: np.ndarray, shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """The physical displacement field of ``matrix`` on a grid: ``matrix @ p - p`` at each voxel's world point ``p``.

    Args:
        matrix: ``(ndim + 1, ndim + 1)`` fixed world -> moving world map.
        shape: the grid's spatial shape ``S``.
        affine: the grid's ``(ndim + 1, ndim + 1)`` voxel -> RAS mm affine.

    Returns:
        ``(*S, ndim)`` float64 displacement in RAS mm (conventions of :mod:`monai_vmorph.io.spaces`).
    """
    ndim = len(shape)
    g = (np.asarray(matrix, dtype=np.float64) @ np.asarray(affine, dtype=np.float64) - affine)[:ndim]
    index = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), axis=-1)
    return index @ g[:, :ndim].T + g[:, ndim]


# --------------------------------------------------------------------------------------------------- input checks
def _as_image(image: object, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(image))
    elif isinstance(image, torch.Tensor):
        tensor = image.as_tensor() if hasattr(image, "as_tensor") else image
        tensor = tensor.detach()
    else:
        raise UserError(f"{name} must be a NumPy array or a torch tensor, got {type(image).__name__}")
    if tensor.numel() == 0 or tensor.dim() not in (2, 3) or tensor.is_complex():
        raise UserError(f"{name} has shape {tuple(tensor.shape)}: give a non-empty 2D or 3D real intensity image")
    tensor = tensor.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise UserError(f"{name} has NaN/inf values; fix or mask the image first")
    return tensor


def _as_affine(affine: object, ndim: int, name: str) -> np.ndarray:
    a = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
    a = a.astype(np.float64)
    if a.shape != (ndim + 1, ndim + 1):
        raise UserError(
            f"{name} has shape {a.shape} but its image is {ndim}D: give a {ndim + 1}x{ndim + 1} voxel-to-RAS affine "
            "(2D images use 3x3 affines, monai_vmorph.io.affine_2d)"
        )
    if not np.all(np.isfinite(a)) or abs(np.linalg.det(a[:ndim, :ndim])) < 1e-12:
        raise UserError(f"{name} is not a finite invertible affine ({a.tolist()}); check the scan's header")
    return a


# --------------------------------------------------------------------------------------------------- transform
def _rotation(angles: torch.Tensor, ndim: int) -> torch.Tensor:
    zero = angles.new_zeros(())
    if ndim == 2:
        a = angles[0]
        skew = torch.stack([torch.stack([zero, -a]), torch.stack([a, zero])])
    else:
        a, b, c = angles
        skew = torch.stack([torch.stack([zero, -c, b]), torch.stack([c, zero, -a]), torch.stack([-b, a, zero])])
    return torch.linalg.matrix_exp(skew)


def _axis_rotation(axis: int, degrees: float, ndim: int) -> np.ndarray:
    angles = torch.zeros(1 if ndim == 2 else 3, dtype=torch.float64)
    angles[0 if ndim == 2 else axis] = math.radians(degrees)
    return _rotation(angles, ndim).numpy()


class _Transform:
    """``q = R0 expm(K(r)) diag(exp(s)) (I + upper(h)) (p - c) + c + t0 + t``, parameters scaled to ~mm."""

    def __init__(self, ndim: int, centre: np.ndarray, shift: np.ndarray, radius: float) -> None:
        self.ndim = ndim
        self.centre = torch.as_tensor(centre, dtype=torch.float64)
        self.shift = torch.as_tensor(shift, dtype=torch.float64)
        self.radius = radius
        n_rot = 1 if ndim == 2 else 3
        self.rigid = torch.zeros(ndim + n_rot, dtype=torch.float64, requires_grad=True)  # t (mm), r * radius
        self.affine = torch.zeros(ndim + ndim * (ndim - 1) // 2, dtype=torch.float64, requires_grad=True)
        self.start = torch.eye(ndim, dtype=torch.float64)  # R0

    def matrix(self) -> torch.Tensor:
        n = self.ndim
        t, r = self.rigid[:n], self.rigid[n:] / self.radius
        s, h = self.affine[:n] / self.radius, self.affine[n:] / self.radius
        upper = torch.eye(n, dtype=torch.float64)
        rows, cols = torch.triu_indices(n, n, offset=1)
        upper = upper.index_put((rows, cols), h)
        linear = self.start @ _rotation(r, n) @ torch.diag(torch.exp(s)) @ upper
        offset = self.centre + self.shift + t - linear @ self.centre
        bottom = torch.zeros(1, n + 1, dtype=torch.float64)
        bottom[0, n] = 1
        return torch.cat([torch.cat([linear, offset[:, None]], dim=1), bottom])


def _optimise(
    level: WorkingLevel, transform: _Transform, params: list[torch.Tensor], max_evaluations: int
) -> tuple[float, int]:
    """L-BFGS with a strong-Wolfe line search on ``params``; stops when the loss changes by less than 1e-6 or after
    ``max_evaluations`` loss evaluations. Returns the final loss and the number of evaluations."""
    optimiser = torch.optim.LBFGS(
        params,
        lr=1,
        max_iter=max_evaluations,
        max_eval=max_evaluations,
        tolerance_grad=1e-7,
        tolerance_change=1e-6,
        history_size=10,
        line_search_fn="strong_wolfe",
    )
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        optimiser.zero_grad()
        loss = level.loss(transform.matrix()[None])[0]
        loss.backward()
        evaluations += 1
        return loss.detach()  # L-BFGS reads the value only (the gradients are in params)

    optimiser.step(closure)
    with torch.no_grad():
        loss = float(level.loss(transform.matrix()[None])[0])
    return loss, evaluations


def _candidate_rotations(ndim: int, fixed_cov: np.ndarray, moving_cov: np.ndarray) -> list[np.ndarray]:
    """The identity, +-15/30 degrees about each axis, and the principal-axes rotation closest to the identity."""
    out = [np.eye(ndim)]
    for axis in range(1 if ndim == 2 else 3):
        for degrees in _CANDIDATE_DEGREES:
            out += [_axis_rotation(axis, degrees, ndim), _axis_rotation(axis, -degrees, ndim)]
    _, ef = np.linalg.eigh(fixed_cov)
    _, em = np.linalg.eigh(moving_cov)
    best = None
    for signs in np.ndindex(*[2] * ndim):
        r = em @ np.diag([1.0 - 2 * s for s in signs]) @ ef.T  # maps fixed principal axes to moving ones
        if np.linalg.det(r) > 0 and (best is None or np.trace(r) > np.trace(best)):
            best = r
    out.append(best)
    return out


# --------------------------------------------------------------------------------------------------- registration
@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run torch on one CPU thread inside the block (nothing changes on GPU); the previous count is restored."""
    previous = torch.get_num_threads()
    if device.type == "cpu" and previous > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def affine_register(
    fixed: np.ndarray | torch.Tensor,
    fixed_affine: np.ndarray,
    moving: np.ndarray | torch.Tensor,
    moving_affine: np.ndarray,
    mode: str = "affine",
    similarity: str = "mi",
    device: torch.device | str | None = None,
    progress: Callable[[str], None] | None = None,
    spacings_mm: Sequence[float] | None = None,
    max_steps: int = 100,
) -> AffineResult:
    """Find the world affine map from the fixed scan to the moving scan (convention and method: module docstring).

    Args:
        fixed: ``S_f`` raw intensities (2D or 3D, NumPy or torch, any dtype); normalised inside.
        fixed_affine: its ``(ndim + 1, ndim + 1)`` voxel -> RAS mm affine (3x3 for 2D).
        moving: ``S_m`` raw intensities, same number of dims, any grid.
        moving_affine: its ``(ndim + 1, ndim + 1)`` voxel -> RAS mm affine.
        mode: ``"affine"`` (rigid, then scales and shears), ``"rigid"`` or ``"none"`` (identity; the loss is still
            measured), one of :data:`AFFINE_MODES`.
        similarity: ``"mi"`` (default, any contrasts) or ``"ncc"`` (local NCC), one of
            :data:`monai_vmorph.pipeline.similarity.SIMILARITIES`.
        device: where to compute; default: the fixed tensor's device, CPU for NumPy input.
        progress: called with one line per level and stage (e.g. to print it).
        spacings_mm: working voxel sizes, coarse to fine (each image is box-averaged to about this size); default
            :data:`DEFAULT_SPACINGS_MM` of the similarity (local NCC needs whole grids, so it stops at 4 mm).
        max_steps: most loss evaluations per level and stage (each candidate rotation gets a sixth of them).

    On CPU the work runs on one torch thread (restored afterwards): the working grids are small (at most 16384
    points for ``"mi"``), and intra-op parallelism only adds synchronisation; on 2 shared CPU cores, 2 threads made
    the stage ~10x slower.

    Returns:
        :class:`AffineResult`. If the optimised matrix scores worse than the identity on the finest grid, the
        identity is returned, so an aligned pair is never made worse by this stage's own measure.

    Raises:
        UserError: unknown mode or similarity, empty or constant image, NaN/inf values, mixed 2D/3D inputs, an
            affine of the wrong size or not invertible, bad ``spacings_mm``.
    """
    with _one_cpu_thread(torch.device(device) if device is not None else _device_of(fixed)):
        return _register(
            fixed, fixed_affine, moving, moving_affine, mode, similarity, device, progress, spacings_mm, max_steps
        )


def _device_of(image: object) -> torch.device:
    return image.device if isinstance(image, torch.Tensor) else torch.device("cpu")


def _register(
    fixed: np.ndarray | torch.Tensor,
    fixed_affine: np.ndarray,
    moving: np.ndarray | torch.Tensor,
    moving_affine: np.ndarray,
    mode: str,
    similarity: str,
    device: torch.device | str | None,
    progress: Callable[[str], None] | None,
    spacings_mm: Sequence[float] | None,
    max_steps: int,
) -> AffineResult:
    """:func:`affine_register` (documented there)."""
    start = time.perf_counter()
    if mode not in AFFINE_MODES:
        raise UserError(f"affine mode {mode!r} is unknown; choose one of {', '.join(AFFINE_MODES)}")
    if similarity not in SIMILARITIES:
        raise UserError(f"affine similarity {similarity!r} is unknown; choose one of {', '.join(SIMILARITIES)}")
    spacings = [float(s) for s in (DEFAULT_SPACINGS_MM[similarity] if spacings_mm is None else spacings_mm)]
    if not spacings or not all(math.isfinite(s) and s > 0 for s in spacings):
        raise UserError(f"spacings_mm must be positive voxel sizes in mm, coarse to fine; got {list(spacings_mm)}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise UserError(f"max_steps must be a positive int, got {max_steps!r}")
    device = _device_of(fixed) if device is None else torch.device(device)
    f = _as_image(fixed, "the fixed image", device)
    m = _as_image(moving, "the moving image", device)
    if f.dim() != m.dim():
        raise UserError(
            f"the fixed image is {f.dim()}D and the moving image {m.dim()}D; register images of one dimensionality"
        )
    ndim = f.dim()
    fa = _as_affine(fixed_affine, ndim, "the fixed affine")
    ma = _as_affine(moving_affine, ndim, "the moving affine")
    ranges = []
    for name, image in (("the fixed image", f), ("the moving image", m)):
        lo, hi = intensity_range(image)
        if hi <= lo:
            raise UserError(f"{name} is constant (every voxel {lo:g}); give an image with contrast")
        ranges.append((lo, hi))
    levels = []
    for s in spacings:
        fixed_image = crop_to_foreground(working_image(f, fa, s, *ranges[0]), max(2, round(_MARGIN_MM / s)))
        levels.append(WorkingLevel(fixed_image, working_image(m, ma, s, *ranges[1]), s, similarity))
    finest, coarse = levels[-1], levels[0]
    identity = torch.eye(ndim + 1, dtype=torch.float64)
    with torch.no_grad():
        loss_before = float(finest.loss(identity[None])[0])
    if mode == "none":
        return AffineResult(np.eye(ndim + 1), mode, loss_before, loss_before, time.perf_counter() - start, [])

    fixed_centre, fixed_cov = foreground_moments(coarse.fixed, "the fixed image")
    moving_centre, moving_cov = foreground_moments(coarse.moving, "the moving image")
    radius = max(math.sqrt(max(float(np.trace(fixed_cov)), 0.0)), coarse.spacing)
    transform = _Transform(ndim, fixed_centre, moving_centre - fixed_centre, radius)
    records: list[dict] = []

    def record(level: WorkingLevel, stage: str, steps: int, loss: float, since: float) -> None:
        entry = {"spacing_mm": level.spacing, "stage": stage, "steps": steps, "loss": loss}
        entry["seconds"] = time.perf_counter() - since
        records.append(entry)
        if progress is not None:
            progress(
                f"affine {stage} at {level.spacing:g} mm: {steps} steps, loss {loss:.4f}, {entry['seconds']:.2f} s"
            )

    # coarsest level: score the candidate rotations, optimise the best few rigidly, keep the best
    since = time.perf_counter()
    candidates = _candidate_rotations(ndim, fixed_cov, moving_cov)
    with torch.no_grad():
        matrices = []
        for rotation in candidates:
            transform.start = torch.as_tensor(rotation, dtype=torch.float64)
            matrices.append(transform.matrix())
        scores = coarse.loss(torch.stack(matrices))
    best, total = None, 0
    for index in torch.argsort(scores)[:_KEEP_CANDIDATES].tolist():
        transform.start = torch.as_tensor(candidates[index], dtype=torch.float64)
        with torch.no_grad():
            transform.rigid.zero_()
        loss, steps = _optimise(coarse, transform, [transform.rigid], max(1, max_steps // 6))
        total += steps
        if best is None or loss < best[0]:
            best = (loss, transform.start.clone(), transform.rigid.detach().clone())
    transform.start = best[1]
    with torch.no_grad():
        transform.rigid.copy_(best[2])
    loss, steps = _optimise(coarse, transform, [transform.rigid], max_steps)
    record(coarse, "rigid", total + steps, loss, since)
    params = [transform.rigid] if mode == "rigid" else [transform.rigid, transform.affine]
    for index, level in enumerate(levels):
        if index == 0 and mode == "rigid":
            continue
        since = time.perf_counter()
        loss, steps = _optimise(level, transform, params, max_steps)
        record(level, mode, steps, loss, since)

    with torch.no_grad():
        matrix = transform.matrix()
        loss_after = float(finest.loss(matrix[None])[0])
    result = matrix.numpy().copy()
    if not loss_after < loss_before:
        result, loss_after = np.eye(ndim + 1), loss_before
    return AffineResult(result, mode, loss_before, loss_after, time.perf_counter() - start, records)
