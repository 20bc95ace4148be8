"""Reading the command line's input files, with one-line errors for every way a file can be wrong."""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_vmorph.cli.errors import CLIError
from monai_vmorph.io import affine_2d

__all__ = ["Scan", "check_same_dims", "load_scan"]


@dataclass
class Scan:
    """One image as read from disk.

    Attributes:
        path: the file.
        array: voxel values ``(*spatial)``, 2 or 3 axes (a 3D file with one slice is 2D), nibabel axis order.
        affine: the grid's ``(ndim + 1)``-square voxel-to-world (RAS mm) matrix (``3x3`` for 2D, see
            :mod:`monai_vmorph.io.spaces`).
        file_affine: the file's ``4x4`` affine, used to write outputs on this grid (keeps a slice's position).
    """

    path: Path
    array: np.ndarray
    affine: np.ndarray
    file_affine: np.ndarray

    @property
    def ndim(self) -> int:
        return self.array.ndim


def load_scan(path: str | os.PathLike, role: str, labels: bool = False, keep_integer: bool = False) -> Scan:
    """Read a NIfTI image given on the command line.

    Args:
        path: the file.
        role: what the file is for, used in messages (``"--fixed"``, ``"--moving-labels"``…).
        labels: the file is a label map: values must be whole numbers, not all zero; the integer dtype is kept.
        keep_integer: keep an integer image's dtype (other images become float32).

    Raises:
        CLIError: missing or unreadable file, not NIfTI, corrupt compression, several volumes (4D), not 2D/3D,
            NaN/inf voxels, or a label map that is empty or not integer-valued.
    """
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{role} {p} does not exist; check the path")
    if p.is_dir():
        raise CLIError(f"{role} {p} is a folder; give a .nii or .nii.gz file")
    if not os.access(p, os.R_OK):
        raise CLIError(f"{role} {p} is not readable; check its permissions")
    try:
        image = nib.load(p)
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise CLIError(f"{role} {p} is a {type(image).__name__}, not NIfTI; convert it to .nii.gz first")
        data = np.asanyarray(image.dataobj)
    except CLIError:
        raise
    except (gzip.BadGzipFile, zlib.error, EOFError) as error:
        raise CLIError(f"{role} {p} is a corrupt or truncated gzip file ({error}); re-export or re-copy it") from None
    except Exception as error:  # nibabel's ImageFileError, struct errors on truncated headers, ...
        raise CLIError(f"{role} {p} is not a readable NIfTI image ({error}); give a .nii or .nii.gz file") from None
    shape = data.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise CLIError(f"{role} {p} has shape {data.shape}: several volumes or channels; give one 2D or 3D volume")
    if len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) < 2:
        raise CLIError(f"{role} {p} has shape {data.shape}; give a 2D or 3D image")
    array = data.reshape(shape)
    if labels:
        if not (np.issubdtype(array.dtype, np.integer) or np.all(np.mod(array, 1) == 0)):
            raise CLIError(f"{role} {p} has non-integer values; give a label map (one whole number per structure)")
        if not np.any(array):
            raise CLIError(f"{role} {p} is empty (all zeros); give a label map with at least one structure")
        if not np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.int32)
    elif not (keep_integer and np.issubdtype(array.dtype, np.integer)):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            raise CLIError(f"{role} {p} has {bad} NaN/inf voxels; fix or mask the image first")
    file_affine = np.asarray(image.affine, dtype=np.float64)
    affine = affine_2d(file_affine) if array.ndim == 2 else file_affine
    return Scan(path=p, array=array, affine=affine, file_affine=file_affine)


def check_same_dims(*scans: Scan) -> int:
    """The shared dimensionality of ``scans``; :class:`CLIError` if 2D and 3D images are mixed."""
    dims = {s.ndim for s in scans}
    if len(dims) > 1:
        described = ", ".join(f"{s.path.name} is {s.ndim}D" for s in scans)
        raise CLIError(f"the inputs mix 2D and 3D images ({described}); register images of one dimensionality")
    return dims.pop()
