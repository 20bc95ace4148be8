"""Learn2Reg datasets: ``<name>_dataset.json`` with ``training``, ``registration_val`` and ``registration_test``.

Layout (paths in the JSON are relative to the folder holding it)::

    <dataset>/<name>_dataset.json
    <dataset>/imagesTr/<case>_0000.nii.gz
    <dataset>/labelsTr/<case>_0000.nii.gz     (or masksTr/)

This is the layout of Learn2Reg's downloads (e.g. ``OASIS/OASIS_dataset.json`` with
``./imagesTr/OASIS_0001_0000.nii.gz``; training entries may also carry ``mask`` and ``landmarks`` keys, and other
top-level keys such as ``tensorImageShape`` are ignored). A download holds only the files of its phase: the
``registration_test`` list of a validation-phase JSON names test images that are not there yet, so readers ask
for the split they use (``splits``) and the others are not checked.

Every path must resolve inside the dataset folder: ``../``, absolute paths elsewhere and symlinks leading out
are rejected, so a downloaded JSON cannot make the loaders read arbitrary files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._paths import abspath, name_from_path, require_file
from .errors import DataError
from .keys import (
    FIXED_IMAGE,
    FIXED_LABEL,
    FIXED_LANDMARKS,
    FIXED_NAME,
    IMAGE,
    LABEL,
    MOVING_IMAGE,
    MOVING_LABEL,
    MOVING_LANDMARKS,
    MOVING_NAME,
    NAME,
)

__all__ = ["LEARN2REG_PAIR_SPLITS", "find_learn2reg_json", "learn2reg_datalist"]

LEARN2REG_PAIR_SPLITS = ("registration_val", "registration_test")
_LABEL_FOLDERS = ("labels", "masks")  # label look-up order: labels<Split>/, then masks<Split>/


def find_learn2reg_json(dataset_dir_or_json: str | os.PathLike) -> Path:
    """The dataset JSON: ``dataset_dir_or_json`` itself if it is a file, else the single ``*_dataset.json`` inside.

    Raises:
        DataError: the path does not exist, or the folder holds no or several ``*_dataset.json``.
    """
    path = Path(abspath(dataset_dir_or_json))
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"Learn2Reg dataset {path} does not exist; pass the dataset folder or its *_dataset.json.")
    # "._X_dataset.json": the AppleDouble companions that archives made on macOS leave next to the real file
    found = sorted(p for p in path.glob("*_dataset.json") if p.is_file() and not p.name.startswith("._"))
    if not found:
        raise DataError(
            f"{path} is not a Learn2Reg dataset: it holds no *_dataset.json file; pass the folder that holds the "
            "dataset's <name>_dataset.json, imagesTr/ and labelsTr/."
        )
    if len(found) > 1:
        raise DataError(
            f"Learn2Reg dataset folder {path} holds {len(found)} *_dataset.json files "
            f"({', '.join(p.name for p in found)}); pass the JSON file to use instead of the folder."
        )
    return found[0]


def learn2reg_datalist(
    dataset_dir_or_json: str | os.PathLike, splits: Sequence[str] = LEARN2REG_PAIR_SPLITS
) -> dict[str, list[dict[str, str]]]:
    """Subjects and evaluation pairs of a Learn2Reg dataset.

    Labels of the pair images are taken from the matching ``training`` entries or, failing that, from the file
    of the same name in ``labelsTr/`` (``labels<Split>/`` for images in ``images<Split>/``), then ``masksTr/``.
    Training entries without a ``label`` (or ``mask``) key are completed the same way. Keypoints (Learn2Reg's
    landmark CSVs) come from an entry's ``keypoints`` key or ``keypoints<Split>/<name>.csv``; a pair lists them
    (``moving_landmarks``/``fixed_landmarks``) when both of its scans have them.

    Args:
        dataset_dir_or_json: the dataset folder (holding exactly one ``*_dataset.json``) or the JSON file.
        splits: the pair list(s) to read, of :data:`LEARN2REG_PAIR_SPLITS` (default both); only their files are
            checked.

    Returns:
        ``{"training": [subjects], <split>: [pairs] for each of splits}``; subjects are
        ``{"image", "label" (when found), "name"}``, pairs ``{"moving_image", "fixed_image", "moving_label",
        "fixed_label" (when found), "moving_name", "fixed_name"}``; names are file names without extension.
        A split absent from the JSON gives an empty list.

    Raises:
        DataError: the JSON is missing or invalid, lacks ``training``, has a malformed entry, or lists a path that
            leaves the dataset folder or does not exist.
    """
    json_path = find_learn2reg_json(dataset_dir_or_json)
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    for split in splits:
        if split not in LEARN2REG_PAIR_SPLITS:
            raise DataError(f"Learn2Reg split {split!r} is not a pair list; use one of {list(LEARN2REG_PAIR_SPLITS)}.")
    try:
        with open(json_path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"Learn2Reg JSON {json_path} cannot be read ({e}); fix or re-download it.") from None
    if not isinstance(content, Mapping):
        raise DataError(f"Learn2Reg JSON {json_path} must hold an object, got {type(content).__name__}.")
    resolver = _Resolver(json_path)
    training = _entries(content, "training", json_path, required=True)
    if not training:
        raise DataError(f"Learn2Reg JSON {json_path} has an empty 'training' list; add the training images.")
    subjects = []
    keypoints: dict[str, str | None] = {}  # image -> its Learn2Reg keypoint CSV
    for i, entry in enumerate(training):
        where = f"training[{i}]"
        image = resolver.file(_field(entry, IMAGE, where, json_path), f"{where}.image")
        label = entry.get(LABEL, entry.get("mask"))
        subject = {IMAGE: image, NAME: name_from_path(image)}
        label_path = resolver.file(label, f"{where}.label") if label is not None else resolver.sibling_label(image)
        if label_path is not None:
            subject[LABEL] = label_path
        points = entry.get("keypoints")
        points_path = resolver.file(points, f"{where}.keypoints") if points is not None else None
        keypoints[image] = points_path or resolver.sibling_keypoints(image)
        subjects.append(subject)
    labels = {s[IMAGE]: s[LABEL] for s in subjects if LABEL in s}
    out: dict[str, list[dict[str, str]]] = {"training": subjects}
    for split in splits:
        pairs = []
        for i, entry in enumerate(_entries(content, split, json_path, required=False)):
            where = f"{split}[{i}]"
            for role in ("moving", "fixed"):  # report a missing key before any missing file
                _field(entry, role, where, json_path)
            pair = {}
            for role, image_key, label_key, name_key in (
                ("moving", MOVING_IMAGE, MOVING_LABEL, MOVING_NAME),
                ("fixed", FIXED_IMAGE, FIXED_LABEL, FIXED_NAME),
            ):
                image = resolver.file(_field(entry, role, where, json_path), f"{where}.{role}")
                pair[image_key] = image
                label_path = labels.get(image) or resolver.sibling_label(image)
                if label_path is not None:
                    pair[label_key] = label_path
                pair[name_key] = name_from_path(image)
            points = [
                keypoints.get(pair[k]) or resolver.sibling_keypoints(pair[k]) for k in (MOVING_IMAGE, FIXED_IMAGE)
            ]
            if all(points):  # landmarks only where both scans have them
                pair[MOVING_LANDMARKS], pair[FIXED_LANDMARKS] = points
            pairs.append(pair)
        out[split] = pairs
    return out


class _Resolver:
    """Resolves the JSON's paths against the dataset folder, rejecting paths that leave it."""

    def __init__(self, json_path: Path) -> None:
        self.json_path = json_path
        self.root = json_path.parent
        self.real_root = self.root.resolve()

    def file(self, value: Any, where: str) -> str:
        """The absolute path of an existing file listed in the JSON at ``where``."""
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"Learn2Reg JSON {self.json_path}: {where} must be a path string, got {value!r}.")
        candidate = Path(value)
        candidate = candidate if candidate.is_absolute() else self.root / candidate
        real = candidate.resolve()
        if not real.is_relative_to(self.real_root):
            raise DataError(
                f"{where} = {value!r} in Learn2Reg JSON {self.json_path} resolves to {real}, outside the dataset "
                f"folder {self.real_root}; keep every file inside the dataset folder (no '../', outside absolute "
                "paths or symlinks leading out)."
            )
        return require_file(candidate, "file", f"{self.json_path} at {where}")

    def sibling_keypoints(self, image: str) -> str | None:
        """The Learn2Reg keypoint CSV of ``image``: ``keypoints<Split>/<name>.csv`` (then ``keypointsTr/``)."""
        path = Path(image)
        split = path.parent.name[len("images") :] if path.parent.name.startswith("images") else "Tr"
        stem = name_from_path(image)
        for folder in dict.fromkeys(("keypoints" + split, "keypointsTr")):
            candidate = self.root / folder / f"{stem}.csv"
            if candidate.is_file() and candidate.resolve().is_relative_to(self.real_root):
                return abspath(candidate)
        return None

    def sibling_label(self, image: str) -> str | None:
        """The label of ``image`` found by file name in ``labels<Split>/``, ``labelsTr/``, ``masks<Split>/``, ..."""
        path = Path(image)
        split = path.parent.name[len("images") :] if path.parent.name.startswith("images") else "Tr"
        for prefix in _LABEL_FOLDERS:
            for folder in dict.fromkeys((prefix + split, prefix + "Tr")):
                candidate = self.root / folder / path.name
                if candidate.is_file() and candidate.resolve().is_relative_to(self.real_root):
                    return abspath(candidate)
        return None


def _entries(content: Mapping, key: str, json_path: Path, required: bool) -> list[Mapping]:
    """The list of dict entries under ``key``."""
    if key not in content:
        if required:
            raise DataError(f"Learn2Reg JSON {json_path} has no {key!r} key; add the list of {key} entries.")
        return []
    entries = content[key]
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise DataError(f"Learn2Reg JSON {json_path}: {key!r} must be a list of objects, got {entries!r:.80}.")
    return entries


def _field(entry: Mapping, key: str, where: str, json_path: Path) -> Any:
    """``entry[key]``, raising a :class:`DataError` naming the JSON and the entry when absent."""
    if key not in entry:
        raise DataError(f"Learn2Reg JSON {json_path}: {where} has no {key!r} key (got keys {sorted(entry)}).")
    return entry[key]
