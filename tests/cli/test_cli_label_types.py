"""Label maps in every type users have (Learn2Reg's uint16, FreeSurfer's int32, float maps of whole numbers): the same
warped labels as int32, stored in the input's type; broken maps are one line before any work."""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_vmorph.io import write_itk_displacement
from monai_vmorph.pipeline import read_scan

ROOT = Path(__file__).resolve().parents[2]
BRAIN_2D = ROOT / "data" / "brain_2d"
DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64"]


def _largest(dtype: str) -> int:
    """A large label value the type holds (at least 65535 where it can)."""
    return 65535 if np.dtype(dtype).itemsize >= 2 and dtype not in ("int16",) else int(np.iinfo(dtype).max)


def _label_volume(dtype: str, shape=(12, 14, 10)) -> np.ndarray:
    """Blocks of four labels, one of them the type's large value, with background 0."""
    out = np.zeros(shape, dtype=np.int64)
    out[2:6, 2:12, 2:8] = 3
    out[6:10, 2:12, 2:8] = _largest(dtype)
    out[4:8, 5:9, 3:6] = 17
    return out.astype(dtype)


def _save(path: Path, array: np.ndarray, affine=None) -> Path:
    nib.save(
        nib.Nifti1Image(array, np.diag([1.5, 1.5, 2.0, 1.0]) if affine is None else affine, dtype=array.dtype), path
    )
    return path


@pytest.mark.parametrize("dtype", DTYPES)
def test_label_maps_of_every_type_are_read_as_int32_with_their_values(dtype, tmp_path):
    array = _label_volume(dtype)
    scan = read_scan(_save(tmp_path / "l.nii.gz", array), "label", labels=True)
    assert scan.array.dtype == np.int32 and scan.file_dtype == np.dtype(dtype)
    np.testing.assert_array_equal(scan.array, array.astype(np.int64))
    assert sorted(np.unique(scan.array).tolist()) == sorted({0, 3, 17, _largest(dtype)})


