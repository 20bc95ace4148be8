"""Image similarity losses for unsupervised registration: mean squared error and local NCC.

Both compare a warped moving image ``pred`` with the fixed image ``target``, two ``(B, C, *S)`` tensors with
``S = (H, W)`` or ``(D, H, W)``. Half-precision inputs are computed in float32 and the loss is returned in
the inputs' (promoted) dtype. :func:`ncc_target_statistics` and :func:`local_ncc_to_target` compute the same
local NCC with the fixed image's share precomputed and an analytic gradient, for instance optimisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import NamedTuple

import torch
from torch import nn

from monai_vmorph.losses._box import box_sum, window_counts
from monai_vmorph.losses._checks import check_image_pair, check_nonnegative, compute_dtypes

__all__ = [
    "LocalNCCLoss",
    "MSELoss",
    "NCCTargetStatistics",
    "local_ncc",
    "local_ncc_to_target",
    "mse",
    "ncc_target_statistics",
]


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


class NCCTargetStatistics(NamedTuple):
    """The fixed image's share of :func:`local_ncc`, computed once by :func:`ncc_target_statistics`.

    Attributes:
        target: ``(B, C, *S)`` the fixed image minus its per-(batch, channel) minimum ``b``, compute dtype.
        offset: ``(B, C, 1, ...)`` that minimum ``b``.
        target_sum: box sums ``S_J`` of ``target``.
        target_var: ``J_var`` (clamped at 0).
        counts: ``(1, 1, *S)`` in-volume voxels per window ``m``.
        window: the window, one odd size per spatial axis.
        eps: the denominator's ``eps``.
        dtype: the loss's output dtype (the fixed image's).
    """

    target: torch.Tensor
    offset: torch.Tensor
    target_sum: torch.Tensor
    target_var: torch.Tensor
    counts: torch.Tensor
    window: tuple[int, ...]
    eps: float
    dtype: torch.dtype


def ncc_target_statistics(
    target: torch.Tensor, window: int | Sequence[int] = 9, eps: float = 1e-5
) -> NCCTargetStatistics:
    """Precompute the fixed image's window statistics of :func:`local_ncc` for :func:`local_ncc_to_target`.

    Instance optimisation evaluates the loss against one fixed image hundreds of times; its box sums
    (``S_J``, ``S_JJ``) and variance do not change, so they are computed once here.

    Args:
        target: ``(B, C, *S)`` fixed image, floating point (2 or 3 spatial dims).
        window: odd window size, one int for all axes or one per spatial axis.
        eps: added to the denominator ``I_var * J_var``.

    Returns:
        :class:`NCCTargetStatistics` (detached: the target gets no gradient).

    Raises:
        ValueError: as :func:`local_ncc`.
    """
    ndim = check_image_pair(target, target)
    window = _expand_window(_check_window(window), ndim)
    eps = check_nonnegative(eps, "eps")
    compute, out = compute_dtypes(target)
    with torch.no_grad():
        j = target.detach().to(compute)
        b = j.amin(dim=tuple(range(2, j.dim())), keepdim=True)
        j = j - b
        s_j, s_jj = box_sum(torch.cat([j, j * j]), window).chunk(2)
        n = float(math.prod(window))
        m = window_counts(j.shape[2:], window, j.device, compute)
        r = 1.0 - m / n
        j_var = (s_jj - s_j * s_j / n + r * b * (2.0 * s_j + b * m)).clamp_min(0.0)
    return NCCTargetStatistics(j, b, s_j, j_var, m, window, eps, out)


class _LocalNCCToTarget(torch.autograd.Function):
    """``-mean(cc)`` of :func:`local_ncc` against precomputed target statistics, with an analytic backward.

    With ``D = I_var J_var + eps``: ``dcc/dcross = 2 cross / D`` and ``dcc/dI_var = -cross^2 J_var / D^2``
    (0 where ``I_var`` was clamped); the chain rule through ``I_var`` and ``cross`` gives per-voxel
    coefficients ``g_I, g_II, g_IJ`` of the sums ``S_I, S_II, S_IJ``, and as the zero-padded box sum is its own
    adjoint, ``dL/dI = B(g_I) + 2 I B(g_II) + J B(g_IJ)``: three box sums forward and three backward, where
    autograd through :func:`local_ncc` runs five and five plus every intermediate's backward.
    """

    @staticmethod
    def forward(ctx, pred: torch.Tensor, stats: NCCTargetStatistics) -> torch.Tensor:  # type: ignore[override]
        window, j, b = stats.window, stats.target, stats.offset
        i = pred.detach().to(j.dtype)
        a = i.amin(dim=tuple(range(2, i.dim())), keepdim=True)
        i = i - a
        s_i, s_ii, s_ij = box_sum(torch.cat([i, i * i, i * j]), window).chunk(3)
        n = float(math.prod(window))
        m, s_j, j_var = stats.counts, stats.target_sum, stats.target_var
        r = 1.0 - m / n
        i_var_raw = s_ii - s_i * s_i / n + r * a * (2.0 * s_i + a * m)
        i_var = i_var_raw.clamp_min(0.0)
        cross = s_ij - s_i * s_j / n + r * (b * s_i + a * s_j + a * b * m)
        denominator = i_var * j_var + stats.eps
        cc = cross * cross / denominator
        ctx.save_for_backward(i, a, s_i, i_var_raw, cross, denominator)
        ctx.stats = stats
        ctx.pred_dtype = pred.dtype
        return cc.mean().neg()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        i, a, s_i, i_var_raw, cross, denominator = ctx.saved_tensors
        stats = ctx.stats
        j, b, s_j, j_var, m = stats.target, stats.offset, stats.target_sum, stats.target_var, stats.counts
        n = float(math.prod(stats.window))
        r = 1.0 - m / n
        scale = -grad.to(i.dtype) / cross.numel()
        g_cross = (2.0 * scale) * cross / denominator
        g_var = torch.where(i_var_raw > 0, -scale * cross * cross * j_var / (denominator * denominator), 0.0)
        g_i = g_var * (-2.0 / n * s_i + 2.0 * r * a) + g_cross * (r * b - s_j / n)
        sums = box_sum(torch.cat([g_i, g_var, g_cross]), stats.window)
        b_i, b_ii, b_ij = sums.chunk(3)
        out = b_i + 2.0 * i * b_ii + j * b_ij
        return out.to(ctx.pred_dtype), None


def local_ncc_to_target(pred: torch.Tensor, stats: NCCTargetStatistics) -> torch.Tensor:
    """:func:`local_ncc` of ``pred`` against the fixed image summarised by ``stats`` (same value, faster).

    Args:
        pred: ``(B, C, *S)`` warped moving image, the shape of the statistics' target.
        stats: from :func:`ncc_target_statistics`.

    Returns:
        Scalar loss in ``stats.dtype`` promoted with ``pred``'s dtype; differentiable with respect to ``pred``.

    Raises:
        ValueError: when ``pred`` does not have the target's shape, or is not floating point.
    """
    check_image_pair(pred, stats.target)
    out = torch.promote_types(pred.dtype, stats.dtype)
    return _LocalNCCToTarget.apply(pred, stats).to(out)
