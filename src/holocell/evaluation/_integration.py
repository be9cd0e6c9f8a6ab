"""Integration metrics on a kNN graph: LISI / iLISI and graph connectivity, plus a one-call summary.

These follow scib-metrics 0.5 (:cite:p:`luecken2022benchmarking`; the maintained implementation of
the scib metrics), which needs jax and so is not a dependency here. ``tests/test_scib_reference.py``
checks the values against scib-metrics itself on a fixture.

- **Neighbours** (as scib-metrics' ``NeighborsResults``): exact Euclidean neighbours, the cell itself
  included as its own first neighbour; the Benchmarker uses 90 for LISI and 15 for graph connectivity.
- **LISI** (Korsunsky et al. 2019): per cell, weights ``exp(-beta * d)`` on the (unsquared) distances to
  its neighbours, itself excluded, with ``beta`` found by bisection so that their entropy is
  ``log(perplexity)`` (default ``perplexity = n_neighbors // 3``); ``p_b`` = weight of group ``b``;
  LISI = ``1 / sum_b p_b^2`` (1 = one group only, ``n_groups`` = perfect mixing).
- **iLISI**: ``(median LISI - 1) / (n_batches - 1)``, in ``[0, 1]``.
- **graph connectivity**: for each label, the fraction of its cells in the largest *strongly* connected
  component of the directed kNN graph restricted to that label; averaged over labels.
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

_TOL, _MAX_TRIES = 1e-5, 50  # scib-metrics' bisection settings


def knn(embedding: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean neighbours of every cell, itself included: ``(n, k)`` distances and indices.

    ``n_neighbors`` counts the cell itself (as scib-metrics and scanpy do) and is capped at ``n_cells``.
    """
    n = embedding.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 cells for a kNN graph, got {n}")
    return NearestNeighbors(n_neighbors=min(n_neighbors, n)).fit(embedding).kneighbors(embedding)


