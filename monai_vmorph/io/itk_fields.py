"""Reading and writing ITK displacement fields (NIfTI), in the conventions of :mod:`monai_vmorph.io.spaces`.

An ITK displacement-field NIfTI (written by ITK, SimpleITK, ANTs ``*Warp.nii.gz``) stores, on a reference grid,
one vector per voxel in **physical millimetres with LPS components**, as a 5D image ``(X, Y, Z, 1, ndim)``
(``(X, Y, 1, 1, 2)`` in 2D) with intent ``NIFTI_INTENT_VECTOR`` (1007). ``DisplacementFieldTransform`` maps a
point ``p`` to ``p + d(p)`` with ``d`` linearly interpolated and zero outside the field's grid; used by
``sitk.Resample`` it pulls the moving image back onto the reference grid, as
:func:`monai_vmorph.io.warp_physical` does. In memory, fields are ``(*S, ndim)`` RAS mm arrays with
nibabel-convention affines (3x3 in 2D).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from monai_vmorph.errors import DataError

from .atomic import atomic_write, check_nifti
from .spaces import affine_2d

__all__ = ["affine_to_itk", "itk_to_affine", "read_itk_displacement", "write_itk_displacement"]

NIFTI_INTENT_DISPVECT = 1006
NIFTI_INTENT_VECTOR = 1007
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _lps_flip(ndim: int) -> np.ndarray:
    """``diag(-1, -1, 1)`` (3D) or ``diag(-1, -1)`` (2D): RAS <-> LPS, its own inverse."""
    return np.diag([-1.0, -1.0, 1.0][:ndim])


def affine_to_itk(affine: object) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """ITK ``(origin, spacing, direction)`` of the grid with this nibabel RAS affine.

    Args:
        affine: ``(ndim + 1, ndim + 1)`` RAS affine (3x3 in 2D, see :mod:`monai_vmorph.io.spaces`).

    Returns:
        ``origin`` (LPS mm of voxel 0), ``spacing`` (column norms), ``direction`` (row-major flattened
        ``ndim x ndim`` LPS direction cosines, columns = array axes), as SimpleITK's setters take them.
    """
    a = np.asarray(affine, dtype=np.float64)
    ndim = a.shape[0] - 1
    if a.shape not in ((3, 3), (4, 4)):
        raise ValueError(f"affine must be 3x3 (2D) or 4x4 (3D), got shape {a.shape}.")
    flip = _lps_flip(ndim)
    linear = flip @ a[:ndim, :ndim]
    spacing = np.linalg.norm(linear, axis=0)
    if not np.all(np.isfinite(a)) or np.any(spacing <= 0) or abs(np.linalg.det(linear)) < 1e-12:
        raise ValueError(f"affine must be finite and invertible, got {a.tolist()}.")
    direction = linear / spacing
    origin = flip @ a[:ndim, ndim]
    return tuple(origin.tolist()), tuple(spacing.tolist()), tuple(direction.reshape(-1).tolist())


def itk_to_affine(origin, spacing, direction) -> np.ndarray:
    """The nibabel RAS affine of an ITK grid (inverse of :func:`affine_to_itk`).

    Args:
        origin: LPS position of voxel 0 (``ndim`` values), e.g. ``image.GetOrigin()``.
        spacing: voxel sizes (``ndim`` values).
        direction: ``ndim * ndim`` row-major direction cosines (LPS), e.g. ``image.GetDirection()``.

    Returns:
        ``(ndim + 1, ndim + 1)`` float64 affine mapping voxel indices to RAS mm.
    """
    origin = np.asarray(origin, dtype=np.float64)
    ndim = origin.size
    flip = _lps_flip(ndim)
    out = np.eye(ndim + 1)
    out[:ndim, :ndim] = flip @ np.asarray(direction, dtype=np.float64).reshape(ndim, ndim) @ np.diag(spacing)
    out[:ndim, ndim] = flip @ origin
    return out


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"displacement field path {path} must end in .nii or .nii.gz (ITK displacement-field NIfTI).")


def write_itk_displacement(
    path: str | os.PathLike,
    displacement_ras: np.ndarray | torch.Tensor,
    affine: object,
    overwrite: bool = False,
) -> Path:
    """Write a physical displacement field as an ITK displacement-field NIfTI, atomically.

    The file holds LPS-component millimetre vectors on the grid ``affine`` (origin/spacing/direction converted to
    ITK's LPS), shape ``(X, Y, Z, 1, 3)`` (``(X, Y, 1, 1, 2)`` in 2D), intent 1007: ANTs, ITK and
    ``sitk.DisplacementFieldTransform`` read it directly (conventions: :mod:`monai_vmorph.io.spaces`). The data
    are written to a temporary file in the same folder, read back whole (SimpleITK's writer does not raise when a
    write fails), then renamed over ``path``: a failed write raises one line and never leaves a partial file.

    Args:
        path: output ``.nii`` / ``.nii.gz`` path (missing folders are created).
        displacement_ras: ``(*S, ndim)`` finite field in RAS mm (float32 stays float32, other types float64).
        affine: ``(ndim + 1, ndim + 1)`` RAS affine of the grid (the reference image's; 3x3 in 2D).
        overwrite: replace an existing file; otherwise an existing ``path`` raises ``FileExistsError``.

    Returns:
        The written path.

    Raises:
        monai_vmorph.io.atomic.OutputWriteError: the file could not be written completely (disk full, file size
            limit…); nothing is left behind.
    """
    path = Path(path)
    _suffix(path)  # rejects names other than .nii / .nii.gz before any work
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    ndim = a.shape[0] - 1
    origin, spacing, direction = affine_to_itk(a)
    field = displacement_ras
    if isinstance(field, torch.Tensor):
        field = field.detach().cpu().numpy()
    field = np.asarray(field)
    if field.ndim != ndim + 1 or field.shape[-1] != ndim or not np.issubdtype(field.dtype, np.floating):
        raise ValueError(
            f"displacement_ras must be a floating (*S, {ndim}) field for the {ndim}D affine, got shape "
            f"{field.shape}, dtype {field.dtype}."
        )
    if not np.all(np.isfinite(field)):
        raise ValueError(f"displacement_ras holds {int((~np.isfinite(field)).sum())} NaN/inf value(s); not written.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it.")
    dtype = np.float32 if field.dtype == np.float32 else np.float64
    lps = (field * np.diag(_lps_flip(ndim))).astype(dtype)
    # SimpleITK arrays are index-reversed: (z, y, x, component)
    image = sitk.GetImageFromArray(np.ascontiguousarray(lps.transpose(*reversed(range(ndim)), ndim)), isVector=True)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    stored_shape = (*field.shape[:-1], *(1,) * (3 - ndim), 1, ndim)  # (X, Y, Z, 1, 3) or (X, Y, 1, 1, 2)
    return atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp)), lambda tmp: check_nifti(tmp, stored_shape))


def read_itk_displacement(path: str | os.PathLike, spatial_dims: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an ITK displacement-field NIfTI (ours, SimpleITK's, ANTs' ``*Warp.nii.gz``) as a RAS mm field.

    Args:
        path: the ``.nii`` / ``.nii.gz`` file: shape ``(X, Y, Z, 1, 3)`` or ``(X, Y, 1, 1, 2)``, LPS mm vectors,
            intent vector (1007), displacement vector (1006) or none.
        spatial_dims: if given (2 or 3), the dimensionality of the images the field is for; a field of another
            dimensionality is rejected.

    Returns:
        ``(displacement_ras, affine)``: the ``(*S, ndim)`` field in RAS mm (float32 if stored as float32, else
        float64) and its grid's RAS affine (nibabel convention; 3x3 in 2D), see :mod:`monai_vmorph.io.spaces`.

    Raises:
        DataError: the file is missing or unreadable, is not a vector field, has a number of components that does
            not match its (or ``spatial_dims``') dimensionality, or holds NaN/inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"displacement field {path} does not exist; check the path.")
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise DataError(f"displacement field {path} could not be read as NIfTI ({err}); check the file.") from err
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"displacement field {path} is not a NIfTI file; ITK displacement fields are .nii/.nii.gz.")
    shape = tuple(int(s) for s in image.shape)
    intent = int(image.header["intent_code"])
    if len(shape) != 5 or shape[3] != 1:
        raise DataError(
            f"{path} is not an ITK displacement field: expected a vector image of shape (X, Y, Z, 1, 3) or "
            f"(X, Y, 1, 1, 2), got shape {shape}; pass a displacement field, not an image."
        )
    if intent not in (0, NIFTI_INTENT_DISPVECT, NIFTI_INTENT_VECTOR):
        raise DataError(
            f"{path} has NIfTI intent {intent}, not a vector field (1007) or displacement vector (1006); "
            "pass an ITK displacement field."
        )
    components = shape[4]
    ndim = 2 if components == 2 else 3
    if components not in (2, 3) or (components == 2 and shape[2] != 1):
        raise DataError(
            f"{path} holds {components}-component vectors on a grid of shape {shape[:3]}; a displacement field "
            "needs 3 components in 3D, or 2 components on a single-slice (X, Y, 1) grid in 2D."
        )
    if spatial_dims is not None and spatial_dims != ndim:
        raise DataError(
            f"{path} is a {ndim}D displacement field ({components} components, shape {shape}) but the images are "
            f"{spatial_dims}D; use a field computed for {spatial_dims}D images."
        )
    data = np.asarray(image.dataobj)
    if not np.issubdtype(data.dtype, np.floating) or data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    if not np.all(np.isfinite(data)):
        raise DataError(
            f"displacement field {path} holds {int((~np.isfinite(data)).sum())} NaN/inf value(s); "
            "it cannot be applied, regenerate it."
        )
    field = data[:, :, :, 0, :] if ndim == 3 else data[:, :, 0, 0, :]
    field = field * np.diag(_lps_flip(ndim)).astype(field.dtype)
    affine = np.asarray(image.affine, dtype=np.float64)
    if ndim == 2:
        affine = affine_2d(affine)
    return np.ascontiguousarray(field), affine
