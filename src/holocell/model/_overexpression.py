"""Overexpression levels of in-silico perturbations: quantiles of a gene's ``log1p`` CP10k expression, read from
memory or streamed from a backed file (used by :class:`~holocell.model._perturb_mixin.PerturbMixin`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..data._rna_rows import iter_rna_rows
from ..data.arrays import BackedMosaicArrays
from ..vocab import MODALITIES

TARGET_SUM = 1e4
"""Overexpression levels are quantiles of ``log1p`` of counts per ``TARGET_SUM`` (CP10k), as the RNA value channel."""


def overexpression_level(expr: np.ndarray, quantile: float) -> np.ndarray:
    """``(genes,)`` level of an overexpression: the ``quantile`` of each gene's ``expr`` ``(cells, genes)`` over all
    cells, or, for a gene seen in too few cells for that quantile to reach its lowest expressed value, over the cells
    that express it (over all cells the quantile would fall among the zeros, or between them and the lowest value:
    a knockdown of every cell that expresses it). A gene no cell expresses stays at 0."""
    if not len(expr):
        return np.zeros(expr.shape[1])
    level = np.quantile(expr, quantile, axis=0)
    lowest = np.where(expr > 0, expr, np.inf).min(axis=0)  # inf: no cell expresses the gene
    for j in np.flatnonzero(level < lowest):
        seen = expr[:, j][expr[:, j] > 0]
        level[j] = np.quantile(seen, quantile) if len(seen) else 0.0
    return level


def overexpression_levels(arrays, columns: np.ndarray, quantile: float, cache: dict) -> np.ndarray:
    """:func:`overexpression_level` of the RNA ``columns``; levels already in ``cache`` (a caller perturbing gene
    after gene passes the same dict) are not computed again."""
    levels = cache.setdefault("levels", {})
    missing = [c for c in dict.fromkeys(int(c) for c in columns) if (c, quantile) not in levels]
    if missing:
        expr = _log_normalized_columns(arrays, np.asarray(missing, dtype=np.int64), cache)
        levels.update(zip([(c, quantile) for c in missing], overexpression_level(expr, quantile), strict=True))
    return np.array([levels[(int(c), quantile)] for c in columns], dtype=np.float64)


def _log_normalized_columns(arrays, columns: np.ndarray, cache: dict) -> np.ndarray:
    """``log1p(counts / library * 1e4)`` of the RNA ``columns`` over the cells with RNA (cells with no counts: 0).

    In memory, the library sizes are computed once per ``cache`` dict and only the requested columns are made
    dense. Backed data are read chunk by chunk (:func:`~holocell.data._rna_rows.iter_rna_rows`): each chunk's library
    sizes are computed from the chunk and only its requested columns are kept, so memory holds the result, not the
    counts; the values are those of the same data in memory.
    """
    if isinstance(arrays, BackedMosaicArrays):
        parts = [
            np.log1p(sp.csr_matrix(counts[:, columns]).toarray().astype(np.float64) * _library_scale(counts))
            for _, counts in iter_rna_rows(arrays)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(columns)))
    if "rna" not in cache:
        counts = arrays.counts["rna"][arrays.present[:, MODALITIES.index("rna")]]
        cache["rna"] = (counts, _library_scale(counts))
    counts, scale = cache["rna"]
    return np.log1p(sp.csr_matrix(counts[:, columns]).toarray().astype(np.float64) * scale)


def _library_scale(counts: sp.csr_matrix) -> np.ndarray:
    """``(cells, 1)`` factor ``TARGET_SUM / library size`` (0 for a cell without counts)."""
    total = np.asarray(counts.astype(np.float64).sum(axis=1))  # (n, 1); integer counts: exact
    return np.divide(TARGET_SUM, total, out=np.zeros_like(total), where=total > 0)


__all__ = ["TARGET_SUM", "overexpression_level", "overexpression_levels"]
