"""Crash-safe checkpoints for the training workflows: verified atomic writes, the best model, resume, a NaN stop.

MONAI's ``CheckpointSaver`` is not used for the bundles because it writes non-atomically (its disk saver sets
``atomic=False``) and, with a fixed file name, deletes the previous best model *before* writing the new one:
an interrupted run could lose the best weights. :class:`RegistrationCheckpointer` serialises each checkpoint in
memory, writes it to a temporary name in the same folder, checks its size, and renames it over the old one
(:func:`monai_vmorph.io.atomic.atomic_write_bytes`), so a reader always sees a complete file and a full disk is one
line (:class:`~monai_vmorph.io.atomic.OutputWriteError`). It holds the checkpoint folder's
:class:`~monai_vmorph.io.locks.FolderLock` while training (one run per folder; temporary files of killed writes are
removed when it is taken) and never replaces a ``model.pt`` that the run it resumes did not write.
"""

from __future__ import annotations

import io
import logging
import math
import os
import weakref
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from monai_vmorph.errors import UserError
from monai_vmorph.io.atomic import atomic_write_bytes
from monai_vmorph.io.locks import FolderLock

__all__ = [
    "RegistrationCheckpointer",
    "StopOnNonFiniteLoss",
    "TrainingDivergedError",
    "atomic_torch_save",
    "check_checkpoint_folder",
    "checkpointer_of",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)
_CHECKPOINTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` into memory, then write the bytes to ``path`` atomically, size-checked.

    Returns:
        The written path. On any error the temporary file is removed and ``path`` is untouched.

    Raises:
        monai_vmorph.io.atomic.OutputWriteError: the file could not be written completely (e.g. a full disk).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; an unreadable file is one line naming it.

    Raises:
        UserError: the file is truncated, corrupt or not a checkpoint of plain tensors.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise UserError(
            f"checkpoint {path} cannot be read ({reason}); it is truncated or not a checkpoint: restore it, or "
            "move it away (and the model.pt next to it) to train from scratch"
        ) from None


def check_checkpoint_folder(
    ckpt_dir: str | os.PathLike, resume: bool = True, best_filename: str = "model.pt", last_filename: str = "last.pt"
) -> bool:
    """Check, before training, that it can write its checkpoints in ``ckpt_dir`` without losing anything.

    A ``model.pt`` there is only replaced by the run that wrote it, i.e. when training resumes that run's
    ``last.pt``; and a ``last.pt`` to resume must be a complete file (its zip directory is read: a killed or
    truncated copy fails here, naming the file, rather than after the data and network were built).

    Returns:
        ``True``, so a config can use the call as an expression.

    Raises:
        UserError: ``model.pt`` exists without a ``last.pt`` to resume (or ``resume`` is off), or ``last.pt`` is
            truncated.
    """
    best, last = Path(ckpt_dir) / best_filename, Path(ckpt_dir) / last_filename
    if best.is_file() and not (resume and last.is_file()):
        why = "resume is off" if last.is_file() else f"no {last.name} of the run that wrote it"
        raise UserError(
            f"{best} already exists ({why}); training would overwrite weights it did not write: choose another "
            "--ckpt_dir (or --run_dir), or move that model.pt away"
        )
    if resume and last.is_file():
        try:
            with zipfile.ZipFile(last) as archive:
                archive.namelist()
        except (OSError, zipfile.BadZipFile) as error:
            raise UserError(
                f"checkpoint {last} cannot be read ({error}); it is truncated or not a checkpoint: restore it, or "
                "move it away (and the model.pt next to it) to train from scratch"
            ) from None
    return True


def checkpointer_of(engine: Engine) -> RegistrationCheckpointer | None:
    """The :class:`RegistrationCheckpointer` attached to ``engine``, if any."""
    return _CHECKPOINTERS.get(engine)


def unwrap_module(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (itself otherwise): checkpoints without the
    ``module.`` prefix, and the model's own attributes (``precision``) for the reporters, inferers and guards."""
    return getattr(module, "module", module)


class RegistrationCheckpointer:
    """Keep ``model.pt`` (best validation metric) and ``last.pt`` (resumable state) up to date.

    * On the trainer's ``STARTED``: if ``resume`` and ``last.pt`` exists, load the network, optimizer, trainer
      (epoch, iteration) and the best metric so far, with ``torch.load(..., weights_only=True)``. The
      current ``max_epochs`` and the optimizer's configured learning rates are kept (its moments are restored),
      so a finished run can be extended by raising ``max_epochs`` and a diverged one resumed with a lower
      ``learning_rate``.
    * On each validation (the evaluator's ``EPOCH_COMPLETED``): if the key metric is finite and better than
      every earlier one, write ``best_network``'s state dict to ``model.pt``.
    * On the trainer's ``EPOCH_COMPLETED`` (attach this handler after the ``ValidationHandler``): write
      ``last.pt``. A failed epoch (e.g. a NaN loss) never reaches this point, so ``last.pt`` and ``model.pt``
      always hold finite weights.

    Only rank 0 writes (and holds the folder's lock) in a distributed run; every rank resumes.

    A ``model.pt`` already in ``ckpt_dir`` is only replaced when this run resumes the run that wrote it (its
    ``last.pt`` is there and ``resume`` is on); otherwise training stops before the first step with a
    :class:`~monai_vmorph.errors.UserError`, so shipped weights are never overwritten by accident.

    Args:
        ckpt_dir: folder for both files.
        network: the trained network (a DDP wrapper is unwrapped).
        optimizer: its optimizer.
        evaluator: the validation engine whose ``state.metrics[key_metric]`` ranks checkpoints (``None``: no
            best-model tracking).
        best_network: the module whose state dict goes into ``model.pt`` (default ``network``); the bundles
            pass ``network_def`` so ``model.pt`` loads into it directly.
        key_metric: name of the validation metric; higher is better.
        resume: continue from ``last.pt`` when it exists.
        init_weights: weights to start from when there is no ``last.pt`` to resume (fine-tuning): a bundle's
            ``model.pt`` (``network_def`` keys ``model.…``) or a bare state dict of the network, read with
            ``weights_only=True`` and cast to the network's dtypes; the optimizer and epoch start afresh. Ignored
            when resuming, so the same command continues a fine-tuning run.
        best_filename: file name of the best model.
        last_filename: file name of the resumable state.
        extra: more objects with ``state_dict``/``load_state_dict`` to save and restore (e.g. an LR scheduler).
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        evaluator: Engine | None = None,
        best_network: torch.nn.Module | None = None,
        key_metric: str = "val_mean_dice",
        resume: bool = True,
        init_weights: str | os.PathLike | None = None,
        best_filename: str = "model.pt",
        last_filename: str = "last.pt",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.network = network
        self.optimizer = optimizer
        self.evaluator = evaluator
        self.best_network = best_network if best_network is not None else network
        self.key_metric = key_metric
        self.resume_enabled = bool(resume)
        self.init_weights = Path(init_weights) if init_weights else None
        self.best_path = self.ckpt_dir / best_filename
        self.last_path = self.ckpt_dir / last_filename
        self.extra = dict(extra or {})
        self.best_metric = -math.inf
        self.best_epoch = -1
        self.saved_epoch = 0  # the epoch ``last.pt`` holds (0: none yet)
        self._trainer: Engine | None = None
        self._lock: FolderLock | None = None

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        _CHECKPOINTERS[engine] = self
        engine.add_event_handler(Events.STARTED, self.resume)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save_last)
        engine.add_event_handler(Events.COMPLETED, self.release)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.save_best)

    def check_folder(self) -> None:
        """:func:`check_checkpoint_folder` of this checkpointer's folder and settings."""
        check_checkpoint_folder(self.ckpt_dir, self.resume_enabled, self.best_path.name, self.last_path.name)

    def release(self, engine: Engine | None = None) -> None:
        """Release the checkpoint folder's lock (at the end of training)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def resume(self, engine: Engine) -> None:
        """Lock the folder, check it (:meth:`check_folder`), then load ``last.pt`` into the network, optimizer and
        trainer when resuming is on and the file exists."""
        if idist.get_rank() == 0 and self._lock is None:
            self._lock = FolderLock(self.ckpt_dir)
        try:
            self.check_folder()
        except UserError:
            self.release()
            raise
        if not (self.resume_enabled and self.last_path.is_file()):
            if self.init_weights is not None:
                self._initialise(self.init_weights)
            return
        state = load_checkpoint(self.last_path)
        try:
            unwrap_module(self.network).load_state_dict(state["network"])
            configured_lrs = [group["lr"] for group in self.optimizer.param_groups]
            self.optimizer.load_state_dict(state["optimizer"])
            for group, lr in zip(self.optimizer.param_groups, configured_lrs, strict=True):
                group["lr"] = lr
            for name, obj in self.extra.items():
                obj.load_state_dict(state["extra"][name])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            reason = str(error).strip().splitlines()[0][:160]
            raise UserError(
                f"checkpoint {self.last_path} does not fit this network or optimizer ({reason}); it was written with "
                "other settings: use those settings, or another --ckpt_dir to train from scratch"
            ) from None
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(state["trainer"])
        engine.state.max_epochs = max_epochs
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])
        self.saved_epoch = engine.state.epoch
        logger.info(
            "resumed from %s at epoch %d of %d (best %s %.4f at epoch %d)",
            self.last_path,
            engine.state.epoch,
            max_epochs,
            self.key_metric,
            self.best_metric,
            self.best_epoch,
        )

    def _initialise(self, path: Path) -> None:
        """Load ``init_weights`` into the network (see the class docstring)."""
        if not path.is_file():
            raise UserError(f"--init_weights {path} is not a file; give a model.pt to start from, or leave it unset")
        state = load_checkpoint(path)
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(f"--init_weights {path} does not hold a state dict of tensors; give a bundle's model.pt")
        if state and all(str(k).startswith("model.") for k in state):
            state = {str(k)[len("model.") :]: v for k, v in state.items()}
        try:
            unwrap_module(self.network).load_state_dict(state)
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[0][:160]
            raise UserError(
                f"--init_weights {path} does not fit this network ({reason}); give weights trained with the same "
                "network settings"
            ) from None
        logger.info("initialised the network from %s (fine-tuning: new optimizer, epoch 0)", path)

    def save_best(self, evaluator: Engine) -> None:
        """Write ``model.pt`` when the key metric improved (ignores NaN/inf metrics)."""
        metric = evaluator.state.metrics.get(self.key_metric)
        if metric is None:
            raise KeyError(f"validation has no metric {self.key_metric!r}; it has {sorted(evaluator.state.metrics)}.")
        metric = float(metric)
        if not math.isfinite(metric) or metric <= self.best_metric:
            return
        epoch = self._trainer.state.epoch if self._trainer is not None else evaluator.state.epoch
        self.best_metric, self.best_epoch = metric, epoch
        if idist.get_rank() == 0:
            atomic_torch_save(unwrap_module(self.best_network).state_dict(), self.best_path)
            logger.info("epoch %d: new best %s %.4f, saved %s", epoch, self.key_metric, metric, self.best_path)

    def save_last(self, engine: Engine) -> None:
        """Write the resumable state ``last.pt``."""
        if idist.get_rank() != 0:
            return
        state = {
            "network": unwrap_module(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": engine.state_dict(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "extra": {name: obj.state_dict() for name, obj in self.extra.items()},
        }
        atomic_torch_save(state, self.last_path)
        self.saved_epoch = engine.state.epoch


class TrainingDivergedError(UserError, RuntimeError):
    """The training loss became NaN or infinite (reported in one line: lower the learning rate and resume)."""


class StopOnNonFiniteLoss:
    """Stop training with a clear message when the loss is NaN or infinite.

    Raises :class:`TrainingDivergedError` on the iteration where it happens, before the epoch ends, so
    :class:`RegistrationCheckpointer` never writes the diverged weights: ``model.pt`` keeps the best model
    and ``last.pt`` the end of the last good epoch.

    Args:
        output_key: key of the loss in ``engine.state.output``.
    """

    def __init__(self, output_key: str = "loss") -> None:
        self.output_key = output_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        if isinstance(output, (list, tuple)):  # decollated batch: every item holds the batch's loss
            output = output[0]
        loss = output[self.output_key] if isinstance(output, Mapping) else output
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"training loss is {value} at epoch {engine.state.epoch}, iteration {engine.state.iteration}; "
                "the checkpoints from earlier epochs are kept — lower learning_rate (or raise smoothness_weight) "
                "and run again to resume from the last good epoch"
            )
