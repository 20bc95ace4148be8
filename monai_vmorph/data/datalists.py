"""Datalists: lists of *subject* dicts ``{"image", "label" (optional), "name"}`` from common layouts.

Every function returns absolute path strings and raises :class:`~monai_vmorph.data.errors.DataError`
(one line naming the offending path) for missing files or malformed lists, so a bad dataset is reported
before training starts. Supported layouts:

- a folder of images with an optional folder of labels of the same file names (:func:`folder_datalist`);
- a Learn2Reg dataset folder with ``<name>_dataset.json`` (:func:`learn2reg_datalist`, in
  :mod:`monai_vmorph.data.learn2reg`);
- the neurite-OASIS layout, one folder per subject (:func:`neurite_oasis_datalist`);
- a CSV of pairs with ``moving,fixed`` columns (:func:`csv_pairs`).

:func:`check_dimensionality` (in :mod:`monai_vmorph.data.headers`) reads only the image headers to reject
a list that mixes 2D and 3D images.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from ._paths import name_from_path, require_dir, require_file
from .errors import DataError
from .headers import check_dimensionality
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
from .learn2reg import learn2reg_datalist

__all__ = [
    "NEURITE_OASIS_FILES",
    "check_dimensionality",
    "csv_pairs",
    "folder_datalist",
    "learn2reg_datalist",
    "neurite_oasis_datalist",
]

# neurite-OASIS (https://github.com/adalca/medical-datasets): per-subject file names of each variant.
NEURITE_OASIS_FILES = {
    "3d": {"image": "aligned_norm.nii.gz", "segs": ("seg35", "seg4"), "label": "aligned_{seg}.nii.gz"},
    "2d": {"image": "slice_norm.nii.gz", "segs": ("seg24", "seg4"), "label": "slice_{seg}.nii.gz"},
}
_CHANNEL_SUFFIX = re.compile(r"_\d{4}(?=\.[^_]*$)")  # nnU-Net channel suffix: "x_0000.nii.gz" -> "x.nii.gz"


def folder_datalist(
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike | None = None,
    pattern: str = "*.nii*",
    require_labels: bool = False,
) -> list[dict[str, str]]:
    """Subjects from a folder of images, with labels matched by file name in ``labels_dir``.

    A label is the file of the same name in ``labels_dir`` (Learn2Reg style, ``imagesTr/x_0000.nii.gz`` and
    ``labelsTr/x_0000.nii.gz``) or, failing that, the name without the nnU-Net channel suffix
    (``imagesTr/x_0000.nii.gz`` and ``labelsTr/x.nii.gz``). Hidden files (``.*``) are ignored.

    Args:
        images_dir: folder holding the images.
        labels_dir: optional folder holding the label maps.
        pattern: glob pattern selecting the image files inside ``images_dir``.
        require_labels: raise if an image has no label (needs ``labels_dir``).

    Returns:
        Subjects ``{"image", "label" (when found), "name"}`` sorted by file name; ``name`` is the file name
        without its extension.

    Raises:
        DataError: a folder does not exist, no file matches ``pattern``, or a required label is missing.
    """
    images = require_dir(images_dir, "images folder")
    labels = require_dir(labels_dir, "labels folder") if labels_dir is not None else None
    if require_labels and labels is None:
        raise DataError(f"labels are required for the images in {images} but no labels folder was given; pass one.")
    files = sorted(p for p in images.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"images folder {images} holds no file matching {pattern!r}; check the folder and pattern.")
    subjects = []
    for path in files:
        subject = {IMAGE: str(path), NAME: name_from_path(path)}
        if labels is not None:
            candidates = [labels / path.name, labels / _CHANNEL_SUFFIX.sub("", path.name)]
            found = next((c for c in candidates if c.is_file()), None)
            if found is not None:
                subject[LABEL] = str(found)
            elif require_labels:
                raise DataError(
                    f"image {path} has no label in {labels} (looked for {candidates[0].name}); "
                    "add the label file or drop the image."
                )
        subjects.append(subject)
    return subjects


def neurite_oasis_datalist(
    root: str | os.PathLike, seg: str | None = "auto", variant: str = "3d"
) -> list[dict[str, str]]:
    """Subjects of the neurite-OASIS layout: one folder per subject (e.g. ``OASIS_OAS1_0001_MR1/``).

    3D (``variant="3d"``): ``aligned_norm.nii.gz`` with ``aligned_seg35.nii.gz`` or ``aligned_seg4.nii.gz``.
    2D (``variant="2d"``): ``slice_norm.nii.gz`` with ``slice_seg24.nii.gz`` or ``slice_seg4.nii.gz``.
    Sub-folders without the image file are skipped.

    Args:
        root: the folder holding the subject folders.
        seg: which segmentation to use as label: ``"auto"`` (the finest: ``seg35`` in 3D, ``seg24`` in 2D),
            ``"seg4"``, ``"seg35"`` (3D), ``"seg24"`` (2D), or ``None`` for images only.
        variant: ``"3d"`` or ``"2d"``.

    Returns:
        Subjects ``{"image", "label" (unless ``seg`` is None), "name"}`` sorted by folder name; ``name`` is the
        subject folder name.

    Raises:
        ValueError: ``variant`` or ``seg`` is not one of the values above.
        DataError: ``root`` does not exist, holds no subject, or a subject lacks the requested segmentation.
    """
    if variant not in NEURITE_OASIS_FILES:
        raise ValueError(f"variant must be '3d' or '2d', got {variant!r}.")
    spec = NEURITE_OASIS_FILES[variant]
    if seg == "auto":
        seg = spec["segs"][0]
    if seg is not None and seg not in spec["segs"]:
        raise ValueError(f"seg must be 'auto', None or one of {spec['segs']} for variant {variant!r}, got {seg!r}.")
    folder = require_dir(root, "neurite-OASIS folder")
    subjects = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        image = sub / spec["image"]
        if not image.is_file():
            continue
        subject = {IMAGE: str(image), NAME: sub.name}
        if seg is not None:
            subject[LABEL] = require_file(sub / spec["label"].format(seg=seg), f"{seg} label")
        subjects.append(subject)
    if not subjects:
        raise DataError(
            f"neurite-OASIS folder {folder} holds no subject folder with {spec['image']}; "
            f"pass the folder that holds OASIS_OAS1_*_MR1/ (variant={variant!r})."
        )
    return subjects


def csv_pairs(csv_path: str | os.PathLike) -> list[dict[str, str]]:
    """Pairs from a CSV with header columns ``moving,fixed`` and optional ``moving_label,fixed_label`` and
    ``fixed_landmarks,moving_landmarks`` (landmark files, :mod:`monai_vmorph.io.landmarks`).

    Paths may be absolute or relative to the CSV's folder. Optional ``moving_name``/``fixed_name`` columns set
    the names (default: the file names without extension). An empty label cell means "no label".

    Args:
        csv_path: the CSV file.

    Returns:
        Pairs ``{"moving_image", "fixed_image", "moving_label"/"fixed_label", "moving_landmarks"/"fixed_landmarks"
        (when given), "moving_name", "fixed_name"}`` in file order.

    Raises:
        DataError: the CSV does not exist, lacks the ``moving`` or ``fixed`` column, has an empty required cell,
            or names a file that does not exist.
    """
    path = Path(require_file(csv_path, "pairs CSV"))
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    for column in ("moving", "fixed"):
        if column not in columns:
            raise DataError(
                f"pairs CSV {path} has no {column!r} column (columns: {columns}); "
                "add a header line 'moving,fixed[,moving_label,fixed_label]'."
            )
    pairs = []
    for line, row in enumerate(rows, start=2):
        pair: dict[str, str] = {}
        for column, key in (("moving", MOVING_IMAGE), ("fixed", FIXED_IMAGE)):
            if not row.get(column):
                raise DataError(f"pairs CSV {path} line {line} has an empty {column!r} cell; fill it or drop the line.")
            pair[key] = _csv_file(path, row[column], line)
        optional = (("moving_label", MOVING_LABEL), ("fixed_label", FIXED_LABEL))
        optional += (("moving_landmarks", MOVING_LANDMARKS), ("fixed_landmarks", FIXED_LANDMARKS))
        for column, key in optional:
            if row.get(column):
                pair[key] = _csv_file(path, row[column], line)
        pair[MOVING_NAME] = row.get("moving_name") or name_from_path(pair[MOVING_IMAGE])
        pair[FIXED_NAME] = row.get("fixed_name") or name_from_path(pair[FIXED_IMAGE])
        pairs.append(pair)
    if not pairs:
        raise DataError(f"pairs CSV {path} has a header but no pair; add one line per pair.")
    return pairs


def _csv_file(csv_path: Path, value: str, line: int) -> str:
    """Resolve a CSV cell against the CSV's folder and check the file exists."""
    p = Path(value).expanduser()
    return require_file(p if p.is_absolute() else csv_path.parent / p, "file", f"{csv_path} line {line}")
