"""Bad input: exit status 2, one line on stderr, no traceback, and nothing written."""

import gzip
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_vmorph.io import write_itk_displacement

ROOT = Path(__file__).resolve().parents[2]


def _nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array), np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine), path)
    return path


@pytest.fixture
def files(tmp_path):
    """A small valid 3D pair with labels, plus broken variants."""
    rng = np.random.default_rng(0)
    f = {
        "image": _nifti(tmp_path / "image.nii.gz", rng.random((16, 16, 16)).astype(np.float32)),
        "labels": _nifti(tmp_path / "labels.nii.gz", rng.integers(0, 3, (16, 16, 16)).astype(np.uint8)),
        "image2d": _nifti(tmp_path / "slice.nii.gz", rng.random((16, 16)).astype(np.float32)),
        "image4d": _nifti(tmp_path / "series.nii.gz", rng.random((16, 16, 16, 2)).astype(np.float32)),
        "nan": _nifti(tmp_path / "nan.nii.gz", np.full((16, 16, 16), np.nan, np.float32)),
        "empty_labels": _nifti(tmp_path / "empty.nii.gz", np.zeros((16, 16, 16), np.uint8)),
        "float_labels": _nifti(tmp_path / "soft.nii.gz", rng.random((16, 16, 16)).astype(np.float32)),
        "small_labels": _nifti(tmp_path / "small.nii.gz", np.ones((8, 8, 8), np.uint8)),
    }
    f["text"] = tmp_path / "notes.nii.gz"
    f["text"].write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    f["plain"] = tmp_path / "readme.txt"
    f["plain"].write_text("hello")
    truncated = f["image"].read_bytes()
    f["corrupt"] = tmp_path / "corrupt.nii.gz"
    f["corrupt"].write_bytes(truncated[: len(truncated) // 2])
    f["field2d"] = write_itk_displacement(tmp_path / "field2d.nii.gz", np.zeros((16, 16, 2), np.float32), np.eye(3))
    f["pickle"] = tmp_path / "evil.pt"
    torch.save({"net": torch.nn.Linear(1, 1)}, f["pickle"])  # a module, not a state dict: needs unpickling
    f["afile"] = tmp_path / "afile"
    f["afile"].write_text("x")
    return f


def _register(f, out, **replace):
    args = {"--fixed": f["image"], "--moving": f["image"], "--out-dir": out, **replace}
    return ["register", *[str(x) for kv in args.items() for x in kv if x is not None]]


def _warp(f, out, **replace):
    args = {"--field": f["field2d"], "--moving": f["image"], "--reference": f["image"], "--out": out / "w.nii.gz"}
    return ["warp", *[str(x) for kv in {**args, **replace}.items() for x in kv]]


CASES = {
    "missing file": (lambda f, o: _register(f, o, **{"--fixed": f["image"].parent / "nope.nii.gz"}), "does not exist"),
    "not NIfTI": (lambda f, o: _register(f, o, **{"--moving": f["plain"]}), "is not a readable NIfTI image"),
    "gzip of text": (lambda f, o: _register(f, o, **{"--moving": f["text"]}), "NIfTI"),
    "corrupt gzip": (lambda f, o: _register(f, o, **{"--moving": f["corrupt"]}), "corrupt or truncated"),
    "4D image": (lambda f, o: _register(f, o, **{"--moving": f["image4d"]}), "several volumes"),
    "2D vs 3D": (lambda f, o: _register(f, o, **{"--moving": f["image2d"]}), "mix 2D and 3D"),
    "NaN image": (lambda f, o: _register(f, o, **{"--moving": f["nan"]}), "NaN/inf voxels"),
    "empty labels": (lambda f, o: _register(f, o, **{"--moving-labels": f["empty_labels"]}), "is empty"),
    "non-integer labels": (lambda f, o: _register(f, o, **{"--moving-labels": f["float_labels"]}), "non-integer"),
    "label shape": (lambda f, o: _register(f, o, **{"--moving-labels": f["small_labels"]}), "has shape (8, 8, 8)"),
    "fixed labels alone": (lambda f, o: _register(f, o, **{"--fixed-labels": f["labels"]}), "needs --moving-labels"),
    "out dir is a file": (lambda f, o: _register(f, f["afile"] / "sub"), "cannot create output folder"),
    "negative refine": (lambda f, o: _register(f, o, **{"--refine": "-3"}), "argument --refine"),
    "refine not a number": (lambda f, o: _register(f, o, **{"--refine": "lots"}), "'lots'"),
    "bad refine lr": (lambda f, o: _register(f, o, **{"--refine-lr": "0"}), "argument --refine-lr"),
    "unknown device": (lambda f, o: _register(f, o, **{"--device": "tpu"}), "--device 'tpu'"),
    "missing weights": (lambda f, o: _register(f, o, **{"--weights": o.parent / "none.pt"}), "do not exist"),
    "unsafe weights": (lambda f, o: _register(f, o, **{"--weights": f["pickle"]}), "safe to load"),
    "missing bundle": (lambda f, o: _register(f, o, **{"--bundle": o.parent / "nb"}), "is not a folder"),
    "missing argument": (lambda f, o: ["register", "--fixed", str(f["image"])], "required"),
    "unknown command": (lambda f, o: ["align"], "invalid choice"),
    "field components": (lambda f, o: _warp(f, o), "field"),
    "bad interp": (lambda f, o: _warp(f, o, **{"--interp": "cubic"}), "argument --interp"),
    "output is the input": (
        lambda f, o: (
            [
                *_warp(f, o, **{"--moving": f["image2d"], "--reference": f["image2d"], "--out": f["image2d"]}),
                "--overwrite",
            ]
        ),
        "is one of the inputs",
    ),
    "missing pairs": (lambda f, o: ["evaluate", "--pairs", o / "pairs.csv", "--out-dir", o], "does not exist"),
}
if not torch.cuda.is_available():
    CASES["no GPU"] = (lambda f, o: _register(f, o, **{"--device": "cuda"}), "CUDA is not available")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, files, cli, tmp_path):
    build, expected = CASES[case]
    out = tmp_path / "out"
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    code, _, stderr = cli(*build(files, out))
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("monai-vmorph: error: "), stderr
    assert expected in lines[0]
    assert "Traceback" not in stderr
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # no input touched, no output or temporary file left
    assert not out.exists() or not any(out.iterdir())


def test_existing_outputs_are_kept_without_overwrite(files, cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "warped.nii.gz").write_text("keep me")
    code, _, stderr = cli(*_register(files, out))
    assert code == 2 and "warped.nii.gz exists; pass --overwrite" in stderr
    assert (out / "warped.nii.gz").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["warped.nii.gz"]


def test_console_entry_points_fail_without_traceback(tmp_path):
    for command in (["monai-vmorph"], [sys.executable, "-m", "monai_vmorph"]):
        result = subprocess.run(
            [
                *command,
                "warp",
                "--field",
                "f.nii.gz",
                "--moving",
                "m.nii.gz",
                "--reference",
                "r.nii.gz",
                "--out",
                str(tmp_path / "o.nii.gz"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 2
        assert result.stderr.strip() == "monai-vmorph: error: --reference r.nii.gz does not exist; check the path"
