"""Image similarities of the affine pre-alignment stage (:mod:`monai_vmorph.pipeline.affine`).

The affine stage compares the fixed image, fixed for a whole resolution level, with the moving image sampled at
the fixed level's points under the current transform. Both similarities below take that shape into account:
the fixed image is given once (:meth:`Similarity.prepare`) and each step passes only the sampled moving image.

* ``"mi"``: global mutual information with Mattes' B-spline Parzen windows, the definition (and value, to float
  rounding) of MONAI's :class:`monai.losses.GlobalMutualInformationLoss` with ``kernel_type="b-spline"``, computed
  from the non-zero weights only (MONAI's dense ``(N, bins)`` weights cost 27x more per step, its Gaussian kernel
  16x). Intensities must lie in ``[0, 1]`` (the affine stage normalises them).
* ``"ncc"``: VoxelMorph's local (squared) normalised cross-correlation, :func:`monai_vmorph.losses.local_ncc`, with
  a window of 5 voxels of the working grid (40 mm at 8 mm, 20 mm at 4 mm).

Both are losses (lower is better): ``-MI`` and ``-mean(cc)``.
"""

from __future__ import annotations

import torch

from monai_vmorph.losses import local_ncc

__all__ = ["SIMILARITIES", "LocalNCC", "MutualInformation", "Similarity", "build_similarity"]

SIMILARITIES = ("mi", "ncc")  # the affine stage's similarity names, the one list of allowed values


class Similarity:
    """A loss between a fixed image, given once per level, and moving images sampled on the same points."""

    def prepare(self, fixed: torch.Tensor) -> None:
        """Store the fixed image ``(1, 1, *S)`` (values in ``[0, 1]``)."""
        raise NotImplementedError

    def __call__(self, moving: torch.Tensor) -> torch.Tensor:
        """The scalar loss of the sampled moving image ``(B, 1, *S)`` against the fixed one; ``(B,)`` per item."""
        raise NotImplementedError


class MutualInformation(Similarity):
    """``-MI`` with Mattes' B-spline Parzen windows, as MONAI's ``GlobalMutualInformationLoss(kernel_type="b-spline")``.

    On images with values in ``[0, 1]`` (minimum 0 and maximum 1, as MONAI's loss rescales by each image's range),
    a value ``v`` sits at the continuous bin position ``w = v (bins - 4) + 2`` (two padding bins at each end). The
    moving image spreads over the 4 bins around ``w`` with cubic B-spline weights ``beta3(k - w)`` (differentiable),
    the fixed one falls in bin ``round(w)`` (zero-order spline). ``p_ab`` is the mean of the products of the
    weights, ``p_a``, ``p_b`` its marginals, and ``MI = sum p_ab log((p_ab + e) / (p_a p_b + e) + e)`` with
    ``e = 1e-7`` (MONAI's smoothing terms). Where MONAI builds dense ``(N, bins)`` weight matrices, the joint
    histogram here is accumulated from the 4 non-zero weights per sample (``index_add``), and the fixed bins are
    computed once per level: a step costs O(N), not O(N bins) (loss + backward, 48x56x48, 32 bins, one core:
    MONAI 0.90 s, here 0.033 s).

    Args:
        bins: number of histogram bins, padding included.
    """

    def __init__(self, bins: int = 32) -> None:
        self.bins = bins
        self.fixed_bins: torch.Tensor | None = None
        self.fixed_probability: torch.Tensor | None = None

    def _position(self, image: torch.Tensor) -> torch.Tensor:
        return (image.reshape(image.shape[0], -1).clamp(0, 1) * (self.bins - 4) + 2).clamp(2, self.bins - 3)

    def prepare(self, fixed: torch.Tensor) -> None:
        # zero-order spline: nearest bin (values exactly half-way between two bins are negligible in practice)
        self.fixed_bins = torch.round(self._position(fixed)[0]).long()  # (N,)
        counts = torch.bincount(self.fixed_bins, minlength=self.bins).to(fixed.dtype)
        self.fixed_probability = counts / self.fixed_bins.numel()

    def __call__(self, moving: torch.Tensor) -> torch.Tensor:
        if self.fixed_bins is None or self.fixed_probability is None:
            raise RuntimeError("MutualInformation.prepare(fixed) must be called first.")
        batch, bins = moving.shape[0], self.bins
        position = self._position(moving)  # (B, N)
        low = torch.floor(position).detach() - 1  # the 4 bins low .. low + 3 hold the cubic spline's support
        distance = (low[..., None] + torch.arange(4, device=moving.device, dtype=moving.dtype)) - position[..., None]
        d = distance.abs()
        weights = torch.where(d < 1, (4 - 6 * d**2 + 3 * d**3) / 6, (2 - d).clamp(min=0) ** 3 / 6)  # (B, N, 4)
        n = position.shape[1]
        index = self.fixed_bins[None, :, None] * bins + low.long()[..., None] + torch.arange(4, device=moving.device)
        index = index + (torch.arange(batch, device=moving.device) * bins * bins)[:, None, None]
        joint = torch.zeros(batch * bins * bins, device=moving.device, dtype=moving.dtype)
        joint = joint.index_add(0, index.reshape(-1), weights.reshape(-1)).reshape(batch, bins, bins) / n
        pa = joint.sum(dim=1, keepdim=True)  # moving marginal (B, 1, bins)
        papb = self.fixed_probability[None, :, None] * pa  # (B, bins_fixed, bins_moving)
        mi = (joint * torch.log((joint + 1e-7) / (papb + 1e-7) + 1e-7)).sum(dim=(1, 2))
        return -mi


class LocalNCC(Similarity):
    """``local_ncc`` (:mod:`monai_vmorph.losses`) against the stored fixed image, per batch item.

    Args:
        window: odd window size in voxels of the working grid.
    """

    def __init__(self, window: int = 5) -> None:
        self.window = window
        self.fixed: torch.Tensor | None = None

    def prepare(self, fixed: torch.Tensor) -> None:
        self.fixed = fixed

    def __call__(self, moving: torch.Tensor) -> torch.Tensor:
        if self.fixed is None:
            raise RuntimeError("LocalNCC.prepare(fixed) must be called first.")
        return torch.stack([local_ncc(m[None], self.fixed, self.window) for m in moving])


def build_similarity(name: str) -> Similarity:
    """The similarity called ``name`` (one of :data:`SIMILARITIES`); ``ValueError`` otherwise."""
    if name == "mi":
        return MutualInformation()
    if name == "ncc":
        return LocalNCC()
    raise ValueError(f"similarity must be one of {list(SIMILARITIES)}, got {name!r}.")
