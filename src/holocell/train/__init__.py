"""Lightning training plan and data module."""

from ._plan import MosaicDataModule, TrainingPlan, split_indices

__all__ = ["MosaicDataModule", "TrainingPlan", "split_indices"]
