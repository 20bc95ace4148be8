"""How a bundle run starts and ends: one line for a mistake or Ctrl-C, no ignored setting, one run per folder.

The bundles run inside MONAI's runner (``python -m monai.bundle run``: ``fire`` → ``create_workflow`` →
``ConfigWorkflow``). An exception that escapes it is printed by Python as a traceback of the config machinery, after
MONAI's ``StatsHandler`` and ignite have logged it twice more; MONAI also wraps an error raised while it evaluates
an expression or builds a component in ``RuntimeError(...) from error``. The bundles' first ``initialize``
expression is :func:`begin_bundle_run`, which

* installs a ``sys.excepthook`` that looks through the exception's chain
  (:func:`monai_vmorph.errors.find_user_error`): a :class:`~monai_vmorph.errors.UserError` prints
  ``error: <message>`` on stderr and exits with status 2 (the same message the ``monai-vmorph`` command prints);
  a ``KeyboardInterrupt`` prints its message (:class:`TrainingInterrupted` says where to resume) and exits
  with 130 (143 when training was stopped by SIGTERM); any other exception keeps Python's traceback;
* mutes the engines' own error logs of those two kinds (ignite's "terminating due to exception" lines and
  ``StatsHandler``'s tracebacks), so the one line is all the user sees;
* rejects a command-line setting that no config file of the run defines (``--learning_rat 0.1`` would otherwise be
  stored and never read), suggesting the closest known one;
* lets the process keep freed memory for reuse (:func:`monai_vmorph.runtime.keep_freed_memory`, as the
  ``monai-vmorph`` program does): a bundle run owns its process, and without it every new large activation is
  page-faulted afresh (the float32 training step of the paper network at 96×112×96 took 1.2× as long).

The configs' ``bundle_root`` is :func:`find_bundle_root`: the bundle folder of the config file the workflow reads, so
``--config_file configs/inference.json`` (in the bundle folder) and ``--config_file
bundles/voxelmorph_brain_3d/configs/inference.json`` (from the repository root) read and write the same files.

:func:`lock_run_folders` then takes the :class:`~monai_vmorph.io.locks.FolderLock` of every folder the run writes
into, after the settings and the data were checked (so a mistake writes nothing), and holds it to the end of the
process.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import sys
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from monai_vmorph.errors import UserError, find_user_error
from monai_vmorph.io.locks import FolderLock
from monai_vmorph.runtime import keep_freed_memory

__all__ = [
    "TrainingInterrupted",
    "begin_bundle_run",
    "check_overrides",
    "find_bundle_root",
    "install_error_hook",
    "lock_run_folders",
    "release_run_folders",
]

# loggers that report an engine's exception: MONAI's StatsHandler (its default name) and ignite's engines
_ENGINE_LOGGERS = (
    "monai.handlers.StatsHandler",
    "ignite.engine.engine.SupervisedTrainer",
    "ignite.engine.engine.SupervisedEvaluator",
    "ignite.engine.engine.Engine",
)
_RUN_LOCKS: list[FolderLock] = []


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during training; the message says which epoch was lost and how to resume.

    Attributes:
        exit_status: the process's exit status, ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, exit_status: int = 130) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def _find_interrupt(error: BaseException | None) -> KeyboardInterrupt | None:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ if error.__cause__ is not None else error.__context__
    return None


def _expected(error: BaseException | None) -> bool:
    """A user mistake or an interrupt: reported in one line, never as a traceback."""
    return find_user_error(error) is not None or _find_interrupt(error) is not None


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    user = find_user_error(error)
    if user is not None:
        print(f"error: {' '.join(str(user).split())}", file=sys.stderr, flush=True)
        sys.exit(2)
    interrupt = _find_interrupt(error)
    if interrupt is not None:
        print(str(interrupt) or "interrupted", file=sys.stderr, flush=True)
        sys.exit(getattr(interrupt, "exit_status", 130))
    sys.__excepthook__(kind, error, tb)


class _MuteExpected(logging.Filter):
    """Drops error records about a user mistake or an interrupt (the exception being handled when they are logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return not _expected(error)


_MUTE = _MuteExpected()


def install_error_hook() -> None:
    """Report user mistakes and interrupts that end the process in one line (see the module docstring)."""
    sys.excepthook = _excepthook
    for name in _ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        if _MUTE not in logger.filters:
            logger.addFilter(_MUTE)


def _runner_frame() -> FrameType | None:
    """The frame of MONAI's ``create_workflow`` that is building this workflow, if the runner is running."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "create_workflow" and frame.f_globals.get("__name__") == "monai.bundle.scripts":
            return frame
        frame = frame.f_back
    return None


def check_overrides() -> None:
    """Reject command-line settings that no config file of this run defines.

    MONAI's runner stores ``--key value`` pairs in the config whether or not anything reads them, so a typo is
    silently ignored. The settings and the config files are read from MONAI's ``create_workflow`` call that runs
    this workflow; nothing is checked when the workflow was built otherwise (e.g. ``ConfigWorkflow`` in a script).
    A nested id (``--train#trainer#epoch_length 4``) may add a new argument to a component that exists.

    Raises:
        UserError: naming the unknown setting and the closest known one.
    """
    frame = _runner_frame()
    if frame is None:
        return
    from monai.bundle import ConfigParser, ConfigWorkflow
    from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS

    args: dict[str, Any] = dict(frame.f_locals.get("_args") or {})
    config_file = frame.f_locals.get("config_file")
    if config_file is None:
        return
    runner_args = set(inspect.signature(ConfigWorkflow.__init__).parameters) - {"self", "override"}
    allowed = set(DEFAULT_MLFLOW_SETTINGS["configs"]) if args.get("tracking") else set()
    config = ConfigParser(ConfigParser.load_config_files(config_file))
    known = sorted(k for k in config.get() if isinstance(k, str))
    for key in args:
        if key in runner_args or key in allowed or key.startswith("_meta_") or key in config:
            continue
        parts = key.replace("::", "#").split("#")
        parent = "#".join(parts[:-1])
        if len(parts) > 1 and parent in config and isinstance(config[parent], dict) and "_target_" in config[parent]:
            continue
        close = difflib.get_close_matches(parts[0], known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see the bundle's docs/README.md for the settings"
        raise UserError(f"--{key} is not a setting of this bundle run (unknown key {parts[0]!r}); {hint}")


def find_bundle_root(default: str = ".") -> str:
    """The bundle folder of the ``ConfigWorkflow`` whose config this is evaluated for (the configs' ``bundle_root``).

    MONAI gives a config no way to name its own file, and zoo bundles set ``bundle_root`` to ``"."``, which is the
    bundle only when the run starts in the bundle folder. This looks up the stack for the ``ConfigWorkflow`` that is
    evaluating the expression and returns the folder that holds its ``configs/`` folder (the folder of its first
    config file if that is not named ``configs``), the folder MONAI's ``ConfigWorkflow.run`` puts on ``sys.path``:
    ``"."`` for ``--config_file configs/inference.json``, ``bundles/voxelmorph_brain_3d`` for
    ``--config_file bundles/voxelmorph_brain_3d/configs/inference.json``. ``--bundle_root`` still replaces it.

    Args:
        default: returned when no ``ConfigWorkflow`` is evaluating (a ``ConfigParser`` used directly, e.g. by
            ``ckpt_export``): the current folder, as in zoo bundles.
    """
    from monai.bundle import ConfigWorkflow

    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        folder = getattr(owner, "config_root_path", None) if isinstance(owner, ConfigWorkflow) else None
        if folder is not None:
            folder = Path(folder)
            return str(folder.parent if folder.name == "configs" else folder)
        frame = frame.f_back
    return default


def begin_bundle_run() -> bool:
    """The bundles' first ``initialize`` expression: :func:`install_error_hook`, :func:`check_overrides`, then
    :func:`~monai_vmorph.runtime.keep_freed_memory`.

    Returns:
        ``True``, so a config can use the call as an expression.
    """
    install_error_hook()
    check_overrides()
    keep_freed_memory()
    return True


def lock_run_folders(*folders: str | os.PathLike | None) -> bool:
    """Take the :class:`~monai_vmorph.io.locks.FolderLock` of each folder (created if missing) until the process
    ends or :func:`release_run_folders`; in a distributed run only rank 0 (the one that writes) locks.

    Raises:
        monai_vmorph.io.locks.FolderBusyError: another run is writing into one of the folders.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return True
    for folder in sorted({os.path.abspath(f) for f in folders if f is not None}):
        _RUN_LOCKS.append(FolderLock(folder))
    return True


def release_run_folders() -> bool:
    """Release the locks of :func:`lock_run_folders` (the bundles' ``finalize``)."""
    while _RUN_LOCKS:
        _RUN_LOCKS.pop().release()
    return True
