"""Writing registration results of an evaluator run as NIfTI files on the native grid of each fixed scan.

The network runs on the preprocessed grid (RAS, the bundle's ``pixdim``, padded/cropped to ``spatial_size``), but
users want results on the scan they gave as fixed image. :class:`RegistrationWriter` maps the network's voxel DDF
to a physical displacement at every native fixed voxel (:func:`monai_vmorph.io.native_displacement`) and warps the
*native* moving scan (original intensities and resolution) by it in one resampling
(:func:`monai_vmorph.io.warp_physical`), exactly as the ``monai-vmorph register`` command does.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.utils import CommonKeys

from monai_vmorph.data.keys import FIXED_IMAGE, FIXED_NAME, MOVING_IMAGE, MOVING_LABEL, MOVING_NAME
from monai_vmorph.errors import UserError
from monai_vmorph.io import native_displacement, warp_physical, write_itk_displacement
from monai_vmorph.io.atomic import FileSet
from monai_vmorph.pipeline.outputs import nifti_like
from monai_vmorph.pipeline.scan import NativeScan, read_scan
from monai_vmorph.pipeline.transforms import AFFINE_META_KEY

__all__ = ["RegistrationWriter"]

_KINDS = ("warped", "ddf", "warped_label")


def _batch_affine(batch: MetaTensor, i: int, ndim: int) -> np.ndarray:
    """The ``(ndim + 1)``-square affine of item ``i`` of a collated MetaTensor."""
    affines = batch.affine
    return to_affine_nd(ndim, np.asarray(affines[i] if affines.dim() == 3 else affines, dtype=np.float64))


def _source_file(batch: MetaTensor, i: int) -> str | None:
    names = batch.meta.get("filename_or_obj")
    name = names[i] if isinstance(names, (list, tuple)) else names
    return name if isinstance(name, str) and name else None


def _pre_alignment(batch: MetaTensor, i: int, ndim: int) -> np.ndarray:
    """Item ``i``'s affine-stage matrix (:class:`monai_vmorph.pipeline.AffineAlignd`), the identity without one."""
    matrix = batch.meta.get(AFFINE_META_KEY)
    if matrix is None:
        return np.eye(ndim + 1)
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix[i] if matrix.ndim == 3 else matrix


def _load_native(batch: MetaTensor, i: int, ndim: int, role: str, labels: bool = False) -> NativeScan:
    """Item ``i`` of a collated batch on its native grid: re-read from its source file by the pipeline's reader
    (:func:`monai_vmorph.pipeline.read_scan`: its header and 2D rules), or the preprocessed tensor itself (first
    channel) when it was not loaded from a file."""
    path = _source_file(batch, i)
    if path is None:
        return NativeScan.from_array(batch[i][0].detach().cpu().numpy(), _batch_affine(batch, i, ndim))
    scan = read_scan(path, role, labels=labels, keep_integer=labels)
    if scan.ndim != ndim:
        raise UserError(f"{role} {path} is {scan.ndim}D but the bundle registers {ndim}D images")
    return scan


class RegistrationWriter:
    """Evaluator postprocessing that saves each pair's results on the native grid of its fixed scan.

    For a pair ``<moving>_to_<fixed>`` it writes, with the fixed scan file's own affine and shape:

    * ``..._warped.nii.gz``: the native moving scan (original intensities, float32) warped onto the fixed grid;
    * ``..._ddf.nii.gz``: the transform as an **ITK displacement field** (LPS millimetres, ``(X, Y, Z, 1, 3)``, see
      :mod:`monai_vmorph.io.itk_fields`; in 2D a field of the slice plane, ``(X, Y, 1, 1, 2)``, with no z position)
      that ``sitk.DisplacementFieldTransform``, ANTs' ``antsApplyTransforms`` and 3D Slicer apply directly, and
      ``monai-vmorph warp`` applies to other images;
    * ``..._warped_label.nii.gz``: the moving label map warped the same way (``label`` interpolation), when the pair
      has one; stored in the label file's own type.

    The network's field, in voxels of the preprocessed grids, becomes a physical displacement with
    :func:`monai_vmorph.io.native_displacement` (the moving image's preprocessed grid may differ from the fixed
    one: the network matched voxels, and that is what is reproduced). Native images are re-read from the files the
    batch was loaded from; an image given as an in-memory tensor is its own "native" grid. Existing files are never
    replaced unless ``overwrite=True``: the check runs before anything is computed, and a pair's files are all written
    under temporary names and renamed together at the end, so a failure leaves none of them, half-written or not.

    Args:
        output_dir: folder for the files (created if missing).
        overwrite: replace existing output files.
    """

    def __init__(self, output_dir: str | os.PathLike, overwrite: bool = False) -> None:
        self.output_dir = os.fspath(output_dir)
        self.overwrite = overwrite

    def _path(self, stem: str, kind: str) -> str:
        return os.path.join(self.output_dir, f"{stem}_{kind}.nii.gz")

    def _write_pair(
        self,
        stem: str,
        arrays: dict[str, tuple[np.ndarray, np.dtype | None]],
        fixed: NativeScan,
        displacement: np.ndarray,
    ) -> None:
        """Write a pair's files (``arrays``: kind -> (voxels, stored type)) under temporary names, each read back
        whole, then rename them all: a failure (a full disk: one line,
        :class:`~monai_vmorph.io.atomic.OutputWriteError`) leaves none of them."""
        with FileSet() as files:
            for kind, (array, dtype) in arrays.items():
                files.add_nifti(self._path(stem, kind), nifti_like(array, fixed, dtype))
            files.add(
                self._path(stem, "ddf"), lambda tmp: write_itk_displacement(tmp, displacement, fixed.affine, True)
            )
            files.commit()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = data[CommonKeys.PRED]
        fixed, moving, labels = data[FIXED_IMAGE], data[MOVING_IMAGE], data.get(MOVING_LABEL)
        ndim = result.ddf.shape[1]
        stems = [f"{m}_to_{f}" for m, f in zip(data[MOVING_NAME], data[FIXED_NAME], strict=True)]
        kinds = _KINDS if isinstance(labels, MetaTensor) else _KINDS[:2]
        if not self.overwrite:
            existing = [p for s in stems for p in (self._path(s, k) for k in kinds) if os.path.exists(p)]
            if existing:
                raise UserError(f"{existing[0]} exists; pass --overwrite true (or another --output_dir) to replace it")
        os.makedirs(self.output_dir, exist_ok=True)
        for i, stem in enumerate(stems):
            native_fixed = _load_native(fixed, i, ndim, "fixed image")
            native_moving = _load_native(moving, i, ndim, "moving image")
            shape = native_fixed.array.shape
            displacement = native_displacement(
                result.ddf[i].detach().float(),
                _batch_affine(fixed, i, ndim),
                shape,
                native_fixed.affine,
                moving_net_affine=_pre_alignment(moving, i, ndim) @ _batch_affine(moving, i, ndim),
            )
            args = (shape, native_fixed.affine, displacement)
            warped = warp_physical(native_moving.array.astype(np.float32), native_moving.affine, *args, mode="linear")
            arrays = {"warped": (np.asarray(warped, dtype=np.float32), None)}
            if isinstance(labels, MetaTensor):
                native_labels = _load_native(labels, i, ndim, "moving label", labels=True)
                warped_labels = warp_physical(native_labels.array, native_labels.affine, *args, mode="label")
                arrays["warped_label"] = (np.asarray(warped_labels), native_labels.file_dtype)
            self._write_pair(stem, arrays, native_fixed, displacement)
        return dict(data)
