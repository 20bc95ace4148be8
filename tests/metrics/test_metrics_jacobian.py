"""Jacobian determinant and folding fraction against analytic fields and a numpy reference."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from monai_vmorph.metrics import folding_fraction, jacobian_determinant, jacobian_matrix

SHAPES = {2: (12, 9), 3: (10, 8, 7)}


def _grid(shape):
    """``(ndim, *shape)`` float64 array indices, channel k = index along axis k."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))


def _affine_field(a, b, shape):
    """``(ndim, *shape)`` numpy field ``u(x) = (A - I) x + b``."""
    ndim = len(shape)
    u = np.einsum("kj,j...->k...", a - np.eye(ndim), _grid(shape))
    return u + np.asarray(b).reshape(ndim, *([1] * ndim))


def _well_conditioned(ndim, seed, sign=1.0):
    """Random matrix ``Q1 diag(s) Q2`` with singular values in [0.6, 1.6] and determinant of sign ``sign``."""
    rng = np.random.default_rng(seed)
    q1, _ = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    q2, _ = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    a = q1 @ np.diag(rng.uniform(0.6, 1.6, size=ndim)) @ q2
    if np.sign(np.linalg.det(a)) != sign:
        a[:, 0] *= -1
    return a


def _full(matrix, shape):
    """``(*shape, n, n)`` copies of ``matrix``: the expected Jacobian (``J[k, j] = d phi_k / d x_j``)."""
    return np.broadcast_to(matrix, (*shape, *matrix.shape))


def _smooth_field(shape, magnitude, seed=0, batch=1):
    """``(B, ndim, *shape)`` float64 smooth random field (Gaussian-filtered noise), max |u| = magnitude."""
    rng = np.random.default_rng(seed)
    u = gaussian_filter(rng.normal(size=(batch, len(shape), *shape)), sigma=(0, 0, *[2.0] * len(shape)))
    return torch.from_numpy(u * magnitude / np.abs(u).max())


def _numpy_jacdet(u):
    """Independent reference: ``det(I + grad u)`` with np.gradient (edge_order=1) and np.linalg.det."""
    ndim = u.shape[0]
    grad = np.stack([np.stack(np.gradient(u[k], axis=tuple(range(ndim))), axis=0) for k in range(ndim)])
    jac = grad + np.eye(ndim).reshape(ndim, ndim, *([1] * ndim))
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_affine_field_has_det_a_at_every_voxel(ndim, seed):
    shape = SHAPES[ndim]
    a = _well_conditioned(ndim, seed)
    b = np.random.default_rng(seed + 10).normal(size=ndim)
    ddf = torch.from_numpy(_affine_field(a, b, shape))[None]
    det = jacobian_determinant(ddf)
    assert det.shape == (1, *shape)
    assert det.dtype == torch.float64
    np.testing.assert_allclose(det.numpy(), np.full((1, *shape), np.linalg.det(a)), rtol=0, atol=1e-12)
    jac = jacobian_matrix(ddf)
    assert jac.shape == (1, ndim, ndim, *shape)
    np.testing.assert_allclose(np.moveaxis(jac[0].numpy(), (0, 1), (-2, -1)), _full(a, shape), atol=1e-12)
    assert folding_fraction(ddf).item() == 0.0


@pytest.mark.parametrize("ndim", [2, 3])
def test_reflection_folds_everywhere(ndim):
    a = _well_conditioned(ndim, seed=3, sign=-1.0)
    ddf = torch.from_numpy(_affine_field(a, np.zeros(ndim), SHAPES[ndim]))[None]
    np.testing.assert_allclose(jacobian_determinant(ddf).numpy(), np.linalg.det(a), atol=1e-12)
    assert np.linalg.det(a) < 0
    assert folding_fraction(ddf).tolist() == [1.0]


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_identity_field(ndim, dtype):
    ddf = torch.zeros(2, ndim, *SHAPES[ndim], dtype=dtype)
    det = jacobian_determinant(ddf)
    assert det.dtype == (torch.float32 if dtype == torch.float16 else dtype)
    assert torch.equal(det, torch.ones(2, *SHAPES[ndim], dtype=det.dtype))
    assert folding_fraction(ddf).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("ndim", [2, 3])
