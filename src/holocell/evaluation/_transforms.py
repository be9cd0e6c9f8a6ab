"""Count transforms shared by the metrics and baselines."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

__all__ = ["clr", "log_normalize", "to_dense"]


def to_dense(x: ArrayLike | sp.spmatrix | sp.sparray) -> np.ndarray:
    """Return ``x`` as a dense 2-D float64 array.

    Parameters
    ----------
    x
        Dense array-like or scipy sparse matrix/array.

    Returns
    -------
    np.ndarray
        Dense ``float64`` copy (or view) of ``x`` with ``ndim == 2``.
    """
    arr = x.toarray() if sp.issparse(x) else np.asarray(x)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {arr.shape}")
    return arr


def clr(x: ArrayLike | sp.spmatrix | sp.sparray) -> np.ndarray:
    """Per-cell centred log-ratio transform of counts.

    ``clr(x)[i, j] = log1p(x[i, j]) - mean_j' log1p(x[i, j'])``, i.e. the
    centring is done across features within each cell (row), so every row of
    the output sums to zero. This is the usual CITE-seq protein (ADT)
    normalisation (muon's ``pt.pp.clr`` with ``axis=1`` up to the pseudo-count
    convention).

    Parameters
    ----------
    x
        Cells x features non-negative counts, dense or sparse.

    Returns
    -------
    np.ndarray
        Dense ``float64`` array of the same shape.
    """
    logx = np.log1p(to_dense(x))
    return logx - logx.mean(axis=1, keepdims=True)


def log_normalize(x: ArrayLike | sp.spmatrix | sp.sparray, target_sum: float = 1e4) -> np.ndarray:
    """Library-size normalise each cell to ``target_sum`` and apply ``log1p``.

    Cells with zero total counts are left as zeros.

    Parameters
    ----------
    x
        Cells x features non-negative counts, dense or sparse.
    target_sum
        Total count every cell is scaled to before the log.

    Returns
    -------
    np.ndarray
        Dense ``float64`` array of the same shape.
    """
    dense = to_dense(x)
    totals = dense.sum(axis=1, keepdims=True)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(dense * scale)
