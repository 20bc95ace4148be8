"""Crash-safe checkpoints for the training workflows: atomic writes, the best model, resume, a NaN stop.

MONAI's ``CheckpointSaver`` is not used for the bundles because it writes non-atomically (its disk saver sets
``atomic=False``) and, with a fixed file name, deletes the previous best model *before* writing the new one:
an interrupted run could lose the best weights. :class:`RegistrationCheckpointer` writes every file to a
temporary name in the same folder and renames it over the old one, so a reader always sees a complete file.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from monai_vmorph.io.atomic import atomic_write

__all__ = ["RegistrationCheckpointer", "StopOnNonFiniteLoss", "TrainingDivergedError", "atomic_torch_save"]

logger = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then rename it over ``path``.

    Returns:
        The written path. On any error the temporary file is removed and ``path`` is untouched.
    """
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel``, so checkpoints have no ``module.`` prefix."""
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

    Only rank 0 writes in a distributed run; every rank resumes.

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
        self.best_path = self.ckpt_dir / best_filename
        self.last_path = self.ckpt_dir / last_filename
        self.extra = dict(extra or {})
        self.best_metric = -math.inf
        self.best_epoch = -1
        self._trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        engine.add_event_handler(Events.STARTED, self.resume)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save_last)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.save_best)

    def resume(self, engine: Engine) -> None:
        """Load ``last.pt`` into the network, optimizer and trainer when resuming is on and the file exists."""
        if not (self.resume_enabled and self.last_path.is_file()):
            return
        state = torch.load(self.last_path, map_location="cpu", weights_only=True)
        _unwrap(self.network).load_state_dict(state["network"])
        configured_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, lr in zip(self.optimizer.param_groups, configured_lrs, strict=True):
            group["lr"] = lr
        for name, obj in self.extra.items():
            obj.load_state_dict(state["extra"][name])
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(state["trainer"])
        engine.state.max_epochs = max_epochs
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])
        logger.info(
            "resumed from %s at epoch %d of %d (best %s %.4f at epoch %d)",
            self.last_path,
            engine.state.epoch,
            max_epochs,
            self.key_metric,
            self.best_metric,
            self.best_epoch,
        )

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
            atomic_torch_save(_unwrap(self.best_network).state_dict(), self.best_path)
            logger.info("epoch %d: new best %s %.4f, saved %s", epoch, self.key_metric, metric, self.best_path)

    def save_last(self, engine: Engine) -> None:
        """Write the resumable state ``last.pt``."""
        if idist.get_rank() != 0:
            return
        state = {
            "network": _unwrap(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": engine.state_dict(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "extra": {name: obj.state_dict() for name, obj in self.extra.items()},
        }
        atomic_torch_save(state, self.last_path)


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


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
