"""Per-label overlap metrics (Dice, 95th percentile Hausdorff distance) on integer label maps, via MONAI.

Registration is evaluated by warping the moving segmentation with ``mode="nearest"`` and comparing it
with the fixed segmentation label by label. The maps hold label values (not one-hot); the labels to score
are listed explicitly, so sparse atlases (e.g. FreeSurfer/AAL values such as ``2001, 2002``) work and the
background (``0``) is scored only if listed.

Absent labels follow MONAI's convention and give NaN, so that ``torch.nanmean`` averages over the labels
that can be scored:

================================  ===========================  =====================================
label present in                  :func:`label_dice`           :func:`label_hd95`
================================  ===========================  =====================================
both maps                         Dice in ``[0, 1]``           HD95 (mm with ``spacing``, else voxels)
``target`` only                   0                            NaN
``pred`` only                     NaN (0 if not ignore_empty)  NaN
neither                           NaN (1 if not ignore_empty)  NaN
================================  ===========================  =====================================
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from monai_vmorph.metrics._checks import check_label_map, check_spacing
from monai_vmorph.validation import check_label_values, check_same_shape

__all__ = ["label_dice", "label_hd95"]

# Labels one-hot encoded at a time: bounds memory to (B, _LABEL_CHUNK, *S) booleans for large atlases.
_LABEL_CHUNK = 16


def _check_inputs(pred: torch.Tensor, target: torch.Tensor, labels: Sequence[int]) -> tuple[int, list[int]]:
    """Validate a pair of label maps and the label list; return ``(ndim, labels)``."""
    ndim = check_label_map(pred, "pred")
    check_label_map(target, "target")
    check_same_shape(pred, target, "pred", "target")
    return ndim, check_label_values(labels)


def _one_hot_chunks(
    pred: torch.Tensor, target: torch.Tensor, labels: list[int]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield boolean one-hot maps ``(B, l, *S)`` of ``pred`` and ``target`` for chunks of ``labels``."""
    ndim = pred.dim() - 2
    for start in range(0, len(labels), _LABEL_CHUNK):
        chunk = labels[start : start + _LABEL_CHUNK]
        # int64 values: type promotion compares in a dtype that holds both (no uint8/bool wrap-around)
        values = torch.tensor(chunk, dtype=torch.int64, device=pred.device).reshape(1, len(chunk), *([1] * ndim))
        yield pred == values, target == values


def label_dice(
    pred: torch.Tensor, target: torch.Tensor, labels: Sequence[int], ignore_empty: bool = True
) -> torch.Tensor:
    """Dice overlap ``2 |P ∩ T| / (|P| + |T|)`` per label, with :func:`monai.metrics.compute_dice`.

    Args:
        pred: predicted (e.g. warped moving) label map of shape ``(B, 1, *S)``, 2 or 3 spatial dims, integer
            dtype or floating point with integral values.
        target: reference (fixed) label map of the same shape.
        labels: the ``L`` distinct label values to score, in output order.
        ignore_empty: MONAI's option for labels absent from ``target``: ``True`` gives NaN, ``False`` gives
            1 if the label is also absent from ``pred`` and 0 otherwise.

    Returns:
        Float32 tensor of shape ``(B, L)``; see the module docstring for absent labels.

    Raises:
        ValueError: if a map is not ``(B, 1, H, W)`` / ``(B, 1, D, H, W)``, holds non-integral values, the
            shapes differ, or ``labels`` is empty, non-integral or has duplicates.
    """
    _, label_list = _check_inputs(pred, target, labels)
    scores = [
        compute_dice(p, t, include_background=True, ignore_empty=ignore_empty)
        for p, t in _one_hot_chunks(pred, target, label_list)
    ]
    return torch.cat(scores, dim=1).float()


def label_hd95(
    pred: torch.Tensor,
    target: torch.Tensor,
    labels: Sequence[int],
    spacing: Sequence[float] | None = None,
) -> torch.Tensor:
    """Symmetric 95th percentile Hausdorff distance per label, with MONAI's ``compute_hausdorff_distance``.

    MONAI takes the boundary voxels of each mask, the Euclidean distance of every boundary voxel of one
    mask to the nearest boundary voxel of the other, and returns the larger of the two directed 95th
    percentiles. Identical masks give 0.

    Args:
        pred: predicted (e.g. warped moving) label map of shape ``(B, 1, *S)``, 2 or 3 spatial dims, integer
            dtype or floating point with integral values.
        target: reference (fixed) label map of the same shape.
        labels: the ``L`` distinct label values to score, in output order.
        spacing: voxel spacing in mm per array axis (``ndim`` floats); distances are then in mm. ``None``
            measures in voxels.

    Returns:
        Float32 tensor of shape ``(B, L)``; NaN where a label is absent from ``pred`` or ``target``.

    Raises:
        ValueError: as :func:`label_dice`, or if ``spacing`` does not hold ``ndim`` positive values.
    """
    ndim, label_list = _check_inputs(pred, target, labels)
    spacing = check_spacing(spacing, ndim)
    scores = []
    for p, t in _one_hot_chunks(pred, target, label_list):
        with warnings.catch_warnings():
            # MONAI warns per empty mask naming the channel index, not the label value; the resulting NaN
            # is documented above. It also trips over its own deprecated `always_return_as_numpy` argument.
            warnings.filterwarnings("ignore", message=r"the (ground truth|prediction) of class", category=UserWarning)
            warnings.filterwarnings("ignore", message=r".*always_return_as_numpy", category=FutureWarning)
            hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=spacing)
        # One empty mask gives NaN in MONAI 1.6 but inf in older releases: make it NaN either way.
        present = p.flatten(2).any(dim=2) & t.flatten(2).any(dim=2)
        scores.append(hd.float().masked_fill(~present, float("nan")))
    return torch.cat(scores, dim=1)
