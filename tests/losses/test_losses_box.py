"""The separable box sum behind local_ncc: values against scipy, self-adjoint gradients, window counts."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from monai_vmorph.losses._box import box_sum, window_counts


@pytest.mark.parametrize(
    ("shape", "window"), [((6, 7), (3, 3)), ((6, 7), (5, 1)), ((4, 5, 6), (3, 5, 7)), ((4, 5, 6), (9, 1, 3))]
)
def test_matches_zero_padded_uniform_filter(shape, window):
    x = torch.randn(2, 3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = np.stack(
        [
            [uniform_filter(x[b, c].numpy(), size=window, mode="constant", cval=0.0) * math.prod(window)]
            for b in range(2)
            for c in range(3)
        ]
    ).reshape(x.shape)
    np.testing.assert_allclose(box_sum(x, window).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize(("shape", "window"), [((5, 6), (3, 5)), ((3, 4, 5), (3, 1, 5))])
def test_gradient_is_the_box_sum_of_the_gradient_and_twice_differentiable(shape, window):
    x = torch.randn(1, 2, *shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: box_sum(t, window), (x,))
    assert torch.autograd.gradgradcheck(lambda t: box_sum(t, window), (x,))


def test_unit_window_is_a_copy():
    x = torch.randn(1, 1, 4, 5)
    out = box_sum(x, (1, 1))
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize(("shape", "window"), [((6, 7), (3, 5)), ((4, 5, 6), (5, 3, 9))])
def test_window_counts_are_the_box_sum_of_ones(shape, window):
    counts = window_counts(shape, window, "cpu", torch.float64)
    assert counts.shape == (1, 1, *shape)
    torch.testing.assert_close(counts, box_sum(torch.ones(1, 1, *shape, dtype=torch.float64), window))
