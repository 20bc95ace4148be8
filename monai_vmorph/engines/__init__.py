"""Glue between monai_vmorph's models and MONAI's engines (``SupervisedTrainer``, ``SupervisedEvaluator``)."""

from monai_vmorph.engines.evaluation import (
    EndpointErrorMetric,
    FoldingFractionMetric,
    RegistrationEvalOutputs,
    SDlogJMetric,
)
from monai_vmorph.engines.prepare_batch import PrepareRegistrationBatch

__all__ = [
    "EndpointErrorMetric",
    "FoldingFractionMetric",
    "PrepareRegistrationBatch",
    "RegistrationEvalOutputs",
    "SDlogJMetric",
]
