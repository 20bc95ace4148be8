"""The UNet of the VoxelMorph paper (Balakrishnan et al., IEEE TMI 2019), for any ``spatial_dims``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers import Conv, Pool
from torch import nn

from monai_vmorph.networks.blocks.upsample_conv import CHANNELS_LAST, conv_nearest_up2, memory_format_of

__all__ = ["CHANNELS_LAST", "VoxelMorphUNet"]

#: LeakyReLU(0.2) in place: its backward needs only the output, and an in-place activation avoids allocating
#: (and page-faulting) a second full-size tensor per block, the largest cost after the convolutions on CPU.
LEAKY_RELU_0_2 = ("leakyrelu", {"negative_slope": 0.2, "inplace": True})


def conv_act(spatial_dims: int, in_channels: int, out_channels: int, act: str | tuple = LEAKY_RELU_0_2) -> Convolution:
    """3×3(×3) convolution, stride 1, followed by an activation (VoxelMorph's ``ConvBlock``)."""
    return Convolution(spatial_dims, in_channels, out_channels, kernel_size=3, act=act, norm=None, adn_ordering="A")


def _has_forward_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward (pre-)hooks of its own.

    Global module hooks are not counted: profilers and PyTorch's ``FlopCounterMode`` install them to track which
    module runs, not to read a convolution's input, and they would switch the rewrite off wherever they measure it.
    """
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _is_plain_3x3(conv: nn.Module) -> bool:
    """Whether ``conv`` is a 3×3(×3) convolution, stride 1, zero padding 1, no dilation or groups."""
    n = len(conv.kernel_size)
    return (
        conv.kernel_size == (3,) * n
        and conv.stride == (1,) * n
        and conv.padding == (1,) * n
        and conv.dilation == (1,) * n
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not conv.transposed
    )


@torch.jit.unused
def up_concat_conv_act(block: Convolution, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``block(torch.cat([upsample(low), skip], dim=1))`` for a :func:`conv_act` block, with 2× nearest upsampling.

    The convolution of the concatenation is the sum of the convolutions of its two parts by the matching slices
    of the weight. The upsampled part is computed at ``low``'s resolution by
    :func:`~monai_vmorph.networks.blocks.upsample_conv.conv_nearest_up2` (27/8 times fewer multiply-adds in 3D,
    no upsampled tensor) and added in place to the skip part's convolution (which carries the bias); neither the
    upsampled tensor nor the concatenation is built. At 96×112×96 on 2 CPU cores (A/B in one process,
    ``BENCHMARKS.md``) the paper network's float32 training step took 0.70× the time of the concatenation (inference
    0.73×; bfloat16 0.79× and 0.93×). Results equal the block's up to float rounding.

    Under autocast the two bfloat16/float16 convolutions are summed in float32, so the sum is rounded once, by
    the next layer's cast, as a single reduced-precision convolution's output is. A block whose convolution is
    not a plain 3×3(×3) one, or has forward hooks of its own (FLOP counters, feature extractors, which must see
    the real input), is called as a module on the concatenation, as it is under ``torch.jit.trace`` (TorchScript and
    ONNX exports, which cannot hold the rewrite's Python autograd function). The weights, and so checkpoints, are
    ``block``'s.
    """
    conv = block.conv
    if torch.jit.is_tracing() or _has_forward_hooks(conv) or not _is_plain_3x3(conv):
        return block(torch.cat([F.interpolate(low, scale_factor=2, mode="nearest"), skip], dim=1))
    if low.shape[1] + skip.shape[1] != conv.in_channels:
        raise ValueError(
            f"the parts have {[low.shape[1], skip.shape[1]]} channels; the convolution takes {conv.in_channels}."
        )
    split = low.shape[1]
    memory_format = memory_format_of(skip)
    out = conv._conv_forward(skip, conv.weight[:, split:].contiguous(memory_format=memory_format), conv.bias)
    if out.dtype in (torch.bfloat16, torch.float16):  # autocast: sum in float32, rounded once by the next layer
        out = out.float()
    out = conv_nearest_up2(low, conv.weight[:, :split].contiguous(memory_format=memory_format), add_to=out)
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

    The decoder runs each convolution of an upsampled feature map and its skip at the low resolution, without the
    upsampled tensor or the concatenation (:func:`up_concat_conv_act`): the same function up to float rounding, with
    the paper network's 153.7 forward GFLOP at 96×112×96 executed as 109.2.

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
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        # pending: the next conv's input is the concatenation of upsample(low) and skip. TorchScript cannot hold
        # up_concat_conv_act's autograd function: there the block takes the concatenation.
        pending, low, skip = False, x, x
        for level, block in enumerate(self.decoder):
            if not pending:
                x = block(x)
            elif torch.jit.is_scripting():
                x = block(torch.cat([self.upsample(low), skip], dim=1))
            else:
                x = up_concat_conv_act(block, low, skip)
            pending = not self._stays(level)
            if pending:
                low, skip = x, skips.pop()
        for block in self.final:
            if not pending:
                x = block(x)
            elif torch.jit.is_scripting():
                x = block(torch.cat([self.upsample(low), skip], dim=1))
            else:
                x = up_concat_conv_act(block, low, skip)
            pending = False
        if pending:  # no final convs: the flow head takes the concatenation
            x = torch.cat([self.upsample(low), skip], dim=1)
        return self.flow(x)
