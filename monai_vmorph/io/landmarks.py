"""Landmark files as users have them, read to world points (RAS mm, :mod:`monai_vmorph.io.spaces`' convention).

Formats (by file name):

* **Learn2Reg keypoints** (``.csv``, and any other name): one point per row, ``ndim`` comma-separated **voxel
  indices** of the image's NIfTI array in nibabel's axis order (continuous, not rounded), no header. They are placed
  by the image's affine (the header rule of :mod:`monai_vmorph.io.nifti`), so the image must be given. Row ``n`` of a
  fixed file corresponds to row ``n`` of the moving file.
* **3D Slicer markups CSV** (``.fcsv``): ``#`` comment lines, then ``id,x,y,z,...`` rows in millimetres. The
  coordinate system is the ``# CoordinateSystem = LPS|RAS`` comment (``0`` = RAS, ``1`` = LPS in Slicer 4.x);
  without one, RAS (files written before Slicer 4.11).
* **3D Slicer markups JSON** (``.mrk.json``): the control points of every markup, ``position`` in millimetres of the
  markup's ``coordinateSystem`` (``"LPS"`` when absent, the schema's default).

For 2D images the points are taken in the image plane: a 2D keypoints CSV has two columns, a Slicer point its
(x, y) in RAS (the plane of :func:`monai_vmorph.io.affine_2d`).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from monai_vmorph.errors import UserError

__all__ = ["landmark_format", "read_landmarks", "voxel_landmarks"]

_LPS = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS: x and y negated


def landmark_format(path: str | os.PathLike) -> str:
    """``"fcsv"``, ``"mrk.json"`` or ``"csv"`` (Learn2Reg keypoints; every other name) by the file name."""
    name = Path(path).name.lower()
    if name.endswith(".fcsv"):
        return "fcsv"
    if name.endswith(".json"):
        return "mrk.json"
    return "csv"


def _keypoints(path: Path, role: str, ndim: int) -> np.ndarray:
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row if c.strip()]
            if not cells:
                continue
            try:
                values = [float(c) for c in cells]
            except ValueError:
                raise UserError(
                    f"{role} {path} line {number} is not {ndim} numbers ({','.join(cells)[:60]}); a Learn2Reg keypoint "
                    "CSV holds one point per line, voxel indices i,j,k, no header"
                ) from None
            if len(values) != ndim:
                raise UserError(
                    f"{role} {path} line {number} has {len(values)} values; give {ndim} voxel indices per line "
                    f"for a {ndim}D image"
                )
            rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(-1, ndim)


def _coordinate_system(text: str, role: str, path: Path) -> str:
    value = text.strip().upper()
    mapping = {"RAS": "RAS", "LPS": "LPS", "0": "RAS", "1": "LPS"}
    if value not in mapping:
        raise UserError(f"{role} {path} has coordinate system {text.strip()!r}; Slicer files say LPS or RAS")
    return mapping[value]


def _fcsv(path: Path, role: str) -> np.ndarray:
    system, columns, rows = "RAS", None, []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                key, _, value = text[1:].partition("=")
                if key.strip().lower() == "coordinatesystem":
                    system = _coordinate_system(value, role, path)
                elif key.strip().lower() == "columns":
                    columns = [c.strip() for c in value.split(",")]
                continue
            cells = next(csv.reader([text]))
            index = [columns.index(a) for a in ("x", "y", "z")] if columns and "x" in columns else [1, 2, 3]
            try:
                rows.append([float(cells[k]) for k in index])
            except (ValueError, IndexError):
                raise UserError(f"{role} {path} line {number} has no x,y,z point; is it a Slicer .fcsv file?") from None
    points = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return points * _LPS if system == "LPS" else points


def _mrk_json(path: Path, role: str) -> np.ndarray:
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
        rows = []
        for markup in content["markups"]:
            system = _coordinate_system(markup.get("coordinateSystem", "LPS"), role, path)
            for point in markup.get("controlPoints", []):
                position = np.asarray(point["position"], dtype=np.float64).reshape(3)
                rows.append(position * _LPS if system == "LPS" else position)
    except UserError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise UserError(
            f"{role} {path} is not a Slicer markups JSON file ({type(error).__name__}: {error}); give a .mrk.json "
            "with markups[].controlPoints[].position"
        ) from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def read_landmarks(path: str | os.PathLike, affine: np.ndarray, role: str) -> np.ndarray:
    """The points of a landmark file as world points (RAS mm) of the image with grid ``affine``.

    Args:
        path: a Learn2Reg keypoint CSV, a Slicer ``.fcsv`` or ``.mrk.json`` (module docstring).
        affine: the ``(ndim + 1)``-square RAS affine of the image the points belong to (places voxel keypoints; its
            size says 2D or 3D).
        role: what the file is, for messages (``"--fixed-landmarks"``).

    Returns:
        ``(N, ndim)`` float64 RAS millimetres, in file order.

    Raises:
        UserError: a missing or unreadable file, no point, a row that is not a point, non-finite values.
    """
    p = Path(path)
    ndim = np.asarray(affine).shape[0] - 1
    if not p.is_file():
        raise UserError(f"{role} {p} does not exist; check the path")
    kind = landmark_format(p)
    try:
        if kind == "csv":
            index = _keypoints(p, role, ndim)
            points = (np.c_[index, np.ones(len(index))] @ np.asarray(affine, dtype=np.float64).T)[:, :ndim]
        else:
            points = (_fcsv(p, role) if kind == "fcsv" else _mrk_json(p, role))[:, :ndim]
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{role} {p} cannot be read ({error}); give a landmark file") from None
    if len(points) == 0:
        raise UserError(f"{role} {p} holds no point; give at least one landmark")
    if not np.isfinite(points).all():
        raise UserError(f"{role} {p} has NaN/inf coordinates; fix the file")
    return points


def voxel_landmarks(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World points ``(N, ndim)`` (RAS mm) as continuous voxel indices of the grid ``affine`` (Learn2Reg's form)."""
    points = np.asarray(points, dtype=np.float64)
    return (np.c_[points, np.ones(len(points))] @ np.linalg.inv(affine).T)[:, : points.shape[1]]
