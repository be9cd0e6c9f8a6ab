"""Prediction, label-transfer and embedding metrics.

All functions take cells in rows. Sparse inputs are densified; these helpers
are meant for evaluation-sized data (thousands to tens of thousands of cells).
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_samples,
    silhouette_score,
)
from sklearn.neighbors import KNeighborsClassifier

from holocell._warnings import HoloCellWarning, user_stacklevel
from holocell.evaluation._checks import check_embedding, check_labels, check_n_neighbors
from holocell.evaluation._transforms import to_dense

__all__ = [
    "auroc_scores",
    "knn_label_transfer_accuracy",
    "nmi_ari",
    "per_feature_auroc",
    "per_feature_pearson",
    "prediction_scores",
    "rmse",
    "silhouette_batch",
    "silhouette_label",
]


def _paired(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Truth and prediction as dense matrices of one shape, on the cells (rows) finite in both.

    Rows with a NaN or inf in either (e.g. the NaN rows :meth:`holocell.HoloCell.generate` writes for cells
    without a source modality) are left out with a :class:`~holocell.HoloCellWarning` giving their number: a
    NaN prediction is no prediction, never a score. Inputs without such rows are returned as they are.
    """
    a, b = to_dense(y_true), to_dense(y_pred)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    bad_true, bad_pred = ~np.isfinite(a).all(axis=1), ~np.isfinite(b).all(axis=1)
    keep = ~(bad_true | bad_pred)
    if keep.all():
        return a, b
    warnings.warn(
        f"{int((~keep).sum())} of {keep.size} cells (rows) have NaN or inf values ({int(bad_pred.sum())} in the "
        f"prediction, {int(bad_true.sum())} in the truth), e.g. the NaN rows generate writes for cells without a "
        f"source modality; they are left out and the scores use the other {int(keep.sum())} cells. Drop them "
        "first to silence this: rows = np.isfinite(y_pred).all(axis=1) & np.isfinite(y_true).all(axis=1).",
        HoloCellWarning,
        stacklevel=user_stacklevel(),
    )
    return a[keep], b[keep]



def per_feature_pearson(y_true: ArrayLike, y_pred: ArrayLike, min_std: float = 1e-6) -> np.ndarray:
    """Pearson correlation between truth and prediction for every feature (column).

    Parameters
    ----------
    y_true, y_pred
        Cells x features matrices of equal shape, dense or sparse. Cells (rows) with NaN or inf in
        either are left out with a :class:`~holocell.HoloCellWarning` giving their number (e.g. the NaN
        rows :meth:`~holocell.HoloCell.generate` writes for cells without a source modality); with none
        left, every feature is ``NaN``.
    min_std
        Columns whose standard deviation (over cells) is below this in
        ``y_true`` or ``y_pred`` get ``NaN``: the correlation is undefined.

    Returns
    -------
    np.ndarray
        Shape ``(n_features,)``. Summarise with ``np.nanmean`` so the average
        runs only over features that vary in both truth and prediction. Note a
        constant prediction (e.g. :func:`~holocell.evaluation.mean_predict`)
        is therefore all-``NaN``; callers reporting such a baseline should
        treat ``NaN`` as ``0`` (no signal) for features that vary in the truth.
    """
    a, b = _paired(y_true, y_pred)
    if a.shape[0] == 0:
        return np.full(a.shape[1], np.nan)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    sa, sb = a.std(axis=0), b.std(axis=0)
    valid = (sa >= min_std) & (sb >= min_std)
    out = np.full(a.shape[1], np.nan)
    denom = a.shape[0] * sa[valid] * sb[valid]
    out[valid] = (a[:, valid] * b[:, valid]).sum(axis=0) / denom
    return np.clip(out, -1.0, 1.0)


def per_feature_auroc(
    y_true_binary: ArrayLike, scores: ArrayLike, min_positive_frac: float = 0.01
) -> np.ndarray:
    """Area under the ROC curve for every feature (column).

    Computed with the Mann-Whitney rank statistic (ties get half credit), which
    equals :func:`sklearn.metrics.roc_auc_score` per column.

    Parameters
    ----------
    y_true_binary
        Cells x features truth; non-zero entries are positives.
    scores
        Cells x features predicted scores, higher meaning more likely positive. Cells (rows) with NaN
        or inf in either matrix are left out with a :class:`~holocell.HoloCellWarning` giving their number.
    min_positive_frac
        Columns where the fraction of positives or of negatives is below this
        (or where either class is empty) get ``NaN``.

    Returns
    -------
    np.ndarray
        Shape ``(n_features,)``; summarise with ``np.nanmean``.
    """
    truth, s = _paired(y_true_binary, scores)
    truth = truth != 0
    n = truth.shape[0]
    n_pos = truth.sum(axis=0)
    n_neg = n - n_pos
    min_count = max(1.0, min_positive_frac * n)
    valid = (n_pos >= min_count) & (n_neg >= min_count)
    out = np.full(truth.shape[1], np.nan)
    if not valid.any():
        return out
    ranks = rankdata(s[:, valid], axis=0)
    pos_rank_sum = (ranks * truth[:, valid]).sum(axis=0)
    npv, nnv = n_pos[valid], n_neg[valid]
    out[valid] = (pos_rank_sum - npv * (npv + 1) / 2) / (npv * nnv)
    return out


