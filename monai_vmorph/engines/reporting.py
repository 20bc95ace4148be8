"""Progress reports of the bundles' workflows, as a command-line tool gives them.

* :class:`TrainingReporter` (trainer): one line at start with device, AMP/precision, data size and epochs; a
  warning with the quick CPU variant when the GPU defaults run on a CPU; one summary line per epoch (mean loss,
  epoch time, ETA to ``max_epochs``).
* :class:`PairProgressReporter` (evaluator): one line per pair and a closing summary of the metrics and of the files
  written where (inference, evaluation).

Only rank 0 reports in a distributed run. Lines go to the ``monai_vmorph.engines.reporting`` logger, which the
bundles' ``logging.conf`` prints.
"""

from __future__ import annotations

import datetime
import importlib
import logging
import math
import os
import time
from collections.abc import Callable, Sized
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from monai_vmorph.data.keys import FIXED_NAME, MOVING_LABEL, MOVING_NAME
from monai_vmorph.engines.checkpoint import unwrap_module

__all__ = ["PairProgressReporter", "TrainingReporter", "format_duration", "precision_summary"]

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``: a duration for people."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def precision_summary(engine: Engine) -> str:
    """``"AMP on"``/``"AMP off"`` from a MONAI workflow's ``amp``, plus the network's ``precision`` if it has one
    (resolved for the workflow's device where :mod:`monai_vmorph.precision` can), e.g. ``"AMP off, precision auto
    (torch.float32)"``."""
    text = f"AMP {'on' if getattr(engine, 'amp', False) else 'off'}"
    precision = getattr(unwrap_module(getattr(engine, "network", None)), "precision", None)
    if isinstance(precision, str):
        text += f", precision {precision}"
        try:
            resolve = importlib.import_module("monai_vmorph.precision").resolve_precision
            text += f" ({resolve(precision, _device(engine))})"
        except (ImportError, AttributeError, ValueError, TypeError):
            pass
    return text


def _device(engine: Engine) -> torch.device:
    device = getattr(engine.state, "device", None) or getattr(engine, "device", None) or "cpu"
    return torch.device(device)


def _is_reporting_rank() -> bool:
    return idist.get_rank() == 0


class TrainingReporter:
    """Start line, CPU warning and per-epoch summaries of a training run (attach after the checkpoint handler, so
    the start line sees a resumed epoch).

    Example lines::

        training on cpu (AMP off, precision auto (torch.float32)): 64 training pairs per epoch in 8 iterations,
            10 validation pairs every 5 epochs, epochs 1-100
        epoch 3/100: mean loss 0.1234 (8 iterations), 41.2 s; ETA 1 h 07 min for 97 epochs (about 18:45 UTC)

    Args:
        val_pairs: the validation dataset (or any sized collection of pairs), for the start line.
        val_interval: validation every this many epochs, for the start line.
        cpu_max_epochs: on a CPU, warn when ``max_epochs`` exceeds this (the quick CPU variant's epochs); ``None``
            never warns.
        cpu_hint: the options of the quick CPU variant, quoted in the warning.
        output_transform: the iteration's loss from ``engine.state.output`` (default: its ``"loss"``, from the first
            item of a decollated batch); a one-element tuple is unpacked.
    """

    def __init__(
        self,
        val_pairs: Sized | None = None,
        val_interval: int | None = None,
        cpu_max_epochs: int | None = None,
        cpu_hint: str | None = None,
        output_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.val_pairs = val_pairs
        self.val_interval = val_interval
        self.cpu_max_epochs = cpu_max_epochs
        self.cpu_hint = cpu_hint
        self.output_transform = output_transform or from_engine(["loss"], first=True)
        self._run_start = 0.0
        self._start_epoch = 0
        self._epoch_start = 0.0
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def start_message(self, engine: Engine) -> str:
        """The start line: device, AMP/precision, training and validation pairs, epochs."""
        state = engine.state
        loader = state.dataloader
        dataset = getattr(loader, "dataset", None)
        parts = [f"training on {_device(engine)} ({precision_summary(engine)})"]
        iterations = f"{state.epoch_length} iterations" if state.epoch_length else "an unknown number of iterations"
        if isinstance(dataset, Sized):
            batch = getattr(loader, "batch_size", None)
            per_batch = f" of batch {batch}" if batch else ""
            parts.append(f"{len(dataset)} training pairs per epoch in {iterations}{per_batch}")
        else:
            parts.append(f"{iterations} per epoch")
        if self.val_pairs is not None:
            every = f" every {self.val_interval} epochs" if self.val_interval else ""
            parts.append(f"{len(self.val_pairs)} validation pairs{every}")
        epochs = f"epochs {state.epoch + 1}-{state.max_epochs}"
        if state.epoch:
            epochs += f" (resumed after epoch {state.epoch})"
        parts.append(epochs)
        return ": ".join(parts[:2]) + (", " + ", ".join(parts[2:]) if len(parts) > 2 else "")

    def cpu_warning(self, engine: Engine) -> str | None:
        """The warning for GPU-sized settings on a CPU, or ``None``."""
        max_epochs = engine.state.max_epochs or 0
        if _device(engine).type != "cpu" or self.cpu_max_epochs is None or max_epochs <= self.cpu_max_epochs:
            return None
        hint = f"; the quick CPU variant adds {self.cpu_hint}" if self.cpu_hint else ""
        return (
            f"training on the CPU with the GPU defaults ({max_epochs} epochs) takes hours (the first epoch's "
            f"summary gives an estimate){hint} (see the bundle's docs/README.md)"
        )

    def started(self, engine: Engine) -> None:
        self._run_start = time.perf_counter()
        self._start_epoch = engine.state.epoch
        if not _is_reporting_rank():
            return
        logger.info(self.start_message(engine))
        warning = self.cpu_warning(engine)
        if warning:
            logger.warning(warning)

    def epoch_started(self, engine: Engine) -> None:
        self._epoch_start = time.perf_counter()
        self._losses = []

    def iteration_completed(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output)
        if isinstance(loss, (tuple, list)) and len(loss) == 1:
            loss = loss[0]
        if loss is not None:
            self._losses.append(float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss))

    def epoch_message(self, engine: Engine, now: float | None = None) -> str:
        """The summary line of the epoch that just completed."""
        now = time.perf_counter() if now is None else now
        state = engine.state
        mean = sum(self._losses) / len(self._losses) if self._losses else math.nan
        line = (
            f"epoch {state.epoch}/{state.max_epochs}: mean loss {mean:.4f} ({len(self._losses)} iterations), "
            f"{format_duration(now - self._epoch_start)}"
        )
        done = state.epoch - self._start_epoch
        left = (state.max_epochs or state.epoch) - state.epoch
        if left > 0 and done > 0:
            eta = (now - self._run_start) / done * left
            finish = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=eta)
            plural = "s" if left > 1 else ""
            line += f"; ETA {format_duration(eta)} for {left} epoch{plural} (about {finish:%H:%M} UTC)"
        return line

    def epoch_completed(self, engine: Engine) -> None:
        if _is_reporting_rank():
            logger.info(self.epoch_message(engine))


