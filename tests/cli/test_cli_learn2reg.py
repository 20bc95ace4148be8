"""``monai-vmorph learn2reg``: Learn2Reg's file names, field convention and metrics on hand-built cases."""

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from monai_vmorph.cli.errors import CLIError
from monai_vmorph.cli.learn2reg import learn2reg_displacement, learn2reg_field_name

# fixed: 2 mm isotropic at the origin; moving: axis 0 flipped, spacing (1, 1.5, 2) mm, voxel 0 at (30, -6, 1)
FIXED_AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
MOVING_AFFINE = np.array([[-1.0, 0, 0, 30], [0, 1.5, 0, -6], [0, 0, 2, 1], [0, 0, 0, 1]])
FIXED_SHAPE, MOVING_SHAPE = (10, 9, 8), (40, 16, 10)
TRANSLATION = np.array([2.0, -3.0, 1.0])  # RAS mm


def _hand_field(shape):
    """Fixed voxel (i, j, k) is at (2i, 2j, 2k) mm, moved by TRANSLATION to (2i + 2, 2j - 3, 2k + 1), which is
    moving index (30 - (2i + 2), (2j - 3 + 6) / 1.5, (2k + 1 - 1) / 2) = (28 - 2i, 4j/3 + 2, k): inside the moving
    grid, and never half-way between two voxels."""
    i, j, k = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    return np.stack([28 - 3 * i, j / 3 + 2, np.zeros_like(k)], axis=-1)


def test_voxel_field_of_a_translation_between_two_grids_by_hand():
    physical = np.broadcast_to(TRANSLATION, (*FIXED_SHAPE, 3))
    field = learn2reg_displacement(physical, FIXED_AFFINE, MOVING_AFFINE)
    assert field.shape == (*FIXED_SHAPE, 3)
    np.testing.assert_allclose(field, _hand_field(FIXED_SHAPE), atol=1e-12)


def test_field_names_follow_learn2reg():
    assert learn2reg_field_name("d/imagesTr/OASIS_0395_0000.nii.gz", "OASIS_0396_0000.nii.gz") == (
        "disp_0395_0000_0396_0000"
    )
    # the short name only for fixed modality 0000 and moving 0001 (AbdomenMRCT), never the other way round
    assert learn2reg_field_name("AbdomenMRCT_0006_0000.nii.gz", "AbdomenMRCT_0006_0001.nii.gz", short=True) == (
        "disp_0006_0006"
    )
    assert learn2reg_field_name("ThoraxCBCT_0011_0001.nii.gz", "ThoraxCBCT_0011_0000.nii.gz", short=True) == (
        "disp_0011_0001_0011_0000"
    )
    assert learn2reg_field_name("OASIS_0395_0000.nii.gz", "OASIS_0396_0000.nii.gz", short=True) == (
        "disp_0395_0000_0396_0000"
    )
    with pytest.raises(CLIError, match=r"colin27_0000\.nii\.gz is not named as Learn2Reg's images"):
        learn2reg_field_name("colin27_0000.nii.gz", "OASIS_0396_0000.nii.gz")


