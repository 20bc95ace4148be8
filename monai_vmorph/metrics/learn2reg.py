"""The Learn2Reg challenge's own metric definitions, for numbers that compare with its leaderboards.

Learn2Reg evaluates a submitted displacement field ``disp`` of shape ``(*S_fixed, ndim)``: ``disp[x]`` is the
displacement in voxels of the moving image's index space, so fixed voxel ``x`` takes the moving label at index
``x + disp[x]``. Its evaluation script (``evaluation/evaluation.py`` and ``utils.py`` of the MDL-UzL/L2R repository)
defines, and this module reproduces:

* **Label warping**: nearest neighbour, ``scipy.ndimage.map_coordinates(moving, x + disp, order=0)``: the
  label at ``round(x + disp)`` (halves up) where ``x + disp`` lies in ``[0, n - 1]`` on every axis, else 0 (no
  half-voxel border, unlike :mod:`monai_vmorph.io.spaces`'s ITK rule). This package's own
  :func:`~monai_vmorph.metrics.label_dice` is usually applied to labels warped by a per-label vote
  (:func:`monai_vmorph.io.warp_physical` ``"label"``), which gives slightly different numbers.
* **Dice** per label: ``2 |F ∩ W| / (|F| + |W|)``; NaN when the label is absent from the fixed or the moving map;
  the mean ignores NaNs.
* **HD95** per label: the robust Hausdorff distance of DeepMind's ``surface-distance`` package, which Learn2Reg
  calls with unit spacing (voxels). Surface elements are the 2x2(x2) blocks of the zero-padded masks that are
  neither all in nor all out; each carries the area (3D) or length (2D) of the marching-cubes surface through its
  block (MONAI's port of the same table, :func:`monai.metrics.utils.get_code_to_measure_table`); the distance of a
  surface element is the Euclidean distance from its block to the nearest surface block of the other mask. The
  directed 95th percentile is area-weighted (the first sorted element whose cumulative area fraction reaches
  0.95); HD95 is the larger of the two directions. NaN when the label is absent from the fixed or the moving
  map, ``inf`` when the warped map lost it.
* **TRE** of keypoints (``compute_tre`` of its ``utils.py``): each fixed keypoint ``k`` (voxel indices) moves to
  ``k + disp(k)``, ``disp`` interpolated by ``map_coordinates`` with SciPy's default order (3, a cubic spline); the
  error is ``|(k + disp(k) - m) * spacing_moving|`` with ``m`` the moving keypoint, in mm.
* **SDlogJ**: :func:`~monai_vmorph.metrics.sdlogj` with its defaults, which are Learn2Reg's (``log(det J + 3)``,
  central differences, 2 border voxels cropped).

Learn2Reg also reports a folding count, ``(clip(det J + 3, 1e-9, 1e9) <= 0).sum()``, which is always 0 and is
not reproduced; use :func:`~monai_vmorph.metrics.folding_fraction` for folds.

Inputs are NumPy arrays (Learn2Reg's own types); the functions are pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics.utils import get_code_to_measure_table
from scipy.ndimage import distance_transform_edt, map_coordinates

from monai_vmorph.metrics.jacobian import sdlogj

__all__ = [
    "learn2reg_dice",
    "learn2reg_hd95",
    "learn2reg_sdlogj",
    "learn2reg_tre",
    "learn2reg_warp_labels",
    "robust_hausdorff",
    "surface_distances",
]


def _check_disp(disp: np.ndarray) -> np.ndarray:
    disp = np.asarray(disp)
    if disp.ndim not in (3, 4) or disp.shape[-1] != disp.ndim - 1 or not np.issubdtype(disp.dtype, np.floating):
        raise ValueError(
            f"disp must be a float Learn2Reg field of shape (*S, ndim) with ndim 2 or 3, got {disp.dtype} {disp.shape}."
        )
    return disp


def learn2reg_warp_labels(moving_labels: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Warp a label map as Learn2Reg does: nearest neighbour at ``x + disp[x]``, zero outside ``[0, n - 1]``.

    Args:
        moving_labels: the moving label map ``S_moving`` (2 or 3 axes).
        disp: Learn2Reg field ``(*S_fixed, ndim)`` in moving voxels (float16 is read as float32, as Learn2Reg does).

    Returns:
        The warped labels on the fixed grid, ``S_fixed``, in ``moving_labels``'s dtype.
    """
    disp = _check_disp(disp)
    moving_labels = np.asarray(moving_labels)
    if moving_labels.ndim != disp.shape[-1]:
        raise ValueError(f"moving_labels has {moving_labels.ndim} axes but disp is a {disp.shape[-1]}D field.")
    if disp.dtype == np.float16:
        disp = disp.astype(np.float32)
    identity = np.stack(np.meshgrid(*(np.arange(n) for n in disp.shape[:-1]), indexing="ij"))
    return map_coordinates(moving_labels, identity + np.moveaxis(disp, -1, 0), order=0)


