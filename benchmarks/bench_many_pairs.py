"""Pairs per minute: one ``monai-vmorph evaluate`` over a pair list against a shell loop of ``monai-vmorph register``.

Both run the installed command as a user would, in fresh processes, on the same pairs of the embedded 3D brains
(every ordered pair of ``data/brain_3d``'s subjects, repeated to ``--pairs``), with the same preset. The loop pays
the start-up (imports, model load) once per pair; ``evaluate`` pays it once. Wall-clock time of the whole command,
so the numbers are what a cohort costs; the rows run in turn, ``--rounds`` times, and the median is reported.

    python benchmarks/bench_many_pairs.py --pairs 12            # the BENCHMARKS.md row (default preset)
    python benchmarks/bench_many_pairs.py --pairs 2 --fast      # smoke run
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRAIN_3D = ROOT / "data" / "brain_3d"


def _pairs(count: int) -> list[tuple[Path, Path]]:
    subjects = sorted((BRAIN_3D / "imagesTr").glob("*_0000.nii.gz"))
    ordered = list(itertools.permutations(subjects, 2))
    return [ordered[i % len(ordered)] for i in range(count)]


def _command() -> list[str]:
    program = shutil.which("monai-vmorph")
    return [program] if program else [sys.executable, "-m", "monai_vmorph"]


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed: {result.stderr.strip().splitlines()[-1:]}")


def _loop(pairs, work: Path, options: list[str]) -> float:
    start = time.perf_counter()
    for n, (moving, fixed) in enumerate(pairs):
        _run([*_command(), "register", "--fixed", str(fixed), "--moving", str(moving), "--out-dir",
              str(work / f"pair{n}"), "--quiet", *options])  # fmt: skip
    return time.perf_counter() - start


def _evaluate(pairs, work: Path, options: list[str]) -> float:
    table = work / "pairs.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["moving", "fixed", "moving_name", "fixed_name"])
        for n, (moving, fixed) in enumerate(pairs):
            writer.writerow([moving, fixed, f"p{n}_{moving.name[:-7]}", fixed.name[:-7]])
    start = time.perf_counter()
    _run([*_command(), "evaluate", "--pairs", str(table), "--out-dir", str(work / "eval"), "--quiet", *options])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12, help="number of pairs (default 12)")
    parser.add_argument("--rounds", type=int, default=1, help="repetitions of each row (median reported)")
    parser.add_argument("--fast", action="store_true", help="the network alone (register --fast)")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.rounds < 1:
        parser.error("--pairs and --rounds must be >= 1")
    pairs = _pairs(args.pairs)
    options = ["--fast"] if args.fast else []
    times: dict[str, list[float]] = {"register loop": [], "evaluate": []}
    for _ in range(args.rounds):
        for name, function in (("register loop", _loop), ("evaluate", _evaluate)):
            with tempfile.TemporaryDirectory() as work:
                times[name].append(function(pairs, Path(work), options))
    print(f"# {len(pairs)} pairs of data/brain_3d, preset {'fast' if args.fast else 'default'}, "
          f"{os.cpu_count()} CPUs, median of {args.rounds}")  # fmt: skip
    print("| method | seconds | seconds / pair | pairs / minute | vs loop |")
    print("|---|---:|---:|---:|---:|")
    loop = statistics.median(times["register loop"])
    for name, values in times.items():
        seconds = statistics.median(values)
        print(f"| {name} | {seconds:.1f} | {seconds / len(pairs):.2f} | {60 * len(pairs) / seconds:.1f} | "
              f"{loop / seconds:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
