"""``monai-vmorph learn2reg``: Learn2Reg submission fields for a dataset split, with Learn2Reg's own metrics.

Learn2Reg's evaluation (``evaluation/evaluation.py`` of the MDL-UzL/L2R repository) reads, for every pair
``{"fixed": ".../<TASK>_FFFF_ffff.nii.gz", "moving": ".../<TASK>_MMMM_mmmm.nii.gz"}`` of its list, a file
``disp_FFFF_ffff_MMMM_mmmm.npz`` or ``.nii.gz`` (case ids ``FFFF``/``MMMM`` and modalities ``ffff``/``mmmm``
sliced from the file names); the short name ``disp_FFFF_MMMM`` is accepted only for a fixed modality ``0000`` and
a moving modality ``0001``. The field has the fixed image's shape plus a last axis of 3, ``(H, W, D, 3)``, and
holds displacements in voxels of the moving image's index space: fixed voxel ``x`` is compared with moving index
``x + disp[x]`` (``scipy.ndimage.map_coordinates`` pull-back). A ``.npz`` holds one array (float16 keeps
submissions small; Learn2Reg casts to float32), a ``.nii.gz`` is read with ``get_fdata`` (NIfTI has no float16,
so float32).

The field is built from the pipeline's physical displacement (RAS mm on the fixed grid, affine pre-alignment
included) and the two scans' affines, so scans on different grids are handled exactly.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_vmorph.cli.batch import BatchRun, PairResults, distinct_provenance
from monai_vmorph.cli.errors import CLIError
from monai_vmorph.cli.evaluate import summarise
from monai_vmorph.cli.model import parse_device
from monai_vmorph.cli.register import check_pair_files, preset_of, read_pair_landmarks, register_listed_pair
from monai_vmorph.data.keys import FIXED_IMAGE, FIXED_LANDMARKS, MOVING_IMAGE, MOVING_LANDMARKS
from monai_vmorph.data.learn2reg import find_learn2reg_json, learn2reg_datalist
from monai_vmorph.io import voxel_landmarks
from monai_vmorph.io.atomic import atomic_write
from monai_vmorph.metrics.learn2reg import (
    learn2reg_dice,
    learn2reg_hd95,
    learn2reg_sdlogj,
    learn2reg_tre,
    learn2reg_warp_labels,
)
from monai_vmorph.pipeline import (
    NativeScan,
    OutputSet,
    load_bundle_model,
    nifti_like,
    read_scan,
)

__all__ = ["learn2reg_case", "learn2reg_displacement", "learn2reg_field_name", "run_learn2reg"]

_CASE = re.compile(r"_(\d{4})_(\d{4})\.nii\.gz$")
RECORDS = ".pairs"  # the per-pair records (monai_vmorph.cli.batch), hidden beside the submission's fields
_OURS = ("mean_dice_before", "mean_dice", "folding_percent", "sdlogj", "seconds")


def learn2reg_case(path: str | Path) -> tuple[str, str]:
    """``(case id, modality)`` of a Learn2Reg image file ``<TASK>_FFFF_ffff.nii.gz``, e.g. ``("0001", "0000")``.

    Raises:
        CLIError: the file name does not end in ``_<4 digits>_<4 digits>.nii.gz``, so Learn2Reg cannot name its
            field.
    """
    match = _CASE.search(Path(path).name)
    if match is None:
        raise CLIError(
            f"{Path(path).name} is not named as Learn2Reg's images (<TASK>_<case>_<modality>.nii.gz with 4-digit "
            "case and modality, e.g. OASIS_0001_0000.nii.gz); Learn2Reg cannot match its field to a pair"
        )
    return match.group(1), match.group(2)


def learn2reg_field_name(fixed: str | Path, moving: str | Path, short: bool = False) -> str:
    """The stem of the field Learn2Reg looks for: ``disp_FFFF_ffff_MMMM_mmmm``.

    Args:
        fixed, moving: the pair's image files as listed in the dataset JSON.
        short: use ``disp_FFFF_MMMM`` where Learn2Reg accepts it (fixed modality ``0000``, moving ``0001``); the
            long name elsewhere.
    """
    fixed_case, fixed_mod = learn2reg_case(fixed)
    moving_case, moving_mod = learn2reg_case(moving)
    if short and fixed_mod == "0000" and moving_mod == "0001":
        return f"disp_{fixed_case}_{moving_case}"
    return f"disp_{fixed_case}_{fixed_mod}_{moving_case}_{moving_mod}"


def learn2reg_displacement(displacement: np.ndarray, fixed_affine: np.ndarray, moving_affine: np.ndarray) -> np.ndarray:
    """Physical displacement on the fixed grid -> Learn2Reg's field in voxels of the moving grid.

    ``disp[x] = inv(A_moving) @ (A_fixed @ x + displacement[x]) - x``: the moving index that fixed voxel ``x``
    pulls its value from, minus ``x`` (conventions in :mod:`monai_vmorph.io.spaces`).

    Args:
        displacement: RAS mm on the fixed grid, ``(*S_fixed, ndim)`` (``PairResult.displacement``).
        fixed_affine, moving_affine: the grids' ``(ndim + 1)``-square voxel-to-RAS affines (``NativeScan.affine``).

    Returns:
        float64 ``(*S_fixed, ndim)``.
    """
    displacement = np.asarray(displacement, dtype=np.float64)
    ndim = displacement.shape[-1]
    if displacement.ndim != ndim + 1:
        raise ValueError(f"displacement must be (*S, ndim), got shape {displacement.shape}.")
    inverse = np.linalg.inv(np.asarray(moving_affine, dtype=np.float64))
    index_map = inverse @ np.asarray(fixed_affine, dtype=np.float64)  # fixed index -> moving index
    out = displacement @ inverse[:ndim, :ndim].T
    out += index_map[:ndim, ndim]
    offset = index_map[:ndim, :ndim] - np.eye(ndim)
    for axis, n in enumerate(displacement.shape[:-1]):
        coordinate = np.arange(n, dtype=np.float64).reshape([n if a == axis else 1 for a in range(ndim)] + [1])
        out += coordinate * offset[:, axis]
    return out


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _learn2reg_metrics(stored: np.ndarray, moving_labels: NativeScan | None, fixed_labels: NativeScan | None) -> dict:
    """Learn2Reg's metrics of the field as written (``stored``'s precision)."""
    metrics: dict = {"LogJacDetStd": learn2reg_sdlogj(stored)}
    if moving_labels is not None and fixed_labels is not None:
        fixed, moving = fixed_labels.array, moving_labels.array
        labels = sorted(int(v) for v in np.union1d(np.unique(fixed), np.unique(moving)) if v != 0)
        warped = learn2reg_warp_labels(moving, stored)
        for name, function in (("DSC", learn2reg_dice), ("HD95", learn2reg_hd95)):
            mean, scores = function(fixed, moving, warped, labels)
            metrics[name] = _json_number(mean)
            metrics[f"{name}_per_label"] = {str(k): _json_number(v) for k, v in zip(labels, scores, strict=True)}
    return metrics


def _aggregate(cases: list[dict]) -> dict:
    """Learn2Reg's aggregates over the cases: mean, std and its ``"30"`` quantile (0.7 for SDlogJ, else 0.3, TRE
    included, as its evaluation script does)."""
    out = {}
    for name in ("LogJacDetStd", "DSC", "HD95", "TRE"):
        if all(name in c for c in cases):
            values = np.array([np.nan if c[name] is None else c[name] for c in cases], dtype=float)
            quantile = 0.7 if name == "LogJacDetStd" else 0.3
            out[name] = {
                "mean": float(values.mean()),
                "std": float(values.std()),
                "30": float(np.quantile(values, quantile)),
            }
    return out


def run_learn2reg(args: argparse.Namespace) -> None:
    json_path = find_learn2reg_json(args.dataset)
    pairs = learn2reg_datalist(json_path, splits=(args.split,))[args.split]
    if not pairs:
        raise CLIError(f"{json_path} lists no pairs in {args.split!r}; nothing to do")
    suffix = "." + args.format
    names = [learn2reg_field_name(p[FIXED_IMAGE], p[MOVING_IMAGE], args.short_names) + suffix for p in pairs]
    if len(set(names)) != len(names):
        repeated = next(n for n in names if names.count(n) > 1)
        raise CLIError(f"{json_path} lists the pair of {repeated} twice in {args.split!r}; remove the repeat")
    check_pair_files(pairs)
    run = BatchRun(args, pairs, ["metrics.json"], [json_path], ("format", "short_names"), folder=RECORDS)
    device = parse_device(args.device)
    out_dir = Path(args.out_dir)
    with run:
        todo = run.todo("field", out_dir, lambda i: names[i])
        if not args.overwrite:  # a field that no run of this command made is never replaced without --overwrite
            strays = [out_dir / names[i] for i in todo if (out_dir / names[i]).exists()]
            if strays:
                raise CLIError(f"{strays[0]} exists; pass --overwrite to replace it or choose another --out-dir")
        start = time.perf_counter()
        _register(pairs, names, todo, run.results, device, args)
        if run.shard is not None:
            print(f"shard {run.shard[0]}/{run.shard[1]}: {len(run.selected)} fields in {out_dir}")
            return
        _write_metrics(json_path, run.stored(), run.outputs, args)
        seconds = time.perf_counter() - start
        print(f"{len(names)} fields ({args.format}) and metrics.json -> {args.out_dir} in {seconds:.0f} s")


def _register(
    pairs: list[dict], names: list[str], todo: list[int], results: PairResults, device, args: argparse.Namespace
) -> None:
    """Register the pairs ``todo`` with one model; each field is written (atomically) and recorded when done."""
    if not todo:
        return
    first = read_scan(pairs[todo[0]][FIXED_IMAGE], "fixed image")
    bundle = load_bundle_model(first.ndim, device, args.bundle, args.weights, args.precision)
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=args.split, unit="pair", file=sys.stderr)
    for n, index in enumerate(todo):
        pair, name = pairs[index], names[index]
        listed = register_listed_pair(pair, first, bundle, args, first if n == 0 else None)
        fixed, moving, moving_labels, fixed_labels, result = listed
        field = learn2reg_displacement(result.displacement, fixed.affine, moving.affine)
        stored = field.astype(np.float16 if args.format == "npz" else np.float32)
        path = Path(args.out_dir) / name
        if args.format == "npz":
            atomic_write(path, lambda p, a=stored: _save_npz(p, a))
        else:
            image = nifti_like(stored, fixed)
            atomic_write(path, lambda p, i=image: nib.save(i, p))
        learn2reg = _learn2reg_metrics(stored, moving_labels, fixed_labels)
        learn2reg.update(_keypoint_tre(pair, stored, fixed, moving))
        row = {k: result.metrics.get(k) for k in _OURS}
        if "dice" in result.metrics:
            row["dice"] = {k: _json_number(v) for k, v in result.metrics["dice"].items()}
        if "tre_mm" in result.metrics:
            row["tre_mm"] = result.metrics["tre_mm"]
        record = {"fixed": Path(pair[FIXED_IMAGE]).name, "moving": Path(pair[MOVING_IMAGE]).name, "field": name}
        record |= {"learn2reg": learn2reg, "ours": row, "weights": str(bundle.weights)}
        record["provenance"] = result.metrics.get("provenance")
        results.write(index, record)
        if bar is not None:
            bar.update(1)
            if "DSC" in learn2reg and learn2reg["DSC"] is not None:
                bar.set_postfix(dsc=f"{learn2reg['DSC']:.3f}")
    if bar is not None:
        bar.close()


def _keypoint_tre(pair: dict, stored: np.ndarray, fixed: NativeScan, moving: NativeScan) -> dict:
    """Learn2Reg's TRE of the field as written where the pair has keypoints (:func:`learn2reg_tre`)."""
    if not (pair.get(FIXED_LANDMARKS) and pair.get(MOVING_LANDMARKS)):
        return {}
    roles = ("fixed keypoints", "moving keypoints")
    points = read_pair_landmarks(pair[FIXED_LANDMARKS], pair[MOVING_LANDMARKS], fixed, moving, roles)
    fixed_index, moving_index = voxel_landmarks(points[0], fixed.affine), voxel_landmarks(points[1], moving.affine)
    spacing = np.sqrt((np.asarray(moving.affine)[:-1, :-1] ** 2).sum(axis=0))
    return {"TRE": float(learn2reg_tre(fixed_index, moving_index, stored, spacing).mean())}


def _write_metrics(json_path: Path, records: list[dict], outputs: OutputSet, args: argparse.Namespace) -> None:
    aggregates = _aggregate([r["learn2reg"] for r in records])
    metrics = {
        "dataset": str(json_path),
        "split": args.split,
        "weights": records[0]["weights"],
        "device": str(parse_device(args.device)),
        "preset": preset_of(args),
        "refine_steps": args.refine,
        "format": args.format,
        "provenance": distinct_provenance(records),
        "learn2reg_aggregates": aggregates,
        "ours_summary": summarise([r["ours"] for r in records]),
        "pairs": [{k: v for k, v in r.items() if k not in ("weights", "provenance")} for r in records],
    }
    outputs.write_json("metrics.json", metrics)
    outputs.commit()
    for key, value in aggregates.items():
        print(f"learn2reg {key}: {value['mean']:.4f} ± {value['std']:.4f}")


def _save_npz(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
        np.savez_compressed(f, disp=array)