def prediction_scores(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """Per-feature Pearson (mean and median) and RMSE of a cross-modal prediction.

    The summaries run over the features that vary in the truth; a feature the prediction holds
    constant (e.g. :func:`~holocell.evaluation.mean_predict`) counts as ``r = 0`` (no signal), not
    as missing. Cells (rows) with NaN or inf in the truth or the prediction (e.g. the NaN rows
    :meth:`~holocell.HoloCell.generate` writes for cells without a source modality) are left out of
    every score, with a :class:`~holocell.HoloCellWarning` giving their number: a NaN prediction is
    never scored as ``r = 0``.

    Parameters
    ----------
    y_true, y_pred
        Cells x features truth and prediction on the same scale (e.g. CLR protein, log-normalised RNA).

    Returns
    -------
    dict
        ``{"pearson_mean", "pearson_median", "rmse"}`` over the finite cells; all ``NaN`` when no cell is
        finite in both.
    """
    a, b = _paired(y_true, y_pred)
    if a.shape[0] == 0:
        return {"pearson_mean": float("nan"), "pearson_median": float("nan"), "rmse": float("nan")}
    r = per_feature_pearson(a, b)
    varies = a.std(axis=0) > 1e-6
    r = np.where(np.isnan(r) & varies, 0.0, r)[varies]
    return {
        "pearson_mean": float(np.mean(r)) if r.size else float("nan"),
        "pearson_median": float(np.median(r)) if r.size else float("nan"),
        "rmse": rmse(a, b),
    }


def auroc_scores(y_true_binary: ArrayLike, scores: ArrayLike, min_positive_frac: float = 0.01) -> dict[str, float]:
    """Per-feature AUROC summarised over the features with both classes (see :func:`per_feature_auroc`).

    Parameters
    ----------
    y_true_binary
        Cells x features truth; non-zero entries are positives (e.g. accessible peaks).
    scores
        Cells x features predicted scores. Cells (rows) with NaN or inf in either matrix are left out with
        a :class:`~holocell.HoloCellWarning` giving their number.
    min_positive_frac
        Features with fewer positives or negatives than this fraction of (finite) cells are not scored.

    Returns
    -------
    dict
        ``{"auroc_mean", "auroc_median", "features_scored"}``.
    """
    a = per_feature_auroc(y_true_binary, scores, min_positive_frac=min_positive_frac)
    ok = np.isfinite(a)
    return {
        "auroc_mean": float(np.mean(a[ok])) if ok.any() else float("nan"),
        "auroc_median": float(np.median(a[ok])) if ok.any() else float("nan"),
        "features_scored": int(ok.sum()),
    }


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error over all entries.

    Parameters
    ----------
    y_true, y_pred
        Matrices of equal shape, dense or sparse. Cells (rows) with NaN or inf in either are left out with
        a :class:`~holocell.HoloCellWarning` giving their number.

    Returns
    -------
    float
        ``sqrt(mean((y_true - y_pred) ** 2))`` over the finite cells (``NaN`` when there are none).
    """
    a, b = _paired(y_true, y_pred)
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else float("nan")


def _transfer(emb_ref: ArrayLike, labels_ref: ArrayLike, emb_query: ArrayLike, k: int):
    """Checked kNN vote: ``(predicted label keys, reference label keys, reference labels as str)``."""
    ref = check_embedding(emb_ref, "emb_ref")
    query = check_embedding(emb_query, "emb_query")
    if ref.shape[1] != query.shape[1]:
        raise ValueError(
            f"emb_ref has {ref.shape[1]} dims but emb_query has {query.shape[1]}; embed both in the same space."
        )
    keys = check_labels(labels_ref, ref.shape[0], "labels_ref")
    k = check_n_neighbors(k, 1, "k")
    clf = KNeighborsClassifier(n_neighbors=min(k, len(keys)))
    clf.fit(ref, keys)
    return clf.predict(query), keys, np.asarray(labels_ref).astype(str)


def knn_label_transfer(emb_ref: ArrayLike, labels_ref: ArrayLike, emb_query: ArrayLike, k: int = 15) -> np.ndarray:
    """Labels of query cells by majority vote of their ``k`` nearest reference cells.

    Parameters
    ----------
    emb_ref, emb_query
        Cells x dims embeddings of reference and query cells (same space, finite values).
    labels_ref
        Label per reference cell; missing labels (``None`` / ``NaN``) are refused: drop those cells first.
        Numeric labels are compared by value (``0`` and ``0.0`` are one label).
    k
        Neighbours (Euclidean) used for the vote, at least 1; capped at the reference size.

    Returns
    -------
    numpy.ndarray
        ``(n_query,)`` transferred labels (as ``str``).
    """
    predicted, keys, shown = _transfer(emb_ref, labels_ref, emb_query, k)
    if np.array_equal(keys, shown):
        return predicted
    classes, first = np.unique(keys, return_index=True)
    return shown[first][np.searchsorted(classes, predicted)]


def knn_label_transfer_accuracy(
    emb_ref: ArrayLike,
    labels_ref: ArrayLike,
    emb_query: ArrayLike,
    labels_query: ArrayLike,
    k: int = 15,
) -> float:
    """Accuracy of majority-vote kNN label transfer from reference to query cells (:func:`knn_label_transfer`).

    Parameters
    ----------
    emb_ref, emb_query
        Cells x dims embeddings of reference and query cells (same space, finite values).
    labels_ref, labels_query
        Labels per cell; query labels are the truth to score against. Missing labels (``None`` /
        ``NaN``) are refused: drop those cells first. Numeric labels are compared by value, so a
        reference labelled ``0`` matches a query labelled ``0.0``.
    k
        Neighbours (Euclidean) used for the vote, at least 1; capped at the reference size.

    Returns
    -------
    float
        Fraction of query cells whose transferred label equals the truth.
    """
    predicted, _, _ = _transfer(emb_ref, labels_ref, emb_query, k)
    truth = check_labels(labels_query, predicted.shape[0], "labels_query")
    return float(np.mean(predicted == truth))


def _at_least_two(labels: np.ndarray, what: str, fix: str) -> int:
    n = len(np.unique(labels))
    if n < 2:
        raise ValueError(f"{what} needs at least 2 distinct labels, got {n}; {fix}")
    return n


def nmi_ari(embedding: ArrayLike, labels: ArrayLike, seed: int = 0) -> dict[str, float]:
    """NMI and ARI between a clustering of the embedding and the labels.

    The clustering is KMeans with ``k`` equal to the number of distinct labels
    (``n_init=10``, fixed ``seed``), as scib-metrics'
    ``nmi_ari_cluster_labels_kmeans`` (its Benchmarker default) does, rather
    than scib's Leiden resolution search; NMI uses the arithmetic mean
    normalisation of both.

    Parameters
    ----------
    embedding
        Cells x dims embedding (finite values).
    labels
        Label per cell, at least two distinct ones (one label would score a trivial 1); missing
        labels (``None`` / ``NaN``) are refused.
    seed
        KMeans random state.

    Returns
    -------
    dict
        ``{"nmi": float, "ari": float}``.
    """
    emb = check_embedding(embedding)
    labels = check_labels(labels, emb.shape[0])
    n_clusters = _at_least_two(labels, "NMI/ARI", "score a set with several cell types.")
    clusters = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(emb)
    return {
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
    }


def silhouette_label(embedding: ArrayLike, labels: ArrayLike) -> float:
    """Label silhouette scaled to ``[0, 1]`` as in scib: ``(asw + 1) / 2``.

    Parameters
    ----------
    embedding
        Cells x dims embedding (finite values).
    labels
        Label per cell: at least two distinct labels and fewer labels than cells (a silhouette
        needs a label with two cells); missing labels (``None`` / ``NaN``) are refused.

    Returns
    -------
    float
        1 means tight, well-separated label groups; 0.5 means no structure.
    """
    emb = check_embedding(embedding)
    labels = check_labels(labels, emb.shape[0])
    n = _at_least_two(labels, "the label silhouette", "score a set with several cell types.")
    if n >= emb.shape[0]:
        raise ValueError(
            f"the label silhouette needs fewer distinct labels than cells, got {n} labels for {emb.shape[0]} "
            "cells; score more cells."
        )
    asw = silhouette_score(emb, labels, metric="euclidean")
    return float((asw + 1.0) / 2.0)


def silhouette_batch(embedding: ArrayLike, batch: ArrayLike, labels: ArrayLike) -> float:
    """Batch mixing score in the style of scib's ``silhouette_batch``.

    For each label, the silhouette of its cells with respect to *batch* is
    computed; per cell the score is ``1 - |s|`` and it is averaged within the
    label, then across labels. Labels present in a single batch, or with too
    few cells for a silhouette, are skipped.

    Parameters
    ----------
    embedding
        Cells x dims embedding (finite values).
    batch
        Batch per cell (missing batches are refused).
    labels
        Label (cell type) per cell (missing labels are refused).

    Returns
    -------
    float
        Near 1 for well-mixed batches, near 0 for batch-separated ones;
        ``NaN`` when no label qualifies.
    """
    emb = check_embedding(embedding)
    batch = check_labels(batch, emb.shape[0], "batch", "batch")
    labels = check_labels(labels, emb.shape[0])
    per_label = []
    for lab in np.unique(labels):
        mask = labels == lab
        b = batch[mask]
        n_batches = len(np.unique(b))
        if n_batches < 2 or mask.sum() <= n_batches:
            continue
        s = silhouette_samples(emb[mask], b, metric="euclidean")
        per_label.append(np.mean(1.0 - np.abs(s)))
    return float(np.mean(per_label)) if per_label else float("nan")
