"""The validation history of a training run: one CSV row per validation, kept across resumed runs.

MONAI's ``MetricsSaver`` rewrites ``metrics.csv`` with the latest validation only, and names per-class columns
``class0``, ``class1``... :class:`MetricsHistory` appends one row per validation to ``metrics_history.csv``::

    epoch,val_folding,val_hd95,val_mean_dice,val_sdlogj,dice_CSF,dice_GM,dice_WM
    5,0.0012,3.41,0.7102,0.081,0.59,0.71,0.83

with the trainer's epoch, every scalar metric of the evaluator and per-label columns named by the dataset JSON's
label names (:func:`monai_vmorph.data.learn2reg_label_names`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from monai_vmorph.data.label_names import label_column_names, learn2reg_label_names
from monai_vmorph.io.atomic import atomic_write

__all__ = ["MetricsHistory", "read_history"]


def read_history(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a history CSV as dicts (``[]`` when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _per_label_means(details: torch.Tensor | None, count: int) -> list[float]:
    """Mean over images of each label's column of a ``(N, L)`` metric-details tensor (NaN entries skipped)."""
    if not isinstance(details, torch.Tensor) or details.ndim != 2 or details.shape[1] != count:
        return [math.nan] * count
    values = details.detach().double().cpu()
    return [float(col[~torch.isnan(col)].mean()) if (~torch.isnan(col)).any() else math.nan for col in values.T]


class MetricsHistory:
    """Append one row per validation to a CSV: the epoch, the scalar metrics, per-label values named by label.

    Attach it to the validation evaluator. The epoch is the evaluator's ``state.epoch``, which MONAI's
    ``ValidationHandler`` sets to the trainer's epoch. Rows are appended; rows of epochs at or after the current
    one (a run interrupted between a validation and its checkpoint, or a new run in the same folder) are dropped
    first, in one atomic rewrite, so a resumed run keeps exactly one row per validation. A change of columns (other
    metrics or labels) also rewrites the file, with the union of the columns. Only rank 0 writes.

    Args:
        output_dir: folder of the CSV.
        labels: the label values scored (the order of the metrics' channels), e.g. ``[1, 2, 3]``.
        dataset: the Learn2Reg dataset folder or JSON whose ``"labels"`` names the columns (``None``: values).
        label_names: names to use instead of the dataset's (``{value: name}``).
        per_label: ``{metric name: column prefix}`` of the metrics whose per-label details get columns.
        filename: name of the CSV.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        labels: Sequence[int],
        dataset: str | os.PathLike | None = None,
        label_names: Mapping[int, str] | None = None,
        per_label: Mapping[str, str] | None = None,
        filename: str = "metrics_history.csv",
    ) -> None:
        self.path = Path(output_dir) / filename
        self.labels = [int(v) for v in labels]
        names = dict(learn2reg_label_names(dataset))
        names.update({int(k): str(v) for k, v in (label_names or {}).items()})
        self.label_names = names
        self.per_label = dict(per_label if per_label is not None else {"val_mean_dice": "dice"})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def row(self, engine: Engine) -> dict[str, float | int]:
        """The row of the validation that just completed."""
        state = engine.state
        row: dict[str, float | int] = {"epoch": int(state.epoch)}
        for name, value in sorted(state.metrics.items()):
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[name] = float(value)
        details = getattr(state, "metric_details", None) or {}
        for metric, prefix in self.per_label.items():
            if metric not in state.metrics:
                continue
            columns = label_column_names(self.labels, self.label_names, prefix)
            row.update(zip(columns, _per_label_means(details.get(metric), len(self.labels)), strict=True))
        return row

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        self.append(self.row(engine))

    def append(self, row: Mapping[str, float | int]) -> None:
        """Append ``row``, first dropping rows of its epoch or later (see the class docs)."""
        old = read_history(self.path)
        kept = [r for r in old if _epoch(r) < int(row["epoch"])]
        fields = list(row)
        old_fields = list(old[0]) if old else []
        if old and (len(kept) != len(old) or old_fields != fields):
            if kept:  # keep the old columns, add new ones at the end
                fields = ["epoch"] + [f for f in old_fields + fields if f != "epoch"]
                fields = list(dict.fromkeys(fields))
            rows = [*kept, row]

            def write(tmp: Path) -> None:
                with open(tmp, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=fields, restval="")
                    writer.writeheader()
                    writer.writerows(_formatted(r) for r in rows)

            atomic_write(self.path, write)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields, restval="")
        if not old:
            writer.writeheader()
        writer.writerow(_formatted(row))
        with open(self.path, "a" if old else "w", newline="") as f:
            f.write(text.getvalue())


def _epoch(row: Mapping[str, str]) -> int:
    try:
        return int(row.get("epoch", ""))
    except ValueError:
        return -1


def _formatted(row: Mapping[str, object]) -> dict[str, object]:
    return {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
