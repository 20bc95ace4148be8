"""Image similarities of the affine pre-alignment stage (:mod:`monai_vmorph.pipeline.affine`).

The affine stage compares the fixed image, fixed for a whole resolution level, with the moving image sampled at
the fixed level's points under the current transform. Both similarities below take that shape into account:
the fixed image is given once (:meth:`Similarity.prepare`) and each step passes only the sampled moving image.

* ``"mi"``: global mutual information with Gaussian Parzen windows, the definition (and value, to float rounding)
  of MONAI's :class:`monai.losses.GlobalMutualInformationLoss` (23 bins, ``sigma_ratio`` 0.5). MONAI's loss
  recomputes the fixed image's Parzen weights on every call; here they are computed once per level, which halves
  the cost of a step. Intensities must lie in ``[0, 1]`` (the affine stage normalises them).
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
    """``-MI`` with Gaussian Parzen windows, as MONAI's ``GlobalMutualInformationLoss(kernel_type="gaussian")``.

    With bin centres ``c_k = k / (bins - 1)`` and ``sigma = sigma_ratio / (bins - 1)``, each value ``v`` (clamped to
    ``[0, 1]``) spreads over the bins with weights ``w_k(v) ∝ exp(-(v - c_k)^2 / (2 sigma^2))`` (normalised to sum
    1). ``p_ab = mean(w_a(moving) w_b(fixed))``, ``p_a``, ``p_b`` its marginals, and
    ``MI = sum p_ab log((p_ab + e) / (p_a p_b + e) + e)`` with ``e = 1e-7`` (MONAI's smoothing terms).

    Args:
        bins: number of histogram bins.
        sigma_ratio: Parzen window width in bin widths.
    """

    def __init__(self, bins: int = 23, sigma_ratio: float = 0.5) -> None:
        self.bins = bins
        self.preterm = 1.0 / (2.0 * (sigma_ratio / (bins - 1)) ** 2)
        self.fixed_weights: torch.Tensor | None = None
        self.fixed_probability: torch.Tensor | None = None

    def _weights(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, N, bins)`` normalised Parzen weights of ``image`` ``(B, 1, *S)``."""
        centres = torch.linspace(0.0, 1.0, self.bins, device=image.device, dtype=image.dtype)
        values = image.clamp(0, 1).reshape(image.shape[0], -1, 1)
        weights = torch.exp(-self.preterm * (values - centres) ** 2)
        return weights / weights.sum(dim=-1, keepdim=True)

    def prepare(self, fixed: torch.Tensor) -> None:
        self.fixed_weights = self._weights(fixed)
        self.fixed_probability = self.fixed_weights.mean(dim=1, keepdim=True)

    def __call__(self, moving: torch.Tensor) -> torch.Tensor:
        if self.fixed_weights is None or self.fixed_probability is None:
            raise RuntimeError("MutualInformation.prepare(fixed) must be called first.")
        wa = self._weights(moving)  # (B, N, bins)
        n = wa.shape[1]
        wb = self.fixed_weights.expand(wa.shape[0], -1, -1)
        pab = torch.bmm(wa.transpose(1, 2), wb) / n
        pa = wa.mean(dim=1, keepdim=True)
        papb = torch.bmm(pa.transpose(1, 2), self.fixed_probability.expand(wa.shape[0], -1, -1))
        mi = (pab * torch.log((pab + 1e-7) / (papb + 1e-7) + 1e-7)).sum(dim=(1, 2))
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
