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

import warnings

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors

from holocell._warnings import HoloCellWarning, user_stacklevel
from holocell.evaluation._checks import check_embedding, check_labels, check_n_neighbors
from holocell.evaluation._metrics import (
    knn_label_transfer_accuracy,
    nmi_ari,
    silhouette_batch,
    silhouette_label,
)

__all__ = ["graph_connectivity", "ilisi", "integration_metrics", "lisi"]

_TOL, _MAX_TRIES = 1e-5, 50  # scib-metrics' bisection settings


def knn(embedding: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean neighbours of every cell, itself included: ``(n, k)`` distances and indices.

    ``n_neighbors`` counts the cell itself (as scib-metrics and scanpy do), must be at least 2 and is
    capped at ``n_cells``.
    """
    check_n_neighbors(n_neighbors, 2, why=" (the cell itself is its first neighbour)")
    n = embedding.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 cells for a kNN graph, got {n}; score more cells.")
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


def _perplexity(n_neighbors: int, n_cells: int, perplexity: float | None) -> float:
    """The LISI kernel's perplexity, refusing one the ``min(n_neighbors, n_cells)`` neighbours cannot carry."""
    k = min(check_n_neighbors(n_neighbors, 2, why=" (the cell itself is its first neighbour)"), n_cells)
    if perplexity is None:
        if k < 6:
            raise ValueError(
                f"LISI's default perplexity n_neighbors // 3 must be at least 2, so it needs at least 6 neighbours, "
                f"but min(n_neighbors={n_neighbors}, {n_cells} cells) = {k}; score at least 6 cells with "
                "n_neighbors>=6."
            )
        return float(np.floor(k / 3))
    if not np.isfinite(perplexity) or not 1 < perplexity <= k - 1:
        raise ValueError(
            f"LISI's perplexity must be above 1 and at most the {k - 1} other neighbours of "
            f"min(n_neighbors={n_neighbors}, {n_cells} cells) = {k}, got {perplexity}; pass a perplexity in "
            f"(1, {k - 1}] or more neighbours."
        )
    return float(perplexity)


def lisi(
    embedding: ArrayLike, groups: ArrayLike, *, n_neighbors: int = 90, perplexity: float | None = None
) -> np.ndarray:
    """Local inverse Simpson index of ``groups`` around every cell (scib-metrics' ``lisi_knn``).

    Parameters
    ----------
    embedding
        Cells x dims embedding (finite values).
    groups
        Group (e.g. batch) per cell; missing groups (``None`` / ``NaN``) are refused.
    n_neighbors
        Neighbours per cell, the cell itself included (capped at ``n_cells``).
    perplexity
        Effective neighbourhood size of the kernel; default ``n_neighbors // 3`` (of the capped
        ``n_neighbors``). It must be above 1 and at most the ``n_neighbors - 1`` other neighbours, so
        the default needs at least 6 neighbours, hence at least 6 cells.

    Returns
    -------
    np.ndarray
        ``(n_cells,)`` LISI, between 1 (one group) and the number of groups.
    """
    emb = check_embedding(embedding)
    groups = check_labels(groups, emb.shape[0], "groups", "group")
    perplexity = _perplexity(n_neighbors, emb.shape[0], perplexity)
    dist, idx = knn(emb, n_neighbors)
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
        Cells x dims embedding (finite values).
    batch
        Batch per cell (at least two batches; missing batches are refused).
    n_neighbors, perplexity
        See :func:`lisi`.

    Returns
    -------
    float
        0 when every neighbourhood holds one batch, 1 when batches are perfectly mixed.
    """
    emb = check_embedding(embedding)
    batch = check_labels(batch, emb.shape[0], "batch", "batch")
    n_batches = len(np.unique(batch))
    if n_batches < 2:
        raise ValueError("iLISI needs at least two batches, got 1; score a set with several batches.")
    score = lisi(emb, batch, n_neighbors=n_neighbors, perplexity=perplexity)
    return float((np.nanmedian(score) - 1.0) / (n_batches - 1.0))


def graph_connectivity(embedding: ArrayLike, labels: ArrayLike, *, n_neighbors: int = 15) -> float:
    """scib graph connectivity of the directed kNN graph of the embedding (scib-metrics' ``graph_connectivity``).

    Parameters
    ----------
    embedding
        Cells x dims embedding (finite values).
    labels
        Label (cell type) per cell; missing labels (``None`` / ``NaN``) are refused.
    n_neighbors
        Neighbours per cell, the cell itself included (at least 2).

    Returns
    -------
    float
        Mean over labels of the fraction of the label's cells in the largest strongly connected
        component of the kNN graph restricted to that label; 1 = every label is connected.
    """
    emb = check_embedding(embedding)
    labels = check_labels(labels, emb.shape[0])
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
        Cells x dims embedding (finite values).
    labels
        Cell type per cell (the truth; never used to build the embedding). Missing labels
        (``None`` / ``NaN``) are refused: drop those cells first.
    batch
        Batch per cell (missing batches are refused).
    transfer
        Optional ``name -> (reference cells, query cells)``: kNN(15) label transfer accuracy from
        the reference cells to the query cells (e.g. protein-only -> RNA-only), reported as
        ``"transfer_<name>"``. Each side is a boolean mask with one entry per embedding row, or the
        integer positions of its cells (negative positions count from the end), and must select at
        least one cell. An integer array of only 0 and 1 with one entry per row is refused as
        ambiguous (pass ``mask.astype(bool)``, or ``np.flatnonzero(mask)``); so are floats, objects
        and missing values. Query cells that are also reference cells vote for their own label: they
        are kept, with a :class:`~holocell.HoloCellWarning` giving their number, as the accuracy on
        them is optimistic.
    seed
        KMeans seed for NMI / ARI.

    Returns
    -------
    dict
        ``nmi``, ``ari``, ``asw_label``, ``asw_batch``, ``ilisi``, ``graph_connectivity`` and the
        ``transfer_*`` accuracies. ``asw_batch`` and ``ilisi`` are ``NaN`` with a single batch;
        ``nmi``, ``ari`` and ``asw_label`` are ``NaN`` with a single label (cell type).
    """
    emb = check_embedding(embedding)
    labels = check_labels(labels, emb.shape[0])
    batch = check_labels(batch, emb.shape[0], "batch", "batch")
    pairs = {name: _transfer_cells(name, sides, emb.shape[0]) for name, sides in (transfer or {}).items()}
    if len(np.unique(labels)) > 1:
        out = nmi_ari(emb, labels, seed=seed)
        out["asw_label"] = silhouette_label(emb, labels)
    else:
        out = {"nmi": float("nan"), "ari": float("nan"), "asw_label": float("nan")}
    several = len(np.unique(batch)) > 1
    out["asw_batch"] = silhouette_batch(emb, batch, labels) if several else float("nan")
    out["ilisi"] = ilisi(emb, batch) if several else float("nan")
    out["graph_connectivity"] = graph_connectivity(emb, labels)
    for name, (ref, query) in pairs.items():
        out[f"transfer_{name}"] = knn_label_transfer_accuracy(emb[ref], labels[ref], emb[query], labels[query])
    return out


def _transfer_cells(name: str, sides, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference and query positions of one ``transfer`` entry; warns when they share cells."""
    try:
        ref, query = sides
    except (TypeError, ValueError):
        raise ValueError(
            f"transfer {name!r} must be a pair (reference cells, query cells), got {type(sides).__name__}."
        ) from None
    ref, query = _cells(name, ref, "reference", n_cells), _cells(name, query, "query", n_cells)
    shared = np.intersect1d(ref, query)
    if shared.size:
        warnings.warn(
            f"transfer {name!r}: {shared.size} of the {np.unique(query).size} query cells are also reference "
            "cells; each votes for its own label, so the accuracy on them is optimistic. Pass a reference and a "
            "query without common cells (e.g. reference & ~query).",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )
    return ref, query


def _as_array(mask: ArrayLike, what: str) -> np.ndarray:
    """``mask`` as a numpy array; a pandas nullable boolean or integer one (``"boolean"``, ``"Int64"``) as bool
    or int64, refused when it holds missing values (``<NA>``)."""
    dtype = getattr(mask, "dtype", None)
    is_bool, is_int = pd.api.types.is_bool_dtype(dtype), pd.api.types.is_integer_dtype(dtype)
    if not isinstance(dtype, pd.api.extensions.ExtensionDtype) or not (is_bool or is_int):
        return np.asarray(mask)
    values = pd.array(mask)
    missing = int(values.isna().sum())
    if missing:
        raise ValueError(
            f"{what} has {missing} missing values (<NA>); fill them first, e.g. mask.fillna(False), or leave "
            "those cells out."
        )
    return values.to_numpy(dtype=bool if is_bool else np.int64)


def _cells(name: str, mask: ArrayLike, role: str, n_cells: int) -> np.ndarray:
    """Positions of one side of a ``transfer`` entry: a boolean mask (one entry per cell) or integer positions.

    Refuses a mask of the wrong length, a 0/1 integer array with one entry per cell (a mask read as positions
    would score cells 0 and 1 only), positions out of range, other dtypes (float, object, missing values) and a
    side that selects no cell.
    """
    what = f"transfer {name!r}: the {role} mask"
    cells = _as_array(mask, what)
    if cells.dtype == bool:
        if cells.shape != (n_cells,):
            raise ValueError(
                f"{what} has shape {cells.shape} but the embedding has {n_cells} cells; pass one boolean per "
                "embedding row."
            )
        cells = np.flatnonzero(cells)
    elif cells.ndim != 1 or (cells.size and not np.issubdtype(cells.dtype, np.integer)):
        raise ValueError(
            f"{what} must be a boolean mask (one per embedding row) or integer positions, got {cells.dtype} of "
            f"shape {cells.shape}; e.g. np.asarray(mask, dtype=bool) (fill missing values first) or "
            "np.flatnonzero(mask)."
        )
    elif n_cells > 2 and cells.shape == (n_cells,) and np.isin(cells, (0, 1)).all():
        raise ValueError(
            f"{what} has {n_cells} integers of only 0 and 1, one per embedding row: a 0/1 mask read as positions "
            "would score cells 0 and 1 only. Pass it as a boolean mask (mask.astype(bool)), or the positions of "
            "the cells (np.flatnonzero(mask))."
        )
    if cells.size == 0:
        raise ValueError(
            f"{what} selects no cells; pass at least one {role} cell (or leave {name!r} out of transfer)."
        )
    cells = cells.astype(np.int64)
    out = (cells < -n_cells) | (cells >= n_cells)
    if out.any():
        raise IndexError(
            f"{what} has positions {cells[out][:5].tolist()} outside the embedding's {n_cells} rows (0 to "
            f"{n_cells - 1}, or -{n_cells} to -1); pass positions of embedding rows, or a boolean mask."
        )
    return np.where(cells < 0, cells + n_cells, cells)
