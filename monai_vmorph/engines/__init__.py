"""Glue between monai_vmorph's models and MONAI's engines (``SupervisedTrainer``, ``SupervisedEvaluator``)."""

from monai_vmorph.engines.evaluation import (
    EndpointErrorMetric,
    FoldingFractionMetric,
    RegistrationEvalOutputs,
    SDlogJMetric,
)
from monai_vmorph.engines.handlers import PairEpochHandler
from monai_vmorph.engines.prepare_batch import PrepareRegistrationBatch
from monai_vmorph.engines.writer import RegistrationWriter

__all__ = [
    "EndpointErrorMetric",
    "FoldingFractionMetric",
    "PairEpochHandler",
    "PrepareRegistrationBatch",
    "RegistrationEvalOutputs",
    "RegistrationWriter",
    "SDlogJMetric",
]
