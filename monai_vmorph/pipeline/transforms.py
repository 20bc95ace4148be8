"""The affine stage inside MONAI pipelines: bundle inference pre-aligns each pair before its preprocessing.

:class:`AffineAlignd` runs :func:`monai_vmorph.pipeline.affine_register` on a loaded pair's native images and
resamples the moving image (and its labels) onto the fixed image's native grid through the found matrix ``A``, so the
rest of the preprocessing (reorientation, spacing, cropping) sees an affinely aligned pair; ``A`` travels in the moving
images' metadata under :data:`AFFINE_META_KEY`, and :class:`monai_vmorph.engines.RegistrationWriter` composes it with
the network's field into one transform on the native grid (``T(p) = A @ M (q + u(q))``, as
:func:`monai_vmorph.pipeline.register_pair` does).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import MapTransform

from monai_vmorph.errors import UserError
from monai_vmorph.io import resample
from monai_vmorph.keys import FIXED_IMAGE, MOVING_IMAGE, MOVING_LABEL
from monai_vmorph.pipeline.affine import AFFINE_MODES, affine_register, aligned_moving_affine

__all__ = ["AFFINE_META_KEY", "AffineAlignd"]

#: Metadata key of the affine stage's matrix (RAS mm, fixed world -> moving world, ``(ndim + 1)``-square).
AFFINE_META_KEY = "vmorph_affine"


class AffineAlignd(MapTransform):
    """Affine pre-alignment of a loaded pair: the moving image and labels resampled onto the fixed native grid.

    Args:
        mode: one of :data:`monai_vmorph.pipeline.affine.AFFINE_MODES`; ``"none"`` passes the pair through (the
            identity matrix is still recorded).
        fixed_key: the fixed image (channel-first MetaTensor ``(C, *S)`` with its affine).
        moving_key: the moving image, registered on its first channel and resampled linearly.
        label_keys: moving label maps resampled with nearest neighbour (missing keys are skipped).
    """

    def __init__(
        self,
        mode: str = "affine",
        fixed_key: str = FIXED_IMAGE,
        moving_key: str = MOVING_IMAGE,
        label_keys: Sequence[str] = (MOVING_LABEL,),
    ) -> None:
        super().__init__([moving_key, *label_keys], allow_missing_keys=True)
        if mode not in AFFINE_MODES:
            raise UserError(f"affine mode {mode!r} is not one of {list(AFFINE_MODES)}; set the bundle's 'affine' key")
        self.mode, self.fixed_key, self.moving_key, self.label_keys = mode, fixed_key, moving_key, tuple(label_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        fixed, moving = d[self.fixed_key], d[self.moving_key]
        ndim = fixed.ndim - 1
        fixed_affine = to_affine_nd(ndim, np.asarray(fixed.affine, dtype=np.float64))
        moving_affine = to_affine_nd(ndim, np.asarray(moving.affine, dtype=np.float64))
        matrix = np.eye(ndim + 1)
        if self.mode != "none":
            result = affine_register(
                fixed[0].as_tensor(), fixed_affine, moving[0].as_tensor(), moving_affine, mode=self.mode
            )
            matrix = np.asarray(result.matrix, dtype=np.float64)
        for key in self.key_iterator(d):
            image = d[key]
            if self.mode != "none":
                interp = "nearest" if key in self.label_keys else "linear"
                own = to_affine_nd(ndim, np.asarray(image.affine, dtype=np.float64))
                values = resample(
                    image.as_tensor().float(), aligned_moving_affine(matrix, own), fixed.shape[1:], fixed_affine, interp
                )
                # on the fixed grid now: the fixed image's geometry metadata, the moving file's name (the writer
                # re-reads the native moving scan from it)
                name = image.meta.get("filename_or_obj")
                image = MetaTensor(values.to(image.dtype))
                image.copy_meta_from(fixed, copy_attr=True)  # affine, spatial rank, shape metadata
                image.meta["filename_or_obj"] = name
            image.meta[AFFINE_META_KEY] = torch.as_tensor(matrix)
            d[key] = image
        return d
