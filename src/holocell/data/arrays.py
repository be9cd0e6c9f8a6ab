"""Data plumbing used by the model class and the training plan: MuData -> count arrays -> mini-batches.

This is holocell's internal data API (stable within a release; most users never call it): the model
validates a MuData and then reads it only through these names.
"""

from ._access import (
    batch_codes,
    closes_backed_path,
    match_batches,
    mudata_arrays,
    read_backed,
    species_codes,
    update_axes,
)
from ._mosaic import MosaicArrays, make_loader
from ._streaming import BackedMosaicArrays, is_backed, make_chunked_loader

__all__ = [
    "BackedMosaicArrays",
    "MosaicArrays",
    "batch_codes",
    "closes_backed_path",
    "is_backed",
    "make_chunked_loader",
    "make_loader",
    "match_batches",
    "mudata_arrays",
    "read_backed",
    "species_codes",
    "update_axes",
]
