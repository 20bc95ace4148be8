"""Argument checks shared by the losses, on top of :mod:`monai_vmorph.validation` (tensor checks)."""

from __future__ import annotations

import math
from numbers import Real

import torch

from monai_vmorph.validation import check_floating, check_same_shape, check_spatial_tensor

__all__ = ["check_image_pair", "check_nonnegative", "compute_dtypes"]


def check_image_pair(pred: torch.Tensor, target: torch.Tensor) -> int:
    """Check two floating-point ``(B, C, *S)`` tensors of one shape (2 or 3 spatial dims).

    Returns:
        The number of spatial dimensions.
    """
    ndim = check_spatial_tensor(pred, "pred")
    check_spatial_tensor(target, "target")
    check_same_shape(pred, target, "pred", "target")
    check_floating(pred, "pred")
    check_floating(target, "target")
    return ndim


def check_nonnegative(value: float, name: str) -> float:
    """Check that ``value`` is a finite real number >= 0 (not a bool); return it as a float."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def compute_dtypes(*tensors: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    """``(compute dtype, output dtype)``: the inputs' promoted dtype, raised to at least float32 for compute.

    Half-precision inputs are summed in float32 (sums over a volume overflow or lose precision in float16 /
    bfloat16) and the loss is cast back to the inputs' dtype.
    """
    out = tensors[0].dtype
    for t in tensors[1:]:
        out = torch.promote_types(out, t.dtype)
    return torch.promote_types(out, torch.float32), out
