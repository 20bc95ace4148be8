"""Register two scans on their native grids: resample to the network grid, run the model, map back.

The geometry (network grid, resampling, the native physical displacement) is :mod:`monai_vmorph.io.spaces`;
this module only chains it with the model, ``--refine`` and the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.transforms import ScaleIntensityRangePercentiles

from monai_vmorph.cli.inputs import Scan
from monai_vmorph.cli.model import BundleModel
from monai_vmorph.engines.refine import refine_registration
from monai_vmorph.engines.refine_multilevel import REFINE_PRESETS, RefinePreset, refine_multilevel
from monai_vmorph.io import native_displacement, network_grid, resample, warp_physical
from monai_vmorph.metrics import folding_fraction, label_dice, sdlogj
from monai_vmorph.transforms import INTENSITY_PERCENTILES

__all__ = ["PairResult", "dice_per_label", "register_scans"]


@dataclass
class PairResult:
    """Everything a command may write or report about one registered pair.

    Attributes:
        warped: the moving image on the fixed image's native grid, float32 ``fixed_shape``.
        displacement: physical displacement (RAS mm) on the fixed grid, ``fixed_shape + (ndim,)``.
        warped_labels: the moving labels on the fixed grid (``None`` without labels), the labels' dtype.
        net_affine: the network grid's affine; ``net_fixed``/``net_moving``/``net_warped`` and ``net_ddf``
            (voxels, ``(ndim, *S_net)``) live on it.
        metrics: JSON-ready numbers (folding %, SDlogJ, Dice, losses, seconds).
    """

    warped: np.ndarray
    displacement: np.ndarray
    warped_labels: np.ndarray | None
    net_affine: np.ndarray
    net_fixed: np.ndarray
    net_moving: np.ndarray
    net_warped: np.ndarray
    net_ddf: np.ndarray
    metrics: dict = field(default_factory=dict)


def _normalise(array: np.ndarray) -> np.ndarray:
    """Percentiles to [0, 1], clipped: the bundles' ``registration_preprocessing`` intensity step."""
    lower, upper = INTENSITY_PERCENTILES
    scale = ScaleIntensityRangePercentiles(lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)
    return np.asarray(scale(torch.as_tensor(array[None], dtype=torch.float32))[0], dtype=np.float32)


def dice_per_label(warped_labels: np.ndarray, fixed_labels: np.ndarray) -> dict[str, float]:
    """Dice of every non-zero label of the fixed map (``NaN`` where a label is absent from both)."""
    labels = sorted(int(v) for v in np.unique(fixed_labels) if v != 0)
    scores = label_dice(torch.as_tensor(warped_labels)[None, None], torch.as_tensor(fixed_labels)[None, None], labels)
    return {str(label): float(score) for label, score in zip(labels, scores[0].tolist(), strict=True)}


def register_scans(
    fixed: Scan,
    moving: Scan,
    bundle: BundleModel,
    refine: int = 0,
    refine_lr: float = 0.05,
    moving_labels: Scan | None = None,
    fixed_labels: Scan | None = None,
    progress: Callable[[int, float], None] | None = None,
    refine_preset: str | RefinePreset | None = None,
) -> PairResult:
    """Register ``moving`` to ``fixed`` with ``bundle``'s model (and ``refine`` instance-optimisation steps).

    Both scans are resampled (linear) onto the network grid of the fixed scan, normalised like the training
    data, registered; the field is mapped back to the fixed scan's native grid as a physical displacement and
    the moving scan (and labels, ``"label"`` interpolation) warped from its own native grid in one resampling.
    ``refine_preset`` (a name in :data:`~monai_vmorph.engines.refine_multilevel.REFINE_PRESETS` or a
    :class:`~monai_vmorph.engines.refine_multilevel.RefinePreset`) runs coarse-to-fine refinement after the
    network (before ``refine`` fixed steps, if both are given); ``progress`` then gets the running step count.
    """
    start = time.perf_counter()
    device = next(bundle.model.parameters()).device
    shape, net_affine = network_grid(fixed.array.shape, fixed.affine, bundle.pixdim, bundle.spatial_size)
    net_fixed = resample(_normalise(fixed.array), fixed.affine, shape, net_affine)
    net_moving = resample(_normalise(moving.array), moving.affine, shape, net_affine)
    m = torch.as_tensor(net_moving, device=device)[None, None]
    f = torch.as_tensor(net_fixed, device=device)[None, None]
    metrics: dict = {}
    stage = time.perf_counter()
    with torch.no_grad():
        result = bundle.model(m, f)
        metrics["loss_network"] = float(bundle.loss(result, {"moving_image": m, "fixed_image": f}))
    metrics["seconds_network"] = time.perf_counter() - stage
    preset = REFINE_PRESETS[refine_preset] if isinstance(refine_preset, str) else refine_preset
    if preset is not None and preset.levels:
        done = [0]

        def on_step(level: int, step: int, loss: float) -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], loss)

        refined = refine_multilevel(
            bundle.model, m, f, bundle.loss, **preset.kwargs(), initial=result, callback=on_step
        )
        result = refined.result
        metrics["loss_refined"] = refined.levels[-1].final_loss
        metrics["refine_levels"] = [record._asdict() for record in refined.levels]
    if refine > 0:
        refined = refine_registration(
            bundle.model, m, f, bundle.loss, steps=refine, lr=refine_lr, initial=result, callback=progress
        )
        result = refined.result
        metrics["loss_refined"] = refined.losses[-1]
        metrics["refine_steps"] = refine
    ddf = result.ddf.detach().float()
    metrics["folding_percent"] = 100.0 * float(folding_fraction(ddf))
    metrics["sdlogj"] = float(sdlogj(ddf))
    net_ddf = ddf[0].cpu().numpy()
    displacement = native_displacement(net_ddf, net_affine, fixed.array.shape, fixed.affine)
    warped = warp_physical(moving.array, moving.affine, fixed.array.shape, fixed.affine, displacement, "linear")
    warped_labels = None
    if moving_labels is not None:
        warped_labels = warp_physical(
            moving_labels.array, moving_labels.affine, fixed.array.shape, fixed.affine, displacement, "label"
        )
        if fixed_labels is not None:
            identity = np.zeros_like(displacement)
            unwarped = warp_physical(
                moving_labels.array, moving_labels.affine, fixed.array.shape, fixed.affine, identity, "label"
            )
            metrics["dice_before"] = dice_per_label(unwarped, fixed_labels.array)
            metrics["dice"] = dice_per_label(warped_labels, fixed_labels.array)
            metrics["mean_dice_before"] = float(np.nanmean(list(metrics["dice_before"].values())))
            metrics["mean_dice"] = float(np.nanmean(list(metrics["dice"].values())))
    metrics["seconds"] = time.perf_counter() - start
    return PairResult(
        warped=np.asarray(warped, dtype=np.float32),
        displacement=np.asarray(displacement, dtype=np.float32),
        warped_labels=warped_labels,
        net_affine=net_affine,
        net_fixed=net_fixed,
        net_moving=net_moving,
        net_warped=result.warped[0, 0].detach().cpu().numpy(),
        net_ddf=net_ddf,
        metrics=metrics,
    )
