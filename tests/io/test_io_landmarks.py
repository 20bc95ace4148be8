"""Landmark files to world points, against SimpleITK's index -> physical point (LPS) on an oblique, flipped grid, and
the field at points against SimpleITK's DisplacementFieldTransform.TransformPoint."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from io_helpers import nifti_to_sitk, oblique_affine

from monai_vmorph.errors import UserError
from monai_vmorph.io import displacement_at_points, landmark_format, read_landmarks, voxel_landmarks
from monai_vmorph.metrics import landmark_distances, tre_summary

SHAPE = (20, 24, 18)
LPS = np.array([-1.0, -1.0, 1.0])


@pytest.fixture
def grid(tmp_path):
    affine = oblique_affine(SHAPE, (1.2, 0.9, 2.0), (10.0, -20.0, 5.0), (0.3, -0.2, 0.1), flip_axis=1)
    image = nifti_to_sitk(np.zeros(SHAPE, np.float32), affine, tmp_path / "grid.nii.gz")
    index = np.array([[0.0, 0.0, 0.0], [3.5, 7.25, 2.0], [19.0, 23.0, 17.0], [10.2, 1.1, 9.9]])
    lps = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(map(float, i))) for i in index])
    return affine, index, lps


def test_keypoint_csv_fcsv_and_markups_json_give_the_same_ras_points(grid, tmp_path):
    affine, index, lps = grid
    expected = lps * LPS
    (tmp_path / "k.csv").write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in index) + "\n")
    header = "# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n"
    header += "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
    rows = [f"vtkMRMLMarkupsFiducialNode_{n},{x},{y},{z},0,0,0,1,1,1,0,F-{n},," for n, (x, y, z) in enumerate(lps)]
    (tmp_path / "lps.fcsv").write_text(header + "\n".join(rows) + "\n")
    ras_rows = [f"{n},{x},{y},{z},0,0,0,1,1,1,0,F-{n},," for n, (x, y, z) in enumerate(expected)]
    (tmp_path / "old.fcsv").write_text("# Markups fiducial file version = 4.6\n" + "\n".join(ras_rows) + "\n")
    points = [{"id": str(n), "position": p.tolist()} for n, p in enumerate(lps)]
    markups = {"markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "controlPoints": points}]}
    (tmp_path / "p.mrk.json").write_text(json.dumps(markups))
    ras = [{"position": p.tolist()} for p in expected]
    (tmp_path / "ras.mrk.json").write_text(json.dumps({"markups": [{"coordinateSystem": "RAS", "controlPoints": ras}]}))
    for name in ("k.csv", "lps.fcsv", "old.fcsv", "p.mrk.json", "ras.mrk.json"):
        np.testing.assert_allclose(read_landmarks(tmp_path / name, affine, "landmarks"), expected, atol=1e-5)
    np.testing.assert_allclose(voxel_landmarks(expected, affine), index, atol=1e-5)
    assert [landmark_format(n) for n in ("a.csv", "a.fcsv", "a.mrk.json", "a.txt")] == [
        "csv",
        "fcsv",
        "mrk.json",
        "csv",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("i,j,k\n1,2,3\n", "line 1 is not 3 numbers"),
        ("1,2\n", "has 2 values"),
        ("", "holds no point"),
        ("1,2,nan\n", "NaN/inf"),
    ],
)
def test_bad_keypoint_files_are_one_line_errors(text, message, tmp_path):
    path = tmp_path / "k.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_landmarks(path, np.eye(4), "--fixed-landmarks")
    with pytest.raises(UserError, match="does not exist"):
        read_landmarks(tmp_path / "missing.csv", np.eye(4), "--fixed-landmarks")
    (tmp_path / "bad.mrk.json").write_text('{"markups": 3}')
    with pytest.raises(UserError, match="not a Slicer markups JSON"):
        read_landmarks(tmp_path / "bad.mrk.json", np.eye(4), "--fixed-landmarks")


def test_2d_keypoints_are_placed_in_the_image_plane():
    affine = np.array([[0.0, -2.0, 30.0], [1.5, 0.0, -4.0], [0.0, 0.0, 1.0]])
    points = np.array([[1.0, 2.0], [4.5, 0.0]])
    np.testing.assert_allclose(voxel_landmarks(points @ affine[:2, :2].T + affine[:2, 2], affine), points)


def test_field_at_points_matches_simpleitk_transform_point(grid, tmp_path):
    affine, _, _ = grid
    rng = np.random.default_rng(0)
    field = rng.normal(0, 2.0, (*SHAPE, 3))  # RAS mm
    image = nifti_to_sitk(np.zeros(SHAPE, np.float32), affine, tmp_path / "field_grid.nii.gz")
    lps_field = sitk.GetImageFromArray(np.ascontiguousarray((field * LPS).transpose(2, 1, 0, 3)), isVector=True)
    lps_field.CopyInformation(image)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(lps_field, sitk.sitkVectorFloat64))
    index = rng.uniform(-2, np.array(SHAPE) + 1, (200, 3))  # some outside the grid: zero displacement there
    ras = (np.c_[index, np.ones(len(index))] @ affine.T)[:, :3]
    expected = np.array([transform.TransformPoint(tuple(p * LPS)) for p in ras]) * LPS - ras
    # 1e-4: the grid reaches ITK through a NIfTI header, whose geometry is float32
    np.testing.assert_allclose(displacement_at_points(field, affine, ras), expected, atol=1e-4)
    assert np.sum(np.all(expected == 0, axis=1)) > 10


def test_tre_summary_by_hand():
    distances = landmark_distances(np.array([[0, 0, 0], [3, 4, 0], [0, 0, 1], [1, 0, 0]]), np.zeros((4, 3)))
    np.testing.assert_allclose(distances, [0, 5, 1, 1])
    summary = tre_summary(distances)
    assert summary["mean"] == pytest.approx(7 / 4) and summary["median"] == pytest.approx(1.0)
    assert summary["max"] == 5 and summary["std"] == pytest.approx(np.sqrt((1.75**2 + 3.25**2 + 2 * 0.75**2) / 4))
    assert summary["p90"] == pytest.approx(1 + 0.7 * 4)  # linear between the 3rd (1) and 4th (5) of 4 sorted values
    with pytest.raises(ValueError, match="one shape"):
        landmark_distances(np.zeros((2, 3)), np.zeros((3, 3)))
