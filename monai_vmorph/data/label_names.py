"""Names of a Learn2Reg dataset's label values, from the ``"labels"`` entry of its dataset JSON.

Learn2Reg dataset JSONs (and ``data/brain_2d``/``data/brain_3d``) map label values to names, e.g.
``"labels": {"0": "background", "1": "CSF", "2": "GM", "3": "WM"}``; reports use the names instead of the values.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

from .errors import DataError
from .learn2reg import find_learn2reg_json

__all__ = ["label_column_names", "learn2reg_label_names"]


def learn2reg_label_names(dataset_dir_or_json: str | os.PathLike | None) -> dict[int, str]:
    """``{label value: name}`` from the dataset JSON's ``"labels"`` mapping.

    Args:
        dataset_dir_or_json: the dataset folder (holding one ``*_dataset.json``) or the JSON file; ``None`` gives
            ``{}``.

    Returns:
        The names of the entries whose key is an integer and whose value a non-empty string; ``{}`` when the
        dataset has no JSON or no ``"labels"`` entry (names are a nicety, never an error).
    """
    if dataset_dir_or_json is None:
        return {}
    try:
        content = json.loads(find_learn2reg_json(dataset_dir_or_json).read_text())
    except (DataError, OSError, ValueError):
        return {}
    labels = content.get("labels") if isinstance(content, dict) else None
    if not isinstance(labels, dict):
        return {}
    names = {}
    for key, name in labels.items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            continue
        if isinstance(name, str) and name.strip():
            names[value] = name.strip()
    return names


def label_column_names(labels: Sequence[int], names: dict[int, str], prefix: str) -> list[str]:
    """Column names ``<prefix>_<name>`` for ``labels`` (``<prefix>_<value>`` for a label without a name).

    Characters other than letters, digits, ``-`` and ``.`` become ``_``; a name used by two labels gets the value
    appended (``dice_WM_3``), so columns are always unique.
    """
    stems = [re.sub(r"[^\w.-]+", "_", names.get(int(v), str(int(v)))).strip("_") or str(int(v)) for v in labels]
    columns = []
    for value, stem in zip(labels, stems, strict=True):
        column = f"{prefix}_{stem}"
        if stems.count(stem) > 1 and stem != str(int(value)):
            column = f"{column}_{int(value)}"
        columns.append(column)
    return columns
