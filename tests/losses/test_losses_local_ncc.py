"""local_ncc against a brute-force numpy reference, its invariances, gradients, dtypes and MONAI's LNCC."""

import math

import numpy as np
import pytest
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from monai_vmorph.losses import LocalNCCLoss, local_ncc
from monai_vmorph.losses.similarity import _local_cc_map


def ncc_reference(pred: np.ndarray, target: np.ndarray, window, eps: float = 1e-5):
    """VoxelMorph's definition, voxel by voxel, on explicitly zero-padded windows; returns (loss, cc map)."""
    spatial = pred.shape[2:]
    window = [window] * len(spatial) if isinstance(window, int) else list(window)
    pad = [(0, 0), (0, 0)] + [(w // 2, w // 2) for w in window]
    ip, jp = np.pad(pred, pad), np.pad(target, pad)
    n = math.prod(window)
    cc = np.zeros(pred.shape)
    for b in range(pred.shape[0]):
        for c in range(pred.shape[1]):
            for idx in np.ndindex(*spatial):
                box = tuple(slice(i, i + w) for i, w in zip(idx, window, strict=True))
                wi, wj = ip[b, c][box], jp[b, c][box]
                i_sum, j_sum = wi.sum(), wj.sum()
                cross = (wi * wj).sum() - i_sum * j_sum / n
                i_var = (wi * wi).sum() - i_sum * i_sum / n
                j_var = (wj * wj).sum() - j_sum * j_sum / n
                cc[b, c][idx] = cross * cross / (i_var * j_var + eps)
    return -cc.mean(), cc


def _pair(shape, seed=0, dtype=torch.float64):
    """A correlated, textured image pair away from zero (exercises the mean-centring rewrite)."""
    gen = torch.Generator().manual_seed(seed)
    i = torch.rand(shape, generator=gen, dtype=dtype) * 2.0 + 3.0
    j = 0.7 * i + 0.5 * torch.rand(shape, generator=gen, dtype=dtype) - 1.0
    return i, j


CASES = [
    ((1, 1, 9, 10), 3),
    ((1, 1, 9, 10), 5),
    ((2, 2, 9, 10), (3, 5)),
    ((1, 1, 9, 10), (11, 1)),  # window longer than the axis: every window reaches both borders
    ((1, 1, 7, 8, 9), 3),
    ((1, 1, 7, 8, 9), 5),
    ((2, 2, 7, 8, 9), (5, 3, 1)),
]


@pytest.mark.parametrize(("shape", "window"), CASES)
def test_matches_brute_force_reference_float64(shape, window):
    i, j = _pair(shape)
    ref_loss, ref_cc = ncc_reference(i.numpy(), j.numpy(), window)
    loss = local_ncc(i, j, window=window)
    assert loss.dtype == torch.float64
    assert abs(loss.item() - ref_loss) < 1e-10
    win = (window,) * (len(shape) - 2) if isinstance(window, int) else window
    np.testing.assert_allclose(_local_cc_map(i, j, win, 1e-5).numpy(), ref_cc, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("shape", "window"), [CASES[1], CASES[5]])
def test_float32_matches_reference(shape, window):
    i, j = _pair(shape)
    ref_loss, _ = ncc_reference(i.numpy(), j.numpy(), window)
    loss = local_ncc(i.float(), j.float(), window=window)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref_loss) < 1e-6


@pytest.mark.parametrize("ndim", [2, 3])
def test_float32_is_stable_for_intensities_far_from_zero(ndim):
    # raw CT/MR-like intensities: the textbook I2_sum - I_sum**2/N loses every digit in float32 here
    i, j = _pair((1, 1) + (12,) * ndim, seed=1)
    i, j = 1000.0 * i + 2000.0, 1000.0 * j + 2000.0
    expected = local_ncc(i, j, window=5).item()
    assert abs(local_ncc(i.float(), j.float(), window=5).item() - expected) < 1e-5


@pytest.mark.parametrize("ndim", [2, 3])
def test_identical_textured_images_give_minus_one(ndim):
    gen = torch.Generator().manual_seed(2)
    image = torch.rand((2, 1) + (16,) * ndim, generator=gen)
    # cc = var**2 / (var**2 + eps) with window variances >> sqrt(eps) on noise
    assert local_ncc(image, image.clone(), window=5).item() == pytest.approx(-1.0, abs=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_flat_images_score_zero_inside_and_follow_the_zero_padding_at_borders(ndim):
    # flat windows: cross = I_var = J_var = 0, so cc = 0 / eps = 0 (eps keeps it finite, it is not -1);
    # windows that reach the zero padding see a step 0.25 -> 0, which both images share, so cc ~ 1 there
    flat = torch.full((1, 1) + (8,) * ndim, 0.25, dtype=torch.float64)
    cc = _local_cc_map(flat, flat.clone(), (3,) * ndim, 1e-5)
    interior = (slice(None), slice(None)) + (slice(1, -1),) * ndim
    assert cc[interior].abs().max().item() < 1e-12
    ref_loss, ref_cc = ncc_reference(flat.numpy(), flat.numpy(), 3)
    np.testing.assert_allclose(cc.numpy(), ref_cc, atol=1e-10)
    assert local_ncc(flat, flat.clone(), window=3).item() == pytest.approx(ref_loss, abs=1e-10)
    assert ref_loss == pytest.approx(-(1 - (6 / 8) ** ndim), abs=1e-3)  # -(fraction of border voxels)


@pytest.mark.parametrize("ndim", [2, 3])
def test_intensity_scaling_leaves_loss_unchanged(ndim):
    i, j = _pair((1, 1) + (11,) * ndim, seed=3)
    window = (3, 5, 3)[:ndim]
    # cc(s*I, J) = s**2 cross**2 / (s**2 I_var J_var + eps): exact without eps ...
    for eps in (0.0, 1e-5):
        base = local_ncc(i, j, window=window, eps=eps).item()
        tol = 1e-12 if eps == 0.0 else 1e-5  # ... and up to eps / (I_var * J_var) with it
        assert local_ncc(2.5 * i, j, window=window, eps=eps).item() == pytest.approx(base, rel=tol)
        assert local_ncc(i, 0.4 * j, window=window, eps=eps).item() == pytest.approx(base, rel=tol)


@pytest.mark.parametrize("ndim", [2, 3])
def test_intensity_shift_leaves_cc_unchanged_where_windows_are_inside(ndim):
    # I -> a*I + b: the zero padding is not shifted by b, so cc changes near the borders only
    i, j = _pair((1, 1) + (11,) * ndim, seed=4)
    window = (5,) * ndim
    base = _local_cc_map(i, j, window, 0.0)
    moved = _local_cc_map(3.0 * i + 7.0, j, window, 0.0)
    interior = (slice(None), slice(None)) + (slice(2, -2),) * ndim
    torch.testing.assert_close(moved[interior], base[interior], rtol=1e-10, atol=0.0)
    assert not torch.allclose(moved, base)


@pytest.mark.parametrize("ndim", [2, 3])
def test_gradients_are_finite_and_match_finite_differences(ndim):
    i, j = _pair((1, 2) + (5,) * ndim, seed=5)
    i.requires_grad_(True)
    j.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: local_ncc(a, b, window=3), (i, j))
    flat = torch.ones((1, 1) + (6,) * ndim, requires_grad=True)
    noise = torch.rand((1, 1) + (6,) * ndim, requires_grad=True)
    for a, b in [(flat, flat), (flat, noise), (noise, noise)]:
        a.grad = b.grad = None
        local_ncc(a.float(), b.float(), window=3).backward()
        assert all(torch.isfinite(t.grad).all() for t in {a, b})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_summed_in_float32(dtype):
    i, j = _pair((1, 1, 8, 9, 10), seed=6, dtype=torch.float32)
    loss = local_ncc(i.to(dtype), j.to(dtype), window=3)
    assert loss.dtype == dtype
    expected = local_ncc(i.to(dtype).float(), j.to(dtype).float(), window=3)
    assert loss.float().item() == pytest.approx(expected.item(), rel=1e-2)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("window", [3, 5])
def test_agrees_with_monai_rectangular_lncc(ndim, window):
    # MONAI computes the same zero-padded window sums and the same cross/variance formulas; it differs only
    # in how it avoids division by zero: it clamps each variance at smooth_dr and has no eps in the product,
    # cc = cross**2 / (max(I_var, eps) * max(J_var, eps)), where VoxelMorph uses
    # cc = cross**2 / (I_var * J_var + eps). With a negligible eps the two are the same number; with the
    # default eps they differ by about eps / (I_var * J_var) per voxel, which is not small in flat or
    # low-contrast windows (there the definitions really differ). MONAI also has no per-axis window.
    i, j = _pair((2, 2) + (9,) * ndim, seed=7)
    for eps, rel in [(1e-14, 1e-9), (1e-5, 1e-4)]:
        monai_loss = LocalNormalizedCrossCorrelationLoss(
            spatial_dims=ndim, kernel_size=window, kernel_type="rectangular", smooth_nr=0.0, smooth_dr=eps
        )(i, j)
        assert local_ncc(i, j, window=window, eps=eps).item() == pytest.approx(monai_loss.item(), rel=rel)


def test_module_matches_function_and_keeps_its_settings():
    i, j = _pair((1, 1, 8, 9), seed=8)
    module = LocalNCCLoss(window=(3, 5), eps=1e-3)
    assert module(i, j).item() == local_ncc(i, j, window=(3, 5), eps=1e-3).item()
    assert "window=(3, 5)" in repr(module)
    assert LocalNCCLoss()(i, j).item() == local_ncc(i, j).item()


def test_multichannel_loss_is_the_mean_over_channels():
    i, j = _pair((2, 3, 7, 8, 9), seed=9)
    per_channel = [local_ncc(i[:, c : c + 1], j[:, c : c + 1], window=3) for c in range(3)]
    assert local_ncc(i, j, window=3).item() == pytest.approx(torch.stack(per_channel).mean().item(), rel=1e-12)


@pytest.mark.parametrize(
    ("pred", "target", "kwargs", "match"),
    [
        (torch.rand(1, 1, 8), torch.rand(1, 1, 8), {}, r"got shape \(1, 1, 8\) \(1 spatial dims\)"),
        (torch.rand(1, 1, 4, 4, 4, 4), torch.rand(1, 1, 4, 4, 4, 4), {}, r"\(1, 1, 4, 4, 4, 4\) \(4 spatial"),
        (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9), {}, r"got \(1, 1, 8, 8\) and \(1, 1, 8, 9\)"),
        (torch.rand(1, 1, 8, 8), torch.ones(1, 1, 8, 8, dtype=torch.int64), {}, "target .*torch.int64"),
        (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), {"window": 4}, "window .*got 4"),
        (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), {"window": 0}, "window .*got 0"),
        (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), {"window": (3, 4)}, r"got \(3, 4\)"),
        (torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8), {"window": (3, 3)}, r"3 for these.*\(3, 3\)"),
        (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), {"window": 3.0}, "got 3.0"),
        (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), {"eps": -1.0}, "eps .*got -1.0"),
    ],
)
def test_bad_inputs_raise_value_error(pred, target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        local_ncc(pred, target, **kwargs)


def test_bad_module_arguments_raise_value_error():
    with pytest.raises(ValueError, match="got 8"):
        LocalNCCLoss(window=8)
    with pytest.raises(ValueError, match="got True"):
        LocalNCCLoss(window=True)


def test_float32_gradients_stay_close_to_float64_on_brains_with_zero_background():
    """Flat background windows must not turn rounding noise into huge gradients (regression: variances < 0)."""
    from pathlib import Path

    import nibabel as nib

    from monai_vmorph.losses.similarity import _local_cc_map

    root = Path(__file__).resolve().parents[2] / "data" / "brain_3d" / "imagesTr"
    moving, fixed = (
        torch.from_numpy(nib.load(root / f"{n}_0000.nii.gz").get_fdata())[None, None]
        for n in ("itk_subject", "icbm09c")
    )
    grads = {}
    for dtype in (torch.float32, torch.float64):
        x = moving.to(dtype).requires_grad_()
        local_ncc(x, fixed.to(dtype)).backward()
        grads[dtype] = x.grad.double()
        assert _local_cc_map(moving.to(dtype), fixed.to(dtype), (9, 9, 9), 1e-5).min() >= 0
    scale = grads[torch.float64].abs().max()
    assert (grads[torch.float32] - grads[torch.float64]).abs().max() < 1e-3 * scale
