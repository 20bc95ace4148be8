"""Soft Dice loss for label-supervised (semi-supervised) registration, and one-hot encoding of label maps.

:func:`soft_dice_loss` equals MONAI's ``monai.losses.DiceLoss(include_background=..., smooth_nr=0,
smooth_dr=eps)`` on one-hot / probabilistic inputs (no activation, ``reduction="mean"``). We keep our own
because it is a pure function with the package's input checks, and because :func:`one_hot_labels` encodes
maps whose label values are sparse (atlas labels such as AAL's 2001, 2002, …) from an explicit list of
values, where ``DiceLoss(to_onehot_y=True)`` needs labels ``0 .. L-1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.utils import one_hot
from torch import nn

from monai_vmorph.losses._checks import check_image_pair, check_nonnegative, compute_dtypes
from monai_vmorph.validation import check_label_values, check_spatial_tensor

__all__ = ["DiceLoss", "one_hot_labels", "soft_dice_loss"]


def soft_dice_loss(
    pred: torch.Tensor, target: torch.Tensor, include_background: bool = True, eps: float = 1e-5
) -> torch.Tensor:
    """One minus the mean soft Dice overlap of two one-hot / probabilistic label maps.

    For every batch item ``b`` and kept label ``l``, with sums over the voxels::

        dice[b, l] = 2 * sum(pred * target) / (sum(pred) + sum(target) + eps)

    and the loss is ``1 - mean(dice)`` over batch items and kept labels. A label absent from both maps
    scores ``dice = 0`` (it still counts in the mean), as in MONAI's ``DiceLoss(smooth_nr=0)``.

    Args:
        pred: ``(B, L, *S)`` warped moving label map (one-hot or probabilities), floating point.
        target: ``(B, L, *S)`` fixed label map, same shape as ``pred``.
        include_background: keep channel 0; ``False`` drops it (needs ``L >= 2``).
        eps: added to the denominator.

    Returns:
        Scalar tensor in ``[0, 1]`` for inputs in ``[0, 1]``, in the promoted dtype of the inputs.

    Raises:
        ValueError: on non-2D/3D or mismatched shapes, an integer dtype (one-hot encode label maps with
            :func:`one_hot_labels`), a negative ``eps``, or no label left after dropping the background.
    """
    check_image_pair(pred, target)
    eps = check_nonnegative(eps, "eps")
    if not include_background:
        if pred.shape[1] < 2:
            raise ValueError(
                f"include_background=False needs at least 2 label channels, got shape {tuple(pred.shape)}."
            )
        pred, target = pred[:, 1:], target[:, 1:]
    compute, out = compute_dtypes(pred, target)
    p, t = pred.to(compute), target.to(compute)
    spatial = tuple(range(2, p.dim()))
    intersection = (p * t).sum(dim=spatial)
    dice = 2.0 * intersection / (p.sum(dim=spatial) + t.sum(dim=spatial) + eps)
    return (1.0 - dice.mean()).to(out)


class DiceLoss(nn.Module):
    """Module form of :func:`soft_dice_loss`.

    Args:
        include_background: keep label channel 0.
        eps: added to the denominator.
    """

    def __init__(self, include_background: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.include_background = bool(include_background)
        self.eps = check_nonnegative(eps, "eps")

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target``: ``(B, L, *S)``; returns the scalar loss."""
        return soft_dice_loss(pred, target, self.include_background, self.eps)

    def extra_repr(self) -> str:
        return f"include_background={self.include_background}, eps={self.eps}"


def one_hot_labels(label_map: torch.Tensor, labels: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot encode a label map against an explicit list of label values.

    Channel ``i`` of the result is 1 where ``label_map == labels[i]``; voxels whose value is not listed
    (e.g. unlabelled structures) are 0 in every channel. When ``labels`` is ``[0, 1, ..., L-1]``, the map is
    an integer tensor and all its values lie in that range, :func:`monai.networks.utils.one_hot` does the
    encoding; otherwise each value is compared in turn (exact comparison, so floating-point maps must hold
    whole numbers, e.g. after ``mode="nearest"`` warping).

    Args:
        label_map: ``(B, 1, *S)`` label map, integer or floating point.
        labels: the label values to encode, e.g. ``[0, 2001, 2002]``; their order gives the channel order.
        dtype: floating-point dtype of the result.

    Returns:
        ``(B, len(labels), *S)`` one-hot tensor of ``dtype``.

    Raises:
        ValueError: on a map that is not ``(B, 1, *S)`` with 2 or 3 spatial dims, or empty/repeated/
            non-integer ``labels``.
    """
    check_spatial_tensor(label_map, "label_map")
    if label_map.shape[1] != 1:
        raise ValueError(
            f"label_map must have one channel, shape (B, 1, *spatial), got shape {tuple(label_map.shape)}."
        )
    if label_map.is_complex():
        raise ValueError(f"label_map must be an integer or real tensor, got dtype {label_map.dtype}.")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}.")
    values = check_label_values(labels)
    n = len(values)
    if (
        values == list(range(n))
        and not label_map.is_floating_point()
        and label_map.dtype != torch.bool
        and bool(((label_map >= 0) & (label_map < n)).all())
    ):
        return one_hot(label_map, num_classes=n, dtype=dtype, dim=1)
    label_values = torch.as_tensor(values, device=label_map.device).view(1, n, *([1] * (label_map.dim() - 2)))
    return (label_map == label_values).to(dtype)
