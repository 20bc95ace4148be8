"""Registration networks: the VoxelMorph UNet, the seed post's UNet and the VoxelMorph framework."""

from monai_vmorph.networks.nets.double_conv_unet import DoubleConvUNet
from monai_vmorph.networks.nets.pair_input import PairInputNet
from monai_vmorph.networks.nets.voxelmorph import BACKBONES, RegistrationResult, VoxelMorph
from monai_vmorph.networks.nets.voxelmorph_unet import VoxelMorphUNet

__all__ = ["BACKBONES", "DoubleConvUNet", "PairInputNet", "RegistrationResult", "VoxelMorph", "VoxelMorphUNet"]
