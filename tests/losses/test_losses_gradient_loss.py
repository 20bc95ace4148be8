"""gradient_loss / GradLoss on analytic fields with hand-worked values, a numpy reference and bad inputs."""

import numpy as np
import pytest
import torch
from helpers import affine_ddf, index_grid

from monai_vmorph.losses import GradLoss, gradient_loss


def _linear_field(coeffs, axis, shape):
    """``u_k(x) = coeffs[k] * x_axis``, ``(1, ndim, *shape)``."""
    x = index_grid(shape)[axis]
    return torch.stack([c * x for c in coeffs]).unsqueeze(0)


# u_k = a_k * x_j: forward differences are a_k (channel k) along axis j and 0 along the other axes.
# Per-axis means run over all channels, so the axis-j term is mean_k(a_k**2) (l2) or mean_k(|a_k|) (l1),
# and the loss divides that by ndim (average over the axes).
LINEAR_CASES = [
    # 2D, a = (2, -1): l2 = (4 + 1) / 2 / 2 = 5/4, l1 = (2 + 1) / 2 / 2 = 3/4
    ((2.0, -1.0), 0, (8, 9), 5 / 4, 3 / 4),
    ((2.0, -1.0), 1, (8, 9), 5 / 4, 3 / 4),
    # 3D, a = (1, -2, 3): l2 = (1 + 4 + 9) / 3 / 3 = 14/9, l1 = (1 + 2 + 3) / 3 / 3 = 2/3
    ((1.0, -2.0, 3.0), 0, (6, 7, 8), 14 / 9, 2 / 3),
    ((1.0, -2.0, 3.0), 2, (6, 7, 8), 14 / 9, 2 / 3),
    # 3D, a = (0.5, 0, 0): l2 = 0.25 / 3 / 3 = 1/36, l1 = 0.5 / 3 / 3 = 1/18
    ((0.5, 0.0, 0.0), 1, (6, 7, 8), 1 / 36, 1 / 18),
]


@pytest.mark.parametrize(("coeffs", "axis", "shape", "l2", "l1"), LINEAR_CASES)
def test_linear_fields_give_hand_computed_values(coeffs, axis, shape, l2, l1):
    ddf = _linear_field(coeffs, axis, shape)
    assert gradient_loss(ddf, "l2").item() == pytest.approx(l2, rel=1e-12)
    assert gradient_loss(ddf, "l1").item() == pytest.approx(l1, rel=1e-12)
    assert gradient_loss(ddf).item() == pytest.approx(l2, rel=1e-12)  # l2 is the default


@pytest.mark.parametrize("ndim", [2, 3])
def test_affine_field_gives_frobenius_norm_over_ndim_squared(ndim):
    # u(x) = (A - I) x + b: along axis j, channel k differs by (A - I)[k, j] everywhere, so
    # l2 = sum_j mean_k (A - I)[k, j]**2 / ndim = ||A - I||_F**2 / ndim**2, and l1 likewise with |.|
    rng = np.random.default_rng(0)
    matrix = np.eye(ndim) + 0.2 * rng.standard_normal((ndim, ndim))
    ddf = affine_ddf(matrix, rng.standard_normal(ndim), (7,) * ndim)
    m = matrix - np.eye(ndim)
    assert gradient_loss(ddf, "l2").item() == pytest.approx((m**2).sum() / ndim**2, rel=1e-12)
    assert gradient_loss(ddf, "l1").item() == pytest.approx(np.abs(m).sum() / ndim**2, rel=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_constant_field_gives_zero(ndim, penalty):
    ddf = torch.ones(2, ndim, *(5,) * ndim) * torch.arange(1.0, ndim + 1).view(1, ndim, *(1,) * ndim)
    assert gradient_loss(ddf, penalty).item() == 0.0


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_random_field_matches_numpy_and_loss_mult_scales(ndim, penalty):
    ddf = torch.randn(2, ndim, *(6, 7, 8)[:ndim], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f = np.abs if penalty == "l1" else np.square
    expected = np.mean([f(np.diff(ddf.numpy(), axis=2 + k)).mean() for k in range(ndim)])
    assert gradient_loss(ddf, penalty).item() == pytest.approx(expected, rel=1e-12)
    assert gradient_loss(ddf, penalty, loss_mult=2).item() == pytest.approx(2 * expected, rel=1e-12)
    assert GradLoss(penalty, loss_mult=2)(ddf).item() == pytest.approx(2 * expected, rel=1e-12)


def test_gradients_reach_the_field():
    ddf = torch.randn(1, 3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: gradient_loss(u, "l2", loss_mult=2.0), (ddf,))


def test_half_precision_returns_input_dtype():
    ddf = _linear_field((1.0, -2.0, 3.0), 0, (6, 7, 8)).half()
    loss = gradient_loss(ddf)
    assert loss.dtype == torch.float16
    assert loss.item() == pytest.approx(14 / 9, rel=1e-3)


@pytest.mark.parametrize(
    ("ddf", "kwargs", "match"),
    [
        (torch.zeros(1, 2, 8, 8), {"penalty": "l3"}, r"\['l1', 'l2'\], got 'l3'"),
        (torch.zeros(1, 3, 8, 8), {}, r"got shape \(1, 3, 8, 8\) with 3 channels"),
        (torch.zeros(1, 1, 8), {}, r"got shape \(1, 1, 8\) \(1 spatial dims\)"),
        (torch.zeros(1, 2, 8, 8, dtype=torch.int64), {}, "torch.int64"),
        (torch.zeros(1, 2, 8, 1), {}, r"at least 2 voxels .*\(1, 2, 8, 1\)"),
        (torch.zeros(1, 2, 8, 8), {"loss_mult": -1.0}, "loss_mult .*got -1.0"),
    ],
)
def test_bad_inputs_raise_value_error(ddf, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradient_loss(ddf, **kwargs)


def test_bad_module_arguments_raise_value_error():
    with pytest.raises(ValueError, match="got 'L2'"):
        GradLoss("L2")
    with pytest.raises(ValueError, match="got 'two'"):
        GradLoss(loss_mult="two")
