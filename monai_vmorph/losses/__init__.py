"""Registration losses: image similarity, field regularisation and label overlap (2D and 3D).

Images and label maps are ``(B, C, *S)``; fields are ``(B, ndim, *S)`` in voxel units, channel ``k`` along
array axis ``k`` (see :mod:`monai_vmorph.networks.blocks.warp`). Every function returns a scalar tensor and
raises :class:`ValueError` on malformed inputs.
"""

from monai_vmorph.losses.dice import DiceLoss, one_hot_labels, soft_dice_loss
from monai_vmorph.losses.mind import MINDSSCLoss, mind_ssc, mind_ssc_loss
from monai_vmorph.losses.registration import SIMILARITY_LOSSES, RegistrationLoss
from monai_vmorph.losses.regularisation import GradLoss, gradient_loss
from monai_vmorph.losses.similarity import LocalNCCLoss, MSELoss, local_ncc, mse

__all__ = [
    "SIMILARITY_LOSSES",
    "DiceLoss",
    "GradLoss",
    "LocalNCCLoss",
    "MINDSSCLoss",
    "MSELoss",
    "RegistrationLoss",
    "gradient_loss",
    "local_ncc",
    "mind_ssc",
    "mind_ssc_loss",
    "mse",
    "one_hot_labels",
    "soft_dice_loss",
]
