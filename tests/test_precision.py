"""Precision policy: what "auto" resolves to (native support simulated), reduced-precision backbones against float32,
float32 fields and warps under autocast, one-line errors, and the option's way from the command line to the model."""

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from monai_vmorph.errors import UserError
from monai_vmorph.networks import VoxelMorph
from monai_vmorph.precision import (
    PRECISIONS,
    _native,
    backbone_autocast,
    check_precision,
    emulate_reduced_precision,
    full_precision,
    native_bf16,
    needs_grad_scaler,
    precision_dtype,
    resolve_precision,
)

SMALL = {"encoder_channels": (4, 8, 8), "decoder_channels": (8, 8, 8, 4)}


@pytest.fixture
def cpu_flags(monkeypatch):
    """``cpu_flags(avx512_bf16=..., amx=..., amx_fp16=...)`` makes torch report those CPU features."""

    def set_flags(avx512_bf16=False, amx=False, amx_fp16=False):
        _native.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: amx_fp16)

    yield set_flags
    _native.cache_clear()


@pytest.fixture
def gpu(monkeypatch):
    """``gpu((major, minor))`` simulates a CUDA GPU of that compute capability."""

    def set_capability(capability):
        _native.cache_clear()
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: capability >= (8, 0))

    yield set_capability
    _native.cache_clear()


def _net(**kwargs):
    torch.manual_seed(0)
    net = VoxelMorph(3, backbone_kwargs=SMALL, **kwargs).eval()
    with torch.no_grad():  # a flow head that predicts fields of a few voxels, as a trained one does
        net.backbone.flow.weight.normal_(0.0, 6.0)
    return net


def _pair(n=32):
    torch.manual_seed(1)
    moving = torch.nn.functional.avg_pool3d(torch.rand(1, 1, n, n, n), 5, stride=1, padding=2)
    return moving, moving.roll(2, dims=2)


# ---------------------------------------------------------------------------------------------- resolution
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, torch.float32),  # AVX2 / AVX-512 without BF16: a bf16 convolution is a slow reference loop
        ({"amx_fp16": True}, torch.float32),  # auto never picks float16 on a CPU
        ({"avx512_bf16": True}, torch.bfloat16),
        ({"amx": True}, torch.bfloat16),
    ],
)
def test_auto_on_cpu_follows_what_torch_reports(cpu_flags, flags, expected):
    cpu_flags(**flags)
    assert resolve_precision("auto", "cpu") == expected
    assert native_bf16("cpu") == (expected == torch.bfloat16)
    assert not needs_grad_scaler("auto", "cpu")


def test_auto_is_float32_without_onednn(cpu_flags):
    cpu_flags(avx512_bf16=True, amx=True)
    with torch.backends.mkldnn.flags(enabled=False):
        _native.cache_clear()
        assert resolve_precision("auto", "cpu") == torch.float32
    _native.cache_clear()
    assert resolve_precision("auto", "cpu") == torch.bfloat16


@pytest.mark.parametrize(
    ("capability", "expected", "scaler"),
    [
        ((9, 0), torch.bfloat16, False),
        ((8, 0), torch.bfloat16, False),
        ((7, 5), torch.float16, True),
        ((6, 1), None, False),
    ],
)
def test_auto_on_cuda_follows_the_compute_capability(gpu, capability, expected, scaler):
    gpu(capability)
    expected = torch.float32 if expected is None else expected
    assert resolve_precision("auto", "cuda:0") == expected
    assert needs_grad_scaler("auto", "cuda") == scaler
    assert needs_grad_scaler("bf16", "cuda") is False and needs_grad_scaler("fp16", "cuda") is True
    context = backbone_autocast("auto", "cuda")
    assert isinstance(context, torch.autocast) and context.device == "cuda"
    if expected == torch.float32:
        assert not context._enabled  # autocast switched off
    else:
        assert context._enabled and context.fast_dtype == expected


def test_explicit_precisions_are_taken_as_given(cpu_flags):
    cpu_flags()
    assert [resolve_precision(p, "cpu") for p in ("fp32", "bf16", "fp16")] == [
        torch.float32,
        torch.bfloat16,
        torch.float16,
    ]
    assert precision_dtype("bf16") == torch.bfloat16
    assert resolve_precision("auto", "meta") == torch.float32  # a device with no native half path
    assert needs_grad_scaler("fp16", "cpu") is False  # CPU autocast has no gradient scaler


