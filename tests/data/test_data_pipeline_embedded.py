"""The datalist, pairing and preprocessing chain run end to end on the embedded data."""

from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader

from monai_vmorph.data import RandomPairDataset, check_dimensionality, learn2reg_datalist
from monai_vmorph.data.keys import FIXED_IMAGE, FIXED_LABEL, MOVING_IMAGE, MOVING_LABEL
from monai_vmorph.metrics import label_dice
from monai_vmorph.transforms import RandSyntheticPaird, registration_preprocessing

DATA = Path(__file__).resolve().parents[2] / "data"


def test_3d_validation_pair_loads_on_the_grid_with_its_affine():
    datalist = learn2reg_datalist(DATA / "brain_3d")
    assert len(datalist["training"]) == 4 and check_dimensionality(datalist["training"]) == 3
    pair = datalist["registration_val"][0]
    out = registration_preprocessing(3)(pair)
    for key in (MOVING_IMAGE, FIXED_IMAGE, MOVING_LABEL, FIXED_LABEL):
        assert out[key].shape == (1, 96, 112, 96)
    expected = np.diag([2.0, 2.0, 2.0, 1.0])
    expected[:3, 3] = [-96, -132, -78]
    np.testing.assert_allclose(out[MOVING_IMAGE].affine.numpy(), expected)
    assert out[MOVING_IMAGE].max() == 1.0 and set(out[FIXED_LABEL].unique().tolist()) == {0.0, 1.0, 2.0, 3.0}
    dice = label_dice(out[MOVING_LABEL][None], out[FIXED_LABEL][None], labels=[1, 2, 3])
    assert 0.3 < dice.mean() < 0.8  # different brains, unregistered


def test_2d_random_pairs_batch_through_a_dataloader():
    subjects = learn2reg_datalist(DATA / "brain_2d")["training"]
    dataset = RandomPairDataset(subjects, transform=registration_preprocessing(2), pairs_per_epoch=4, seed=1)
    batch = next(iter(DataLoader(dataset, batch_size=2, num_workers=0)))
    assert batch[MOVING_IMAGE].shape == batch[FIXED_LABEL].shape == (2, 1, 96, 112)
    assert not torch.equal(batch[MOVING_IMAGE], batch[FIXED_IMAGE])


def test_synthetic_pair_from_an_embedded_volume():
    subject = learn2reg_datalist(DATA / "brain_2d")["training"][0]
    chain = registration_preprocessing(2, image_keys=["image"], label_keys=["label"])
    synth = RandSyntheticPaird(max_displacement=3.0)
    synth.set_random_state(0)
    pair = synth(chain(subject))
    assert pair["ddf_true"].shape == (2, 96, 112)
    dice = label_dice(pair[MOVING_LABEL][None], pair[FIXED_LABEL][None], labels=[1, 2, 3])
    assert 0.3 < dice.mean() < 0.95
