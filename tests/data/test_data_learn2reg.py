"""learn2reg_datalist: <name>_dataset.json with training, registration_val/test and label look-up."""

from __future__ import annotations

import json
import os
import re

import pytest
from helpers import write_nifti

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
    learn2reg_datalist,
)


def _dataset(root, content=None, name="toy"):
    """a, b with labels in training; c in imagesTr with a label file but not in training; d in imagesTs, no label."""
    for case in ("a", "b", "c"):
        write_nifti(root / "imagesTr" / f"{case}_0000.nii.gz")
        write_nifti(root / "labelsTr" / f"{case}_0000.nii.gz")
    write_nifti(root / "imagesTs" / "d_0000.nii.gz")
    if content is None:
        content = {
            "name": name,
            "tensorImageSize": {"0": "3D"},
            "training": [
                {"image": "./imagesTr/a_0000.nii.gz", "label": "./labelsTr/a_0000.nii.gz"},
                {"image": "imagesTr/b_0000.nii.gz", "label": "labelsTr/b_0000.nii.gz"},
            ],
            "registration_val": [{"fixed": "./imagesTr/a_0000.nii.gz", "moving": "./imagesTr/c_0000.nii.gz"}],
            "registration_test": [{"fixed": "./imagesTr/b_0000.nii.gz", "moving": "./imagesTs/d_0000.nii.gz"}],
        }
    json_path = root / f"{name}_dataset.json"
    json_path.write_text(json.dumps(content))
    return json_path


def _f(root, rel):
    return str(root / rel)


def test_training_and_pairs_with_label_lookup(tmp_path):
    _dataset(tmp_path)
    out = learn2reg_datalist(tmp_path)
    assert set(out) == {"training", "registration_val", "registration_test"}
    assert out["training"] == [
        {IMAGE: _f(tmp_path, "imagesTr/a_0000.nii.gz"), LABEL: _f(tmp_path, "labelsTr/a_0000.nii.gz"), NAME: "a_0000"},
        {IMAGE: _f(tmp_path, "imagesTr/b_0000.nii.gz"), LABEL: _f(tmp_path, "labelsTr/b_0000.nii.gz"), NAME: "b_0000"},
    ]
    # fixed label from the training entry, moving label (c is not in training) from labelsTr/<same name>
    assert out["registration_val"] == [
        {
            MOVING_IMAGE: _f(tmp_path, "imagesTr/c_0000.nii.gz"),
            MOVING_LABEL: _f(tmp_path, "labelsTr/c_0000.nii.gz"),
            MOVING_NAME: "c_0000",
            FIXED_IMAGE: _f(tmp_path, "imagesTr/a_0000.nii.gz"),
            FIXED_LABEL: _f(tmp_path, "labelsTr/a_0000.nii.gz"),
            FIXED_NAME: "a_0000",
        }
    ]
    # d has no label anywhere: no moving_label key
    test_pair = out["registration_test"][0]
    assert test_pair[MOVING_IMAGE] == _f(tmp_path, "imagesTs/d_0000.nii.gz")
    assert MOVING_LABEL not in test_pair
    assert test_pair[FIXED_LABEL] == _f(tmp_path, "labelsTr/b_0000.nii.gz")


def test_json_path_accepted_and_missing_splits_are_empty(tmp_path):
    content = {"training": [{"image": "./imagesTr/a_0000.nii.gz"}]}
    json_path = _dataset(tmp_path, content)
    out = learn2reg_datalist(json_path)
    # the training entry has no label key: found in labelsTr/
    assert out["training"] == [
        {IMAGE: _f(tmp_path, "imagesTr/a_0000.nii.gz"), LABEL: _f(tmp_path, "labelsTr/a_0000.nii.gz"), NAME: "a_0000"}
    ]
    assert out["registration_val"] == [] and out["registration_test"] == []


def test_masks_folder_is_accepted(tmp_path):
    img = write_nifti(tmp_path / "imagesTr" / "x_0000.nii.gz")
    mask = write_nifti(tmp_path / "masksTr" / "x_0000.nii.gz")
    (tmp_path / "m_dataset.json").write_text(json.dumps({"training": [{"image": "./imagesTr/x_0000.nii.gz"}]}))
    assert learn2reg_datalist(tmp_path)["training"] == [{IMAGE: img, LABEL: mask, NAME: "x_0000"}]


def test_missing_training_key_names_json_and_key(tmp_path):
    json_path = _dataset(tmp_path, {"name": "toy", "registration_val": []})
    with pytest.raises(DataError, match=re.escape(str(json_path)) + ".*'training'"):
        learn2reg_datalist(tmp_path)


def test_invalid_json_names_the_json(tmp_path):
    json_path = tmp_path / "toy_dataset.json"
    json_path.write_text("{not json")
    with pytest.raises(DataError, match=re.escape(str(json_path))):
        learn2reg_datalist(tmp_path)


@pytest.mark.parametrize("count", [0, 2])
def test_folder_needs_exactly_one_json(tmp_path, count):
    for i in range(count):
        (tmp_path / f"t{i}_dataset.json").write_text("{}")
    with pytest.raises(DataError, match=re.escape(str(tmp_path))):
        learn2reg_datalist(tmp_path)


def test_missing_file_names_the_path(tmp_path):
    content = {"training": [{"image": "./imagesTr/a_0000.nii.gz", "label": "./labelsTr/zz_0000.nii.gz"}]}
    _dataset(tmp_path, content)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "labelsTr" / "zz_0000.nii.gz"))):
        learn2reg_datalist(tmp_path)


def test_pair_without_fixed_key(tmp_path):
    content = {"training": [{"image": "./imagesTr/a_0000.nii.gz"}], "registration_val": [{"moving": "x"}]}
    json_path = _dataset(tmp_path, content)
    with pytest.raises(DataError, match=re.escape(str(json_path)) + r".*registration_val\[0\].*'fixed'"):
        learn2reg_datalist(tmp_path)


def test_dotdot_escape_is_rejected(tmp_path):
    root = tmp_path / "ds"
    outside = write_nifti(tmp_path / "outside.nii.gz")  # exists, but outside the dataset folder
    _dataset(root, {"training": [{"image": "../outside.nii.gz"}]})
    with pytest.raises(DataError, match=re.escape(outside) + ".*outside the dataset folder"):
        learn2reg_datalist(root)


def test_absolute_path_outside_is_rejected(tmp_path):
    root = tmp_path / "ds"
    outside = write_nifti(tmp_path / "elsewhere" / "x.nii.gz")
    _dataset(root, {"training": [{"image": outside}]})
    with pytest.raises(DataError, match=re.escape(outside)):
        learn2reg_datalist(root)


def test_absolute_path_inside_is_accepted(tmp_path):
    _dataset(tmp_path, {"training": [{"image": str(tmp_path / "imagesTr" / "a_0000.nii.gz")}]})
    assert learn2reg_datalist(tmp_path)["training"][0][IMAGE] == _f(tmp_path, "imagesTr/a_0000.nii.gz")


def test_symlink_escape_is_rejected(tmp_path):
    root = tmp_path / "ds"
    outside = write_nifti(tmp_path / "secret.nii.gz")
    _dataset(root, {"training": [{"image": "./imagesTr/link.nii.gz"}]})
    os.symlink(outside, root / "imagesTr" / "link.nii.gz")
    with pytest.raises(DataError, match=re.escape(outside)):
        learn2reg_datalist(root)
