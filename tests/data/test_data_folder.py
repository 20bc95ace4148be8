"""folder_datalist: images in a folder, labels matched by file name."""

from __future__ import annotations

import re

import pytest
from helpers import write_nifti

from monai_vmorph.data import IMAGE, LABEL, NAME, DataError, folder_datalist


def test_images_only(tmp_path):
    b = write_nifti(tmp_path / "img" / "b.nii.gz")
    a = write_nifti(tmp_path / "img" / "a.nii")
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    (tmp_path / "img" / "._a.nii.gz").write_bytes(b"macos resource fork")
    assert folder_datalist(tmp_path / "img") == [{IMAGE: a, NAME: "a"}, {IMAGE: b, NAME: "b"}]


def test_labels_same_name_learn2reg_style(tmp_path):
    img = write_nifti(tmp_path / "imagesTr" / "x_0000.nii.gz")
    lab = write_nifti(tmp_path / "labelsTr" / "x_0000.nii.gz")
    out = folder_datalist(tmp_path / "imagesTr", tmp_path / "labelsTr", require_labels=True)
    assert out == [{IMAGE: img, LABEL: lab, NAME: "x_0000"}]


def test_labels_without_channel_suffix_nnunet_style(tmp_path):
    img = write_nifti(tmp_path / "imagesTr" / "x_0000.nii.gz")
    lab = write_nifti(tmp_path / "labelsTr" / "x.nii.gz")
    assert folder_datalist(tmp_path / "imagesTr", tmp_path / "labelsTr") == [{IMAGE: img, LABEL: lab, NAME: "x_0000"}]


def test_optional_label_missing_is_skipped(tmp_path):
    a = write_nifti(tmp_path / "img" / "a.nii.gz")
    b = write_nifti(tmp_path / "img" / "b.nii.gz")
    la = write_nifti(tmp_path / "lab" / "a.nii.gz")
    out = folder_datalist(tmp_path / "img", tmp_path / "lab")
    assert out == [{IMAGE: a, LABEL: la, NAME: "a"}, {IMAGE: b, NAME: "b"}]


def test_pattern_selects_files(tmp_path):
    write_nifti(tmp_path / "img" / "a_0000.nii.gz")
    b = write_nifti(tmp_path / "img" / "b_0001.nii.gz")
    assert [s[IMAGE] for s in folder_datalist(tmp_path / "img", pattern="*_0001.nii.gz")] == [b]


def test_required_label_missing_names_the_image(tmp_path):
    write_nifti(tmp_path / "img" / "a.nii.gz")
    b = write_nifti(tmp_path / "img" / "b.nii.gz")
    write_nifti(tmp_path / "lab" / "a.nii.gz")
    with pytest.raises(DataError, match=re.escape(b)):
        folder_datalist(tmp_path / "img", tmp_path / "lab", require_labels=True)


def test_require_labels_without_labels_dir(tmp_path):
    write_nifti(tmp_path / "img" / "a.nii.gz")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "img"))):
        folder_datalist(tmp_path / "img", require_labels=True)


def test_empty_folder_names_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "empty"))):
        folder_datalist(tmp_path / "empty")


@pytest.mark.parametrize("which", ["images", "labels"])
def test_missing_folder_names_the_folder(tmp_path, which):
    write_nifti(tmp_path / "img" / "a.nii.gz")
    images, labels = tmp_path / "img", tmp_path / "lab"
    if which == "images":
        images = tmp_path / "nope"
    with pytest.raises(DataError, match=re.escape(str(images if which == "images" else labels))):
        folder_datalist(images, labels)


def test_error_is_one_line_value_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as info:
        folder_datalist(tmp_path / "empty")
    assert "\n" not in str(info.value)
