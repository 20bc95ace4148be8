"""The FLOP count behind bench_networks' floor columns (hand-derived), its precision rows, bench_gpu's quick run and
bench_accuracy's precision comparison."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_networks import count_conv_flops  # noqa: E402


class _TwoConvs(nn.Module):
    """conv 2->4 (3^3, padding 1) at 8^3, then a transposed conv 4->3 (2^3, stride 2) to 16^3."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.up = nn.ConvTranspose3d(4, 3, 2, stride=2)

    def forward(self, moving, fixed):
        y = self.up(self.conv(torch.cat([moving, fixed], 1)))
        return y, y


def test_conv_flops_are_counted_from_the_layer_shapes():
    net = _TwoConvs()
    flops, (module, shape) = count_conv_flops(net, torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))
    conv = 2 * (4 * 8**3) * 2 * 27  # 2 x output elements x input channels x kernel volume
    up = 2 * (4 * 8**3) * 3 * 8  # transposed: 2 x input elements x output channels x kernel volume
    assert flops == conv + up == 319488
    assert module is net.conv and tuple(shape) == (1, 2, 8, 8, 8)  # the heaviest call, to time it alone


def _run(script, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True, timeout=900
    )


def _rows(stdout):
    return [[c.strip() for c in line.split("|")[1:-1]] for line in stdout.splitlines() if line.startswith("| ")]


@pytest.mark.slow
def test_bench_networks_rows_per_precision_with_the_flop_floor():
    result = _run(
        "bench_networks.py", "--size", "32", "32", "--rounds", "1", "--no-memory", "--precision", "fp32", "auto"
    )
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows[0][-3:] == ["conv GFLOP (forward)", "train / floor", "inference / floor"]
    names = [row[0] for row in rows[1:]]
    auto = "auto=bf16" if "auto=bf16" in result.stdout else "auto=fp32"
    assert names[:2] == ["monai VoxelMorph (matched) [fp32]", f"monai VoxelMorph (matched) [{auto}]"]
    by_name = {row[0]: row for row in rows[1:]}
    ours, monai = by_name["ours (matched) [fp32]"], by_name["monai VoxelMorph (matched) [fp32]"]
    # same convolutions: MONAI's and ours count the same forward FLOPs (32x32 input, batch 1)
    assert float(ours[8]) == float(monai[8]) > 0
    assert float(ours[9]) >= 0.5 and float(ours[10]) >= 0.5  # nothing runs much faster than the measured peak
    assert "# rates (GFLOP/s, best of the run): float32: gemm" in result.stdout


@pytest.mark.slow
def test_bench_gpu_quick_runs_on_cpu():
    result = _run("bench_gpu.py", "--quick", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    names = [row[0] for row in _rows(result.stdout)[1:]]
    assert names[0] == "monai VoxelMorph (default) [fp32]" and "ours (default) [fp32]" in names
    assert "no GPU: only checks the script" in result.stdout