class PairProgressReporter:
    """One line per registered pair and a closing summary, for the inference and evaluation workflows.

    Each line names the pair(s) of the iteration, its position and time, and the files written for it in
    ``output_dir``; the summary gives the number of pairs, the total time, the scalar metrics of the run (if any)
    and every file written to ``output_dir`` during the run.

    Args:
        output_dir: folder the workflow writes to (``None``: no file report).
        action: the verb of the lines (``"registered"``, ``"evaluated"``).
    """

    def __init__(self, output_dir: str | os.PathLike | None = None, action: str = "registered") -> None:
        self.output_dir = Path(output_dir).resolve() if output_dir is not None else None
        self.action = action
        self._start = 0.0
        self._wall_start = 0.0
        self._iteration_start = 0.0
        self._pairs = 0
        self._labelled = 0
        self._stems: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        self._wall_start = time.time()
        self._pairs = self._labelled = 0
        self._stems = []

    def iteration_started(self, engine: Engine) -> None:
        self._iteration_start = time.perf_counter()

    def _written(self, prefix: str = "") -> list[Path]:
        """Files in ``output_dir`` starting with ``prefix`` and modified since the run started."""
        if self.output_dir is None or not self.output_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.output_dir.iterdir()
            if p.is_file() and p.name.startswith(prefix) and not p.name.startswith(".")
            if p.stat().st_mtime >= self._wall_start - 1.0
        )

    def iteration_completed(self, engine: Engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, dict) else {}
        moving, fixed = batch.get(MOVING_NAME) or [], batch.get(FIXED_NAME) or []
        stems = [f"{m}_to_{f}" for m, f in zip(moving, fixed, strict=False)] or [f"batch {engine.state.iteration}"]
        self._pairs += len(stems)
        self._stems += stems
        self._labelled += len(stems) if batch.get(MOVING_LABEL) is not None else 0
        if not _is_reporting_rank():
            return
        seconds = time.perf_counter() - self._iteration_start
        total = engine.state.epoch_length
        for stem in stems:
            files = [p.name for p in self._written(f"{stem}_")]
            wrote = f": {', '.join(files)}" if files else ""
            logger.info(f"pair {self._pairs}/{total or '?'} {self.action} ({format_duration(seconds)}) {stem}{wrote}")

    def summary(self, engine: Engine) -> str:
        """The closing summary."""
        line = f"{self.action} {self._pairs} pairs in {format_duration(time.perf_counter() - self._start)}"
        if self._labelled:
            line += f" ({self._labelled} with labels)"
        metrics = {k: v for k, v in engine.state.metrics.items() if isinstance(v, (int, float))}
        if metrics:
            line += "; " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        files = self._written()
        if self.output_dir is not None:
            line += f"; wrote {len(files)} files to {self.output_dir}"
            kinds, others = set(), []
            for path in files:
                stem = next((s for s in self._stems if path.name.startswith(f"{s}_")), None)
                if stem is None:
                    others.append(path.name)
                else:
                    kinds.add(path.name[len(stem) + 1 :])
            listed = [f"*_{kind}" for kind in sorted(kinds)] + others
            if listed:
                line += f" ({', '.join(listed)})"
        return line

    def completed(self, engine: Engine) -> None:
        if _is_reporting_rank():
            logger.info(self.summary(engine))
