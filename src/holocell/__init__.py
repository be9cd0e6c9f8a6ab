"""holocell: a generative multi-omics foundation model for single cells."""

from importlib.metadata import PackageNotFoundError, version

from . import data, evaluation, pl, priors, tl, vocab
from .model import HoloCell

try:
    __version__ = version("holocell")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["HoloCell", "data", "evaluation", "pl", "priors", "tl", "vocab", "__version__"]
