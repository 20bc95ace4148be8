"""Building blocks for registration networks: warping, integration, inversion, field resizing and the decoder's
convolution of an upsampled tensor at low resolution."""

from monai_vmorph.networks.blocks.integrate import VecInt, integrate_velocity
from monai_vmorph.networks.blocks.invert import invert_ddf
from monai_vmorph.networks.blocks.resize import ResizeField, field_scale_factors, resize_field
from monai_vmorph.networks.blocks.upsample_conv import conv_nearest_up2
from monai_vmorph.networks.blocks.warp import SpatialTransformer, identity_grid, linear_mode, warp

__all__ = [
    "ResizeField",
    "SpatialTransformer",
    "VecInt",
    "conv_nearest_up2",
    "field_scale_factors",
    "identity_grid",
    "integrate_velocity",
    "invert_ddf",
    "linear_mode",
    "resize_field",
    "warp",
]
