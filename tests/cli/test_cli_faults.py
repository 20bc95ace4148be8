"""``monai-vmorph register`` under faults: a full disk is one line and no output; two runs into one folder never
mix their results."""

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = {2: ROOT / "data" / "brain_2d", 3: ROOT / "data" / "brain_3d"}
SCANS = {
    2: ("icbm09a_z+0_0000", "colin27_z+0_0000", "icbm09c_z+0_0000"),
    3: ("icbm09a_0000", "colin27_0000", "icbm09c_0000"),
}


def _register(ndim, out, weights, moving=1, labels=True):
    fixed_name, moving_name = SCANS[ndim][0], SCANS[ndim][moving]
    args = [sys.executable, "-m", "monai_vmorph", "register", "--quiet", "--weights", str(weights)]
    args += ["--fixed", str(DATA[ndim] / "imagesTr" / f"{fixed_name}.nii.gz")]
    args += ["--moving", str(DATA[ndim] / "imagesTr" / f"{moving_name}.nii.gz"), "--out-dir", str(out)]
    if labels:
        args += ["--moving-labels", str(DATA[ndim] / "labelsTr" / f"{moving_name}.nii.gz")]
    return args


def _limited(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("ndim", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_register_on_a_full_disk_is_one_line_and_leaves_no_output(ndim, tmp_path, request):
    """Every file the command writes is cut at 4 kB (``ulimit -f``): exit 2, one line naming the file, no folder."""
    weights = request.getfixturevalue(f"weights_{ndim}d")
    out = tmp_path / "out"
    result = subprocess.run(
        _register(ndim, out, weights), capture_output=True, text=True, timeout=900, cwd=ROOT, preexec_fn=_limited(4096)
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"monai-vmorph: error: file size limit exceeded (ulimit -f) writing warped.nii.gz in {out}; free some space "
        "or choose another output folder"
    ]
    assert not out.exists()


@pytest.mark.slow
def test_two_register_runs_into_one_folder_exactly_one_succeeds_with_all_of_its_outputs(weights_2d, tmp_path):
    """Run A registers colin27 with its labels, run B icbm09c without labels, started together into one folder."""
    out = tmp_path / "out"
    commands = [_register(2, out, weights_2d, moving=1), _register(2, out, weights_2d, moving=2, labels=False)]
    runs = []
    for command in commands:
        runs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT))
        time.sleep(0.3)
    results = [(run.wait(timeout=900), *run.communicate()) for run in runs]
    codes = [code for code, _, _ in results]
    assert sorted(codes) == [0, 2], [err[-1500:] for _, _, err in results]
    winner = codes.index(0)
    loser_err = results[1 - winner][2].splitlines()
    assert len(loser_err) == 1 and loser_err[0].startswith("monai-vmorph: error: ")
    assert "is in use by another run (pid " in loser_err[0] or "exists; pass --overwrite" in loser_err[0]
    metrics = json.loads((out / "metrics.json").read_text())
    moving_name = SCANS[2][1 + winner]
    assert Path(metrics["moving"]).name == f"{moving_name}.nii.gz"
    expected = ["affine.txt", "ddf.nii.gz", "metrics.json", "warped.nii.gz"] + (
        ["warped_labels.nii.gz"] if winner == 0 else []
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # no lock file, no temporary, nothing of B
    warped = np.asarray(nib.load(out / "warped.nii.gz").dataobj)
    assert np.isfinite(warped).all() and warped.std() > 0
