"""The UNet of the VoxelMorph paper (Balakrishnan et al., IEEE TMI 2019), for any ``spatial_dims``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers import Conv, Pool
from torch import nn
from torch.nn.modules import module as module_state

__all__ = ["VoxelMorphUNet"]

#: LeakyReLU(0.2) in place: its backward needs only the output, and an in-place activation avoids allocating
#: (and page-faulting) a second full-size tensor per block, the largest cost after the convolutions on CPU.
LEAKY_RELU_0_2 = ("leakyrelu", {"negative_slope": 0.2, "inplace": True})


def conv_act(spatial_dims: int, in_channels: int, out_channels: int, act: str | tuple = LEAKY_RELU_0_2) -> Convolution:
    """3×3(×3) convolution, stride 1, followed by an activation (VoxelMorph's ``ConvBlock``)."""
    return Convolution(spatial_dims, in_channels, out_channels, kernel_size=3, act=act, norm=None, adn_ordering="A")


#: The channels-last memory format of a tensor with 2 or 3 spatial dims.
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def _channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels-last (and not also channels-first, as a one-channel tensor is)."""
    memory_format = CHANNELS_LAST.get(x.dim() - 2)
    return memory_format is not None and x.is_contiguous(memory_format=memory_format) and not x.is_contiguous()


def _has_forward_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` would run forward (pre-)hooks, its own or global ones."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module_state._global_forward_hooks
        or module_state._global_forward_pre_hooks
    )


def conv_act_concat(block: Convolution, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``block(torch.cat(parts, dim=1))`` for a :func:`conv_act` block, without the concatenation when channels-last.

    A convolution of a channel concatenation is the sum of the convolutions of its parts by the matching slices of
    the weight (the bias added once). In channels-last memory that avoids a slow copy in the backward pass: a channel
    slice of the concatenation's gradient is not contiguous there, and PyTorch's nearest-upsampling backward copies
    it into channels-first order (134 ms of a 3.2 s float32 training step of the paper network at 96×112×96 on 2
    CPU cores; the split step took 0.91× the time). The concatenation is still built in channels-first memory,
    where the slice is contiguous and the split was slower (1.07×), and under autocast, where each part's
    convolution would be rounded to bfloat16/float16 before the sum (a second rounding that a single convolution
    does not make) for a 1 % gain. A convolution with forward hooks (FLOP counters, feature extractors) is also
    called as a module on the concatenation, so that its hooks see its real input. The weights, and so checkpoints,
    are those of ``block``.
    """
    if len(parts) == 1:
        return block(parts[0])
    if (
        not _channels_last(parts[0])
        or torch.is_autocast_enabled(parts[0].device.type)
        or _has_forward_hooks(block.conv)
    ):
        return block(torch.cat(list(parts), dim=1))
    conv = block.conv
    if sum(part.shape[1] for part in parts) != conv.in_channels:
        raise ValueError(
            f"the parts have {[p.shape[1] for p in parts]} channels; the convolution takes {conv.in_channels}."
        )
    out, start = None, 0
    for part in parts:
        stop = start + part.shape[1]
        term = conv._conv_forward(part, conv.weight[:, start:stop], conv.bias if start == 0 else None)
        out = term if out is None else out + term
        start = stop
    return block.adn(out)


class VoxelMorphUNet(nn.Module):
    """The VoxelMorph UNet: predicts a ``spatial_dims``-channel field from a concatenated image pair.

    The default is the paper's architecture (the voxelmorph package's ``vm2`` features):

    * encoder: one conv + LeakyReLU(0.2) per level at 16, 32, 32, 32 channels, each followed by 2× max pooling;
    * decoder: one conv per level at 32, 32, 32, 32 channels, each followed by 2× nearest upsampling and
      concatenation with the encoder's skip at that resolution;
    * the remaining decoder channels (32, 16, 16) as convs at the output resolution (full resolution, or half
      resolution with ``half_res``);
    * a flow head: 3×3(×3) conv to ``out_channels`` with weights from N(0, 1e-5²) and zero bias, so an
      untrained model predicts an almost-zero field.

    Inputs must be divisible by :attr:`divisor` (``2 ** len(encoder_channels)``); :class:`VoxelMorph` pads them.

    ``half_res=True`` is voxelmorph's ``unet_half_res``: the last upsampling (and its skip connection) is skipped
    and the final convs and the flow head run at half resolution, so the field comes out at half size
    (:attr:`output_stride` 2). With ``int_downsize=2`` the field is integrated at half resolution anyway, and
    this removes the full-resolution convolutions that dominate the cost (about 4x fewer FLOPs).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the concatenated (moving, fixed) input, 2 for single-channel images.
        out_channels: channels of the predicted field; defaults to ``spatial_dims``.
        encoder_channels: output channels of the conv at each encoder level.
        decoder_channels: output channels of the decoder convs; the first ``len(encoder_channels)`` are one per
            level, any further ones are extra convs at full resolution.
        act: activation of every conv block (MONAI ``get_act_layer`` spec).
        flow_init_std: standard deviation of the flow head's initial weights.
        half_res: predict the field at half resolution (see above).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 2,
        out_channels: int | None = None,
        encoder_channels: Sequence[int] = (16, 32, 32, 32),
        decoder_channels: Sequence[int] = (32, 32, 32, 32, 32, 16, 16),
        act: str | tuple = LEAKY_RELU_0_2,
        flow_init_std: float = 1e-5,
        half_res: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        levels = len(encoder_channels)
        if levels < 1 or len(decoder_channels) < levels:
            raise ValueError(
                f"need at least one encoder level and as many decoder channels as encoder levels, got "
                f"encoder_channels={tuple(encoder_channels)}, decoder_channels={tuple(decoder_channels)}."
            )
        self.spatial_dims = spatial_dims
        self.divisor = 2**levels
        self._levels = levels
        self.half_res = bool(half_res)
        self.output_stride = 2 if self.half_res else 1
        out_channels = spatial_dims if out_channels is None else out_channels

        self.encoder = nn.ModuleList()
        skip_channels = []
        prev = in_channels
        for ch in encoder_channels:
            self.encoder.append(conv_act(spatial_dims, prev, ch, act))
            skip_channels.append(ch)
            prev = ch
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

        self.decoder = nn.ModuleList()
        for level, (ch, skip) in enumerate(zip(decoder_channels[:levels], reversed(skip_channels), strict=True)):
            self.decoder.append(conv_act(spatial_dims, prev, ch, act))
            prev = ch if self._stays(level) else ch + skip

        self.final = nn.ModuleList()
        for ch in decoder_channels[levels:]:
            self.final.append(conv_act(spatial_dims, prev, ch, act))
            prev = ch

        self.flow = Conv[Conv.CONV, spatial_dims](prev, out_channels, kernel_size=3, padding=1)
        nn.init.normal_(self.flow.weight, mean=0.0, std=flow_init_std)
        nn.init.zeros_(self.flow.bias)

    def _stays(self, level: int) -> bool:
        """Whether decoder ``level`` keeps its resolution (the last one with ``half_res``)."""
        return self.half_res and level == self._levels - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, *S)`` to a field ``(B, out_channels, *S / output_stride)``.

        ``S`` must be divisible by :attr:`divisor`.
        """
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        parts = [x]  # the input of the next conv, as channel blocks to concatenate
        for level, block in enumerate(self.decoder):
            x = conv_act_concat(block, parts)
            parts = [x] if self._stays(level) else [self.upsample(x), skips.pop()]
        for block in self.final:
            parts = [conv_act_concat(block, parts)]
        if len(parts) > 1:  # no final convs: the flow head takes the concatenation
            return self.flow(torch.cat(parts, dim=1))
        return self.flow(parts[0])
