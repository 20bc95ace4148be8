"""Pair generation: determinism, exact counts, atlas mode, fixed pairs and RandomPairDataset with loaders."""

from __future__ import annotations

import random
import re

import pytest
import torch
from helpers import write_nifti
from monai.data import DataLoader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from torch.utils.data.distributed import DistributedSampler

from monai_vmorph.data import (
    FIXED_IMAGE,
    FIXED_LABEL,
    FIXED_NAME,
    IMAGE,
    LABEL,
    MOVING_IMAGE,
    MOVING_LABEL,
    MOVING_NAME,
    NAME,
    DataError,
    RandomPairDataset,
    atlas_pairs,
    fixed_pairs,
    scan_to_scan_pairs,
)


def _subjects(n, labels=True):
    out = [{IMAGE: f"/d/s{i}.nii.gz", NAME: f"s{i}"} for i in range(n)]
    for i, s in enumerate(out):
        if labels:
            s[LABEL] = f"/d/s{i}_seg.nii.gz"
    return out


def _names(pairs):
    return [(p[MOVING_NAME], p[FIXED_NAME]) for p in pairs]


def test_all_ordered_pairs_exactly_once():
    n = 5
    pairs = scan_to_scan_pairs(_subjects(n), seed=3)
    assert len(pairs) == n * (n - 1) == 20
    expected = {(f"s{i}", f"s{j}") for i in range(n) for j in range(n) if i != j}
    assert set(_names(pairs)) == expected  # 20 distinct pairs, no self pair
    assert _names(pairs) != sorted(_names(pairs))  # shuffled
    assert pairs[0] == {
        MOVING_IMAGE: f"/d/{pairs[0][MOVING_NAME]}.nii.gz",
        FIXED_IMAGE: f"/d/{pairs[0][FIXED_NAME]}.nii.gz",
        MOVING_LABEL: f"/d/{pairs[0][MOVING_NAME]}_seg.nii.gz",
        FIXED_LABEL: f"/d/{pairs[0][FIXED_NAME]}_seg.nii.gz",
        MOVING_NAME: pairs[0][MOVING_NAME],
        FIXED_NAME: pairs[0][FIXED_NAME],
    }


def test_allow_self_gives_n_squared():
    assert len(set(_names(scan_to_scan_pairs(_subjects(4), allow_self=True)))) == 16


def test_same_seed_same_pairs_other_seed_other_pairs():
    s = _subjects(6)
    assert scan_to_scan_pairs(s, 7, seed=1) == scan_to_scan_pairs(s, 7, seed=1)
    assert _names(scan_to_scan_pairs(s, 7, seed=1)) != _names(scan_to_scan_pairs(s, 7, seed=2))


def test_num_pairs_beyond_total_repeats_full_rounds():
    pairs = _names(scan_to_scan_pairs(_subjects(3), num_pairs=14, seed=0))
    assert len(pairs) == 14
    assert len(set(pairs[:6])) == 6 and len(set(pairs[6:12])) == 6  # each round of 3*2 pairs is complete


def test_global_rng_untouched():
    state, py_state = torch.random.get_rng_state(), random.getstate()
    scan_to_scan_pairs(_subjects(4), 5, seed=9)
    RandomPairDataset(_subjects(4), pairs_per_epoch=3).set_epoch(2)
    assert torch.equal(state, torch.random.get_rng_state())
    assert py_state == random.getstate()


def test_labels_only_when_both_subjects_have_one():
    s = _subjects(2)
    del s[1][LABEL]
    assert all(MOVING_LABEL not in p and FIXED_LABEL not in p for p in scan_to_scan_pairs(s))


def test_too_few_subjects():
    with pytest.raises(ValueError, match="at least 2"):
        scan_to_scan_pairs(_subjects(1))


@pytest.mark.parametrize("atlas", [0, "dict"])
def test_atlas_pairs_both_directions(atlas):
    s = _subjects(4)
    atlas = 0 if atlas == 0 else dict(s[0])
    to_scan = atlas_pairs(s, atlas)
    assert _names(to_scan) == [("s0", "s1"), ("s0", "s2"), ("s0", "s3")]
    assert _names(atlas_pairs(s, atlas, direction="scan_to_atlas")) == [("s1", "s0"), ("s2", "s0"), ("s3", "s0")]
    with pytest.raises(ValueError, match="direction"):
        atlas_pairs(s, atlas, direction="both")


