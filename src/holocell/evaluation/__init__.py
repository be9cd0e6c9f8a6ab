"""Evaluation metrics, transforms and honest baseline predictors."""

from __future__ import annotations

from holocell.evaluation._baselines import mean_predict, pca_knn_predict, pca_ridge_predict, shared_pca
from holocell.evaluation._integration import graph_connectivity, ilisi, integration_metrics, lisi
from holocell.evaluation._metrics import (
    auroc_scores,
    knn_label_transfer,
    knn_label_transfer_accuracy,
    nmi_ari,
    per_feature_auroc,
    per_feature_pearson,
    prediction_scores,
    rmse,
    silhouette_batch,
    silhouette_label,
)
from holocell.evaluation._scores import baseline_scores, score_prediction
from holocell.evaluation._tables import format_table
from holocell.evaluation._transforms import clr, log_normalize

__all__ = [
    "auroc_scores",
    "baseline_scores",
    "clr",
    "format_table",
    "graph_connectivity",
    "ilisi",
    "integration_metrics",
    "knn_label_transfer",
    "knn_label_transfer_accuracy",
    "lisi",
    "log_normalize",
    "mean_predict",
    "nmi_ari",
    "pca_knn_predict",
    "pca_ridge_predict",
    "per_feature_auroc",
    "per_feature_pearson",
    "prediction_scores",
    "rmse",
    "score_prediction",
    "shared_pca",
    "silhouette_batch",
    "silhouette_label",
]
