"""``monai-vmorph register``: one pair, outputs on the fixed scan's native grid."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from monai_vmorph.cli.errors import CLIError
from monai_vmorph.cli.model import parse_device
from monai_vmorph.io import read_landmarks, write_itk_affine, write_itk_displacement
from monai_vmorph.keys import FIXED_IMAGE, FIXED_LABEL, FIXED_LANDMARKS, MOVING_IMAGE, MOVING_LABEL, MOVING_LANDMARKS
from monai_vmorph.pipeline import (
    BundleModel,
    NativeScan,
    OutputSet,
    PairResult,
    check_same_dims,
    check_scan_file,
    load_bundle_model,
    read_scan,
    register_pair,
)

__all__ = [
    "ListedPair",
    "check_pair_files",
    "preset_of",
    "read_pair_landmarks",
    "refine_progress",
    "register_listed_pair",
    "run_register",
]


def preset_of(args: argparse.Namespace) -> str:
    """The preset the options ask for: ``"fast"`` (the network alone) with ``--fast``, else ``"default"`` (the
    deformable stage on the fixed scan's own grid; :data:`monai_vmorph.pipeline.register.PRESETS`)."""
    return "fast" if getattr(args, "fast", False) else "default"


def refine_progress(args: argparse.Namespace, desc: str = "refine") -> tuple[Callable[..., None] | None, object]:
    """A ``(callback, bar)`` pair that shows the refinement's level, steps and loss on stderr (``(None, None)`` when
    ``--quiet`` or when nothing is refined). The bar's total is the preset's largest step count plus ``--refine``;
    levels that converge early end it sooner."""
    from monai_vmorph.pipeline.register import preset_iterations

    steps = preset_iterations(preset_of(args)) + args.refine
    if args.quiet or steps == 0:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=desc, unit="step", file=sys.stderr, leave=False)

    def callback(step: int, loss: float, stage: str = "refine") -> None:
        bar.update(1)
        bar.set_description(stage)
        bar.set_postfix(loss=f"{loss:.4f}")

    return callback, bar


class ListedPair(NamedTuple):
    """A registered pair of a datalist: its scans (labels ``None`` unless both are listed) and the result."""

    fixed: NativeScan
    moving: NativeScan
    moving_labels: NativeScan | None
    fixed_labels: NativeScan | None
    result: PairResult


def read_pair_landmarks(
    fixed_path: str | None, moving_path: str | None, fixed: NativeScan, moving: NativeScan, roles: tuple[str, str]
) -> tuple:
    """Both landmark files of a pair as world points (:func:`monai_vmorph.io.read_landmarks`), ``(None, None)``
    without them; one line if only one is given or their point counts differ."""
    if fixed_path is None and moving_path is None:
        return None, None
    if fixed_path is None or moving_path is None:
        raise CLIError(f"{roles[0]} and {roles[1]} go together (row n of one corresponds to row n of the other)")
    fixed_points = read_landmarks(fixed_path, fixed.affine, roles[0])
    moving_points = read_landmarks(moving_path, moving.affine, roles[1])
    if len(fixed_points) != len(moving_points):
        raise CLIError(
            f"{roles[0]} {fixed_path} has {len(fixed_points)} points but {roles[1]} {moving_path} has "
            f"{len(moving_points)}; corresponding landmarks come in equal numbers"
        )
    return fixed_points, moving_points


def check_pair_files(pairs: list[dict]) -> None:
    """Check every file of a datalist's pairs from its header (:func:`monai_vmorph.pipeline.check_scan_file`) before
    the first registration, so a bad file among many is one line at once, not after hours of work. Labels are checked
    where :func:`register_listed_pair` uses them (both listed); landmark files are read (their form and counts)."""
    for pair in pairs:
        ndim = len(check_scan_file(pair[FIXED_IMAGE], "fixed image"))
        check_scan_file(pair[MOVING_IMAGE], "moving image")
        if pair.get(MOVING_LABEL) and pair.get(FIXED_LABEL):
            check_scan_file(pair[MOVING_LABEL], "moving label", labels=True)
            check_scan_file(pair[FIXED_LABEL], "fixed label", labels=True)
        if pair.get(FIXED_LANDMARKS) or pair.get(MOVING_LANDMARKS):  # the files' form; placed when registered
            grid = NativeScan.from_array(np.zeros((1,) * ndim), np.eye(ndim + 1))
            roles = ("fixed landmarks", "moving landmarks")
            read_pair_landmarks(pair.get(FIXED_LANDMARKS), pair.get(MOVING_LANDMARKS), grid, grid, roles)


