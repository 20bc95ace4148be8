"""Registration metrics: Jacobian regularity of displacement fields, per-label overlap and landmark error (TRE).

Fields follow the package convention (voxel units, channel ``k`` along array axis ``k``, tensors); see
:mod:`monai_vmorph.networks.blocks.warp`. :mod:`monai_vmorph.metrics.learn2reg` holds the Learn2Reg challenge's
own definitions on its NumPy field format ``(*S, ndim)``, for numbers that compare with its leaderboards.
"""

from monai_vmorph.metrics.displacement import endpoint_error
from monai_vmorph.metrics.jacobian import folding_fraction, jacobian_determinant, jacobian_matrix, sdlogj
from monai_vmorph.metrics.labels import label_dice, label_hd95
from monai_vmorph.metrics.landmarks import TRE_STATISTICS, landmark_distances, tre_summary
from monai_vmorph.metrics.learn2reg import (
    learn2reg_dice,
    learn2reg_hd95,
    learn2reg_sdlogj,
    learn2reg_tre,
    learn2reg_warp_labels,
    robust_hausdorff,
    surface_distances,
)

__all__ = [
    "TRE_STATISTICS",
    "endpoint_error",
    "folding_fraction",
    "jacobian_determinant",
    "jacobian_matrix",
    "label_dice",
    "label_hd95",
    "landmark_distances",
    "learn2reg_dice",
    "learn2reg_hd95",
    "learn2reg_sdlogj",
    "learn2reg_tre",
    "learn2reg_warp_labels",
    "robust_hausdorff",
    "sdlogj",
    "surface_distances",
    "tre_summary",
]
