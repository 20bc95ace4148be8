import pytest
import torch

from monai_vmorph.data.keys import FIXED_IMAGE, FIXED_LABEL, MOVING_IMAGE, MOVING_LABEL
from monai_vmorph.losses import RegistrationLoss, gradient_loss, local_ncc, mse, one_hot_labels, soft_dice_loss
from monai_vmorph.networks import RegistrationResult, warp


def _case(bidirectional=False):
    gen = torch.Generator().manual_seed(0)
    moving, fixed = torch.rand(2, 1, 12, 10, generator=gen), torch.rand(2, 1, 12, 10, generator=gen)
    ddf = torch.randn(2, 2, 12, 10, generator=gen)
    velocity = torch.randn(2, 2, 6, 5, generator=gen)
    labels = (moving * 3).floor(), (fixed * 3).floor()
    result = RegistrationResult(
        warped=warp(moving, ddf),
        ddf=ddf,
        velocity=velocity,
        warped_fixed=warp(fixed, -ddf) if bidirectional else None,
        inverse_ddf=-ddf if bidirectional else None,
    )
    targets = {MOVING_IMAGE: moving, FIXED_IMAGE: fixed, MOVING_LABEL: labels[0], FIXED_LABEL: labels[1]}
    return result, targets


def test_terms_add_up_to_the_documented_objective():
    result, t = _case(bidirectional=True)
    loss = RegistrationLoss(
        "ncc",
        smoothness_weight=0.5,
        loss_mult=2,
        dice_weight=0.3,
        labels=[1, 2],
        ncc_window=5,
        bidirectional_weight=0.25,
    )
    total = loss(result, t)
    dice = soft_dice_loss(
        warp(one_hot_labels(t[MOVING_LABEL], [1, 2]), result.ddf), one_hot_labels(t[FIXED_LABEL], [1, 2])
    )
    expected = (
        local_ncc(result.warped, t[FIXED_IMAGE], 5)
        + 0.25 * local_ncc(result.warped_fixed, t[MOVING_IMAGE], 5)
        + 0.5 * gradient_loss(result.velocity, "l2", 2)
        + 0.3 * dice
    )
    torch.testing.assert_close(total, expected)
    assert loss.last_terms["dice"] == pytest.approx(0.3 * float(dice))
    mse_only = RegistrationLoss("mse", smoothness_weight=0)(result, t)
    torch.testing.assert_close(mse_only, mse(result.warped, t[FIXED_IMAGE]) + mse(result.warped_fixed, t[MOVING_IMAGE]))


def test_bad_configuration_values_raise_clear_errors():
    with pytest.raises(ValueError, match=r"similarity must be one of \['ncc', 'mse', 'mind'\], got 'ssim'"):
        RegistrationLoss("ssim")
    with pytest.raises(ValueError, match="smoothness_weight must be a finite number >= 0, got -1"):
        RegistrationLoss(smoothness_weight=-1)
    with pytest.raises(ValueError, match="dice_weight must be a finite number >= 0, got nan"):
        RegistrationLoss(dice_weight=float("nan"))
    with pytest.raises(ValueError, match=r"dice_weight=0.5 needs the label values"):
        RegistrationLoss(dice_weight=0.5)
    with pytest.raises(ValueError, match="smoothness_penalty must be 'l1' or 'l2'"):
        RegistrationLoss(smoothness_penalty="tv")
    result, t = _case()
    with pytest.raises(ValueError, match="needs 'moving_label' and 'fixed_label'"):
        RegistrationLoss(dice_weight=1, labels=[1])(
            result, {MOVING_IMAGE: t[MOVING_IMAGE], FIXED_IMAGE: t[FIXED_IMAGE]}
        )
