"""Independent references for the io tests: grids go through files read by ITK's own NIfTI reader/writer.

Nothing here uses ``monai_vmorph.io``: a NumPy array with a nibabel affine is turned into a SimpleITK image by
saving it with nibabel and reading it with ``sitk.ReadImage`` (ITK does the RAS -> LPS conversion), and back.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import SimpleITK as sitk


def rotation(ndim: int, angles) -> np.ndarray:
    """A rotation: one angle in 2D; in 3D the product of rotations about the z, y and x axes."""
    if ndim == 2:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    out = np.eye(3)
    for (a, b), angle in zip(((0, 1), (0, 2), (1, 2)), angles, strict=True):
        r = np.eye(3)
        c, s = np.cos(angle), np.sin(angle)
        r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
        out = out @ r
    return out


def oblique_affine(shape, spacing, centre, angles, flip_axis=None) -> np.ndarray:
    """``(ndim + 1)`` affine ``R diag(spacing)`` (one array axis reversed if ``flip_axis``) whose field of view,
    for a grid of ``shape``, is centred on the world point ``centre``."""
    ndim = len(spacing)
    linear = rotation(ndim, angles) @ np.diag(np.asarray(spacing, dtype=float))
    if flip_axis is not None:
        linear[:, flip_axis] *= -1
    out = np.eye(ndim + 1)
    out[:ndim, :ndim] = linear
    out[:ndim, ndim] = np.asarray(centre, dtype=float) - linear @ ((np.asarray(shape) - 1) / 2)
    return out


def _affine_4x4(affine: np.ndarray) -> np.ndarray:
    if affine.shape == (4, 4):
        return affine
    out = np.eye(4)
    out[np.ix_([0, 1, 3], [0, 1, 3])] = affine
    return out


def nifti_to_sitk(array: np.ndarray, affine: np.ndarray, path) -> sitk.Image:
    """SimpleITK image of ``array`` (nibabel order) on the grid ``affine`` (3x3 in 2D), via a NIfTI file."""
    image = nib.Nifti1Image(np.asarray(array), _affine_4x4(np.asarray(affine, dtype=float)))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, str(path))
    return sitk.ReadImage(str(path))


def sitk_to_nifti(image: sitk.Image, path) -> tuple[np.ndarray, np.ndarray]:
    """(array in nibabel order, affine (3x3 in 2D)) of a SimpleITK image, via ITK's NIfTI writer and nibabel."""
    sitk.WriteImage(image, str(path))
    loaded = nib.load(str(path))
    array = np.asarray(loaded.dataobj)
    affine = loaded.affine
    if image.GetDimension() == 2:
        array = array.reshape(array.shape[:2])
        affine = affine[np.ix_([0, 1, 3], [0, 1, 3])]
    return array, affine


def sitk_array(image: sitk.Image) -> np.ndarray:
    """Pixel array of a SimpleITK image in nibabel order (vector components stay last)."""
    array = sitk.GetArrayFromImage(image)
    ndim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() > 1:
        return array.transpose(*reversed(range(ndim)), ndim)
    return array.transpose(*reversed(range(ndim)))


def world_points(shape, affine) -> np.ndarray:
    """``(*shape, ndim)`` RAS world points of a grid's voxels."""
    ndim = len(shape)
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), axis=-1)
    return index @ affine[:ndim, :ndim].T + affine[:ndim, ndim]


def continuous_index(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Continuous voxel index of RAS world points ``(..., ndim)`` on the grid ``affine``."""
    ndim = points.shape[-1]
    inv = np.linalg.inv(affine)
    return points @ inv[:ndim, :ndim].T + inv[:ndim, ndim]


def smooth_image(points: np.ndarray) -> np.ndarray:
    """A smooth analytic intensity of RAS world points ``(..., ndim)`` (wavelengths of 30-60 mm)."""
    x = points[..., 0]
    y = points[..., 1]
    out = np.sin(0.15 * x + 0.4) * np.cos(0.11 * y - 0.2) + 1.0
    if points.shape[-1] == 3:
        out = out + 0.5 * np.sin(0.13 * points[..., 2] + 0.1 * x)
    return out