def test_known_folding_region(ndim):
    # u_0(x) = -2 x_0 where x_1 < 3, else 0: only row 0 of grad(u) is non-zero, so det = 1 + du_0/dx_0,
    # which is exactly -1 on the 3 of 9 slices with x_1 < 3 and 1 elsewhere (linear along axis 0).
    shape = SHAPES[ndim]
    x = torch.from_numpy(_grid(shape))
    ddf = torch.zeros(1, ndim, *shape, dtype=torch.float64)
    ddf[0, 0] = torch.where(x[1] < 3, -2.0 * x[0], torch.zeros_like(x[0]))
    det = jacobian_determinant(ddf)[0]
    assert torch.equal(det, torch.where(x[1] < 3, -1.0, 1.0).double())
    assert folding_fraction(ddf).item() == pytest.approx(3 / shape[1], abs=1e-15)
    assert folding_fraction(ddf, spacing=[0.5] * ndim).item() == pytest.approx(3 / shape[1], abs=1e-15)


@pytest.mark.parametrize("ndim", [2, 3])
def test_matches_numpy_reference_on_random_field_and_batch(ndim):
    ddf = _smooth_field(SHAPES[ndim], magnitude=3.0, seed=ndim, batch=2)
    det = jacobian_determinant(ddf)
    for i in range(2):
        np.testing.assert_allclose(det[i].numpy(), _numpy_jacdet(ddf[i].numpy()), rtol=1e-12, atol=1e-12)
    expected = [(_numpy_jacdet(ddf[i].numpy()) <= 0).mean() for i in range(2)]
    np.testing.assert_allclose(folding_fraction(ddf).numpy(), expected, atol=1e-15)


@pytest.mark.parametrize("ndim", [2, 3])
def test_spacing_changes_matrix_but_not_determinant(ndim):
    spacing = (0.7, 2.5, 1.3)[:ndim]
    ddf = _smooth_field(SHAPES[ndim], magnitude=2.0, seed=7)
    np.testing.assert_allclose(
        jacobian_determinant(ddf, spacing).numpy(), jacobian_determinant(ddf).numpy(), rtol=1e-12, atol=1e-12
    )
    # physical Jacobian of an affine field is D A D^-1 with D = diag(spacing)
    a = _well_conditioned(ndim, seed=5)
    affine = torch.from_numpy(_affine_field(a, np.zeros(ndim), SHAPES[ndim]))[None]
    d = np.diag(spacing)
    expected = d @ a @ np.linalg.inv(d)
    jac = jacobian_matrix(affine, spacing)[0].numpy()
    np.testing.assert_allclose(np.moveaxis(jac, (0, 1), (-2, -1)), _full(expected, SHAPES[ndim]), atol=1e-12)
    np.testing.assert_allclose(jacobian_determinant(affine, spacing).numpy(), np.linalg.det(a), atol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
def test_half_precision_is_computed_in_float32(ndim):
    ddf = _smooth_field(SHAPES[ndim], magnitude=2.0, seed=1).half()
    det = jacobian_determinant(ddf)
    assert det.dtype == torch.float32
    assert torch.equal(det, jacobian_determinant(ddf.float()))


@pytest.mark.parametrize("fn", [jacobian_determinant, folding_fraction, jacobian_matrix])
def test_bad_inputs(fn):
    good = torch.zeros(1, 3, 6, 6, 6)
    with pytest.raises(ValueError, match=r"one channel per spatial dim.*2 channels"):
        fn(torch.zeros(1, 2, 6, 6, 6))
    with pytest.raises(ValueError, match=r"2 or 3 spatial dims.*1 spatial dims"):
        fn(torch.zeros(1, 1, 6))
    with pytest.raises(ValueError, match=r"2 or 3 spatial dims.*4 spatial dims"):
        fn(torch.zeros(1, 4, 4, 4, 4, 4))
    with pytest.raises(ValueError, match=r"floating-point.*torch.int64"):
        fn(good.long())
    bad = good.clone()
    bad[0, 1, 2, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"finite, got 1 NaN"):
        fn(bad)
    with pytest.raises(ValueError, match=r"at least 2 voxels.*\(1, 3, 6, 1, 6\)"):
        fn(torch.zeros(1, 3, 6, 1, 6))
    with pytest.raises(ValueError, match=r"one value per spatial dim \(3 for 3D.*got 2"):
        fn(good, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"positive.*\(1.0, 0.0, 1.0\)"):
        fn(good, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"sequence of 3 positive floats, got 2.0"):
        fn(good, spacing=2.0)
