"""The deformable stage in the pipeline: the network's velocity carried to the working grid exactly, and
``register_pair``'s default stage recovering a known smooth field at 1 mm on the fixed scan's own grid."""

import numpy as np
import pytest
import torch
from helpers import index_grid, smooth_random_field
from monai.networks.layers import GaussianFilter

from monai_vmorph.errors import UserError
from monai_vmorph.networks import integrate_velocity, warp
from monai_vmorph.optimisation import DeformableLevel, DeformableSettings
from monai_vmorph.optimisation.grid import DeformableGrid
from monai_vmorph.pipeline import load_bundle_model, register_pair
from monai_vmorph.pipeline.deformable import velocity_on_grid
from monai_vmorph.pipeline.scan import NativeScan


def test_velocity_on_grid_changes_coordinates():
    # network grid: 2 mm voxels, axes swapped and one flipped; working grid: 1 mm, axis-aligned, shifted
    net = np.array([[0.0, 2.0, 0.0, -10.0], [-2.0, 0.0, 0.0, 30.0], [0.0, 0.0, 2.0, -5.0], [0, 0, 0, 1.0]])
    work = np.array([[1.0, 0, 0, -8.0], [0, 1.0, 0, 4.0], [0, 0, 1.0, 1.0], [0, 0, 0, 1.0]])
    shape_net, shape_work = (20, 22, 18), (12, 10, 8)
    # a linear velocity v(q) = B q + c in network voxels
    b = torch.tensor([[0.02, -0.01, 0.0], [0.0, 0.03, 0.01], [-0.02, 0.0, 0.01]])
    c = torch.tensor([0.5, -1.0, 0.25])
    q = index_grid(shape_net, torch.float32)
    v = (torch.einsum("kj,j...->k...", b, q) + c.view(3, 1, 1, 1))[None]
    grid = DeformableGrid(shape_work, work, (1, 1, 1), ((0, 0),) * 3)
    out = velocity_on_grid(v, net, grid)[0]
    # expected: v_W(r) = inv(W) N v(inv(N) W r), evaluated analytically
    r = index_grid(shape_work, torch.float64).reshape(3, -1)
    to_net = np.linalg.inv(net) @ work
    q_r = torch.as_tensor(to_net[:3, :3]) @ r + torch.as_tensor(to_net[:3, 3])[:, None]
    v_q = b.double() @ q_r + c.double()[:, None]
    expected = torch.as_tensor(np.linalg.inv(work[:3, :3]) @ net[:3, :3]) @ v_q
    assert np.abs(q_r.numpy()).max() < 18  # every working voxel is inside the network grid
    assert torch.allclose(out.reshape(3, -1).double(), expected, atol=1e-4)


@pytest.fixture(scope="module")
def bundle():
    return load_bundle_model(3, torch.device("cpu"))


@pytest.mark.slow
def test_native_stage_recovers_a_known_field_at_1mm(bundle):
    # a textured head-sized blob on a 1 mm grid (flipped axis), warped by a known smooth diffeomorphism (<= 3 mm);
    # regularised as Greedy's -s 1.5mm 0.5mm (the default's lighter smoothing fits noise texture: 0.34 mm here)
    shape = (56, 60, 52)
    affine = np.array([[-1.0, 0, 0, 28.0], [0, 1.0, 0, -30.0], [0, 0, 1.0, -26.0], [0, 0, 0, 1.0]])
    noise = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(0))
    texture = GaussianFilter(3, sigma=1.5)(noise)
    x = index_grid(shape, torch.float32) - torch.tensor([(n - 1) / 2 for n in shape]).view(3, 1, 1, 1)
    inside = (x.square().sum(0) < 22.0**2).float()[None, None]
    moving = (0.2 + (texture - texture.min()) / (texture.max() - texture.min())) * inside
    truth = integrate_velocity(smooth_random_field(shape, 3.0, seed=5, dtype=torch.float32), 8)
    fixed = warp(moving, truth)  # fixed(x) = moving(x + u(x))
    settings = DeformableSettings(
        levels=(DeformableLevel(2, 40), DeformableLevel(1, 30)), sigma_gradient=1.5, sigma_field=0.5, tol=0.0
    )
    result = register_pair(
        NativeScan.from_array(fixed[0, 0].numpy(), affine),
        NativeScan.from_array(moving[0, 0].numpy(), affine),
        bundle,
        affine="none",
        preset=settings,
        similarity="ncc",
    )
    stage = result.metrics["deformable"]
    assert stage["grid_voxel_mm"] == [1.0, 1.0, 1.0]
    # the written field (RAS mm) against the truth's (voxels -> RAS by the flipped 1 mm axes), inside the blob
    expected = np.moveaxis(truth[0].numpy(), 0, -1) @ affine[:3, :3].T
    core = (x.square().sum(0) < 18.0**2).numpy()
    error = np.linalg.norm(result.displacement - expected, axis=-1)[core]
    start = np.linalg.norm(expected, axis=-1)[core]
    assert start.mean() > 1.0
    assert error.mean() < 0.15, error.mean()  # measured 0.04 mm
    assert result.metrics["folding_percent"] <= 0.01
    assert result.metrics["initialisation"] in ("network", "affine")


def test_a_grid_larger_than_the_free_memory_is_refused_before_any_work(monkeypatch):
    import monai_vmorph.pipeline.deformable as stage

    monkeypatch.setattr(stage, "available_memory", lambda: 1000)
    image = np.ones((20, 20, 20), dtype=np.float32)
    with pytest.raises(UserError, match=r"needs about .* GB on a 20x20x20 grid .* coarser --resolution"):
        stage.run_deformable_stage(image, np.eye(4), image, np.eye(4), "ncc", False, DeformableSettings())
