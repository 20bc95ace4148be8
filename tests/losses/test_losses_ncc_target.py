"""local_ncc_to_target (precomputed fixed-image statistics, analytic gradient) against local_ncc."""

import pytest
import torch

from monai_vmorph.losses.similarity import local_ncc, local_ncc_to_target, ncc_target_statistics


def _pair(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(shape, generator=gen, dtype=torch.float64) * 3.0 + 2.0
    target = 0.6 * pred + torch.rand(shape, generator=gen, dtype=torch.float64) - 1.0
    target[..., :3] = target.min()  # a flat background at the minimum: clamped variances, exact zeros
    return pred, target


@pytest.mark.parametrize(
    ("shape", "window"), [((1, 1, 12, 10), 3), ((2, 2, 12, 10), (5, 3)), ((1, 1, 9, 8, 7), 5), ((1, 1, 6, 7, 5), 9)]
)
def test_value_and_gradient_match_local_ncc(shape, window):
    pred, target = _pair(shape)
    pred.requires_grad_(True)
    expected = local_ncc(pred, target, window)
    (expected_grad,) = torch.autograd.grad(expected, pred)
    stats = ncc_target_statistics(target, window)
    loss = local_ncc_to_target(pred, stats)
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-15)


def test_gradcheck_and_float32_dtype():
    pred, target = _pair((1, 1, 7, 6))
    stats = ncc_target_statistics(target, 3)
    assert torch.autograd.gradcheck(lambda x: local_ncc_to_target(x, stats), (pred.requires_grad_(True),))
    stats32 = ncc_target_statistics(target.float(), 3)
    loss = local_ncc_to_target(pred.detach().float(), stats32)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(local_ncc(pred.detach(), target, 3).item(), abs=1e-5)


def test_errors():
    pred, target = _pair((1, 1, 8, 8))
    with pytest.raises(ValueError, match="window"):
        ncc_target_statistics(target, 4)
    with pytest.raises(ValueError, match="eps"):
        ncc_target_statistics(target, 3, eps=-1.0)
    with pytest.raises(ValueError):
        local_ncc_to_target(pred[..., :7], ncc_target_statistics(target, 3))
