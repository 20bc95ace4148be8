"""``monai-vmorph evaluate``: register every pair of a CSV or Learn2Reg JSON, write per-pair and summary metrics."""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path

import numpy as np

from monai_vmorph.cli.batch import BatchRun, PairResults, distinct_provenance
from monai_vmorph.cli.errors import CLIError
from monai_vmorph.cli.model import parse_device
from monai_vmorph.cli.register import check_pair_files, preset_of, register_listed_pair
from monai_vmorph.data.datalists import csv_pairs
from monai_vmorph.data.keys import FIXED_IMAGE, FIXED_NAME, MOVING_IMAGE, MOVING_NAME
from monai_vmorph.data.learn2reg import LEARN2REG_PAIR_SPLITS, learn2reg_datalist
from monai_vmorph.pipeline import OutputSet, load_bundle_model, read_scan

__all__ = ["read_pairs", "run_evaluate", "summarise"]

COLUMNS = (
    "moving",
    "fixed",
    "mean_dice_before",
    "mean_dice",
    "folding_percent",
    "sdlogj",
    "tre_mm_before",
    "tre_mm_affine",
    "tre_mm_after",
    "seconds",
)
_TRE_STAGES = ("before", "affine", "after")  # metrics["tre_mm"] stages: the pair's mean TRE in tre_mm_<stage>


def read_pairs(path: str, split: str = "registration_val") -> list[dict]:
    """Pairs from a CSV (``moving,fixed[,moving_label,fixed_label][,fixed_landmarks,moving_landmarks]``) or a
    Learn2Reg dataset JSON / folder (its keypoints as landmarks)."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        pairs = csv_pairs(p)
    else:
        if split not in LEARN2REG_PAIR_SPLITS:
            raise CLIError(f"--split {split!r} is not a Learn2Reg pair list; use one of {list(LEARN2REG_PAIR_SPLITS)}")
        pairs = learn2reg_datalist(p, splits=(split,))[split]  # only this split's files need to be there
    if not pairs:
        raise CLIError(f"{p} lists no pairs{f' in {split!r}' if p.suffix.lower() != '.csv' else ''}; nothing to do")
    return pairs


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean, std, median, min and max of every numeric column over the pairs (NaNs ignored)."""
    summary = {}
    for key in COLUMNS[2:]:
        values = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            summary[key] = {
                "mean": float(values.mean()),
                "std": float(values.std()),
                "median": float(np.median(values)),
                "min": float(values.min()),
                "max": float(values.max()),
                "count": int(values.size),
            }
    return summary


def _row(pair: dict, fixed, moving, result) -> dict:
    row = {
        "moving": pair.get(MOVING_NAME, moving.path.name),
        "fixed": pair.get(FIXED_NAME, fixed.path.name),
        **{k: result.metrics.get(k) for k in COLUMNS[2:]},
    }
    for stage in _TRE_STAGES:
        row[f"tre_mm_{stage}"] = result.metrics.get("tre_mm", {}).get(stage, {}).get("mean")
    for label, score in result.metrics.get("dice", {}).items():
        row[f"dice_{label}"] = score
    return row


def run_evaluate(args: argparse.Namespace) -> None:
    pairs = read_pairs(args.pairs, args.split)
    check_pair_files(pairs)
    run = BatchRun(args, pairs, ["metrics.csv", "summary.json"], inputs=[args.pairs])
    device = parse_device(args.device)
    with run:
        folder = run.results.folder
        todo = run.todo("result", folder, lambda i: f"pair {i}, {Path(pairs[i][MOVING_IMAGE]).name}")
        _register(pairs, todo, run.results, device, args)
        if run.shard is not None:
            print(f"shard {run.shard[0]}/{run.shard[1]}: {len(run.selected)} pairs in {folder}")
            return
        _summarise(run.stored(), run.outputs, args)


def _register(pairs: list[dict], todo: list[int], results: PairResults, device, args: argparse.Namespace) -> None:
    """Register the pairs ``todo`` (indices) with one model, storing each result as soon as it is done."""
    if not todo:
        return
    first = read_scan(pairs[todo[0]][FIXED_IMAGE], "fixed image")
    bundle = load_bundle_model(first.ndim, device, args.bundle, args.weights, args.precision)
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="pairs", unit="pair", file=sys.stderr)
    for n, index in enumerate(todo):
        pair = pairs[index]
        fixed, moving, _, _, result = register_listed_pair(pair, first, bundle, args, first if n == 0 else None)
        row = _row(pair, fixed, moving, result)
        row["weights"] = str(bundle.weights)  # the file used, for the summary (not a CSV column)
        row["provenance"] = result.metrics.get("provenance")  # likewise
        results.write(index, row)
        if bar is not None:
            bar.update(1)
            if row["mean_dice"] is not None:
                bar.set_postfix(dice=f"{row['mean_dice']:.3f}")
    if bar is not None:
        bar.close()


def _summarise(rows: list[dict], outputs: OutputSet, args: argparse.Namespace) -> None:
    """``metrics.csv`` and ``summary.json`` from every pair's stored row, in the order of the list."""
    columns = list(COLUMNS) + sorted({k for r in rows for k in r if k.startswith("dice_")}, key=lambda k: int(k[5:]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}
        )
    summary = {
        "pairs": len(rows),
        "weights": rows[0].get("weights"),
        "affine": args.affine,
        "preset": preset_of(args),
        "refine_steps": args.refine,
        "provenance": distinct_provenance(rows),
        **summarise(rows),
    }
    outputs.write_text("metrics.csv", buffer.getvalue())
    outputs.write_json("summary.json", summary)
    outputs.commit()
    shown = ("mean_dice_before", "mean_dice", "tre_mm_before", "tre_mm_after", "folding_percent", "sdlogj", "seconds")
    for key in shown:
        if key in summary:
            print(f"{key}: {summary[key]['mean']:.4f} ± {summary[key]['std']:.4f}")
    print(f"{len(rows)} pairs -> {Path(args.out_dir) / 'metrics.csv'}")
