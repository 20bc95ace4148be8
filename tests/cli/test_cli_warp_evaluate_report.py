"""``warp`` matches SimpleITK on fields SimpleITK wrote; ``evaluate`` and ``report`` outputs."""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[2]
BRAIN_2D = ROOT / "data" / "brain_2d"


def _sitk_image(array_xyz, spacing, origin, direction):
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _rotation_z(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


@pytest.fixture
def scene(tmp_path):
    """Moving image + labels, a reference grid and a SimpleITK-written field (translation + smooth part),
    all on different oblique anisotropic grids (LPS, as ITK sees them)."""
    rng = np.random.default_rng(3)
    shape = (30, 28, 20)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    blob = np.exp(-(((idx - np.array(shape) / 2) / np.array([8.0, 7.0, 5.0])) ** 2).sum(-1))
    moving = _sitk_image(
        (blob + 0.1 * rng.random(shape)).astype(np.float32), (2.0, 2.2, 3.0), (-30, -28, -30), _rotation_z(10)
    )
    labels = _sitk_image(
        np.digitize(blob, [0.2, 0.5, 0.8]).astype(np.int16), (2.0, 2.2, 3.0), (-30, -28, -30), _rotation_z(10)
    )
    reference = _sitk_image(np.zeros((26, 24, 16), np.float32), (2.4, 2.4, 3.5), (-28, -26, -27), _rotation_z(-7))
    fshape = (18, 16, 12)
    fidx = np.stack(np.meshgrid(*[np.arange(n) for n in fshape], indexing="ij"), -1).astype(float)
    smooth = 3.0 * np.sin(fidx[..., :1] / 5.0) * np.cos(fidx[..., 1:2] / 4.0)
    vectors = np.concatenate([1.5 + smooth, -2.0 + 0.5 * smooth, 0.8 - smooth], axis=-1)  # LPS mm
    field = sitk.GetImageFromArray(np.ascontiguousarray(vectors.transpose(2, 1, 0, 3)), isVector=True)
    field.SetSpacing((3.5, 3.6, 4.5))
    field.SetOrigin((-29, -27, -26))
    field.SetDirection(_rotation_z(5))
    paths = {name: tmp_path / f"{name}.nii.gz" for name in ("moving", "labels", "reference", "field")}
    for name, image in (("moving", moving), ("labels", labels), ("reference", reference), ("field", field)):
        sitk.WriteImage(image, str(paths[name]))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return paths, moving, labels, reference, transform


@pytest.mark.parametrize("interp", ["linear", "nearest"])
def test_warp_with_a_simpleitk_field_matches_sitk_resample(scene, cli, tmp_path, interp):
    paths, moving, _, reference, transform = scene
    out = tmp_path / f"w_{interp}.nii.gz"
    code, _, err = cli(
        "warp",
        "--field",
        paths["field"],
        "--moving",
        paths["moving"],
        "--reference",
        paths["reference"],
        "--out",
        out,
        "--interp",
        interp,
        "--quiet",
    )
    assert code == 0, err
    mode = sitk.sitkLinear if interp == "linear" else sitk.sitkNearestNeighbor
    expected = sitk.GetArrayFromImage(sitk.Resample(moving, reference, transform, mode, 0.0)).transpose(2, 1, 0)
    ours = np.asarray(nib.load(out).dataobj)
    assert ours.shape == expected.shape == (26, 24, 16)
    assert np.abs(expected).sum() > 10  # the warped image is not empty
    if interp == "linear":
        np.testing.assert_allclose(ours, expected, atol=1e-4)
    else:
        assert np.mean(np.isclose(ours, expected, atol=1e-6)) > 0.99  # exact ties may round either way
    np.testing.assert_allclose(nib.load(out).affine, nib.load(paths["reference"]).affine, atol=1e-5)


def test_warp_label_mode_keeps_dtype_and_values_and_agrees_with_nearest(scene, cli, tmp_path):
    paths, _, labels, reference, transform = scene
    out = tmp_path / "warped_labels.nii.gz"
    code, _, err = cli(
        "warp",
        "--field",
        paths["field"],
        "--moving",
        paths["labels"],
        "--reference",
        paths["reference"],
        "--out",
        out,
        "--interp",
        "label",
        "--quiet",
    )
    assert code == 0, err
    ours = nib.load(out)
    assert ours.get_data_dtype() == np.int16
    values = np.asarray(ours.dataobj)
    nearest = sitk.GetArrayFromImage(
        sitk.Resample(labels, reference, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    ).transpose(2, 1, 0)
    assert set(np.unique(values)) <= {0, 1, 2, 3} and len(np.unique(values)) == 4
    # one-hot linear + argmax differs from nearest only along label boundaries
    assert np.mean(values == nearest) > 0.9


@pytest.mark.slow
def test_evaluate_writes_per_pair_csv_and_a_summary(cli, weights_2d, tmp_path):
    names = ["colin27_z+0", "icbm09a_z+0", "icbm09c_z+10"]
    csv_path = tmp_path / "pairs.csv"
    rows = [("moving", "fixed", "moving_label", "fixed_label")]
    for moving, fixed in [(names[1], names[0]), (names[2], names[0])]:
        rows.append(
            tuple(
                str(BRAIN_2D / d / f"{n}_0000.nii.gz")
                for d, n in [("imagesTr", moving), ("imagesTr", fixed), ("labelsTr", moving), ("labelsTr", fixed)]
            )
        )
    csv_path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    out = tmp_path / "eval"
    code, stdout, err = cli("evaluate", "--pairs", csv_path, "--out-dir", out, "--weights", weights_2d)
    assert code == 0, err
    table = list(csv.DictReader(open(out / "metrics.csv")))
    assert [(r["moving"], r["fixed"]) for r in table] == [
        (names[1] + "_0000", names[0] + "_0000"),
        (names[2] + "_0000", names[0] + "_0000"),
    ]
    assert {"dice_1", "dice_2", "dice_3", "folding_percent", "sdlogj"} <= set(table[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 2
    dice = [float(r["mean_dice"]) for r in table]
    assert summary["mean_dice"]["mean"] == pytest.approx(np.mean(dice)) and summary["mean_dice"]["count"] == 2
    assert "mean_dice: " in stdout and "pairs" in err  # the summary, and the progress bar on stderr


@pytest.mark.slow
def test_report_draws_a_png(cli, weights_2d, tmp_path):
    fixed, moving = (BRAIN_2D / "imagesTr" / f"{n}_0000.nii.gz" for n in ("colin27_z+0", "icbm09a_z+0"))
    out = tmp_path / "report"
    code, _, err = cli("report", "--fixed", fixed, "--moving", moving, "--out-dir", out, "--weights", weights_2d)
    assert code == 0, err
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (21 * 80, 3 * 80)  # seven 3-inch panels in one row at 80 dpi


@pytest.mark.slow
def test_report_with_labels_draws_contours_dice_colour_bars_and_the_folding_legend(weights_2d):
    """The figure itself: both differences and the Jacobian have colour bars, the Jacobian panel a legend for the
    black folds, the label contours are drawn and the titles carry the Dice the registration measured."""
    import matplotlib.pyplot as plt

    from monai_vmorph.cli.report import draw_report, network_labels, unaligned_view
    from monai_vmorph.pipeline import load_bundle_model, read_scan, register_pair

    fixed, moving = (read_scan(BRAIN_2D / "imagesTr" / f"{n}_0000.nii.gz", n) for n in ("colin27_z+0", "icbm09a_z+0"))
    fixed_labels, moving_labels = (
        read_scan(BRAIN_2D / "labelsTr" / f"{n}_0000.nii.gz", n, labels=True) for n in ("colin27_z+0", "icbm09a_z+0")
    )
    bundle = load_bundle_model(2, torch.device("cpu"), weights=weights_2d)
    result = register_pair(fixed, moving, bundle, moving_labels=moving_labels, fixed_labels=fixed_labels)
    result = unaligned_view(result, moving)
    labels = network_labels(result, fixed, moving_labels, fixed_labels)
    assert labels["fixed"].shape == result.net_fixed.shape and set(np.unique(labels["warped"])) == {0, 1, 2, 3}
    fig = draw_report(result, "pair", labels)
    try:
        panels, bars = fig.axes[:7], fig.axes[7:]
        assert [ax.get_label() for ax in bars] == ["<colorbar>"] * 3  # before, after, Jacobian
        assert panels[1].get_title() == f"moving (Dice {result.metrics['mean_dice_before']:.3f})"
        assert panels[2].get_title() == f"warped (Dice {result.metrics['mean_dice']:.3f})"
        assert [t.get_text() for t in panels[6].get_legend().get_texts()] == ["folding (det <= 0)"]
        # contours: one per label on the fixed panel; fixed (white) and moving/warped ones on the next two
        contour_sets = [len(ax.collections) for ax in panels[:3]]
        assert contour_sets == [3, 6, 6]
    finally:
        plt.close(fig)
