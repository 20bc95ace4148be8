"""Smoke tests: each benchmark script runs on a tiny size and prints its table."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
