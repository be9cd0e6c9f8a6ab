"""The user-facing model class."""

from ._holocell import HoloCell

__all__ = ["HoloCell"]
