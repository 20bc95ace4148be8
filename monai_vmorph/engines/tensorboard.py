"""TensorBoard logs that continue cleanly when a training run is resumed.

MONAI's ``TensorBoardStatsHandler`` logs a trainer's iterations at ``engine.state.iteration`` and a validation at
the evaluator's ``state.epoch`` (set to the trainer's epoch by ``ValidationHandler``); the checkpoint restores both,
so a resumed run continues the step count. What the restored state cannot undo is what an interrupted run logged
after its last checkpoint (``last.pt`` is written at the end of an epoch): the iterations of the unfinished epoch.
Run again, those steps are logged a second time.

:class:`TensorBoardResumeMarker` closes the old logs at the restored step: TensorBoard's "restart" event (a
``SessionLog.START`` at step ``s``, what ``SummaryWriter(purge_step=s)`` writes) makes TensorBoard drop every event
of the log folder with a step ``>= s`` that it read before the marker. The marker gets a file of its own, named to
sort right after the newest event file that existed before this run, so TensorBoard reads it after all old events
and before any new one. (The validation of an epoch is logged just before its ``last.pt`` is written; a run
stopped between the two, a window of one checkpoint write, keeps that validation twice in TensorBoard; the
history CSV of :class:`~monai_vmorph.engines.MetricsHistory` keeps it once.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ignite.distributed as idist
from ignite.engine import Engine, Events
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.summary.writer.record_writer import RecordWriter

__all__ = ["TensorBoardResumeMarker", "event_files", "write_restart_marker"]


def event_files(log_dir: str | os.PathLike) -> list[Path]:
    """The TensorBoard event files directly in ``log_dir``, in the (name) order TensorBoard reads them."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        return []
    return sorted(p for p in log_dir.iterdir() if p.is_file() and "tfevents" in p.name)


def write_restart_marker(path: str | os.PathLike, step: int) -> Path:
    """Write an event file holding only TensorBoard's restart event at ``step`` (events read before it with a step
    ``>= step`` are dropped)."""
    path = Path(path)
    with open(path, "wb") as f:
        writer = RecordWriter(f)
        writer.write(Event(wall_time=time.time(), step=step, file_version="brain.Event:2").SerializeToString())
        restart = Event(wall_time=time.time(), step=step, session_log=SessionLog(status=SessionLog.START))
        writer.write(restart.SerializeToString())
        writer.flush()
    return path


class TensorBoardResumeMarker:
    """Drop, in TensorBoard, the steps an earlier run logged after the checkpoint this run starts from.

    List it in the trainer's handlers *before* the ``ValidationHandler`` and the ``TensorBoardStatsHandler`` (it
    notes the event files that exist when it is created, i.e. before this run's writers create theirs). It acts when
    the run's first epoch starts, after the checkpoint handler has restored the iteration ``i`` on ``STARTED``
    (``0`` for a fresh run), and writes a restart marker at step ``i + 1`` next to the newest old event file. Steps
    that are iterations and steps that are epochs share the folder safely: old validation epochs are ``<= i``.
    Only rank 0 writes; no old event file, no marker.

    Args:
        log_dir: the folder of the bundle's TensorBoard logs (``output_dir``).
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir = Path(log_dir)
        self.previous = event_files(self.log_dir) if idist.get_rank() == 0 else []
        self.marker: Path | None = None
        self._armed = False

    def attach(self, engine: Engine) -> None:
        # the first EPOCH_STARTED of the run: after every STARTED handler, so after the checkpoint's resume
        engine.add_event_handler(Events.STARTED, self._arm)
        engine.add_event_handler(Events.EPOCH_STARTED, self._first_epoch)

    def _arm(self, engine: Engine) -> None:
        self._armed = True

    def _first_epoch(self, engine: Engine) -> None:
        if self._armed:
            self._armed = False
            self(engine)

    def __call__(self, engine: Engine) -> None:
        """Write the marker at ``engine.state.iteration + 1`` (once per run)."""
        if not self.previous or idist.get_rank() != 0 or self.marker is not None:
            return
        newest = self.previous[-1]
        step = int(engine.state.iteration) + 1
        self.marker = write_restart_marker(newest.with_name(f"{newest.name}.resumed-at-{step}"), step)
