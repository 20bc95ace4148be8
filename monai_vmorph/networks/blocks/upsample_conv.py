"""A 3×3(×3) convolution of a 2× nearest-upsampled tensor, computed at the low resolution.

The VoxelMorph decoder upsamples a feature map by 2 (nearest neighbour) and convolves it (with the skip
connection) by a 3×3(×3) kernel, zero-padded. Every output voxel ``2 i + p`` (parity ``p`` per axis) then sees
only 2 distinct input voxels per axis: with the kernel taps ``w[0], w[1], w[2]`` along an axis,

* parity 0: ``w[0] x[i - 1] + (w[1] + w[2]) x[i]``,
* parity 1: ``(w[0] + w[1]) x[i] + w[2] x[i + 1]``,

with ``x`` zero outside the grid, as the zero padding of the upsampled tensor is. So the ``2**ndim`` parities are
one 2×2(×2) convolution of the low-resolution ``x`` (padded by one voxel) with ``2**ndim`` collapsed kernels, and
the results are interleaved. This is the same function, with ``27 / 8`` (3D) or ``9 / 4`` (2D) times fewer
multiply-adds and no full-resolution upsampled tensor; the results differ by float rounding only (the order of
the sums). Neither MONAI nor PyTorch does this rewrite (``F.interpolate`` and the convolution are separate
kernels), hence this module.

Shapes: ``x`` is ``(B, C, *S)``, the result ``(B, O, *2S)``; every function keeps the input's memory format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_vmorph.precision import full_precision

__all__ = ["CHANNELS_LAST", "conv_nearest_up2", "memory_format_of", "parity_weights"]

#: The channels-last memory format of a tensor with 2 or 3 spatial dims.
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def parity_weights(weight: torch.Tensor) -> torch.Tensor:
    """Collapse a 3×3(×3) kernel into the 2×2(×2) kernels of the ``2**ndim`` output parities.

    Args:
        weight: ``(O, C, 3, ..., 3)`` convolution weight.

    Returns:
        ``(2**ndim * O, C, 2, ..., 2)``: the kernel of parity ``(p_0, ..., p_{ndim-1})`` (each 0 or 1) is block
        ``sum_a p_a 2**(ndim - 1 - a)`` of ``O`` output channels (the first axis is the most significant).
    """
    ndim = weight.dim() - 2
    if ndim not in _EINSUM or any(k != 3 for k in weight.shape[2:]):
        raise ValueError(f"parity_weights needs a 3x3 kernel per axis (1 to 3 axes), got {tuple(weight.shape)}.")
    # taps[p, t, k]: weight of original tap k in the collapsed tap t of parity p (see the module docstring)
    taps = weight.new_tensor([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]])
    # exact sums in the weight's dtype: under autocast an einsum would run (and round) in reduced precision, and
    # the convolution rounds the kernels once anyway
    with full_precision(weight.device):
        kernels = torch.einsum(_EINSUM[ndim], weight, *([taps] * ndim))
    return kernels.reshape(2**ndim * weight.shape[0], *weight.shape[1:2], *(2,) * ndim)


#: einsum of a weight ``(O, C, *K)`` with one ``taps`` matrix per axis into ``(*P, O, C, *T)``
_EINSUM = {1: "ock,pxk->pocx", 2: "ockl,pxk,qyl->pqocxy", 3: "ocklm,pxk,qyl,rzm->pqrocxyz"}


def _interleaved_view(stacked: torch.Tensor, out_channels: int) -> torch.Tensor:
    """A view of the parity-stacked ``(B, P * O, *(S + 1))`` result shaped ``(B, O, S_0, 2, S_1, 2, ...)``.

    Element ``[b, o, i_0, p_0, i_1, p_1, ...]`` is ``stacked[b, p * O + o, i_0 + p_0, i_1 + p_1, ...]``: parity
    ``p_a`` of axis ``a`` starts one voxel later along that axis and lies ``2**(ndim - 1 - a) * O`` channels
    further. Any memory format works (the view is built from the strides).
    """
    ndim = stacked.dim() - 2
    sizes, strides = [stacked.shape[0], out_channels], [stacked.stride(0), stacked.stride(1)]
    for axis in range(ndim):
        step = stacked.stride(2 + axis)
        sizes += [stacked.shape[2 + axis] - 1, 2]
        strides += [step, step + 2 ** (ndim - 1 - axis) * out_channels * stacked.stride(1)]
    return stacked.as_strided(sizes, strides, stacked.storage_offset())


def _split_axes(tensor: torch.Tensor) -> torch.Tensor:
    """``(B, O, 2 S_0, 2 S_1, ...)`` viewed as ``(B, O, S_0, 2, S_1, 2, ...)``."""
    shape = [tensor.shape[0], tensor.shape[1]]
    for n in tensor.shape[2:]:
        shape += [n // 2, 2]
    return tensor.view(shape)


class _InterleaveAdd(torch.autograd.Function):
    """``base += interleave(stacked)``, in place. A custom backward: autograd's ``as_strided`` backward is a general
    scatter that took as long as the convolution it follows."""

    @staticmethod
    def forward(ctx, stacked: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        # in place: ``base`` is a fresh intermediate (a convolution's output, which its backward does not need);
        # a new full-resolution tensor took twice as long to fill (page faults)
        ctx.stacked_layout = stacked.shape, stacked.stride(), stacked.dtype
        ctx.out_channels = base.shape[1]
        ctx.mark_dirty(base)
        _split_axes(base).add_(_interleaved_view(stacked, base.shape[1]))
        return base

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        grad_stacked = None
        if ctx.needs_input_grad[0]:
            shape, strides, dtype = ctx.stacked_layout  # dtype: bfloat16 terms added into a float32 base
            grad_stacked = grad.new_empty_strided(shape, strides, dtype=dtype)
            _interleaved_view(grad_stacked, ctx.out_channels).copy_(_split_axes(grad))
            # each parity leaves one plane per axis unread: its gradient is zero
            ndim = grad.dim() - 2
            by_parity = grad_stacked.unflatten(1, (2,) * ndim + (ctx.out_channels,))
            for axis in range(ndim):
                spatial = 1 + ndim + 1 + axis  # after the parity axes and the channel axis
                by_parity.select(1 + axis, 0).select(spatial - 1, grad_stacked.shape[2 + axis] - 1).zero_()
                by_parity.select(1 + axis, 1).select(spatial - 1, 0).zero_()
        return grad_stacked, grad if ctx.needs_input_grad[1] else None


def conv_nearest_up2(x: torch.Tensor, weight: torch.Tensor, add_to: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv{n}d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)``, at low resolution.

    Args:
        x: ``(B, C, *S)`` the tensor to upsample.
        weight: ``(O, C, 3, ..., 3)`` the convolution weight (stride 1, zero padding 1; no bias: add it to
            ``add_to``).
        add_to: ``(B, O, *2S)`` a tensor the result is added to **in place** and returned, e.g. the convolution of
            a skip connection with the bias (a sum the decoder needs anyway, and a full-resolution tensor fewer).
            It must not be a leaf that requires grad, or a tensor a backward pass still needs.

    Returns:
        ``(B, O, *2S)``: ``add_to`` (its dtype and memory format) plus the convolution, or the convolution in
        ``x``'s memory format.
    """
    ndim = x.dim() - 2
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[ndim]
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight takes {weight.shape[1]} channels, x has {x.shape[1]}.")
    memory_format = memory_format_of(x)
    stacked = conv(F.pad(x, (1, 1) * ndim).contiguous(memory_format=memory_format), parity_weights(weight))
    shape = (x.shape[0], weight.shape[0], *(2 * n for n in x.shape[2:]))
    if add_to is None:
        add_to = torch.zeros(shape, dtype=stacked.dtype, device=x.device).contiguous(memory_format=memory_format)
    elif tuple(add_to.shape) != shape:
        raise ValueError(f"add_to must have shape {shape} (B, O, *2S), got {tuple(add_to.shape)}.")
    return _InterleaveAdd.apply(stacked, add_to)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``x``'s memory format: channels-last when ``x`` is laid out so (and not also channels-first, as a tensor with
    one channel or one voxel is), else contiguous (channels-first)."""
    fmt = CHANNELS_LAST.get(x.dim() - 2)
    if fmt is not None and x.is_contiguous(memory_format=fmt) and not x.is_contiguous():
        return fmt
    return torch.contiguous_format
