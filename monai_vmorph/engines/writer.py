"""Writing registration results of an evaluator run as NIfTI files on the fixed image's grid."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

from monai.data import MetaTensor
from monai.transforms import SaveImage
from monai.utils import CommonKeys

from monai_vmorph.data.keys import FIXED_IMAGE, FIXED_NAME, MOVING_NAME

__all__ = ["RegistrationWriter"]


class RegistrationWriter:
    """Evaluator postprocessing that saves ``<moving>_to_<fixed>_warped.nii.gz`` and ``..._ddf.nii.gz``.

    Both files carry the affine of the (preprocessed) fixed image, so they overlay it in any viewer. The
    DDF file holds ``(*S, ndim)`` voxel displacements in the package convention (component ``k`` along array
    axis ``k`` of that grid), not an ITK displacement field in physical LPS millimetres.
    Existing files are never replaced unless ``overwrite=True``; the check runs before anything is written.

    Args:
        output_dir: folder for the files (created if missing).
        overwrite: replace existing output files.
        output_ext: file extension.
    """

    def __init__(self, output_dir: str | os.PathLike, overwrite: bool = False, output_ext: str = ".nii.gz") -> None:
        self.output_dir = os.fspath(output_dir)
        self.overwrite = overwrite
        self.output_ext = output_ext
        self._savers = {
            kind: SaveImage(
                output_dir=self.output_dir,
                output_postfix=kind,
                output_ext=output_ext,
                resample=False,
                separate_folder=False,
                print_log=False,
            )
            for kind in ("warped", "ddf")
        }

    def _path(self, stem: str, kind: str) -> str:
        return os.path.join(self.output_dir, f"{stem}_{kind}{self.output_ext}")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result, fixed = data[CommonKeys.PRED], data[FIXED_IMAGE]
        moving_names, fixed_names = data[MOVING_NAME], data[FIXED_NAME]
        affines = fixed.affine if isinstance(fixed, MetaTensor) else None
        stems = [f"{m}_to_{f}" for m, f in zip(moving_names, fixed_names, strict=True)]
        if not self.overwrite:
            existing = [p for s in stems for p in (self._path(s, "warped"), self._path(s, "ddf")) if os.path.exists(p)]
            if existing:
                raise FileExistsError(
                    f"{existing[0]} exists; pass overwrite=True (or another output_dir) to replace it."
                )
        os.makedirs(self.output_dir, exist_ok=True)
        for i, stem in enumerate(stems):
            affine = affines[i] if affines is not None and affines.dim() == 3 else affines
            for kind, tensor in (("warped", result.warped[i]), ("ddf", result.ddf[i])):
                image = MetaTensor(tensor.detach().float().cpu(), affine=affine, meta={"filename_or_obj": stem})
                self._savers[kind](image)
        return dict(data)
