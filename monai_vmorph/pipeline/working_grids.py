"""Working grids of the affine stage (:mod:`monai_vmorph.pipeline.affine`): box-averaged, normalised images and the
loss of world matrices on them.

An image on a working grid is ``(1, 1, *S)`` float32 in ``[0, 1]`` with its own voxel -> RAS mm affine
(conventions of :mod:`monai_vmorph.io.spaces`); the affine stage's matrices map fixed world points to moving
world points (pull-back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from monai_vmorph.errors import UserError
from monai_vmorph.pipeline.similarity import build_similarity

__all__ = [
    "FOREGROUND",
    "MAX_POINTS",
    "MIN_VOXELS",
    "PERCENTILES",
    "WorkingImage",
    "WorkingLevel",
    "crop_to_foreground",
    "foreground_moments",
    "intensity_range",
    "working_image",
    "world_points",
]

PERCENTILES = (0.005, 0.995)  # the normalisation's low and high quantiles
FOREGROUND = 0.05  # normalised intensity above which a voxel counts as foreground (centre of mass, moments, crop)
MIN_VOXELS = 4  # a working grid keeps at least this many voxels per axis
MAX_POINTS = 16384  # "mi" scores at most this many fixed points per level (a seeded random subset)


@dataclass
class WorkingImage:
    """One image on one working grid: ``array`` ``(1, 1, *S)`` float32 in [0, 1], ``affine`` voxel -> RAS mm."""

    array: torch.Tensor
    affine: np.ndarray


def intensity_range(image: torch.Tensor) -> tuple[float, float]:
    flat = image.reshape(-1)
    step = max(1, math.ceil(flat.numel() / 2**20))
    lo, hi = torch.quantile(flat[::step], torch.tensor(PERCENTILES, device=image.device)).tolist()
    if hi <= lo:
        lo, hi = float(image.min()), float(image.max())
    return lo, hi


def working_image(image: torch.Tensor, affine: np.ndarray, spacing_mm: float, lo: float, hi: float) -> WorkingImage:
    """``image`` box-averaged to about ``spacing_mm`` per voxel, normalised with ``lo``/``hi`` to [0, 1]."""
    ndim = image.dim()
    voxel = np.linalg.norm(affine[:ndim, :ndim], axis=0)
    factor = [
        int(max(1, min(round(spacing_mm / v), max(1, n // MIN_VOXELS))))
        for v, n in zip(voxel, image.shape, strict=True)
    ]
    x = image[None, None]
    if any(k > 1 for k in factor):
        pool = F.avg_pool3d if ndim == 3 else F.avg_pool2d
        x = pool(x, kernel_size=factor, stride=factor)
    scale = np.eye(ndim + 1)
    scale[:ndim, :ndim] = np.diag(factor)
    scale[:ndim, ndim] = (np.asarray(factor) - 1) / 2  # pooled voxel i = native continuous index k i + (k - 1) / 2
    x = ((x - lo) / (hi - lo)).clamp(0, 1).contiguous()
    return WorkingImage(x, affine @ scale)


def crop_to_foreground(img: WorkingImage, margin: int) -> WorkingImage:
    """``img`` cropped to the bounding box of its foreground (values > 5 %) plus ``margin`` voxels."""
    ndim = img.array.dim() - 2
    inside = torch.nonzero(img.array[0, 0] > FOREGROUND)
    if len(inside) == 0:
        return img
    shape = img.array.shape[2:]
    low = [max(0, int(v) - margin) for v in inside.min(dim=0).values]
    high = [min(n, int(v) + margin + 1) for v, n in zip(inside.max(dim=0).values, shape, strict=True)]
    high = [max(h, min(n, lo + MIN_VOXELS)) for lo, h, n in zip(low, high, shape, strict=True)]
    array = img.array[(..., *[slice(lo, h) for lo, h in zip(low, high, strict=True)])].contiguous()
    shift = np.eye(ndim + 1)
    shift[:ndim, ndim] = low
    return WorkingImage(array, img.affine @ shift)


def world_points(img: WorkingImage) -> np.ndarray:
    ndim = img.array.dim() - 2
    index = np.stack(np.meshgrid(*[np.arange(s) for s in img.array.shape[2:]], indexing="ij"), axis=-1)
    return index.reshape(-1, ndim) @ img.affine[:ndim, :ndim].T + img.affine[:ndim, ndim]


def foreground_moments(img: WorkingImage, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Centre of mass ``(ndim,)`` and covariance ``(ndim, ndim)`` (mm) of the foreground (values > 5 %)."""
    values = img.array.reshape(-1).double().cpu().numpy()
    weights = (values > FOREGROUND).astype(np.float64)
    if weights.sum() < 2:  # a few bright voxels: fall back to the intensities themselves
        weights = values
    if weights.sum() <= 0:
        raise UserError(f"{name} has no foreground (no voxel above the background); check the image")
    points = world_points(img)
    centre = weights @ points / weights.sum()
    centred = points - centre
    return centre, (centred * weights[:, None]).T @ centred / weights.sum()


