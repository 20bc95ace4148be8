"""The FLOP counts behind bench_networks' floor columns (hand-derived), its precision rows, bench_gpu's quick run and
bench_accuracy's precision comparison."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_networks import count_conv_flops, count_executed_conv_flops  # noqa: E402

from monai_vmorph.networks import VoxelMorph  # noqa: E402


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


def test_executed_flops_of_our_decoder_by_hand():
    """Ours executes each decoder convolution of an upsampled tensor as 4 (2D) 2x2 convolutions of the low-resolution
    tensor padded by one (``upsample_conv``): per level with a low-resolution n x n, 32 -> 32 channels, the layer's
    2 * (2n)^2 * 32 * 32 * 9 multiply-adds x 2 become 2 * (n + 1)^2 * 32 * (4 * 32) * 4."""
    net = VoxelMorph(2, precision="fp32", integration_steps=0)
    moving, fixed = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    layers, _ = count_conv_flops(net, moving, fixed)
    executed = count_executed_conv_flops(net, moving, fixed)
    saved = sum(2 * (2 * n) ** 2 * 32 * 32 * 9 - 2 * (n + 1) ** 2 * 32 * 128 * 4 for n in (2, 4, 8, 16))
    assert executed == layers - saved
    monai = count_executed_conv_flops(_TwoConvs(), torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))
    assert monai == 319488  # a network that runs its layers as written: the layer-shape count


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
    assert rows[0][-6:] == [
        "conv GFLOP (forward)",
        "train / floor",
        "inference / floor",
        "executed conv GFLOP",
        "train / executed floor",
        "inference / executed floor",
    ]
    names = [row[0] for row in rows[1:]]
    auto = "auto=bf16" if "auto=bf16" in result.stdout else "auto=fp32"
    assert names[:2] == ["monai VoxelMorph (matched) [fp32]", f"monai VoxelMorph (matched) [{auto}]"]
    by_name = {row[0]: row for row in rows[1:]}
    ours, monai = by_name["ours (matched) [fp32]"], by_name["monai VoxelMorph (matched) [fp32]"]
    # same convolutions: MONAI's and ours count the same forward FLOPs (32x32 input, batch 1)
    assert float(ours[8]) == float(monai[8]) > 0
    assert float(monai[11]) == float(monai[8]) and float(ours[11]) <= float(ours[8])
    assert float(ours[12]) >= 0.5 and float(ours[13]) >= 0.5  # nothing runs much faster than the measured peak
    assert "# rates (GFLOP/s, best of the run): float32: gemm" in result.stdout


@pytest.mark.slow
def test_bench_gpu_quick_runs_on_cpu():
    result = _run("bench_gpu.py", "--quick", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    names = [row[0] for row in _rows(result.stdout)[1:]]
    assert names[0] == "monai VoxelMorph (default) [fp32]" and "ours (default) [fp32]" in names
    assert "no GPU: only checks the script" in result.stdout
