"""Training: the Lightning training plan and data module, the run set-up, and its typed settings."""

from ._config import TrainingConfig
from ._fit import (
    EarlyStoppingAfterWarmup,
    FitResult,
    HistoryLogger,
    RowFreeze,
    RowFreezeCallback,
    fit,
)
from ._plan import MosaicDataModule, TrainingPlan, split_indices
from ._processes import WeightEMA
from ._run_length import RunLengthWarning

__all__ = [
    "EarlyStoppingAfterWarmup",
    "FitResult",
    "HistoryLogger",
    "MosaicDataModule",
    "RowFreeze",
    "RowFreezeCallback",
    "RunLengthWarning",
    "TrainingConfig",
    "TrainingPlan",
    "WeightEMA",
    "fit",
    "split_indices",
]