def register_listed_pair(
    pair: dict, first: NativeScan, bundle: BundleModel, args: argparse.Namespace, fixed: NativeScan | None = None
) -> ListedPair:
    """Read one pair of a datalist (labels only when both are listed) and register it with the command's options.

    ``first`` is the first pair's fixed scan (every pair must share its dimensionality); ``fixed`` the pair's fixed
    scan when already read.
    """
    fixed = fixed if fixed is not None else read_scan(pair[FIXED_IMAGE], "fixed image")
    moving = read_scan(pair[MOVING_IMAGE], "moving image")
    moving_labels = fixed_labels = None
    if pair.get(MOVING_LABEL) and pair.get(FIXED_LABEL):
        moving_labels = read_scan(pair[MOVING_LABEL], "moving label", labels=True)
        fixed_labels = read_scan(pair[FIXED_LABEL], "fixed label", labels=True)
        _check_labels(moving_labels, moving, "moving label")
        _check_labels(fixed_labels, fixed, "fixed label")
    check_same_dims(first, fixed, moving, *(s for s in (moving_labels, fixed_labels) if s is not None))
    roles = ("fixed landmarks", "moving landmarks")
    landmarks = read_pair_landmarks(pair.get(FIXED_LANDMARKS), pair.get(MOVING_LANDMARKS), fixed, moving, roles)
    result = register_pair(
        fixed,
        moving,
        bundle,
        args.refine,
        args.refine_lr,
        moving_labels,
        fixed_labels,
        affine=args.affine,
        preset=preset_of(args),
        resolution=getattr(args, "resolution", None),
        similarity=args.similarity,
        fixed_landmarks=landmarks[0],
        moving_landmarks=landmarks[1],
    )
    return ListedPair(fixed, moving, moving_labels, fixed_labels, result)


def _check_labels(labels: NativeScan | None, image: NativeScan, role: str) -> None:
    if labels is not None and labels.array.shape != image.array.shape:
        raise CLIError(
            f"{role} {labels.path} has shape {labels.array.shape} but its image has {image.array.shape}; "
            "give the label map of that image"
        )


def run_register(args: argparse.Namespace) -> None:
    fixed = read_scan(args.fixed, "--fixed")
    moving = read_scan(args.moving, "--moving")
    moving_labels = read_scan(args.moving_labels, "--moving-labels", labels=True) if args.moving_labels else None
    fixed_labels = read_scan(args.fixed_labels, "--fixed-labels", labels=True) if args.fixed_labels else None
    if fixed_labels is not None and moving_labels is None:
        raise CLIError("--fixed-labels needs --moving-labels too (Dice compares the warped moving labels)")
    ndim = check_same_dims(*(s for s in (fixed, moving, moving_labels, fixed_labels) if s is not None))
    _check_labels(moving_labels, moving, "--moving-labels")
    _check_labels(fixed_labels, fixed, "--fixed-labels")
    roles = ("--fixed-landmarks", "--moving-landmarks")
    landmarks = read_pair_landmarks(args.fixed_landmarks, args.moving_landmarks, fixed, moving, roles)
    device = parse_device(args.device)
    names = ["warped.nii.gz", "ddf.nii.gz", "affine.txt", "metrics.json"]
    names += ["warped_labels.nii.gz"] if moving_labels else []
    names += ["inverse_ddf.nii.gz"] if args.inverse else []
    inputs = [args.fixed, args.moving, args.moving_labels, args.fixed_labels, args.weights]
    inputs += [args.fixed_landmarks, args.moving_landmarks]
    outputs = OutputSet(args.out_dir, names, overwrite=args.overwrite, inputs=inputs)
    bundle = load_bundle_model(ndim, device, args.bundle, args.weights, args.precision)

    callback, bar = refine_progress(args)
    result = register_pair(
        fixed,
        moving,
        bundle,
        args.refine,
        args.refine_lr,
        moving_labels,
        fixed_labels,
        callback,
        affine=args.affine,
        preset=preset_of(args),
        resolution=getattr(args, "resolution", None),
        similarity=args.similarity,
        inverse=args.inverse,
        fixed_landmarks=landmarks[0],
        moving_landmarks=landmarks[1],
    )
    if bar is not None:
        bar.close()
    metrics = {
        "fixed": str(fixed.path),
        "moving": str(moving.path),
        "weights": str(bundle.weights),
        "device": str(device),
        **result.metrics,
    }
    with outputs:
        outputs.write_nifti("warped.nii.gz", result.warped, fixed)
        outputs.write_with(
            "ddf.nii.gz", lambda p: write_itk_displacement(p, result.displacement, fixed.affine, overwrite=True)
        )
        if result.inverse_displacement is not None:
            inverse = result.inverse_displacement
            outputs.write_with(
                "inverse_ddf.nii.gz", lambda p: write_itk_displacement(p, inverse, moving.affine, overwrite=True)
            )
        if result.warped_labels is not None:
            outputs.write_nifti("warped_labels.nii.gz", result.warped_labels, fixed, moving_labels.file_dtype)
        outputs.write_with("affine.txt", lambda p: write_itk_affine(p, result.affine))
        outputs.write_json("metrics.json", metrics)
        outputs.commit()
    if not args.quiet:
        shown = {k: v for k, v in metrics.items() if k in ("mean_dice_before", "mean_dice", "folding_percent")}
        if "tre_mm" in metrics:
            tre = metrics["tre_mm"]
            shown["tre_mm"] = f"{tre['before']['mean']:.2f} -> {tre['after']['mean']:.2f}"
        if "loss_refined" in metrics:
            shown["loss"] = f"{metrics['loss_network']:.4f} -> {metrics['loss_refined']:.4f}"
        shown["seconds"] = round(metrics["seconds"], 2)
        print(f"registered {moving.path.name} to {fixed.path.name}: {json.dumps(shown)} -> {args.out_dir}")
