"""Native scans: one type, one reader, one header rule, one 2D-slice rule.

Every scan a user hands us (command line, bundle inference, benchmarks) is read by :func:`read_scan` into a
:class:`NativeScan`, which keeps the voxels on their own grid with the affine that places them in the world.

**Header rule (qform vs sform):** ITK's, :func:`monai_vmorph.io.nifti_placement` (a warning names the file when the
two disagree). Outputs (:mod:`monai_vmorph.pipeline.outputs`) are written with identical qform and sform (the fixed
file's codes kept), so nibabel, SimpleITK, ANTs and Slicer place them in the same place.

**2D rule.** A file is 2D when its shape, after dropping trailing singleton axes beyond the third, is ``(X, Y)`` or
``(X, Y, 1)``; its ``4x4`` affine is reduced to the ``3x3`` affine of the (R, A) plane
(:func:`monai_vmorph.io.affine_2d`), and outputs on its grid are written as ``(X, Y, 1)`` with the file's own
``4x4`` affine (so a slice keeps its position).
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_vmorph.errors import UserError
from monai_vmorph.io import MAX_LABELS, affine_2d, nifti_placement

__all__ = ["NativeScan", "check_same_dims", "check_scan_file", "read_scan"]


@dataclass
class NativeScan:
    """One image on its own grid, as read from disk.

    Attributes:
        path: the file (``None`` for an image built in memory).
        array: voxel values ``(*S)``, 2 or 3 axes, nibabel (ITK index) axis order.
        affine: the grid's ``(ndim + 1)``-square voxel-to-world (RAS mm) matrix (``3x3`` for 2D), placed by the
            header rule of this module.
        file_affine: the ``4x4`` affine that outputs on this grid are written with (a 2D slice keeps its position).
        qform_code: the file's qform code (``1`` for an image built in memory), kept on outputs.
        sform_code: the file's sform code, kept on outputs.
        file_shape: the file's spatial shape (``(X, Y)`` or ``(X, Y, 1)`` for a 2D slice); outputs on this grid keep
            it. ``None`` (in memory): 2D outputs are ``(X, Y, 1)``.
        file_dtype: the voxel type of the file (``None`` in memory). A label map's ``array`` is ``int32`` (``int64``
            for values beyond it) whatever this is; outputs derived from it (warped labels) are stored in it.
    """

    path: Path | None
    array: np.ndarray
    affine: np.ndarray
    file_affine: np.ndarray
    qform_code: int = 1
    sform_code: int = 1
    file_shape: tuple[int, ...] | None = None
    file_dtype: np.dtype | None = None

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else "<array>"

    @classmethod
    def from_array(cls, array: np.ndarray, affine: np.ndarray) -> NativeScan:
        """A scan built in memory: ``array`` ``(*S)`` with its ``(ndim + 1)``-square RAS affine."""
        array = np.asarray(array)
        affine = np.asarray(affine, dtype=np.float64)
        file_affine = affine if array.ndim == 3 else _lift_2d(affine)
        return cls(None, array, affine, file_affine)


def _lift_2d(affine: np.ndarray) -> np.ndarray:
    """A 2D ``3x3`` affine as the ``4x4`` affine of a ``(X, Y, 1)`` slice at z = 0."""
    out = np.eye(4)
    out[:2, :2] = affine[:2, :2]
    out[:2, 3] = affine[:2, 2]
    return out


def _spatial_shape(shape: tuple[int, ...], role: str, path: Path) -> tuple[int, ...]:
    """The 2D/3D shape of a file's array by the 2D rule (trailing singleton axes beyond the third dropped)."""
    out = tuple(shape)
    while len(out) > 3 and out[-1] == 1:
        out = out[:-1]
    if len(out) > 3:
        raise UserError(f"{role} {path} has shape {shape}: several volumes or channels; give one 2D or 3D volume")
    if len(out) == 3 and out[2] == 1:
        out = out[:2]
    if len(out) < 2:
        raise UserError(f"{role} {path} has shape {shape}; give a 2D or 3D image")
    return out


def _open(path: Path, role: str, data: bool = True) -> tuple[nib.Nifti1Image, np.ndarray | None]:
    if not path.exists():
        raise UserError(f"{role} {path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"{role} {path} is a folder; give a .nii or .nii.gz file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{role} {path} is not readable; check its permissions")
    try:
        image = nib.load(path)
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise UserError(f"{role} {path} is a {type(image).__name__}, not NIfTI; convert it to .nii.gz first")
        voxels = np.asanyarray(image.dataobj) if data else None
    except UserError:
        raise
    except (gzip.BadGzipFile, zlib.error, EOFError) as error:
        raise UserError(
            f"{role} {path} is a corrupt or truncated gzip file ({error}); re-export or re-copy it"
        ) from None
    except Exception as error:  # nibabel's ImageFileError, struct errors on truncated headers, ...
        raise UserError(f"{role} {path} is not a readable NIfTI image ({error}); give a .nii/.nii.gz file") from None
    return image, voxels


def _check_voxel_type(dtype: np.dtype, role: str, path: Path) -> None:
    if (
        np.issubdtype(dtype, np.complexfloating)
        or dtype.fields is not None
        or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_)
    ):
        raise UserError(f"{role} {path} holds {dtype} (complex or RGB) voxels; give a real-valued scalar image")


