"""Cell -> token-state conversion (hierarchical, mosaic-aware) and value encodings."""

from ._tokenizer import SLOT_MODALITIES, Tokenizer, Tokens
from ._values import binarize, clr, log_library, log_normalized, quantile_bins

__all__ = [
    "SLOT_MODALITIES",
    "Tokenizer",
    "Tokens",
    "binarize",
    "clr",
    "log_library",
    "log_normalized",
    "quantile_bins",
]
