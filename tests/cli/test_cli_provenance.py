"""``register`` and ``evaluate`` record the provenance (:mod:`monai_vmorph.pipeline.provenance`) of their results."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BRAIN_2D = ROOT / "data" / "brain_2d"


@pytest.mark.slow
def test_register_and_evaluate_write_the_provenance_of_the_weights_they_used(cli, weights_2d, tmp_path):
    fixed = BRAIN_2D / "imagesTr" / "colin27_z+0_0000.nii.gz"
    moving = BRAIN_2D / "imagesTr" / "icbm09a_z+10_0000.nii.gz"
    out = tmp_path / "out"
    code, _, err = cli("register", "--fixed", fixed, "--moving", moving, "--out-dir", out, "--weights", weights_2d)
    assert code == 0, err
    record = json.loads((out / "metrics.json").read_text())["provenance"]
    digest = subprocess.run(["sha256sum", str(weights_2d)], capture_output=True, text=True, check=True).stdout[:64]
    assert record["weights_sha256"] == digest and record["threads"] == torch.get_num_threads()

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"fixed,moving\n{fixed},{moving}\n{moving},{fixed}\n")
    code, _, err = cli("evaluate", "--pairs", pairs, "--out-dir", tmp_path / "ev", "--weights", weights_2d, "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["provenance"] == [record]  # one machine, one setting: one record
