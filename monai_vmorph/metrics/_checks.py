"""Input checks specific to the metrics (spacing, label maps).

They complement :mod:`monai_vmorph.validation` and follow its rule: every check raises :class:`ValueError`
with one sentence that names the value received and what was expected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from monai_vmorph.validation import check_finite, check_spatial_tensor

__all__ = ["check_label_map", "check_spacing"]


def check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    """Check a voxel spacing: ``None`` (unit spacing) or ``ndim`` finite positive floats (mm per array axis).

    Args:
        spacing: the spacing to check.
        ndim: the number of spatial dimensions of the data it describes.

    Returns:
        The spacing as a tuple of Python floats, or ``None``.
    """
    if spacing is None:
        return None
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.tolist()
    if isinstance(spacing, (str, bytes)) or not (isinstance(spacing, Sequence) or hasattr(spacing, "__len__")):
        raise ValueError(f"spacing must be None or a sequence of {ndim} positive floats, got {spacing!r}.")
    values = list(spacing)
    if len(values) != ndim:
        raise ValueError(
            f"spacing must have one value per spatial dim ({ndim} for {ndim}D data), "
            f"got {len(values)} value(s): {tuple(values)}."
        )
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"spacing must hold finite positive floats (mm per voxel), got {tuple(values)}.")
        out.append(float(v))
    return tuple(out)


def check_label_map(x: torch.Tensor, name: str) -> int:
    """Check an integer label map of shape ``(B, 1, *spatial)`` with 2 or 3 spatial dims.

    Integer and bool dtypes are accepted as they are; floating-point maps must hold finite integral values
    (as after ``warp(..., mode="nearest")``).

    Args:
        x: the label map to check.
        name: the argument name used in the error message.

    Returns:
        The number of spatial dimensions.
    """
    ndim = check_spatial_tensor(x, name)
    if x.shape[1] != 1:
        raise ValueError(
            f"{name} must be a label map of shape (B, 1, *spatial) holding label values (not one-hot), "
            f"got shape {tuple(x.shape)} with {x.shape[1]} channels."
        )
    if x.is_complex():
        raise ValueError(f"{name} must have an integer or integral floating-point dtype, got dtype {x.dtype}.")
    if x.is_floating_point():
        check_finite(x, name)
        non_integral = x != torch.round(x)
        if bool(non_integral.any()):
            example = float(x[non_integral][0])
            raise ValueError(
                f"{name} must hold integral label values, got {int(non_integral.sum())} non-integral value(s) "
                f"(e.g. {example!r}) in a {x.dtype} tensor; warp label maps with mode='nearest'."
            )
    return ndim
