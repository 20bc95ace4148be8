"""``torch.export`` of the inference network: the shipped 3D bundle's model exported at one input shape gives the
eager result on another random pair, also after a save / load round trip, and eager calls stay correct afterwards
(the identity-grid cache must not keep the export's fake tensors)."""

import pytest
import torch

from monai_vmorph.pipeline import load_bundle_model


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
