"""Shared pieces of ``bench_accuracy.py``: the pair and settings types, the field conventions and the data of tasks
S and I (split out to keep each file readable; ``bench_accuracy`` re-exports every name)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from monai_vmorph.io import affine_to_itk, resample_displacement, warp_physical
from monai_vmorph.pipeline import NativeScan, read_scan
from monai_vmorph.transforms import RandSyntheticPaird


def mean_std(values: list[float], spec: str) -> str:
    """``"mean ± std"`` (population std) formatted with ``spec``."""
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):{spec}} ± {std:{spec}}"


class NotAvailable(Exception):
    """A method that cannot run here; the message is the reason shown in its row."""


@dataclass
class Pair:
    """One registration problem on the fixed grid; ``ddf_true`` (voxels, ``(1, 3, *S)``) for synthetic pairs."""

    name: str
    fixed: NativeScan
    moving: NativeScan
    fixed_labels: np.ndarray
    moving_labels: np.ndarray
    ddf_true: torch.Tensor | None = None
    aligned: bool = True  # False: the scans are not pre-aligned (task A)
    cross_contrast: bool = False  # the two scans have different contrasts (task C)


@dataclass
class Settings:
    quick: bool
    refine: int
    weights: str | None
    threads: int
    precision: str = "auto"
    emulate: bool = False


# --------------------------------------------------------------------------------------------- conventions
def ras_to_ddf(displacement: np.ndarray, affine: np.ndarray) -> torch.Tensor:
    """A ``(*S, ndim)`` RAS mm displacement on a grid -> our voxel DDF ``(1, ndim, *S)`` on that grid."""
    ndim = displacement.shape[-1]
    voxels = np.asarray(displacement, dtype=np.float64) @ np.linalg.inv(affine[:ndim, :ndim]).T
    return torch.as_tensor(np.moveaxis(voxels, -1, 0)[None].astype(np.float32))


def ddf_to_ras(ddf: torch.Tensor, affine: np.ndarray) -> np.ndarray:
    """Our voxel DDF ``(1, ndim, *S)`` -> ``(*S, ndim)`` RAS mm displacement (float64) on the same grid."""
    ndim = ddf.shape[1]
    return np.moveaxis(ddf[0].double().numpy(), 0, -1) @ np.asarray(affine[:ndim, :ndim], dtype=np.float64).T


def _on_fixed_grid(displacement: np.ndarray, affine: np.ndarray, pair: Pair) -> torch.Tensor:
    """A RAS mm field on grid ``affine`` as our voxel DDF on the fixed grid (resampled if the grids differ)."""
    shape = pair.fixed.array.shape
    if displacement.shape[:-1] != shape or not np.allclose(affine, pair.fixed.affine, atol=1e-4):
        displacement = resample_displacement(displacement, affine, shape, pair.fixed.affine)
    return ras_to_ddf(displacement, pair.fixed.affine)


def _lps_vector_array_to_ras(array_zyx: np.ndarray) -> np.ndarray:
    """SimpleITK/ITK vector array ``(z, y, x, 3)`` of LPS mm vectors -> ``(x, y, z, 3)`` RAS mm."""
    return np.ascontiguousarray(array_zyx.transpose(2, 1, 0, 3)) * np.array([-1.0, -1.0, 1.0])


def _sitk_image(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.astype(np.float32).transpose(2, 1, 0)))
    origin, spacing, direction = affine_to_itk(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


# --------------------------------------------------------------------------------------------- data
def _labels_of(path: str) -> np.ndarray:
    return read_scan(path, "label", labels=True).array


def synthetic_pairs(subjects: list[dict], per_subject: int, seed: int) -> list[Pair]:
    """Task S: every subject warped by known random smooth fields (``per_subject`` seeds each)."""
    pairs = []
    for i, subject in enumerate(subjects):
        scan, labels = read_scan(subject["image"], "image"), _labels_of(subject["label"])
        for k in range(per_subject):
            synth = RandSyntheticPaird()
            synth.set_random_state(seed + 1000 * i + k)
            out = synth({"image": torch.as_tensor(scan.array)[None], "name": subject["name"]})
            ddf_true = out["ddf_true"][None].float()
            shape, affine = scan.array.shape, scan.affine
            fixed_labels = warp_physical(labels, affine, shape, affine, ddf_to_ras(ddf_true, affine), "label")
            fixed = NativeScan(scan.path, out["fixed_image"][0].numpy().astype(np.float32), affine, scan.file_affine)
            name = f"{subject['name'].removesuffix('_0000')} #{k}"
            pairs.append(Pair(name, fixed, scan, fixed_labels, labels, ddf_true))
    return pairs


def inter_subject_pairs(dataset: dict, all_pairs: bool) -> list[Pair]:
    """Task I: ``registration_val`` (fixed <- moving), or every ordered pair of subjects."""
    if all_pairs:
        subjects = dataset["training"]
        items = [(f["image"], f["label"], m["image"], m["label"]) for f in subjects for m in subjects if f is not m]
    else:
        items = [
            (p["fixed_image"], p["fixed_label"], p["moving_image"], p["moving_label"])
            for p in dataset["registration_val"]
        ]
    pairs = []
    for fixed, fixed_labels, moving, moving_labels in items:
        name = f"{Path(fixed).name.split('_0000')[0]} <- {Path(moving).name.split('_0000')[0]}"
        scans = read_scan(fixed, "fixed"), read_scan(moving, "moving")
        pairs.append(Pair(name, *scans, _labels_of(fixed_labels), _labels_of(moving_labels)))
    return pairs


class Method:
    """``prepare()`` once (untimed, may raise :class:`NotAvailable`), then ``run(pair)`` -> voxel DDF (timed)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def prepare(self) -> None:
        return None

    def run(self, pair: Pair) -> torch.Tensor:
        raise NotImplementedError

    def check(self, pair: Pair, ddf: torch.Tensor) -> str | None:
        """Optional note after the first pair (untimed)."""
        return None

    def _image(self, array: np.ndarray, affine: np.ndarray) -> object:
        raise NotImplementedError

    def images(self, pair: Pair) -> tuple:
        """The pair's fixed and moving images in the method's own image type (``_image``)."""
        return self._image(pair.fixed.array, pair.fixed.affine), self._image(pair.moving.array, pair.moving.affine)


class Identity(Method):
    def run(self, pair: Pair) -> torch.Tensor:
        return torch.zeros((1, 3, *pair.fixed.array.shape))
