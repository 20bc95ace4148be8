"""TRE in ``register`` and ``evaluate``: a brain and the same brain moved by a known rigid transform (its header
changed, no resampling), so corresponding landmarks are known exactly in every format."""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from io_helpers import rotation

ROOT = Path(__file__).resolve().parents[2]
BRAIN_3D = ROOT / "data" / "brain_3d"


def _moved_brain(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """(fixed, moving, fixed voxel landmarks, moving world landmarks RAS): the moving scan is the fixed one placed by
    ``B @ affine`` with ``B`` 9 degrees and 7 mm, so voxel ``i`` of both is the same anatomy."""
    source = nib.load(BRAIN_3D / "imagesTr" / "icbm09a_0000.nii.gz")
    moved = np.eye(4)
    moved[:3, :3] = rotation(3, (np.radians(9), np.radians(-4), 0.0))
    moved[:3, 3] = (7.0, -3.0, 4.0)
    moving = nib.Nifti1Image(np.asarray(source.dataobj), moved @ source.affine)
    nib.save(moving, tmp_path / "moving.nii.gz")
    labels = np.asarray(nib.load(BRAIN_3D / "labelsTr" / "icbm09a_0000.nii.gz").dataobj)
    rng = np.random.default_rng(3)
    inside = np.argwhere(labels > 0)
    index = inside[rng.choice(len(inside), 40, replace=False)] + rng.uniform(-0.4, 0.4, (40, 3))
    world = (np.c_[index, np.ones(40)] @ (moved @ source.affine).T)[:, :3]
    return BRAIN_3D / "imagesTr" / "icbm09a_0000.nii.gz", tmp_path / "moving.nii.gz", index, world


@pytest.mark.slow
def test_register_and_evaluate_report_tre_before_affine_and_after(cli, tmp_path):
    fixed, moving, index, world = _moved_brain(tmp_path)
    fixed_points = tmp_path / "fixed_keypoints.csv"  # Learn2Reg: voxel indices, no header
    fixed_points.write_text("\n".join(",".join(f"{v:.4f}" for v in row) for row in index) + "\n")
    moving_points = tmp_path / "moving.fcsv"  # 3D Slicer, LPS
    rows = [f"p{n},{-x},{-y},{z},0,0,0,1,1,1,0,p{n},," for n, (x, y, z) in enumerate(world)]
    moving_points.write_text("# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n" + "\n".join(rows))
    out = tmp_path / "out"
    code, stdout, err = cli("register", "--fixed", fixed, "--moving", moving, "--fixed-landmarks", fixed_points,
                            "--moving-landmarks", moving_points, "--out-dir", out, "--fast")  # fmt: skip
    assert code == 0, err
    tre = json.loads((out / "metrics.json").read_text())["tre_mm"]
    assert set(tre) == {"before", "affine", "after"}
    assert set(tre["after"]) == {"mean", "std", "median", "p90", "max"}
    moved_by = np.linalg.norm(world - (np.c_[index, np.ones(40)] @ nib.load(fixed).affine.T)[:, :3], axis=1)
    assert tre["before"]["mean"] == pytest.approx(moved_by.mean(), abs=1e-3)  # independent: the points themselves
    assert tre["before"]["mean"] > 8
    assert tre["affine"]["mean"] < 1.0 and tre["after"]["mean"] < 1.5, tre  # the rigid motion is recovered
    assert "tre_mm" in stdout

    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["moving", "fixed", "fixed_landmarks", "moving_landmarks"])
        writer.writerow([moving, fixed, fixed_points, moving_points])
    code, _, err = cli("evaluate", "--pairs", pairs, "--out-dir", tmp_path / "eval", "--fast", "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["tre_mm_before"]["mean"] == pytest.approx(tre["before"]["mean"], abs=1e-6)
    assert summary["tre_mm_after"]["mean"] == pytest.approx(tre["after"]["mean"], abs=1e-3)
    with (tmp_path / "eval" / "metrics.csv").open() as f:
        row = next(csv.DictReader(f))
    assert float(row["tre_mm_affine"]) == pytest.approx(tre["affine"]["mean"], abs=1e-3)


def test_landmark_options_go_together_and_counts_must_match(cli, tmp_path):
    fixed, moving, index, _ = _moved_brain(tmp_path)
    points = tmp_path / "k.csv"
    points.write_text("\n".join(",".join(map(str, row)) for row in index) + "\n")
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("\n".join(",".join(map(str, row)) for row in index[:5]) + "\n")
    base = ["register", "--fixed", fixed, "--moving", moving, "--out-dir", tmp_path / "out"]
    code, _, err = cli(*base, "--fixed-landmarks", points)
    assert code == 2 and "go together" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(*base, "--fixed-landmarks", points, "--moving-landmarks", fewer)
    assert code == 2 and "has 40 points but" in err and "has 5" in err
    code, _, err = cli(*base, "--fixed-landmarks", points, "--moving-landmarks", tmp_path / "nope.fcsv")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_evaluate_checks_every_pairs_landmark_files_before_registering(cli, no_registration, tmp_path):
    fixed, moving, index, _ = _moved_brain(tmp_path)
    good, fewer = tmp_path / "k.csv", tmp_path / "fewer.csv"
    good.write_text("\n".join(",".join(map(str, row)) for row in index) + "\n")
    fewer.write_text("\n".join(",".join(map(str, row)) for row in index[:3]) + "\n")
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["moving", "fixed", "fixed_landmarks", "moving_landmarks"])
        writer.writerow([moving, fixed, good, good])
        writer.writerow([moving, fixed, good, fewer])
    code, _, err = cli("evaluate", "--pairs", pairs, "--out-dir", tmp_path / "eval", "--quiet")
    assert code == 2 and "has 40 points but" in err and str(fewer) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "eval").exists()
