"""The low-resolution convolution of a nearest-upsampled tensor against ``conv(interpolate(x))``."""

import pytest
import torch
import torch.nn.functional as F

from monai_vmorph.networks.blocks.upsample_conv import (
    CHANNELS_LAST,
    conv_nearest_up2,
    memory_format_of,
    parity_weights,
)

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _reference(x, weight):
    return CONV[x.dim() - 2](F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)


def test_parity_weights_by_hand():
    # 1D taps (a, b, c): output 2i sees x[i-1] through a and x[i] through b and c; output 2i+1 sees x[i] through
    # a and b, x[i+1] through c
    weight = torch.tensor([[[1.0, 10.0, 100.0]]])
    torch.testing.assert_close(parity_weights(weight), torch.tensor([[[1.0, 110.0]], [[11.0, 100.0]]]))
    # 2D: the collapse is separable, parity (p, q) = the 1D collapses along each axis; block index 2p + q
    w2 = torch.arange(9.0).reshape(1, 1, 3, 3)
    collapse = [torch.tensor([[1.0, 0, 0], [0, 1, 1]]), torch.tensor([[1.0, 1, 0], [0, 0, 1]])]
    got = parity_weights(w2)
    for p in (0, 1):
        for q in (0, 1):
            torch.testing.assert_close(got[2 * p + q, 0], collapse[p] @ w2[0, 0] @ collapse[q].T)
    with pytest.raises(ValueError, match=r"needs a 3x3 kernel per axis"):
        parity_weights(torch.rand(2, 2, 5, 5))


@pytest.mark.parametrize(("ndim", "channels_last"), [(1, False), (2, False), (2, True), (3, False), (3, True)])
@pytest.mark.parametrize("with_base", [False, True])
def test_equals_the_convolution_of_the_upsampled_tensor(ndim, channels_last, with_base):
    torch.manual_seed(ndim)
    fmt = CHANNELS_LAST[ndim] if channels_last else torch.contiguous_format
    size = (5, 4, 3)[:ndim]
    x = torch.randn(2, 3, *size, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    weight = torch.randn(4, 3, *(3,) * ndim, dtype=torch.float64, requires_grad=True)
    base = torch.randn(2, 4, *(2 * n for n in size), dtype=torch.float64).contiguous(memory_format=fmt)
    base.requires_grad_(with_base)
    out_grad = torch.randn(2, 4, *(2 * n for n in size), dtype=torch.float64)
    inputs = [x, weight] + ([base] if with_base else [])

    want = _reference(x, weight) + (base if with_base else 0)
    want_grads = torch.autograd.grad((want * out_grad).sum(), inputs)
    got = conv_nearest_up2(x, weight, add_to=base * 1 if with_base else None)
    got_grads = torch.autograd.grad((got * out_grad).sum(), inputs)

    assert got.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_gradcheck_of_the_interleaving():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    base = torch.randn(1, 2, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv_nearest_up2(x, w, add_to=b * 1), (x, weight, base))


def test_add_to_is_written_in_place_and_checked():
    x, weight = torch.rand(1, 2, 4, 4), torch.rand(3, 2, 3, 3)
    base = torch.ones(1, 3, 8, 8)
    out = conv_nearest_up2(x, weight, add_to=base)
    assert out is base
    torch.testing.assert_close(out, _reference(x, weight) + 1)
    with pytest.raises(ValueError, match=r"add_to must have shape \(1, 3, 8, 8\)"):
        conv_nearest_up2(x, weight, add_to=torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="weight takes 2 channels, x has 3"):
        conv_nearest_up2(torch.rand(1, 3, 4, 4), weight)


def test_reduced_precision_terms_add_into_a_float32_tensor():
    x, weight = torch.rand(1, 4, 6, 6, 6), torch.rand(2, 4, 3, 3, 3)
    base = torch.zeros(1, 2, 12, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv_nearest_up2(x, weight, add_to=base)
    assert out.dtype == torch.float32
    want = _reference(x, weight)
    err = (out - want).abs().max() / want.abs().max()
    assert 0 < err < 2**-7  # bfloat16 ran (8 significant bits), one rounding of the result


def test_memory_format_of():
    assert memory_format_of(torch.rand(1, 3, 4, 4, 4).contiguous(memory_format=torch.channels_last_3d)) == (
        torch.channels_last_3d
    )
    assert memory_format_of(torch.rand(1, 3, 4, 4).contiguous(memory_format=torch.channels_last)) == (
        torch.channels_last
    )
    assert memory_format_of(torch.rand(1, 3, 4, 4)) == torch.contiguous_format
    assert memory_format_of(torch.rand(1, 1, 4, 4, 4)) == torch.contiguous_format  # one channel: both layouts
