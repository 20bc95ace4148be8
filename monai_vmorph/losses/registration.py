"""The VoxelMorph training objective: image similarity + λ · smoothness (+ μ · label Dice), optionally symmetric.

``loss = sim(warped, fixed) + λ · grad(velocity) + μ · dice(warp(moving_label), fixed_label)``, and with a
bidirectional model also ``+ sim(warped_fixed, moving)`` scaled by ``bidirectional_weight`` (voxelmorph weighs
both directions equally). The smoothness term sees the pre-integration field
(:attr:`~monai_vmorph.networks.RegistrationResult.velocity`), with voxelmorph's ``loss_mult = int_downsize``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from monai_vmorph.keys import FIXED_IMAGE, FIXED_LABEL, MOVING_IMAGE, MOVING_LABEL
from monai_vmorph.losses.dice import one_hot_labels, soft_dice_loss
from monai_vmorph.losses.mind import mind_ssc_loss
from monai_vmorph.losses.regularisation import gradient_loss
from monai_vmorph.losses.similarity import local_ncc, mse
from monai_vmorph.networks.blocks.warp import warp
from monai_vmorph.networks.nets.voxelmorph import RegistrationResult

__all__ = ["SIMILARITY_LOSSES", "RegistrationLoss"]

#: Image similarity terms selectable by name.
SIMILARITY_LOSSES = ("ncc", "mse", "mind")


def _weight(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


class RegistrationLoss(nn.Module):
    """Unsupervised (and optionally label-supervised) registration loss on a :class:`RegistrationResult`.

    ``forward(result, targets)`` takes the model output and a mapping holding ``moving_image`` and
    ``fixed_image`` (``(B, C, *S)``) and, for the Dice term, ``moving_label`` and ``fixed_label``
    (``(B, 1, *S)`` label maps). This matches MONAI's ``SupervisedTrainer``, which calls
    ``loss_function(pred, targets)`` with the targets built by
    :class:`~monai_vmorph.engines.PrepareRegistrationBatch`.

    Args:
        similarity: ``"ncc"`` (local NCC, voxelmorph's default for MRI), ``"mse"`` or ``"mind"`` (squared
            difference of MIND-SSC descriptors, :mod:`monai_vmorph.losses.mind`, for pairs of different contrasts).
        smoothness_weight: λ, weight of the gradient (diffusion) regulariser.
        smoothness_penalty: ``"l2"`` or ``"l1"`` on the field's forward differences.
        loss_mult: multiplier of the smoothness term (voxelmorph uses ``int_downsize``).
        dice_weight: μ, weight of the soft Dice term on warped one-hot labels (``0`` disables it).
        labels: label values scored by the Dice term (e.g. ``(1, 2, 3)``); required when ``dice_weight > 0``.
        ncc_window: window of the local NCC.
        bidirectional_weight: weight of the fixed-to-moving similarity term of a bidirectional model.

    Raises:
        ValueError: on an unknown similarity or penalty name, a negative or non-finite weight, or a Dice term
            without labels.
    """

    def __init__(
        self,
        similarity: str = "ncc",
        smoothness_weight: float = 1.0,
        smoothness_penalty: str = "l2",
        loss_mult: float | None = None,
        dice_weight: float = 0.0,
        labels: Sequence[int] | None = None,
        ncc_window: int | Sequence[int] = 9,
        bidirectional_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if similarity not in SIMILARITY_LOSSES:
            raise ValueError(f"similarity must be one of {list(SIMILARITY_LOSSES)}, got {similarity!r}.")
        if smoothness_penalty not in ("l1", "l2"):
            raise ValueError(f"smoothness_penalty must be 'l1' or 'l2', got {smoothness_penalty!r}.")
        self.similarity = similarity
        self.smoothness_weight = _weight(smoothness_weight, "smoothness_weight")
        self.smoothness_penalty = smoothness_penalty
        self.loss_mult = None if loss_mult is None else _weight(loss_mult, "loss_mult")
        self.dice_weight = _weight(dice_weight, "dice_weight")
        self.bidirectional_weight = _weight(bidirectional_weight, "bidirectional_weight")
        self.labels = None if labels is None else [int(v) for v in labels]
        if self.dice_weight > 0 and not self.labels:
            raise ValueError(f"dice_weight={dice_weight} needs the label values to score, got labels={labels!r}.")
        self.ncc_window = ncc_window
        #: the last call's terms (detached floats), for logging
        self.last_terms: dict[str, float] = {}

    def similarity_term(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The similarity term alone (lower is better) of ``pred`` against ``target``, ``(B, C, *S)`` each."""
        if self.similarity == "ncc":
            return local_ncc(pred, target, self.ncc_window)
        if self.similarity == "mind":
            return mind_ssc_loss(pred, target)
        return mse(pred, target)

    def forward(self, result: RegistrationResult, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Total loss (a scalar) of ``result`` against ``targets``; the terms are kept in :attr:`last_terms`."""
        for key in (MOVING_IMAGE, FIXED_IMAGE):
            if key not in targets:
                raise ValueError(f"targets must hold {key!r}, got keys {sorted(targets)}.")
        terms = {"similarity": self.similarity_term(result.warped, targets[FIXED_IMAGE])}
        if result.warped_fixed is not None and self.bidirectional_weight > 0:
            terms["similarity_inverse"] = self.bidirectional_weight * self.similarity_term(
                result.warped_fixed, targets[MOVING_IMAGE]
            )
        if self.smoothness_weight > 0:
            terms["smoothness"] = self.smoothness_weight * gradient_loss(
                result.velocity, self.smoothness_penalty, self.loss_mult
            )
        if self.dice_weight > 0:
            if MOVING_LABEL not in targets or FIXED_LABEL not in targets:
                raise ValueError(
                    f"dice_weight > 0 needs {MOVING_LABEL!r} and {FIXED_LABEL!r} in the batch, got keys "
                    f"{sorted(targets)}; set dice_weight to 0 for unlabelled data."
                )
            moving = one_hot_labels(targets[MOVING_LABEL], self.labels).to(result.ddf.dtype)
            fixed = one_hot_labels(targets[FIXED_LABEL], self.labels).to(result.ddf.dtype)
            terms["dice"] = self.dice_weight * soft_dice_loss(warp(moving, result.ddf), fixed)
        self.last_terms = {name: float(value.detach()) for name, value in terms.items()}
        return torch.stack(list(terms.values())).sum()
