"""Verified writes: a failed or incomplete write is one line and leaves nothing; temporaries of killed writes go."""

import errno
import gzip
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from monai_vmorph.errors import UserError
from monai_vmorph.io import read_itk_displacement, write_itk_displacement
from monai_vmorph.io.atomic import (
    FileSet,
    OutputWriteError,
    atomic_write,
    atomic_write_bytes,
    check_nifti,
    remove_temporaries,
    temporary_sibling,
    write_nifti,
)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _run_limited(code: str, limit: int) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python whose files may not grow beyond ``limit`` bytes (``ulimit -f``)."""
    prelude = f"import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("ndim", [2, 3])
def test_an_itk_field_write_cut_by_the_file_size_limit_is_one_line_and_leaves_nothing(tmp_path, ndim):
    """SimpleITK's writer prints ``** ERROR: NWAD`` and returns normally when the write is cut; the field must not be
    published. Under ``ulimit -f`` the written part of the >1 MB field is 100 kB."""
    code = f"""
        import numpy as np
        from monai_vmorph.errors import UserError
        from monai_vmorph.io import write_itk_displacement
        field = np.random.default_rng(0).normal(size={(64, 64, 64, 3) if ndim == 3 else (400, 400, 2)})
        try:
            write_itk_displacement({str(tmp_path / "ddf.nii.gz")!r}, field, np.eye({ndim + 1}))
        except UserError as error:
            print(f"error: {{error}}")
    """
    result = _run_limited(code, 100_000)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"error: file size limit exceeded (ulimit -f) writing ddf.nii.gz in {tmp_path}; free some space or choose "
        "another output folder"
    ]
    assert "NWAD" not in result.stderr  # ITK's own message is captured, not shown
    assert list(tmp_path.iterdir()) == []


def test_a_complete_field_passes_the_read_back(tmp_path):
    field = np.random.default_rng(1).normal(size=(20, 22, 18, 3))
    write_itk_displacement(tmp_path / "ddf.nii.gz", field, np.diag([2.0, 1.5, 1.0, 1.0]))
    back, _ = read_itk_displacement(tmp_path / "ddf.nii.gz")
    np.testing.assert_allclose(back, field, atol=1e-12)
    assert [p.name for p in tmp_path.iterdir()] == ["ddf.nii.gz"]


@pytest.mark.parametrize("name", ["img.nii.gz", "img.nii"])
def test_check_nifti_rejects_truncated_files_and_accepts_whole_ones(tmp_path, name):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.arange(20 * 20 * 20, dtype=np.float32).reshape(20, 20, 20), np.eye(4)), path)
    check_nifti(path, (20, 20, 20))
    with pytest.raises(ValueError, match=r"has shape \(20, 20, 20\), expected \(20, 20\)"):
        check_nifti(path, (20, 20))
    data = path.read_bytes()
    for cut in (200, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises((ValueError, EOFError)):
            check_nifti(path)


def test_check_nifti_rejects_a_gzip_stream_whose_crc_is_wrong(tmp_path):
    raw = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)).to_bytes()
    packed = bytearray(gzip.compress(raw))
    packed[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    (tmp_path / "x.nii.gz").write_bytes(bytes(packed))
    with pytest.raises(ValueError, match="is corrupt"):
        check_nifti(tmp_path / "x.nii.gz")


def test_a_failed_write_keeps_the_old_file_and_names_the_reason(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_bytes(path, b"old")

    def disk_full(tmp):
        tmp.write_bytes(b"par")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputWriteError) as error:
        atomic_write(path, disk_full)
    assert str(error.value) == (
        f"no space left on device writing metrics.json in {tmp_path}; free some space or choose another output folder"
    )
    assert isinstance(error.value, UserError)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_write_that_fails_its_check_is_not_published(tmp_path):
    def short(tmp):
        tmp.write_bytes(b"12")

    def check(tmp):
        raise ValueError("holds 2 of 3 bytes")

    with pytest.raises(OutputWriteError, match=r"^the written file is incomplete writing x\.bin in "):
        atomic_write(tmp_path / "x.bin", short, check)
    assert list(tmp_path.iterdir()) == []


def test_write_nifti_publishes_a_checked_image(tmp_path):
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.diag([2.0, 3.0, 4.0, 1.0]))
    write_nifti(tmp_path / "sub" / "a.nii.gz", image)
    back = nib.load(tmp_path / "sub" / "a.nii.gz")
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.arange(24).reshape(2, 3, 4))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.nii.gz"]


def test_a_file_set_is_published_whole_or_not_at_all(tmp_path):
    image = nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4))
    with pytest.raises(OutputWriteError, match=r"no space left on device writing b\.json"):
        with FileSet() as files:
            files.add_nifti(tmp_path / "a.nii.gz", image)
            files.add(tmp_path / "b.json", lambda p: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
            files.commit()
    assert list(tmp_path.iterdir()) == []
    with FileSet() as files:
        files.add_nifti(tmp_path / "a.nii.gz", image)
        files.add(tmp_path / "b.json", lambda p: p.write_text("{}"))
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []
        files.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.json"]


def test_remove_temporaries_deletes_only_the_hidden_temporaries_of_our_writes(tmp_path):
    ours = [temporary_sibling(tmp_path / n) for n in ("last.pt", "ddf.nii.gz", "metrics.json", "README")]
    others = ["last.pt", ".hidden.nii.gz", "x.tmp-0123456789ab.pt", ".a.tmp-xyz.pt", ".b.tmp-0123456789abc.pt"]
    for path in ours + [tmp_path / n for n in others]:
        path.write_bytes(b"x")
    assert sorted(remove_temporaries(tmp_path)) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


def test_sitk_can_read_what_the_verified_writer_published(tmp_path):
    field = np.zeros((6, 7, 2), np.float32)
    field[..., 0] = 1.5  # +1.5 mm along R = -1.5 mm along ITK's L
    write_itk_displacement(tmp_path / "f.nii.gz", field, np.eye(3))
    image = sitk.ReadImage(str(tmp_path / "f.nii.gz"))
    assert image.GetSize() == (6, 7) and image.GetPixel(0, 0) == (-1.5, 0.0)
