"""mse / MSELoss against numpy, dtypes and input checks."""

import numpy as np
import pytest
import torch

from monai_vmorph.losses import MSELoss, mse


@pytest.mark.parametrize("shape", [(2, 3, 8, 9), (2, 1, 6, 7, 8)])
def test_matches_numpy(shape):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(shape, generator=gen, dtype=torch.float64)
    b = torch.randn(shape, generator=gen, dtype=torch.float64)
    expected = np.mean((a.numpy() - b.numpy()) ** 2)
    assert mse(a, b).item() == pytest.approx(expected, rel=1e-12)
    assert MSELoss()(a, b).item() == pytest.approx(expected, rel=1e-12)
    assert mse(a, a).item() == 0.0


def test_hand_computed_value():
    a = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    b = torch.tensor([[[[1.0, 1.0], [0.0, 3.0]]]])
    assert mse(a, b).item() == pytest.approx((1 + 0 + 4 + 0) / 4)


def test_half_precision_returns_input_dtype_without_overflow():
    a = torch.full((1, 1, 16, 16, 16), 200.0, dtype=torch.float16)
    b = torch.zeros_like(a)
    loss = mse(a, b)  # squares of 200 summed over 4096 voxels overflow float16; float32 sums do not
    assert loss.dtype == torch.float16
    assert loss.item() == 40000.0


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (torch.rand(1, 1, 8), torch.rand(1, 1, 8), r"got shape \(1, 1, 8\)"),
        (torch.rand(1, 1, 8, 8), torch.rand(1, 2, 8, 8), r"got \(1, 1, 8, 8\) and \(1, 2, 8, 8\)"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.int32), torch.rand(1, 1, 8, 8), "pred .*torch.int32"),
    ],
)
def test_bad_inputs_raise_value_error(pred, target, match):
    with pytest.raises(ValueError, match=match):
        mse(pred, target)
