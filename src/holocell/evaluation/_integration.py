"""Integration metrics on a kNN graph: iLISI and graph connectivity, plus a one-call summary.

scib-metrics (the maintained implementation) needs jax; on Python 3.11 its installable releases
pull jax/jaxlib into the environment, so the two graph metrics it provides that sklearn does not
are implemented here once, following the scib definitions:

- **iLISI** (Korsunsky et al. 2019; scib): per cell, a Gaussian kernel over its ``k`` nearest
  neighbours, calibrated to a fixed perplexity, gives batch proportions ``p_b``; the cell's LISI is
  the inverse Simpson index ``1 / sum_b p_b^2`` (1 = one batch only, ``n_batches`` = perfect
  mixing). The score is the median LISI scaled to ``[0, 1]``: ``(median - 1) / (n_batches - 1)``.
- **graph connectivity** (scib): for each label, the fraction of its cells in the largest connected
  component of the kNN graph restricted to that label; averaged over labels.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors

from holocell.evaluation._metrics import (
    knn_label_transfer_accuracy,
    nmi_ari,
    silhouette_batch,
    silhouette_label,
)
from holocell.evaluation._transforms import to_dense

__all__ = ["graph_connectivity", "ilisi", "integration_metrics", "lisi"]


def _knn(embedding: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the ``k`` nearest neighbours of every cell, itself excluded."""
    n = embedding.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 cells for a kNN graph, got {n}")
    k = min(k, n - 1)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(embedding).kneighbors(embedding)
    return dist[:, 1:], idx[:, 1:]


def _perplexity_weights(dist: np.ndarray, perplexity: float, n_iter: int = 50, tol: float = 1e-5) -> np.ndarray:
    """Row-normalised Gaussian kernel weights whose entropy matches ``log(perplexity)`` (bisection on beta)."""
    n, k = dist.shape
    target = np.log(min(perplexity, k))
    d2 = dist**2
    d2 = d2 - d2[:, :1]  # shift by the nearest distance for numerical stability; cancels on normalising
    beta = np.ones(n)
    lo, hi = np.zeros(n), np.full(n, np.inf)
    for _ in range(n_iter):
        w = np.exp(-d2 * beta[:, None])
        w_sum = w.sum(axis=1, keepdims=True)
        p = w / w_sum
        entropy = np.log(w_sum[:, 0]) + beta * (d2 * p).sum(axis=1)
        diff = entropy - target
        if np.all(np.abs(diff) < tol):
            break
        too_flat = diff > 0  # entropy too high: sharpen (raise beta)
        lo = np.where(too_flat, beta, lo)
        hi = np.where(too_flat, hi, beta)
        beta = np.where(np.isinf(hi), beta * 2.0, (lo + hi) / 2.0)
    return p


def lisi(
    embedding: ArrayLike, groups: ArrayLike, *, k: int = 90, perplexity: float = 30.0
) -> np.ndarray:
    """Local inverse Simpson index of ``groups`` around every cell.

    Parameters
    ----------
    embedding
        Cells x dims embedding.
    groups
        Group (e.g. batch) per cell.
    k
        Neighbours per cell (capped at ``n_cells - 1``).
    perplexity
        Effective neighbourhood size of the Gaussian kernel (capped at ``k``).

    Returns
    -------
    np.ndarray
        ``(n_cells,)`` LISI, between 1 (one group) and the number of groups.
    """
    emb = to_dense(embedding)
    groups = np.asarray(groups).astype(str)
    if groups.shape[0] != emb.shape[0]:
        raise ValueError(f"embedding has {emb.shape[0]} cells but groups has {groups.shape[0]}")
    dist, idx = _knn(emb, k)
    p = _perplexity_weights(dist, perplexity)
    _, codes = np.unique(groups, return_inverse=True)
    n_groups = codes.max() + 1
    neigh = codes[idx]  # (n, k)
    props = np.zeros((emb.shape[0], n_groups))
    np.add.at(props, (np.repeat(np.arange(emb.shape[0]), idx.shape[1]), neigh.ravel()), p.ravel())
    return 1.0 / (props**2).sum(axis=1)


