import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from monai_vmorph.networks import DoubleConvUNet, VoxelMorph, VoxelMorphUNet
from monai_vmorph.networks.nets.voxelmorph_unet import CHANNELS_LAST, LEAKY_RELU_0_2, conv_act, up_concat_conv_act


def test_voxelmorph_unet_has_the_paper_parameter_count():
    # hand count, 3D, k = 27 weights per in/out channel pair (+ bias):
    # encoder 2->16, 16->32, 32->32, 32->32; decoder 32->32, (32+32)->32 x3; full-res (32+16)->32, 32->16,
    # 16->16; flow 16->3
    convs = [
        (2, 16),
        (16, 32),
        (32, 32),
        (32, 32),
        (32, 32),
        (64, 32),
        (64, 32),
        (64, 32),
        (48, 32),
        (32, 16),
        (16, 16),
        (16, 3),
    ]
    expected = sum(i * o * 27 + o for i, o in convs)
    assert expected == 327_331
    assert sum(p.numel() for p in VoxelMorphUNet(3).parameters()) == expected


def test_half_res_unet_drops_the_last_skip_and_predicts_at_half_size():
    # as the paper UNet, but the first final conv sees 32 channels (no full-resolution skip) instead of 48
    net = VoxelMorphUNet(3, half_res=True)
    assert sum(p.numel() for p in net.parameters()) == 327_331 - (48 - 32) * 32 * 27
    assert net.output_stride == 2
    assert net(torch.rand(1, 2, 32, 16, 48)).shape == (1, 3, 16, 8, 24)
    assert VoxelMorphUNet(2, half_res=True)(torch.rand(1, 2, 32, 16)).shape == (1, 2, 16, 8)


@pytest.mark.parametrize("ndim", [2, 3])
def test_voxelmorph_unet_shapes_activation_and_flow_init(ndim):
    net = VoxelMorphUNet(ndim)
    assert net.divisor == 16
    acts = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 11 and all(a.negative_slope == 0.2 for a in acts)
    assert net.flow.weight.std().item() == pytest.approx(1e-5, rel=0.2)
    assert net.flow.bias.abs().max() == 0
    out = net(torch.rand(2, 2, *([16] * ndim)))
    assert out.shape == (2, ndim, *([16] * ndim))
    assert 0 < out.abs().max() < 1e-3


