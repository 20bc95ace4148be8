"""Loading and preprocessing of registration pairs, built from MONAI dictionary transforms.

The chain (each step a MONAI transform unless noted) is::

    LoadImaged (keeps the affine in a MetaTensor, channel first)
    -> EnsureSpatialDimsd (ours: 2D data may arrive as a 3D file with one slice; mixed 2D/3D is an error)
    -> Orientationd (RAS, or RA in 2D)
    -> Spacingd (optional target spacing in mm; images linear, labels nearest)
    -> ScaleIntensityRangePercentilesd (images only: percentiles -> [0, 1], clipped)
    -> ResizeWithPadOrCropd (to a fixed shape) or DivisiblePadd (to a multiple of the network's divisor)
    -> EnsureTyped (float32)

Every step updates the MetaTensor's affine, so world coordinates are kept exactly: a voxel's physical
position before and after the chain is the same point (checked in ``tests/transforms``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    DivisiblePadd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    ResizeWithPadOrCropd,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)

from monai_vmorph.io import HeaderRuleNibabelReader
from monai_vmorph.keys import FIXED_IMAGE, FIXED_LABEL, MOVING_IMAGE, MOVING_LABEL

__all__ = ["INTENSITY_PERCENTILES", "EnsureSpatialDimsd", "registration_preprocessing"]

#: Intensity percentiles mapped to [0, 1] (clipped) before registration: shared by the bundles' preprocessing and
#: the command line, which must normalise scans exactly as the weights were trained.
INTENSITY_PERCENTILES = (1.0, 99.0)

# axis letters of the RAS convention (NIfTI world space), passed explicitly to Orientationd
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def _source(x: object) -> str:
    meta = getattr(x, "meta", {}) or {}
    return str(meta.get("filename_or_obj", "<in-memory tensor>"))


class EnsureSpatialDimsd(MapTransform):
    """Make ``(C, *S)`` tensors have exactly ``spatial_dims`` spatial dims, dropping trailing size-1 axes.

    A 2D slice is often stored as a 3D NIfTI with one slice (``(C, H, W, 1)``); this squeezes it to
    ``(C, H, W)`` and keeps the affine consistent. Anything else with the wrong number of dims (a 3D volume
    given to a 2D pipeline, a 4D series) raises a ``ValueError`` naming the file.

    Args:
        keys: keys to check.
        spatial_dims: 2 or 3.
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(self, keys: KeysCollection, spatial_dims: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            while x.dim() - 1 > self.spatial_dims and x.shape[-1] == 1:
                x = self._drop_last_axis(x)
            if x.dim() - 1 != self.spatial_dims:
                raise ValueError(
                    f"{_source(x)}: expected a {self.spatial_dims}D image for {key!r}, got spatial shape "
                    f"{tuple(x.shape[1:])}; pairs and models must all be 2D or all 3D."
                )
            d[key] = x
        return d

    @staticmethod
    def _drop_last_axis(x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, MetaTensor):
            return x[..., 0]
        affine = x.affine
        n = affine.shape[0] - 1  # spatial rank of the affine
        keep = [*range(n - 1), n]
        reduced = affine[keep][:, keep]
        meta = {k: v for k, v in x.meta.items() if k != "affine"}
        return MetaTensor(x.as_tensor()[..., 0], affine=reduced, meta=meta)


def registration_preprocessing(
    spatial_dims: int = 3,
    image_keys: Sequence[str] = (MOVING_IMAGE, FIXED_IMAGE),
    label_keys: Sequence[str] = (MOVING_LABEL, FIXED_LABEL),
    pixdim: Sequence[float] | float | None = None,
    spatial_size: Sequence[int] | None = None,
    divisor: int = 16,
    percentiles: tuple[float, float] = INTENSITY_PERCENTILES,
    load: bool = True,
    alignment: Callable | None = None,
) -> Compose:
    """The standard preprocessing chain for registration pairs (see the module docstring).

    Args:
        spatial_dims: 2 or 3.
        image_keys: intensity images (linear interpolation, percentile normalisation).
        label_keys: label maps (nearest interpolation, no normalisation); missing keys are skipped.
        pixdim: target spacing in mm (one value or one per axis), or ``None`` to keep the native spacing.
        spatial_size: pad/crop every key to this shape (needed when moving and fixed images come from
            different grids); ``None`` pads to a multiple of ``divisor`` instead.
        divisor: with ``spatial_size=None``, pad so each axis is divisible by this.
        percentiles: lower/upper intensity percentiles mapped to 0 and 1 (values clipped).
        load: start with ``LoadImaged`` (``False`` when the data already holds tensors / MetaTensors).
        alignment: a dictionary transform run on the pair's native images (after loading, before reorientation and
            resampling), e.g. :class:`monai_vmorph.pipeline.AffineAlignd` for affine pre-alignment in inference.

    Returns:
        A MONAI ``Compose``; its output tensors are float32 ``(C, *S)`` MetaTensors with correct affines.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    lower, upper = percentiles
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {percentiles!r}.")
    image_keys, label_keys = list(image_keys), list(label_keys)
    keys = image_keys + label_keys
    modes = ["bilinear"] * len(image_keys) + ["nearest"] * len(label_keys)
    chain: list = []
    if load:
        chain.append(
            LoadImaged(
                keys,
                reader=HeaderRuleNibabelReader(),
                ensure_channel_first=True,
                image_only=True,
                allow_missing_keys=True,
            )
        )
    chain.append(EnsureSpatialDimsd(keys, spatial_dims, allow_missing_keys=True))
    if alignment is not None:
        chain.append(alignment)
    chain.append(Orientationd(keys, axcodes="RAS"[:spatial_dims], labels=_RAS_LABELS, allow_missing_keys=True))
    if pixdim is not None:
        chain.append(Spacingd(keys, pixdim=pixdim, mode=modes, padding_mode="zeros", allow_missing_keys=True))
    chain.append(
        ScaleIntensityRangePercentilesd(image_keys, lower, upper, 0.0, 1.0, clip=True, allow_missing_keys=True)
    )
    if spatial_size is not None:
        chain.append(ResizeWithPadOrCropd(keys, spatial_size=spatial_size, allow_missing_keys=True))
    else:
        chain.append(DivisiblePadd(keys, k=divisor, allow_missing_keys=True))
    chain.append(EnsureTyped(keys, dtype=torch.float32, allow_missing_keys=True))
    return Compose(chain)