@pytest.mark.parametrize("bad", ["half", "BF16", "float32", "", None, 16])
def test_bad_names_are_one_line_user_errors(bad):
    for call in (
        lambda: check_precision(bad),
        lambda: resolve_precision(bad, "cpu"),
        lambda: VoxelMorph(2, precision=bad),
    ):
        with pytest.raises(UserError, match="precision must be one of auto, fp32, bf16, fp16") as info:
            call()
        assert "\n" not in str(info.value)
    net = VoxelMorph(2)
    with pytest.raises(UserError):
        net.precision = bad
    assert net.precision == "auto"
    with pytest.raises(UserError, match="resolve_precision"):
        precision_dtype("auto")


# ---------------------------------------------------------------------------------------------- numerics
def test_emulated_rounding_of_a_convolution_by_hand():
    # weight 1 + 2^-10 is not a bfloat16 (8 significant bits): it rounds to 1; 1 + 2^-7 is one
    conv = nn.Conv1d(1, 1, 1, bias=False)
    x = torch.ones(1, 1, 3)
    for weight, exact, rounded in ((1 + 2**-10, 1 + 2**-10, 1.0), (1 + 2**-7, 1 + 2**-7, 1 + 2**-7)):
        with torch.no_grad():
            conv.weight.fill_(weight)
            assert conv(x)[0, 0, 0].item() == exact
            with emulate_reduced_precision(torch.bfloat16):
                assert conv(x)[0, 0, 0].item() == rounded
    # the result is rounded too: 3 * (1 + 2^-7) = 3.0234375 needs 9 significant bits -> 3.03125 (ties to even)
    with torch.no_grad(), emulate_reduced_precision():
        assert nn.functional.conv1d(torch.ones(1, 3, 1), conv.weight.expand(1, 3, 1))[0, 0, 0].item() == 3.03125
    with pytest.raises(ValueError, match=r"bfloat16 or torch\.float16"):
        with emulate_reduced_precision(torch.float64):
            pass


def test_bf16_forward_on_a_32_cube_matches_float32_and_its_emulation():
    """Stated tolerance: bf16 keeps 8 significant bits (relative 2^-9 per rounding, ~10 roundings in the backbone),
    so the field may differ by 1 % of its largest value; measured 0.2 % here. The emulation, which the accuracy
    benchmark uses on CPUs without native bf16, gives the same numbers as the real autocast."""
    net = _net(precision="fp32")
    moving, fixed = _pair()
    seen = []
    net.backbone.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.no_grad():
        reference = net(moving, fixed)
        with emulate_reduced_precision(torch.bfloat16):
            emulated = net(moving, fixed)
        net.precision = "bf16"
        real = net(moving, fixed)
    assert seen == [torch.float32, torch.float32, torch.bfloat16]
    scale = reference.ddf.abs().max()
    assert scale > 1.0  # the fields are of a trained network's size
    for name in ("ddf", "velocity", "warped"):
        ref, got = getattr(reference, name), getattr(real, name)
        assert got.dtype == torch.float32
        err = (got - ref).abs().max() / ref.abs().max()
        assert 0 < err < 0.01, (name, float(err))  # different (bf16 did run) but close
        torch.testing.assert_close(getattr(emulated, name), got, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_auto_runs_bf16_where_native_and_float32_where_not(cpu_flags):
    net = _net()
    moving, fixed = _pair(16)
    seen = []
    net.backbone.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    for flags, dtype in (({}, torch.float32), ({"avx512_bf16": True}, torch.bfloat16)):
        cpu_flags(**flags)
        with torch.no_grad():
            out = net(moving, fixed)
        assert seen[-1] == dtype and out.ddf.dtype == out.warped.dtype == out.velocity.dtype == torch.float32


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fields_and_warps_stay_float32_inside_a_callers_autocast(precision):
    net = _net(precision=precision, bidirectional=True)
    moving, fixed = _pair(16)
    with torch.no_grad():
        plain = net(moving, fixed)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = net(moving, fixed)
            tail = net.from_velocity(moving, fixed, plain.velocity)
    for a, b, c in zip(plain, inside, tail, strict=True):
        assert a.dtype == b.dtype == c.dtype == torch.float32
        # the model decides its backbone's precision and the rest runs with autocast off: identical results
        torch.testing.assert_close(b, a, rtol=0, atol=0)
        torch.testing.assert_close(c, a, rtol=0, atol=0)


def test_float64_model_stays_float64_and_training_gradients_are_float32():
    net = _net(precision="bf16").double()
    moving, fixed = _pair(16)
    with torch.no_grad():
        out = net(moving.double(), fixed.double())
    assert out.ddf.dtype == out.warped.dtype == torch.float64  # autocast only casts float32 tensors

    net = _net(precision="bf16").train()
    out = net(moving, fixed)
    loss = (out.warped - fixed).square().mean() + out.velocity.square().mean()
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_full_precision_switches_autocast_off():
    x, w = torch.rand(1, 1, 8), torch.rand(1, 1, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.conv1d(x, w).dtype == torch.bfloat16
        with full_precision("cpu"):
            assert torch.conv1d(x, w).dtype == torch.float32


# ---------------------------------------------------------------------------------------------- edges
def test_cli_precision_option_reaches_the_model(tmp_path, monkeypatch, capsys):
    import monai_vmorph.cli.register as register
    from monai_vmorph.cli import build_parser, main
    from monai_vmorph.pipeline.model import load_bundle_model

    args = build_parser().parse_args(["register", "--fixed", "f", "--moving", "m", "--out-dir", "o"])
    assert args.precision is None  # the bundle's key decides
    for command in (["register", "--fixed", "f", "--moving", "m"], ["evaluate", "--pairs", "p"]):
        for precision in PRECISIONS:
            parsed = build_parser().parse_args([*command, "--out-dir", "o", "--precision", precision])
            assert parsed.precision == precision

    assert main(["register", "--fixed", "f", "--moving", "m", "--out-dir", "o", "--precision", "half"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--precision: invalid choice: 'half'" in err

    image = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 16)).astype(np.float32), np.eye(4)), image)
    models = []

    def spy(*a, **k):
        models.append(load_bundle_model(*a, **k).model)
        raise UserError("stopped after loading the model")

    monkeypatch.setattr(register, "load_bundle_model", spy)
    for option, expected in (([], "auto"), (["--precision", "bf16"], "bf16")):
        argv = ["register", "--fixed", image, "--moving", image, "--out-dir", tmp_path / "out", *option]
        assert main([str(a) for a in argv]) == 2
        assert models[-1].precision == expected
    assert "stopped after loading the model" in capsys.readouterr().err