def ilisi(embedding: ArrayLike, batch: ArrayLike, *, k: int = 90, perplexity: float = 30.0) -> float:
    """Batch-mixing iLISI scaled to ``[0, 1]``: ``(median LISI - 1) / (n_batches - 1)``.

    Parameters
    ----------
    embedding
        Cells x dims embedding.
    batch
        Batch per cell (at least two batches).
    k, perplexity
        See :func:`lisi`.

    Returns
    -------
    float
        0 when every neighbourhood holds one batch, 1 when batches are perfectly mixed.
    """
    batch = np.asarray(batch).astype(str)
    n_batches = len(np.unique(batch))
    if n_batches < 2:
        raise ValueError("iLISI needs at least two batches.")
    score = lisi(embedding, batch, k=k, perplexity=perplexity)
    return float((np.median(score) - 1.0) / (n_batches - 1.0))


def graph_connectivity(embedding: ArrayLike, labels: ArrayLike, *, k: int = 15) -> float:
    """scib graph connectivity of a kNN graph of the embedding.

    Parameters
    ----------
    embedding
        Cells x dims embedding.
    labels
        Label (cell type) per cell.
    k
        Neighbours per cell in the (symmetrised) kNN graph.

    Returns
    -------
    float
        Mean over labels of the fraction of the label's cells in the largest connected
        component of the graph restricted to that label; 1 = every label is connected.
    """
    emb = to_dense(embedding)
    labels = np.asarray(labels).astype(str)
    if labels.shape[0] != emb.shape[0]:
        raise ValueError(f"embedding has {emb.shape[0]} cells but labels has {labels.shape[0]}")
    _, idx = _knn(emb, k)
    n = emb.shape[0]
    rows = np.repeat(np.arange(n), idx.shape[1])
    graph = sparse.csr_matrix((np.ones(rows.size), (rows, idx.ravel())), shape=(n, n))
    graph = graph + graph.T
    fractions = []
    for lab in np.unique(labels):
        cells = np.flatnonzero(labels == lab)
        _, comp = connected_components(graph[cells][:, cells], directed=False)
        fractions.append(np.bincount(comp).max() / cells.size)
    return float(np.mean(fractions))


def integration_metrics(
    embedding: ArrayLike,
    labels: ArrayLike,
    batch: ArrayLike,
    *,
    transfer: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """All embedding metrics of the benchmarks in one call.

    Parameters
    ----------
    embedding
        Cells x dims embedding.
    labels
        Cell type per cell (the truth; never used to build the embedding).
    batch
        Batch per cell.
    transfer
        Optional ``name -> (reference mask, query mask)``: kNN(15) label transfer accuracy from
        the reference cells to the query cells (e.g. protein-only -> RNA-only), reported as
        ``"transfer_<name>"``.
    seed
        KMeans seed for NMI / ARI.

    Returns
    -------
    dict
        ``nmi``, ``ari``, ``asw_label``, ``asw_batch``, ``ilisi``, ``graph_connectivity`` and the
        ``transfer_*`` accuracies.
    """
    emb = to_dense(embedding)
    labels = np.asarray(labels).astype(str)
    batch = np.asarray(batch).astype(str)
    out = nmi_ari(emb, labels, seed=seed)
    out["asw_label"] = silhouette_label(emb, labels)
    out["asw_batch"] = silhouette_batch(emb, batch, labels)
    out["ilisi"] = ilisi(emb, batch)
    out["graph_connectivity"] = graph_connectivity(emb, labels)
    for name, (ref, query) in (transfer or {}).items():
        out[f"transfer_{name}"] = knn_label_transfer_accuracy(emb[ref], labels[ref], emb[query], labels[query])
    return out
