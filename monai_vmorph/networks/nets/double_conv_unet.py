"""The UNet of the project's seed blog post (a 2D VoxelMorph tutorial), for any ``spatial_dims``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers import Conv, Pool
from torch import nn

__all__ = ["DoubleConvUNet"]


class DoubleConv(nn.Sequential):
    """[3×3(×3) conv without bias → BatchNorm → ReLU] × 2."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__(
            Convolution(
                spatial_dims,
                in_channels,
                out_channels,
                bias=False,
                norm="batch",
                act="relu",
                adn_ordering="NA",
            ),
            Convolution(
                spatial_dims,
                out_channels,
                out_channels,
                bias=False,
                norm="batch",
                act="relu",
                adn_ordering="NA",
            ),
        )


class DoubleConvUNet(nn.Module):
    """The seed post's UNet: double-conv blocks with BatchNorm, features 64–512, transposed-conv upsampling.

    Layers, top to bottom (``f`` = ``features``): an encoder of ``DoubleConv(in, f[0])``,
    ``DoubleConv(f[0], f[1])``, … each followed by 2× max pooling; a bottleneck ``DoubleConv(f[-1], 2 f[-1])``;
    a decoder that for each level (deepest first) upsamples with ``ConvTranspose(2 f, f, 2, stride 2)``,
    concatenates ``[skip, upsampled]`` and applies ``DoubleConv(2 f, f)``; and a 1×1 conv head to
    ``out_channels``. With ``spatial_dims=2`` and the defaults it has exactly the seed model's layers and
    parameters, in the same order. Unlike the seed, inputs must be divisible by :attr:`divisor`
    (:class:`VoxelMorph` pads them) instead of resizing feature maps.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the concatenated (moving, fixed) input.
        out_channels: channels of the predicted field; defaults to ``spatial_dims``.
        features: channels of the encoder levels.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 2,
        out_channels: int | None = None,
        features: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if len(features) < 1:
            raise ValueError(f"features must list at least one level, got {tuple(features)}.")
        self.spatial_dims = spatial_dims
        self.divisor = 2 ** len(features)
        out_channels = spatial_dims if out_channels is None else out_channels

        self.encoder = nn.ModuleList()
        prev = in_channels
        for f in features:
            self.encoder.append(DoubleConv(spatial_dims, prev, f))
            prev = f
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.bottleneck = DoubleConv(spatial_dims, features[-1], 2 * features[-1])

        self.upsamples = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for f in reversed(features):
            self.upsamples.append(Conv[Conv.CONVTRANS, spatial_dims](2 * f, f, kernel_size=2, stride=2))
            self.decoder.append(DoubleConv(spatial_dims, 2 * f, f))
        self.head = Conv[Conv.CONV, spatial_dims](features[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, *S)`` to ``(B, out_channels, *S)``; ``S`` divisible by ``divisor``."""
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, block in zip(self.upsamples, self.decoder):  # noqa: B905 (TorchScript: no strict; equal lengths)
            x = block(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.head(x)
