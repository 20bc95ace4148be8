"""The native scan reader: ITK's header rule (qform first, warned), outputs placed alike by every tool, bad files."""

import warnings
import zipfile

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from monai_vmorph.errors import UserError
from monai_vmorph.io import MAX_LABELS, itk_to_affine
from monai_vmorph.pipeline import NativeScan, OutputSet, load_bundle_model, read_scan


def _sitk_affine(path) -> np.ndarray:
    """The RAS affine SimpleITK places a file with (independent of our reader)."""
    image = sitk.ReadImage(str(path))
    return itk_to_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())


def _disagreeing(path, qcode=1, scode=4):
    """A file whose qform and sform are 30 mm and 17 degrees apart."""
    array = np.arange(10 * 12 * 8, dtype=np.float32).reshape(10, 12, 8)
    qform = np.diag([2.0, 1.5, 2.5, 1.0])
    qform[:3, 3] = (10.0, -20.0, 30.0)
    c, s = np.cos(0.3), np.sin(0.3)
    sform = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ qform
    sform[:3, 3] = (40.0, 10.0, 60.0)
    image = nib.Nifti1Image(array, np.eye(4))
    image.set_qform(qform, code=qcode)
    image.set_sform(sform, code=scode)
    nib.save(image, path)
    return qform, sform


def test_qform_sform_disagreement_warns_and_follows_itk(tmp_path):
    path = tmp_path / "qs.nii.gz"
    qform, sform = _disagreeing(path)
    assert np.allclose(nib.load(path).affine, sform)  # nibabel alone would place it by the sform
    with pytest.warns(UserWarning, match=r"qs\.nii\.gz: qform \(code 1\) and sform \(code 4\).*using the qform"):
        scan = read_scan(path, "--moving")
    np.testing.assert_allclose(scan.affine, qform, atol=1e-5)
    np.testing.assert_allclose(scan.affine, _sitk_affine(path), atol=1e-4)  # where SimpleITK puts it
    assert (scan.qform_code, scan.sform_code) == (1, 4)


def test_outputs_have_identical_qform_and_sform_with_codes_kept(tmp_path):
    path = tmp_path / "qs.nii.gz"
    qform, _ = _disagreeing(path)
    with pytest.warns(UserWarning):
        scan = read_scan(path, "--fixed")
    with OutputSet(tmp_path / "out", ["w.nii.gz"]) as outputs:
        outputs.write_nifti("w.nii.gz", scan.array * 2, scan)
        outputs.commit()
    out = nib.load(tmp_path / "out" / "w.nii.gz")
    q, qcode = out.header.get_qform(coded=True)
    s, scode = out.header.get_sform(coded=True)
    assert (int(qcode), int(scode)) == (1, 4)
    np.testing.assert_allclose(q, qform, atol=1e-5)
    np.testing.assert_allclose(s, qform, atol=1e-5)
    np.testing.assert_allclose(_sitk_affine(tmp_path / "out" / "w.nii.gz"), qform, atol=1e-4)  # SimpleITK agrees
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no disagreement left to warn about
        again = read_scan(tmp_path / "out" / "w.nii.gz", "--fixed")
    np.testing.assert_allclose(again.array, scan.array * 2)


