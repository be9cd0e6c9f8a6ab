"""The user-facing model class."""

from ._checkpoint import checkpoint_sha256
from ._holocell import HoloCell

__all__ = ["HoloCell", "checkpoint_sha256"]
