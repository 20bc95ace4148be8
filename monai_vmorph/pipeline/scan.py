"""Native scans: one type, one reader, one header rule, one 2D-slice rule.

Every scan a user hands us (command line, bundle inference, benchmarks) is read by :func:`read_scan` into a
:class:`NativeScan`, which keeps the voxels on their own grid with the affine that places them in the world.

**Header rule (qform vs sform).** A NIfTI file carries two placements. nibabel's ``img.affine`` prefers the sform;
ITK — and with it SimpleITK, ANTs and 3D Slicer — prefers the qform whenever its code is non-zero. Our outputs are
meant to be used with those tools, so we follow **ITK's rule**: the qform when ``qform_code > 0``, else the sform
when ``sform_code > 0``, else nibabel's fallback (voxel sizes only). When both codes are set and the two placements
differ by more than :data:`PLACEMENT_TOLERANCE_MM` anywhere in the field of view, a :class:`UserWarning` names the
file, both placements and the one used. Outputs (:mod:`monai_vmorph.pipeline.outputs`) are written with identical
qform and sform (the fixed file's codes kept), so every tool places them in the same place.

**2D rule.** A file is 2D when its shape, after dropping trailing singleton axes beyond the third, is ``(X, Y)`` or
``(X, Y, 1)``; its ``4x4`` affine is reduced to the ``3x3`` affine of the (R, A) plane
(:func:`monai_vmorph.io.affine_2d`), and outputs on its grid are written as ``(X, Y, 1)`` with the file's own
``4x4`` affine (so a slice keeps its position).
"""

from __future__ import annotations

import gzip
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_vmorph.errors import UserError
from monai_vmorph.io import MAX_LABELS, affine_2d

__all__ = ["PLACEMENT_TOLERANCE_MM", "NativeScan", "check_same_dims", "file_placement", "read_scan"]

#: Two placements closer than this (mm, at every corner of the field of view) are the same placement.
PLACEMENT_TOLERANCE_MM = 1e-3


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
    """

    path: Path | None
    array: np.ndarray
    affine: np.ndarray
    file_affine: np.ndarray
    qform_code: int = 1
    sform_code: int = 1

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


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    """The ``2**3`` corner voxels of a 3D grid, homogeneous ``(4, 8)``."""
    grid = np.stack(np.meshgrid(*[[0, max(s - 1, 0)] for s in shape], indexing="ij"), 0).reshape(3, -1)
    return np.vstack([grid, np.ones((1, grid.shape[1]))])


def file_placement(image: nib.Nifti1Image, path: Path | str, shape3: tuple[int, ...]) -> np.ndarray:
    """The ``4x4`` affine of ``image`` by the header rule (ITK's: qform first); warns when qform and sform differ."""
    header = image.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if qcode and qform is not None:
        chosen = np.asarray(qform, dtype=np.float64)
        if scode and sform is not None:
            corners = _corners(shape3)
            gap = float(np.abs((np.asarray(sform) - chosen) @ corners).max())
            if gap > PLACEMENT_TOLERANCE_MM:
                warnings.warn(
                    f"{path}: qform (code {int(qcode)}) and sform (code {int(scode)}) place the image up to "
                    f"{gap:.2f} mm apart; using the qform as ITK, SimpleITK, ANTs and 3D Slicer do "
                    f"(qform {np.round(chosen, 3).tolist()}, sform {np.round(np.asarray(sform), 3).tolist()})",
                    UserWarning,
                    stacklevel=3,
                )
        return chosen
    if scode and sform is not None:
        return np.asarray(sform, dtype=np.float64)
    return np.asarray(image.affine, dtype=np.float64)


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


def _open(path: Path, role: str) -> tuple[nib.Nifti1Image, np.ndarray]:
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
        data = np.asanyarray(image.dataobj)
    except UserError:
        raise
    except (gzip.BadGzipFile, zlib.error, EOFError) as error:
        raise UserError(
            f"{role} {path} is a corrupt or truncated gzip file ({error}); re-export or re-copy it"
        ) from None
    except Exception as error:  # nibabel's ImageFileError, struct errors on truncated headers, ...
        raise UserError(f"{role} {path} is not a readable NIfTI image ({error}); give a .nii/.nii.gz file") from None
    return image, data


def read_scan(path: str | os.PathLike, role: str, labels: bool = False, keep_integer: bool = False) -> NativeScan:
    """Read a NIfTI scan by this module's header and 2D rules, with a one-line error for every way it can be wrong.

    Args:
        path: the file.
        role: what the file is for, used in messages (``"--fixed"``, ``"moving label"``…).
        labels: the file is a label map: whole numbers, not all zero, at most
            :data:`monai_vmorph.io.MAX_LABELS` distinct values (the label warp's limit), checked before any work;
            the integer dtype is kept.
        keep_integer: keep an integer image's dtype (other images become float32).

    Raises:
        UserError: missing or unreadable file, not NIfTI, corrupt compression, several volumes (4D), not 2D/3D,
            complex values, NaN/inf voxels, a singular or non-finite affine, or a label map that is empty, not
            integer-valued or has too many labels.
    """
    p = Path(path)
    image, data = _open(p, role)
    shape = _spatial_shape(data.shape, role, p)
    if np.iscomplexobj(data) or data.dtype.fields is not None:
        raise UserError(f"{role} {p} holds {data.dtype} (complex or RGB) voxels; give a real-valued scalar image")
    array = data.reshape(shape)
    if labels:
        array = _label_array(array, role, p)
    elif not (keep_integer and np.issubdtype(array.dtype, np.integer)):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            raise UserError(f"{role} {p} has {bad} NaN/inf voxels; fix or mask the image first")
    file_affine = file_placement(image, p, tuple(shape) + (1,) * (3 - len(shape)))
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
    )


def _label_array(array: np.ndarray, role: str, path: Path) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(np.mod(array, 1) == 0):
            raise UserError(f"{role} {path} has non-integer values; give a label map (one whole number per structure)")
    if not np.any(array):
        raise UserError(f"{role} {path} is empty (all zeros); give a label map with at least one structure")
    count = int(np.unique(array).size)
    if count > MAX_LABELS:
        raise UserError(
            f"{role} {path} has {count} distinct values (a label map has at most {MAX_LABELS}); "
            "is it an intensity image? give a label map"
        )
    if not np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.int32)
    return array


def check_same_dims(*scans: NativeScan) -> int:
    """The shared dimensionality of ``scans``; :class:`UserError` if 2D and 3D images are mixed."""
    dims = {s.ndim for s in scans}
    if len(dims) > 1:
        described = ", ".join(f"{s.name} is {s.ndim}D" for s in scans)
        raise UserError(f"the inputs mix 2D and 3D images ({described}); register images of one dimensionality")
    return dims.pop()
