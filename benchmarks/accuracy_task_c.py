"""Task C of ``bench_accuracy.py``: inter-subject pairs across contrasts (a T2-like moving scan, a T1 fixed scan).

The embedded data holds T1 scans only, so the second contrast is synthesised from the moving subject's tissue labels
with an intensity model that the network never saw and that reverses the T1 order of the tissues (CSF brightest,
white matter darkest, as in T2-weighted MR):

* per tissue a mean (CSF 1.0, GM 0.6, WM 0.35, background 0) and a texture (Gaussian noise, 4 % of the range,
  smoothed over 1 voxel);
* partial volume: the whole image blurred by a Gaussian of 0.8 voxels (1.6 mm);
* a smooth multiplicative bias field (a random low-order polynomial of the coordinates, within +-15 %);
* noise (1 % of the range) on the head, background kept 0.

The random state of pair ``k`` is ``seed + k`` (printed with the table). The pairs are Task I's (``registration_val``,
or every ordered pair with ``--all-pairs``), so the same pair's Task I row is the same-contrast reference.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import gaussian_filter

from monai_vmorph.pipeline import NativeScan

__all__ = ["TASK_C_SPEC", "t2_like", "task_c_pairs"]

TASK_C_SPEC = "moving T2-like from its labels: CSF 1.0, GM 0.6, WM 0.35, texture 4 %, blur 0.8 vox, bias 15 %"
_MEANS = np.array([0.0, 1.0, 0.6, 0.35])  # background, CSF, GM, WM


def t2_like(labels: np.ndarray, affine: np.ndarray, rng: np.random.Generator) -> NativeScan:
    """A T2-like scan of the tissue label map ``labels`` (values 0-3) on the grid ``affine``."""
    image = _MEANS[labels].astype(np.float64)
    texture = gaussian_filter(rng.standard_normal(labels.shape), 1.0)
    image += 0.04 * texture / max(float(texture.std()), 1e-12) * (labels > 0)
    image = gaussian_filter(image, 0.8)
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in labels.shape], indexing="ij")
    bias = sum(rng.uniform(-1, 1) * a for a in axes) + sum(rng.uniform(-1, 1) * a * a for a in axes)
    bias = 1 + 0.15 * bias / max(float(np.abs(bias).max()), 1e-12)
    head = gaussian_filter((labels > 0).astype(np.float64), 0.8) > 0.05
    image = np.clip(image * bias + 0.01 * rng.standard_normal(labels.shape), 0, None) * head
    return NativeScan.from_array(image.astype(np.float32), affine)


def task_c_pairs(pairs: list, seed: int) -> list:
    """Task I's ``pairs`` with each moving scan replaced by :func:`t2_like` of its labels (same grid, same labels)."""
    out = []
    for k, pair in enumerate(pairs):
        moving = t2_like(pair.moving_labels, pair.moving.affine, np.random.default_rng(seed + k))
        out.append(dataclasses.replace(pair, name=f"{pair.name} (T2-like)", moving=moving, cross_contrast=True))
    return out
