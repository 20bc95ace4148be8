"""Integer types of NIfTI outputs: nibabel refuses 64-bit integers, so values go to a 32-bit type that holds them."""

import nibabel as nib
import numpy as np
import pytest

from monai_vmorph.io import nifti_integer_array
from monai_vmorph.pipeline import NativeScan, OutputSet


@pytest.mark.parametrize(
    ("dtype", "preferred", "expected"),
    [
        (np.int64, None, np.int32),  # too wide: int32
        (np.int64, np.uint32, np.uint32),  # the loader's widening of a uint32 file is undone
        (np.int64, np.uint8, np.int32),  # the preferred type does not hold 300
        (np.uint16, None, np.uint16),  # a storable type is kept
        (np.int16, np.int64, np.int16),  # a 64-bit preference is not storable either
    ],
)
def test_integer_arrays_get_the_first_storable_type_that_holds_them(dtype, preferred, expected):
    array = np.array([[0, 7], [300, 41]], dtype=dtype)
    out = nifti_integer_array(array, preferred)
    assert out.dtype == expected
    np.testing.assert_array_equal(out, [[0, 7], [300, 41]])


def test_values_beyond_32_bits_and_float_arrays():
    with pytest.raises(ValueError, match=r"label values 0\.\.8589934592 do not fit a 32-bit NIfTI integer type"):
        nifti_integer_array(np.array([0, 2**33], dtype=np.int64))
    floats = np.array([0.5, 2.0])
    assert nifti_integer_array(floats) is floats


def test_command_line_outputs_store_int64_label_maps(tmp_path):
    labels = np.arange(24, dtype=np.int64).reshape(2, 3, 4) * 1000
    with OutputSet(tmp_path, ["warped_labels.nii.gz"]) as outputs:
        outputs.write_nifti("warped_labels.nii.gz", labels, NativeScan.from_array(labels, np.eye(4)))
        outputs.commit()
    written = nib.load(tmp_path / "warped_labels.nii.gz")
    assert written.get_data_dtype() == np.int32
    np.testing.assert_array_equal(np.asarray(written.dataobj), labels)