def _labels(shape, seed):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, [-(-n // 3) for n in shape])  # 3-voxel blocks
    return np.kron(coarse, np.ones((3, 3, 3), int))[tuple(slice(0, n) for n in shape)].astype(np.int16)


def _dataset(root, fixed_name="TOY_0001_0000", moving_name="TOY_0002_0000"):
    """A Learn2Reg dataset as downloaded: TOY_dataset.json, imagesTr/, labelsTr/, a test split not downloaded."""
    rng = np.random.default_rng(0)
    for name, shape, affine, seed in (
        (fixed_name, FIXED_SHAPE, FIXED_AFFINE, 1),
        (moving_name, MOVING_SHAPE, MOVING_AFFINE, 2),
    ):
        for folder, array in (("imagesTr", rng.random(shape).astype(np.float32)), ("labelsTr", _labels(shape, seed))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, affine), root / folder / f"{name}.nii.gz")
    content = {
        "name": "TOY",
        "tensorImageShape": {"0": list(FIXED_SHAPE)},
        "training": [
            {"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz", "mask": f"./masksTr/{n}.nii.gz"}
            for n in (fixed_name, moving_name)
        ],
        "registration_val": [
            {"fixed": f"./imagesTr/{fixed_name}.nii.gz", "moving": f"./imagesTr/{moving_name}.nii.gz"}
        ],
        "registration_test": [
            {"fixed": "./imagesTs/TOY_0003_0000.nii.gz", "moving": "./imagesTs/TOY_0004_0000.nii.gz"}
        ],
    }
    (root / "TOY_dataset.json").write_text(json.dumps(content))
    return root


@pytest.fixture
def translation_pipeline(monkeypatch):
    """The command with a registration that returns the known translation (and no model to load)."""

    def register(
        fixed, moving, bundle, refine, refine_lr, moving_labels=None, fixed_labels=None, progress=None, **options
    ):
        displacement = np.broadcast_to(TRANSLATION, (*fixed.array.shape, 3)).astype(np.float32)
        return SimpleNamespace(displacement=displacement, metrics={"folding_percent": 0.0, "sdlogj": 0.0})

    monkeypatch.setattr("monai_vmorph.cli.register.register_pair", register)
    monkeypatch.setattr("monai_vmorph.cli.learn2reg.load_bundle_model", lambda *a: SimpleNamespace(weights=Path("w")))


def _learn2reg_dice(fixed, warped):
    return [2 * np.sum((fixed == k) & (warped == k)) / (np.sum(fixed == k) + np.sum(warped == k)) for k in (1, 2, 3)]


@pytest.mark.parametrize("fmt", ["npz", "nii.gz"])
def test_a_known_translation_gives_learn2reg_field_and_its_dice(cli, tmp_path, translation_pipeline, fmt):
    root = _dataset(tmp_path / "TOY")
    out = tmp_path / "submission"
    code, stdout, stderr = cli("learn2reg", "--dataset", root, "--out-dir", out, "--format", fmt, "--quiet")
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [".pairs", f"disp_0001_0000_0002_0000.{fmt}", "metrics.json"]
    # read as Learn2Reg's evaluation does
    if fmt == "npz":
        stored = np.load(out / "disp_0001_0000_0002_0000.npz")
        assert len(stored.files) == 1 and stored[stored.files[0]].dtype == np.float16
        field = stored[stored.files[0]].astype(np.float32)
    else:
        image = nib.load(out / "disp_0001_0000_0002_0000.nii.gz")
        assert image.get_data_dtype() == np.float32
        field = image.get_fdata()
    expected = _hand_field(FIXED_SHAPE)
    assert field.shape == (*FIXED_SHAPE, 3)
    np.testing.assert_allclose(field, expected, atol=2e-3 if fmt == "npz" else 1e-5)
    # Learn2Reg's Dice: moving labels pulled back by nearest neighbour at x + disp, here from the hand-derived field
    fixed_labels = _labels(FIXED_SHAPE, 1)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in FIXED_SHAPE), indexing="ij"))
    warped = map_coordinates(_labels(MOVING_SHAPE, 2), grid + expected.transpose(3, 0, 1, 2), order=0)
    assert np.count_nonzero(warped) > 0.5 * warped.size  # inside the moving grid: labels, not the zero outside
    dice = _learn2reg_dice(fixed_labels, warped)
    metrics = json.loads((out / "metrics.json").read_text())
    (pair,) = metrics["pairs"]
    assert (pair["fixed"], pair["moving"], pair["field"]) == (
        "TOY_0001_0000.nii.gz",
        "TOY_0002_0000.nii.gz",
        f"disp_0001_0000_0002_0000.{fmt}",
    )
    per_label = pair["learn2reg"]["DSC_per_label"]
    np.testing.assert_allclose([per_label[k] for k in ("1", "2", "3")], dice, rtol=1e-12)
    assert pair["learn2reg"]["DSC"] == pytest.approx(np.mean(dice))
    # an affine map of indices: one det J everywhere, so no spread beyond float16 rounding
    assert pair["learn2reg"]["LogJacDetStd"] < (1e-2 if fmt == "npz" else 1e-5)
    assert metrics["learn2reg_aggregates"]["DSC"]["mean"] == pytest.approx(np.mean(dice))
    assert f"learn2reg DSC: {np.mean(dice):.4f}" in stdout  # the summary, also under --quiet


