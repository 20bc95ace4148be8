"""Checks of a bundle's top-level config values, and a training entry point that fails in one line.

``python -m monai.bundle run`` shows any exception as a long traceback of MONAI's config machinery. The bundles
call :func:`check_bundle_config` from their ``initialize`` section, before anything is built, and train
through :func:`run_training`; both report a user mistake as one ``error:`` line on stderr and exit with
status 2 (:class:`BundleConfigError`, a ``SystemExit``).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from ignite.engine import Engine

from monai_vmorph.engines.checkpoint import TrainingDivergedError

__all__ = ["BundleConfigError", "check_bundle_config", "run_training"]

SIMILARITIES = ("ncc", "mse")
PAIR_MODES = ("scan_to_scan", "atlas")


class BundleConfigError(SystemExit):
    """A bad bundle setting: exits with status 2; ``message`` says what was wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
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
        dataset_dir: folder with a Learn2Reg dataset JSON (or the images the data loader reads); must exist
            unless ``None`` (inference of one pair given on the command line).
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
    if dataset_dir is not None and not os.path.isdir(dataset_dir):
        _fail(f"dataset_dir {str(dataset_dir)!r} is not a folder; pass --dataset_dir /path/to/your/dataset")
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


def run_training(trainer: Engine) -> Engine:
    """Run ``trainer``; a diverged loss ends the process with one ``error:`` line and status 2.

    Returns:
        The trainer, after a complete run.
    """
    try:
        trainer.run()
    except TrainingDivergedError as error:
        _fail(str(error))
    return trainer
