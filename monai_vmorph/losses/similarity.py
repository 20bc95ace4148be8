"""Image similarity losses for unsupervised registration: mean squared error and local NCC.

Both compare a warped moving image ``pred`` with the fixed image ``target``, two ``(B, C, *S)`` tensors with
``S = (H, W)`` or ``(D, H, W)``. Half-precision inputs are computed in float32 and the loss is returned in
the inputs' (promoted) dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

import torch
from torch import nn

from monai_vmorph.losses._box import box_sum, window_counts
from monai_vmorph.losses._checks import check_image_pair, check_nonnegative, compute_dtypes

__all__ = ["LocalNCCLoss", "MSELoss", "local_ncc", "mse"]


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all batch items, channels and voxels.

    Args:
        pred: ``(B, C, *S)`` warped moving image, floating point.
        target: ``(B, C, *S)`` fixed image, same shape as ``pred``.

    Returns:
        Scalar tensor ``mean((pred - target) ** 2)``.

    Raises:
        ValueError: on non-2D/3D or mismatched shapes, or an integer dtype.
    """
    check_image_pair(pred, target)
    compute, out = compute_dtypes(pred, target)
    return (pred.to(compute) - target.to(compute)).square().mean().to(out)


class MSELoss(nn.Module):
    """Module form of :func:`mse`: ``forward(pred, target)`` on ``(B, C, *S)`` tensors returns a scalar."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse(pred, target)


def _check_window(window: int | Sequence[int]) -> tuple[int, ...]:
    """Validate ``window`` (an odd int, or a sequence of odd ints); return it as a tuple."""
    raw = window.tolist() if hasattr(window, "tolist") else window  # tensors / numpy arrays
    values = (raw,) if isinstance(raw, Integral) else raw
    if (
        isinstance(raw, (str, bytes, bool))
        or not isinstance(values, Sequence)
        or len(values) == 0
        or not all(isinstance(w, Integral) and not isinstance(w, bool) and w >= 1 and w % 2 == 1 for w in values)
    ):
        raise ValueError(f"window must be an odd int >= 1 or a sequence of them (one per spatial dim), got {window!r}.")
    return tuple(int(w) for w in values)


def _expand_window(window: tuple[int, ...], spatial_dims: int) -> tuple[int, ...]:
    if len(window) == 1:
        return window * spatial_dims
    if len(window) != spatial_dims:
        raise ValueError(
            f"window must have one size per spatial dim ({spatial_dims} for these images), got {window!r}."
        )
    return window


def _local_cc_map(pred: torch.Tensor, target: torch.Tensor, window: tuple[int, ...], eps: float) -> torch.Tensor:
    """Per-voxel squared local correlation ``cc`` of :func:`local_ncc`, ``(B, C, *S)`` (no checks).

    The sums are taken of the inputs minus their per-(batch, channel) minima ``a`` and ``b``, which keeps the
    cancellations in ``I2_sum - I_sum**2 / N`` small for images far from zero (raw MR/CT intensities) and makes
    every sum exactly 0 in a flat background at the minimum (skull-stripped MR, air in CT), so rounding noise
    there cannot become loss gradient. (Centring on the mean instead turns such a background into a large
    constant whose float32 variance is noise.) With zero padding this is not a plain shift: writing ``S_*``
    for the box sums of the shifted images, ``m`` for
    the number of in-volume voxels in the window and ``r = 1 - m / N``, the definition's quantities are
    exactly::

        I_var = S_II - S_I**2 / N + r * a * (2 S_I + a m)
        J_var = S_JJ - S_J**2 / N + r * b * (2 S_J + b m)
        cross = S_IJ - S_I S_J / N + r * (b S_I + a S_J + a b m)

    where ``r = 0`` away from the borders. The result does not depend on ``a`` and ``b``, which are detached.
    The variances are clamped at 0 (they are non-negative in exact arithmetic), so the denominator is at least
    ``eps`` even where float32 rounding makes a flat window's variance slightly negative.
    """
    compute, _ = compute_dtypes(pred, target)
    i, j = pred.to(compute), target.to(compute)
    spatial = tuple(range(2, i.dim()))
    a = i.detach().amin(dim=spatial, keepdim=True)
    b = j.detach().amin(dim=spatial, keepdim=True)
    i, j = i - a, j - b
    sums = box_sum(torch.cat([i, j, i * i, j * j, i * j]), window)
    s_i, s_j, s_ii, s_jj, s_ij = sums.chunk(5)
    n = float(math.prod(window))
    m = window_counts(i.shape[2:], window, i.device, compute)
    r = 1.0 - m / n
    # variances are >= 0; rounding can push them below 0 in flat windows (e.g. the background), which would
    # let the denominator reach 0 and the loss and its gradient explode during training: clamp at 0
    i_var = (s_ii - s_i * s_i / n + r * a * (2.0 * s_i + a * m)).clamp_min(0.0)
    j_var = (s_jj - s_j * s_j / n + r * b * (2.0 * s_j + b * m)).clamp_min(0.0)
    cross = s_ij - s_i * s_j / n + r * (b * s_i + a * s_j + a * b * m)
    return cross * cross / (i_var * j_var + eps)


def local_ncc(
    pred: torch.Tensor, target: torch.Tensor, window: int | Sequence[int] = 9, eps: float = 1e-5
) -> torch.Tensor:
    """VoxelMorph's local (squared) normalised cross-correlation loss; ``-1`` for a perfect local match.

    Around every voxel, with ``N = prod(window)`` and window sums over a zero-padded image (the window
    reaches outside the volume at the borders)::

        cross = IJ_sum - I_sum * J_sum / N
        I_var = I2_sum - I_sum**2 / N,    J_var = J2_sum - J_sum**2 / N
        cc = cross * cross / (I_var * J_var + eps)

    and the loss is ``-mean(cc)`` over batch, channels and voxels (multi-channel images: per channel, then
    averaged). ``cc`` is invariant to ``I -> s * I`` up to the ``eps`` term, and to ``I -> I + t`` only where
    the window lies inside the volume: the zero padding is not shifted. Flat windows give ``cc = 0``.

    Implementation: the five window sums run as one batched separable box filter (see
    :mod:`monai_vmorph.losses._box`) on inputs shifted by their minimum, in at least float32, an exact rewrite of the
    formula above that avoids the float32 cancellation of ``I2_sum - I_sum**2 / N`` for intensities far
    from 0.

    Args:
        pred: ``(B, C, *S)`` warped moving image, floating point.
        target: ``(B, C, *S)`` fixed image, same shape as ``pred``.
        window: odd window size, one int for all axes or one per spatial axis (VoxelMorph uses 9).
        eps: added to the denominator ``I_var * J_var``.

    Returns:
        Scalar tensor in about ``[-1, 0]``, in the promoted dtype of ``pred`` and ``target``.

    Raises:
        ValueError: on non-2D/3D or mismatched shapes, an integer dtype, an even/non-positive window or one
            of the wrong length, or a negative ``eps``.
    """
    ndim = check_image_pair(pred, target)
    window = _expand_window(_check_window(window), ndim)
    eps = check_nonnegative(eps, "eps")
    _, out = compute_dtypes(pred, target)
    return _local_cc_map(pred, target, window, eps).mean().neg().to(out)


class LocalNCCLoss(nn.Module):
    """Module form of :func:`local_ncc`.

    Args:
        window: odd window size, one int for all axes or one per spatial axis.
        eps: added to the denominator ``I_var * J_var``.
    """

    def __init__(self, window: int | Sequence[int] = 9, eps: float = 1e-5) -> None:
        super().__init__()
        self.window = _check_window(window)
        self.eps = check_nonnegative(eps, "eps")

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target``: ``(B, C, *S)``; returns the scalar loss."""
        return local_ncc(pred, target, self.window, self.eps)

    def extra_repr(self) -> str:
        return f"window={self.window}, eps={self.eps}"
