"""FiniteGradientGuard: a reduced-precision step with a non-finite gradient is recomputed in float32."""

import copy

import torch
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer

from monai_vmorph.engines import FiniteGradientGuard, PrepareRegistrationBatch
from monai_vmorph.losses import RegistrationLoss
from monai_vmorph.networks import VoxelMorph

LOSS = RegistrationLoss("mse", smoothness_weight=0.01)


def _setup(precision: str, poison: bool):
    """A tiny 2D model whose flow-head gradient is NaN in the first reduced-precision backward (``poison``),
    one (moving, fixed) pair, and a trainer for one Adam step."""
    torch.manual_seed(0)
    model = VoxelMorph(
        2, backbone_kwargs={"encoder_channels": (4, 8), "decoder_channels": (8, 4, 4)}, precision=precision
    )
    poisoned = []

    def nan_once(grad):
        if poison and model.precision != "fp32" and not poisoned:
            poisoned.append(True)
            return grad * float("nan")
        return grad

    model.backbone.flow.weight.register_hook(nan_once)
    gen = torch.Generator().manual_seed(1)
    pair = {"moving_image": torch.rand(1, 16, 16, generator=gen), "fixed_image": torch.rand(1, 16, 16, generator=gen)}
    reference = copy.deepcopy(model)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=torch.utils.data.DataLoader([pair], batch_size=1),
        network=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        loss_function=LOSS,
        inferer=SimpleInferer(),
        prepare_batch=PrepareRegistrationBatch(),
    )
    return model, reference, pair, trainer, poisoned


def _float32_step(model, pair):
    """The reference: the same Adam step with the backbone in float32."""
    model.precision = "fp32"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    moving, fixed = pair["moving_image"][None], pair["fixed_image"][None]
    LOSS(model(moving, fixed), {"moving_image": moving, "fixed_image": fixed}).backward()
    optimizer.step()
    return model


def test_a_nan_bf16_gradient_is_recomputed_in_float32_and_the_step_matches_float32():
    model, reference, pair, trainer, poisoned = _setup("bf16", poison=True)
    guard = FiniteGradientGuard()
    guard.attach(trainer)
    trainer.run()
    assert poisoned and guard.recomputed == 1
    assert model.precision == "bf16"  # restored after the recomputation
    expected = _float32_step(reference, pair)
    for (name, got), want in zip(model.named_parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=name)


def test_without_the_guard_one_nan_gradient_poisons_the_weights_and_finite_steps_are_untouched():
    model, _, _, trainer, poisoned = _setup("bf16", poison=True)
    trainer.run()
    assert poisoned and not torch.isfinite(model.backbone.flow.weight).all()

    model, reference, pair, trainer, _ = _setup("fp32", poison=False)
    guard = FiniteGradientGuard()
    guard.attach(trainer)
    trainer.run()
    assert guard.recomputed == 0
    expected = _float32_step(reference, pair)
    for got, want in zip(model.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