def check_scan_file(path: str | os.PathLike, role: str, labels: bool = False) -> tuple[int, ...]:
    """Check from its header alone that ``path`` is a NIfTI scan :func:`read_scan` can read, in milliseconds.

    The checks of :func:`read_scan` that need no voxel data: the file exists and is a readable NIfTI header, its
    voxel type is real and scalar, its shape is 2D or 3D by the 2D rule. A label map stored in a floating type is
    read whole to check that its values are whole numbers (integer types hold nothing else). Commands that read
    many files (``evaluate``, ``learn2reg``) run this on every file before the first registration.

    Returns:
        The spatial shape by the 2D rule.

    Raises:
        UserError: as :func:`read_scan`, for these checks.
    """
    p = Path(path)
    image, _ = _open(p, role, data=False)
    shape = _spatial_shape(tuple(image.shape), role, p)
    dtype = np.dtype(image.get_data_dtype())
    _check_voxel_type(dtype, role, p)
    if labels and not np.issubdtype(dtype, np.integer):
        _label_array(np.asanyarray(image.dataobj).reshape(shape), role, p)
    return shape


def read_scan(path: str | os.PathLike, role: str, labels: bool = False, keep_integer: bool = False) -> NativeScan:
    """Read a NIfTI scan by this module's header and 2D rules, with a one-line error for every way it can be wrong.

    Args:
        path: the file.
        role: what the file is for, used in messages (``"--fixed"``, ``"moving label"``…).
        labels: the file is a label map: whole numbers (any integer type, or a floating one holding whole numbers),
            not all zero, at most :data:`monai_vmorph.io.MAX_LABELS` distinct values (the label warp's limit),
            checked before any work. Its array is ``int32`` (``int64`` where values exceed it); ``file_dtype``
            keeps the file's type for the outputs.
        keep_integer: keep an integer image's dtype (other images become float32).

    Raises:
        UserError: missing or unreadable file, not NIfTI, corrupt compression, several volumes (4D), not 2D/3D,
            complex values, NaN/inf voxels, a singular or non-finite affine, or a label map that is empty, not
            integer-valued or has too many labels.
    """
    p = Path(path)
    image, data = _open(p, role)
    shape = _spatial_shape(data.shape, role, p)
    _check_voxel_type(data.dtype, role, p)
    array = data.reshape(shape)
    if labels:
        array = _label_array(array, role, p)
    elif not (keep_integer and np.issubdtype(array.dtype, np.integer)):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            raise UserError(f"{role} {p} has {bad} NaN/inf voxels; fix or mask the image first")
    file_affine = nifti_placement(image, p)
    if not np.all(np.isfinite(file_affine)) or abs(np.linalg.det(file_affine[:3, :3])) < 1e-9:
        raise UserError(
            f"{role} {p} has a singular or non-finite affine {np.round(file_affine, 4).tolist()}; "
            "fix its header (voxel sizes, qform/sform) first"
        )
    affine = affine_2d(file_affine) if array.ndim == 2 else file_affine
    if array.ndim == 2 and abs(np.linalg.det(affine[:2, :2])) < 1e-9:
        raise UserError(f"{role} {p} is a slice whose plane is not the (x, y) plane of its affine; reslice it")
    header = image.header
    return NativeScan(
        path=p,
        array=array,
        affine=affine,
        file_affine=file_affine,
        qform_code=int(header["qform_code"]),
        sform_code=int(header["sform_code"]),
        file_shape=tuple(int(n) for n in data.shape[: max(array.ndim, min(3, data.ndim))]),
        file_dtype=np.dtype(data.dtype),
    )


def _label_array(array: np.ndarray, role: str, path: Path) -> np.ndarray:
    """A label map's voxels as ``int32`` (``int64`` where a value exceeds it), checked as :func:`read_scan` says.

    One integer type downstream: PyTorch has no CPU sort (``torch.unique``) for ``uint16``/``uint32``/``uint64``,
    and a floating map holding whole numbers is compared by value everywhere.
    """
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        finite = np.isfinite(array)
        if not finite.all():
            raise UserError(f"{role} {path} has {int(finite.size - finite.sum())} NaN/inf voxels; give a label map")
        if not np.all(np.mod(array, 1) == 0):
            raise UserError(f"{role} {path} has non-integer values; give a label map (one whole number per structure)")
    if not np.any(array):
        raise UserError(f"{role} {path} is empty (all zeros); give a label map with at least one structure")
    values = np.unique(array)
    if values.size > MAX_LABELS:
        raise UserError(
            f"{role} {path} has {values.size} distinct values (a label map has at most {MAX_LABELS}); "
            "is it an intensity image? give a label map"
        )
    low, high = values[0], values[-1]
    for dtype in (np.int32, np.int64):
        if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
            return array.astype(dtype)
    raise UserError(f"{role} {path} has label values {low}..{high} beyond a 64-bit integer; relabel it")


def check_same_dims(*scans: NativeScan) -> int:
    """The shared dimensionality of ``scans``; :class:`UserError` if 2D and 3D images are mixed."""
    dims = {s.ndim for s in scans}
    if len(dims) > 1:
        described = ", ".join(f"{s.name} is {s.ndim}D" for s in scans)
        raise UserError(f"the inputs mix 2D and 3D images ({described}); register images of one dimensionality")
    return dims.pop()
