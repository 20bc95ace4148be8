"""MIND-SSC against a direct per-voxel loop of the definition (Heinrich et al. 2013), in 2D and 3D; its gradient
against finite differences; the property it is for: a contrast change that keeps the structure keeps the descriptor."""

import itertools

import numpy as np
import pytest
import torch

from monai_vmorph.losses import mind_ssc, mind_ssc_loss
from monai_vmorph.losses.mind import mind_pairs


def _loop_mind(image: np.ndarray, radius: int, dilation: int) -> np.ndarray:
    """The module docstring's definition, one voxel and one pair at a time (edge-repeated image)."""
    ndim = image.ndim
    shape = image.shape

    def value(index):
        return image[tuple(min(max(i, 0), n - 1) for i, n in zip(index, shape, strict=True))]

    neighbours = [tuple(s * (a == axis) for a in range(ndim)) for axis in range(ndim) for s in (-1, 1)]
    pairs = [
        (p, q)
        for p, q in itertools.combinations(neighbours, 2)
        if sum((a - b) ** 2 for a, b in zip(p, q, strict=True)) == 2
    ]
    box = list(itertools.product(range(-radius, radius + 1), repeat=ndim))
    distance = np.zeros((len(pairs), *shape))
    for x in itertools.product(*[range(n) for n in shape]):
        for k, (p, q) in enumerate(pairs):
            total = 0.0
            for b in box:
                y = [xi + bi for xi, bi in zip(x, b, strict=True)]
                a = value([yi + dilation * pi for yi, pi in zip(y, p, strict=True)])
                c = value([yi + dilation * qi for yi, qi in zip(y, q, strict=True)])
                total += (a - c) ** 2
            distance[(k, *x)] = total / len(box)
    distance -= distance.min(axis=0, keepdims=True)
    variance = distance.mean(axis=0, keepdims=True)
    mean = variance.mean()
    variance = np.clip(variance, 1e-3 * mean, 1e3 * mean)
    return np.exp(-distance / variance)


@pytest.mark.parametrize("shape", [(9, 8), (6, 7, 5)], ids=["2d", "3d"])
def test_mind_ssc_equals_the_direct_loop_of_its_definition(shape):
    image = np.random.default_rng(len(shape)).random(shape)
    expected = _loop_mind(image, radius=1, dilation=2)
    got = mind_ssc(torch.as_tensor(image)[None, None], radius=1, dilation=2)[0].numpy()
    assert got.shape == (12 if len(shape) == 3 else 4, *shape) == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_pairs_are_the_six_neighbourhoods_edges():
    pairs = mind_pairs(3)
    assert len(pairs) == 12 and len(set(pairs)) == 12
    assert all(sum(abs(a - b) for a, b in zip(p, q, strict=True)) == 2 and p != tuple(-v for v in q) for p, q in pairs)
    assert len(mind_pairs(2)) == 4


def test_loss_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 7, 6, 5, generator=generator, dtype=torch.float64)
    pred = torch.rand(1, 1, 7, 6, 5, generator=generator, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: mind_ssc_loss(p, target), (pred,), eps=1e-6, atol=1e-7)


def test_a_contrast_inversion_keeps_the_descriptor_and_a_shift_changes_it():
    """1 - I has the same squared differences as I: the descriptor is the same, where NCC-free intensity losses
    would call the pair maximally different; a 2-voxel shift of the structure is seen."""
    generator = torch.Generator().manual_seed(1)
    image = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 20, 20, 20, generator=generator), 5, 1, 2)
    assert float(mind_ssc_loss(1 - image, image)) < 1e-12
    assert float(mind_ssc_loss(torch.roll(image, 2, dims=2), image)) > 1e-3


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"\(B, 1, \*S\)"):
        mind_ssc(torch.rand(1, 2, 5, 5))
    with pytest.raises(ValueError, match="dilation must be an int >= 1"):
        mind_ssc(torch.rand(1, 1, 5, 5), dilation=0)