@pytest.mark.parametrize(("qcode", "scode", "which"), [(0, 2, "sform"), (1, 0, "qform")])
def test_a_single_coded_placement_is_used_without_warning(tmp_path, qcode, scode, which):
    path = tmp_path / "one.nii.gz"
    qform, sform = _disagreeing(path, qcode, scode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan = read_scan(path, "--fixed")
    np.testing.assert_allclose(scan.affine, {"qform": qform, "sform": sform}[which], atol=1e-5)
    np.testing.assert_allclose(scan.affine, _sitk_affine(path), atol=1e-4)


def test_a_2d_slice_keeps_its_form_and_position(tmp_path):
    affine = np.diag([1.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = (1.0, 2.0, 7.0)
    nib.save(nib.Nifti1Image(np.ones((6, 5, 1), np.float32), affine), tmp_path / "s.nii.gz")
    scan = read_scan(tmp_path / "s.nii.gz", "--fixed")
    assert scan.ndim == 2 and scan.affine.shape == (3, 3)
    np.testing.assert_allclose(scan.affine, [[1.5, 0, 1.0], [0, 2.0, 2.0], [0, 0, 1]])
    with OutputSet(tmp_path / "out", ["w.nii.gz"]) as outputs:
        outputs.write_nifti("w.nii.gz", scan.array, scan)
        outputs.commit()
    out = nib.load(tmp_path / "out" / "w.nii.gz")
    assert out.shape == (6, 5, 1)
    np.testing.assert_allclose(out.affine, affine)


def _save(path, array, sform=None):
    """Save with an identity placement, or with only the sform ``sform`` (any matrix, even a singular one)."""
    image = nib.Nifti1Image(array, np.eye(4))
    if sform is not None:
        image.set_sform(sform, code=2)
        image.header["qform_code"] = 0
    nib.save(image, path)
    return path


def test_bad_scans_are_one_line_errors(tmp_path):
    singular = np.diag([1.0, 0.0, 1.0, 1.0])
    cases = {
        "complex": (_save(tmp_path / "c.nii.gz", np.ones((4, 4, 4), np.complex64)), {}, "complex or RGB"),
        "singular": (_save(tmp_path / "z.nii.gz", np.ones((4, 4, 4), np.float32), singular), {}, "singular"),
        "many labels": (
            _save(tmp_path / "l.nii.gz", np.arange(1500, dtype=np.int32).reshape(15, 10, 10)),
            {"labels": True},
            f"1500 distinct values .*at most {MAX_LABELS}",
        ),
        "fractional labels": (
            _save(tmp_path / "f.nii.gz", np.full((4, 4, 4), 0.5, np.float32)),
            {"labels": True},
            "non-integer values",
        ),
    }
    for name, (path, kwargs, message) in cases.items():
        with pytest.raises(UserError, match=message) as info:
            read_scan(path, "--moving", **kwargs)
        assert "\n" not in str(info.value), name


def test_weights_that_are_not_a_checkpoint_are_one_line_errors(tmp_path):
    archive = tmp_path / "not_a_checkpoint.pt"
    with zipfile.ZipFile(archive, "w") as z:  # a zip without torch's data.pkl
        z.writestr("something.txt", "hello")
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    for path in (archive, text):
        with pytest.raises(UserError, match="are not a PyTorch state dict that is safe to load"):
            load_bundle_model(3, torch.device("cpu"), weights=path)


def test_in_memory_scans_are_their_own_grid():
    scan = NativeScan.from_array(np.zeros((4, 5)), np.diag([2.0, 3.0, 1.0]))
    assert scan.ndim == 2 and scan.file_affine.shape == (4, 4) and scan.name == "<array>"
    np.testing.assert_allclose(scan.file_affine[:2, :2], np.diag([2.0, 3.0]))


def test_monai_loading_follows_the_same_header_rule(tmp_path):
    from monai.transforms import LoadImage

    from monai_vmorph.io import HeaderRuleNibabelReader

    path = tmp_path / "qs.nii.gz"
    qform, sform = _disagreeing(path)
    with pytest.warns(UserWarning, match="using the qform"):
        image = LoadImage(reader=HeaderRuleNibabelReader(), image_only=True)(str(path))
    np.testing.assert_allclose(np.asarray(image.affine), qform, atol=1e-5)
    np.testing.assert_allclose(np.asarray(LoadImage(image_only=True)(str(path)).affine), sform, atol=1e-5)  # MONAI's


def test_the_command_lines_affine_choices_are_the_pipelines_modes():
    from monai_vmorph.cli.main import AFFINE_CHOICES
    from monai_vmorph.pipeline import AFFINE_MODES

    assert AFFINE_CHOICES == AFFINE_MODES


def test_the_command_lines_similarity_choices_are_the_pipelines():
    from monai_vmorph.cli.main import SIMILARITY_CHOICES
    from monai_vmorph.pipeline.auto_similarity import DEFORMABLE_SIMILARITIES

    assert SIMILARITY_CHOICES == DEFORMABLE_SIMILARITIES
