"""Writing registration results of an evaluator run as NIfTI files on the fixed image's grid."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.utils import CommonKeys

from monai_vmorph.data.keys import FIXED_IMAGE, FIXED_NAME, MOVING_NAME
from monai_vmorph.io.atomic import atomic_write

__all__ = ["RegistrationWriter"]


class RegistrationWriter:
    """Evaluator postprocessing that saves ``<moving>_to_<fixed>_warped.nii.gz`` and ``..._ddf.nii.gz``.

    Both files carry the affine of the (preprocessed) fixed image, so they overlay it in any viewer. The
    warped image is ``(*S)`` (``(*S, C)`` for several channels); the DDF file holds ``(*S, ndim)`` voxel
    displacements in the package convention (component ``k`` along array axis ``k`` of that grid), not an ITK
    displacement field in physical LPS millimetres. Existing files are never replaced unless
    ``overwrite=True``; the check runs before anything is written, and each file is written to a temporary
    name and renamed, so an interrupted run leaves no half-written file.

    Args:
        output_dir: folder for the files (created if missing).
        overwrite: replace existing output files.
    """

    def __init__(self, output_dir: str | os.PathLike, overwrite: bool = False) -> None:
        self.output_dir = os.fspath(output_dir)
        self.overwrite = overwrite

    def _path(self, stem: str, kind: str) -> str:
        return os.path.join(self.output_dir, f"{stem}_{kind}.nii.gz")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result, fixed = data[CommonKeys.PRED], data[FIXED_IMAGE]
        stems = [f"{m}_to_{f}" for m, f in zip(data[MOVING_NAME], data[FIXED_NAME], strict=True)]
        if not self.overwrite:
            existing = [p for s in stems for p in (self._path(s, "warped"), self._path(s, "ddf")) if os.path.exists(p)]
            if existing:
                raise FileExistsError(
                    f"{existing[0]} exists; pass overwrite=True (or another output_dir) to replace it."
                )
        os.makedirs(self.output_dir, exist_ok=True)
        affines = fixed.affine if isinstance(fixed, MetaTensor) else None
        for i, stem in enumerate(stems):
            affine = np.eye(4)
            if affines is not None:
                affine = to_affine_nd(3, np.asarray(affines[i] if affines.dim() == 3 else affines, dtype=np.float64))
            for kind, tensor in (("warped", result.warped[i]), ("ddf", result.ddf[i])):
                array = np.moveaxis(tensor.detach().float().cpu().numpy(), 0, -1)
                if kind == "warped" and array.shape[-1] == 1:
                    array = array[..., 0]
                atomic_write(self._path(stem, kind), nib.Nifti1Image(array, affine).to_filename)
        return dict(data)
