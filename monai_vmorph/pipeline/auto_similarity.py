"""``--similarity auto``: which deformable similarity a pair needs, decided from the pair itself.

Local NCC (squared, as VoxelMorph's) trusts that within each window one image's intensities are a linear map of the
other's; it is the most accurate choice when the two scans share a contrast (two T1 brains, two CTs) and misleads
where the tissues' order of brightness differs (T1 against T2: white matter brightest in one, CSF in the other, grey
matter between in both; MR against CT), where the network, trained on one contrast, also moves tissue to the wrong
places. MIND-SSC compares local structure only and works for both, a little less sharply on a same-contrast pair.

**How it decides.** After the affine stage both images are on one grid, intensities normalised to ``[0, 1]``.
Over the voxels where both images have signal (above :data:`SIGNAL_THRESHOLD`: the outline of the head, which any
two scans share, does not count), both lightly smoothed (a 3-voxel box: noise and the residual misalignment of fine
detail do not dominate), the Pearson correlation of the two images' intensities is computed. Aligned scans of one
contrast correlate strongly and positively (the same tissue, the same brightness: 0.82-0.86 between the embedded T1
brains); different contrasts weakly or negatively (-0.05 to 0.25 for T2-like scans against T1). Then, in order:

1. correlation at or above :data:`SAME_CONTRAST_CORRELATION`: one contrast, ``"ncc"`` on the images as they are;
2. otherwise the moving image is mapped to the fixed image's contrast
   (:func:`monai_vmorph.transforms.match_contrast`) and, if the mapped pair correlates at or above the threshold,
   ``"ncc"`` on the mapped pair: the network and the refinement then see one contrast;
3. otherwise (a mapping that does not explain the fixed image) ``"mind"`` on the images as they are.

The values and the outcome are recorded in ``metrics.json`` (``"similarity"``), so a user can see why. An explicit
``"ncc"`` or ``"mind"`` uses that similarity on the unmapped pair.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from monai_vmorph.transforms.contrast import match_contrast

__all__ = [
    "DEFORMABLE_SIMILARITIES",
    "SAME_CONTRAST_CORRELATION",
    "SIGNAL_THRESHOLD",
    "SimilarityChoice",
    "choose_similarity",
]

#: The deformable stage's similarities (``--similarity``); ``"auto"`` picks one of the others per pair.
DEFORMABLE_SIMILARITIES = ("auto", "ncc", "mind")

#: Normalised intensity above which a voxel has signal (the background of a scan is below it).
SIGNAL_THRESHOLD = 0.05

#: Intensity correlation over the signal from which a pair counts as one contrast.
SAME_CONTRAST_CORRELATION = 0.5


class SimilarityChoice(NamedTuple):
    """The similarity chosen for a pair and the evidence.

    Attributes:
        similarity: ``"ncc"`` or ``"mind"``.
        correlation: the smoothed intensity correlation over the signal (``nan`` when there is none).
        requested: what was asked for (``"auto"`` or the name given).
        contrast_mapped: whether the moving image is registered with its contrast mapped to the fixed one's.
        correlation_mapped: the correlation after that mapping (``None`` when it was not tried).
    """

    similarity: str
    correlation: float
    requested: str
    contrast_mapped: bool = False
    correlation_mapped: float | None = None


def _smooth(image: torch.Tensor) -> torch.Tensor:
    pool = (F.avg_pool2d, F.avg_pool3d)[image.dim() - 4]
    return pool(image, 3, stride=1, padding=1, count_include_pad=False)


def intensity_correlation(moving: torch.Tensor, fixed: torch.Tensor) -> float:
    """Pearson correlation of the smoothed images over the voxels where both have signal (``(1, 1, *S)`` each)."""
    a, b = _smooth(moving.double()).flatten(), _smooth(fixed.double()).flatten()
    signal = (a > SIGNAL_THRESHOLD) & (b > SIGNAL_THRESHOLD)
    if int(signal.sum()) < 2:
        return float("nan")
    a, b = a[signal] - a[signal].mean(), b[signal] - b[signal].mean()
    denominator = float(torch.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else float("nan")


def choose_similarity(
    moving: torch.Tensor, fixed: torch.Tensor, requested: str = "auto"
) -> tuple[SimilarityChoice, torch.Tensor]:
    """The deformable similarity for an affinely aligned pair (``(1, 1, *S)``, intensities in ``[0, 1]``) and the
    moving image to register with it (contrast-mapped or as given; see the module docstring).

    ``requested`` other than ``"auto"`` is returned as chosen, with the unmapped moving image.

    Raises:
        ValueError: ``requested`` is not one of :data:`DEFORMABLE_SIMILARITIES`.
    """
    if requested not in DEFORMABLE_SIMILARITIES:
        raise ValueError(f"similarity must be one of {list(DEFORMABLE_SIMILARITIES)}, got {requested!r}.")
    correlation = intensity_correlation(moving, fixed)
    if requested != "auto":
        return SimilarityChoice(requested, correlation, requested), moving
    if _same_contrast(correlation):
        return SimilarityChoice("ncc", correlation, requested), moving
    mapped = match_contrast(moving, fixed)
    mapped_correlation = intensity_correlation(mapped, fixed)
    if _same_contrast(mapped_correlation):
        return SimilarityChoice("ncc", correlation, requested, True, mapped_correlation), mapped
    return SimilarityChoice("mind", correlation, requested, False, mapped_correlation), moving


def _same_contrast(correlation: float) -> bool:
    return correlation == correlation and correlation >= SAME_CONTRAST_CORRELATION  # nan: no signal, not the same
