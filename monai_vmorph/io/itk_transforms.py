"""ITK affine transform files (``.txt``/``.tfm``/``.mat``), in the conventions of :mod:`monai_vmorph.io.spaces`.

In memory an affine transform is an ``(ndim + 1)``-square matrix ``A`` in **RAS millimetres** that maps a point of
the fixed (reference) image's world to the moving image's world: ``warped(p) = moving(A @ p)``, the pull-back of
:func:`monai_vmorph.io.warp_physical`. ITK's ``AffineTransform`` maps points the same way, in LPS:
``A_lps = F @ A @ F`` with ``F = diag(-1, -1, 1, 1)`` (``diag(-1, -1, 1)`` in 2D), stored as its matrix and
translation with a zero centre. ``sitk.ReadTransform``, ``antsApplyTransforms -t affine.txt`` and 3D Slicer read
the file directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_write

__all__ = ["read_itk_affine", "write_itk_affine"]


def _flip(ndim: int) -> np.ndarray:
    return np.diag([-1.0, -1.0] + [1.0] * (ndim - 1))


def write_itk_affine(path: str | os.PathLike, matrix: np.ndarray) -> Path:
    """Write the RAS affine ``matrix`` (fixed world -> moving world, ``(ndim + 1)``-square) as an ITK transform file.

    The file is written under a temporary name, read back and compared before it is renamed into place.
    """
    a = np.asarray(matrix, dtype=np.float64)
    ndim = a.shape[0] - 1
    if a.shape not in ((3, 3), (4, 4)) or not np.all(np.isfinite(a)):
        raise ValueError(f"matrix must be a finite 3x3 (2D) or 4x4 (3D) affine, got {a.tolist()}.")
    lps = _flip(ndim) @ a @ _flip(ndim)
    transform = sitk.AffineTransform(ndim)
    transform.SetMatrix(lps[:ndim, :ndim].reshape(-1).tolist())
    transform.SetTranslation(lps[:ndim, ndim].tolist())

    def write(tmp: Path) -> None:
        sitk.WriteTransform(transform, str(tmp))
        back = read_itk_affine(tmp)
        if back.shape != a.shape or not np.allclose(back, a, atol=1e-6):
            raise OSError(f"writing {Path(path).name} failed: the file read back differs")

    return atomic_write(path, write)


def read_itk_affine(path: str | os.PathLike) -> np.ndarray:
    """The RAS matrix (fixed world -> moving world) of an ITK affine transform file (any centre)."""
    transform = sitk.ReadTransform(str(path))
    if transform.GetName() == "CompositeTransform":
        transform = sitk.CompositeTransform(transform).GetNthTransform(0)
    ndim = transform.GetDimension()
    # Any ITK matrix-offset transform (T(x) = M (x - c) + t + c, whatever its centre c): read the map through points.
    points = np.vstack([np.zeros(ndim), np.eye(ndim)])
    images = np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in points])
    lps = np.eye(ndim + 1)
    lps[:ndim, ndim] = images[0]
    lps[:ndim, :ndim] = (images[1:] - images[0]).T
    return _flip(ndim) @ lps @ _flip(ndim)