def _neighbour_weights(dist: np.ndarray, not_self: np.ndarray, perplexity: float) -> np.ndarray:
    """Row-normalised weights ``exp(-beta d)`` (0 on the self edge) whose entropy is ``log(perplexity)``.

    The bisection is scib-metrics': ``beta`` starts at 1, doubles (halves) while the entropy is too
    high (low) and no upper (lower) bound is known, then bisects; at most 50 steps, tolerance 1e-5.
    """
    n = dist.shape[0]
    log_u = np.log(perplexity)
    # shift by the nearest other distance: H and P are unchanged, and exp() cannot underflow to all zeros
    shift = np.where(not_self, dist, np.inf).min(axis=1, keepdims=True)
    shifted = np.where(not_self, dist - shift, 0.0)

    def entropy(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = np.exp(-shifted * beta[:, None]) * not_self
        s = w.sum(axis=1)
        return np.log(s) + beta * (shifted * w).sum(axis=1) / s, w / s[:, None]

    beta = np.ones(n)
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    h, p = entropy(beta)
    diff = h - log_u
    for _ in range(_MAX_TRIES):
        active = np.abs(diff) >= _TOL
        if not active.any():
            break
        up = diff > 0  # entropy too high: sharpen the kernel (raise beta)
        new_beta = np.where(
            up,
            np.where(np.isinf(hi), beta * 2, (beta + hi) / 2),
            np.where(np.isinf(lo), beta / 2, (beta + lo) / 2),
        )
        lo = np.where(active & up, beta, lo)
        hi = np.where(active & ~up, beta, hi)
        beta = np.where(active, new_beta, beta)
        h_new, p_new = entropy(beta)
        h = np.where(active, h_new, h)
        p = np.where(active[:, None], p_new, p)
        diff = h - log_u
    return p


def lisi(
    embedding: ArrayLike, groups: ArrayLike, *, n_neighbors: int = 90, perplexity: float | None = None
) -> np.ndarray:
    """Local inverse Simpson index of ``groups`` around every cell (scib-metrics' ``lisi_knn``).

    Parameters
    ----------
    embedding
        Cells x dims embedding.
    groups
        Group (e.g. batch) per cell.
    n_neighbors
        Neighbours per cell, the cell itself included (capped at ``n_cells``).
    perplexity
        Effective neighbourhood size of the kernel; default ``n_neighbors // 3``.

    Returns
    -------
    np.ndarray
        ``(n_cells,)`` LISI, between 1 (one group) and the number of groups.
    """
    emb = to_dense(embedding)
    groups = np.asarray(groups).astype(str)
    if groups.shape[0] != emb.shape[0]:
        raise ValueError(f"embedding has {emb.shape[0]} cells but groups has {groups.shape[0]}")
    dist, idx = knn(emb, n_neighbors)
    if perplexity is None:
        perplexity = float(np.floor(idx.shape[1] / 3))
    not_self = idx != np.arange(idx.shape[0])[:, None]
    p = _neighbour_weights(dist, not_self, perplexity)
    _, codes = np.unique(groups, return_inverse=True)
    neigh = codes[idx]  # (n, k)
    props = np.zeros((emb.shape[0], codes.max() + 1))
    np.add.at(props, (np.repeat(np.arange(emb.shape[0]), neigh.shape[1]), neigh.ravel()), p.ravel())
    return 1.0 / (props**2).sum(axis=1)


def ilisi(
    embedding: ArrayLike, batch: ArrayLike, *, n_neighbors: int = 90, perplexity: float | None = None
) -> float:
    """Batch-mixing iLISI scaled to ``[0, 1]``: ``(median LISI - 1) / (n_batches - 1)`` (scib-metrics' ``ilisi_knn``).

    Parameters
    ----------
    embedding
        Cells x dims embedding.
    batch
        Batch per cell (at least two batches).
    n_neighbors, perplexity
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
    score = lisi(embedding, batch, n_neighbors=n_neighbors, perplexity=perplexity)
    return float((np.nanmedian(score) - 1.0) / (n_batches - 1.0))


def graph_connectivity(embedding: ArrayLike, labels: ArrayLike, *, n_neighbors: int = 15) -> float:
    """scib graph connectivity of the directed kNN graph of the embedding (scib-metrics' ``graph_connectivity``).

    Parameters
    ----------
    embedding
        Cells x dims embedding.
    labels
        Label (cell type) per cell.
    n_neighbors
        Neighbours per cell, the cell itself included.

    Returns
    -------
    float
        Mean over labels of the fraction of the label's cells in the largest strongly connected
        component of the kNN graph restricted to that label; 1 = every label is connected.
    """
    emb = to_dense(embedding)
    labels = np.asarray(labels).astype(str)
    if labels.shape[0] != emb.shape[0]:
        raise ValueError(f"embedding has {emb.shape[0]} cells but labels has {labels.shape[0]}")
    _, idx = knn(emb, n_neighbors)
    n = emb.shape[0]
    rows = np.repeat(np.arange(n), idx.shape[1])
    graph = sparse.csr_matrix((np.ones(rows.size), (rows, idx.ravel())), shape=(n, n))
    fractions = []
    for lab in np.unique(labels):
        cells = np.flatnonzero(labels == lab)
        _, comp = connected_components(graph[cells][:, cells], directed=True, connection="strong")
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
        ``transfer_*`` accuracies. ``asw_batch`` and ``ilisi`` are ``NaN`` with a single batch.
    """
    emb = to_dense(embedding)
    labels = np.asarray(labels).astype(str)
    batch = np.asarray(batch).astype(str)
    out = nmi_ari(emb, labels, seed=seed)
    out["asw_label"] = silhouette_label(emb, labels)
    several = len(np.unique(batch)) > 1
    out["asw_batch"] = silhouette_batch(emb, batch, labels) if several else float("nan")
    out["ilisi"] = ilisi(emb, batch) if several else float("nan")
    out["graph_connectivity"] = graph_connectivity(emb, labels)
    for name, (ref, query) in (transfer or {}).items():
        out[f"transfer_{name}"] = knn_label_transfer_accuracy(emb[ref], labels[ref], emb[query], labels[query])
    return out
