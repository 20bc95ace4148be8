"""Evaluation outputs of a registration model for MONAI's ``SupervisedEvaluator`` and its metric handlers.

With ``SupervisedEvaluator(prepare_batch=PrepareRegistrationBatch(), decollate=False,
postprocessing=RegistrationEvalOutputs(labels))`` each iteration's output holds, besides MONAI's ``pred``
(the :class:`~monai_vmorph.networks.RegistrationResult`) and ``label`` (the targets dict):

* ``ddf``: the predicted field ``(B, ndim, *S)``, for :class:`FoldingFractionMetric` / :class:`SDlogJMetric`;
* ``pred_onehot`` / ``label_onehot``: the moving label map warped with nearest neighbour and the fixed label
  map, one-hot over ``labels`` ``(B, L, *S)``, for MONAI's ``MeanDice`` and ``HausdorffDistance`` handlers
  (only when the batch has both label maps);
* ``ddf_true``: the ground-truth field of synthetic pairs, when present, for :class:`EndpointErrorMetric`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import CommonKeys

from monai_vmorph.data.keys import DDF_TRUE, FIXED_LABEL, MOVING_LABEL
from monai_vmorph.losses.dice import one_hot_labels
from monai_vmorph.metrics.displacement import endpoint_error
from monai_vmorph.metrics.jacobian import folding_fraction, sdlogj
from monai_vmorph.networks.blocks.warp import warp

__all__ = ["EndpointErrorMetric", "FoldingFractionMetric", "RegistrationEvalOutputs", "SDlogJMetric"]


class RegistrationEvalOutputs:
    """Add ``ddf``, ``pred_onehot``, ``label_onehot`` (and ``ddf_true``) to an evaluator's output dict.

    Args:
        labels: label values scored by the overlap metrics, e.g. ``(1, 2, 3)`` for CSF/GM/WM.
    """

    def __init__(self, labels: Sequence[int]) -> None:
        self.labels = [int(v) for v in labels]
        if not self.labels:
            raise ValueError(f"labels must list at least one label value, got {labels!r}.")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        result, targets = data[CommonKeys.PRED], data[CommonKeys.LABEL]
        out["ddf"] = result.ddf
        if MOVING_LABEL in targets and FIXED_LABEL in targets:
            warped = warp(targets[MOVING_LABEL], result.ddf, mode="nearest")
            out["pred_onehot"] = one_hot_labels(warped, self.labels)
            out["label_onehot"] = one_hot_labels(targets[FIXED_LABEL], self.labels)
        if DDF_TRUE in targets:
            out[DDF_TRUE] = targets[DDF_TRUE]
        return out


class FoldingFractionMetric(CumulativeIterationMetric):
    """Share of voxels with ``det(J) <= 0`` per field, accumulated over iterations; ``aggregate()`` is the mean.

    Call it as ``metric(ddf)`` (or ``metric(ddf, anything)``, the second argument is ignored) with
    ``(B, ndim, *S)`` fields, e.g. through MONAI's ``IgniteMetricHandler`` with
    ``output_transform=monai.handlers.from_engine(["ddf", "ddf"])``.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        return folding_fraction(y_pred.detach().float())[:, None]

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return self.get_buffer().mean()


class SDlogJMetric(FoldingFractionMetric):
    """Learn2Reg's SDlogJ per field (see :func:`monai_vmorph.metrics.sdlogj`), averaged by ``aggregate()``."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        return sdlogj(y_pred.detach().float())[:, None]


class EndpointErrorMetric(FoldingFractionMetric):
    """Mean endpoint error between ``y_pred`` (predicted field) and ``y`` (``ddf_true``), in voxels or mm.

    Args:
        spacing: voxel size in mm per array axis, or ``None`` for voxels.
    """

    def __init__(self, spacing: Sequence[float] | None = None) -> None:
        super().__init__()
        self.spacing = spacing

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("EndpointErrorMetric needs the ground-truth field as y (the 'ddf_true' output key).")
        return endpoint_error(y_pred.detach().float(), y.float(), self.spacing)[:, None]
