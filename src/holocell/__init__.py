"""holocell: a generative multi-omics foundation model for single cells."""

import os
from importlib.metadata import PackageNotFoundError, version

# Back PyTorch's CPU tensors of >= 2 MB with transparent huge pages (a documented PyTorch switch, read at
# its first large allocation). holocell's inference allocates many (cells x anchors x d_model) tensors;
# with 4 kB pages, first-touch page faults took ~40% of CPU embedding time
# (docs/design.md, "CPU inference cost").
# A value the user has set, e.g. THP_MEM_ALLOC_ENABLE=0, is kept.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from . import data, evaluation, pl, priors, tl, vocab
from ._warnings import HoloCellDeprecationWarning, HoloCellWarning
from .model import HoloCell

try:
    __version__ = version("holocell")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["HoloCell", "HoloCellDeprecationWarning", "HoloCellWarning", "data", "evaluation", "pl", "priors", "tl", "vocab", "__version__"]
