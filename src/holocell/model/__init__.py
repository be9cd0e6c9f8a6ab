"""The user-facing model class."""

from ._checkpoint import checkpoint_sha256
from ._holocell import HoloCell
from ._perturb_mixin import PerturbationResult

__all__ = ["HoloCell", "PerturbationResult", "checkpoint_sha256"]
