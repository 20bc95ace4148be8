"""Per-label Dice and HD95 on hand-built label maps with known answers and a numpy/scipy reference."""

import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion, distance_transform_edt

from monai_vmorph.metrics import label_dice, label_hd95

NAN = float("nan")


def _box(shape, start, size):
    """Boolean ``shape`` array with ones on the box ``start : start + size``."""
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] = True
    return mask


def _maps(ndim):
    """pred/target ``(1, 1, *S)`` int64 maps with sparse labels 2001 and 2002 and known Dice 0.5 / 0.75."""
    shape = (16,) * ndim
    target = torch.zeros(shape, dtype=torch.int64)
    pred = torch.zeros(shape, dtype=torch.int64)
    target[_box(shape, (2,) * ndim, (4,) * ndim)] = 2001
    pred[_box(shape, (4, *(2,) * (ndim - 1)), (4,) * ndim)] = 2001  # overlap 2 x 4 (x 4): Dice 0.5
    target[_box(shape, (9,) * ndim, (4,) * ndim)] = 2002
    pred[_box(shape, (10, *(9,) * (ndim - 1)), (4,) * ndim)] = 2002  # overlap 3 x 4 (x 4): Dice 0.75
    return pred[None, None], target[None, None]


def _ref_hd95(pred, target, spacing):
    """Independent HD95 of two boolean numpy masks: boundary voxels, exact EDT, linear 95th percentile."""
    edges_p = pred ^ binary_erosion(pred)
    edges_t = target ^ binary_erosion(target)
    d_pt = distance_transform_edt(~edges_t, sampling=spacing)[edges_p]
    d_tp = distance_transform_edt(~edges_p, sampling=spacing)[edges_t]
    return max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))


@pytest.mark.parametrize("ndim", [2, 3])
def test_dice_on_boxes_with_sparse_labels(ndim):
    pred, target = _maps(ndim)
    torch.testing.assert_close(label_dice(pred, target, [2001, 2002]), torch.tensor([[0.5, 0.75]]))
    torch.testing.assert_close(label_dice(pred, target, (2002, 2001)), torch.tensor([[0.75, 0.5]]))
    torch.testing.assert_close(label_dice(pred, target, [2001]), torch.tensor([[0.5]]))  # single channel
    torch.testing.assert_close(label_dice(target, target, [0, 2001, 2002]), torch.ones(1, 3))
    # integral float maps and a batch of two give the same numbers
    both = label_dice(torch.cat([pred, target]).float(), torch.cat([target, target]).double(), [2001, 2002])
    torch.testing.assert_close(both, torch.tensor([[0.5, 0.75], [1.0, 1.0]]))


def test_small_integer_and_bool_dtypes_do_not_wrap_labels():
    # 2001 must not match 2001 % 256 == 209 in a uint8 map, nor any non-zero value in a bool map
    target = torch.zeros(1, 1, 6, 6, dtype=torch.uint8)
    target[..., :3, :] = 209
    torch.testing.assert_close(
        label_dice(target, target, [2001, 209, 0]), torch.tensor([[NAN, 1.0, 1.0]]), equal_nan=True
    )
    mask = target.bool()
    torch.testing.assert_close(label_dice(mask, mask, [2001, 1, 0]), torch.tensor([[NAN, 1.0, 1.0]]), equal_nan=True)
    assert label_hd95(mask, mask, [1]).tolist() == [[0.0]]


