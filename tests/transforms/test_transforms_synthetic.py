import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_vmorph.data.keys import (
    DDF_TRUE,
    FIXED_IMAGE,
    FIXED_LABEL,
    FIXED_NAME,
    MOVING_IMAGE,
    MOVING_LABEL,
    MOVING_NAME,
)
from monai_vmorph.metrics import endpoint_error, folding_fraction, jacobian_determinant
from monai_vmorph.networks import SpatialTransformer
from monai_vmorph.transforms import (
    RandSmoothDeformd,
    RandSyntheticFixedd,
    RandSyntheticPaird,
    pair_augmentation,
    random_smooth_field,
)


def _subject(ndim, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (24, 28, 20)[:ndim]
    label = torch.zeros(1, *shape)
    label[(0, *[slice(4, n - 6) for n in shape])] = 1
    label[(0, *[slice(8, n - 10) for n in shape])] = 2
    image = label * 0.4 + 0.05 * torch.rand(1, *shape, generator=gen)
    affine = torch.diag(torch.tensor([*[1.5, 1.0, 2.0][:ndim], 1.0]))
    return {"image": MetaTensor(image, affine=affine), "label": MetaTensor(label, affine=affine), "name": "s1"}


@pytest.mark.parametrize("ndim", [2, 3])
def test_synthetic_pair_ground_truth_reproduces_the_fixed_image(ndim):
    transform = RandSyntheticPaird(max_displacement=4.0, control_spacing=8.0)
    transform.set_random_state(3)
    pair = transform(_subject(ndim))
    ddf = pair[DDF_TRUE][None]
    assert ddf.shape == (1, ndim, *pair[MOVING_IMAGE].shape[1:])
    warped = SpatialTransformer()(pair[MOVING_IMAGE].as_tensor()[None], ddf)[0]
    torch.testing.assert_close(warped, pair[FIXED_IMAGE].as_tensor(), rtol=0, atol=1e-6)
    warped_label = SpatialTransformer(mode="nearest")(pair[MOVING_LABEL].as_tensor()[None], ddf)[0]
    torch.testing.assert_close(warped_label, pair[FIXED_LABEL].as_tensor(), rtol=0, atol=0)
    assert set(pair[FIXED_LABEL].unique().tolist()) <= {0.0, 1.0, 2.0}
    # a real deformation, diffeomorphic, and the metadata (affine) of the source kept
    assert 2.5 < ddf.abs().max() < 5.0
    assert folding_fraction(ddf).item() == 0 and jacobian_determinant(ddf).min() > 0.2
    torch.testing.assert_close(pair[FIXED_IMAGE].affine, pair[MOVING_IMAGE].affine)
    assert pair[MOVING_NAME] == "s1" and "image" not in pair
    # same seed -> same field, another seed -> another field
    again = RandSyntheticPaird(max_displacement=4.0, control_spacing=8.0)
    again.set_random_state(3)
    torch.testing.assert_close(again(_subject(ndim))[DDF_TRUE], pair[DDF_TRUE])
    again.set_random_state(4)
    assert (again(_subject(ndim))[DDF_TRUE] - pair[DDF_TRUE]).abs().max() > 0.5


def test_endpoint_error_in_mm():
    a, b = torch.zeros(2, 3, 4, 5, 6), torch.zeros(2, 3, 4, 5, 6)
    b[:, 0], b[:, 1], b[:, 2] = 1.0, 2.0, 2.0
    torch.testing.assert_close(endpoint_error(a, b), torch.full((2,), 3.0))
    torch.testing.assert_close(endpoint_error(a, b, spacing=(2.0, 1.0, 1.0)), torch.full((2,), 12.0**0.5))
    mask = torch.zeros(2, 1, 4, 5, 6)
    mask[:, :, 0] = 1
    b[:, :, 1:] = 0
    torch.testing.assert_close(endpoint_error(a, b, mask=mask), torch.full((2,), 3.0))
    with pytest.raises(ValueError, match="same shape"):
        endpoint_error(a, b[:, :, :3])


def test_random_field_bad_arguments():
    with pytest.raises(ValueError, match=r"max_displacement must be a finite number >= 0.*-1"):
        random_smooth_field((8, 8), -1.0)
    with pytest.raises(ValueError, match=r"2 or 3 sizes >= 2, got \(8,\)"):
        random_smooth_field((8,), 1.0)
    assert random_smooth_field((8, 9), 0.0).abs().max() == 0


@pytest.mark.parametrize("ndim", [2, 3])
def test_augmentation_moves_image_and_label_together_and_groups_independently(ndim):
    subject = _subject(ndim)
    data = {
        MOVING_IMAGE: subject["image"],
        MOVING_LABEL: subject["label"],
        FIXED_IMAGE: subject["image"].clone(),
        FIXED_LABEL: subject["label"].clone(),
    }
    augment = pair_augmentation(
        ndim, prob=1.0, rotate_degrees=15, scale=0.1, translate=2, max_displacement=2.0, control_spacing=8.0
    )
    augment.set_random_state(0)
    out = augment(dict(data))
    for image_key, label_key in ((MOVING_IMAGE, MOVING_LABEL), (FIXED_IMAGE, FIXED_LABEL)):
        image, label = out[image_key].as_tensor(), out[label_key].as_tensor()
        assert set(label.unique().tolist()) <= {0.0, 1.0, 2.0}
        # the image was built as 0.4 * label + noise: its rounded level must give back the label map
        level = torch.round((image - 0.025) / 0.4).clamp(0, 2)
        agreement = (level == label).float().mean()
        assert agreement > 0.97
        assert (label != data[label_key]).float().mean() > 0.05  # it really moved
    assert (out[MOVING_LABEL] != out[FIXED_LABEL]).float().mean() > 0.02  # independent draws
    augment.set_random_state(0)
    torch.testing.assert_close(augment(dict(data))[MOVING_IMAGE], out[MOVING_IMAGE])


def test_smooth_deform_probability_and_mode_checks():
    subject = _subject(2)
    same = RandSmoothDeformd(["image", "label"], prob=0.0)(subject)
    assert same["image"] is subject["image"]
    with pytest.raises(ValueError, match="one value or one per key"):
        RandSmoothDeformd(["image", "label"], mode=["bilinear"])
    with pytest.raises(ValueError, match="on one grid"):
        RandSmoothDeformd(["a", "b"], prob=1.0)({"a": torch.zeros(1, 8, 8), "b": torch.zeros(1, 8, 9)})
    np.testing.assert_equal(RandSmoothDeformd(["image"], prob=1.0).modes, {"image": "bilinear"})


@pytest.mark.parametrize("ndim", [2, 3])
def test_synthetic_fixed_side_is_the_moving_side_warped_by_a_smooth_field(ndim):
    moving = _subject(ndim, seed=1)
    other = _subject(ndim, seed=2)
    pair = {
        MOVING_IMAGE: moving["image"],
        MOVING_LABEL: moving["label"],
        FIXED_IMAGE: other["image"] * 2.0,
        FIXED_LABEL: other["label"],
        MOVING_NAME: "s1",
        FIXED_NAME: "s2",
    }
    always = RandSyntheticFixedd(prob=1.0, max_displacement=3.0, control_spacing=8.0)
    always.set_random_state(5)
    out = always(pair)
    # the same draw as random_smooth_field with the seed the transform's random state gives (after its coin)
    state = np.random.RandomState(5)
    assert state.rand() < 1.0
    seed = int(state.randint(0, 2**31 - 1))
    field = random_smooth_field(pair[MOVING_IMAGE].shape[1:], 3.0, 8.0, 7, torch.Generator().manual_seed(seed))
    assert 2.0 < field.abs().max() < 4.0 and folding_fraction(field).item() == 0
    expected = SpatialTransformer()(moving["image"].as_tensor()[None], field)[0]
    torch.testing.assert_close(out[FIXED_IMAGE].as_tensor(), expected, rtol=0, atol=1e-6)
    expected_label = SpatialTransformer(mode="nearest")(moving["label"].as_tensor()[None], field)[0]
    torch.testing.assert_close(out[FIXED_LABEL].as_tensor(), expected_label, rtol=0, atol=0)
    assert out[FIXED_NAME] == "s1_deformed" and out[MOVING_IMAGE] is pair[MOVING_IMAGE]
    assert pair[FIXED_NAME] == "s2"  # the input dict is not edited
    # prob 0 leaves the pair as drawn; prob 0.5 replaces about half of the pairs
    never = RandSyntheticFixedd(prob=0.0)
    assert never(pair)[FIXED_IMAGE] is pair[FIXED_IMAGE]
    half = RandSyntheticFixedd(prob=0.5, max_displacement=1.0, control_spacing=8.0)
    half.set_random_state(0)
    replaced = sum(half(pair)[FIXED_NAME] == "s1_deformed" for _ in range(40))
    assert 10 <= replaced <= 30
    with pytest.raises(ValueError, match="prob"):
        RandSyntheticFixedd(prob=1.5)
    with pytest.raises(ValueError, match="fixed_image"):
        always({MOVING_IMAGE: moving["image"]})