def _check_maps(fixed: np.ndarray, moving: np.ndarray, warped: np.ndarray) -> tuple[np.ndarray, ...]:
    fixed, moving, warped = (np.asarray(a) for a in (fixed, moving, warped))
    if fixed.shape != warped.shape:
        raise ValueError(f"fixed labels {fixed.shape} and warped labels {warped.shape} must have one shape.")
    if fixed.ndim not in (2, 3) or moving.ndim != fixed.ndim:
        raise ValueError(f"label maps must all be 2D or all 3D, got {fixed.shape}, {moving.shape}.")
    return fixed, moving, warped


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def learn2reg_dice(
    fixed: np.ndarray, moving: np.ndarray, warped: np.ndarray, labels: Sequence[int]
) -> tuple[float, list[float]]:
    """Learn2Reg's Dice of ``warped`` (the moving labels warped onto the fixed grid) against ``fixed``.

    Args:
        fixed: fixed label map ``S_fixed``.
        moving: moving label map before warping (only decides which labels are scored).
        warped: warped moving labels ``S_fixed`` (:func:`learn2reg_warp_labels`).
        labels: the label values to score, in output order.

    Returns:
        ``(mean, per_label)``: NaN for a label absent from ``fixed`` or ``moving``; the mean ignores NaN.
    """
    fixed, moving, warped = _check_maps(fixed, moving, warped)
    scores = []
    for label in labels:
        f, w = fixed == label, warped == label
        if not f.any() or not (moving == label).any():
            scores.append(float("nan"))
        else:
            scores.append(float(2.0 * np.count_nonzero(f & w) / (np.count_nonzero(f) + np.count_nonzero(w))))
    return _mean(scores), scores


def _surface(mask: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Border blocks (bool) and their areas of a mask padded by one zero voxel on every side."""
    ndim = mask.ndim
    padded = np.pad(mask.astype(np.int64), 1)
    code = np.zeros(tuple(n - 1 for n in padded.shape), np.int64)
    # bit of a corner: the first axis's lower corner is the most significant (MONAI's / DeepMind's kernel)
    for bit, corner in enumerate(np.ndindex(*([2] * ndim))):
        weight = 1 << (2**ndim - 1 - bit)
        code += weight * padded[tuple(slice(c, c + n - 1) for c, n in zip(corner, padded.shape, strict=True))]
    border = (code != 0) & (code != 2 ** (2**ndim) - 1)
    return border, table[code]


def surface_distances(
    mask_a: np.ndarray, mask_b: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Surface elements of two masks with their areas and distances to the other surface (DeepMind's definition).

    Args:
        mask_a, mask_b: boolean masks of one shape, 2 or 3 axes.
        spacing: voxel size per axis (default 1: voxels, as Learn2Reg uses it).

    Returns:
        ``(dist_a_to_b, area_a, dist_b_to_a, area_b)``, each sorted by distance (then area). Distances are
        ``inf`` when the other mask is empty; all four are empty when both masks are.
    """
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape or a.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D arrays of one shape, got {a.shape} and {b.shape}.")
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * a.ndim))
    if len(spacing) != a.ndim or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must hold {a.ndim} positive values, got {spacing}.")
    empty = np.zeros(0)
    union = a | b
    if not union.any():
        return empty, empty, empty, empty
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(union))
    table = np.asarray(get_code_to_measure_table(spacing)[0].cpu().numpy(), dtype=np.float64)
    border_a, area_a = _surface(a[box], table)
    border_b, area_b = _surface(b[box], table)

    def distance_to(border: np.ndarray) -> np.ndarray:
        if not border.any():
            return np.full(border.shape, np.inf)
        return distance_transform_edt(~border, sampling=spacing)

    out = []
    for source, areas, target in ((border_a, area_a, border_b), (border_b, area_b, border_a)):
        d, w = distance_to(target)[source], areas[source]
        order = np.lexsort((w, d))
        out += [d[order], w[order]]
    return out[0], out[1], out[2], out[3]


