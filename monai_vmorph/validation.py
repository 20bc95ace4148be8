"""Input checks shared by the networks, losses and metrics.

Every check raises :class:`ValueError` with one sentence that names the value received and what was
expected, so a user mistake (a swapped argument, a label map passed as ``int64``, a 4D volume) is
reported at the public entry point instead of deep inside ``grid_sample`` or a convolution.

The checks only read tensor metadata, except :func:`check_finite`, which reduces over the data once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "SUPPORTED_SPATIAL_DIMS",
    "check_field",
    "check_finite",
    "check_floating",
    "check_label_values",
    "check_same_shape",
    "check_spatial_tensor",
]

SUPPORTED_SPATIAL_DIMS = (2, 3)


def check_spatial_tensor(x: torch.Tensor, name: str, spatial_dims: int | None = None) -> int:
    """Check that ``x`` is a ``(B, C, *spatial)`` tensor with 2 or 3 spatial dimensions.

    Args:
        x: the tensor to check.
        name: the argument name used in the error message.
        spatial_dims: if given, the number of spatial dimensions ``x`` must have.

    Returns:
        The number of spatial dimensions of ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, C, *spatial), got {type(x).__name__}.")
    ndim = x.dim() - 2
    if ndim not in SUPPORTED_SPATIAL_DIMS:
        raise ValueError(
            f"{name} must have shape (B, C, H, W) or (B, C, D, H, W) (2 or 3 spatial dims), "
            f"got shape {tuple(x.shape)} ({ndim} spatial dims)."
        )
    if spatial_dims is not None and ndim != spatial_dims:
        raise ValueError(
            f"{name} must have {spatial_dims} spatial dims for this {spatial_dims}D model, "
            f"got shape {tuple(x.shape)} ({ndim} spatial dims)."
        )
    if any(s == 0 for s in x.shape):
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}.")
    return ndim


def check_floating(x: torch.Tensor, name: str) -> None:
    """Check that ``x`` has a floating-point dtype (labels must be one-hot or cast to float first)."""
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor (float16/32/64), got dtype {x.dtype}; "
            f"cast it with .float() (for label maps use mode='nearest' or one-hot encode them)."
        )


def check_finite(x: torch.Tensor, name: str) -> None:
    """Check that ``x`` holds no NaN or infinite value."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN/inf value(s) in a tensor of shape {tuple(x.shape)}.")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Check that two tensors have identical shapes."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")


def check_field(ddf: torch.Tensor, name: str = "ddf", spatial_shape: Sequence[int] | None = None) -> int:
    """Check a displacement/velocity field of shape ``(B, ndim, *spatial)`` with ``ndim`` 2 or 3.

    Args:
        ddf: the field to check.
        name: the argument name used in the error message.
        spatial_shape: if given, the spatial shape the field must have.

    Returns:
        The number of spatial dimensions.
    """
    ndim = check_spatial_tensor(ddf, name)
    check_floating(ddf, name)
    if ddf.shape[1] != ndim:
        raise ValueError(
            f"{name} must have one channel per spatial dim (shape (B, {ndim}, *spatial) for {ndim}D), "
            f"got shape {tuple(ddf.shape)} with {ddf.shape[1]} channels."
        )
    if spatial_shape is not None and tuple(ddf.shape[2:]) != tuple(spatial_shape):
        raise ValueError(
            f"{name} must have spatial shape {tuple(spatial_shape)} (the image's), got {tuple(ddf.shape[2:])}."
        )
    return ndim


def check_label_values(labels: Sequence[int]) -> list[int]:
    """Check a non-empty sequence of distinct integral label values (e.g. ``[1, 2]`` or ``[2001, 2002]``).

    Args:
        labels: the label values, as Python/NumPy numbers or a 1D tensor.

    Returns:
        The labels as a list of Python ints, in the given order.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.reshape(-1).tolist()
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__iter__"):
        raise ValueError(f"labels must be a non-empty sequence of integer label values, got {labels!r}.")
    values = list(labels)
    if len(values) == 0:
        raise ValueError("labels must be a non-empty sequence of integer label values, got an empty sequence.")
    out = []
    for v in values:
        if (
            isinstance(v, bool)
            or not isinstance(v, numbers.Real)
            or not math.isfinite(v)
            or float(v) != math.floor(float(v))
        ):
            raise ValueError(f"labels must hold integer label values, got {v!r} in {values!r}.")
        out.append(int(v))
    if len(set(out)) != len(out):
        duplicates = sorted({v for v in out if out.count(v) > 1})
        raise ValueError(f"labels must be distinct, got duplicate value(s) {duplicates} in {out}.")
    return out
