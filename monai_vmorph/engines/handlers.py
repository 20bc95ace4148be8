"""Ignite handlers used by the bundles' training workflows."""

from __future__ import annotations

from ignite.engine import Engine, Events

from monai_vmorph.data.pairing import RandomPairDataset

__all__ = ["PairEpochHandler"]


class PairEpochHandler:
    """Draw a new, reproducible set of random pairs at the start of every epoch.

    Calls ``dataset.set_epoch(engine.state.epoch)`` on ``EPOCH_STARTED`` (MONAI's workflows already do the same
    for a ``DistributedSampler``), so epoch ``e`` always trains on the pairs of ``seed + e`` — also after a
    resumed run.

    Args:
        dataset: the :class:`~monai_vmorph.data.RandomPairDataset` of the training data loader.
    """

    def __init__(self, dataset: RandomPairDataset) -> None:
        if not hasattr(dataset, "set_epoch"):
            raise ValueError(f"dataset must have a set_epoch(epoch) method, got {type(dataset).__name__}.")
        self.dataset = dataset

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.dataset.set_epoch(engine.state.epoch)
