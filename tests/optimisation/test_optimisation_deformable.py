"""The deformable optimiser: it recovers a known smooth diffeomorphism at 1 mm (2D and 3D), its exponential, its
unfolding guard and the validation of its settings."""

import pytest
import torch
from helpers import smooth_random_field

from monai_vmorph.metrics import folding_fraction
from monai_vmorph.networks import integrate_velocity, warp
from monai_vmorph.optimisation import DeformableLevel, DeformableSettings, optimise_velocity, unfold
from monai_vmorph.optimisation.deformable import exponential, level_schedule, level_shape


def _texture(shape, seed=0):
    """A smooth random image in [0, 1] (noise blurred by a separable Gaussian of sigma 1.5 voxels)."""
    from monai.networks.layers import GaussianFilter

    noise = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(seed))
    image = GaussianFilter(len(shape), sigma=1.5)(noise)
    return (image - image.min()) / (image.max() - image.min())


SETTINGS = DeformableSettings(
    levels=(DeformableLevel(2, 60), DeformableLevel(1, 60)), sigma_gradient=1.0, sigma_field=0.5, tol=0.0
)


@pytest.mark.parametrize(("shape", "similarity"), [((64, 56), "ncc"), ((64, 56), "mse"), ((32, 30, 28), "ncc")])
def test_recovers_a_known_smooth_field(shape, similarity):
    # fixed(x) = moving(x + u(x)) with u = exp(v) a smooth diffeomorphism of up to 2 voxels (= 2 mm at 1 mm)
    moving = _texture(shape)
    truth = integrate_velocity(smooth_random_field(shape, 2.0, seed=1, dtype=torch.float32), 8)
    fixed = warp(moving, truth)
    velocity, records = optimise_velocity(moving, fixed, similarity, SETTINGS, spacing=[1.0] * len(shape))
    found = exponential(velocity, SETTINGS.integration_steps)
    inner = (slice(None), slice(None), *[slice(4, n - 4) for n in shape])
    error = (found - truth).square().sum(1, keepdim=True).sqrt()[inner]
    start = truth.square().sum(1, keepdim=True).sqrt()[inner]
    # mean endpoint error below 0.3 voxel (from about 1.2 unregistered), and no folding
    assert float(start.mean()) > 0.9
    assert float(error.mean()) < 0.3, float(error.mean())
    assert float(folding_fraction(found)) == 0.0
    assert [r.shrink for r in records] == [2, 1]
    assert all(r.final_similarity <= r.initial_similarity for r in records)
    assert records[1].shape == tuple(shape) and records[0].shape == level_shape(shape, 2)


def test_starts_from_an_initial_velocity_and_keeps_the_best_iterate():
    shape = (48, 40)
    moving = _texture(shape, seed=3)
    v_true = smooth_random_field(shape, 1.5, seed=4, dtype=torch.float32)
    fixed = warp(moving, integrate_velocity(v_true, 8))
    # the true velocity as the start: nothing to improve, the optimiser must not make it worse
    settings = DeformableSettings(levels=(DeformableLevel(1, 5),), sigma_gradient=1.0, sigma_field=0.0, tol=0.0)
    velocity, records = optimise_velocity(moving, fixed, "mse", settings, initial=v_true)
    assert records[0].final_similarity <= records[0].initial_similarity
    assert float((velocity - v_true).abs().max()) < 0.5


def test_exponential_takes_the_fewest_steps_that_are_accurate():
    v = smooth_random_field((40, 40), 3.0, seed=2, dtype=torch.float32)
    # 3 voxels need ceil(log2(3 / 0.5)) = 3 squarings; the result is close to the 10-step integration
    reference = integrate_velocity(v, 10)
    assert torch.equal(exponential(v, 6), integrate_velocity(v, 3))
    assert float((exponential(v, 6) - reference).abs().max()) < 0.1
    assert torch.equal(exponential(v, 2), integrate_velocity(v, 2))  # capped by max_steps
    assert torch.equal(exponential(v * 0.1, 6), integrate_velocity(v * 0.1, 1))


def test_unfold_smooths_a_folding_field_until_it_does_not_fold():
    shape = (40, 40)
    noise = torch.randn(1, 2, *shape, generator=torch.Generator().manual_seed(0)) * 1.5
    assert float(folding_fraction(exponential(noise, 6))) > 0.01
    velocity, rounds = unfold(noise, 6, 1e-4)
    assert rounds >= 1
    assert float(folding_fraction(exponential(velocity, 6))) <= 1e-4
    smooth = smooth_random_field(shape, 1.0, dtype=torch.float32)
    kept, none = unfold(smooth, 6, 1e-4)
    assert none == 0 and kept is smooth


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"levels": (DeformableLevel(1.0, 5), DeformableLevel(2.0, 5))}, "coarse to fine"),
        ({"step": 0.0}, "step"),
        ({"sigma_field": -1.0}, "sigma_field"),
        ({"sigma_gradient": float("nan")}, "sigma_gradient"),
        ({"ncc_window": 4}, "ncc_window"),
        ({"integration_steps": 0}, "integration_steps"),
    ],
)
def test_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeformableSettings(**kwargs)


@pytest.mark.parametrize(("spacing", "iterations"), [(float("inf"), 5), (0, 5), (2, -1), (True, 5), (2.0, 1.5)])
def test_levels_are_validated(spacing, iterations):
    with pytest.raises(ValueError, match="DeformableLevel"):
        DeformableLevel(spacing, iterations)


def test_one_schedule_serves_every_voxel_size():
    levels = DeformableSettings().levels  # 8, 4, 2 and 1 mm
    assert level_schedule(levels, [1.0, 1.0, 1.0]) == [(8, 100), (4, 100), (2, 30), (1, 10)]
    assert level_schedule(levels, [2.0, 2.0, 2.0]) == [(4, 100), (2, 100), (1, 30)]  # no 1 mm level at 2 mm
    assert level_schedule(levels, [1.2, 1.2, 3.0]) == [(4, 100), (2, 100), (1, 40)]  # 2 and 1 mm run as one
    assert level_schedule(levels, [0.5, 0.5]) == [(16, 100), (8, 100), (4, 30), (2, 10)]


def test_inputs_are_checked():
    image = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="one shape"):
        optimise_velocity(image, torch.rand(1, 1, 16, 15))
    with pytest.raises(ValueError, match="similarity"):
        optimise_velocity(image, image, "mi")
    with pytest.raises(ValueError, match="spacing"):
        optimise_velocity(image, image, spacing=[1.0])
    with pytest.raises(ValueError, match="initial"):
        optimise_velocity(image, image, initial=torch.zeros(1, 2, 8, 8))
