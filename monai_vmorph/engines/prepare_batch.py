"""Feeding registration pairs to MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``.

MONAI's engines call ``prepare_batch(batch, device, non_blocking)`` and, when it returns four items
``(inputs, targets, args, kwargs)``, run ``inferer(inputs, network, *args, **kwargs)`` and
``loss_function(pred, targets)``. :class:`PrepareRegistrationBatch` returns the moving image as ``inputs``,
``{"fixed": fixed}`` as ``kwargs`` (so the network is called as ``network(moving, fixed=fixed)``) and a dict of
the pair's tensors as ``targets`` — which :class:`~monai_vmorph.losses.RegistrationLoss` and the evaluation
output transforms read. MONAI's own trainer therefore runs VoxelMorph unchanged: AMP, gradient accumulation,
handlers and DDP come from MONAI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch

from monai_vmorph.data.keys import DDF_TRUE, FIXED_IMAGE, FIXED_LABEL, MOVING_IMAGE, MOVING_LABEL

__all__ = ["PrepareRegistrationBatch"]

_TENSOR_KEYS = (MOVING_IMAGE, FIXED_IMAGE, MOVING_LABEL, FIXED_LABEL, DDF_TRUE)


class PrepareRegistrationBatch(PrepareBatch):
    """Turn a collated pair batch into ``(moving, targets, (), {"fixed": fixed})`` on the engine's device.

    ``targets`` holds every pair tensor present in the batch (``moving_image``, ``fixed_image`` and, if
    present, ``moving_label``, ``fixed_label``, ``ddf_true``), moved to ``device``.
    """

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple, dict[str, torch.Tensor]]:
        if not isinstance(batchdata, Mapping) or MOVING_IMAGE not in batchdata or FIXED_IMAGE not in batchdata:
            found = sorted(batchdata) if isinstance(batchdata, Mapping) else type(batchdata).__name__
            raise ValueError(
                f"a registration batch must be a dict with {MOVING_IMAGE!r} and {FIXED_IMAGE!r}, got {found}; "
                f"build it with monai_vmorph.data pairing and transforms."
            )
        targets = {
            key: _plain(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs)
            for key in _TENSOR_KEYS
            if key in batchdata
        }
        return targets[MOVING_IMAGE], targets, (), {"fixed": targets[FIXED_IMAGE]}


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor (MetaTensor metadata tracking only slows the training step down)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
