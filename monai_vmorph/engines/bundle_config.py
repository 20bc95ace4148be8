"""Checks of a bundle's settings and data before any work, and a training entry point that says how to resume.

The bundles call these from their ``initialize`` section, before anything is built or written: the values a user
overrides (:func:`check_bundle_config`), the labels (:func:`check_labels`), the data against the settings
(:func:`check_training_data`, :func:`check_pairs`) and the folders a run writes into
(:func:`check_inference_outputs`, :func:`monai_vmorph.engines.checkpoint.check_checkpoint_folder`). Each raises a
:class:`BundleConfigError` (a :class:`~monai_vmorph.errors.UserError`), which the bundle runner reports as one line
``error: <message>`` with exit status 2 (:mod:`monai_vmorph.engines.bundle_run`). :func:`run_training` turns Ctrl-C
into :class:`~monai_vmorph.engines.bundle_run.TrainingInterrupted`, naming the last complete checkpoint.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Engine, Events

from monai_vmorph.data.keys import FIXED_LABEL, FIXED_NAME, IMAGE, LABEL, MOVING_IMAGE, MOVING_LABEL, MOVING_NAME
from monai_vmorph.engines.bundle_run import TrainingInterrupted
from monai_vmorph.engines.checkpoint import checkpointer_of
from monai_vmorph.errors import UserError
from monai_vmorph.io import MAX_LABELS

__all__ = [
    "MAX_LABELS",
    "BundleConfigError",
    "check_bundle_config",
    "check_inference_outputs",
    "check_labels",
    "check_pairs",
    "check_training_data",
    "run_training",
]

SIMILARITIES = ("ncc", "mse")
PAIR_MODES = ("scan_to_scan", "atlas")
OUTPUT_KINDS = ("warped", "ddf", "warped_label")  # RegistrationWriter's files: <moving>_to_<fixed>_<kind>.nii.gz


class BundleConfigError(UserError):
    """A bad bundle setting or dataset, found before any work; the message says what was wrong and what to do."""


def _fail(message: str) -> None:
    raise BundleConfigError(message)


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        _fail(f"{name} must be a finite number >= 0, got {value!r}; e.g. --{name} 1.0")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(f"{name} must be a whole number >= 1, got {value!r}")


def check_bundle_config(
    dataset_dir: str | os.PathLike | None,
    spatial_dims: int,
    spatial_size: Sequence[int] | None,
    divisor: int = 16,
    ckpt_path: str | os.PathLike | None = None,
    pair: Sequence[str | os.PathLike | None] | None = None,
    similarity: str | None = None,
    smoothness_weight: float | None = None,
    dice_weight: float | None = None,
    learning_rate: float | None = None,
    max_epochs: int | None = None,
    pairs_per_epoch: int | None = None,
    batch_size: int | None = None,
    val_interval: int | None = None,
    pair_mode: str | None = None,
) -> bool:
    """Check the settings a user is expected to override; the training-only ones may be ``None`` (skipped).

    Args:
        dataset_dir: folder with a Learn2Reg dataset JSON (or that JSON file); must exist unless ``None``
            (inference of one pair given on the command line).
        spatial_dims: 2 or 3.
        spatial_size: the network grid, ``spatial_dims`` positive multiples of ``divisor`` (``None``: pad each
            image to a multiple of ``divisor`` instead).
        divisor: the network's size divisor.
        ckpt_path: weights that evaluation/inference load; must be a file when given.
        pair: ``(moving, fixed)`` of one-pair inference (``--moving`` / ``--fixed``): both files, or both ``None``
            (register the dataset's validation pairs).
        similarity: image loss name, one of ``"ncc"``, ``"mse"``.
        smoothness_weight: λ of the smoothness term, ``>= 0``.
        dice_weight: weight of the label Dice term, ``>= 0``.
        learning_rate: ``> 0``.
        max_epochs, pairs_per_epoch, batch_size, val_interval: whole numbers ``>= 1``.
        pair_mode: ``"scan_to_scan"`` or ``"atlas"``.

    Returns:
        ``True`` when every value is valid, so a config can use the call as an expression.

    Raises:
        BundleConfigError: naming the first bad value and how to fix it.
    """
    if pair is not None:
        moving, fixed = pair
        if (moving is None) != (fixed is None):
            given, missing = ("--moving", "--fixed") if fixed is None else ("--fixed", "--moving")
            _fail(f"{given} was given without {missing}; pass both to register one pair, or neither for the dataset")
        for flag, path in (("--moving", moving), ("--fixed", fixed)):
            if path is not None and not os.path.isfile(path):
                _fail(f"{flag} image {str(path)!r} does not exist; check the path")
    if dataset_dir is not None and not os.path.exists(dataset_dir):
        _fail(f"dataset_dir {str(dataset_dir)!r} does not exist; pass --dataset_dir /path/to/your/dataset")
    if ckpt_path is not None and not os.path.isfile(ckpt_path):
        _fail(
            f"ckpt_path {str(ckpt_path)!r} does not exist; train the bundle first or pass --ckpt_path /path/to/model.pt"
        )
    if spatial_size is not None:
        size = list(spatial_size) if isinstance(spatial_size, (list, tuple)) else None
        if (
            size is None
            or len(size) != spatial_dims
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 and s % divisor == 0 for s in size)
        ):
            _fail(
                f"spatial_size must be {spatial_dims} positive multiples of {divisor}, got {spatial_size!r}; "
                f"e.g. --spatial_size {[divisor * 6] * spatial_dims}"
            )
    if similarity is not None and similarity not in SIMILARITIES:
        _fail(f"similarity must be one of {list(SIMILARITIES)}, got {similarity!r}")
    for name, value in (("smoothness_weight", smoothness_weight), ("dice_weight", dice_weight)):
        if value is not None:
            _non_negative(name, value)
    if learning_rate is not None:
        _non_negative("learning_rate", learning_rate)
        if learning_rate == 0:
            _fail("learning_rate must be > 0, got 0")
    for name, value in (
        ("max_epochs", max_epochs),
        ("pairs_per_epoch", pairs_per_epoch),
        ("batch_size", batch_size),
        ("val_interval", val_interval),
    ):
        if value is not None:
            _positive_int(name, value)
    if pair_mode is not None and pair_mode not in PAIR_MODES:
        _fail(f"pair_mode must be one of {list(PAIR_MODES)}, got {pair_mode!r}")
    return True


def check_labels(labels: Any) -> bool:
    """``labels`` must be a non-empty list of at most :data:`MAX_LABELS` distinct whole numbers ``>= 0``.

    Raises:
        BundleConfigError: naming the bad value.
    """
    values = list(labels) if isinstance(labels, (list, tuple)) else None
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        _fail(f"labels must be a list of label values (whole numbers >= 0), got {labels!r}; e.g. --labels [1,2,3]")
    if len(set(values)) != len(values):
        _fail(f"labels lists a value twice: {values}; list each label value once")
    if len(values) > MAX_LABELS:
        _fail(f"labels lists {len(values)} values, more than {MAX_LABELS}; score a subset of the structures")
    return True


def check_training_data(subjects: Sequence[Mapping[str, Any]], dice_weight: float) -> bool:
    """With ``dice_weight > 0`` every training scan needs a label map (the Dice term compares them).

    Raises:
        BundleConfigError: naming the first scan without one.
    """
    if dice_weight and dice_weight > 0:
        missing = [s[IMAGE] for s in subjects if s.get(LABEL) is None]
        if missing:
            _fail(
                f"dice_weight {dice_weight} needs a label map for every training scan, but {len(missing)} have none "
                f"(first: {missing[0]}); add their label maps (labelsTr/) or pass --dice_weight 0"
            )
    return True


def check_pairs(pairs: Sequence[Mapping[str, Any]], split: str, need_labels: bool = False) -> bool:
    """The pairs a run registers: at least one, with both label maps when ``need_labels`` (Dice is scored), and
    label maps of at most :data:`MAX_LABELS` values (the label-mode warp); read from the headers and data.

    Args:
        pairs: pair dicts (``moving_image``, ``fixed_image``, optional labels and names).
        split: the pairs' name in messages, e.g. ``"registration_val"``.
        need_labels: every pair must have both label maps.

    Raises:
        BundleConfigError: no pairs, a pair without label maps, or a label map with too many values.
    """
    if not pairs:
        _fail(f"the dataset lists no {split} pairs; add some to its dataset JSON")
    for pair in pairs:
        if need_labels and (pair.get(MOVING_LABEL) is None or pair.get(FIXED_LABEL) is None):
            name = f"{pair.get(MOVING_NAME, pair[MOVING_IMAGE])} -> {pair.get(FIXED_NAME, '?')}"
            _fail(
                f"{split} pair {name} has no label maps, but the validation Dice (val_mean_dice) needs both; add "
                "the label maps of its scans (labelsTr/)"
            )
        if pair.get(MOVING_LABEL) is not None:
            _check_label_count(pair[MOVING_LABEL])
    return True


def _check_label_count(path: str) -> None:
    try:
        count = np.unique(np.asarray(nib.load(path).dataobj)).size
    except Exception as error:  # nibabel raises several types for unreadable files
        _fail(f"label map {path} cannot be read ({error}); re-create or re-download it")
    if count > MAX_LABELS:
        _fail(
            f"label map {path} holds {count} distinct values, more than {MAX_LABELS}; it is not a label map "
            "(give the segmentation, not an image)"
        )


def check_inference_outputs(
    output_dir: str | os.PathLike, pairs: Sequence[Mapping[str, Any]], overwrite: bool = False
) -> bool:
    """Refuse to mix results of two runs: without ``overwrite`` none of the files the pairs will produce may exist.

    Raises:
        BundleConfigError: naming the first existing output.
    """
    if overwrite:
        return True
    for pair in pairs:
        stem = f"{pair[MOVING_NAME]}_to_{pair[FIXED_NAME]}"
        for kind in OUTPUT_KINDS:
            path = os.path.join(output_dir, f"{stem}_{kind}.nii.gz")
            if os.path.exists(path):
                _fail(
                    f"{path} exists (results of an earlier run); pass --overwrite true to replace them or choose "
                    "another --output_dir"
                )
    return True


def _saved_epoch(path: os.PathLike) -> int | None:
    """The epoch a ``last.pt`` holds (memory-mapped: its tensors are not read), or ``None`` if it has none."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["trainer"]
        return int(state["iteration"]) // int(state["epoch_length"])
    except Exception:  # missing or unreadable: nothing saved that a rerun can resume
        return None


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, ``kill``) turned into an interrupt, so training ends like Ctrl-C."""


class _StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM while training: raise at once, and again at the next iteration's end if the first
    raise was lost.

    Python raises a signal's exception in whatever code runs when it arrives; inside a finalizer (``__del__``, e.g.
    of a nibabel object freed by the data loader) the exception is printed and *dropped*, and training went on
    (seen: a Ctrl-C lost that way left a run training for its 100000 epochs). The signal is therefore also recorded,
    and a trainer handler at every ``ITERATION_COMPLETED`` raises it again.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def handle(self, signum: int, frame: object) -> None:
        self.received = signum
        self.raise_received()

    def raise_received(self, *_: object) -> None:
        if self.received == signal.SIGTERM:
            raise _Terminated()
        if self.received is not None:
            raise KeyboardInterrupt()


def run_training(trainer: Engine) -> Engine:
    """Run ``trainer``; Ctrl-C or SIGTERM ends it with :class:`TrainingInterrupted` saying where it will resume.

    SIGTERM (sent by Slurm, Kubernetes or ``kill`` before they stop a job) is handled like Ctrl-C while training
    runs (main thread only; the previous handlers are restored after; a signal whose exception was lost is raised
    again at the next iteration's end, :class:`_StopSignals`), so the user gets the same one line and exit
    status 143 instead of a silent death. Checkpoints are atomic either way: ``last.pt`` always holds the last
    complete epoch.

    Returns:
        The trainer, after a complete run.
    """
    signals, previous = _StopSignals(), {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, signals.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    trainer.add_event_handler(Events.ITERATION_COMPLETED, signals.raise_received)
    try:
        trainer.run()
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, TrainingInterrupted):
            raise
        epoch = trainer.state.epoch
        checkpointer = checkpointer_of(trainer)
        saved = _saved_epoch(checkpointer.last_path) if checkpointer is not None else None
        if checkpointer is None:
            where = "no checkpoints are written"
        elif saved:
            where = f"last complete checkpoint {checkpointer.last_path}, epoch {saved}"
        else:
            where = "no complete epoch saved yet"
        how, status = ("terminated (SIGTERM)", 143) if isinstance(interrupt, _Terminated) else ("interrupted", 130)
        raise TrainingInterrupted(
            f"{how} at epoch {epoch} ({where}); run the same command to resume", exit_status=status
        ) from None
    finally:
        trainer.remove_event_handler(signals.raise_received, Events.ITERATION_COMPLETED)
        for number, handler in previous.items():
            signal.signal(number, handler)
    return trainer