def test_atlas_outside_the_list():
    atlas = {IMAGE: "/atlas/a.nii.gz", LABEL: "/atlas/a_seg.nii.gz"}
    pairs = atlas_pairs(_subjects(2), atlas, direction="scan_to_atlas")
    assert _names(pairs) == [("s0", "a"), ("s1", "a")]  # atlas name derived from the file name
    assert pairs[0][FIXED_LABEL] == "/atlas/a_seg.nii.gz"


def test_fixed_pairs_validates_and_names():
    out = fixed_pairs([{MOVING_IMAGE: "/d/m.nii.gz", FIXED_IMAGE: "/d/f.nii"}])
    assert out == [{MOVING_IMAGE: "/d/m.nii.gz", FIXED_IMAGE: "/d/f.nii", MOVING_NAME: "m", FIXED_NAME: "f"}]
    with pytest.raises(DataError, match=re.escape("/d/m.nii.gz") + ".*'fixed_image'"):
        fixed_pairs([{MOVING_IMAGE: "/d/m.nii.gz"}])
    with pytest.raises(DataError, match=re.escape("/d/ml.nii.gz")):
        fixed_pairs([{MOVING_IMAGE: "/d/m.nii.gz", FIXED_IMAGE: "/d/f.nii", MOVING_LABEL: "/d/ml.nii.gz"}])
    with pytest.raises(ValueError, match="non-empty"):
        fixed_pairs([])


def test_random_pair_dataset_epochs_are_reproducible():
    ds = RandomPairDataset(_subjects(6), pairs_per_epoch=8, seed=5)
    assert len(ds) == 8
    first = _names(ds.pairs)
    ds.set_epoch(1)
    second = _names(ds.pairs)
    assert second != first
    assert second == _names(scan_to_scan_pairs(_subjects(6), 8, seed=6))  # seed + epoch
    ds.set_epoch(0)
    assert _names(ds.pairs) == first
    assert ds[0] == ds.pairs[0] and ds[0] is not ds.pairs[0]  # no transform: a copy of the pair dict


def test_random_pair_dataset_atlas_mode():
    ds = RandomPairDataset(_subjects(4), mode="atlas", atlas=0, direction="scan_to_atlas", pairs_per_epoch=6, seed=0)
    names = _names(ds.pairs)
    assert len(names) == 6 and all(f == "s0" for _, f in names)
    assert sorted(m for m, _ in names[:3]) == ["s1", "s2", "s3"]  # every scan once before any repeats
    assert len(RandomPairDataset(_subjects(4), mode="atlas", atlas=0)) == 3  # default: one pair per scan
    with pytest.raises(ValueError, match="atlas"):
        RandomPairDataset(_subjects(4), mode="atlas")


def test_random_pair_dataset_distributed_shards_are_disjoint_and_cover(tmp_path):
    ds = RandomPairDataset(_subjects(5), pairs_per_epoch=10, seed=0)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        shards = []
        for rank in (0, 1):
            sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
            sampler.set_epoch(epoch)
            loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=0)
            shards.append([(m, f) for b in loader for m, f in zip(b[MOVING_NAME], b[FIXED_NAME], strict=True)])
        assert len(shards[0]) == len(shards[1]) == 5
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == sorted(_names(ds.pairs))


def test_random_pair_dataset_loads_through_monai_dataloader(tmp_path):
    subjects = [
        {
            IMAGE: write_nifti(tmp_path / f"s{i}.nii.gz", value=i),
            LABEL: write_nifti(tmp_path / f"l{i}.nii.gz", value=10 + i),
            NAME: f"s{i}",
        }
        for i in range(3)
    ]
    keys = [MOVING_IMAGE, FIXED_IMAGE, MOVING_LABEL, FIXED_LABEL]
    transform = Compose([LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys)])
    ds = RandomPairDataset(subjects, transform=transform, pairs_per_epoch=4, seed=0)
    batches = list(DataLoader(ds, batch_size=2, num_workers=0))
    assert len(batches) == 2
    for batch in batches:
        assert batch[MOVING_IMAGE].shape == (2, 1, 8, 8, 8)
        for b in range(2):
            m, f = int(batch[MOVING_NAME][b][1:]), int(batch[FIXED_NAME][b][1:])
            assert m != f
            assert torch.all(batch[MOVING_IMAGE][b] == m) and torch.all(batch[FIXED_IMAGE][b] == f)
            assert torch.all(batch[MOVING_LABEL][b] == 10 + m) and torch.all(batch[FIXED_LABEL][b] == 10 + f)
    assert isinstance(ds.pairs[0][MOVING_IMAGE], str)  # the pair list still holds paths after loading
