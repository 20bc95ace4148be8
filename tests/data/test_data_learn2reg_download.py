"""learn2reg_datalist on a dataset laid out as Learn2Reg's downloads are (OASIS: OASIS_dataset.json, imagesTr/...)."""

from __future__ import annotations

import json

import pytest
from helpers import write_nifti

from monai_vmorph.data import FIXED_LABEL, MOVING_LABEL, MOVING_NAME, DataError, learn2reg_datalist

CASES = ("0001", "0002", "0395", "0396", "0397")


def _oasis(root):
    """The keys and path style of Learn2Reg's OASIS_dataset.json; its registration_test names imagesTs/ files that
    a validation-phase download does not hold; a macOS archive's AppleDouble file sits next to the JSON."""
    for case in CASES:
        for folder in ("imagesTr", "labelsTr", "masksTr"):
            write_nifti(root / folder / f"OASIS_{case}_0000.nii.gz")
    content = {
        "name": "OASIS",
        "release": "1.1",
        "description": "T1-weighted brain MRI",
        "licence": "see the dataset's page",
        "reference": "Marcus et al. 2007",
        "pairings": "unpaired",
        "provided_data": {"0": ["image", "label", "mask"]},
        "registration_direction": {"fixed": 0, "moving": 0},
        "modality": {"0": "MR"},
        "labels": {"0": {"0": "background", "1": "Left-Cerebral-White-Matter"}},
        "tensorImageSize": {"0": "3D"},
        "tensorImageShape": {"0": [160, 224, 192]},
        "numTraining": len(CASES),
        "training": [
            {
                "image": f"./imagesTr/OASIS_{c}_0000.nii.gz",
                "label": f"./labelsTr/OASIS_{c}_0000.nii.gz",
                "mask": f"./masksTr/OASIS_{c}_0000.nii.gz",
            }
            for c in CASES
        ],
        "numTest": 0,
        "test": [],
        "numPairedTraining": 0,
        "training_paired_images": [],
        "numRegistration_val": 2,
        "registration_val": [
            {"fixed": "./imagesTr/OASIS_0395_0000.nii.gz", "moving": "./imagesTr/OASIS_0396_0000.nii.gz"},
            {"fixed": "./imagesTr/OASIS_0396_0000.nii.gz", "moving": "./imagesTr/OASIS_0397_0000.nii.gz"},
        ],
        "numRegistration_test": 1,
        "registration_test": [
            {"fixed": "./imagesTs/OASIS_0438_0000.nii.gz", "moving": "./imagesTs/OASIS_0439_0000.nii.gz"}
        ],
    }
    (root / "OASIS_dataset.json").write_text(json.dumps(content, indent=4))
    (root / "._OASIS_dataset.json").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    return root


def test_the_validation_split_of_a_validation_phase_download(tmp_path):
    root = _oasis(tmp_path / "OASIS")
    out = learn2reg_datalist(root, splits=("registration_val",))
    assert set(out) == {"training", "registration_val"}
    assert len(out["training"]) == len(CASES)
    assert [p[MOVING_NAME] for p in out["registration_val"]] == ["OASIS_0396_0000", "OASIS_0397_0000"]
    first = out["registration_val"][0]
    assert first[FIXED_LABEL] == str(root / "labelsTr" / "OASIS_0395_0000.nii.gz")  # the label, not the mask
    assert first[MOVING_LABEL] == str(root / "labelsTr" / "OASIS_0396_0000.nii.gz")
    assert learn2reg_datalist(root, splits="registration_val") == out


def test_the_test_split_is_checked_only_when_asked_for(tmp_path):
    root = _oasis(tmp_path / "OASIS")
    missing = r"imagesTs/OASIS_0439_0000\.nii\.gz .*registration_test\[0\]\.moving\) does not exist"
    with pytest.raises(DataError, match=missing):
        learn2reg_datalist(root)
    with pytest.raises(DataError, match=r"'training_paired_images' is not a pair list"):
        learn2reg_datalist(root, splits=("training_paired_images",))
