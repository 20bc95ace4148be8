"""NIfTI headers: where a file is placed (the header rule) and integer types for outputs.

**Header rule (qform vs sform).** A NIfTI file carries two placements. nibabel's ``img.affine`` prefers the sform;
ITK — and with it SimpleITK, ANTs and 3D Slicer — prefers the qform whenever its code is non-zero. Our outputs are
meant to be used with those tools, so :func:`nifti_placement` follows **ITK's rule**: the qform when
``qform_code > 0``, else the sform when ``sform_code > 0``, else nibabel's fallback (voxel sizes only). When both
codes are set and the placements differ by more than :data:`PLACEMENT_TOLERANCE_MM` at a corner of the field of
view, a :class:`UserWarning` names the file, both placements and the one used. :class:`HeaderRuleNibabelReader`
gives MONAI's ``LoadImage`` the same rule, so the bundles' preprocessing and the native-scan reader agree.

**Integer types.** nibabel refuses to write 64-bit integer images without an explicit type (many tools cannot read
them), and MONAI's loader widens ``uint32`` label files to ``int64``; so every integer image we write goes through
:func:`nifti_integer_array`, which picks a type of at most 32 bits that holds the values.
"""

from __future__ import annotations

import os
import warnings

import nibabel as nib
import numpy as np
from monai.data import NibabelReader

__all__ = ["PLACEMENT_TOLERANCE_MM", "HeaderRuleNibabelReader", "nifti_integer_array", "nifti_placement"]

#: Two placements closer than this (mm, at every corner of the field of view) are the same placement.
PLACEMENT_TOLERANCE_MM = 1e-3


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    """The corner voxels of a grid of up to 3 axes, homogeneous ``(4, 2**3)``."""
    shape = (*tuple(shape), 1, 1, 1)[:3]
    grid = np.stack(np.meshgrid(*[[0, max(s - 1, 0)] for s in shape], indexing="ij"), 0).reshape(3, -1)
    return np.vstack([grid, np.ones((1, grid.shape[1]))])


def nifti_placement(image: nib.Nifti1Image, path: str | os.PathLike | None = None) -> np.ndarray:
    """The ``4x4`` voxel-to-RAS affine of a NIfTI image by the header rule (module docstring); warns when its qform
    and sform disagree, naming ``path`` (or the image's file)."""
    header = image.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if not qcode or qform is None:
        return np.asarray(sform if scode and sform is not None else image.affine, dtype=np.float64)
    chosen = np.asarray(qform, dtype=np.float64)
    if scode and sform is not None:
        gap = float(np.abs((np.asarray(sform) - chosen) @ _corners(image.shape[:3])).max())
        if gap > PLACEMENT_TOLERANCE_MM:
            name = path if path is not None else image.get_filename()
            warnings.warn(
                f"{name}: qform (code {int(qcode)}) and sform (code {int(scode)}) place the image up to "
                f"{gap:.2f} mm apart; using the qform as ITK, SimpleITK, ANTs and 3D Slicer do "
                f"(qform {np.round(chosen, 3).tolist()}, sform {np.round(np.asarray(sform), 3).tolist()})",
                UserWarning,
                stacklevel=2,
            )
    return chosen


class HeaderRuleNibabelReader(NibabelReader):
    """MONAI's ``NibabelReader`` placing NIfTI files by the header rule of this module (ITK's) instead of
    nibabel's sform-first ``img.affine``, so MONAI pipelines, SimpleITK and our outputs agree on every file. Other
    formats nibabel reads keep nibabel's affine."""

    def _get_affine(self, img) -> np.ndarray:
        if isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            return nifti_placement(img)
        return super()._get_affine(img)


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
