"""MIND-SSC: a modality-independent neighbourhood descriptor (Heinrich et al., MICCAI 2013) and its loss.

A voxel's descriptor compares image patches around pairs of its neighbours, so it describes local structure
(edges, corners) but not the intensities themselves: two scans of one anatomy in different contrasts (T1 and T2,
MR and CT) have similar descriptors where their structure agrees. Registration then compares descriptors with a
squared difference, as ConvexAdam and deeds do.

Definition (the one convention of this module). For an image ``I`` on ``(B, 1, *S)``:

* the neighbourhood ``N`` is the ``2 ndim`` face neighbours of a voxel (offsets ``±e_k``) at ``dilation`` voxels;
* the pairs ``(p, q)`` are the neighbours at distance ``sqrt(2)`` of each other (not opposite): 12 pairs in 3D (the
  edges of the six-neighbourhood's octahedron, "self-similarity context"), 4 in 2D;
* ``D_pq(x) = mean over the (2 radius + 1)^ndim box around x of (I(y + dilation p) - I(y + dilation q))^2``, the
  patch distance, with the image extended by repeating its edge;
* ``D'_pq = D_pq - min_pq D_pq`` (per voxel), ``V(x) = mean_pq D'_pq(x)``, clamped to
  ``[1e-3, 1e3] * mean_x V`` (flat regions and edges keep a finite, comparable scale);
* ``MIND_pq(x) = exp(-D'_pq(x) / V(x))``: ``(B, n_pairs, *S)`` with values in ``(0, 1]``.

MONAI has no MIND descriptor; this implementation is written from the paper's definition above.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from monai_vmorph.losses._box import box_sum
from monai_vmorph.losses._checks import check_image_pair

__all__ = ["MINDSSCLoss", "mind_pairs", "mind_ssc", "mind_ssc_loss"]


def mind_pairs(spatial_dims: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The neighbour pairs ``(p, q)`` of MIND-SSC (unit offsets), in a fixed order: 12 in 3D, 4 in 2D."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"MIND-SSC is defined for 2 or 3 spatial dims, got {spatial_dims}.")
    neighbours = []
    for axis in range(spatial_dims):
        for sign in (-1, 1):
            offset = [0] * spatial_dims
            offset[axis] = sign
            neighbours.append(tuple(offset))
    # neighbours sqrt(2) apart: on different axes (opposite neighbours, on one axis, are 2 apart)
    return [(p, q) for p, q in itertools.combinations(neighbours, 2) if _apart(p, q)]


def _apart(p: tuple[int, ...], q: tuple[int, ...]) -> bool:
    return sum((a - b) ** 2 for a, b in zip(p, q, strict=True)) == 2


def _shifted(padded: torch.Tensor, offset: tuple[int, ...], margin: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``I(x + offset)`` on the original grid from an image padded by ``margin`` on every side."""
    index = tuple(slice(margin + o, margin + o + n) for o, n in zip(offset, shape, strict=True))
    return padded[(slice(None), slice(None), *index)]


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """The MIND-SSC descriptor of ``image`` (definition in the module docstring).

    Args:
        image: ``(B, 1, *S)`` floating-point image, 2D or 3D.
        radius: half width of the patch box (voxels).
        dilation: distance of the neighbours from the centre (voxels).

    Returns:
        ``(B, P, *S)`` descriptor in ``(0, 1]``, ``P = 12`` in 3D and ``4`` in 2D; differentiable.
    """
    ndim = image.dim() - 2
    if ndim not in (2, 3) or image.shape[1] != 1 or not image.is_floating_point():
        raise ValueError(f"image must be a floating-point (B, 1, *S) tensor in 2D or 3D, got {tuple(image.shape)}.")
    for name, value, low in (("radius", radius, 0), ("dilation", dilation, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    shape = tuple(image.shape[2:])
    margin = dilation + radius
    padded = F.pad(image, [margin] * (2 * ndim), mode="replicate")
    padded_shape = tuple(n + 2 * radius for n in shape)  # the box filter's input: the grid widened by the radius
    distances = []
    for p, q in mind_pairs(ndim):
        scaled_p, scaled_q = tuple(dilation * a for a in p), tuple(dilation * a for a in q)
        difference = _shifted(padded, scaled_p, dilation, padded_shape) - _shifted(
            padded, scaled_q, dilation, padded_shape
        )
        distances.append(difference * difference)
    window = (2 * radius + 1,) * ndim
    patch = box_sum(torch.cat(distances, dim=1), window) / float((2 * radius + 1) ** ndim)
    patch = patch[(slice(None), slice(None), *(slice(radius, radius + n) for n in shape))]
    patch = patch - patch.min(dim=1, keepdim=True).values
    variance = patch.mean(dim=1, keepdim=True)
    scale = variance.mean(dim=tuple(range(1, ndim + 2)), keepdim=True)
    variance = torch.minimum(torch.maximum(variance, 1e-3 * scale), 1e3 * scale).clamp_min(1e-12)
    return torch.exp(-patch / variance)


def mind_ssc_loss(pred: torch.Tensor, target: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """Mean squared difference of the MIND-SSC descriptors of ``pred`` and ``target`` (``(B, 1, *S)`` each)."""
    check_image_pair(pred, target)
    return F.mse_loss(mind_ssc(pred, radius, dilation), mind_ssc(target, radius, dilation))


class MINDSSCLoss(nn.Module):
    """:func:`mind_ssc_loss` as a module (a registration similarity: lower is better).

    Args:
        radius: patch half width (voxels).
        dilation: neighbour distance (voxels).
    """

    def __init__(self, radius: int = 1, dilation: int = 2) -> None:
        super().__init__()
        self.radius, self.dilation = radius, dilation

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mind_ssc_loss(pred, target, self.radius, self.dilation)
