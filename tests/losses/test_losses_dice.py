"""soft_dice_loss / DiceLoss against hand values and MONAI's DiceLoss; one_hot_labels with sparse labels."""

import pytest
import torch
from monai.losses import DiceLoss as MonaiDiceLoss
from monai.networks.utils import one_hot

from monai_vmorph.losses import DiceLoss, one_hot_labels, soft_dice_loss

EPS = 1e-5


def _hand_case(ndim):
    """2 labels on a 2x2 image (a trailing axis of size 1 makes it 3D; sums are unchanged)."""
    p0 = torch.tensor([[1.0, 0.5], [0.0, 0.0]], dtype=torch.float64)
    t0 = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    pred = torch.stack([p0, 1 - p0]).unsqueeze(0)
    target = torch.stack([t0, 1 - t0]).unsqueeze(0)
    if ndim == 3:
        pred, target = pred.unsqueeze(-1), target.unsqueeze(-1)
    return pred, target


@pytest.mark.parametrize("ndim", [2, 3])
def test_hand_computed_values(ndim):
    pred, target = _hand_case(ndim)
    # label 0: sum(p*t) = 1.5, sum(p) = 1.5, sum(t) = 2 -> dice = 3 / (3.5 + eps)
    # label 1: sum(p*t) = 2,   sum(p) = 2.5, sum(t) = 2 -> dice = 4 / (4.5 + eps)
    dice0, dice1 = 3 / (3.5 + EPS), 4 / (4.5 + EPS)
    assert soft_dice_loss(pred, target).item() == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-12)
    assert soft_dice_loss(pred, target, include_background=False).item() == pytest.approx(1 - dice1, rel=1e-12)
    assert DiceLoss(include_background=False)(pred, target).item() == pytest.approx(1 - dice1, rel=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_matches_monai_dice_loss_on_random_probabilities(ndim, include_background, eps):
    gen = torch.Generator().manual_seed(0)
    shape = (2, 4, *(9, 10, 11)[:ndim])
    pred = torch.randn(shape, generator=gen, dtype=torch.float64).softmax(1)
    target = torch.randn(shape, generator=gen, dtype=torch.float64).softmax(1)
    expected = MonaiDiceLoss(include_background=include_background, smooth_nr=0.0, smooth_dr=eps)(pred, target)
    ours = soft_dice_loss(pred, target, include_background=include_background, eps=eps)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
def test_perfect_overlap_gives_zero_and_disjoint_gives_one(ndim):
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (2, 1) + (8,) * ndim, generator=gen)
    labels[..., 0] = torch.arange(3).repeat_interleave(3)[:8]  # every label present in every item
    onehot = one_hot_labels(labels, [0, 1, 2], dtype=torch.float64)
    # dice = 2s / (2s + eps) for a label of s voxels: 0 up to eps / (2s)
    assert soft_dice_loss(onehot, onehot.clone()).item() == pytest.approx(0.0, abs=1e-6)
    shifted = onehot.roll(1, dims=1)  # each voxel's label moved to another channel: no overlap at all
    assert soft_dice_loss(onehot, shifted).item() == 1.0


def test_label_absent_from_both_maps_counts_as_zero_dice():
    # as in MONAI's DiceLoss(smooth_nr=0): 0 / (0 + eps) = 0, so an empty label adds 1 / L to the loss
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0] = 1.0
    assert soft_dice_loss(target, target.clone()).item() == pytest.approx(0.5, abs=1e-6)


def test_half_precision_returns_input_dtype():
    pred, target = _hand_case(3)
    loss = soft_dice_loss(pred.half(), target.half())
    assert loss.dtype == torch.float16
    assert loss.item() == pytest.approx(soft_dice_loss(pred, target).item(), abs=1e-3)


def test_one_hot_labels_with_sparse_atlas_values():
    label_map = torch.tensor([[[[0, 2001], [2002, 7]], [[2002, 2002], [0, 2001]]]]).reshape(2, 1, 2, 2)
    out = one_hot_labels(label_map, [0, 2001, 2002])
    assert out.shape == (2, 3, 2, 2) and out.dtype == torch.float32
    expected_first = torch.tensor([[[1, 0], [0, 0]], [[0, 1], [0, 0]], [[0, 0], [1, 0]]], dtype=torch.float32)
    torch.testing.assert_close(out[0], expected_first)  # 7 is not listed: all channels 0 at that voxel
    expected_second = torch.tensor([[[0, 0], [1, 0]], [[0, 0], [0, 1]], [[1, 1], [0, 0]]], dtype=torch.float32)
    torch.testing.assert_close(out[1], expected_second)
    # the order of the values gives the channel order; float maps (nearest-warped) and numpy-like lists work
    reordered = one_hot_labels(label_map.double(), torch.tensor([2002, 0]), dtype=torch.float64)
    torch.testing.assert_close(reordered, out[:, [2, 0]].double())
    # uint8 maps compare without wrapping the label value 256 to 0
    small = torch.tensor([0, 1, 0, 1], dtype=torch.uint8).reshape(1, 1, 2, 2)
    assert one_hot_labels(small, [256, 1])[:, 0].sum().item() == 0.0


@pytest.mark.parametrize("ndim", [2, 3])
def test_one_hot_labels_for_consecutive_labels_matches_monai(ndim):
    label_map = torch.randint(0, 4, (2, 1) + (5,) * ndim, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(one_hot_labels(label_map, range(4)), one_hot(label_map, num_classes=4, dim=1))
    # values outside 0..L-1 are not an error: they are left out, like any unlisted value
    label_map.view(-1)[0] = 9
    out = one_hot_labels(label_map, [0, 1, 2, 3])
    assert out.flatten(2)[0, :, 0].sum().item() == 0.0
    assert out.sum().item() == label_map.numel() - 1


@pytest.mark.parametrize(
    ("pred", "target", "kwargs", "match"),
    [
        (torch.rand(1, 2, 8), torch.rand(1, 2, 8), {}, r"got shape \(1, 2, 8\)"),
        (torch.rand(1, 2, 4, 4), torch.rand(1, 3, 4, 4), {}, r"got \(1, 2, 4, 4\) and \(1, 3, 4, 4\)"),
        (torch.rand(1, 2, 4, 4), torch.ones(1, 2, 4, 4, dtype=torch.int64), {}, "target .*torch.int64"),
        (torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), {"include_background": False}, r"\(1, 1, 4, 4\)"),
        (torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4), {"eps": float("nan")}, "eps .*got nan"),
    ],
)
def test_dice_bad_inputs_raise_value_error(pred, target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        soft_dice_loss(pred, target, **kwargs)


@pytest.mark.parametrize(
    ("label_map", "labels", "match"),
    [
        (torch.zeros(1, 2, 4, 4, dtype=torch.int64), [0, 1], r"one channel.*got shape \(1, 2, 4, 4\)"),
        (torch.zeros(1, 1, 4, dtype=torch.int64), [0, 1], r"got shape \(1, 1, 4\)"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int64), [], r"non-empty sequence.*got an empty sequence"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int64), [0, 1.5], r"integer label values, got 1.5 in \[0, 1.5\]"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int64), [2001, 2001], r"distinct.*\[2001\] in \[2001, 2001\]"),
    ],
)
def test_one_hot_labels_bad_inputs_raise_value_error(label_map, labels, match):
    with pytest.raises(ValueError, match=match):
        one_hot_labels(label_map, labels)
