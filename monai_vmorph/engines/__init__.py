"""Glue between monai_vmorph's models and MONAI's engines (``SupervisedTrainer``, ``SupervisedEvaluator``)."""

from monai_vmorph.engines.bundle_config import (
    BundleConfigError,
    check_bundle_config,
    check_inference_outputs,
    check_labels,
    check_pairs,
    check_training_data,
    run_training,
)
from monai_vmorph.engines.bundle_run import (
    TrainingInterrupted,
    begin_bundle_run,
    find_bundle_root,
    lock_run_folders,
    release_run_folders,
)
from monai_vmorph.engines.checkpoint import (
    RegistrationCheckpointer,
    StopOnNonFiniteLoss,
    TrainingDivergedError,
    atomic_torch_save,
    check_checkpoint_folder,
)
from monai_vmorph.engines.evaluation import (
    EndpointErrorMetric,
    FoldingFractionMetric,
    RegistrationEvalOutputs,
    SDlogJMetric,
)
from monai_vmorph.engines.gradient_guard import FiniteGradientGuard
from monai_vmorph.engines.handlers import PairEpochHandler
from monai_vmorph.engines.history import MetricsHistory, read_history
from monai_vmorph.engines.known_warnings import quiet_known_warnings
from monai_vmorph.engines.prepare_batch import PrepareRegistrationBatch
from monai_vmorph.engines.refine_inferer import RefiningInferer
from monai_vmorph.engines.reporting import PairProgressReporter, TrainingReporter
from monai_vmorph.engines.tensorboard import TensorBoardResumeMarker
from monai_vmorph.engines.writer import RegistrationWriter

__all__ = [
    "BundleConfigError",
    "EndpointErrorMetric",
    "FiniteGradientGuard",
    "FoldingFractionMetric",
    "MetricsHistory",
    "PairEpochHandler",
    "PairProgressReporter",
    "PrepareRegistrationBatch",
    "RefiningInferer",
    "RegistrationCheckpointer",
    "RegistrationEvalOutputs",
    "RegistrationWriter",
    "SDlogJMetric",
    "StopOnNonFiniteLoss",
    "TensorBoardResumeMarker",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "TrainingReporter",
    "atomic_torch_save",
    "begin_bundle_run",
    "check_bundle_config",
    "check_checkpoint_folder",
    "check_inference_outputs",
    "check_labels",
    "check_pairs",
    "check_training_data",
    "find_bundle_root",
    "lock_run_folders",
    "quiet_known_warnings",
    "read_history",
    "release_run_folders",
    "run_training",
]
