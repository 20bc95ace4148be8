"""neurite_oasis_datalist (3D and 2D variants) and csv_pairs (relative and absolute paths)."""

from __future__ import annotations

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
    csv_pairs,
    neurite_oasis_datalist,
)

SUBJECTS = ("OASIS_OAS1_0002_MR1", "OASIS_OAS1_0001_MR1")


def _oasis(root):
    for s in SUBJECTS:
        for f in ("aligned_norm", "aligned_seg4", "aligned_seg35"):
            write_nifti(root / s / f"{f}.nii.gz")
        for f in ("slice_norm", "slice_seg4", "slice_seg24"):
            write_nifti(root / s / f"{f}.nii.gz", shape=(8, 8, 1))
    (root / "subjects.txt").write_text("\n".join(SUBJECTS))
    (root / "not_a_subject").mkdir()  # folders without the image are skipped


@pytest.mark.parametrize(
    ("variant", "seg", "image", "label"),
    [
        ("3d", "auto", "aligned_norm", "aligned_seg35"),
        ("3d", "seg4", "aligned_norm", "aligned_seg4"),
        ("2d", "auto", "slice_norm", "slice_seg24"),
        ("2d", "seg4", "slice_norm", "slice_seg4"),
    ],
)
def test_neurite_oasis_variants(tmp_path, variant, seg, image, label):
    _oasis(tmp_path)
    out = neurite_oasis_datalist(tmp_path, seg=seg, variant=variant)
    expected = [
        {IMAGE: str(tmp_path / s / f"{image}.nii.gz"), LABEL: str(tmp_path / s / f"{label}.nii.gz"), NAME: s}
        for s in sorted(SUBJECTS)
    ]
    assert out == expected


def test_neurite_oasis_without_labels(tmp_path):
    _oasis(tmp_path)
    out = neurite_oasis_datalist(tmp_path, seg=None)
    assert [set(s) for s in out] == [{IMAGE, NAME}] * 2


def test_neurite_oasis_missing_seg_names_the_file(tmp_path):
    _oasis(tmp_path)
    missing = tmp_path / SUBJECTS[0] / "aligned_seg35.nii.gz"
    missing.unlink()
    with pytest.raises(DataError, match=re.escape(str(missing))):
        neurite_oasis_datalist(tmp_path)


def test_neurite_oasis_empty_root_and_bad_arguments(tmp_path):
    (tmp_path / "OASIS_OAS1_0001_MR1").mkdir()
    with pytest.raises(DataError, match=re.escape(str(tmp_path))):
        neurite_oasis_datalist(tmp_path)
    with pytest.raises(ValueError, match="variant"):
        neurite_oasis_datalist(tmp_path, variant="4d")
    with pytest.raises(ValueError, match="seg35"):
        neurite_oasis_datalist(tmp_path, seg="seg35", variant="2d")


def test_csv_relative_and_absolute_paths(tmp_path):
    a = write_nifti(tmp_path / "data" / "a.nii.gz")
    b = write_nifti(tmp_path / "data" / "b.nii.gz")
    la = write_nifti(tmp_path / "data" / "a_seg.nii.gz")
    lb = write_nifti(tmp_path / "data" / "b_seg.nii.gz")
    csv_path = tmp_path / "lists" / "pairs.csv"
    csv_path.parent.mkdir()
    header = "moving, fixed, moving_label, fixed_label\n"  # spaces after the commas are tolerated
    csv_path.write_text(header + f"../data/a.nii.gz, {b}, ../data/a_seg.nii.gz, {lb}\n")
    assert csv_pairs(csv_path) == [
        {
            MOVING_IMAGE: a,
            FIXED_IMAGE: b,
            MOVING_LABEL: la,
            FIXED_LABEL: lb,
            MOVING_NAME: "a",
            FIXED_NAME: "b",
        }
    ]


def test_csv_without_label_columns(tmp_path):
    a = write_nifti(tmp_path / "a.nii.gz")
    b = write_nifti(tmp_path / "b.nii.gz")
    (tmp_path / "p.csv").write_text("fixed,moving\na.nii.gz,b.nii.gz\nb.nii.gz,a.nii.gz\n")
    out = csv_pairs(tmp_path / "p.csv")
    assert [(p[MOVING_IMAGE], p[FIXED_IMAGE]) for p in out] == [(b, a), (a, b)]
    assert all(MOVING_LABEL not in p for p in out)


def test_csv_missing_column_names_csv_and_column(tmp_path):
    write_nifti(tmp_path / "a.nii.gz")
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("moving,target\na.nii.gz,a.nii.gz\n")
    with pytest.raises(DataError, match=re.escape(str(csv_path)) + ".*'fixed'"):
        csv_pairs(csv_path)


def test_csv_missing_file_names_the_path(tmp_path):
    write_nifti(tmp_path / "a.nii.gz")
    (tmp_path / "p.csv").write_text("moving,fixed\na.nii.gz,nope.nii.gz\n")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope.nii.gz"))):
        csv_pairs(tmp_path / "p.csv")
