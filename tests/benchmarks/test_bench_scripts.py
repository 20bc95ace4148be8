"""Smoke tests: each benchmark script runs on a tiny size and prints its table."""

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _voxelmorph_version():
    try:
        return metadata.version("voxelmorph")
    except metadata.PackageNotFoundError:
        return None


def test_bench_step_prints_a_table_with_ratios():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--size", "16", "16", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| model | params")
    assert len(rows) == 6
    assert rows[1].split("|")[4].strip() == "1.00"  # MONAI is the reference row


def test_bench_step_rejects_a_bad_size():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--size", "16"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "--size takes 2 or 3 ints" in result.stderr
    assert "Traceback" not in result.stderr


def _bench(script, *args, env=None):
    """Run ``benchmarks/<script>.py`` with ``args``; the completed process (output captured, not checked)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _bench_networks(*args, env=None):
    return _bench("bench_networks", *args, env=env)


def _table_rows(stdout):
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in stdout.splitlines() if line.startswith("| ")]


def _without_voxelmorph(tmp_path):
    """An environment in which ``import voxelmorph`` fails, whether or not the package is installed."""
    (tmp_path / "voxelmorph").mkdir()
    (tmp_path / "voxelmorph" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}


@pytest.mark.slow
def test_bench_networks_prints_matched_rows_with_memory(tmp_path):
    result = _bench_networks("--size", "32", "32", "--rounds", "1", env=_without_voxelmorph(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = _table_rows(result.stdout)
    assert rows[0][:2] == ["model", "params"] and "peak train memory (MiB)" in rows[0]
    names = [row[0] for row in rows[1:]]
    assert names == [
        "monai VoxelMorph (matched)",
        "voxelmorph VxmDense",
        "ours (matched)",
        "ours, channels_last",
        "ours, half_res UNet",
        "ours, half_res UNet, channels_last",
    ]
    monai, vxm, ours = rows[1], rows[2], rows[3]
    assert monai[3] == monai[5] == monai[7] == "1.00"  # MONAI is the reference of every ratio
    assert monai[1] == ours[1]  # same architecture, same parameter count
    assert float(ours[6]) > 0  # peak memory was measured
    assert vxm[1] == "not installed"
    assert "voxelmorph row: not installed" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(_voxelmorph_version() != "0.2", reason="needs the bench extra (voxelmorph 0.2)")
def test_bench_networks_runs_the_official_voxelmorph():
    result = _bench_networks("--size", "32", "32", "--rounds", "1", "--no-memory")
    assert result.returncode == 0, result.stderr
    rows = {row[0]: row for row in _table_rows(result.stdout)}
    assert rows["voxelmorph VxmDense"][1] == rows["monai VoxelMorph (matched)"][1] == "109,170"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "16"], "--size takes 2 or 3 ints"),
        (["--size", "24", "24"], "each a multiple of 16"),
        (["--sizes", "all", "--batch", "2"], "--batch goes with --size"),
    ],
)
def test_bench_networks_rejects_bad_arguments(args, message):
    result = _bench_networks(*args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_bench_networks_rejects_cuda_without_a_gpu():
    result = _bench_networks("--device", "cuda", "--size", "16", "16")
    assert result.returncode == 2 and "--device cuda needs a GPU" in result.stderr
    assert "Traceback" not in result.stderr


def _bench_accuracy(*args):
    return _bench("bench_accuracy", *args)


def _accuracy_tables(stdout):
    """``{task: {method: cells}}`` from bench_accuracy's ``## Task X`` tables."""
    tables, task = {}, None
    for line in stdout.splitlines():
        if line.startswith("## Task "):
            task = line.split()[2]
            tables[task] = {}
        elif task is not None and line.startswith("| ") and not line.startswith("| method"):
            cells = [cell.strip() for cell in line.split("|")[1:-1]]
            tables[task][cells[0]] = cells
    return tables


def _mean(cell):
    return float(cell.split(" ± ")[0])


def test_bench_accuracy_quick_scores_identity_and_demons():
    result = _bench_accuracy("--quick", "--tasks", "S", "I", "--methods", "identity", "sitk-demons")
    assert result.returncode == 0, result.stderr
    assert (
        "# command: python benchmarks/bench_accuracy.py --quick --tasks S I --methods identity sitk-demons"
        in result.stdout
    )
    tables = _accuracy_tables(result.stdout)
    assert set(tables) == {"S", "I"}
    assert all(list(rows) == ["identity", "sitk-demons"] for rows in tables.values())
    synthetic, inter = tables["S"], tables["I"]
    # Task I's quick pair is icbm09a <- colin27: its identity Dice is in data/README.md (mean 0.5401)
    assert _mean(inter["identity"][1]) == pytest.approx(0.540, abs=0.002)
    assert _mean(synthetic["identity"][1]) < 1
    assert _mean(synthetic["sitk-demons"][1]) > _mean(synthetic["identity"][1]) + 0.05
    assert _mean(synthetic["sitk-demons"][2]) < _mean(synthetic["identity"][2])  # endpoint error (mm)
    assert float(synthetic["identity"][3]) == 0  # no folding


