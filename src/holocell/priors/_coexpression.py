"""Co-expression prior, computed from the training data's RNA counts.

Each gene's row is its loading on the top principal axes of the gene-gene correlation matrix of
log-normalised expression (log1p CP10k) over the cells that have RNA. Genes without an RNA feature
or without variance are unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ._matrix import PriorMatrix, standardise

#: Columns of the co-expression prior.
COEXPRESSION_RANK = 16
#: Cells used at most (a seeded random subset beyond that).
MAX_CELLS = 20_000


def coexpression_prior(
    n_anchors: int,
    counts: sp.spmatrix | np.ndarray,
    feature_anchor: Sequence[int],
    present: np.ndarray | None = None,
    seed: int = 0,
) -> PriorMatrix:
    """Co-expression prior over ``n_anchors`` anchors.

    Parameters
    ----------
    n_anchors
        Number of anchors of the model.
    counts
        ``(n_cells, n_genes)`` raw RNA counts.
    feature_anchor
        ``(n_genes,)`` anchor index of each RNA feature.
    present
        ``(n_cells,)`` bool, cells that have RNA (default: all).
    seed
        Seed of the cell subsample when there are more than ``MAX_CELLS`` cells.

    Returns
    -------
    :class:`PriorMatrix` with ``COEXPRESSION_RANK`` columns.
    """
    x = sp.csr_matrix(counts, dtype=np.float64)
    rows = np.arange(x.shape[0]) if present is None else np.flatnonzero(np.asarray(present, dtype=bool))
    if len(rows) > MAX_CELLS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_CELLS, replace=False))
    x = x[rows]
    lib = np.asarray(x.sum(axis=1)).ravel()
    x = sp.diags(1e4 / np.maximum(lib, 1.0)) @ x
    x.data = np.log1p(x.data)
    dense = x.toarray()
    sd = dense.std(axis=0)
    varies = sd > 0
    if len(rows) < 3 or varies.sum() < 2:
        raise ValueError(
            "The co-expression prior needs RNA counts of at least 3 cells and 2 varying genes; "
            "drop 'coexpression' from `priors`."
        )
    z = (dense[:, varies] - dense[:, varies].mean(axis=0)) / sd[varies]
    corr = z.T @ z / len(rows)
    vals, vecs = np.linalg.eigh(corr)
    order = np.argsort(-vals)[:COEXPRESSION_RANK]
    vals, vecs = np.clip(vals[order], 0, None), vecs[:, order]
    sign = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
    loadings = vecs * np.where(sign == 0, 1, sign) * np.sqrt(vals)
    table = np.zeros((varies.sum(), COEXPRESSION_RANK), dtype=np.float32)
    table[:, : loadings.shape[1]] = loadings
    anchor = np.asarray(feature_anchor, dtype=np.int64)[varies]
    values = np.zeros((n_anchors, COEXPRESSION_RANK), dtype=np.float32)
    values[anchor] = table
    known = np.zeros(n_anchors, dtype=bool)
    known[anchor] = True
    columns = [f"coexpression_{i}" for i in range(COEXPRESSION_RANK)]
    return PriorMatrix("coexpression", standardise(values, known), known, columns)
