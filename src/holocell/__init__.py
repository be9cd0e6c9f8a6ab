"""holocell: a generative multi-omics foundation model for single cells.

Importing holocell has no side effects outside the package, and is cheap: the subpackages (and torch,
Lightning, scvi-tools behind them) load on first use, e.g. of ``hc.HoloCell`` or ``hc.tl``. Process-wide
switches live in :data:`holocell.settings`; set ``hc.settings.huge_pages`` before that first use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ._settings import settings
from ._warnings import HoloCellDeprecationWarning, HoloCellWarning

if TYPE_CHECKING:  # what the lazy attributes below resolve to
    from . import data, evaluation, pl, priors, tl, vocab
    from .model import HoloCell

try:
    __version__ = version("holocell")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "HoloCell",
    "HoloCellDeprecationWarning",
    "HoloCellWarning",
    "data",
    "evaluation",
    "pl",
    "priors",
    "settings",
    "tl",
    "vocab",
    "__version__",
]

_SUBPACKAGES = {"data", "evaluation", "model", "nn", "pl", "priors", "tl", "tokenize", "train", "vocab", "tools"}


def __getattr__(name: str):
    if name == "HoloCell":
        return importlib.import_module(".model", __name__).HoloCell
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBPACKAGES)
