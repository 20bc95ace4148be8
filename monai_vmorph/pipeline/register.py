"""Register two native scans: affine pre-alignment, the network on its grid, the deformable stage, one field back.

Steps (each in one place):

1. **Affine** (:func:`monai_vmorph.pipeline.affine.affine_register`, mode ``"affine"``, ``"rigid"`` or ``"none"``):
   a matrix ``A`` (RAS mm) mapping a fixed world point to the moving world point. The moving scan is then *placed*
   by ``inv(A) @ moving.affine`` (a header change, no resampling of its own).
2. **Network grid** (:func:`monai_vmorph.io.network_grid`): both scans, normalised by :func:`normalise_intensity`,
   are resampled once (linear) onto the axis-aligned grid of the bundle's voxel size centred on the fixed scan;
   the moving one through its affine placement, so the network sees an affinely aligned pair.
3. **Network**: a voxel field ``u`` on that grid from the network, kept only where it improves the similarity
   over the affine stage's (:func:`network_or_affine`); ``preset="fast"`` stops here.
4. **Deformable stage** (``preset="default"``, :mod:`monai_vmorph.pipeline.deformable`): a stationary velocity on
   the fixed scan's own grid (cropped to its foreground; ``resolution`` pools it), started from the network's,
   optimised coarse to fine (:func:`monai_vmorph.optimisation.optimise_velocity`). ``preset="network-grid"``
   refines on the network grid instead (:func:`~monai_vmorph.engines.refine_multilevel.refine_multilevel`), and
   ``refine`` adds single-level Adam steps there.
5. **One transform back**: with ``W`` the affine of the grid the final field lives on (the working grid, or the
   network grid ``N``), ``T(p) = A @ W @ (r + u(r))`` with ``r = inv(W) @ p`` becomes one physical displacement at
   every native fixed voxel (:func:`monai_vmorph.io.native_displacement` with ``moving_net_affine = A @ W``);
   outside that grid it is the affine alone. The native moving scan (and labels) are warped by it in one
   resampling; folding and SDlogJ are measured on it (:func:`native_folding`).
6. **The inverse** (``inverse=True``): the inverse ``w`` of ``u`` on its grid (from ``exp(-v)`` for a
   stationary velocity ``v``; fixed-point inversion, :func:`monai_vmorph.networks.invert_ddf`, for a plain field)
   gives ``T^-1(m) = W @ (q' + w(q'))`` with ``q' = inv(A @ W) @ m``, one physical displacement at every native
   *moving* voxel (:func:`inverse_native_displacement`); outside that grid it is ``inv(A)`` alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from monai.transforms import ScaleIntensityRangePercentiles

from monai_vmorph.engines.refine import refine_registration
from monai_vmorph.engines.refine_multilevel import REFINE_PRESETS, RefinePreset, refine_multilevel
from monai_vmorph.errors import UserError
from monai_vmorph.io import displacement_at_points, native_displacement, network_grid, resample, warp_physical
from monai_vmorph.losses import RegistrationLoss
from monai_vmorph.metrics import folding_fraction, label_dice, landmark_distances, sdlogj, tre_summary
from monai_vmorph.networks import RegistrationResult, invert_ddf, warp
from monai_vmorph.optimisation.deformable import DeformableSettings, exponential
from monai_vmorph.pipeline.affine import AFFINE_MODES, affine_displacement, affine_register, aligned_moving_affine
from monai_vmorph.pipeline.auto_similarity import choose_similarity
from monai_vmorph.pipeline.deformable import network_velocity, run_deformable_stage
from monai_vmorph.pipeline.model import BundleModel
from monai_vmorph.pipeline.provenance import provenance
from monai_vmorph.pipeline.scan import NativeScan
from monai_vmorph.transforms import INTENSITY_PERCENTILES, match_contrast

__all__ = [
    "PRESETS",
    "PairResult",
    "Preset",
    "as_preset",
    "dice_per_label",
    "inverse_native_displacement",
    "landmark_tre",
    "normalise_intensity",
    "register_pair",
]


@dataclass
class PairResult:
    """Everything a command may write or report about one registered pair.

    Attributes:
        warped: the moving image on the fixed image's native grid, float32 ``fixed_shape``.
        displacement: the whole transform (affine and deformable) as a physical displacement (RAS mm) on the fixed
            grid, ``fixed_shape + (ndim,)``.
        warped_labels: the moving labels on the fixed grid (``None`` without labels), the labels' dtype.
        affine: the affine stage's matrix (RAS mm, fixed world -> moving world; the identity for ``"none"``).
        net_affine: the network grid's affine; ``net_fixed``/``net_moving`` (the moving scan after the affine stage)
            / ``net_warped`` and ``net_ddf`` (voxels, ``(ndim, *S_net)``) live on it.
        metrics: JSON-ready numbers (folding %, SDlogJ, Dice before / after the affine stage / after, losses,
            seconds per stage).
        inverse_displacement: with ``inverse=True``, the inverse transform as a physical displacement (RAS mm) on the
            moving grid, ``moving_shape + (ndim,)``, else ``None``.
    """

    warped: np.ndarray
    displacement: np.ndarray
    warped_labels: np.ndarray | None
    affine: np.ndarray
    net_affine: np.ndarray
    net_fixed: np.ndarray
    net_moving: np.ndarray
    net_warped: np.ndarray
    net_ddf: np.ndarray
    metrics: dict = field(default_factory=dict)
    inverse_displacement: np.ndarray | None = None


#: Further rounds of contrast mapping and network registration after the first, for a contrast-mapped pair.
CONTRAST_ROUNDS = 1

#: Relative size of each similarity's values and gradients (local NCC's as 1), by which the smoothness weight of a
#: bundle trained with one similarity is rescaled for another (:func:`similarity_loss`); measured in
#: ``benchmarks/bench_accuracy.py``.
SMOOTHNESS_SCALE = {"ncc": 1.0, "mse": 1.0, "mind": 0.1}


class Preset(NamedTuple):
    """What follows the network: a refinement on the network grid (``grid``; large smooth corrections, on the
    network's own velocity parametrisation, :func:`~monai_vmorph.engines.refine_multilevel.refine_multilevel`), then
    the deformable stage on the fixed scan's own grid (``deformable``; the detail, :mod:`.deformable`); either may
    be ``None``."""

    grid: RefinePreset | None
    deformable: DeformableSettings | None


#: The presets by name: ``"default"``, the deformable stage on the fixed scan's grid; ``"fast"``, nothing (the
#: network alone); ``"network-grid"``, the network-grid refinement alone (what the bundles' inference runs);
#: ``"network-grid+native"``, both (measured against the others in ``BENCHMARKS.md``).
PRESETS: dict[str, Preset] = {
    "default": Preset(None, DeformableSettings()),
    "fast": Preset(None, None),
    "network-grid": Preset(REFINE_PRESETS["default"], None),
    "network-grid+native": Preset(REFINE_PRESETS["default"], DeformableSettings()),
}


def as_preset(preset: str | Preset | RefinePreset | DeformableSettings) -> Preset:
    """``preset`` as a :class:`Preset` (a name of :data:`PRESETS`, or one stage's settings alone)."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise UserError(f"preset {preset!r} is not one of {sorted(PRESETS)}")
        return PRESETS[preset]
    if isinstance(preset, RefinePreset):
        return Preset(preset, None)
    if isinstance(preset, DeformableSettings):
        return Preset(None, preset)
    return preset


def preset_iterations(preset: str | Preset | RefinePreset | DeformableSettings) -> int:
    """The largest number of steps the preset ``preset`` runs (for progress bars)."""
    grid, deformable = as_preset(preset)
    steps = sum(level.max_steps for level in grid.levels) if grid is not None else 0
    return steps + (sum(level.iterations for level in deformable.levels) if deformable is not None else 0)


def normalise_intensity(array: np.ndarray) -> np.ndarray:
    """Percentiles to [0, 1], clipped: the bundles' ``registration_preprocessing`` intensity step."""
    lower, upper = INTENSITY_PERCENTILES
    scale = ScaleIntensityRangePercentiles(lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)
    return np.asarray(scale(torch.as_tensor(array[None], dtype=torch.float32))[0], dtype=np.float32)


def dice_per_label(warped_labels: np.ndarray, fixed_labels: np.ndarray) -> dict[str, float]:
    """Dice of every non-zero label of the fixed map (``NaN`` where a label is absent from both)."""
    labels = sorted(int(v) for v in np.unique(fixed_labels) if v != 0)
    scores = label_dice(torch.as_tensor(warped_labels)[None, None], torch.as_tensor(fixed_labels)[None, None], labels)
    return {str(label): float(score) for label, score in zip(labels, scores[0].tolist(), strict=True)}


def _dice_metrics(metrics: dict, key: str, warped_labels: np.ndarray, fixed_labels: NativeScan) -> None:
    scores = dice_per_label(warped_labels, fixed_labels.array)
    metrics[key] = scores
    metrics[f"mean_{key}"] = float(np.nanmean(list(scores.values())))


def inverse_native_displacement(
    inverse_ddf: np.ndarray | torch.Tensor,
    net_affine: np.ndarray,
    matrix: np.ndarray,
    moving_shape: tuple[int, ...],
    moving_affine: np.ndarray,
) -> np.ndarray:
    """The inverse of the whole transform ``T(p) = A @ N @ (q + u(q))`` as a displacement on the moving grid.

    Args:
        inverse_ddf: ``(ndim, *S_net)`` inverse ``w`` of the network-grid field ``u`` (voxels of the grid ``N``).
        net_affine: the network grid's affine ``N``.
        matrix: the affine stage's ``A`` (fixed world -> moving world, RAS mm).
        moving_shape: the native moving grid's shape.
        moving_affine: its affine.

    Returns:
        ``(*moving_shape, ndim)`` RAS mm: ``T^-1(m) - m`` at each moving voxel's world point ``m``, where
        ``T^-1(m) = N @ (q' + w(q'))``, ``q' = inv(A @ N) @ m`` (``inv(A) @ m`` where ``q'`` is off the grid). The
        ITK field that maps moving points to fixed points, applied like the forward one.
    """
    return native_displacement(
        inverse_ddf, matrix @ net_affine, moving_shape, moving_affine, moving_net_affine=net_affine
    )


def landmark_tre(
    fixed_points: np.ndarray,
    moving_points: np.ndarray,
    matrix: np.ndarray,
    displacement: np.ndarray,
    fixed_affine: np.ndarray,
) -> dict[str, dict[str, float]]:
    """TRE (mm) of corresponding landmarks: each fixed point ``p`` mapped through a transform, distance to its moving
    point, summarised by :func:`monai_vmorph.metrics.tre_summary`.

    ``"before"``: ``p`` itself; ``"affine"``: ``A @ p`` (the affine stage alone); ``"after"``: ``p + d(p)`` with
    ``d`` the whole transform's ``displacement`` (``(*S, ndim)`` RAS mm on the fixed grid) interpolated as ITK does.
    """
    fixed_points = np.asarray(fixed_points, dtype=np.float64)
    ndim = fixed_points.shape[1]
    through_affine = fixed_points @ matrix[:ndim, :ndim].T + matrix[:ndim, ndim]
    through_all = fixed_points + displacement_at_points(displacement, fixed_affine, fixed_points)
    return {
        stage: tre_summary(landmark_distances(mapped, moving_points))
        for stage, mapped in (("before", fixed_points), ("affine", through_affine), ("after", through_all))
    }


def similarity_loss(loss: RegistrationLoss, similarity: str) -> RegistrationLoss:
    """``loss`` (a bundle's training loss) with its similarity term replaced by ``similarity``.

    The smoothness penalty keeps its form; its weight is scaled by :data:`SMOOTHNESS_SCALE` of the similarity, so
    that the balance of the two terms is the one the bundle chose for its own similarity (MIND-SSC's squared
    differences are about a tenth of local NCC's values and gradients).
    """
    if similarity == loss.similarity:
        return loss
    scale = SMOOTHNESS_SCALE.get(similarity, 1.0) / SMOOTHNESS_SCALE.get(loss.similarity, 1.0)
    return RegistrationLoss(
        similarity=similarity,
        smoothness_weight=loss.smoothness_weight * scale,
        smoothness_penalty=loss.smoothness_penalty,
        loss_mult=loss.loss_mult,
        ncc_window=loss.ncc_window,
    )


def network_or_affine(
    moving: torch.Tensor, fixed: torch.Tensor, result: RegistrationResult, loss: RegistrationLoss
) -> tuple[RegistrationResult, dict]:
    """The network's ``result`` if it improves the similarity of ``loss`` on the pair, else the affine stage's.

    Both are compared by the same similarity term on the same (network) grid: the moving image as the affine stage
    left it (a zero velocity) against the network's warped image. The network is a prior that is used only where it
    helps: on a contrast it never saw it can move tissue to the wrong places, and then the deformable stage starts
    from the affine alignment instead.

    Returns:
        The result to start from (or to return, without refinement) and ``{"initialisation": "network" |
        "affine", "similarity_affine": s_a, "similarity_network": s_n}`` (lower is better).
    """
    with torch.no_grad():
        # the zero field: the moving image as the affine stage left it (a zero displacement warps to the input)
        affine = RegistrationResult(moving.clone(), torch.zeros_like(result.ddf), torch.zeros_like(result.velocity))
        scores = {
            name: float(loss.similarity_term(r.warped, fixed)) for name, r in (("affine", affine), ("network", result))
        }
    use_network = scores["network"] < scores["affine"]
    record = {
        "initialisation": "network" if use_network else "affine",
        "similarity_affine": scores["affine"],
        "similarity_network": scores["network"],
    }
    return (result if use_network else affine), record


def native_folding(displacement: np.ndarray, fixed_affine: np.ndarray) -> dict[str, float]:
    """Folding (% of voxels with ``det J <= 0``) and SDlogJ of the whole transform written on the fixed grid
    (``displacement``: ``(*S, ndim)`` RAS mm; the affine part's constant ``log det`` leaves SDlogJ unchanged)."""
    ndim = displacement.shape[-1]
    to_voxels = torch.as_tensor(np.linalg.inv(np.asarray(fixed_affine)[:ndim, :ndim]), dtype=torch.float32)
    ddf = (torch.as_tensor(displacement, dtype=torch.float32) @ to_voxels.T).movedim(-1, 0)[None]
    return {"folding_percent": 100.0 * float(folding_fraction(ddf)), "sdlogj": float(sdlogj(ddf))}


def _network_inverse(model, moving: torch.Tensor, fixed: torch.Tensor, result) -> torch.Tensor:
    """``(1, ndim, *S_net)`` inverse of ``result.ddf`` by fixed-point iteration, started from the model's
    ``exp(-v)`` when it integrates a velocity (then only the integration's discretisation error is left to remove)."""
    initial = None
    if model.diffeomorphic:
        with torch.no_grad():
            initial = model.from_velocity(moving, fixed, -result.velocity.detach()).ddf.detach().float()
    return invert_ddf(result.ddf.detach().float(), iterations=50 if initial is None else 10, initial=initial)


def register_pair(
    fixed: NativeScan,
    moving: NativeScan,
    bundle: BundleModel,
    refine: int = 0,
    refine_lr: float = 0.05,
    moving_labels: NativeScan | None = None,
    fixed_labels: NativeScan | None = None,
    progress: Callable[..., None] | None = None,
    *,
    affine: str = "affine",
    preset: str | Preset | RefinePreset | DeformableSettings = "default",
    resolution: float | None = None,
    inverse: bool = False,
    fixed_landmarks: np.ndarray | None = None,
    moving_landmarks: np.ndarray | None = None,
    similarity: str = "auto",
) -> PairResult:
    """Register ``moving`` to ``fixed``: affine stage, ``bundle``'s network (and ``refine`` steps), one field back.

    Args:
        fixed: the scan the result lives on.
        moving: the scan that is warped.
        bundle: the network with its grid settings (:func:`monai_vmorph.pipeline.load_bundle_model`).
        refine: instance-optimisation Adam steps on the network grid (0: the network alone).
        refine_lr: their step size (voxels).
        moving_labels: label map on the moving grid, warped to ``warped_labels``.
        fixed_labels: label map on the fixed grid: Dice before, after the affine stage and after, in ``metrics``.
        progress: ``progress(step, loss, stage)`` after each refinement step (``step`` counts across the levels;
            ``stage`` names the level, e.g. ``"level 2/3 (1/2)"``).
        affine: the pre-alignment, one of :data:`monai_vmorph.pipeline.affine.AFFINE_MODES`.
        preset: what follows the network: a name in :data:`PRESETS`, a :class:`Preset`, or one stage alone: a
            :class:`~monai_vmorph.optimisation.deformable.DeformableSettings` (the deformable stage on the fixed
            scan's own grid) or a :class:`~monai_vmorph.engines.refine_multilevel.RefinePreset` (refinement on the
            network grid).
        resolution: the deformable stage's voxel size in mm (``None``: the fixed scan's own).
        inverse: also compute the inverse transform on the moving grid (``inverse_displacement``).
        fixed_landmarks: ``(N, ndim)`` world points (RAS mm) on the fixed scan
            (:func:`monai_vmorph.io.read_landmarks`); with ``moving_landmarks``, their corresponding points on the
            moving scan, ``metrics["tre_mm"]`` holds the target registration error before, after the affine stage
            and after (:func:`landmark_tre`).
        similarity: the deformable stage's similarity, one of
            :data:`~monai_vmorph.pipeline.auto_similarity.DEFORMABLE_SIMILARITIES` (``"auto"``: chosen per pair,
            :func:`~monai_vmorph.pipeline.auto_similarity.choose_similarity`). It also decides whether the network's
            field is used (:func:`network_or_affine`).

    Returns:
        :class:`PairResult`; conventions of the steps in this module's docstring.
    """
    if affine not in AFFINE_MODES:
        raise UserError(f"affine mode {affine!r} is not one of {list(AFFINE_MODES)}")
    grid_preset, settings = as_preset(preset)
    if resolution is not None and not (isinstance(resolution, (int, float)) and 0 < resolution < float("inf")):
        raise UserError(f"resolution must be a positive number of mm, got {resolution!r}")
    start = time.perf_counter()
    device = next(bundle.model.parameters()).device
    metrics: dict = {"provenance": provenance(bundle.model, bundle.weights, device)}
    aligned = affine_register(fixed.array, fixed.affine, moving.array, moving.affine, mode=affine)
    matrix = np.asarray(aligned.matrix, dtype=np.float64)
    metrics["affine"] = {"mode": affine, "matrix": matrix.tolist(), "levels": aligned.levels}
    metrics["seconds_affine"] = time.perf_counter() - start

    tick = time.perf_counter()
    shape, net_affine = network_grid(fixed.array.shape, fixed.affine, bundle.pixdim, bundle.spatial_size)
    fixed_normalised, moving_normalised = normalise_intensity(fixed.array), normalise_intensity(moving.array)
    net_fixed = resample(fixed_normalised, fixed.affine, shape, net_affine)
    placed = aligned_moving_affine(matrix, moving.affine)
    net_moving = resample(moving_normalised, placed, shape, net_affine)
    m = torch.as_tensor(net_moving, device=device)[None, None]
    f = torch.as_tensor(net_fixed, device=device)[None, None]
    original = m
    choice, m = choose_similarity(m, f, similarity)  # m: contrast-mapped where that makes the pair one contrast
    loss = similarity_loss(bundle.loss, choice.similarity)
    metrics["similarity"] = choice._asdict()
    with torch.no_grad():
        result = bundle.model(m, f)
        for _ in range(CONTRAST_ROUNDS if choice.contrast_mapped else 0):
            # re-estimate the mapping from the registered pair (closer alignment: a sharper mapping), register again
            m = match_contrast(original, f, aligned=warp(original, result.ddf))
            result = bundle.model(m, f)
        metrics["loss_network"] = float(bundle.loss(result, {"moving_image": m, "fixed_image": f}))
    result, prior = network_or_affine(m, f, result, loss)
    metrics.update(prior)
    metrics["seconds_network"] = time.perf_counter() - tick
    if grid_preset is not None and grid_preset.levels:
        tick = time.perf_counter()
        done = [0]

        def on_step(level: int, step: int, loss: float) -> None:
            done[0] += 1
            if progress is not None:
                factor = grid_preset.levels[level].factor
                progress(done[0], loss, f"level {level + 1}/{len(grid_preset.levels)} (1/{factor})")

        kwargs = grid_preset.kwargs()
        refined = refine_multilevel(bundle.model, m, f, loss, **kwargs, initial=result, callback=on_step)
        result = refined.result
        metrics["loss_refined"] = refined.levels[-1].final_loss
        metrics["refine_levels"] = [record._asdict() for record in refined.levels]
        metrics["seconds_refine_levels"] = time.perf_counter() - tick
    if refine > 0:
        tick = time.perf_counter()
        refined = refine_registration(
            bundle.model, m, f, loss, steps=refine, lr=refine_lr, initial=result, callback=progress
        )
        result = refined.result
        metrics["loss_refined"] = refined.losses[-1]
        metrics["refine_steps"] = refine
        metrics["seconds_refine"] = time.perf_counter() - tick
    field_ddf, field_affine, stage_velocity = result.ddf.detach().float(), net_affine, None
    if settings is not None:
        tick = time.perf_counter()
        done = [0]

        def on_iteration(level: int, iteration: int, value: float) -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], value, f"deformable level {level + 1}")

        # the start: the network's field where it helped, and whatever the network-grid refinement made of it
        refined_first = bool(grid_preset is not None and grid_preset.levels) or refine > 0
        use_network = prior["initialisation"] == "network" or refined_first
        stage = run_deformable_stage(
            fixed_normalised,
            fixed.affine,
            moving_normalised,
            placed,
            choice.similarity,
            choice.contrast_mapped,
            settings,
            resolution=resolution,
            initial=network_velocity(bundle.model, result, list(shape)) if use_network else None,
            net_affine=net_affine,
            device=device,
            callback=on_iteration,
        )
        field_ddf, field_affine, stage_velocity = stage.ddf, stage.grid.affine, stage.velocity
        metrics["deformable"] = stage.metrics
        metrics["seconds_deformable"] = time.perf_counter() - tick
    net_ddf = result.ddf.detach().float()[0].cpu().numpy()

    tick = time.perf_counter()
    grid = (fixed.array.shape, fixed.affine)
    displacement = native_displacement(field_ddf[0], field_affine, *grid, moving_net_affine=matrix @ field_affine)
    metrics.update(native_folding(displacement, fixed.affine))
    warped = warp_physical(moving.array, moving.affine, *grid, displacement, "linear")
    warped_labels = None
    if moving_labels is not None:
        warped_labels = warp_physical(moving_labels.array, moving_labels.affine, *grid, displacement, "label")
        if fixed_labels is not None:
            stages = [("dice_before", np.zeros_like(displacement))]
            if affine != "none":
                stages.append(("dice_affine", affine_displacement(matrix, *grid)))
            for key, field_ in stages:
                moved = warp_physical(moving_labels.array, moving_labels.affine, *grid, field_, "label")
                _dice_metrics(metrics, key, moved, fixed_labels)
            _dice_metrics(metrics, "dice", warped_labels, fixed_labels)
    if fixed_landmarks is not None and moving_landmarks is not None:
        metrics["tre_mm"] = landmark_tre(fixed_landmarks, moving_landmarks, matrix, displacement, fixed.affine)
    inverse_displacement = None
    if inverse:
        if stage_velocity is None:
            w = _network_inverse(bundle.model, m, f, result)[0].cpu()
        else:
            start_w = exponential(-stage_velocity, settings.integration_steps)
            w = invert_ddf(field_ddf, iterations=10, initial=start_w)[0].cpu()
        inverse_displacement = inverse_native_displacement(w, field_affine, matrix, moving.array.shape, moving.affine)
        inverse_displacement = np.asarray(inverse_displacement, dtype=np.float32)
    metrics["seconds_native"] = time.perf_counter() - tick
    metrics["seconds"] = time.perf_counter() - start
    return PairResult(
        warped=np.asarray(warped, dtype=np.float32),
        displacement=np.asarray(displacement, dtype=np.float32),
        warped_labels=warped_labels,
        affine=matrix,
        net_affine=net_affine,
        net_fixed=net_fixed,
        net_moving=net_moving,
        net_warped=result.warped[0, 0].detach().cpu().numpy(),
        net_ddf=net_ddf,
        metrics=metrics,
        inverse_displacement=inverse_displacement,
    )
