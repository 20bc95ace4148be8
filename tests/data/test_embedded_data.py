"""Checks of the embedded brain-MRI dataset in ``data/`` (built by ``data/build.py``)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "data"
FOLDERS = {"brain_3d": (96, 112, 96), "brain_2d": (96, 112)}
SLOPE_TOL = 1e-6  # float32 scl_slope = 1/255 gives 255 * slope = 1 + 6e-8

# identity-baseline mean Dice (labels 1-3) between the 3D volumes, as printed in data/README.md
BASELINE_MEAN_DICE = {
    ("icbm09a", "icbm09c"): 0.7541,
    ("icbm09a", "colin27"): 0.5401,
    ("icbm09a", "itk_subject"): 0.5359,
    ("icbm09c", "colin27"): 0.5207,
    ("icbm09c", "itk_subject"): 0.5241,
    ("colin27", "itk_subject"): 0.4632,
}


def _load_json(folder: str) -> dict:
    return json.loads((DATA / folder / f"{folder}_dataset.json").read_text())


def _paths(folder: str) -> list[str]:
    js = _load_json(folder)
    out = [p for item in js["training"] for p in (item["image"], item["label"])]
    out += [
        item[k] for key in ("registration_val", "registration_test") for item in js[key] for k in ("fixed", "moving")
    ]
    return out


def _expected_affine(z: float | None) -> np.ndarray:
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = (-96.0, -132.0, -78.0 if z is None else z)
    return aff


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_json_structure_and_paths(folder):
    js = _load_json(folder)
    assert js["labels"] == {"0": "background", "1": "CSF", "2": "GM", "3": "WM"}
    assert js["tensorImageSize"] == {"0": "3D" if folder == "brain_3d" else "2D"}
    assert js["numTraining"] == len(js["training"]) > 0
    assert len(js["registration_val"]) >= 3
    root = (DATA / folder).resolve()
    training_images = {item["image"] for item in js["training"]}
    for rel in _paths(folder):
        assert rel.startswith("./")
        path = (root / rel).resolve()
        assert path.is_relative_to(root), rel
        assert path.is_file(), rel
    for pair in js["registration_val"]:
        assert pair["fixed"] in training_images and pair["moving"] in training_images
        assert pair["fixed"] != pair["moving"]


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_images_and_labels(folder):
    shape = FOLDERS[folder]
    for item in _load_json(folder)["training"]:
        img = nib.load(DATA / folder / item["image"])
        lab = nib.load(DATA / folder / item["label"])
        assert img.shape == lab.shape == shape, item["image"]
        z = None if len(shape) == 3 else float(img.affine[2, 3])
        np.testing.assert_allclose(img.affine, _expected_affine(z), atol=1e-5)
        np.testing.assert_array_equal(img.affine, lab.affine)
        for im in (img, lab):
            np.testing.assert_allclose(im.get_qform(), im.get_sform(), atol=1e-5)
            assert int(im.header["qform_code"]) == int(im.header["sform_code"]) == 4
        assert img.get_data_dtype() == np.uint8 and lab.get_data_dtype() == np.uint8
        assert img.dataobj.slope == pytest.approx(1 / 255, rel=1e-6)
        x = img.get_fdata()
        assert x.min() >= 0.0 and x.max() <= 1.0 + SLOPE_TOL
        y = np.asarray(lab.dataobj)
        assert set(np.unique(y)) == {0, 1, 2, 3}, item["label"]
        assert np.all(y[x > 0] > 0), "labels must cover every non-zero image voxel"
        assert np.all(x[y == 0] == 0), "background must be 0"


def test_2d_slices_match_3d_volumes():
    for name, z in itertools.product(("icbm09a", "colin27"), (0, 10, 20)):
        k = (z + 78) // 2
        for sub in ("imagesTr", "labelsTr"):
            vol = np.asarray(nib.load(DATA / "brain_3d" / sub / f"{name}_0000.nii.gz").dataobj)
            sl = np.asarray(nib.load(DATA / "brain_2d" / sub / f"{name}_z{z:+d}_0000.nii.gz").dataobj)
            np.testing.assert_array_equal(sl, vol[:, :, k])


def _dice(a: np.ndarray, b: np.ndarray, k: int) -> float:
    x, y = a == k, b == k
    return 2.0 * np.logical_and(x, y).sum() / (x.sum() + y.sum())


def test_identity_baseline_dice_reproduced():
    labels = {
        n: np.asarray(nib.load(DATA / "brain_3d" / "labelsTr" / f"{n}_0000.nii.gz").dataobj)
        for n in ("icbm09a", "icbm09c", "colin27", "itk_subject")
    }
    readme = (DATA / "README.md").read_text()
    for (a, b), expected in BASELINE_MEAN_DICE.items():
        mean = np.mean([_dice(labels[a], labels[b], k) for k in (1, 2, 3)])
        assert mean == pytest.approx(expected, abs=1e-3), (a, b)
        assert f"| {a} | {b} |" in readme and f"| {expected:.4f} |" in readme