def test_bench_accuracy_task_a_quick_scores_the_affine_stage():
    result = _bench_accuracy("--quick", "--tasks", "A", "--methods", "identity", "affine-only")
    assert result.returncode == 0, result.stderr
    tables = _accuracy_tables(result.stdout)
    assert list(tables) == ["A"] and list(tables["A"]) == ["identity", "affine-only"]
    assert "## Task A (affine + warp, not pre-aligned), 1 pair(s): icbm09a #0 (seed 0)" in result.stdout
    identity, affine = _mean(tables["A"]["identity"][1]), _mean(tables["A"]["affine-only"][1])
    # the moved copy of icbm09a (seed 0) overlaps its original badly; the affine stage restores most of it (the
    # mild warp on top is not affine): measured 0.267 -> 0.838
    assert identity == pytest.approx(0.267, abs=0.005)
    assert affine > 0.8
    assert float(tables["A"]["affine-only"][3]) == 0  # an affine map does not fold


def test_bench_accuracy_rejects_an_unknown_method():
    result = _bench_accuracy("--methods", "identity", "voxelmorph-tf")
    assert result.returncode == 2 and "--methods: unknown voxelmorph-tf" in result.stderr
    assert "Traceback" not in result.stderr


def _bench_budget(*args):
    return _bench("bench_budget", *args)


@pytest.mark.slow
def test_bench_budget_quick_trains_both_on_the_same_batches_and_scores_them():
    result = _bench_budget("--quick")
    assert result.returncode == 0, result.stderr
    rows = {row[0]: row for row in _table_rows(result.stdout)}
    assert list(rows) == ["model", "identity", "ours", "monai"]
    header = rows["model"]
    identity, ours, monai = (dict(zip(header, rows[name], strict=True)) for name in ("identity", "ours", "monai"))
    # the bundle's half-res model and bench_networks' matched MONAI build (327,331, as voxelmorph's vxm-2)
    assert ours["params"] == "313,507" and monai["params"] == "327,331"
    assert ours["steps"] == monai["steps"] == "1"
    # identity scores are bench_accuracy's: Task I's quick pair icbm09a <- colin27 has Dice 0.5401 (data/README.md)
    assert float(identity["Task I Dice"]) == pytest.approx(0.540, abs=0.002)
    assert float(identity["Task I folding (%)"]) == 0
    # one Adam step from a near-zero flow head cannot move labels much: both stay near the identity
    for row in (ours, monai):
        assert abs(float(row["Task I Dice"]) - float(identity["Task I Dice"])) < 0.01
    # both saw the same first batch: the progress line reports a loss for each
    assert "ours: 1 steps" in result.stderr and "monai: 1 steps" in result.stderr


def test_bench_budget_rejects_a_zero_budget():
    result = _bench_budget("--minutes", "0")
    assert result.returncode == 2 and "--minutes must be > 0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_bench_many_pairs_prints_both_rows():
    result = _bench("bench_many_pairs", "--pairs", "1", "--fast")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["method", "register loop", "evaluate"]
    assert float(rows[1].split("|")[-2].strip().rstrip("x")) == 1.0  # the loop against itself


def test_peak_memory_sees_an_allocation_inside_its_block_only():
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from peak_memory import PeakMemory

    with PeakMemory() as outside:
        pass
    with PeakMemory() as inside:
        block = np.ones(50_000_000)  # 0.4 GB, touched
        del block
    assert outside.gb < 0.05
    assert 0.38 < inside.gb < 0.5


@pytest.mark.slow
def test_bench_native_quick_prints_time_memory_and_folding():
    result = _bench("bench_native", "--quick")
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| default")]
    assert len(rows) == 1
    seconds, *stages = (float(cell) for cell in rows[0][1:6])
    assert sum(stages) <= seconds + 0.005 * (len(stages) + 1)  # the stages are parts of the call (cells: 0.01 s)
    assert rows[0][6].strip().count("x") == 2  # a 3D deformable grid
    assert 0 < float(rows[0][7]) < 2 and 0 < float(rows[0][8]) < 4  # estimate, peak (GB)
    assert float(rows[0][9]) <= 0.01  # folding (%)
