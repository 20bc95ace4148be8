"""A MONAI ``Inferer`` that runs the network, then a refinement preset, for the bundles' inference workflow.

``monai-vmorph register`` runs the network and then the ``"default"`` coarse-to-fine refinement of
:data:`~monai_vmorph.engines.refine_multilevel.REFINE_PRESETS` (``--fast``: the network alone). The bundles'
``inferring`` workflow runs MONAI's ``SupervisedEvaluator``, which calls ``inferer(moving, network, fixed=fixed)``
under ``torch.no_grad()``; :class:`RefiningInferer` is that inferer, with the same presets, so that a bundle's
``"refine"`` key gives the command line's results. MONAI's inferers (``SimpleInferer``, ``SlidingWindowInferer``)
only call the network; nothing in MONAI optimises a field per pair, hence this class.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

from monai_vmorph.engines.checkpoint import unwrap_module
from monai_vmorph.engines.refine_multilevel import REFINE_PRESETS, refine_multilevel
from monai_vmorph.errors import UserError
from monai_vmorph.losses import RegistrationLoss
from monai_vmorph.networks.nets.voxelmorph import RegistrationResult, VoxelMorph

__all__ = ["RefiningInferer"]


def _registration_model(network: nn.Module) -> VoxelMorph:
    """The :class:`VoxelMorph` inside ``network`` (itself, or wrapped by DDP / ``DataParallel``)."""
    model = unwrap_module(network)
    if not isinstance(model, VoxelMorph):
        raise TypeError(f"RefiningInferer needs a monai_vmorph VoxelMorph network, got {type(model).__name__}.")
    return model


class RefiningInferer(Inferer):
    """Network, then the refinement preset ``preset``, for every pair of a batch.

    Args:
        preset: a key of :data:`~monai_vmorph.engines.refine_multilevel.REFINE_PRESETS`: ``"default"`` (the
            command line's default) or ``"fast"`` (the network alone, exactly like ``SimpleInferer``).
        similarity: the bundle's similarity (``"ncc"`` or ``"mse"``), as in training.
        smoothness_weight: the bundle's λ, as in training.
        loss_mult: the bundle's ``int_downsize`` (the smoothness term's multiplier, as in training).

    Calling it as ``inferer(moving, network, fixed=fixed)`` returns a
    :class:`~monai_vmorph.networks.RegistrationResult` for the ``(B, C, *S)`` pair, each item refined on its own
    (refinement is per pair). The network's weights are never changed.
    """

    def __init__(
        self, preset: str = "default", similarity: str = "ncc", smoothness_weight: float = 1.0, loss_mult: Any = None
    ) -> None:
        super().__init__()
        if preset not in REFINE_PRESETS:
            raise UserError(f"refine must be one of {sorted(REFINE_PRESETS)}, got {preset!r}")
        self.preset = REFINE_PRESETS[preset]
        self.loss = RegistrationLoss(
            similarity=similarity, smoothness_weight=float(smoothness_weight), loss_mult=loss_mult
        )

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> RegistrationResult:
        fixed = kwargs.get("fixed", args[0] if args else None)
        if fixed is None:
            raise ValueError("RefiningInferer is called as inferer(moving, network, fixed=fixed).")
        result = network(inputs, fixed)
        if not self.preset.levels:
            return result
        model = _registration_model(network)
        refined = []
        with torch.enable_grad():
            for b in range(inputs.shape[0]):
                initial = RegistrationResult(
                    *(None if t is None else t[b : b + 1] for t in result)  # one pair of the batch
                )
                out = refine_multilevel(
                    model, inputs[b : b + 1], fixed[b : b + 1], self.loss, **self.preset.kwargs(), initial=initial
                )
                refined.append(out.result)
        return RegistrationResult(
            *(None if parts[0] is None else torch.cat(parts, dim=0) for parts in zip(*refined, strict=True))
        )
