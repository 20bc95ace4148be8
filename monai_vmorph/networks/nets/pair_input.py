"""A one-tensor-in, one-tensor-out view of :class:`VoxelMorph` for MONAI's bundle tools.

MONAI's ``verify_net_in_out``, ``ckpt_export`` and the ``network_data_format`` of a bundle's metadata describe
a network with one input tensor and one output tensor. :class:`PairInputNet` takes the moving and fixed images
concatenated along the channels and returns the warped image and the displacement field concatenated the same
way. It shares its parameters with the wrapped model (state-dict keys are prefixed with ``model.``).
"""

from __future__ import annotations

import torch
from torch import nn

from monai_vmorph.networks.nets.voxelmorph import VoxelMorph

__all__ = ["PairInputNet"]


class PairInputNet(nn.Module):
    """``(B, 2C, *S)`` = [moving, fixed] → ``(B, C + ndim, *S)`` = [warped moving, ddf (voxels)].

    Args:
        model: the registration model (``in_channels = C``).
    """

    def __init__(self, model: VoxelMorph) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Register channel block ``[:C]`` (moving) to ``[C:]`` (fixed) of ``image`` ``(B, 2C, *S)``."""
        c = self.model.in_channels
        if image.dim() < 2 or image.shape[1] != 2 * c:
            raise ValueError(
                f"image must stack moving and fixed along the channels, (B, {2 * c}, *S), got {list(image.shape)}."
            )
        out = self.model(image[:, :c], image[:, c:])
        return torch.cat([out.warped, out.ddf], dim=1)