@pytest.mark.parametrize("ndim", [2, 3])
def test_absent_labels_follow_monai_convention(ndim):
    pred, target = _maps(ndim)
    pred = pred.clone()
    pred[pred == 2002] = 7  # 7: pred only; 2002: target only; 9: neither
    labels = [2001, 7, 2002, 9]
    torch.testing.assert_close(label_dice(pred, target, labels), torch.tensor([[0.5, NAN, 0.0, NAN]]), equal_nan=True)
    torch.testing.assert_close(
        label_dice(pred, target, labels, ignore_empty=False), torch.tensor([[0.5, 0.0, 0.0, 1.0]])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MONAI's per-channel empty-mask warnings are not passed on
        hd = label_hd95(pred, target, labels)
    assert hd[0, 0] > 0
    assert torch.isnan(hd[0, 1:]).all()


@pytest.mark.parametrize("ndim", [2, 3])
def test_hd95_of_single_voxels(ndim):
    shape = (1, 1, *((9,) * ndim))
    pred = torch.zeros(shape, dtype=torch.int32)
    target = torch.zeros(shape, dtype=torch.int32)
    pred[(0, 0, *((2,) * ndim))] = 3
    target[(0, 0, *((2,) * (ndim - 1)), 7)] = 3
    assert label_hd95(pred, target, [3]).tolist() == [[5.0]]
    assert label_hd95(pred, target, [3], spacing=(1.0,) * (ndim - 1) + (2.0,)).tolist() == [[10.0]]
    assert label_hd95(pred, target, [3], spacing=(3.0,) * (ndim - 1) + (1.0,)).tolist() == [[5.0]]


@pytest.mark.parametrize("ndim", [2, 3])
def test_hd95_identical_maps_is_zero(ndim):
    _, target = _maps(ndim)
    assert label_hd95(target, target, [2001, 2002, 0]).tolist() == [[0.0, 0.0, 0.0]]


@pytest.mark.parametrize("ndim", [2, 3])
def test_many_random_labels_match_reference(ndim):
    # 20 labels: more than one one-hot chunk; values sparse and unsorted
    rng = np.random.default_rng(ndim)
    shape = (24, 20) if ndim == 2 else (14, 12, 10)
    values = rng.permutation(np.arange(1000, 1020))
    coarse = rng.integers(0, 20, size=tuple(n // 2 for n in shape))
    target = values[np.kron(coarse, np.ones((2,) * ndim, dtype=np.int64))]
    pred = target.copy()
    flip = rng.random(shape) < 0.15
    pred[flip] = values[rng.integers(0, 20, size=int(flip.sum()))]
    labels = [int(v) for v in values[::-1]]
    spacing = (0.8, 1.5, 2.0)[:ndim]
    pt, tt = (torch.from_numpy(a)[None, None] for a in (pred, target))
    dice = label_dice(pt, tt, labels)
    hd = label_hd95(pt, tt, labels, spacing=spacing)
    assert dice.shape == hd.shape == (1, 20)
    for i, lab in enumerate(labels):
        p, t = pred == lab, target == lab
        assert dice[0, i].item() == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()), rel=1e-6)
        assert hd[0, i].item() == pytest.approx(_ref_hd95(p, t, spacing), rel=1e-5)


def test_bad_inputs():
    pred, target = _maps(3)
    for fn in (label_dice, label_hd95):
        with pytest.raises(ValueError, match=r"pred and target must have the same shape.*\(1, 1, 16, 16, 16\)"):
            fn(pred, target[..., :8], [2001])
        with pytest.raises(ValueError, match=r"\(B, 1, \*spatial\).*2 channels"):
            fn(torch.cat([pred, pred], 1), target, [2001])
        with pytest.raises(ValueError, match=r"2 or 3 spatial dims.*1 spatial dims"):
            fn(pred[..., 0, 0], target[..., 0, 0], [2001])
        with pytest.raises(ValueError, match=r"2 or 3 spatial dims.*4 spatial dims"):
            fn(pred[..., None], target[..., None], [2001])
        with pytest.raises(ValueError, match=r"target must hold integral label values.*0.5"):
            fn(pred, target.float() + 0.5, [2001])
        with pytest.raises(ValueError, match=r"pred must be finite"):
            fn(pred.float().index_fill(2, torch.tensor([0]), NAN), target, [2001])
        with pytest.raises(ValueError, match=r"non-empty sequence.*empty"):
            fn(pred, target, [])
        with pytest.raises(ValueError, match=r"integer label values, got 1.5"):
            fn(pred, target, [2001, 1.5])
        with pytest.raises(ValueError, match=r"distinct.*\[2001\]"):
            fn(pred, target, [2001, 2002, 2001])
    with pytest.raises(ValueError, match=r"one value per spatial dim \(3 for 3D.*got 2"):
        label_hd95(pred, target, [2001], spacing=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"positive"):
        label_hd95(pred, target, [2001], spacing=(1.0, -2.0, 1.0))
