"""Co-expression prior, computed from the training data's RNA counts.

Each gene's row is its loading on the top principal axes of the gene-gene correlation matrix of
log-normalised expression (log1p CP10k) over the cells that have RNA. Genes without an RNA feature
or without variance are unknown.

With a presence table (features measured in some cells only, e.g. data sets or species merged with
:func:`holocell.data.merge_datasets`), a count where a gene was not measured is not data: each gene is
standardised over the cells that measured it, and each correlation is averaged over the cells that measured
both genes (pairwise-complete), so the leading axes are not "which data set measured the gene".
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
    measured: tuple[np.ndarray, np.ndarray] | None = None,
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
    measured
        The presence table: ``(codes, table)`` with ``codes`` ``(n_cells,)`` the group of each row of
        ``counts`` and ``table`` ``(n_groups, n_genes)`` bool, the genes each group measured. Unmeasured
        entries are not data (see the module docstring). Default: every gene measured in every cell.

    Returns
    -------
    :class:`PriorMatrix` with ``COEXPRESSION_RANK`` columns.
    """
    x = sp.csr_matrix(counts, dtype=np.float64)
    rows = np.arange(x.shape[0]) if present is None else np.flatnonzero(np.asarray(present, dtype=bool))
    if len(rows) > MAX_CELLS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_CELLS, replace=False))
    x = x[rows]
    mask = None if measured is None else np.asarray(measured[1], dtype=bool)[np.asarray(measured[0])[rows]]
    if mask is not None:  # a count where the gene was not measured is not data (nor part of the library size)
        x = sp.csr_matrix(x.multiply(mask))
    lib = np.asarray(x.sum(axis=1)).ravel()
    x = sp.diags(1e4 / np.maximum(lib, 1.0)) @ x
    x.data = np.log1p(x.data)
    dense = x.toarray()
    if mask is None:
        sd = dense.std(axis=0)
        varies = sd > 0
        _check_enough(len(rows), varies)
        z = (dense[:, varies] - dense[:, varies].mean(axis=0)) / sd[varies]
        corr = z.T @ z / len(rows)
    else:
        corr, varies = _pairwise_correlation(dense, mask)
        _check_enough(len(rows), varies)
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


def _check_enough(n_cells: int, varies: np.ndarray) -> None:
    if n_cells < 3 or varies.sum() < 2:
        raise ValueError(
            "The co-expression prior needs RNA counts of at least 3 cells and 2 varying genes; "
            "drop 'coexpression' from `priors`."
        )


def _pairwise_correlation(dense: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gene-gene correlation of ``dense`` ``(cells, genes)`` where ``mask`` (same shape) says which entries are data.

    Each gene is standardised over the cells that measured it (0 elsewhere), and ``z_g . z_h`` is divided by the
    number of cells that measured both genes (0 where none did). Returns the correlation of the genes that vary
    over at least 3 measuring cells, and which genes those are.
    """
    n = mask.sum(axis=0)
    mean = np.where(mask, dense, 0.0).sum(axis=0) / np.maximum(n, 1)
    centred = np.where(mask, dense - mean, 0.0)
    sd = np.sqrt((centred**2).sum(axis=0) / np.maximum(n, 1))
    varies = (sd > 0) & (n >= 3)
    z = centred[:, varies] / sd[varies]
    shared = mask[:, varies].T.astype(np.float64) @ mask[:, varies].astype(np.float64)  # cells measuring both
    corr = np.divide(z.T @ z, shared, out=np.zeros_like(shared), where=shared > 0)
    return corr, varies
