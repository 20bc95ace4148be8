"""Recompute a training step in float32 when its reduced-precision gradients are not finite.

With ``precision`` ``"auto"`` (or ``"bf16"``) the backbone trains under bfloat16 autocast. PyTorch 2.13's oneDNN
kernels on an AVX512-BF16 CPU occasionally return a non-finite weight gradient for a 3D convolution whose input is
only a few voxels wide: the default 3D network on a 32³ volume (a 2³ bottleneck), with identical inputs and
weights, gave one non-finite ``decoder.0`` gradient in 60 backward passes; float32 never did, and 64³ and
96×112×96 volumes never did either. The loss is finite, so :class:`~monai_vmorph.engines.StopOnNonFiniteLoss`
cannot see it, and one optimiser step spreads NaN into every weight. float16 on CUDA has MONAI's gradient scaler
for the same purpose (it skips such steps); bfloat16 has none, and MONAI offers no handler for it, hence this one.

:class:`FiniteGradientGuard` runs after ``loss.backward()`` and before ``optimizer.step()`` (MONAI's
``IterationEvents.BACKWARD_COMPLETED``). When any gradient is NaN/inf and the model runs in reduced precision, it
recomputes the step's forward and backward with the backbone in float32 (the same batch, so training follows the
float32 path for that step), logs a warning the first time, and counts the steps it recomputed. A float32 step
whose gradients are still not finite is left to the optimiser and the NaN-loss stop, as before.
"""

from __future__ import annotations

import logging

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from monai_vmorph.engines.checkpoint import unwrap_module
from monai_vmorph.precision import resolve_precision

__all__ = ["FiniteGradientGuard"]

logger = logging.getLogger(__name__)


def _gradients_finite(network: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p.grad).all()) for p in network.parameters() if p.grad is not None)


class FiniteGradientGuard:
    """Redo a reduced-precision training step in float32 when a gradient is NaN/inf (see the module docstring).

    Attributes:
        recomputed: how many steps were recomputed in float32 in this process.
    """

    def __init__(self) -> None:
        self.recomputed = 0

    def attach(self, engine: Engine) -> None:
        """Run after every backward pass of ``engine`` (a MONAI ``SupervisedTrainer``)."""
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        model = unwrap_module(engine.network)
        precision = getattr(model, "precision", "fp32")
        dtype = resolve_precision(precision, next(model.parameters()).device)
        if dtype == torch.float32 or _gradients_finite(engine.network):
            return
        batch = engine.prepare_batch(engine.state.batch, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets, args, kwargs = (*batch, (), {}) if len(batch) == 2 else batch
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        model.precision = "fp32"
        try:
            pred = engine.inferer(inputs, engine.network, *args, **kwargs)
            loss = engine.loss_function(pred, targets).mean()
            loss.backward()
        finally:
            model.precision = precision
        engine.state.output[Keys.PRED], engine.state.output[Keys.LOSS] = pred, loss
        self.recomputed += 1
        if self.recomputed == 1:
            logger.warning(
                "iteration %d: a %s gradient was not finite (a known fault of reduced-precision kernels on small "
                "volumes); the step was recomputed in float32 (this message is shown once)",
                engine.state.iteration,
                dtype,
            )