def test_bundles_drive_the_model_and_the_grad_scaler(gpu):
    from monai.bundle import ConfigParser

    from monai_vmorph.pipeline.model import default_bundle

    for ndim in (2, 3):
        root = default_bundle(ndim)
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / "train.json"))
        parser["bundle_root"] = str(root)
        assert parser["precision"] == "auto"
        assert parser["train"]["trainer"]["amp_kwargs"] == {"enabled": False}  # the model autocasts itself
        parser["precision"] = "bf16"
        parser["device"] = "$torch.device('cpu')"
        assert parser.get_parsed_content("model").precision == "bf16"
        assert parser.get_parsed_content("amp") is False
        parser["precision"] = "fp16"
        parser["device"] = "$torch.device('cuda')"
        gpu((7, 5))
        assert parser.get_parsed_content("amp", lazy=False) is True  # MONAI's GradScaler for float16 on CUDA


def test_refinement_runs_the_network_at_its_precision_and_optimises_in_float32():
    from monai_vmorph.engines.refine import refine_registration

    net = _net(precision="bf16")
    moving, fixed = _pair(16)
    seen = []
    net.backbone.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    out = refine_registration(net, moving, fixed, lambda r, t: (r.warped - t["fixed_image"]).square().mean(), steps=3)
    assert seen == [torch.bfloat16]  # the network ran once, in bfloat16; the steps never call the backbone
    assert all(t.dtype == torch.float32 for t in out.result if t is not None)
    assert len(out.losses) == 4 and out.losses[-1] < out.losses[0]


def test_batchnorm_backbone_trains_in_bf16_with_float32_statistics():
    """The 2D bundle's BatchNorm UNet under autocast: BatchNorm takes bf16 activations, keeps float32 state."""
    torch.manual_seed(0)
    kwargs = {"backbone": "doubleconv", "backbone_kwargs": {"features": (4, 8)}, "integration_steps": 0}
    net = VoxelMorph(2, int_downsize=1, precision="bf16", **kwargs).train()
    moving, fixed = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    out = net(moving, fixed)
    (out.warped - fixed).square().mean().backward()
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert out.ddf.dtype == torch.float32 and norms
    for norm in norms:
        assert norm.running_mean.dtype == norm.running_var.dtype == norm.weight.grad.dtype == torch.float32
        assert norm.num_batches_tracked == 1 and torch.isfinite(norm.running_var).all()