def test_labels_beyond_int32_are_int64_and_beyond_int64_are_refused(tmp_path):
    array = np.zeros((4, 4, 4), dtype=np.uint64)
    array[1, 1, 1] = 2**40
    scan = read_scan(_save(tmp_path / "big.nii.gz", array), "label", labels=True)
    assert scan.array.dtype == np.int64 and int(scan.array.max()) == 2**40
    array[1, 1, 1] = 2**63 + 5
    from monai_vmorph.errors import UserError

    with pytest.raises(UserError, match="beyond a 64-bit integer"):
        read_scan(_save(tmp_path / "huge.nii.gz", array), "label", labels=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_warp_label_gives_the_int32_result_in_the_inputs_type(cli, dtype, tmp_path):
    labels = _label_volume(dtype)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    field = np.zeros((*labels.shape, 3), dtype=np.float32)
    x = np.arange(labels.shape[0])[:, None, None]
    field[..., 0] = 1.2 * np.sin(x / 3.0)  # RAS mm: about a voxel, varying along the first axis
    field[..., 1] = 0.7
    write_itk_displacement(tmp_path / "field.nii.gz", field, affine)
    reference = _save(tmp_path / "ref.nii.gz", np.zeros(labels.shape, np.float32), affine)
    outputs = {}
    for kind, array in (("reference", labels.astype(np.int64).astype(np.int32)), ("input", labels)):
        moving = _save(tmp_path / f"moving_{kind}.nii.gz", array, affine)
        out = tmp_path / f"out_{kind}.nii.gz"
        code, _, err = cli("warp", "--field", tmp_path / "field.nii.gz", "--moving", moving, "--reference", reference,
                           "--out", out, "--interp", "label", "--quiet")  # fmt: skip
        assert code == 0, err
        image = nib.load(out)
        assert image.get_data_dtype() == np.dtype(array.dtype)
        outputs[kind] = np.asarray(image.dataobj)
    assert outputs["input"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(outputs["input"].astype(np.int64), outputs["reference"].astype(np.int64))
    assert _largest(dtype) in np.unique(outputs["input"])  # the field moved it, it was not lost
    assert not np.array_equal(outputs["reference"], labels.astype(np.int32))


def _slice_labels(source: Path, path: Path, dtype) -> Path:
    """A 2D slice's tissue labels in ``dtype`` with label 3 renumbered 65535 (Learn2Reg / FreeSurfer style)."""
    image = nib.load(source)
    array = np.asarray(image.dataobj).astype(dtype)
    array[array == 3] = 65535
    nib.save(nib.Nifti1Image(array, image.affine, image.header, dtype=dtype), path)
    return path


@pytest.mark.slow
def test_register_with_uint16_labels_gives_the_int32_result_in_uint16(cli, weights_2d, tmp_path):
    """The crash users met: ``register --moving-labels`` on a uint16 map (``torch.unique`` has no uint16 CPU sort)."""
    fixed = BRAIN_2D / "imagesTr" / "colin27_z+0_0000.nii.gz"
    moving = BRAIN_2D / "imagesTr" / "icbm09a_z+10_0000.nii.gz"
    results = {}
    for dtype in (np.int32, np.uint16):
        name = np.dtype(dtype).name
        moving_labels = _slice_labels(BRAIN_2D / "labelsTr" / moving.name, tmp_path / f"ml_{name}.nii.gz", dtype)
        fixed_labels = _slice_labels(BRAIN_2D / "labelsTr" / fixed.name, tmp_path / f"fl_{name}.nii.gz", dtype)
        out = tmp_path / name
        code, _, err = cli("register", "--fixed", fixed, "--moving", moving, "--moving-labels", moving_labels,
                           "--fixed-labels", fixed_labels, "--out-dir", out, "--weights", weights_2d, "--fast",
                           "--quiet")  # fmt: skip
        assert code == 0, err
        warped = nib.load(out / "warped_labels.nii.gz")
        assert warped.get_data_dtype() == dtype
        results[name] = (np.asarray(warped.dataobj), json.loads((out / "metrics.json").read_text()))
    (labels, metrics), (reference, reference_metrics) = results["uint16"], results["int32"]
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 65535}
    np.testing.assert_array_equal(labels.astype(np.int64), reference.astype(np.int64))
    assert set(metrics["dice"]) == {"1", "2", "65535"} and metrics["dice"] == reference_metrics["dice"]
    assert 0.3 < metrics["mean_dice"] < 1


def _bad_label(kind: str, path: Path) -> Path:
    base = _label_volume("int32").astype(np.float32)
    if kind == "fractional":
        base[3, 3, 3] = 2.5
        return _save(path, base)
    if kind == "4d":
        return _save(path, np.stack([base, base], axis=-1))
    image = nib.Nifti1Image(base.astype(np.complex64), np.eye(4), dtype=np.complex64)
    nib.save(image, path)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [("fractional", "non-integer values"), ("4d", "several volumes"), ("complex", "complex or RGB")],
)
def test_broken_label_maps_are_one_line_before_any_registration(cli, no_registration, kind, message, tmp_path):
    """In ``register`` and in ``evaluate``, where the broken map belongs to the last pair of the list: exit 2, one line
    naming the file, no output, and no registration started."""
    bad = _bad_label(kind, tmp_path / f"bad_{kind}.nii.gz")
    good = _save(tmp_path / "good.nii.gz", _label_volume("int32"))
    image = _save(tmp_path / "image.nii.gz", np.random.default_rng(0).random((12, 14, 10)).astype(np.float32))
    code, _, err = cli("register", "--fixed", image, "--moving", image, "--moving-labels", bad, "--fixed-labels", good,
                       "--out-dir", tmp_path / "out")  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(bad) in lines[0] and message in lines[0], err
    assert not (tmp_path / "out").exists()

    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["moving", "fixed", "moving_label", "fixed_label"])
        writer.writerow([image, image, good, good])
        writer.writerow([image, image, bad, good])
    code, _, err = cli("evaluate", "--pairs", pairs, "--out-dir", tmp_path / "eval", "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(bad) in lines[0] and message in lines[0], err
    assert not (tmp_path / "eval").exists()
