"""MONAI's SupervisedTrainer / SupervisedEvaluator run VoxelMorph through our batch, loss and output glue."""

import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import IgniteMetricHandler, MeanDice, from_engine

from monai_vmorph.data.keys import FIXED_IMAGE, FIXED_LABEL, MOVING_IMAGE, MOVING_LABEL
from monai_vmorph.engines import (
    FoldingFractionMetric,
    PrepareRegistrationBatch,
    RegistrationEvalOutputs,
    SDlogJMetric,
)
from monai_vmorph.losses import RegistrationLoss
from monai_vmorph.networks import VoxelMorph


def _disc_pairs(count, shift=3.0, size=32, seed=0):
    """Pairs of discs: the fixed disc is the moving one shifted by ``shift`` pixels along axis 0."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij"))
    pairs = []
    for _ in range(count):
        center = torch.rand(2, generator=gen) * 6 + size / 2 - 3
        radius = 6 + 2 * torch.rand(1, generator=gen)
        moving = torch.sigmoid(2 * (radius - (grid - center[:, None, None]).norm(dim=0)))[None]
        center[0] += shift
        fixed = torch.sigmoid(2 * (radius - (grid - center[:, None, None]).norm(dim=0)))[None]
        pairs.append(
            {
                MOVING_IMAGE: moving,
                FIXED_IMAGE: fixed,
                MOVING_LABEL: (moving > 0.5).float(),
                FIXED_LABEL: (fixed > 0.5).float(),
            }
        )
    return pairs


def _evaluator(net, loader):
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=net,
        prepare_batch=PrepareRegistrationBatch(),
        decollate=False,
        postprocessing=RegistrationEvalOutputs(labels=[1]),
        key_val_metric={
            "dice": MeanDice(include_background=True, output_transform=from_engine(["pred_onehot", "label_onehot"]))
        },
        additional_metrics={
            "folding": IgniteMetricHandler(FoldingFractionMetric(), output_transform=from_engine(["ddf", "ddf"])),
            "sdlogj": IgniteMetricHandler(SDlogJMetric(), output_transform=from_engine(["ddf", "ddf"])),
        },
    )


@pytest.mark.slow
def test_trainer_improves_dice_over_identity_and_evaluator_reports_field_metrics():
    torch.manual_seed(0)
    net = VoxelMorph(2, backbone_kwargs={"encoder_channels": (8, 16), "decoder_channels": (16, 16, 8)})
    train = DataLoader(_disc_pairs(16, seed=1), batch_size=4, shuffle=True)
    val = DataLoader(_disc_pairs(4, seed=2), batch_size=2)
    loss = RegistrationLoss("mse", smoothness_weight=0.01, loss_mult=2, dice_weight=0.5, labels=[1])
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=25,
        train_data_loader=train,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=3e-3),
        loss_function=loss,
        prepare_batch=PrepareRegistrationBatch(),
    )
    evaluator = _evaluator(net, val)
    evaluator.run()
    before = evaluator.state.metrics["dice"]
    assert 0.5 < before < 0.9  # shifted discs overlap partly
    trainer.run()
    assert set(loss.last_terms) == {"similarity", "smoothness", "dice"}
    evaluator.run()
    after = evaluator.state.metrics
    assert after["dice"] > 0.95  # 0.74 before training, 1.0 after on this seed
    assert 0 <= after["folding"] < 0.05 and 0 < after["sdlogj"] < 1


def test_prepare_batch_routes_fixed_as_keyword_and_targets():
    batch = _disc_pairs(1)[0]
    batch = {k: v[None] for k, v in batch.items()}
    moving, targets, args, kwargs = PrepareRegistrationBatch()(batch, torch.device("cpu"))
    assert moving is targets[MOVING_IMAGE] and kwargs["fixed"] is targets[FIXED_IMAGE] and args == ()
    assert set(targets) == {MOVING_IMAGE, FIXED_IMAGE, MOVING_LABEL, FIXED_LABEL}
    with pytest.raises(ValueError, match=r"must be a dict with 'moving_image' and 'fixed_image', got \['image'\]"):
        PrepareRegistrationBatch()({"image": torch.zeros(1)})