def test_learn2reg_refuses_names_it_cannot_match(cli, tmp_path, translation_pipeline):
    root = _dataset(tmp_path / "TOY", fixed_name="colin27_0000")
    code, _, stderr = cli("learn2reg", "--dataset", root, "--out-dir", tmp_path / "out")
    assert code == 2 and "colin27_0000.nii.gz is not named as Learn2Reg's images" in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_learn2reg_with_the_network_writes_fields_learn2reg_scores_identically(cli, tmp_path, weights_3d):
    root = _dataset(tmp_path / "TOY")
    out = tmp_path / "submission"
    code, _, stderr = cli("learn2reg", "--dataset", root, "--out-dir", out, "--weights", weights_3d)
    assert code == 0, stderr
    stored = np.load(out / "disp_0001_0000_0002_0000.npz")
    field = stored[stored.files[0]].astype(np.float32)
    assert field.shape == (*FIXED_SHAPE, 3) and np.abs(field).max() > 0
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in FIXED_SHAPE), indexing="ij"))
    warped = map_coordinates(_labels(MOVING_SHAPE, 2), grid + field.transpose(3, 0, 1, 2), order=0)
    (pair,) = json.loads((out / "metrics.json").read_text())["pairs"]
    assert pair["learn2reg"]["DSC"] == pytest.approx(np.nanmean(_learn2reg_dice(_labels(FIXED_SHAPE, 1), warped)))
    assert {"mean_dice", "mean_dice_before", "folding_percent", "sdlogj"} <= set(pair["ours"])
    assert "registration_val: 100%" in stderr  # the progress bar


def test_keypoints_give_learn2reg_tre_of_the_field_as_written(cli, tmp_path, translation_pipeline):
    """Fixed voxel (i, j, k) goes to moving index (28 - 2i, 4j/3 + 2, k) (``_hand_field``); moving keypoints placed
    off it by known index offsets give a known TRE, in mm of the moving spacing (1, 1.5, 2)."""
    root = _dataset(tmp_path / "TOY")
    fixed_points = np.array([[3.0, 3.0, 3.0], [5.0, 4.0, 2.0], [4.0, 6.0, 5.0]])
    mapped = np.stack([28 - 2 * fixed_points[:, 0], 4 * fixed_points[:, 1] / 3 + 2, fixed_points[:, 2]], axis=-1)
    offsets = np.array([[0.5, 0, 0], [0, 2, 0], [0, 0, 1]])  # 0.5 mm, 3 mm, 2 mm
    (root / "keypointsTr").mkdir()
    for name, points in (("TOY_0001_0000", fixed_points), ("TOY_0002_0000", mapped + offsets)):
        (root / "keypointsTr" / f"{name}.csv").write_text("\n".join(",".join(map(str, p)) for p in points) + "\n")
    out = tmp_path / "submission"
    code, stdout, stderr = cli("learn2reg", "--dataset", root, "--out-dir", out, "--format", "nii.gz", "--quiet")
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pairs"][0]["learn2reg"]["TRE"] == pytest.approx((0.5 + 3 + 2) / 3, abs=1e-3)
    assert metrics["learn2reg_aggregates"]["TRE"]["mean"] == pytest.approx((0.5 + 3 + 2) / 3, abs=1e-3)
    assert "learn2reg TRE: 1.8333" in stdout


def test_learn2reg_shards_merge_and_never_replace_a_field_it_did_not_write(cli, tmp_path, translation_pipeline):
    root = _dataset(tmp_path / "TOY")
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    assert cli("learn2reg", "--dataset", root, "--out-dir", one, "--quiet")[0] == 0
    code, stdout, err = cli("learn2reg", "--dataset", root, "--out-dir", sharded, "--shard", "1/1", "--quiet")
    assert code == 0 and "shard 1/1: 1 fields" in stdout, err
    assert not (sharded / "metrics.json").exists() and (sharded / "disp_0001_0000_0002_0000.npz").is_file()
    assert cli("learn2reg", "--dataset", root, "--out-dir", sharded, "--merge", "--quiet")[0] == 0
    merged, single = (json.loads((d / "metrics.json").read_text()) for d in (sharded, one))
    assert merged["pairs"] == single["pairs"] and merged["learn2reg_aggregates"] == single["learn2reg_aggregates"]

    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "disp_0001_0000_0002_0000.npz").write_bytes(b"someone else's field")
    code, _, err = cli("learn2reg", "--dataset", root, "--out-dir", stray, "--quiet")
    assert code == 2 and "exists; pass --overwrite" in err
    assert (stray / "disp_0001_0000_0002_0000.npz").read_bytes() == b"someone else's field"
