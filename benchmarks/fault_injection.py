"""Kill a small, deterministic bundle training at random moments; every rerun must resume, and the result must be
bit-identical to an uninterrupted run.

The run is the 2D bundle's README training command, shrunk (a 32x32 grid, an 8-64 feature UNet, 4 pairs per epoch,
no augmentation), on the embedded 2D brains, with the same command line every time:

1. a reference run trains without interruption (in ``<work>/reference``);
2. the same training in ``<work>/interrupted`` is started again and again and stopped at random moments, ``--kills``
   times: mostly while it trains (a uniform delay after the trainer's start, up to ``--window`` epochs), sometimes
   while it starts up; by ``SIGKILL`` (most), ``SIGTERM`` or ``SIGINT`` (Ctrl-C, which must end with the one-line
   "interrupted at epoch ..." message and exit status 130);
3. a last run finishes it.

Checked: no run fails (exit status 0, or the signal's); every run that got to the trainer resumed from the epoch its
``last.pt`` held when it started; ``last.pt`` is always readable; no temporary file or lock is left at the end; the
final ``last.pt`` (network, optimizer, trainer state) and ``model.pt`` equal the reference's exactly.

    python benchmarks/fault_injection.py --kills 20 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "voxelmorph_brain_2d"
STARTED = re.compile(r"Engine run (starting with|resuming from)")  # ignite's first line of the trainer's run
SIGNALS = [(signal.SIGKILL, 0.6), (signal.SIGTERM, 0.2), (signal.SIGINT, 0.2)]


def _command(run_dir: Path, max_epochs: int) -> list[str]:
    configs = BUNDLE / "configs"
    settings = {
        "bundle_root": str(BUNDLE),
        "run_dir": str(run_dir),
        "spatial_size": [32, 32],
        "features": [8, 16, 32, 64],
        "batch_size": 2,
        "pairs_per_epoch": 4,
        "max_epochs": max_epochs,
        "val_interval": 4,
        "augment_prob": 0,
    }
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", str(configs / "metadata.json")]
    args += ["--config_file", str(configs / "train.json")]
    for key, value in settings.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return args


def _env() -> dict[str, str]:
    # one thread: CPU results are then bit-reproducible across processes, and the runs share a busy machine well
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _saved_epoch(models: Path) -> int:
    last = models / "last.pt"
    if not last.exists():
        return 0
    state = torch.load(last, map_location="cpu", weights_only=True)  # raises if a kill left it unreadable
    return int(state["trainer"]["iteration"]) // int(state["trainer"]["epoch_length"])


class _Run:
    """One training process, its output in a log file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.stream = open(log, "w")
        self.start = time.time()
        self.proc = subprocess.Popen(args, stdout=self.stream, stderr=subprocess.STDOUT, cwd=ROOT, env=_env())

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, marker: re.Pattern, timeout: float) -> float | None:
        """Seconds since start when ``marker`` appeared in the log, or ``None`` (ended or timed out first)."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            if marker.search(self.text()):
                return time.time() - self.start
            time.sleep(0.02)
        return None

    def wait(self, timeout: float = 900) -> int:
        code = self.proc.wait(timeout=timeout)
        self.stream.close()
        return code


def _reference(work: Path, max_epochs: int) -> tuple[float, float]:
    """Train without interruption; returns (start-up seconds, seconds per epoch)."""
    run = _Run(_command(work / "reference", max_epochs), work / "reference.log")
    startup = run.wait_for(STARTED, 900)
    code = run.wait()
    if code != 0 or startup is None:
        raise SystemExit(f"the reference run failed (exit {code}); see {run.log}")
    per_epoch = (time.time() - run.start - startup) / max_epochs
    return startup, per_epoch


def _check_resumed(text: str, last: Path, epoch: int, max_epochs: int) -> bool:
    """The run continued from ``epoch``, the epoch its ``last.pt`` held when it started: its resume message (logged
    once the trainer started) names that epoch, and the first epoch it completed is the next one."""
    resumed = re.search(rf"resumed from {re.escape(str(last))} at epoch (\d+) of {max_epochs}", text)
    completed = re.search(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete", text)
    if epoch == 0:
        return resumed is None and (completed is None or int(completed.group(1)) == 1)
    if completed is not None and resumed is None:
        return False
    return (resumed is None or int(resumed.group(1)) == epoch) and (
        completed is None or int(completed.group(1)) == epoch + 1
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="how many times training is stopped (default 20)")
    parser.add_argument("--max-epochs", type=int, default=16, help="epochs of the training (default 16)")
    parser.add_argument("--window", type=float, default=1.5, help="kill within this many epochs of the start")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vxm_faults_"))
    shutil.rmtree(work / "reference", ignore_errors=True)
    shutil.rmtree(work / "interrupted", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    began = time.time()
    startup, per_epoch = _reference(work, args.max_epochs)
    print(f"reference run: start-up {startup:.1f} s, {per_epoch:.2f} s per epoch, {args.max_epochs} epochs")

    run_dir = work / "interrupted"
    models = run_dir / "models"
    command = _command(run_dir, args.max_epochs)
    problems: list[str] = []
    kills = {sig.name: 0 for sig, _ in SIGNALS}
    phases = {"start-up": 0, "training": 0}
    runs = resumed_checked = 0
    while True:
        final = sum(kills.values()) >= args.kills
        epoch = _saved_epoch(models)
        run = _Run(command, work / f"run{runs:03d}.log")
        runs += 1
        sig = None
        if not final:
            during_startup = rng.random() < 0.2
            sig = rng.choices([s for s, _ in SIGNALS], [w for _, w in SIGNALS])[0]
            if during_startup and sig != signal.SIGINT:  # Ctrl-C before the hook is installed prints Python's own
                time.sleep(rng.uniform(0, startup))
            else:
                during_startup = False
                if run.wait_for(STARTED, 900) is not None:
                    time.sleep(rng.uniform(0, args.window * per_epoch))
            if run.proc.poll() is None:
                run.proc.send_signal(sig)
                kills[sig.name] += 1
                phases["start-up" if during_startup else "training"] += 1
            else:
                sig = None  # it finished first
        code = run.wait()
        text = run.text()
        expected = {0} if sig is None else {-sig, 130} if sig == signal.SIGINT else {-sig}
        if code not in expected:
            problems.append(f"{run.log.name}: exit {code}, expected {sorted(expected)}")
        if sig == signal.SIGINT and code == 130:
            if not re.search(r"^interrupted at epoch \d+ \(.*\); run the same command to resume$", text, re.M):
                problems.append(f"{run.log.name}: Ctrl-C without the one-line 'interrupted at epoch' message")
            if "Traceback" in text:
                problems.append(f"{run.log.name}: Ctrl-C printed a traceback")
        if "resumed from" in text or re.search(r"SupervisedTrainer - INFO - Epoch\[", text):
            resumed_checked += 1
        if not _check_resumed(text, models / "last.pt", epoch, args.max_epochs):
            problems.append(f"{run.log.name}: did not resume from epoch {epoch}")
        try:
            _saved_epoch(models)
        except Exception as error:
            problems.append(f"{run.log.name}: last.pt unreadable after the run ({error})")
        if final:
            break
        if code == 0:  # the training finished before the kill: nothing left to interrupt
            problems.append(f"{run.log.name}: training finished before {args.kills} kills; raise --max-epochs")
            break

    leftovers = sorted(p.name for p in models.iterdir() if p.name.startswith("."))
    if leftovers:
        problems.append(f"files left in {models}: {leftovers}")
    ours = torch.load(models / "last.pt", weights_only=True)
    reference = torch.load(work / "reference" / "models" / "last.pt", weights_only=True)
    same_network = all(torch.equal(v, reference["network"][k]) for k, v in ours["network"].items())
    same_optimizer = all(
        torch.equal(a, reference["optimizer"]["state"][i][key])
        for i, state in ours["optimizer"]["state"].items()
        for key, a in state.items()
    )
    same_trainer = ours["trainer"] == reference["trainer"]
    best = torch.load(models / "model.pt", weights_only=True)
    best_ref = torch.load(work / "reference" / "models" / "model.pt", weights_only=True)
    same_best = all(torch.equal(v, best_ref[k]) for k, v in best.items())
    for what, same in (("network", same_network), ("optimizer state", same_optimizer)):
        if not same:
            problems.append(f"final {what} differs from the uninterrupted run's")
    if not same_trainer:
        problems.append(f"final trainer state {ours['trainer']} differs from {reference['trainer']}")
    if not same_best:
        problems.append("model.pt differs from the uninterrupted run's")

    print("| kills | SIGKILL | SIGTERM | SIGINT | during training | during start-up | runs | resumes checked |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {sum(kills.values())} | {kills['SIGKILL']} | {kills['SIGTERM']} | {kills['SIGINT']} | "
        f"{phases['training']} | {phases['start-up']} | {runs} | {resumed_checked} |"
    )
    print(
        f"final weights, optimizer and trainer state equal to the uninterrupted run's: "
        f"{same_network and same_optimizer and same_trainer and same_best}; wall time {time.time() - began:.0f} s"
    )
    for problem in problems:
        print(f"FAIL: {problem}")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