def robust_hausdorff(
    dist_a_to_b: np.ndarray, area_a: np.ndarray, dist_b_to_a: np.ndarray, area_b: np.ndarray, percent: float = 95.0
) -> float:
    """Area-weighted ``percent`` percentile Hausdorff distance from :func:`surface_distances`'s output.

    In each direction: the first distance (in sorted order) whose cumulative area fraction reaches
    ``percent / 100`` (``inf`` for an empty surface); the result is the larger direction.
    """

    def directed(d: np.ndarray, w: np.ndarray) -> float:
        if d.size == 0:
            return float("inf")
        index = int(np.searchsorted(np.cumsum(w) / np.sum(w), percent / 100.0))
        return float(d[min(index, d.size - 1)])

    return max(directed(dist_a_to_b, area_a), directed(dist_b_to_a, area_b))


def learn2reg_hd95(
    fixed: np.ndarray,
    moving: np.ndarray,
    warped: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float] | None = None,
) -> tuple[float, list[float]]:
    """Learn2Reg's HD95 per label of ``warped`` against ``fixed`` (see the module docstring).

    Args:
        fixed, moving, warped: as :func:`learn2reg_dice`.
        labels: the label values to score.
        spacing: voxel size; ``None`` (Learn2Reg's choice) measures in voxels.

    Returns:
        ``(mean, per_label)``: NaN for a label absent from ``fixed`` or ``moving``, ``inf`` where ``warped`` lost
        it; the mean ignores NaN.
    """
    fixed, moving, warped = _check_maps(fixed, moving, warped)
    scores = []
    for label in labels:
        f = fixed == label
        if not f.any() or not (moving == label).any():
            scores.append(float("nan"))
        else:
            scores.append(robust_hausdorff(*surface_distances(f, warped == label, spacing), percent=95.0))
    return _mean(scores), scores


def learn2reg_sdlogj(disp: np.ndarray) -> float:
    """Learn2Reg's ``LogJacDetStd`` of a Learn2Reg field ``(*S, ndim)`` in voxels (:func:`~.jacobian.sdlogj`).

    Computed in float64 from the field as given (a float16 submission is scored as float16 values).
    """
    disp = _check_disp(disp)
    field = torch.as_tensor(np.ascontiguousarray(np.moveaxis(disp.astype(np.float64), -1, 0)))[None]
    return float(sdlogj(field)[0])


def learn2reg_tre(
    fixed_keypoints: np.ndarray, moving_keypoints: np.ndarray, disp: np.ndarray, moving_spacing: Sequence[float]
) -> np.ndarray:
    """Learn2Reg's target registration error of each keypoint pair (module docstring), in mm.

    Args:
        fixed_keypoints: ``(N, ndim)`` voxel indices of the fixed image (Learn2Reg's keypoint CSV).
        moving_keypoints: ``(N, ndim)`` voxel indices of the moving image, row ``n`` matching row ``n``.
        disp: Learn2Reg field ``(*S_fixed, ndim)`` in moving voxels.
        moving_spacing: the moving image's voxel size per axis (mm).

    Returns:
        ``(N,)`` distances.
    """
    disp = _check_disp(disp).astype(np.float64)
    fixed_keypoints = np.asarray(fixed_keypoints, dtype=np.float64)
    moving_keypoints = np.asarray(moving_keypoints, dtype=np.float64)
    ndim = disp.shape[-1]
    if fixed_keypoints.shape != moving_keypoints.shape or fixed_keypoints.shape[1:] != (ndim,):
        raise ValueError(
            f"keypoints must be two (N, {ndim}) arrays of one shape, got {fixed_keypoints.shape} and "
            f"{moving_keypoints.shape}."
        )
    moved = np.stack([map_coordinates(disp[..., k], fixed_keypoints.T) for k in range(ndim)], axis=-1)
    return np.linalg.norm((fixed_keypoints + moved - moving_keypoints) * np.asarray(moving_spacing), axis=1)
