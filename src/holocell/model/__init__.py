"""The user-facing model class."""

from ._holocell import HoloCell
from ._perturb_mixin import PerturbationResult

__all__ = ["HoloCell", "PerturbationResult"]
