"""Exports of the inference network. ``torch.export``: the shipped 3D bundle's model exported at one input shape
gives the eager result on another random pair, also after a save / load round trip, and eager calls stay correct
afterwards (the identity-grid cache must not keep the export's fake tensors). TorchScript (``torch.jit.script``, what
MONAI's ``ckpt_export`` does without ``--use_trace``): the scripted shipped networks, and bidirectional and padded
variants, give the eager float32 result on any input shape, also after ``torch.jit.save`` / ``load``."""

import io

import pytest
import torch
import torch.nn.functional as F

from monai_vmorph.networks import VoxelMorph
from monai_vmorph.pipeline import load_bundle_model


def _moved_pair(shape, seed=0):
    """A smooth random image and a shifted copy: a pair the network moves (the comparison covers the warp)."""
    generator = torch.Generator().manual_seed(seed)
    pool = F.avg_pool2d if len(shape) == 4 else F.avg_pool3d
    moving = pool(torch.rand(shape, generator=generator), 5, 1, 2)
    return moving, torch.roll(moving, shifts=(2, -1, 1)[: len(shape) - 2], dims=tuple(range(2, len(shape))))


def _reloaded(scripted):
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


@pytest.mark.parametrize("shape", [(1, 1, 61, 70), (1, 1, 40, 37, 44)], ids=["2d", "3d"])
def test_scripted_shipped_network_equals_eager_within_1e_5_on_any_shape(shape):
    model = load_bundle_model(len(shape) - 2, torch.device("cpu"), precision="fp32").model
    scripted = _reloaded(torch.jit.script(model))
    pair = _moved_pair(shape)
    with torch.no_grad():
        eager, out = model(*pair), scripted(*pair)
    assert float(eager.ddf.abs().max()) > 0.5  # the shipped weights move this pair
    for name in ("warped", "ddf", "velocity"):
        difference = float((getattr(out, name) - getattr(eager, name)).abs().max())
        assert difference <= 1e-5, (name, difference)
    assert out.warped_fixed is None and out.inverse_ddf is None


def test_scripted_bidirectional_half_resolution_model_returns_every_field_as_eager():
    torch.manual_seed(0)
    model = VoxelMorph(2, bidirectional=True, backbone_kwargs={"half_res": True}, precision="fp32").eval()
    with torch.no_grad():
        model.backbone.flow.weight.normal_(0, 1.0)  # a field of a few voxels, not the initial ~0
    scripted = torch.jit.script(model)
    pair = _moved_pair((2, 1, 33, 30), seed=1)
    with torch.no_grad():
        eager, out = model(*pair), scripted(*pair)
    assert float(eager.ddf.abs().max()) > 0.5
    for name, value in eager._asdict().items():
        difference = float((getattr(out, name) - value).abs().max())
        assert difference <= 1e-5, (name, difference)


@pytest.mark.slow
def test_exported_shipped_network_equals_eager_within_1e_5(tmp_path):
    model = load_bundle_model(3, torch.device("cpu"), precision="fp32").model
    generator = torch.Generator().manual_seed(0)
    shape = (1, 1, 48, 56, 48)
    example = (torch.rand(shape, generator=generator), torch.rand(shape, generator=generator))
    with torch.no_grad():
        before = model(*example)
        exported = torch.export.export(model, example)
        torch.export.save(exported, tmp_path / "network.pt2")
        loaded = torch.export.load(tmp_path / "network.pt2").module()
        smooth = torch.nn.functional.avg_pool3d(torch.rand(shape, generator=generator), 5, 1, 2)
        pair = (smooth, torch.roll(smooth, shifts=(2, -1, 1), dims=(2, 3, 4)))  # a pair the network moves
        eager = model(*pair)
        for module in (exported.module(), loaded):
            out = module(*pair)
            for name in ("warped", "ddf", "velocity"):
                difference = float((getattr(out, name) - getattr(eager, name)).abs().max())
                assert difference <= 1e-5, (name, difference)
        assert float(eager.ddf.abs().max()) > 0.1  # a real field, not a trivial comparison
        again = model(*example)  # eager after export: the same as before it
    for name in ("warped", "ddf"):
        torch.testing.assert_close(getattr(again, name), getattr(before, name), rtol=0, atol=0)
