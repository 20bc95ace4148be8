"""check_dimensionality: header-only checks of readability, volume count and 2D/3D consistency."""

from __future__ import annotations

import gzip
import re

import pytest
from helpers import write_nifti

from monai_vmorph.data import FIXED_IMAGE, IMAGE, LABEL, MOVING_IMAGE, DataError, check_dimensionality


@pytest.mark.parametrize(("shape", "ndim"), [((8, 8, 8), 3), ((8, 8, 8, 1), 3), ((8, 8, 1), 2), ((8, 8), 2)])
def test_dimensionality_of_single_volumes(tmp_path, shape, ndim):
    a = write_nifti(tmp_path / "a.nii.gz", shape)
    b = write_nifti(tmp_path / "b.nii", shape)
    assert check_dimensionality([{IMAGE: a, LABEL: b}]) == ndim
    assert check_dimensionality([a, b]) == ndim


def test_pairs_are_checked(tmp_path):
    a = write_nifti(tmp_path / "a.nii.gz")
    b = write_nifti(tmp_path / "b.nii.gz")
    assert check_dimensionality([{MOVING_IMAGE: a, FIXED_IMAGE: b, "moving_name": "a"}]) == 3


def test_mixing_2d_and_3d_names_the_paths(tmp_path):
    items = [{IMAGE: write_nifti(tmp_path / f"v{i}.nii.gz")} for i in range(3)]
    flat = write_nifti(tmp_path / "flat.nii.gz", (8, 8, 1))  # a 3D file with one slice counts as 2D
    items.append({IMAGE: flat})
    with pytest.raises(DataError, match=re.escape(flat) + ".*" + re.escape(items[0][IMAGE])):
        check_dimensionality(items)


def test_corrupt_gzip_names_the_path(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match=re.escape(str(bad))):
        check_dimensionality([str(bad)])


def test_truncated_header_names_the_path(tmp_path):
    bad = tmp_path / "trunc.nii.gz"
    bad.write_bytes(gzip.compress(b"\x00" * 40))  # valid gzip, too short for a NIfTI header
    with pytest.raises(DataError, match=re.escape(str(bad))):
        check_dimensionality([{IMAGE: str(bad)}])


def test_not_an_image_names_the_path(tmp_path):
    txt = tmp_path / "scan.png"
    txt.write_text("hello")
    with pytest.raises(DataError, match=re.escape(str(txt))):
        check_dimensionality([str(txt)])


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope.nii.gz"))):
        check_dimensionality([str(tmp_path / "nope.nii.gz")])


def test_4d_with_several_volumes_names_the_path(tmp_path):
    ok = write_nifti(tmp_path / "ok.nii.gz")
    four = write_nifti(tmp_path / "four.nii.gz", (8, 8, 8, 2))
    with pytest.raises(DataError, match=re.escape(four) + ".*2 volumes"):
        check_dimensionality([ok, four])


def test_label_shape_mismatch_names_both(tmp_path):
    img = write_nifti(tmp_path / "img.nii.gz")
    lab = write_nifti(tmp_path / "lab.nii.gz", (8, 8, 6))
    with pytest.raises(DataError, match=re.escape(lab) + ".*" + re.escape(img)):
        check_dimensionality([{IMAGE: img, LABEL: lab}])


def test_empty_items():
    with pytest.raises(ValueError, match="at least one image"):
        check_dimensionality([])
