"""SDlogJ against an independent re-implementation of the Learn2Reg evaluation code (numpy/scipy)."""

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate, gaussian_filter

from monai_vmorph.metrics import folding_fraction, jacobian_determinant, sdlogj


def _l2r_jacobian_determinant(disp):
    """Learn2Reg evaluation ``jacobian_determinant`` for a ``(1, 3, H, W, D)`` field (voxel units)."""
    gradx = np.array([-0.5, 0, 0.5]).reshape(1, 3, 1, 1)
    grady = np.array([-0.5, 0, 0.5]).reshape(1, 1, 3, 1)
    gradz = np.array([-0.5, 0, 0.5]).reshape(1, 1, 1, 3)
    grads = [
        np.stack([correlate(disp[:, k], g, mode="constant", cval=0.0) for k in range(3)], axis=1)
        for g in (gradx, grady, gradz)
    ]
    grad_disp = np.concatenate(grads, 0)  # [j, k] = d u_k / d x_j (the transpose; same determinant)
    jacobian = grad_disp + np.eye(3, 3).reshape(3, 3, 1, 1, 1)
    jacobian = jacobian[:, :, 2:-2, 2:-2, 2:-2]
    return (
        jacobian[0, 0] * (jacobian[1, 1] * jacobian[2, 2] - jacobian[1, 2] * jacobian[2, 1])
        - jacobian[1, 0] * (jacobian[0, 1] * jacobian[2, 2] - jacobian[0, 2] * jacobian[2, 1])
        + jacobian[2, 0] * (jacobian[0, 1] * jacobian[1, 2] - jacobian[0, 2] * jacobian[1, 1])
    )


def _l2r_sdlogj(disp):
    """Learn2Reg ``LogJacDetStd`` of a ``(3, H, W, D)`` field."""
    jac_det = (_l2r_jacobian_determinant(disp[np.newaxis]) + 3).clip(0.000000001, 1000000000)
    return np.log(jac_det).std()


def _generic_jacdet(disp, crop):
    """Same recipe for any ndim: correlate with [-0.5, 0, 0.5] per axis, crop, np.linalg.det."""
    ndim = disp.shape[0]
    kernel = np.array([-0.5, 0.0, 0.5])
    jac = np.empty((ndim, ndim, *disp.shape[1:]))
    for k in range(ndim):
        for j in range(ndim):
            jac[k, j] = correlate(disp[k], kernel.reshape([3 if a == j else 1 for a in range(ndim)]), mode="constant")
    jac += np.eye(ndim).reshape(ndim, ndim, *([1] * ndim))
    jac = jac[(slice(None), slice(None), *([slice(crop, -crop)] * ndim))]
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


def _smooth_field(shape, magnitude, seed=0, batch=1):
    rng = np.random.default_rng(seed)
    u = gaussian_filter(rng.normal(size=(batch, len(shape), *shape)), sigma=(0, 0, *[1.5] * len(shape)))
    return u * magnitude / np.abs(u).max()


def test_matches_learn2reg_on_random_3d_field():
    fields = _smooth_field((16, 14, 12), magnitude=4.0, seed=0, batch=2)
    torch_fields = torch.from_numpy(fields)
    assert folding_fraction(torch_fields).min() > 0  # exercises folded voxels too
    result = sdlogj(torch_fields)
    assert result.shape == (2,)
    assert result.dtype == torch.float64
    expected = [_l2r_sdlogj(fields[i]) for i in range(2)]
    np.testing.assert_allclose(result.numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12)  # actually equal to rounding
    # float32, as Learn2Reg casts the submitted fields
    np.testing.assert_allclose(sdlogj(torch_fields.float()).numpy(), expected, rtol=1e-4)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("crop", [1, 2, 3])
def test_matches_generic_reference(ndim, crop):
    field = _smooth_field((14, 12, 10)[:ndim], magnitude=3.0, seed=ndim)[0]
    jacdet = _generic_jacdet(field, crop)
    ddf = torch.from_numpy(field)[None]
    expected = np.log((jacdet + 3).clip(1e-9, 1e9)).std()
    np.testing.assert_allclose(sdlogj(ddf, crop=crop).item(), expected, rtol=1e-12)
    # textbook SDlogJ: offset 0, folds clipped to log(1e-9)
    expected = np.log(jacdet.clip(1e-9, 1e9)).std()
    np.testing.assert_allclose(sdlogj(ddf, crop=crop, offset=0.0).item(), expected, rtol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
def test_no_clip_and_no_crop(ndim):
    field = torch.from_numpy(_smooth_field((10, 9, 8)[:ndim], magnitude=0.5, seed=4))
    det = jacobian_determinant(field)
    assert det.min() > 0
    expected = torch.log(det).flatten(1).std(dim=1, correction=0)
    torch.testing.assert_close(sdlogj(field, crop=0, offset=0.0, clip=None), expected)
    folded = torch.from_numpy(_smooth_field((10, 9, 8)[:ndim], magnitude=6.0, seed=4))
    assert torch.isnan(sdlogj(folded, offset=0.0, clip=None)).all()


@pytest.mark.parametrize("ndim", [2, 3])
def test_affine_field_gives_zero(ndim):
    shape = (12, 11, 10)[:ndim]
    rng = np.random.default_rng(0)
    a = np.eye(ndim) + 0.2 * rng.normal(size=(ndim, ndim))
    x = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    ddf = torch.from_numpy(np.einsum("kj,j...->k...", a - np.eye(ndim), x) + 1.5)[None]
    assert sdlogj(ddf).item() == pytest.approx(0.0, abs=1e-12)
    assert sdlogj(ddf, offset=0.0).item() == pytest.approx(0.0, abs=1e-12)
    assert sdlogj(torch.zeros(3, ndim, *shape)).tolist() == [0.0, 0.0, 0.0]


def test_bad_inputs():
    good = torch.zeros(1, 3, 8, 8, 8)
    with pytest.raises(ValueError, match=r"one channel per spatial dim"):
        sdlogj(torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match=r"floating-point"):
        sdlogj(good.int())
    with pytest.raises(ValueError, match=r"NaN"):
        sdlogj(good.index_fill(2, torch.tensor([3]), float("nan")))
    with pytest.raises(ValueError, match=r"crop=4 removes 8 voxels.*\(8, 8, 8\)"):
        sdlogj(good, crop=4)
    with pytest.raises(ValueError, match=r"crop must be a non-negative int.*-1"):
        sdlogj(good, crop=-1)
    with pytest.raises(ValueError, match=r"crop must be a non-negative int.*1.5"):
        sdlogj(good, crop=1.5)
    with pytest.raises(ValueError, match=r"offset must be a finite float.*nan"):
        sdlogj(good, offset=float("nan"))
    with pytest.raises(ValueError, match=r"min < max.*\(1.0, 0.5\)"):
        sdlogj(good, clip=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"pair \(min, max\).*1.0"):
        sdlogj(good, clip=1.0)
