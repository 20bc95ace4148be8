import pytest
import torch
from helpers import smooth_random_field
from torch import nn

import monai_vmorph.networks.nets.voxelmorph as voxelmorph_module
from monai_vmorph.networks import RegistrationResult, VoxelMorph, resize_field, warp


class _FixedField(nn.Module):
    """A backbone that predicts a given field (on the padded grid) plus a trainable scalar."""

    def __init__(self, field):
        super().__init__()
        self.register_buffer("field", field, persistent=False)
        self.gain = nn.Parameter(torch.ones((), dtype=field.dtype))

    def forward(self, x):
        return self.gain * self.field.expand(x.shape[0], *self.field.shape[1:])


@pytest.mark.parametrize(("ndim", "shape"), [(2, (33, 19)), (3, (17, 21, 15))])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_odd_sizes_and_one_result_type(ndim, shape, bidirectional):
    net = VoxelMorph(ndim, bidirectional=bidirectional)
    moving, fixed = torch.rand(2, 1, *shape), torch.rand(2, 1, *shape)
    out = net(moving=moving, fixed=fixed)
    assert isinstance(out, RegistrationResult) and len(out) == 5
    assert out.warped.shape == moving.shape and out.ddf.shape == (2, ndim, *shape)
    assert out.velocity.shape == (2, ndim, *[(n + 15) // 16 * 8 for n in shape])
    assert (out.warped_fixed is not None) == bidirectional and (out.inverse_ddf is not None) == bidirectional
    torch.testing.assert_close(out.warped, warp(moving, out.ddf))
    # the flow head starts at N(0, 1e-5): an untrained model is almost the identity
    assert out.ddf.abs().max() < 1e-3
    torch.testing.assert_close(out.warped, moving, rtol=0, atol=1e-3)


@pytest.mark.slow
def test_brain_sized_odd_volume_just_works():
    net = VoxelMorph(3).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, 97, 115, 93), torch.rand(1, 1, 97, 115, 93))
    assert out.ddf.shape == (1, 3, 97, 115, 93) and out.velocity.shape == (1, 3, 56, 64, 48)


def test_plain_field_is_the_backbone_output_cropped():
    shape, padded = (13, 10), (16, 16)
    field = smooth_random_field(padded, 3.0, dtype=torch.float32)
    net = VoxelMorph(2, backbone=_FixedField(field), integration_steps=0, int_downsize=1, pad_divisor=16)
    moving = torch.rand(1, 1, *shape)
    out = net(moving, torch.rand(1, 1, *shape))
    torch.testing.assert_close(out.ddf, field[:, :, :13, :10], rtol=0, atol=0)
    torch.testing.assert_close(out.warped, warp(moving, field[:, :, :13, :10]))

    half = VoxelMorph(2, backbone=_FixedField(field), integration_steps=0, int_downsize=2, pad_divisor=16)
    expected = resize_field(resize_field(field, (8, 8)), padded)[:, :, :13, :10]
    torch.testing.assert_close(half(moving, moving).ddf, expected)


def test_half_resolution_backbone_field_is_integrated_as_is():
    """A backbone with output_stride 2 predicts the velocity at the integration resolution directly."""
    field = smooth_random_field((8, 8), 1.5, dtype=torch.float32)
    backbone = _FixedField(field)
    backbone.output_stride = 2
    net = VoxelMorph(2, backbone=backbone, integration_steps=0, int_downsize=2, pad_divisor=16)
    out = net(torch.rand(1, 1, 13, 10), torch.rand(1, 1, 13, 10))
    torch.testing.assert_close(out.velocity, field, rtol=0, atol=0)
    torch.testing.assert_close(out.ddf, resize_field(field, (16, 16))[:, :, :13, :10])


