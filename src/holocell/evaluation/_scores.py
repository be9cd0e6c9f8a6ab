"""Scoring a cross-modal prediction against held-out truth, for holocell and its baseline peers (the demo)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from holocell.evaluation._baselines import mean_predict, pca_knn_predict, pca_ridge_predict
from holocell.evaluation._metrics import prediction_scores
from holocell.evaluation._transforms import clr

__all__ = ["baseline_scores", "score_prediction"]


def score_prediction(method: str, truth: np.ndarray, pred: np.ndarray) -> dict:
    """:func:`~holocell.evaluation.prediction_scores` of one named predictor.

    Per-feature Pearson (mean and median over features; constant predictions count as 0) and RMSE. Cells with
    NaN or inf in ``truth`` or ``pred`` (e.g. generate's NaN rows for cells without a source modality) are left
    out, with a :class:`~holocell.HoloCellWarning` giving their number.

    Parameters
    ----------
    method
        Name of the predictor (the ``"method"`` entry of the result).
    truth, pred
        ``(n_cells, n_features)`` held-out values and predictions, on the same scale (e.g. CLR).

    Returns
    -------
    ``{"method", "pearson_mean", "pearson_median", "rmse"}``; features constant in ``truth`` are left out
    of the Pearson summaries.
    """
    return {"method": method, **prediction_scores(truth, pred)}


def baseline_scores(
    x_train: ArrayLike, y_train_counts: ArrayLike, x_query: ArrayLike, truth: np.ndarray, *, n_pcs: int = 50,
    k: int = 15, seed: int = 0,
) -> list[dict]:
    """:func:`score_prediction` of kNN(``k``) and ridge on RNA PCA(``n_pcs``) and of the mean predictor.

    Parameters
    ----------
    x_train, x_query
        RNA counts of the training and the query cells.
    y_train_counts
        Protein counts of the training cells (CLR-transformed here).
    truth
        CLR protein of the query cells.
    n_pcs, k, seed
        PCA size, neighbours of the kNN predictor, random seed.
    """
    y_train = clr(y_train_counts)
    preds = {
        f"kNN({k}) on RNA PCA({n_pcs})": pca_knn_predict(x_train, y_train, x_query, n_pcs=n_pcs, k=k, seed=seed),
        f"ridge on RNA PCA({n_pcs})": pca_ridge_predict(x_train, y_train, x_query, n_pcs=n_pcs, seed=seed),
        "mean predictor": mean_predict(y_train, truth.shape[0]),
    }
    return [score_prediction(name, truth, pred) for name, pred in preds.items()]
