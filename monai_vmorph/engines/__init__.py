"""Glue between monai_vmorph's models and MONAI's engines (``SupervisedTrainer``, ``SupervisedEvaluator``)."""

from monai_vmorph.engines.bundle_config import BundleConfigError, check_bundle_config, run_training
from monai_vmorph.engines.checkpoint import (
    RegistrationCheckpointer,
    StopOnNonFiniteLoss,
    TrainingDivergedError,
    atomic_torch_save,
)
from monai_vmorph.engines.evaluation import (
    EndpointErrorMetric,
    FoldingFractionMetric,
    RegistrationEvalOutputs,
    SDlogJMetric,
)
from monai_vmorph.engines.handlers import PairEpochHandler
from monai_vmorph.engines.history import MetricsHistory, read_history
from monai_vmorph.engines.known_warnings import quiet_known_warnings
from monai_vmorph.engines.prepare_batch import PrepareRegistrationBatch
from monai_vmorph.engines.reporting import PairProgressReporter, TrainingReporter
from monai_vmorph.engines.tensorboard import TensorBoardResumeMarker
from monai_vmorph.engines.writer import RegistrationWriter

__all__ = [
    "BundleConfigError",
    "EndpointErrorMetric",
    "FoldingFractionMetric",
    "MetricsHistory",
    "PairEpochHandler",
    "PairProgressReporter",
    "PrepareRegistrationBatch",
    "RegistrationCheckpointer",
    "RegistrationEvalOutputs",
    "RegistrationWriter",
    "SDlogJMetric",
    "StopOnNonFiniteLoss",
    "TensorBoardResumeMarker",
    "TrainingDivergedError",
    "TrainingReporter",
    "atomic_torch_save",
    "check_bundle_config",
    "quiet_known_warnings",
    "read_history",
    "run_training",
]