class WorkingLevel:
    """The fixed and moving images on one working grid, and the loss of world matrices there.

    The loss samples the moving image at the fixed grid's world points mapped by each matrix (``grid_sample``,
    linear, zeros outside). For ``"mi"``, grids of more than ``MAX_POINTS`` voxels are scored on a fixed,
    seeded random subset of them (as ITK's Mattes metric samples); local NCC needs the whole grid.
    """

    def __init__(self, fixed: WorkingImage, moving: WorkingImage, spacing: float, similarity: str) -> None:
        self.fixed, self.moving, self.spacing = fixed, moving, spacing
        self.ndim = n = fixed.array.dim() - 2
        self.shape = tuple(fixed.array.shape[2:])
        device = fixed.array.device
        values = fixed.array.reshape(-1)
        index = torch.stack(
            torch.meshgrid(*[torch.arange(k, device=device, dtype=torch.float64) for k in self.shape], indexing="ij"),
            dim=-1,
        ).reshape(-1, n)
        self.subset = similarity == "mi" and len(values) > MAX_POINTS
        if self.subset:
            generator = torch.Generator().manual_seed(0)
            keep = torch.randperm(len(values), generator=generator)[:MAX_POINTS].sort().values.to(device)
            values, index = values[keep], index[keep]
        affine = torch.as_tensor(fixed.affine, dtype=torch.float64, device=device)
        self.points = torch.cat([index @ affine[:n, :n].T + affine[:n, n], torch.ones_like(index[:, :1])], dim=1)
        self.similarity = build_similarity(similarity)
        self.similarity.prepare(values.reshape(1, 1, -1) if self.subset else fixed.array)
        # world point -> moving normalised grid_sample coordinates (last array axis first)
        half = (np.asarray(moving.array.shape[2:], dtype=np.float64) - 1) / 2
        to_grid = np.eye(n + 1)
        to_grid[:n] = (np.linalg.inv(moving.affine)[:n] - np.c_[np.zeros((n, n)), half]) / half[:, None]
        self.to_grid = torch.as_tensor(to_grid[:n][::-1].copy(), dtype=torch.float64)

    def loss(self, matrices: torch.Tensor) -> torch.Tensor:
        """``(B,)`` losses of the world matrices ``(B, ndim + 1, ndim + 1)`` (float64, differentiable)."""
        batch = matrices.shape[0]
        theta = (self.to_grid @ matrices).to(self.moving.array)  # (B, ndim, ndim + 1)
        grid = self.points.to(theta.dtype) @ theta.transpose(1, 2)  # (B, N, ndim)
        grid = grid.reshape(batch, -1, *([1] * (self.ndim - 1)), self.ndim)
        moving = self.moving.array.expand(batch, *self.moving.array.shape[1:])
        warped = F.grid_sample(moving, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        warped = warped.reshape(batch, 1, -1) if self.subset else warped.reshape(batch, 1, *self.shape)
        return self.similarity(warped).double().cpu()
