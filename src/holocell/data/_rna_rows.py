"""RNA counts of chosen cells, read chunk by chunk from in-memory or backed count arrays.

The overexpression level of :meth:`~holocell.HoloCell.predict_perturbation` and the co-expression prior
need RNA rows of many cells (library sizes over every gene, then a few columns). In memory they are
rows of :attr:`MosaicArrays.counts`; from a backed MuData (:class:`BackedMosaicArrays`) only the RNA
matrix is read, ``chunk_size`` cells at a time, so memory depends on the chunk, not on the file.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from ..vocab import MODALITIES
from ._mosaic import MosaicArrays
from ._streaming import BackedMosaicArrays, read_rows

CHUNK_CELLS = 4096
"""Cells per read of :func:`iter_rna_rows` on backed data."""


def iter_rna_rows(
    arrays: MosaicArrays | BackedMosaicArrays,
    cells: np.ndarray | None = None,
    chunk_size: int | None = None,
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """RNA counts of ``cells``, chunk by chunk, in the model's gene order.

    Parameters
    ----------
    arrays
        In-memory or backed count arrays with an RNA modality.
    cells
        Global positions of cells that have RNA, in the order wanted (default: every cell with RNA).
    chunk_size
        Cells per chunk (backed data: per read from disk); default :data:`CHUNK_CELLS`.

    Yields
    ------
    ``(positions, counts)``: the chunk's global positions and its float32 CSR counts ``(len(positions),
    n_genes)``, the same values as the rows of the in-memory arrays.
    """
    chunk_size = CHUNK_CELLS if chunk_size is None else chunk_size
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    rna = MODALITIES.index("rna")
    cells = np.flatnonzero(arrays.present[:, rna]) if cells is None else np.asarray(cells, dtype=np.int64)
    if not arrays.present[cells, rna].all():
        raise ValueError("iter_rna_rows reads cells that have RNA only.")
    for start in range(0, len(cells), chunk_size):
        part = cells[start : start + chunk_size]
        if isinstance(arrays, BackedMosaicArrays):
            mod = arrays.modalities["rna"]
            unique, inverse = np.unique(mod.rows[part], return_inverse=True)  # sorted reads, as load() does
            yield part, read_rows(mod.source, unique)[:, mod.order][inverse]
        else:
            yield part, arrays.counts["rna"][part]


__all__ = ["CHUNK_CELLS", "iter_rna_rows"]
