"""Integer types for NIfTI outputs.

nibabel refuses to write 64-bit integer images without an explicit type (many tools cannot read them), and
MONAI's loader widens ``uint32`` label files to ``int64``; so every integer image we write goes through
:func:`nifti_integer_array`, which picks a type of at most 32 bits that holds the values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nifti_integer_array"]


def nifti_integer_array(array: np.ndarray, preferred: np.dtype | type | None = None) -> np.ndarray:
    """``array`` in an integer type NIfTI stores, without changing a value.

    Args:
        array: the image; a non-integer array is returned unchanged.
        preferred: type to use when possible (e.g. the source file's on-disk type).

    Returns:
        ``array`` cast to the first of ``preferred``, its own type and ``int32`` that is an integer type of at most
        32 bits holding every value.

    Raises:
        ValueError: the values do not fit a 32-bit integer type.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.integer):
        return array
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dtype in (preferred, array.dtype, np.int32):
        if dtype is None:
            continue
        dtype = np.dtype(dtype)
        if np.issubdtype(dtype, np.integer) and dtype.itemsize <= 4:
            if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
                return array if dtype == array.dtype else array.astype(dtype)
    raise ValueError(f"label values {low}..{high} do not fit a 32-bit NIfTI integer type; relabel them first.")
