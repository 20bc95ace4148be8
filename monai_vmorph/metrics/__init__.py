"""Registration metrics (tensors only): Jacobian regularity of displacement fields and per-label overlap.

Fields follow the package convention (voxel units, channel ``k`` along array axis ``k``); see
:mod:`monai_vmorph.networks.blocks.warp`.
"""

from monai_vmorph.metrics.displacement import endpoint_error
from monai_vmorph.metrics.jacobian import folding_fraction, jacobian_determinant, jacobian_matrix, sdlogj
from monai_vmorph.metrics.labels import label_dice, label_hd95

__all__ = [
    "endpoint_error",
    "folding_fraction",
    "jacobian_determinant",
    "jacobian_matrix",
    "label_dice",
    "label_hd95",
    "sdlogj",
]