def test_integer_translation_through_the_full_model():
    shape = (12, 9, 10)
    field = torch.zeros(1, 3, 16, 16, 16)
    field[:, 1] = 2.0
    net = VoxelMorph(3, backbone=_FixedField(field), integration_steps=7, int_downsize=2, pad_divisor=16)
    moving = torch.rand(1, 1, *shape)
    out = net(moving, moving)
    torch.testing.assert_close(out.ddf[:, 1], torch.full((1, *shape), 2.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.warped[:, :, :, :-2], moving[:, :, :, 2:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_bidirectional_fields_are_inverse_consistent(ndim):
    shape = (24, 24, 24)[:ndim]
    field = smooth_random_field(shape, 2.0, seed=3, dtype=torch.float32)
    net = VoxelMorph(ndim, backbone=_FixedField(field), bidirectional=True, pad_divisor=2)
    images = torch.rand(1, 1, *shape)
    out = net(images, images)
    assert out.ddf.abs().max() > 1.0
    interior = (slice(None), slice(None), *[slice(3, n - 3) for n in shape])
    forward_then_back = out.ddf + warp(out.inverse_ddf, out.ddf)
    back_then_forward = out.inverse_ddf + warp(out.ddf, out.inverse_ddf)
    # fields up to 2 voxels, integrated at half resolution: residuals stay below 0.1 voxel (mean < 0.02)
    for residual in (forward_then_back[interior].abs(), back_then_forward[interior].abs()):
        assert residual.max() < 0.1 and residual.mean() < 0.02
    torch.testing.assert_close(out.warped_fixed, warp(images, out.inverse_ddf))


@pytest.mark.parametrize(
    ("ndim", "kwargs"),
    [
        (2, {}),
        (3, {"bidirectional": True}),
        (3, {"integration_steps": 0, "int_downsize": 1}),
        (2, {"backbone": "doubleconv", "backbone_kwargs": {"features": (4, 8)}}),
        (3, {"backbone_kwargs": {"half_res": True}, "bidirectional": True}),
        (3, {"backbone": "doubleconv", "backbone_kwargs": {"features": (4, 8)}, "bidirectional": True}),
    ],
)
def test_gradients_reach_every_parameter(ndim, kwargs):
    torch.manual_seed(0)
    # float32: on AVX512-BF16 CPUs ``auto`` is bfloat16, whose PyTorch 2.13 kernels now and then return a non-finite
    # weight gradient for inputs a few voxels wide (the bundles' FiniteGradientGuard handles that in training)
    net = VoxelMorph(ndim, precision="fp32", **kwargs)
    moving, fixed = torch.rand(2, 1, *([16] * ndim)), torch.rand(2, 1, *([16] * ndim))
    out = net(moving, fixed)
    loss = (out.warped - fixed).square().mean() + out.velocity.square().mean()
    if out.warped_fixed is not None:
        loss = loss + (out.warped_fixed - moving).square().mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("ndim", [2, 3])
def test_channels_last_gives_the_same_result(ndim):
    torch.manual_seed(0)
    # float32 on every CPU: ``auto`` is bfloat16 where the CPU runs it natively, and its rounding is not the point here
    plain = VoxelMorph(ndim, backbone_kwargs={"flow_init_std": 1.0}, channels_last=False, precision="fp32")
    fast = VoxelMorph(ndim, backbone_kwargs={"flow_init_std": 1.0}, channels_last=True, precision="fp32")
    fast.load_state_dict(plain.state_dict())
    assert fast.backbone.flow.weight.is_contiguous(memory_format=fast._channels_last_format)
    images = torch.rand(1, 1, *([20] * ndim)), torch.rand(1, 1, *([20] * ndim))
    a, b = plain(*images), fast(*images)
    assert a.ddf.abs().max() > 0.1
    torch.testing.assert_close(b.ddf, a.ddf, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.warped, a.warped, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("ndim", "avx512", "expected"), [(3, True, True), (3, False, False), (2, True, False)])
def test_auto_channels_last_follows_the_cpu(monkeypatch, ndim, avx512, expected):
    monkeypatch.setattr(voxelmorph_module, "_cpu_avx512", lambda: avx512)
    net = VoxelMorph(ndim, precision="fp32")
    assert net.channels_last == "auto" and net.backbone.flow.weight.is_contiguous()  # weights stay channels-first
    seen = []
    net.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    net(torch.rand(1, 1, *([16] * ndim)), torch.rand(1, 1, *([16] * ndim)))
    memory_format = torch.channels_last_3d if ndim == 3 else torch.channels_last
    assert seen[0].is_contiguous(memory_format=memory_format) is expected
    assert seen[0].is_contiguous() is not expected
    with pytest.raises(ValueError, match="channels_last must be True, False or 'auto', got 'yes'"):
        VoxelMorph(ndim, channels_last="yes")


def test_float64_and_multichannel_images():
    net = VoxelMorph(2, in_channels=3).double()
    out = net(torch.rand(1, 3, 16, 20, dtype=torch.float64), torch.rand(1, 3, 16, 20, dtype=torch.float64))
    assert out.warped.dtype == torch.float64 and out.warped.shape == (1, 3, 16, 20)


def test_bad_inputs_raise_clear_errors():
    net = VoxelMorph(3)
    image = torch.rand(1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match=r"same shape, got \(1, 1, 16, 16, 16\) and \(1, 1, 16, 16, 12\)"):
        net(image, torch.rand(1, 1, 16, 16, 12))
    with pytest.raises(ValueError, match=r"moving must have 1 channel\(s\).*\(1, 2, 16, 16, 16\)"):
        net(torch.rand(1, 2, 16, 16, 16), image)
    with pytest.raises(ValueError, match=r"fixed must be a floating-point tensor.*torch.int64"):
        net(image, torch.ones(1, 1, 16, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"3 spatial dims for this 3D model.*\(1, 1, 16, 16\)"):
        net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"2 or 3 spatial dims.*1 spatial dims"):
        net(torch.rand(1, 1, 16), torch.rand(1, 1, 16))
    with pytest.raises(ValueError, match=r"2 or 3 spatial dims.*4 spatial dims"):
        net(torch.rand(1, 1, 4, 4, 4, 4), torch.rand(1, 1, 4, 4, 4, 4))
    nan = image.clone()
    nan[0, 0, 3, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"moving must be finite, got 1 NaN"):
        net(nan, image)
    with pytest.raises(ValueError, match=r"backbone must return a field of shape \[1, 3, 16, 16, 16\], got \[1, 2"):
        VoxelMorph(3, backbone=nn.Conv3d(2, 2, 3, padding=1))(image, image)
    for kwargs, match in [
        ({"spatial_dims": 4}, "spatial_dims must be 2 or 3, got 4"),
        ({"integration_steps": -1}, "integration_steps must be an int >= 0, got -1"),
        ({"int_downsize": 0}, "int_downsize must be an int >= 1, got 0"),
        ({"backbone": "resnet"}, r"backbone must be one of \['doubleconv', 'voxelmorph'\].*'resnet'"),
        ({"mode": "cubic"}, "mode must be one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            VoxelMorph(**kwargs)
