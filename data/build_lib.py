"""Helpers for ``data/build.py``: grid, resampling, normalisation, clustering, Dice and NIfTI writing.

Only used when the embedded dataset is rebuilt by a developer; nothing here runs at package run time.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

SHAPE_3D = (96, 112, 96)
SPACING = 2.0
ORIGIN_3D = (-96.0, -132.0, -78.0)
SLICE_Z = (0, 10, 20)
LABEL_NAMES = {1: "CSF", 2: "GM", 3: "WM"}


def grid_affine(origin_z: float = ORIGIN_3D[2]) -> np.ndarray:
    """RAS affine of the common 2 mm grid; ``origin_z`` overrides the z translation (2D slices).

    Returns:
        ``(4, 4)`` float64 affine, ``diag(2, 2, 2, 1)`` with translation ``(-96, -132, origin_z)``.
    """
    aff = np.diag([SPACING, SPACING, SPACING, 1.0])
    aff[:3, 3] = (ORIGIN_3D[0], ORIGIN_3D[1], origin_z)
    return aff


def slice_index(z_mm: float) -> int:
    """Index along the 3D grid's third axis of the axial plane at world ``z_mm`` (must lie on the grid)."""
    k = (z_mm - ORIGIN_3D[2]) / SPACING
    if abs(k - round(k)) > 1e-6 or not 0 <= round(k) < SHAPE_3D[2]:
        raise ValueError(f"z={z_mm} mm is not a plane of the 2 mm grid starting at {ORIGIN_3D[2]} mm.")
    return round(k)


def resample_to_grid(data: np.ndarray, src_affine: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample a 3D array given with its RAS voxel->world affine onto the common grid by world coordinates.

    Args:
        data: ``(X, Y, Z)`` source array.
        src_affine: ``(4, 4)`` RAS affine of ``data`` (nibabel convention).
        order: spline order (1 = linear, 0 = nearest).

    Returns:
        ``SHAPE_3D`` float64 array, 0 outside the source field of view.
    """
    vox2vox = np.linalg.inv(src_affine) @ grid_affine()
    return ndi.affine_transform(
        np.asarray(data, dtype=np.float64), vox2vox[:3, :3], vox2vox[:3, 3], output_shape=SHAPE_3D, order=order
    )


def resample_2d(data: np.ndarray, src_affine_2d: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample a ``(X, Y)`` slice with a ``(3, 3)`` in-plane RAS affine onto the ``(96, 112)`` 2 mm grid."""
    dst = np.array([[SPACING, 0, ORIGIN_3D[0]], [0, SPACING, ORIGIN_3D[1]], [0, 0, 1.0]])
    vox2vox = np.linalg.inv(src_affine_2d) @ dst
    return ndi.affine_transform(
        np.asarray(data, dtype=np.float64), vox2vox[:2, :2], vox2vox[:2, 2], output_shape=SHAPE_3D[:2], order=order
    )


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Largest connected component of ``mask`` with holes filled (per array, 2D or 3D)."""
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(np.argmax(sizes))
    return ndi.binary_fill_holes(mask)


def quantise(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Divide by the 99.5th percentile inside ``mask``, clip to [0, 1], zero outside, quantise to uint8 (x255)."""
    p = float(np.percentile(image[mask], 99.5))
    out = np.clip(image / p, 0.0, 1.0) * mask
    return np.round(out * 255.0).astype(np.uint8)


def kmeans3(values_u8: np.ndarray, n_iter: int = 200) -> np.ndarray:
    """Exact 1D k-means (k=3) on uint8 intensities via their histogram; deterministic percentile init.

    Args:
        values_u8: ``(N,)`` uint8 intensities of brain voxels.

    Returns:
        ``(3,)`` sorted cluster centres (float, in uint8 units).
    """
    hist = np.bincount(values_u8.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    centres = np.percentile(values_u8, [10, 50, 90]).astype(np.float64)
    for _ in range(n_iter):
        assign = np.argmin(np.abs(levels[:, None] - centres[None, :]), axis=1)
        new = np.array([np.sum(hist * levels * (assign == c)) / max(np.sum(hist * (assign == c)), 1) for c in range(3)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def tissue_labels(image_u8: np.ndarray, mask: np.ndarray, centres: np.ndarray | None = None) -> np.ndarray:
    """Label brain voxels 1 CSF / 2 GM / 3 WM by nearest k-means centre (lowest = CSF); background 0.

    Args:
        image_u8: uint8 normalised image (2D or 3D).
        mask: boolean brain mask, same shape.
        centres: optional ``(3,)`` centres; computed with :func:`kmeans3` on ``image_u8[mask]`` when None.

    Returns:
        uint8 label array, same shape.
    """
    if centres is None:
        centres = kmeans3(image_u8[mask])
    lab = np.argmin(np.abs(image_u8[..., None].astype(np.float64) - centres), axis=-1).astype(np.uint8) + 1
    return np.where(mask, lab, 0).astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray, labels=(1, 2, 3)) -> dict[int, float]:
    """Per-label Dice ``2|A∩B| / (|A| + |B|)`` between two label arrays (NaN if both empty)."""
    out = {}
    for k in labels:
        x, y = a == k, b == k
        den = x.sum() + y.sum()
        out[k] = float(2.0 * np.logical_and(x, y).sum() / den) if den else float("nan")
    return out


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, is_image: bool) -> None:
    """Write a uint8 NIfTI-1 (.nii.gz, gzip mtime 0 so rebuilds are byte-identical).

    qform = sform = ``affine`` with code 4 (MNI152). Images get ``scl_slope = 1/255`` (stored 0..255 -> [0, 1]),
    labels ``scl_slope = 1``. The header is written by hand because nibabel recomputes the scaling of in-memory
    arrays on save.
    """
    data = np.asarray(data, dtype=np.uint8)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(np.uint8)
    hdr.set_qform(affine, code=4)
    hdr.set_sform(affine, code=4)
    hdr.set_xyzt_units("mm")
    hdr.set_slope_inter(1.0 / 255.0 if is_image else 1.0, 0.0)
    hdr["vox_offset"] = 352
    hdr["cal_min"], hdr["cal_max"] = (0.0, 1.0) if is_image else (0.0, 3.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(str(path), "wb", compresslevel=9, mtime=0) as f:
        f.write(hdr.binaryblock)
        f.write(b"\x00" * 4)
        f.write(data.tobytes(order="F"))


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised (Pearson) correlation of two equally shaped arrays."""
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0
