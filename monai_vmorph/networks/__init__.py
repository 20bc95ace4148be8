"""Networks and blocks (tensors only). Fields are in voxel units, channel k along array axis k; see
:mod:`monai_vmorph.networks.blocks.warp` for the convention."""

from monai_vmorph.networks.blocks import (
    ResizeField,
    SpatialTransformer,
    VecInt,
    conv_nearest_up2,
    field_scale_factors,
    identity_grid,
    integrate_velocity,
    invert_ddf,
    resize_field,
    warp,
)
from monai_vmorph.networks.nets import (
    BACKBONES,
    DoubleConvUNet,
    PairInputNet,
    RegistrationResult,
    VoxelMorph,
    VoxelMorphUNet,
)

__all__ = [
    "BACKBONES",
    "DoubleConvUNet",
    "PairInputNet",
    "RegistrationResult",
    "ResizeField",
    "SpatialTransformer",
    "VecInt",
    "VoxelMorph",
    "VoxelMorphUNet",
    "conv_nearest_up2",
    "field_scale_factors",
    "identity_grid",
    "integrate_velocity",
    "invert_ddf",
    "resize_field",
    "warp",
]