class _SeedDoubleConv(nn.Module):
    """The seed post's DoubleConv, as published (reference for the reproduction test)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x):
        return self.conv(x)


class _SeedUnet(nn.Module):
    """The seed post's 2D UNet, as published."""

    def __init__(self, in_channels=2, out_channels=2, features=(64, 128, 256, 512)):
        super().__init__()
        self.ups, self.downs = nn.ModuleList(), nn.ModuleList()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        for feature in features:
            self.downs.append(_SeedDoubleConv(in_channels, feature))
            in_channels = feature
        for feature in reversed(features):
            self.ups.append(nn.ConvTranspose2d(2 * feature, feature, kernel_size=2, stride=2))
            self.ups.append(_SeedDoubleConv(feature * 2, feature))
        self.botleneck = _SeedDoubleConv(features[-1], features[-1] * 2)
        self.final_conv = nn.Conv2d(features[0], out_channels, kernel_size=1)

    def forward(self, x):
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        x = self.botleneck(x)
        skips = skips[::-1]
        for idx in range(0, len(self.ups), 2):
            x = self.ups[idx](x)
            x = self.ups[idx + 1](torch.cat((skips[idx // 2], x), dim=1))
        return self.final_conv(x)


def test_seed_model_is_reproduced_by_the_doubleconv_backbone():
    torch.manual_seed(0)
    seed = _SeedUnet(features=(8, 16, 32, 64))
    net = VoxelMorph(
        2,
        backbone="doubleconv",
        integration_steps=0,
        int_downsize=1,
        backbone_kwargs={"features": (8, 16, 32, 64)},
        precision="fp32",  # the seed runs in float32; ``auto`` is bfloat16 on CPUs with native bfloat16
    )
    ours = net.backbone
    pairs = [(seed.downs[i], ours.encoder[i]) for i in range(4)] + [(seed.botleneck, ours.bottleneck)]
    pairs += [(seed.ups[2 * i], ours.upsamples[i]) for i in range(4)]
    pairs += [(seed.ups[2 * i + 1], ours.decoder[i]) for i in range(4)] + [(seed.final_conv, ours.head)]
    for theirs, mine in pairs:
        src, dst = theirs.state_dict(), mine.state_dict()
        assert [v.shape for v in src.values()] == [v.shape for v in dst.values()]
        mine.load_state_dict(dict(zip(dst, src.values(), strict=True)))
    assert sum(p.numel() for p in seed.parameters()) == sum(p.numel() for p in ours.parameters())
    full = _SeedUnet()
    assert sum(p.numel() for p in full.parameters()) == sum(p.numel() for p in DoubleConvUNet(2).parameters())

    moving, fixed = torch.rand(2, 1, 32, 48), torch.rand(2, 1, 32, 48)
    for mode in (True, False):  # training (batch statistics) and eval (running statistics)
        seed.train(mode), net.train(mode)
        flow = seed(torch.cat([moving, fixed], dim=1))  # our pair order: moving first
        out = net(moving, fixed)
        torch.testing.assert_close(out.ddf, flow, rtol=1e-5, atol=1e-6)
        # the seed warped with align_corners=False although its grid was normalised for True; we do not
        grid = torch.stack(torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")) + flow
        grid = torch.stack([grid[:, 1] / 47 * 2 - 1, grid[:, 0] / 31 * 2 - 1], dim=-1)
        torch.testing.assert_close(out.warped, F.grid_sample(moving, grid, align_corners=True), rtol=1e-5, atol=1e-5)


def test_doubleconv_unet_in_3d():
    net = DoubleConvUNet(3, features=(4, 8))
    assert net.divisor == 4
    assert net(torch.rand(1, 2, 8, 12, 4)).shape == (1, 3, 8, 12, 4)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 1"):
        DoubleConvUNet(1)
    with pytest.raises(ValueError, match="at least one encoder level"):
        VoxelMorphUNet(3, encoder_channels=(16, 32), decoder_channels=(32,))


def test_in_place_activation_gives_the_same_gradients_as_out_of_place():
    torch.manual_seed(0)
    net = VoxelMorphUNet(3, encoder_channels=(4, 8), decoder_channels=(8, 8, 4))
    acts = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(m.inplace and m.negative_slope == 0.2 for m in acts)
    x = torch.randn(1, 2, 8, 8, 8, dtype=torch.float64)
    net = net.double()

    def grads():
        net.zero_grad()
        out = net(x)
        (out**2).sum().backward()
        return out.detach().clone(), [p.grad.clone() for p in net.parameters()]

    out_inplace, g_inplace = grads()
    for m in acts:
        m.inplace = False
    out_plain, g_plain = grads()
    torch.testing.assert_close(out_inplace, out_plain, rtol=0, atol=0)
    for a, b in zip(g_inplace, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("ndim", [2, 3])
def test_up_concat_conv_act_equals_the_block_on_the_concatenation(ndim):
    torch.manual_seed(0)
    block = conv_act(ndim, 5, 4).double()
    low = torch.randn(2, 3, *(3, 4, 2)[:ndim], dtype=torch.float64)
    skip = torch.randn(2, 2, *(6, 8, 4)[:ndim], dtype=torch.float64)
    weight = torch.randn(2, 4, *(6, 8, 4)[:ndim], dtype=torch.float64)

    def run(fn, fmt):
        block.zero_grad()
        parts = [t.contiguous(memory_format=fmt).detach().requires_grad_() for t in (low, skip)]
        out = fn(*parts)
        (out * weight).sum().backward()
        return out.detach(), [p.grad for p in parts], [p.grad.clone() for p in block.parameters()]

    def plain(low, skip):
        return block(torch.cat([F.interpolate(low, scale_factor=2, mode="nearest"), skip], dim=1))

    reference = run(plain, torch.contiguous_format)
    for fmt in (torch.contiguous_format, CHANNELS_LAST[ndim]):
        out, part_grads, param_grads = run(lambda low, skip: up_concat_conv_act(block, low, skip), fmt)
        torch.testing.assert_close(out, reference[0], rtol=1e-12, atol=1e-12)
        for got, want in zip(part_grads + param_grads, reference[1] + reference[2], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"the parts have \[3, 3\] channels; the convolution takes 5"):
        up_concat_conv_act(block, low, torch.cat([skip, skip[:, :1]], dim=1))


def test_up_concat_conv_act_calls_a_hooked_or_unusual_convolution_on_the_concatenation():
    low, skip = torch.rand(1, 3, 2, 2, 2), torch.rand(1, 2, 4, 4, 4)
    block = conv_act(3, 5, 4)
    seen = []
    handle = block.conv.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    up_concat_conv_act(block, low, skip)
    handle.remove()
    assert seen == [(1, 5, 4, 4, 4)]  # the hook saw the whole input once, not the parts or nothing
    up_concat_conv_act(block, low, skip)
    assert len(seen) == 1
    # a 5x5x5 convolution is not rewritten, and gives the block's result
    wide = Convolution(3, 5, 4, kernel_size=5, act=LEAKY_RELU_0_2, norm=None, adn_ordering="A")
    want = wide(torch.cat([F.interpolate(low, scale_factor=2, mode="nearest"), skip], dim=1))
    torch.testing.assert_close(up_concat_conv_act(wide, low, skip), want, rtol=0, atol=0)


@pytest.mark.parametrize(("ndim", "half_res"), [(2, False), (3, False), (3, True)])
def test_unet_equals_its_layers_run_as_written(ndim, half_res):
    """The whole UNet against the same weights called as modules on concatenations (forward hooks force that)."""
    torch.manual_seed(0)
    net = VoxelMorphUNet(ndim, half_res=half_res, flow_init_std=0.1).double()
    x = torch.randn(1, 2, *(16,) * ndim, dtype=torch.float64, requires_grad=True)
    out = net(x)
    grad_out = torch.randn_like(out)
    (gx,) = torch.autograd.grad((out * grad_out).sum(), x)
    convs = [m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    handles = [m.register_forward_hook(lambda *args: None) for m in convs]
    want = net(x)
    (want_gx,) = torch.autograd.grad((want * grad_out).sum(), x)
    for handle in handles:
        handle.remove()
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))
    torch.testing.assert_close(gx, want_gx, rtol=1e-12, atol=1e-12 * float(want_gx.abs().max()))


def test_traced_unet_runs_the_layers_as_written_and_matches():
    """``torch.jit.trace`` (TorchScript/ONNX export) cannot hold the decoder's Python autograd function: under
    tracing the UNet runs its layers on the concatenations, with the same result."""
    torch.manual_seed(0)
    net = VoxelMorphUNet(3, encoder_channels=(4, 8), decoder_channels=(8, 8, 4), flow_init_std=0.1).eval()
    x = torch.rand(1, 2, 8, 8, 8)
    with torch.no_grad():
        traced = torch.jit.trace(net, x)
        graph = str(traced.graph)
        assert "PythonOp" not in graph and "upsample_nearest3d" in graph and "aten::cat" in graph
        torch.testing.assert_close(traced(x), net(x), rtol=1e-5, atol=1e-6)
