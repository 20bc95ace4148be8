"""refine_multilevel: recovery of a known smooth diffeomorphism (2D, 3D), per-level loss decrease, determinism,
the last level's loss against the model's loss, presets and argument errors."""

import math

import pytest
import torch
import torch.nn.functional as F

import monai_vmorph.engines.refine_multilevel as rm
from monai_vmorph.engines.refine import LevelRecord, RefineOutput
from monai_vmorph.engines.refine_multilevel import REFINE_PRESETS, RefineLevel, RefinePreset, refine_multilevel
from monai_vmorph.losses import RegistrationLoss
from monai_vmorph.metrics import endpoint_error, folding_fraction
from monai_vmorph.networks import VoxelMorph
from monai_vmorph.networks.blocks.warp import warp


def _smooth_image(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A textured image: a sum of smooth cosines with random frequencies and phases (``(1, 1, *shape)``)."""
    gen = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) / n for n in shape), indexing="ij")
    image = torch.zeros(shape)
    for _ in range(6):
        freq = torch.rand(len(shape), generator=gen) * 3.0 + 1.0
        phase = torch.rand(len(shape), generator=gen) * 2 * math.pi
        term = torch.ones(shape)
        for x, f, p in zip(axes, freq.tolist(), phase.tolist(), strict=True):
            term = term * torch.cos(2 * math.pi * f * x + p)
        image = image + term
    return ((image - image.min()) / (image.max() - image.min()))[None, None]


def _known_pair(shape: tuple[int, ...], amplitude: float, seed: int = 0):
    """(model, moving, fixed, true ddf, initial): ``fixed(x) = moving(x + u(x))`` with ``u = exp(v)``, where
    ``v`` is one smooth sine per component on the model's velocity grid (largest component ``amplitude``
    voxels of that grid); ``initial`` is the identity (zero velocity), so the test does not depend on weights."""
    torch.manual_seed(seed)
    ndim = len(shape)
    model = VoxelMorph(
        spatial_dims=ndim, backbone_kwargs={"encoder_channels": (4, 4), "decoder_channels": (4, 4, 4)}
    ).eval()
    moving = _smooth_image(shape, seed)
    v_shape = tuple(n // model.int_downsize for n in model.padded_shape(shape))
    axes = torch.meshgrid(*(torch.linspace(0, math.pi, n) for n in v_shape), indexing="ij")
    velocity = torch.stack(
        [amplitude * torch.sin(axes[(k + 1) % ndim] + 0.3 * k) * torch.sin(axes[k]) for k in range(ndim)]
    )[None]
    with torch.no_grad():
        truth = model.from_velocity(moving, moving, velocity).ddf
        fixed = warp(moving, truth)
        initial = model.from_velocity(moving, fixed, torch.zeros_like(velocity))
    return model, moving, fixed, truth, initial


LOSS = RegistrationLoss("ncc", smoothness_weight=0.05, loss_mult=2, ncc_window=5)
LEVELS = (RefineLevel(2, max_steps=30, lr=0.2, ncc_window=3, integration_steps=5), RefineLevel(1, 20, 0.05))
# (shape, bound on the refined endpoint error in voxels); the identity's error is 1.3 (2D) / 1.8 (3D) voxels
CASES = [((32, 32), 0.3), ((20, 24, 18), 0.6)]


@pytest.mark.slow  # 7-9 s each on the shared 2-core machine
@pytest.mark.parametrize(("shape", "bound"), CASES)
def test_recovers_known_field_each_level_lowers_loss_no_folding(shape, bound):
    model, moving, fixed, truth, initial = _known_pair(shape, amplitude=1.2)
    out = refine_multilevel(model, moving, fixed, LOSS, levels=LEVELS, tol=1e-4, window=5, initial=initial)
    assert isinstance(out, RefineOutput) and [r.factor for r in out.levels] == [2, 1]
    for record in out.levels:
        assert isinstance(record, LevelRecord) and record.steps >= 1 and record.seconds >= 0
        assert record.final_loss < record.initial_loss - 0.01  # every level lowers its own loss
    assert len(out.losses) == sum(r.steps + 1 for r in out.levels)
    before = float(endpoint_error(initial.ddf, truth)[0])
    after = float(endpoint_error(out.result.ddf, truth)[0])
    assert before > 1.0
    assert after < bound and after < 0.35 * before
    assert float(folding_fraction(out.result.ddf)[0]) == 0.0
    # the result is the model's own output for the refined velocity
    expected = model.from_velocity(moving, fixed, out.result.velocity)
    torch.testing.assert_close(out.result.ddf, expected.ddf)
    # at the network's resolution with the model's integration, the level's loss is the model's loss
    assert out.levels[-1].final_loss == pytest.approx(
        float(LOSS(expected, {"moving_image": moving, "fixed_image": fixed})), abs=1e-5
    )


def test_convergence_stopping_is_deterministic():
    model, moving, fixed, _, initial = _known_pair((32, 32), amplitude=1.0, seed=3)
    levels = (RefineLevel(2, 200, 0.2, 3, 5, exact_gradient=False), RefineLevel(1, 200, 0.05))
    runs = [refine_multilevel(model, moving, fixed, LOSS, levels, tol=1e-3, window=4, initial=initial) for _ in "ab"]
    first, second = runs
    assert all(r.converged and 4 <= r.steps < 200 for r in first.levels)  # stopped by the test, not the limit
    assert [r.steps for r in first.levels] == [r.steps for r in second.levels]
    assert first.losses == second.losses
    assert torch.equal(first.result.ddf, second.result.ddf)


@pytest.mark.parametrize("shape", [(64, 56), (36, 32, 28)])
def test_the_loss_on_the_signal_region_equals_the_whole_grid_loss(shape, monkeypatch):
    """Images that are zero around the object (skull-stripped, resampled) are refined on the box where either has
    signal: the same losses, steps and field as on the whole grid, with fewer voxels per step."""
    model, moving, fixed, _, initial = _known_pair(shape, amplitude=1.0, seed=2)
    box = (..., *(slice(n // 4, n - n // 4) for n in shape))
    mask = torch.zeros_like(moving)
    mask[box] = 1.0
    moving = moving * mask
    fixed = warp(moving, model.from_velocity(moving, moving, 0.3 * torch.ones_like(initial.velocity)).ddf)
    levels = (RefineLevel(2, 6, 0.1, 3, 4, exact_gradient=False), RefineLevel(1, 4, 0.05, exact_gradient=False))
    focused = {}
    original_focus = rm._Level.focus

    def spy(self, velocity):
        original_focus(self, velocity)
        focused[len(focused)] = (self.region, self.region_fraction, tuple(self.moving.shape[2:]))

    monkeypatch.setattr(rm._Level, "focus", spy)
    region = refine_multilevel(model, moving, fixed, LOSS, levels, tol=0.0, window=5, initial=initial)
    # at the full level: the object's half-size box (moved by about a voxel) widened by the window (2) and the margin
    # (4) on each side
    region_box, fraction, _ = focused[len(levels) - 1]
    assert all(
        n // 4 - 8 <= r.start <= n // 4 - 6 and n - n // 4 + 6 <= r.stop <= n - n // 4 + 8
        for r, n in zip(region_box, shape, strict=True)
    )
    assert fraction < 0.87
    monkeypatch.setattr(rm, "_REGION_MARGIN", 10_000)  # a margin past the grid: the whole grid
    whole = refine_multilevel(model, moving, fixed, LOSS, levels, tol=0.0, window=5, initial=initial)
    assert [r.steps for r in region.levels] == [r.steps for r in whole.levels] == [6, 4]
    # Adam divides by the gradient's magnitude, so summation-order differences of ~1e-9 in near-zero gradient
    # components become differences of a fraction of lr: 3e-4 voxels measured in the field, and up to 1.1e-6 in
    # losses of ~0.35 (float32); a region that missed signal would change them by orders of magnitude more
    assert region.losses == pytest.approx(whole.losses, abs=5e-6)
    torch.testing.assert_close(region.result.ddf, whole.result.ddf, rtol=0, atol=2e-3)
    # an image with signal everywhere keeps the whole grid
    focused.clear()
    monkeypatch.setattr(rm, "_REGION_MARGIN", 4)
    refine_multilevel(model, moving + 0.01, fixed + 0.01, LOSS, levels, tol=0.0, window=5, initial=initial)
    assert [fraction for _, fraction, _ in focused.values()] == [1.0, 1.0]


def test_mind_across_an_inverted_contrast_recovers_the_field_as_ncc_does_within_one_contrast():
    """MIND-SSC levels register a pair whose fixed image has the opposite contrast (1 - I), where the intensities
    disagree everywhere, as well as local NCC registers the same pair in one contrast. The phantom is three
    smoothed tissue classes: the field is only observable near their boundaries, so neither recovers it all."""
    model, _, _, truth, initial = _known_pair((48, 48), amplitude=1.5)
    blobs = F.avg_pool2d(torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(0)), 9, 1, 4)
    blobs = (blobs - blobs.min()) / (blobs.max() - blobs.min())
    moving = F.avg_pool2d(
        torch.bucketize(blobs, torch.tensor([0.4, 0.6])).float() / 2, 3, 1, 1, count_include_pad=False
    )
    fixed = warp(moving, truth)
    ncc_loss = RegistrationLoss("ncc", smoothness_weight=0.05, loss_mult=2, ncc_window=5)
    mind_loss = RegistrationLoss("mind", smoothness_weight=0.05, loss_mult=2)
    errors = {}
    for name, loss, target in (("ncc", ncc_loss, fixed), ("mind", mind_loss, 1 - fixed)):
        levels = (RefineLevel(2, 60, 0.2, 3, integration_steps=5), RefineLevel(1, 40, 0.05))
        out = refine_multilevel(model, moving, target, loss, levels=levels, tol=1e-4, window=5, initial=initial)
        assert all(record.final_loss < record.initial_loss for record in out.levels)
        assert float(folding_fraction(out.result.ddf)[0]) == 0.0
        errors[name] = float(endpoint_error(out.result.ddf, truth)[0])
    before = float(endpoint_error(initial.ddf, truth)[0])
    assert errors["mind"] < 0.8 * before and errors["mind"] < errors["ncc"] + 0.05, (before, errors)


def test_straight_through_gradient_also_recovers_the_field():
    model, moving, fixed, truth, initial = _known_pair((32, 32), amplitude=1.2)
    levels = (RefineLevel(2, 40, 0.1, 3, 5, exact_gradient=False), RefineLevel(1, 20, 0.05, exact_gradient=False))
    # the approximate gradient needs a stronger regulariser than LOSS's here (0.05 left 0.4 % folded pixels)
    loss = RegistrationLoss("ncc", smoothness_weight=0.2, loss_mult=2, ncc_window=5)
    out = refine_multilevel(model, moving, fixed, loss, levels, tol=1e-4, window=5, initial=initial)
    assert all(r.final_loss < r.initial_loss - 0.01 for r in out.levels)
    after = float(endpoint_error(out.result.ddf, truth)[0])
    assert after < 0.35 * float(endpoint_error(initial.ddf, truth)[0])  # 0.31 voxels against 1.33
    assert float(folding_fraction(out.result.ddf)[0]) == 0.0


def test_no_levels_returns_the_network_result_and_callback_reports_levels():
    model, moving, fixed, _, initial = _known_pair((16, 16), amplitude=0.5)
    out = refine_multilevel(model, moving, fixed, LOSS, levels=(), initial=initial)
    assert out.levels == () and out.losses == [] and torch.equal(out.result.ddf, initial.ddf)
    calls = []
    levels = (RefineLevel(2, 3, 0.1), RefineLevel(1, 2, 0.1))
    out = refine_multilevel(
        model, moving, fixed, LOSS, levels, tol=0.0, initial=initial, callback=lambda *a: calls.append(a)
    )
    assert [(level, step) for level, step, _ in calls] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2)]
    assert [loss for *_, loss in calls] == out.losses[1:4] + out.losses[5:]


def test_presets_are_public_and_fast_is_the_network_alone():
    assert set(REFINE_PRESETS) == {"fast", "default"}
    assert REFINE_PRESETS["fast"].levels == ()
    default = REFINE_PRESETS["default"]
    assert isinstance(default, RefinePreset) and default.levels[-1].factor == 1
    assert [lv.factor for lv in default.levels] == sorted((lv.factor for lv in default.levels), reverse=True)
    assert default.to_dict()["levels"][0]["factor"] == default.levels[0].factor
    assert set(default.kwargs()) == {"levels", "tol", "window"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"factor": 0, "max_steps": 1, "lr": 0.1}, "factor"),
        ({"factor": 2.0, "max_steps": 1, "lr": 0.1}, "factor"),
        ({"factor": 1, "max_steps": -1, "lr": 0.1}, "max_steps"),
        ({"factor": 1, "max_steps": 1, "lr": 0.0}, "lr"),
        ({"factor": 1, "max_steps": 1, "lr": float("nan")}, "lr"),
        ({"factor": 1, "max_steps": 1, "lr": 0.1, "ncc_window": 4}, "ncc_window"),
        ({"factor": 1, "max_steps": 1, "lr": 0.1, "integration_steps": 0}, "integration_steps"),
    ],
)
def test_level_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RefineLevel(**kwargs)


def test_refine_argument_errors():
    model, moving, fixed, _, initial = _known_pair((16, 16), amplitude=0.5)
    level = RefineLevel(1, 1, 0.1)
    cases = [
        ({"levels": (RefineLevel(1, 1, 0.1), RefineLevel(2, 1, 0.1))}, "coarse to fine"),
        ({"levels": (level, level)}, "coarse to fine"),
        ({"levels": [{"factor": 1}]}, "RefineLevel"),
        ({"levels": "fast"}, "sequence"),
        ({"levels": (RefineLevel(16, 1, 0.1),)}, "smaller factor"),
        ({"tol": -1e-3}, "tol"),
        ({"window": 0}, "window"),
        ({"loss_fn": lambda result, targets: result.ddf.sum()}, "RegistrationLoss"),
        ({"loss_fn": RegistrationLoss(dice_weight=1.0, labels=(1,))}, "dice_weight"),
        ({"moving": moving[:, :, :8]}, "one shape"),
    ]
    for change, match in cases:
        kwargs = {"loss_fn": LOSS, "levels": (level,), "initial": initial, **change}
        with pytest.raises(ValueError, match=match):
            refine_multilevel(model, kwargs.pop("moving", moving), fixed, **kwargs)
    two_way = VoxelMorph(spatial_dims=2, bidirectional=True, backbone_kwargs={"encoder_channels": (4, 4)})
    with pytest.raises(ValueError, match="bidirectional"):
        refine_multilevel(two_way, moving, fixed, LOSS, (level,))


def test_refining_inferer_refines_every_pair_of_a_batch_like_refine_multilevel():
    """The bundles' inferer: each batch item refined on its own with the preset, inside ``torch.no_grad()`` as
    MONAI's evaluator calls it; ``"fast"`` is the network alone; an unknown preset is a one-line error."""
    from monai_vmorph.engines import RefiningInferer
    from monai_vmorph.errors import UserError

    model, moving, fixed, truth, _ = _known_pair((32, 32), amplitude=1.2)
    other = _smooth_image((32, 32), seed=7)
    moving2, fixed2 = torch.cat([moving, other]), torch.cat([fixed, warp(other, truth)])
    inferer = RefiningInferer("default", similarity="ncc", smoothness_weight=0.05, loss_mult=2)
    with torch.no_grad():
        out = inferer(moving2, model, fixed=fixed2)
        network = model(moving2, fixed2)
    assert out.ddf.shape == (2, 2, 32, 32) and not out.ddf.requires_grad
    for b in range(2):
        direct = refine_multilevel(
            model, moving2[b : b + 1], fixed2[b : b + 1], inferer.loss, **REFINE_PRESETS["default"].kwargs()
        )
        torch.testing.assert_close(out.ddf[b : b + 1], direct.result.ddf, rtol=0, atol=1e-5)
        torch.testing.assert_close(out.warped[b : b + 1], direct.result.warped, rtol=0, atol=1e-5)
        before = float(endpoint_error(network.ddf[b : b + 1], truth)[0])
        after = float(endpoint_error(out.ddf[b : b + 1], truth)[0])
        assert before > 1.0 and after < 0.5 * before  # the network (random weights, ~zero field) is refined
    with torch.no_grad():
        fast = RefiningInferer("fast")(moving2, model, fixed=fixed2)
    torch.testing.assert_close(fast.ddf, network.ddf, rtol=0, atol=0)
    with pytest.raises(UserError, match=r"refine must be one of \['default', 'fast'\], got 'accurate'"):
        RefiningInferer("accurate")
